"""The checks a settings object must pass before anything uses it: the first mistake found
is a :class:`ConfigError` naming where the key was set."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.config.durations import _DURATION_RE, span_seconds
from newsletter.config.environment import (
    BOUNCES_PASSWORD_ENV,
    METRICS_TOKEN_ENV,
    WEBHOOK_TOKEN_ENV,
    WRITER_API_KEY_ENV,
)
from newsletter.config.settings import LANGS, Config
from newsletter.errors import ConfigError

__all__ = ["MIN_WEBHOOK_TOKEN_BYTES", "SUBJECT_PLACEHOLDERS"]

# The webhook's bearer token acts on the list: as long as a signing key, so no guessing,
# however many tries, can find it.
MIN_WEBHOOK_TOKEN_BYTES = 32
# The metrics token only reads counts, but must not be guessable either; it travels in an
# Authorization header, so it is a bearer token's characters (RFC 6750).
MIN_METRICS_TOKEN_BYTES = 16
_BEARER_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")

_TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)$")
_WEEKLY_RE = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)\s+([01]?\d|2[0-3]):([0-5]\d)$")
_DAYS_RE = re.compile(
    r"(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?(,(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)*$"
)

# The placeholders of email.subject_template, with sample values that validate it.
SUBJECT_PLACEHOLDERS = {
    "year": 2024,
    "week": 5,
    "week_id": "2024-W05",
    "name": "x",
    "lead": "x",
    "title": "x",
    "count": 10,
}

# The error for a dotted key and what is wrong with its value.
_Bad = Callable[[str, str], ConfigError]


def _validate(cfg: Config, origins: Mapping[str, str]) -> None:
    """Raise for the first bad value in ``cfg``; ``origins`` says where each key was set.
    Of several mistakes only the first found is reported, so the order of the checks is part
    of what a user sees."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{origins.get(key, 'defaults')}: {key} {why}")

    _validate_site(cfg, bad)
    _validate_smtp_server(cfg, bad)
    if cfg.web.subscribe_per_minute < 1:
        raise bad("web.subscribe_per_minute", "must be at least 1")
    _validate_metrics_token(cfg.web.metrics_token)
    _validate_smtp_pacing(cfg, bad)
    _validate_schedule(cfg, bad)
    _validate_bounces(cfg, bad)
    _validate_writer(cfg, bad)
    _validate_chat(cfg, bad)
    if not 0 < cfg.web.port < 65536:
        raise bad("web.port", f"must be a TCP port, got {cfg.web.port}")
    _validate_subjects(cfg, bad)
    _validate_one_line(cfg, bad)


def _validate_site(cfg: Config, bad: _Bad) -> None:
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad("timezone", f"is not a known time zone: {cfg.timezone!r}") from None
    parts = urlsplit(cfg.base_url)
    if cfg.base_url and (parts.scheme not in ("http", "https") or not parts.hostname):
        raise bad(
            "base_url",
            f"must be an absolute http(s) URL (or empty: the listening address), "
            f"got {cfg.base_url!r}",
        )
    for key in ("top_n_daily", "top_n_weekly", "feed_days"):
        if getattr(cfg, key) < 1:
            raise bad(key, "must be at least 1")
    if not _TIME_RE.match(cfg.feed_time):
        raise bad("feed_time", f"must be HH:MM, got {cfg.feed_time!r}")
    if cfg.default_lang not in LANGS:
        raise bad("default_lang", f"must be one of {', '.join(LANGS)}")
    if cfg.language not in LANGS:
        raise bad("language", f"must be one of {', '.join(LANGS)}, got {cfg.language!r}")
    if not cfg.source:
        raise bad("source", "must not be empty")
    if cfg.source_is_url:
        try:
            cfg.source.format(date=dt.date(2024, 5, 20))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise bad(
                "source",
                f"URL template must use only {{date:...}}, such as {{date:%Y-%m-%d}}: {exc}",
            ) from None


def _validate_smtp_server(cfg: Config, bad: _Bad) -> None:
    smtp = cfg.smtp
    if smtp.tls not in ("none", "starttls", "implicit"):
        raise bad("smtp.tls", f"must be none, starttls or implicit, got {smtp.tls!r}")
    if not 0 < smtp.port < 65536:
        raise bad("smtp.port", f"must be a TCP port, got {smtp.port}")


