"""Reports that come back by mail: bounces, complaints, mailed unsubscribes.

Relays accept with 250 and report failures later, to the envelope sender. Each delivery
goes out from its own address (VERP, :func:`newsletter.mail.sender.envelope_sender`), so a
report names its delivery even when it says nothing else useful; the
``X-Newsletter-Delivery`` header and the Message-ID, which complaints (ARF) and most
bounces carry back, are the fallbacks.

:func:`read_report` classifies one message:

- ``hard`` / ``soft`` / ``blocked``: an RFC 3464 delivery status notification (``5.x.x``
  address failures are hard; ``4.x.x`` and a full mailbox, ``5.2.2``, are soft; a policy or
  content refusal says nothing about the address), or a non-standard bounce recognised by
  Mailman's detectors (``flufl.bounce``);
- ``complaint``: an RFC 5965 abuse report (ARF) from a feedback loop;
- ``unsubscribe``: a mail to ``email.unsubscribe_mailto`` (the List-Unsubscribe mailto),
  with the signed token in its subject or from a subscriber's own address;
- ``auto_reply`` and ``notice`` (delayed or delivered DSNs): nothing to do;
- ``unknown``: left for a person.

:func:`process_mailbox` reads a Maildir or an IMAP mailbox once, acts on each report
through :meth:`newsletter.store.Store.record_report` (idempotent), and only then moves the
message aside; what it cannot read or attribute is flagged and kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import imaplib
import logging
import os
import re
import ssl
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from newsletter.config import BOUNCES_PASSWORD_ENV, Config
from newsletter.errors import NewsletterError
from newsletter.mail.tokens import UNSUBSCRIBE, Keys, TokenError, read_delivery_token, read_token
from newsletter.store import Store, utcnow

log = logging.getLogger(__name__)

# Every kind a message can be, in the order the summary prints them.
KINDS = (
    "hard",
    "soft",
    "blocked",
    "complaint",
    "unsubscribe",
    "auto_reply",
    "notice",
    "unknown",
    "unreadable",
)
# The kinds that act on a subscriber (and are recorded).
ACTING = ("hard", "soft", "blocked", "complaint", "unsubscribe")
# The kinds that need nothing done: moved aside as handled.
IGNORED = ("auto_reply", "notice")

HEADER = "X-Newsletter-Delivery"

_TOKEN = r"[0-9a-z]{1,13}-[a-z2-7]{13}"
_VERP_RE = re.compile(r"\+(" + _TOKEN + r")@", re.IGNORECASE)
_HEADER_RE = re.compile(r"^X-Newsletter-Delivery:\s*(" + _TOKEN + r")\s*$", re.I | re.M)
_MSGID_RE = re.compile(r"^(?:Message-ID|Original-Message-ID):\s*(<[^<>\s]+@[^<>\s]+>)", re.I | re.M)
_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"\b([45])\d\d\b")
_UNSUBSCRIBE_RE = re.compile(r"\bunsubscribe\s+(\S+)", re.IGNORECASE)
_OUT_OF_OFFICE_RE = re.compile(
    r"out of (the )?office|auto(matic)?[ -]?(reply|response)|vacation|away from|"
    r"abwesenheit|absence|부재|자동 ?응답",
    re.IGNORECASE,
)
# Headers of a report that can carry the VERP address it was sent to.
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_MAX_TEXT = 200_000


class BounceError(NewsletterError):
    """The bounce mailbox cannot be used (not configured, missing, login refused)."""


@dataclass
class Report:
    """What one message says, before it is matched to subscribers."""

    kind: str
    status: str = ""
    diagnostic: str = ""
    # Signed delivery tokens: from the VERP address first, then X-Newsletter-Delivery.
    tokens: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    # From a signed unsubscribe token: no further matching needed.
    subscriber_ids: list[int] = field(default_factory=list)
    why: str = ""


# --- reading one message ---------------------------------------------------------------------


def _text(value: Any) -> str:
    """A header value as text (encoded words decoded), never raising."""
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return str(value)


def _addresses(*values: Any) -> list[str]:
    found = []
    for _name, address in email.utils.getaddresses([str(v) for v in values if v]):
        address = address.strip().strip("<>")
        if "@" in address:
            found.append(address)
    return found


def _payload_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[:_MAX_TEXT].decode(charset, "replace")
    except LookupError:
        return payload[:_MAX_TEXT].decode("utf-8", "replace")


def _all_text(msg: email.message.Message) -> str:
    """Every text part, decoded, and the headers of embedded messages, for the fallbacks."""
    chunks = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            chunks.append(_payload_text(part))
        elif part is not msg and part.get_content_type() == "message/rfc822":
            for inner in part.get_payload() if part.is_multipart() else []:
                if isinstance(inner, email.message.Message):
                    chunks.append("".join(f"{k}: {v}\n" for k, v in inner.items()))
    return "\n".join(chunks)


def _original_headers(msg: email.message.Message) -> email.message.Message | None:
    """The headers of the message that was reported (message/rfc822 or text/rfc822-headers)."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part is not msg:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                return inner[0]
        if kind == "text/rfc822-headers":
            return email.parser.HeaderParser().parsestr(_payload_text(part))
    return None


