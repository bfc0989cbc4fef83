"""The one validated settings object.

Precedence: embedded defaults < config.toml < environment < command-line flags.
``NEWSLETTER_<KEY>`` overrides a top-level key, ``NEWSLETTER_<SECTION>__<KEY>`` a key in
a table. Secrets (``NEWSLETTER_SECRET_KEY``, ``NEWSLETTER_SMTP_PASSWORD``,
``NEWSLETTER_BOUNCES_PASSWORD``, ``NEWSLETTER_WEBHOOK_TOKEN``,
``NEWSLETTER_WRITER_API_KEY``) come only from the environment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newsletter.errors import ConfigError
from newsletter.shipped import SAMPLE_ARCHIVE, shipped

log = logging.getLogger(__name__)

__all__ = ["RENAMED", "Config", "ConfigError", "load_config"]

ENV_PREFIX = "NEWSLETTER_"
CONFIG_ENV = "NEWSLETTER_CONFIG"
SECRET_KEY_ENV = "NEWSLETTER_SECRET_KEY"
SMTP_PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
BOUNCES_PASSWORD_ENV = "NEWSLETTER_BOUNCES_PASSWORD"
WEBHOOK_TOKEN_ENV = "NEWSLETTER_WEBHOOK_TOKEN"
WRITER_API_KEY_ENV = "NEWSLETTER_WRITER_API_KEY"
SECRET_KEYS = {"secret_key", "smtp.password", "password", "webhook_token"}
# Where each secret comes from, for the error that says so.
_SECRET_ENV = {
    "secret_key": SECRET_KEY_ENV,
    "smtp.password": SMTP_PASSWORD_ENV,
    "bounces.password": BOUNCES_PASSWORD_ENV,
    "bounces.webhook_token": WEBHOOK_TOKEN_ENV,
    "webhook_token": WEBHOOK_TOKEN_ENV,
    "writer.api_key": WRITER_API_KEY_ENV,
}
LANGS = ("ko", "en")
# Entry ids' authority when neither tag_authority nor base_url is set: the host of the
# base_url that earlier releases set by default, so the ids of such a site stay the same.
UNSET_TAG_AUTHORITY = "127.0.0.1"
# Addresses that listen on every interface, and the one to reach them at on this machine.
_ANY_HOST = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}

_TIME_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)$")
_DURATION_RE = re.compile(r"(\d+)\s*(s|m|h)$")
_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
# A setting given as seconds (a TOML number) or as a duration such as "5m" or "24h".
Span = typing.NewType("Span", str)
_WEEKLY_RE = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)\s+([01]?\d|2[0-3]):([0-5]\d)$")
_DAYS_RE = re.compile(
    r"(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?(,(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)*$"
)


@dataclass(frozen=True)
class SmtpConfig:
    host: str = ""
    port: int = 587
    tls: str = "starttls"
    username: str = ""
    concurrency: int = 4
    max_per_second: float = 0.0
    # Messages a sender leases from the outbox in one round trip to the database.
    claim_batch: int = 10
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    # While the server is down, it is tried again after retry_base_seconds, doubling up to
    # outage_retry_max; `newsletter send` gives up (the issue stays paused) after outage_max.
    outage_retry_max: Span = Span("5m")
    outage_max: Span = Span("24h")
    # The circuit breaker: most of the last breaker_window recipients failing for the same
    # reason that is not their address (a policy block, a rejected message) pauses the issue.
    breaker_window: int = 20
    timeout_seconds: float = 30.0
    verify_certificates: bool = True
    bounce_threshold: int = 3
    password: str = field(default="", repr=False)


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


@dataclass(frozen=True)
class EmailEdition:
    """What the edition in one language calls itself and says; an empty value: the
    ``[email]`` one. ``{address}`` in ``contact`` is the reply-to (else the from) address."""

    name: str = ""
    from_name: str = ""
    intro: str = ""
    contact: str = ""
    subject_template: str = ""
    list_id: str = ""


# The English edition's defaults: an English reader meets no Korean interface text.
ENGLISH_EDITION = EmailEdition(
    name="HF Papers weekly",
    from_name="HF Papers weekly",
    intro=(
        "Last week's most upvoted papers on Hugging Face Daily Papers, "
        "each with its summary in Korean."
    ),
    contact="Contact: {address}",
    subject_template="{name}, {week_id}: {lead}",
)


@dataclass(frozen=True)
class EmailConfig:
    name: str = "주간 HF 논문"
    intro: str = "지난주 Hugging Face Daily Papers에서 가장 많은 추천을 받은 논문을 한국어 요약과 함께 전해 드립니다."
    from_address: str = "newsletter@localhost"
    from_name: str = "주간 HF 논문"
    reply_to: str = ""
    contact: str = "문의: {address}"
    subject_template: str = "[{name}] {year}년 {week}주차: {lead}"
    list_id: str = ""
    # A postal address for the footer (some laws ask for one in bulk mail).
    postal_address: str = ""
    # false: issues carry no paper thumbnails (mail clients that block images show none).
    thumbnails: bool = True
    unsubscribe_mailto: str = ""
    editor_email: str = ""
    dkim_selector: str = ""
    dkim_domain: str = ""
    dkim_key_file: str = ""
    dkim_ed25519_selector: str = ""
    dkim_ed25519_key_file: str = ""
    # [email.ko] and [email.en]: each edition's own name, sender, intro, contact, subject.
    ko: EmailEdition = field(default_factory=EmailEdition)
    en: EmailEdition = field(default_factory=lambda: ENGLISH_EDITION)

    def edition(self, lang: str) -> EmailEdition:
        """The edition in ``lang``: its own values over the ``[email]`` ones."""
        own = getattr(self, lang, None) if lang in LANGS else None
        values = {
            f.name: (getattr(own, f.name) if own else "") or getattr(self, f.name)
            for f in dataclasses.fields(EmailEdition)
        }
        values["contact"] = values["contact"].replace(
            "{address}", self.reply_to or self.from_address
        )
        return EmailEdition(**values)


@dataclass(frozen=True)
class ScheduleConfig:
    daily_at: str = "09:00"
    daily_days: str = "mon-sat"
    retry_every: str = "30m"
    daily_deadline: str = "21:00"
    weekly_at: str = "mon 08:00"
    weekly_mode: str = "send"


@dataclass(frozen=True)
class BouncesConfig:
    # The envelope sender's address; each delivery goes out from LOCAL+TOKEN@DOMAIN (VERP).
    # Empty: the envelope sender stays email.from_address and reports are matched by the
    # X-Newsletter-Delivery header and the Message-ID only.
    return_path: str = ""
    # Where the reports arrive: a Maildir, or an IMAP mailbox over TLS
    # (imaps://user@host[:port]/MAILBOX, the password from NEWSLETTER_BOUNCES_PASSWORD).
    maildir: str = ""
    imap_url: str = ""
    # A PEM file of certificates to trust for the IMAP server instead of the system's.
    imap_ca_file: str = ""
    # Handled reports are moved to this folder (a Maildir++ subfolder, or an IMAP folder).
    processed_folder: str = "Processed"
    poll_every: Span = Span("10m")
    password: str = field(default="", repr=False)
    webhook_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class WriterConfig:
    """``newsletter write``: the day's digest from Hugging Face Daily Papers, summarized by
    an OpenAI-compatible chat-completions endpoint (see newsletter.archive.writer)."""

    # `newsletter run` writes the day's digest before its daily job.
    enabled: bool = False
    papers_url: str = "https://huggingface.co/api/daily_papers"
    # The client appends /chat/completions.
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    # Papers summarized per day, the most upvoted first; the rest are left out.
    max_papers: int = 30
    concurrency: int = 4
    # 0: no limit.
    requests_per_minute: int = 60
    max_attempts: int = 4
    timeout_seconds: float = 120.0
    # false: summarize the abstract; true: the paper's text from arXiv (full_text_url, {id}
    # for the arXiv id), cut to about full_text_budget tokens.
    full_text: bool = False
    full_text_url: str = "https://arxiv.org/html/{id}"
    full_text_budget: int = 12000
    # The prompt; empty: the shipped templates/writer/prompt.txt.
    prompt_file: str = ""
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Subscription form posts a client address may make per minute.
    subscribe_per_minute: int = 10


@dataclass(frozen=True)
class Config:
    site_title: str = "HF 데일리 논문 요약"
    site_subtitle: str = "Hugging Face Daily Papers를 한국어로 요약해 매일 전해 드립니다"
    # Empty: the address the web app listens on (web.host, web.port, or --host/--port).
    base_url: str = ""
    tag_authority: str = ""
    author_name: str = "newsletter"
    timezone: str = "Asia/Seoul"
    # While no seeds/ folder exists, the sample archive shipped in the package.
    source: str = SAMPLE_ARCHIVE
    archive_dir: Path = Path("archive")
    top_n_daily: int = 10
    top_n_weekly: int = 10
    public_dir: Path = Path("public")
    cache_dir: Path = Path("cache")
    feed_days: int = 30
    feed_time: str = "09:00"
    database_url: str = "sqlite:///newsletter.db"
    outbox_dir: Path = Path("outbox")
    default_lang: str = "ko"
    # The feeds' language: their xml:lang and the words they add around the summaries.
    language: str = "ko"
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    email: EmailConfig = field(default_factory=EmailConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    web: WebConfig = field(default_factory=WebConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    # Not a key: where relative paths resolve (the config file's folder, else the cwd).
    base_dir: Path = field(default=Path("."), compare=False)
    secret_key: str = field(default="", repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def source_is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    @property
    def source_path(self) -> Path:
        return self.resolve(Path(self.source))

    @property
    def archive_path(self) -> Path:
        """Where digests fetched from a URL source are kept."""
        return self.resolve(self.archive_dir)

    @property
    def public_path(self) -> Path:
        return self.resolve(self.public_dir)

    @property
    def cache_path(self) -> Path:
        """Parsed digests and the record of rendered pages; safe to delete at any time."""
        return self.resolve(self.cache_dir)

    @property
    def outbox_path(self) -> Path:
        return self.resolve(self.outbox_dir)

    @property
    def site_url(self) -> str:
        """The public address every link starts with, ending with a slash: ``base_url``, or
        while that is not set, the address the web app listens on (:attr:`listen_url`)."""
        if not self.base_url:
            return self.listen_url
        return self.base_url if self.base_url.endswith("/") else self.base_url + "/"

    @property
    def listen_url(self) -> str:
        """``http://HOST:PORT/`` of ``web.host`` and ``web.port``; an address that listens
        everywhere (``0.0.0.0``, ``::``) is reached at the loopback address."""
        host = self.web.host.strip("[]")
        host = _ANY_HOST.get(host, host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.web.port}/"

    @property
    def tag_domain(self) -> str:
        """The authority of entry ids: ``tag_authority``, else the host of ``base_url``. It
        never follows the listening address: a feed's entry ids must not change with a
        port or an interface."""
        if self.tag_authority:
            return self.tag_authority
        if not self.base_url:
            return UNSET_TAG_AUTHORITY
        return urlsplit(self.base_url).hostname or "localhost"

    @property
    def feed_clock(self) -> dt.time:
        hour, minute = self.feed_time.split(":")
        return dt.time(int(hour), int(minute))

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base_dir / path

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


# Settings that changed name: old dotted key -> new dotted key. An old config.toml (or
# environment variable, or flag) keeps working, with a warning naming the new key; giving
# both is an error, as the file would say two things. Entries stay for at least a release.
RENAMED: dict[str, str] = {}


def _renamed(data: Mapping[str, Any], where: str, renames: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every old key moved to its new name (tables included)."""
    if not renames:
        return dict(data)
    out: dict[str, Any] = {
        k: dict(v) if k in _SECTIONS and isinstance(v, Mapping) else v for k, v in data.items()
    }
    for old, new in renames.items():
        old_section, _, old_key = old.rpartition(".")
        source = out.get(old_section) if old_section else out
        if not isinstance(source, dict) or old_key not in source:
            continue
        value = source.pop(old_key)
        new_section, _, new_key = new.rpartition(".")
        target = out.setdefault(new_section, {}) if new_section else out
        if not isinstance(target, dict):
            raise ConfigError(f"{where}: [{new_section}] must be a table")
        if new_key in target:
            raise ConfigError(f"{where}: {old} is the old name of {new}; give only {new}")
        log.warning("%s: %s is now called %s; please rename it", where, old, new)
        target[new_key] = value
    return out


