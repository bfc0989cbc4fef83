"""Errors that reach the user as one line and an exit code, never as a traceback."""

from __future__ import annotations


class NewsletterError(Exception):
    """A failure the user can act on; ``str()`` is the whole message."""

    exit_code = 1


class ConfigError(NewsletterError):
    exit_code = 2
