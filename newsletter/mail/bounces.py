"""Acting on the reports that come back by mail, and the mailbox they come back to.

:func:`process_mailbox` reads a Maildir or an IMAP mailbox once, classifies each message
(:func:`newsletter.mail.reports.read_report`), acts on each report through
:meth:`newsletter.store.Store.record_report` (idempotent), and only then moves the message
aside. A report acts only when it proves that it answers our own mail (:func:`act`); one
that does not is ``unmatched``: noted, and moved to a folder of its own for a person. What
cannot be read or classified is flagged and kept where it is.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import imaplib
import logging
import os
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from newsletter.config import BOUNCES_PASSWORD_ENV, Config
from newsletter.errors import NewsletterError
from newsletter.lifecycle import CONFIRM_DAYS

# Callers (the webhooks, the commands, the tests) know this module as the one place for
# reports by mail, so the reading side is reachable from here as well.
from newsletter.mail.reports import Report as Report
from newsletter.mail.reports import read_report as read_report
from newsletter.mail.reports import report_id as report_id
from newsletter.mail.tokens import Keys, TokenError, read_delivery_token
from newsletter.mail.transport import bounce_kind as bounce_kind
from newsletter.store import Store, utcnow

log = logging.getLogger(__name__)

# Every kind a message can be, in the order the summary prints them; "unmatched" is a
# report of an acting kind that proved no delivery of ours.
KINDS = (
    "hard",
    "soft",
    "blocked",
    "complaint",
    "unsubscribe",
    "unmatched",
    "auto_reply",
    "notice",
    "unknown",
    "unreadable",
)
# The kinds that act on a subscriber (and are recorded).
ACTING = ("hard", "soft", "blocked", "complaint", "unsubscribe")
# The kinds that need nothing done: moved aside as handled.
IGNORED = ("auto_reply", "notice")
# Where an address alone names a subscriber: the webhook, whose relay proved itself with
# its bearer token. In mail anyone can write any address.
TRUSTED_SOURCES = ("webhook",)


class BounceError(NewsletterError):
    """The bounce mailbox cannot be used (not configured, missing, login refused)."""


# --- acting on a report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: str
    email: str
    what: str  # what was done, or "already recorded"

    def line(self) -> str:
        return f"{self.kind}: {self.email}: {self.what}"


def _targets(
    store: Store, key: Keys, report: Report, trusted: bool
) -> list[tuple[int, int | None]]:
    """(subscriber id, delivery id or None) of each subscriber the report proves it is
    about: by a delivery token we signed, by the Message-ID of a delivery we sent, by an
    unsubscribe token; by address only when the source is ``trusted``."""
    for token in report.tokens:
        try:
            delivery_id = read_delivery_token(key, token)
        except TokenError:
            continue
        found = store.delivery_target(delivery_id)
        if found is not None:
            return [(found[1], found[0])]
    for message_id in report.message_ids:
        found = store.delivery_by_message_id(message_id)
        if found is not None:
            return [(found[1], found[0])]
    if report.subscriber_ids:
        return [(sid, None) for sid in dict.fromkeys(report.subscriber_ids)]
    if not trusted:
        return []
    targets = []
    for address in dict.fromkeys(a.lower() for a in report.addresses):
        sub = store.get_subscriber(email=address)
        if sub is not None:
            delivery = None if report.kind == "unsubscribe" else store.latest_delivery(sub.id)
            targets.append((sub.id, delivery))
    return targets


def act(
    cfg: Config, store: Store, key: Keys, report: Report, rid: str, source: str
) -> list[Action]:
    """Apply a report to every subscriber it proves it is about (see :func:`_targets`);
    nothing when it proves none."""
    actions = []
    for subscriber_id, delivery_id in _targets(store, key, report, source in TRUSTED_SOURCES):
        sub = store.get_subscriber(id=subscriber_id)
        if sub is None:
            continue
        done = store.record_report(
            report_id=rid,
            source=source,
            kind=report.kind,
            subscriber_id=subscriber_id,
            delivery_id=delivery_id,
            status_code=report.status,
            diagnostic=report.diagnostic,
            bounce_threshold=cfg.smtp.bounce_threshold,
        )
        what = done if done is not None else "already recorded"
        if report.status and done is not None:
            what += f" ({report.status})"
        actions.append(Action(report.kind, sub.email, what))
        if done is not None:
            log.info("%s report for subscriber %d: %s", report.kind, subscriber_id, what)
    return actions


# --- the mailbox ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One message of the mailbox: its bytes, or why they could not be read."""

    key: str
    where: str
    data: bytes | None
    error: str = ""