_SECTIONS: dict[str, type] = {
    "smtp": SmtpConfig,
    "email": EmailConfig,
    "schedule": ScheduleConfig,
    "web": WebConfig,
    "bounces": BouncesConfig,
    "writer": WriterConfig,
}
_NOT_KEYS = {"base_dir", "secret_key"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, kind: Any, from_env: bool) -> Any:
    """Check (from TOML) or convert (from the environment) one value to the field's type."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise ConfigError(f"{key} must be a path (a non-empty string), got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if kind is Span:
        text = str(value).strip() if isinstance(value, int | float | str) else ""
        if isinstance(value, bool) or not _SPAN_RE.match(text):
            raise ConfigError(
                f"{key} must be seconds or a duration such as '5m' or '24h', got {value!r}"
            )
        return Span(text)
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover


def _apply(
    values: dict[str, dict[str, Any]],
    data: Mapping[str, Any],
    where: str,
    from_env: bool,
    origins: dict[str, str],
    renames: Mapping[str, str] = RENAMED,
) -> None:
    top_hints = _hints(Config)
    for key, value in _renamed(data, where, renames).items():
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{where}: {key} is a secret and is read only from the environment "
                f"({_SECRET_ENV.get(key, SMTP_PASSWORD_ENV)})"
            )
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: [{key}] must be a table")
            hints = _hints(_SECTIONS[key])
            for sub, subvalue in value.items():
                name = f"{key}.{sub}"
                if name in SECRET_KEYS or sub in ("password", "webhook_token", "api_key"):
                    raise ConfigError(
                        f"{where}: {name} is a secret and is read only from the environment "
                        f"({_SECRET_ENV.get(name, SMTP_PASSWORD_ENV)})"
                    )
                if key == "email" and sub in LANGS:
                    _apply_edition(values, sub, subvalue, where, from_env, origins)
                    continue
                if sub not in hints:
                    raise ConfigError(f"{where}: unknown key {name!r}{_did_you_mean(name)}")
                try:
                    values[key][sub] = _coerce(name, subvalue, hints[sub], from_env)
                    origins[name] = where
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            continue
        if key not in top_hints or key in _NOT_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key)}")
        try:
            values[""][key] = _coerce(key, value, top_hints[key], from_env)
            origins[key] = where
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _apply_edition(
    values: dict[str, dict[str, Any]],
    lang: str,
    data: Any,
    where: str,
    from_env: bool,
    origins: dict[str, str],
) -> None:
    """``[email.ko]`` / ``[email.en]``: an edition's own values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: [email.{lang}] must be a table")
    hints = _hints(EmailEdition)
    for key, value in data.items():
        name = f"email.{lang}.{key}"
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {name!r}; an edition sets {', '.join(hints)}")
        try:
            values[f"email.{lang}"][key] = _coerce(name, value, hints[key], from_env)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        origins[name] = where


