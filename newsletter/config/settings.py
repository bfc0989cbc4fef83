"""What the settings are: one frozen dataclass per table, with their defaults."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from newsletter.shipped import SAMPLE_ARCHIVE

__all__ = [
    "ENGLISH_EDITION",
    "LANGS",
    "UNSET_TAG_AUTHORITY",
    "BouncesConfig",
    "Config",
    "EmailConfig",
    "EmailEdition",
    "ScheduleConfig",
    "SmtpConfig",
    "Span",
    "WebConfig",
    "WriterConfig",
]

LANGS = ("ko", "en")
# A setting given as seconds (a TOML number) or as a duration such as "5m" or "24h".
Span = typing.NewType("Span", str)
# Entry ids' authority when neither tag_authority nor base_url is set: the host of the
# base_url that earlier releases set by default, so the ids of such a site stay the same.
UNSET_TAG_AUTHORITY = "127.0.0.1"
# Addresses that listen on every interface, and the one to reach them at on this machine.
_ANY_HOST = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


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
    # Reports that prove no delivery of ours (no valid token, no Message-ID we sent) act on
    # nobody and are moved to this folder, unread, for a person.
    unmatched_folder: str = "Unmatched"
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
class SlackConfig:
    """``newsletter post``: the day's papers in a Slack channel."""

    # A channel ID (C0123456789) or name (#papers); empty: no Slack posts.
    channel: str = ""
    api_url: str = "https://slack.com/api"
    # true: each paper a reply in the thread of the day's message; false: in the channel.
    thread: bool = True
    papers: int = 10
    # "ko" or "en"; empty: the site's language.
    lang: str = ""
    # NEWSLETTER_SLACK_TOKEN (a bot token, scope chat:write) or, without one,
    # NEWSLETTER_SLACK_WEBHOOK_URL (an incoming webhook, which cannot thread).
    token: str = field(default="", repr=False)
    webhook_url: str = field(default="", repr=False)


@dataclass(frozen=True)
class DiscordConfig:
    """``newsletter post``: the day's papers in a Discord channel, by its webhook
    (NEWSLETTER_DISCORD_WEBHOOK_URL; none: no Discord posts)."""

    papers: int = 10
    # "ko" or "en"; empty: the site's language.
    lang: str = ""
    webhook_url: str = field(default="", repr=False)


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Subscription form posts a client address may make per minute.
    subscribe_per_minute: int = 10
    # The bearer token /metrics asks for (NEWSLETTER_METRICS_TOKEN); empty: only clients
    # on this machine's loopback may read it.
    metrics_token: str = field(default="", repr=False)


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
    slack: SlackConfig = field(default_factory=SlackConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    # Not a key: where relative paths resolve (the config file's folder, else the cwd).
    base_dir: Path = field(default=Path("."), compare=False)
    secret_key: str = field(default="", repr=False)
    # Not keys: the settings file read (None: none), and where each key that is not its
    # default was set (the file's path, a variable's name, "command line"), by dotted name.
    settings_file: Path | None = field(default=None, compare=False)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

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


_SECTIONS: dict[str, type] = {
    "smtp": SmtpConfig,
    "email": EmailConfig,
    "schedule": ScheduleConfig,
    "web": WebConfig,
    "bounces": BouncesConfig,
    "writer": WriterConfig,
    "slack": SlackConfig,
    "discord": DiscordConfig,
}
# Fields of Config that no layer sets as a key: base_dir, settings_file and origins follow
# the layers, and secret_key comes only from its own environment variable.
_NOT_KEYS = {"base_dir", "secret_key", "settings_file", "origins"}


@functools.cache
def _hints(cls: type) -> Mapping[str, Any]:
    """The fields of a settings class and their types (resolved once: resolving the
    annotations was half the cost of loading the settings)."""
    return types.MappingProxyType(typing.get_type_hints(cls))