class Source(Protocol):
    def messages(self) -> Iterator[Item]: ...

    def done(self, item: Item) -> None:
        """Move a handled message aside (after its action is committed)."""
        ...

    def set_aside(self, item: Item) -> None:
        """Move a report that proved nothing to the unmatched folder, unread, for a
        person (never deleted)."""
        ...

    def flag(self, item: Item) -> None:
        """Leave a message for a person, marked so the next run skips it."""
        ...

    def close(self) -> None: ...


class MaildirSource:
    """A Maildir: reads ``new/`` and ``cur/``, skipping messages flagged ``F`` (left for a
    person); handled ones move to the Maildir++ folder ``.PROCESSED`` (``cur/``, seen),
    unmatched ones to ``.UNMATCHED`` (``new/``, unread)."""

    def __init__(
        self, path: Path, processed: str = "Processed", unmatched: str = "Unmatched"
    ) -> None:
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise BounceError(f"bounces.maildir: {path} is not a Maildir (no cur/, new/, tmp/)")
        self.path = path
        self.processed = path / f".{processed}"
        self.unmatched = path / f".{unmatched}"

    def messages(self) -> Iterator[Item]:
        for sub in ("new", "cur"):
            try:
                names = sorted(os.listdir(self.path / sub))
            except OSError as exc:
                raise BounceError(
                    f"bounces.maildir: cannot list {self.path / sub}: {exc}"
                ) from None
            for name in names:
                if name.startswith(".") or "F" in _flags(name):
                    continue
                file = self.path / sub / name
                try:
                    data = file.read_bytes()
                except OSError as exc:
                    yield Item(f"{sub}/{name}", str(file), None, exc.strerror or str(exc))
                    continue
                yield Item(f"{sub}/{name}", str(file), data)

    def done(self, item: Item) -> None:
        self._move(item, self.processed, "cur", ":2,S")

    def set_aside(self, item: Item) -> None:
        self._move(item, self.unmatched, "new", "")

    def _move(self, item: Item, folder: Path, sub: str, info: str) -> None:
        for made in ("cur", "new", "tmp"):
            (folder / made).mkdir(parents=True, exist_ok=True)
        (folder / "maildirfolder").touch()
        name = item.key.split("/", 1)[1].split(":", 1)[0]
        os.rename(self.path / item.key, folder / sub / f"{name}{info}")

    def flag(self, item: Item) -> None:
        name = item.key.split("/", 1)[1]
        base = name.partition(":")[0]
        flags = "".join(sorted(set(_flags(name)) | {"F"}))
        with contextlib.suppress(OSError):  # unreadable may mean unmovable: reported anyway
            os.rename(self.path / item.key, self.path / "cur" / f"{base}:2,{flags}")

    def close(self) -> None:
        return None