def _fields(part: email.message.Message) -> list[email.message.Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, email.message.Message)]
    if isinstance(payload, str):
        return [email.parser.HeaderParser().parsestr(b) for b in re.split(r"\r?\n\r?\n", payload)]
    return []


def _typed_address(value: Any) -> str:
    """``rfc822; user@example.org`` -> ``user@example.org``."""
    text = str(value or "").strip()
    if ";" in text:
        text = text.split(";", 1)[1]
    text = text.strip().strip("<>")
    return text if "@" in text else ""


def _code(text: str) -> str:
    found = _STATUS_RE.search(text or "")
    return ".".join(found.groups()) if found else ""


def bounce_kind(status: str, permanent: bool = True) -> str:
    """``hard``, ``soft`` or ``blocked`` for an RFC 3463 status code of a failure.

    Address failures (``5.1.x``; ``5.2.x`` but a full mailbox or a too-large message;
    ``5.4.x`` routing; ``5.0.0``, which MTAs send for a 5xx that had no code) are hard;
    ``4.x.x``, ``5.2.2`` and ``5.2.3`` are soft. The mail system, protocol, content and
    policy subjects (``5.3``, ``5.5``, ``5.6``, ``5.7``) say nothing about the address.
    """
    if not status:
        return "hard" if permanent else "soft"
    klass, subject, detail = status.split(".")
    if klass == "4":
        return "soft"
    if klass != "5":
        return "blocked"
    if subject == "2" and detail in ("2", "3"):
        return "soft"
    if subject in ("0", "1", "2", "4"):
        return "hard"
    return "blocked"


def _envelope_tokens(msg: email.message.Message) -> list[str]:
    tokens = []
    for name in _ENVELOPE_HEADERS:
        for value in msg.get_all(name) or []:
            tokens += [t.lower() for t in _VERP_RE.findall(str(value))]
    return tokens


def _correlate(report: Report, msg: email.message.Message) -> Report:
    """Add what names the reported delivery: VERP tokens, the correlation header of the
    original message, its Message-ID."""
    report.tokens += _envelope_tokens(msg)
    original = _original_headers(msg)
    if original is not None:
        header = str(original.get(HEADER, "")).strip().lower()
        if header:
            report.tokens.append(header)
        mid = str(original.get("Message-ID", "")).strip()
        if mid:
            report.message_ids.append(mid)
        report.addresses += _addresses(original.get("To", ""))
    text = _all_text(msg)
    report.tokens += [t.lower() for t in _HEADER_RE.findall(text)]
    report.message_ids += _MSGID_RE.findall(text)
    own = str(msg.get("Message-ID", "")).strip()
    report.message_ids = [m for m in dict.fromkeys(report.message_ids) if m != own]
    report.tokens = list(dict.fromkeys(report.tokens))
    return report


def _report_part(msg: email.message.Message, report_type: str) -> email.message.Message | None:
    if msg.get_content_type() != "multipart/report":
        return None
    if str(msg.get_param("report-type", "", header="content-type")).lower() != report_type:
        return None
    wanted = f"message/{report_type}"
    for part in msg.walk():
        if part.get_content_type() == wanted:
            return part
    return None


def _dsn(msg: email.message.Message, part: email.message.Message) -> Report:
    blocks = _fields(part)[1:] or _fields(part)
    worst: tuple[int, Report] | None = None
    for block in blocks:
        action = str(block.get("Action", "")).strip().lower()
        if not action:
            continue
        diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
        status = _code(str(block.get("Status", ""))) or _code(diagnostic)
        recipient = _typed_address(block.get("Original-Recipient")) or _typed_address(
            block.get("Final-Recipient")
        )
        if action == "failed":
            smtp = _SMTP_CODE_RE.search(diagnostic.split(";", 1)[-1])
            permanent = not (status.startswith("4") or (smtp and smtp.group(1) == "4"))
            kind, rank = bounce_kind(status, permanent), 2
        else:  # delayed, delivered, relayed, expanded: no failure (yet)
            kind, rank = "notice", 1
        found = Report(kind, status, diagnostic.split(";", 1)[-1].strip() or action)
        if recipient:
            found.addresses.append(recipient)
        if worst is None or rank > worst[0]:
            worst = (rank, found)
    if worst is None:
        return Report("unknown", why="a delivery status report without any recipient")
    return worst[1]