def _known_keys() -> list[str]:
    """Every key as it is spelled in a message: ``top_n_daily``, ``smtp``, ``smtp.host``."""
    top = [key for key in _hints(Config) if key not in _NOT_KEYS | _SECTIONS.keys()]
    tables = [f"{section}.{key}" for section, cls in _SECTIONS.items() for key in _hints(cls)]
    return top + list(_SECTIONS) + tables


def _did_you_mean(name: str) -> str:
    """``; did you mean 'smtp.host'?`` for a key spelled like a known one, else nothing.
    A key in the wrong table (``[smtp] lang``) is matched by its own name too."""
    known = _known_keys()
    section, _, key = name.rpartition(".")
    same_table = [k for k in known if k.startswith(f"{section}.")] if section else known
    for candidates, word in ((same_table, name), (known, name), (known, key)):
        match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
        if match:
            return f"; did you mean {match[0]!r}?"
    exact = [repr(k) for k in known if k.rpartition(".")[2] == key and k != name]
    return f"; did you mean {' or '.join(exact)}?" if exact else ""


def _env_overrides(
    env: Mapping[str, str], renames: Mapping[str, str] = RENAMED
) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    top_hints = _hints(Config)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in (
            CONFIG_ENV,
            SECRET_KEY_ENV,
            SMTP_PASSWORD_ENV,
            BOUNCES_PASSWORD_ENV,
            WEBHOOK_TOKEN_ENV,
            WRITER_API_KEY_ENV,
        ):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section == "email" and key.split("__")[0] in LANGS and "__" in key:
                lang, key = key.split("__", 1)
                found.append((name, {section: {lang: {key: env[name]}}}))
            elif section in _SECTIONS:
                found.append((name, {section: {key: env[name]}}))
            elif section in top_hints:
                raise ConfigError(f"{name}: {section} is not a table")
            # Other NEWSLETTER_* variables belong to other tools (tests, CI); leave them.
        elif (rest in top_hints or rest in renames) and rest not in _NOT_KEYS | _SECTIONS.keys():
            found.append((name, {rest: env[name]}))
    return found