def _flags(name: str) -> str:
    _, _, info = name.partition(":")
    return info[2:] if info.startswith("2,") else ""


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSource:
    """An IMAP mailbox over TLS: reads unflagged messages (without marking them seen);
    handled ones move to the folder ``processed``, unmatched ones to ``unmatched``, the
    rest are flagged for a person."""

    def __init__(self, cfg: Config, timeout: float = 60.0) -> None:
        bounces = cfg.bounces
        url = urlsplit(bounces.imap_url)
        self.where = f"{url.hostname}:{url.port or 993}"
        self.mailbox = unquote(url.path.lstrip("/")) or "INBOX"
        self.processed = bounces.processed_folder
        self.unmatched = bounces.unmatched_folder
        if not bounces.password:
            raise BounceError(f"bounces.imap_url: set the password in {BOUNCES_PASSWORD_ENV}")
        context = ssl.create_default_context(
            cafile=cfg.resolve(Path(bounces.imap_ca_file)) if bounces.imap_ca_file else None
        )
        try:
            self.imap = imaplib.IMAP4_SSL(
                url.hostname or "", url.port or 993, ssl_context=context, timeout=timeout
            )
        except (OSError, imaplib.IMAP4.error) as exc:
            raise BounceError(f"bounces.imap_url: cannot connect to {self.where}: {exc}") from None
        try:
            self.imap.login(unquote(url.username or ""), bounces.password)
            status, detail = self.imap.select(_quote(self.mailbox))
            if status != "OK":
                raise BounceError(
                    f"bounces.imap_url: no mailbox {self.mailbox!r} on {self.where}: {_said(detail)}"
                )
            self.move = b"MOVE" in b" ".join(self._capabilities())
        except imaplib.IMAP4.error as exc:
            self.close()
            raise BounceError(
                f"bounces.imap_url: {self.where} refused the login of {url.username}: {exc}"
            ) from None
        except BaseException:
            self.close()
            raise
        self._created: set[str] = set()

    def _capabilities(self) -> list[bytes]:
        status, data = self.imap.capability()
        return data[0].upper().split() if status == "OK" and data and data[0] else []

    def _check(self, what: str, result: tuple[str, Any]) -> Any:
        status, data = result
        if status != "OK":
            raise BounceError(f"bounces.imap_url: {what} failed on {self.where}: {_said(data)}")
        return data

    def messages(self) -> Iterator[Item]:
        data = self._check("SEARCH", self.imap.uid("SEARCH", "UNFLAGGED", "UNDELETED"))
        for uid in (data[0] or b"").split():
            key = uid.decode("ascii")
            where = f"{self.mailbox} UID {key}"
            status, fetched = self.imap.uid("FETCH", key, "(BODY.PEEK[])")
            body = next((p[1] for p in fetched or [] if isinstance(p, tuple) and len(p) > 1), None)
            if status != "OK" or not isinstance(body, bytes):
                yield Item(key, where, None, f"FETCH answered {status}: {_said(fetched)}")
                continue
            yield Item(key, where, body)

    def done(self, item: Item) -> None:
        self._move(item, self.processed)

    def set_aside(self, item: Item) -> None:
        self._move(item, self.unmatched)

    def _move(self, item: Item, folder: str) -> None:
        if folder not in self._created:
            self.imap.create(_quote(folder))  # "already exists" is fine
            self._created.add(folder)
        if self.move:
            self._check("MOVE", self.imap.uid("MOVE", item.key, _quote(folder)))
            return
        self._check("COPY", self.imap.uid("COPY", item.key, _quote(folder)))
        self._check("STORE", self.imap.uid("STORE", item.key, "+FLAGS.SILENT", r"(\Deleted)"))
        self._check("EXPUNGE", self.imap.expunge())

    def flag(self, item: Item) -> None:
        self._check("STORE", self.imap.uid("STORE", item.key, "+FLAGS.SILENT", r"(\Flagged)"))

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            if self.imap.state == "SELECTED":
                self.imap.close()
            self.imap.logout()


def _said(data: Any) -> str:
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def open_source(cfg: Config, maildir: Path | None = None) -> Source:
    """The configured bounce mailbox (``maildir`` overrides the settings)."""
    folders = (cfg.bounces.processed_folder, cfg.bounces.unmatched_folder)
    if maildir is not None:
        return MaildirSource(maildir, *folders)
    if cfg.bounces.maildir:
        return MaildirSource(cfg.resolve(Path(cfg.bounces.maildir)), *folders)
    if cfg.bounces.imap_url:
        return ImapSource(cfg)
    raise BounceError(
        "no bounce mailbox: set [bounces] maildir or imap_url, or give --maildir PATH"
    )