def _arf(msg: email.message.Message, part: email.message.Message) -> Report:
    fields = _fields(part)
    block = fields[0] if fields else email.message.Message()
    feedback = str(block.get("Feedback-Type", "abuse")).strip().lower()
    report = Report(
        "complaint", diagnostic=f"{feedback} report from {block.get('User-Agent', '?')}"
    )
    report.addresses += [
        a for a in (_typed_address(v) for v in block.get_all("Original-Rcpt-To") or []) if a
    ]
    # The envelope sender the provider saw: our VERP address, when it kept it.
    report.tokens += [t.lower() for t in _VERP_RE.findall(str(block.get("Original-Mail-From", "")))]
    return report


def _subscriber_tokens(key: Keys, subject: str) -> list[int]:
    ids = []
    for token in _UNSUBSCRIBE_RE.findall(subject):
        with contextlib.suppress(TokenError):
            ids.append(read_token(key, UNSUBSCRIBE, unquote(token).strip("<>")))
    return [i for i in ids if i > 0]


def _unsubscribe_address(cfg: Config) -> str:
    target = cfg.email.unsubscribe_mailto.strip().removeprefix("mailto:")
    return target.split("?", 1)[0].lower()


def _addressed_to(msg: email.message.Message, address: str) -> bool:
    values = [
        v for name in ("To", "Cc", "Delivered-To", "X-Original-To") for v in msg.get_all(name) or []
    ]
    return address in (a.lower() for a in _addresses(*values))


def _auto_reply(msg: email.message.Message) -> bool:
    submitted = str(msg.get("Auto-Submitted", "")).strip().lower()
    if submitted and submitted != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponder"):
        return True
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return True
    return precedence in ("bulk", "junk", "list") and bool(
        _OUT_OF_OFFICE_RE.search(_text(msg.get("Subject")))
    )


def _flufl(msg: email.message.Message) -> Report | None:
    """A non-standard bounce, by Mailman's detectors (the heuristics of many MTAs)."""
    from flufl.bounce import all_failures

    logging.getLogger("flufl.bounce").setLevel(logging.WARNING)
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # a detector tripping on a strange message must not stop us
        log.debug("flufl.bounce could not read a message: %s", exc)
        return None
    if not temporary and not permanent:
        return None
    text = _all_text(msg)
    status = _code(text)
    kind = bounce_kind(status, permanent=bool(permanent))
    if not permanent and kind == "hard":
        kind = "soft"  # a warning, whatever code it quotes
    lines = [ln.strip() for ln in text.splitlines()]
    line = next((ln for ln in lines if status and status in ln), "")
    if not line:
        # No code quoted: the last line naming the address (the first is often a quoted
        # "To:") and the one after it (Exchange's "The recipient name is not recognized").
        wanted = [a.decode("ascii", "replace").lower() for a in permanent or temporary]
        for index in range(len(lines) - 1, -1, -1):
            if any(address in lines[index].lower() for address in wanted):
                line = " ".join(ln for ln in lines[index : index + 2] if ln)
                break
    report = Report(kind, status, line[:500] or "bounce (no diagnostic)")
    for address in sorted(permanent or temporary):
        report.addresses.append(address.decode("ascii", "replace"))
    return report


def read_report(cfg: Config, key: Keys, data: bytes) -> Report:
    """Classify one message (its raw bytes); never raises for what the message contains."""
    msg = email.message_from_bytes(data)
    if not msg.keys():
        return Report("unknown", why="no mail headers")
    part = _report_part(msg, "feedback-report")
    if part is not None:
        return _correlate(_arf(msg, part), msg)
    part = _report_part(msg, "delivery-status")
    if part is not None:
        return _correlate(_dsn(msg, part), msg)
    subject = _text(msg.get("Subject"))
    ids = _subscriber_tokens(key, subject)
    if ids:
        return Report("unsubscribe", diagnostic=subject[:200], subscriber_ids=ids)
    found = _flufl(msg)
    if found is not None:
        return _correlate(found, msg)
    if _auto_reply(msg):
        return Report("auto_reply", diagnostic=subject[:200])
    target = _unsubscribe_address(cfg)
    if target and _addressed_to(msg, target):
        sender = _addresses(msg.get("From", ""))
        return Report(
            "unsubscribe",
            diagnostic=f"mail to {target}: {subject[:150]}",
            addresses=sender[:1],
            why="a mail to the unsubscribe address from an address that is not subscribed",
        )
    return Report("unknown", why="not a bounce, complaint, unsubscribe or auto-reply")