def _validate(cfg: Config, origins: Mapping[str, str]) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{origins.get(key, 'defaults')}: {key} {why}")

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
    smtp = cfg.smtp
    if smtp.tls not in ("none", "starttls", "implicit"):
        raise bad("smtp.tls", f"must be none, starttls or implicit, got {smtp.tls!r}")
    if not 0 < smtp.port < 65536:
        raise bad("smtp.port", f"must be a TCP port, got {smtp.port}")
    if cfg.web.subscribe_per_minute < 1:
        raise bad("web.subscribe_per_minute", "must be at least 1")
    for key in ("concurrency", "claim_batch", "max_attempts", "bounce_threshold", "breaker_window"):
        if getattr(smtp, key) < 1:
            raise bad(f"smtp.{key}", "must be at least 1")
    for key in ("max_per_second", "retry_base_seconds"):
        if getattr(smtp, key) < 0:
            raise bad(f"smtp.{key}", "must not be negative")
    if smtp.timeout_seconds <= 0:
        raise bad("smtp.timeout_seconds", "must be positive")
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
    _validate_bounces(cfg, bad)
    _validate_writer(cfg, bad)
    if not 0 < cfg.web.port < 65536:
        raise bad("web.port", f"must be a TCP port, got {cfg.web.port}")
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


