"""The one validated settings object.

Precedence: embedded defaults < config.toml < environment < command-line flags.
``NEWSLETTER_<KEY>`` overrides a top-level key, ``NEWSLETTER_<SECTION>__<KEY>`` a key in
a table. Secrets (``NEWSLETTER_SECRET_KEY``, ``NEWSLETTER_SMTP_PASSWORD``,
``NEWSLETTER_BOUNCES_PASSWORD``, ``NEWSLETTER_WEBHOOK_TOKEN``,
``NEWSLETTER_WRITER_API_KEY``, ``NEWSLETTER_METRICS_TOKEN``, the chat services' tokens and
webhook URLs) come only from the environment.

What each part holds: :mod:`~newsletter.config.settings` the settings and their defaults,
:mod:`~newsletter.config.load` how they are read, layer over layer (the file and flags
through :mod:`~newsletter.config.layers`, the variables through
:mod:`~newsletter.config.environment`), :mod:`~newsletter.config.renames` the settings
that changed name, :mod:`~newsletter.config.validate` the checks they must pass,
:mod:`~newsletter.config.durations` lengths of time such as ``"30m"``,
:mod:`~newsletter.config.listening` the address a running web app listens on, and
:mod:`~newsletter.config.explain` every setting in force with where it came from (for
``newsletter config`` alone, so imported only there).
"""

from __future__ import annotations

from newsletter.config.durations import duration_seconds, span_seconds
from newsletter.config.environment import (
    BOUNCES_PASSWORD_ENV,
    CONFIG_ENV,
    ENV_PREFIX,
    METRICS_TOKEN_ENV,
    SECRET_KEY_ENV,
    SECRET_KEYS,
    SMTP_PASSWORD_ENV,
    WEBHOOK_TOKEN_ENV,
    WRITER_API_KEY_ENV,
)
from newsletter.config.listening import (
    LISTENING_FILE,
    forget_listening,
    recall_listening,
    remember_listening,
)
from newsletter.config.load import load_config
from newsletter.config.renames import RENAMED
from newsletter.config.settings import (
    ENGLISH_EDITION,
    LANGS,
    UNSET_TAG_AUTHORITY,
    BouncesConfig,
    Config,
    EmailConfig,
    EmailEdition,
    ScheduleConfig,
    SmtpConfig,
    Span,
    WebConfig,
    WriterConfig,
)
from newsletter.config.validate import SUBJECT_PLACEHOLDERS
from newsletter.errors import ConfigError

__all__ = [
    "BOUNCES_PASSWORD_ENV",
    "CONFIG_ENV",
    "ENGLISH_EDITION",
    "ENV_PREFIX",
    "LANGS",
    "LISTENING_FILE",
    "METRICS_TOKEN_ENV",
    "RENAMED",
    "SECRET_KEYS",
    "SECRET_KEY_ENV",
    "SMTP_PASSWORD_ENV",
    "SUBJECT_PLACEHOLDERS",
    "UNSET_TAG_AUTHORITY",
    "WEBHOOK_TOKEN_ENV",
    "WRITER_API_KEY_ENV",
    "BouncesConfig",
    "Config",
    "ConfigError",
    "EmailConfig",
    "EmailEdition",
    "ScheduleConfig",
    "SmtpConfig",
    "Span",
    "WebConfig",
    "WriterConfig",
    "duration_seconds",
    "forget_listening",
    "load_config",
    "recall_listening",
    "remember_listening",
    "span_seconds",
]