def _validate_smtp_pacing(cfg: Config, bad: _Bad) -> None:
    smtp = cfg.smtp
    for key in ("concurrency", "claim_batch", "max_attempts", "bounce_threshold", "breaker_window"):
        if getattr(smtp, key) < 1:
            raise bad(f"smtp.{key}", "must be at least 1")
    for key in ("max_per_second", "retry_base_seconds"):
        if getattr(smtp, key) < 0:
            raise bad(f"smtp.{key}", "must not be negative")
    if smtp.timeout_seconds <= 0:
        raise bad("smtp.timeout_seconds", "must be positive")


def _validate_schedule(cfg: Config, bad: _Bad) -> None:
    sched = cfg.schedule
    for key in ("daily_at", "daily_deadline"):
        if not _TIME_RE.match(getattr(sched, key)):
            raise bad(f"schedule.{key}", f"must be HH:MM, got {getattr(sched, key)!r}")
    if not _DAYS_RE.match(sched.daily_days):
        raise bad(
            "schedule.daily_days", f"must be day names such as 'mon-sat', got {sched.daily_days!r}"
        )
    if not _DURATION_RE.match(sched.retry_every):
        raise bad(
            "schedule.retry_every", f"must be a duration such as '30m', got {sched.retry_every!r}"
        )
    if not _WEEKLY_RE.match(sched.weekly_at):
        raise bad(
            "schedule.weekly_at",
            f"must be a day and time such as 'mon 08:00', got {sched.weekly_at!r}",
        )
    if sched.weekly_mode not in ("send", "draft"):
        raise bad("schedule.weekly_mode", f"must be send or draft, got {sched.weekly_mode!r}")


# An address that a token can be added to, LOCAL+TOKEN@DOMAIN (VERP, the mailto).
_PLAIN_ADDRESS_RE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+")


def _validate_bounces(cfg: Config, bad: _Bad) -> None:
    bounces = cfg.bounces
    if bounces.return_path and not _PLAIN_ADDRESS_RE.fullmatch(bounces.return_path):
        raise bad(
            "bounces.return_path",
            f"must be a plain address such as bounces@example.org (no '+'), "
            f"got {bounces.return_path!r}",
        )
    if bounces.imap_url:
        parts = urlsplit(bounces.imap_url)
        if parts.scheme != "imaps" or not parts.hostname or not parts.username:
            raise bad(
                "bounces.imap_url",
                "must be imaps://USER@HOST[:PORT]/MAILBOX (IMAP over TLS), "
                f"got {bounces.imap_url!r}",
            )
        if parts.password:
            raise bad(
                "bounces.imap_url",
                f"must not contain a password: it is read only from {BOUNCES_PASSWORD_ENV}",
            )
    if bounces.maildir and bounces.imap_url:
        raise bad("bounces.maildir", "and bounces.imap_url are both set: choose one")
    for name in ("processed_folder", "unmatched_folder"):
        folder = getattr(bounces, name)
        if not folder or any(c in folder for c in "/\\\r\n"):
            raise bad(f"bounces.{name}", "must be a folder name without slashes")
    if bounces.unmatched_folder == bounces.processed_folder:
        raise bad("bounces.unmatched_folder", "must differ from bounces.processed_folder")
    mailto = cfg.email.unsubscribe_mailto.strip().removeprefix("mailto:")
    if mailto and not _PLAIN_ADDRESS_RE.fullmatch(mailto):
        raise bad(
            "email.unsubscribe_mailto",
            "must be a plain address such as unsubscribe@example.org (no '+': each "
            f"recipient's List-Unsubscribe address is LOCAL+TOKEN@DOMAIN), got {mailto!r}",
        )
    if span_seconds(bounces.poll_every) < 1:
        raise bad("bounces.poll_every", "must be at least 1 second")
    size = len(bounces.webhook_token.encode("utf-8"))
    if bounces.webhook_token and size < MIN_WEBHOOK_TOKEN_BYTES:
        raise ConfigError(
            f"{WEBHOOK_TOKEN_ENV}: the webhook token must be at least "
            f"{MIN_WEBHOOK_TOKEN_BYTES} bytes, it has {size}; make one with: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(32))'"
        )