def _validate_bounces(cfg: Config, bad: typing.Callable[[str, str], ConfigError]) -> None:
    bounces = cfg.bounces
    if bounces.return_path and not re.fullmatch(
        r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+", bounces.return_path
    ):
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
    if not bounces.processed_folder or any(c in bounces.processed_folder for c in "/\\\r\n"):
        raise bad("bounces.processed_folder", "must be a folder name without slashes")
    if span_seconds(bounces.poll_every) < 1:
        raise bad("bounces.poll_every", "must be at least 1 second")


def _validate_writer(cfg: Config, bad: typing.Callable[[str, str], ConfigError]) -> None:
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


def span_seconds(text: str) -> float:
    """``'5m'`` -> 300.0; ``'90'`` -> 90.0 (see :data:`Span`)."""
    match = _SPAN_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return float(match.group(1)) * unit


def duration_seconds(text: str) -> int:
    """``'30m'`` -> 1800."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# In cache_dir: the address `newsletter run` or `serve` listens on, while base_url is unset.
LISTENING_FILE = "listening"


def remember_listening(cfg: Config) -> None:
    """Note where the web app listens, so that a command run beside it (``tick``, ``send``,
    ``worker``, ``preview``) links there too while ``base_url`` is unset."""
    if cfg.base_url:
        return
    try:
        cfg.cache_path.mkdir(parents=True, exist_ok=True)
        (cfg.cache_path / LISTENING_FILE).write_text(cfg.listen_url + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("cannot note the listening address in %s: %s", cfg.cache_path, exc)


def recall_listening(cfg: Config) -> Config:
    """``cfg`` with ``web.host`` and ``web.port`` where the web app last listened, when
    ``base_url`` is unset and the service noted an address; else ``cfg`` as it is."""
    if cfg.base_url:
        return cfg
    try:
        noted = (cfg.cache_path / LISTENING_FILE).read_text(encoding="utf-8").strip()
        parts = urlsplit(noted)
        host, port = parts.hostname, parts.port
    except (OSError, UnicodeDecodeError, ValueError):
        return cfg
    if not host or not port or (host, port) == (cfg.web.host, cfg.web.port):
        return cfg
    recalled = cfg.replace(web=dataclasses.replace(cfg.web, host=host, port=port))
    log.info(
        "links point to %s, where the web app last listened (base_url is not set)",
        recalled.listen_url,
    )
    return recalled


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    renames: Mapping[str, str] = RENAMED,
) -> Config:
    """Build the settings object: defaults, then ``path`` (or ``$NEWSLETTER_CONFIG``, or
    ``./config.toml`` when present), then environment variables, then ``overrides``
    (dotted keys such as ``"smtp.host"``, from command-line flags). Old names in
    ``renames`` (:data:`RENAMED`) are accepted with a warning."""
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    if path is None:
        path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else Path("config.toml")
    values: dict[str, dict[str, Any]] = {
        "": {},
        **{s: {} for s in _SECTIONS},
        **{f"email.{lang}": {} for lang in LANGS},
    }
    origins: dict[str, str] = {}
    base_dir = Path.cwd()
    where = str(path)
    if path.exists() or explicit:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8; save the settings file as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        _apply(values, data, where, False, origins, renames)
        base_dir = path.resolve().parent
    for name, data in _env_overrides(env, renames):
        _apply(values, data, name, True, origins, renames)
    if overrides:
        nested: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            section, _, sub = key.rpartition(".")
            if section:
                nested.setdefault(section, {})[sub] = value
            else:
                nested[sub] = value
        _apply(values, nested, "command line", True, origins, renames)
    sections = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    sections["email"] = dataclasses.replace(
        sections["email"],
        **{
            lang: dataclasses.replace(getattr(sections["email"], lang), **values[f"email.{lang}"])
            for lang in LANGS
        },
    )
    smtp_password = env.get(SMTP_PASSWORD_ENV, "")
    if smtp_password:
        sections["smtp"] = dataclasses.replace(sections["smtp"], password=smtp_password)
    bounces_secrets = {
        name: env[variable]
        for name, variable in (
            ("password", BOUNCES_PASSWORD_ENV),
            ("webhook_token", WEBHOOK_TOKEN_ENV),
        )
        if env.get(variable)
    }
    if bounces_secrets:
        sections["bounces"] = dataclasses.replace(sections["bounces"], **bounces_secrets)
    if env.get(WRITER_API_KEY_ENV):
        sections["writer"] = dataclasses.replace(
            sections["writer"], api_key=env[WRITER_API_KEY_ENV].strip()
        )
    cfg = Config(
        **values[""],
        **sections,
        base_dir=base_dir,
        secret_key=env.get(SECRET_KEY_ENV, ""),
    )
    _validate(cfg, origins)
    return _with_samples(cfg, origins)


def _with_samples(cfg: Config, origins: Mapping[str, str]) -> Config:
    """The default source where there is no seeds/ folder (outside a clone, a site made
    by ``newsletter init``): the sample archive shipped in the package, said in the log.
    A --source flag always means the folder it names."""
    if (
        cfg.source != SAMPLE_ARCHIVE
        or origins.get("source") == "command line"
        or cfg.source_path.exists()
    ):
        return cfg
    samples = shipped(SAMPLE_ARCHIVE)
    if not samples.is_dir():
        return cfg
    log.info(
        "there is no %s folder: reading the sample archive shipped with newsletter, %s "
        "(set source to a folder of your own digests)",
        cfg.source_path,
        samples,
    )
    return cfg.replace(source=str(samples))