def report_id(data: bytes) -> str:
    """What identifies a report across runs: its Message-ID, else a hash of its bytes."""
    msg = email.message_from_bytes(data[:65536])
    mid = " ".join(str(msg.get("Message-ID", "")).split())
    return mid[:300] if mid else "sha256:" + hashlib.sha256(data).hexdigest()


# --- acting on a report ---------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: str
    email: str
    what: str  # what was done, or "already recorded"

    def line(self) -> str:
        return f"{self.kind}: {self.email}: {self.what}"


def _targets(store: Store, key: Keys, report: Report) -> list[tuple[int, int | None]]:
    """(subscriber id, delivery id or None) of each subscriber the report is about:
    by signed delivery token, by Message-ID, by unsubscribe token, by address."""
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
    """Apply a report to every subscriber it names (nothing when it names none)."""
    actions = []
    for subscriber_id, delivery_id in _targets(store, key, report):
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

    def flag(self, item: Item) -> None:
        """Leave a message for a person, marked so the next run skips it."""
        ...

    def close(self) -> None: ...


class MaildirSource:
    """A Maildir: reads ``new/`` and ``cur/``, skipping messages flagged ``F`` (left for a
    person); handled ones move to the Maildir++ folder ``.PROCESSED`` (``cur/``, seen)."""

    def __init__(self, path: Path, processed: str = "Processed") -> None:
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise BounceError(f"bounces.maildir: {path} is not a Maildir (no cur/, new/, tmp/)")
        self.path = path
        self.processed = path / f".{processed}"

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
        for sub in ("cur", "new", "tmp"):
            (self.processed / sub).mkdir(parents=True, exist_ok=True)
        (self.processed / "maildirfolder").touch()
        name = item.key.split("/", 1)[1].split(":", 1)[0]
        os.rename(self.path / item.key, self.processed / "cur" / f"{name}:2,S")

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
    handled ones move to the folder ``processed``, the rest are flagged for a person."""

    def __init__(self, cfg: Config, timeout: float = 60.0) -> None:
        bounces = cfg.bounces
        url = urlsplit(bounces.imap_url)
        self.where = f"{url.hostname}:{url.port or 993}"
        self.mailbox = unquote(url.path.lstrip("/")) or "INBOX"
        self.processed = bounces.processed_folder
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
        self._created = False

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
        if not self._created:
            self.imap.create(_quote(self.processed))  # "already exists" is fine
            self._created = True
        if self.move:
            self._check("MOVE", self.imap.uid("MOVE", item.key, _quote(self.processed)))
            return
        self._check("COPY", self.imap.uid("COPY", item.key, _quote(self.processed)))
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
    if maildir is not None:
        return MaildirSource(maildir, cfg.bounces.processed_folder)
    if cfg.bounces.maildir:
        return MaildirSource(cfg.resolve(Path(cfg.bounces.maildir)), cfg.bounces.processed_folder)
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
    """Read every message once: act, then move it aside; flag and keep what needs a person."""
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
        result.counts[report.kind] += 1
        if report.kind in IGNORED:
            source.done(item)
            continue
        if report.kind not in ACTING:
            result.lines.append(f"unknown: {item.where}: {report.why}; kept for a person")
            source.flag(item)
            continue
        actions = act(cfg, store, key, report, rid, "mailbox")
        if not actions:
            who = ", ".join(report.addresses) or "no address"
            result.lines.append(
                f"{report.kind}: {item.where}: no subscriber matched ({who}); kept for a person"
            )
            source.flag(item)
            continue
        result.lines += [a.line() for a in actions]
        # Only now, with the action committed: a crash before this reads it again, and
        # the report's record makes that second reading change nothing.
        source.done(item)
    return result


def expire_unconfirmed(store: Store, now: dt.datetime | None = None) -> tuple[int, int]:
    """Remove subscriptions left pending longer than a confirmation link works."""
    from newsletter.web.subscription import CONFIRM_DAYS

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