def _validate_metrics_token(token: str) -> None:
    hint = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if token and not _BEARER_RE.fullmatch(token):
        raise ConfigError(
            f"{METRICS_TOKEN_ENV}: the metrics token may hold only letters, digits and "
            f"-._~+/ (a bearer token); {hint}"
        )
    size = len(token.encode("utf-8"))
    if token and size < MIN_METRICS_TOKEN_BYTES:
        raise ConfigError(
            f"{METRICS_TOKEN_ENV}: the metrics token must be at least "
            f"{MIN_METRICS_TOKEN_BYTES} bytes, it has {size}; {hint}"
        )


def _validate_writer(cfg: Config, bad: _Bad) -> None:
    writer = cfg.writer
    for key in ("papers_url", "base_url"):
        parts = urlsplit(getattr(writer, key))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad(
                f"writer.{key}", f"must be an absolute http(s) URL, got {getattr(writer, key)!r}"
            )
        if parts.username or parts.password:
            raise bad(
                f"writer.{key}",
                f"must not contain credentials: the API key is read only from {WRITER_API_KEY_ENV}",
            )
    if "{id}" not in writer.full_text_url or not writer.full_text_url.startswith(
        ("http://", "https://")
    ):
        raise bad(
            "writer.full_text_url",
            f"must be an http(s) URL with {{id}} for the arXiv id, got {writer.full_text_url!r}",
        )
    if not writer.model.strip():
        raise bad("writer.model", "must not be empty")
    for key in ("max_papers", "concurrency", "max_attempts", "full_text_budget"):
        if getattr(writer, key) < 1:
            raise bad(f"writer.{key}", "must be at least 1")
    if writer.requests_per_minute < 0:
        raise bad("writer.requests_per_minute", "must not be negative (0: no limit)")
    if writer.timeout_seconds <= 0:
        raise bad("writer.timeout_seconds", "must be positive")


def _validate_chat(cfg: Config, bad: _Bad) -> None:
    parts = urlsplit(cfg.slack.api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("slack.api_url", f"must be an absolute http(s) URL, got {cfg.slack.api_url!r}")
    # The bot token travels with every call: never in the clear beyond this machine.
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise bad(
            "slack.api_url", f"must be https (it carries the token), got {cfg.slack.api_url!r}"
        )
    if cfg.slack.channel.strip() != cfg.slack.channel or " " in cfg.slack.channel:
        raise bad("slack.channel", f"must be a channel ID or name, got {cfg.slack.channel!r}")
    for table in ("slack", "discord"):
        section = getattr(cfg, table)
        if not 1 <= section.papers <= 50:
            raise bad(f"{table}.papers", f"must be from 1 to 50, got {section.papers}")
        if section.lang and section.lang not in LANGS:
            raise bad(f"{table}.lang", f"must be one of {', '.join(LANGS)}, got {section.lang!r}")


def _validate_subjects(cfg: Config, bad: _Bad) -> None:
    for lang, key in [("", "email.subject_template")] + [
        (lang, f"email.{lang}.subject_template") for lang in LANGS
    ]:
        template = cfg.email.edition(lang).subject_template if lang else cfg.email.subject_template
        try:
            template.format(**SUBJECT_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as exc:
            raise bad(
                key,
                f"has an unknown placeholder: {exc}; "
                f"it may use {', '.join('{' + p + '}' for p in SUBJECT_PLACEHOLDERS)}",
            ) from None


def _validate_one_line(cfg: Config, bad: _Bad) -> None:
    for key in ("site_title", "site_subtitle", "author_name"):
        if any(c in getattr(cfg, key) for c in "\r\n"):
            raise bad(key, "must be one line")
    for name in ("name", "from_address", "from_name", "subject_template", "list_id", "reply_to"):
        if any(c in getattr(cfg.email, name) for c in "\r\n"):
            raise bad(f"email.{name}", "must be one line (it goes into a mail header)")
    for lang in LANGS:
        for name in ("name", "from_name", "subject_template", "list_id"):
            if any(c in getattr(getattr(cfg.email, lang), name) for c in "\r\n"):
                raise bad(f"email.{lang}.{name}", "must be one line (it goes into a mail header)")