def configured(cfg: Config) -> bool:
    return bool(cfg.bounces.maildir or cfg.bounces.imap_url)


@dataclass
class MailboxReport:
    counts: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)
    expired: int = 0
    restored: int = 0

    def summary(self) -> str:
        text = ", ".join(f"{kind} {self.counts[kind]}" for kind in KINDS)
        return text + f"; unconfirmed subscriptions removed {self.expired + self.restored}"


def process_mailbox(cfg: Config, store: Store, key: Keys, source: Source) -> MailboxReport:
    """Read every message once: act, then move it aside; set aside what proves nothing,
    flag and keep what cannot be read."""
    result = MailboxReport()
    for item in source.messages():
        if item.data is None:
            result.counts["unreadable"] += 1
            result.lines.append(f"unreadable: {item.where}: {item.error}; kept")
            source.flag(item)
            continue
        try:
            report = read_report(cfg, key, item.data)
            rid = report_id(item.data)
        except Exception as exc:  # a hostile message must not stop the others
            result.counts["unreadable"] += 1
            result.lines.append(f"unreadable: {item.where}: {type(exc).__name__}: {exc}; kept")
            source.flag(item)
            continue
        if report.kind not in ACTING:
            result.counts[report.kind] += 1
            if report.kind in IGNORED:
                source.done(item)
            else:
                result.lines.append(f"unknown: {item.where}: {report.why}; kept for a person")
                source.flag(item)
            continue
        actions = act(cfg, store, key, report, rid, "mailbox")
        if not actions:
            _set_aside(cfg, store, source, item, report, rid, result)
            continue
        result.counts[report.kind] += 1
        result.lines += [a.line() for a in actions]
        # Only now, with the action committed: a crash before this reads it again, and
        # the report's record makes that second reading change nothing.
        source.done(item)
    return result


def _set_aside(
    cfg: Config,
    store: Store,
    source: Source,
    item: Item,
    report: Report,
    rid: str,
    result: MailboxReport,
) -> None:
    """A report that proved no delivery of ours: it acts on no one, whoever it names (an
    address proves nothing); noted for `newsletter status`, and moved for a person."""
    named = list(dict.fromkeys(a.lower() for a in report.addresses))
    store.record_unmatched(
        report_id=rid, kind=report.kind, addresses=named, diagnostic=report.diagnostic
    )
    result.counts["unmatched"] += 1
    result.lines.append(
        f"unmatched: {item.where}: {report.kind} report with no token or Message-ID of ours "
        f"(names {', '.join(named) or 'no address'}); moved to {cfg.bounces.unmatched_folder} "
        "for a person"
    )
    source.set_aside(item)


def expire_unconfirmed(store: Store, now: dt.datetime | None = None) -> tuple[int, int]:
    """Remove subscriptions left pending longer than a confirmation link works."""

    before = (now or utcnow()) - dt.timedelta(days=CONFIRM_DAYS)
    deleted, restored = store.delete_unconfirmed(before)
    if deleted or restored:
        log.info(
            "unconfirmed subscriptions: %d deleted, %d set back to unsubscribed", deleted, restored
        )
    return deleted, restored


def process(cfg: Config, store: Store, key: Keys, *, maildir: Path | None = None) -> MailboxReport:
    """``newsletter bounces``: the mailbox once, then the unconfirmed subscriptions."""
    source = open_source(cfg, maildir)
    try:
        result = process_mailbox(cfg, store, key, source)
    finally:
        source.close()
    result.expired, result.restored = expire_unconfirmed(store)
    return result


def poll(cfg: Config, store: Store, key: Keys) -> MailboxReport:
    """One round of `newsletter run`'s poller: the mailbox when one is configured, and
    the unconfirmed subscriptions always."""
    if configured(cfg):
        result = process(cfg, store, key)
        for line in result.lines:
            log.info("bounces: %s", line)
        return result
    result = MailboxReport()
    result.expired, result.restored = expire_unconfirmed(store)
    return result
