"""The ``newsletter`` command: thin click commands over the library, one module per area."""

from newsletter.cli import admin, archive, chat, issues, service, settings, subscribers
from newsletter.cli.base import entry, main

# The command modules are imported for their commands, which register on the group.
__all__ = [
    "admin",
    "archive",
    "chat",
    "entry",
    "issues",
    "main",
    "service",
    "settings",
    "subscribers",
]
