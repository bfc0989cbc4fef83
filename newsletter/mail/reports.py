"""Reading a report that came back by mail: a bounce, a complaint, a mailed unsubscribe.

Relays accept with 250 and report failures later, to the envelope sender. Each delivery
goes out from its own address (VERP, :func:`newsletter.mail.tokens.envelope_sender`), so a
report names its delivery even when it says nothing else useful; the
``X-Newsletter-Delivery`` header and the Message-ID, which complaints (ARF) and most
bounces carry back, are the fallbacks.

Anyone can send mail to the bounce address, and write any ``Final-Recipient``, ``To:`` or
``From:`` in it: the addresses a report names are kept for the record, but only a token we
signed or a Message-ID we sent proves which delivery it answers
(:func:`newsletter.mail.bounces.act`).

:func:`read_report` classifies one message:

- ``hard`` / ``soft`` / ``blocked``: an RFC 3464 delivery status notification (``5.x.x``
  address failures are hard; ``4.x.x`` and a full mailbox, ``5.2.2``, are soft; a policy or
  content refusal says nothing about the address), or a non-standard bounce recognised by
  Mailman's detectors (``flufl.bounce``);
- ``complaint``: an RFC 5965 abuse report (ARF) from a feedback loop;
- ``unsubscribe``: a mail to a subscriber's own List-Unsubscribe address
  ``LOCAL+TOKEN@DOMAIN`` (or, from issues sent before those, with ``unsubscribe TOKEN``
  in its subject); a mail to ``email.unsubscribe_mailto`` without a token names nobody;
- ``auto_reply`` and ``notice`` (delayed or delivered DSNs): nothing to do;
- ``unknown``: left for a person.

What is done with a report is :mod:`newsletter.mail.bounces`'s business.
"""

from __future__ import annotations

import contextlib
import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from newsletter.config import Config
from newsletter.mail.message import list_key
from newsletter.mail.tokens import UNSUBSCRIBE, Keys, TokenError, read_mailed_token, read_token
from newsletter.mail.transport import bounce_kind

log = logging.getLogger(__name__)

HEADER = "X-Newsletter-Delivery"

# A delivery token (newsletter.mail.tokens), or one of the older form: lower case only, as
# made (a token is accepted only in the form it was made in).
_TOKEN = r"(?-i:[a-z2-7]{26}|[0-9a-z]{1,13}-[a-z2-7]{13})"
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


@dataclass
class Report:
    """What one message says, before it is matched to subscribers."""

    kind: str
    status: str = ""
    diagnostic: str = ""
    # Delivery tokens (not yet checked): from the VERP address first, then
    # X-Newsletter-Delivery.
    tokens: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    # From a checked unsubscribe token: no further matching needed.
    subscriber_ids: list[int] = field(default_factory=list)
    why: str = ""


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


def _envelope_tokens(msg: email.message.Message) -> list[str]:
    tokens = []
    for name in _ENVELOPE_HEADERS:
        for value in msg.get_all(name) or []:
            tokens += _VERP_RE.findall(str(value))
    return tokens


def _correlate(report: Report, msg: email.message.Message) -> Report:
    """Add what names the reported delivery: VERP tokens, the correlation header of the
    original message, its Message-ID."""
    report.tokens += _envelope_tokens(msg)
    original = _original_headers(msg)
    if original is not None:
        header = str(original.get(HEADER, "")).strip()
        if header:
            report.tokens.append(header)
        mid = str(original.get("Message-ID", "")).strip()
        if mid:
            report.message_ids.append(mid)
        report.addresses += _addresses(original.get("To", ""))
    text = _all_text(msg)
    report.tokens += _HEADER_RE.findall(text)
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
    report.tokens += _VERP_RE.findall(str(block.get("Original-Mail-From", "")))
    return report


def _mailed_unsubscribes(cfg: Config, key: Keys, msg: email.message.Message) -> list[int]:
    """The subscribers whose own List-Unsubscribe address (``LOCAL+TOKEN@DOMAIN``, see
    :func:`newsletter.mail.message.unsubscribe_mailto`) this mail was sent to."""
    local, _, domain = _unsubscribe_address(cfg).rpartition("@")
    if not local:
        return []
    values = [v for name in (*_ENVELOPE_HEADERS, "Cc") for v in msg.get_all(name) or []]
    ids = []
    for address in _addresses(*values):
        box, _, host = address.rpartition("@")
        base, plus, token = box.partition("+")
        if plus and base.lower() == local and host.lower() == domain:
            with contextlib.suppress(TokenError):
                ids.append(read_mailed_token(key, list_key(cfg), token))
    return [i for i in dict.fromkeys(ids) if i > 0]


def _subscriber_tokens(key: Keys, subject: str) -> list[int]:
    """Subscribers named by ``unsubscribe TOKEN`` in a subject: the mailto links of issues
    sent before the mailto addresses had tokens of their own."""
    ids = []
    for token in _UNSUBSCRIBE_RE.findall(subject):
        with contextlib.suppress(TokenError):
            ids.append(read_token(key, UNSUBSCRIBE, unquote(token).strip("<>")))
    return [i for i in ids if i > 0]


def _unsubscribe_address(cfg: Config) -> str:
    target = cfg.email.unsubscribe_mailto.strip().removeprefix("mailto:")
    return target.split("?", 1)[0].lower()


def _addressed_to(msg: email.message.Message, address: str) -> bool:
    """Whether the mail went to ``address``, or to ``LOCAL+ANYTHING@DOMAIN`` of it."""
    values = [
        v for name in ("To", "Cc", "Delivered-To", "X-Original-To") for v in msg.get_all(name) or []
    ]
    for found in _addresses(*values):
        box, _, host = found.lower().rpartition("@")
        if f"{box.partition('+')[0]}@{host}" == address:
            return True
    return False


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
    ids = _mailed_unsubscribes(cfg, key, msg) or _subscriber_tokens(key, subject)
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
            why="a mail to the unsubscribe address without a token (its From proves nothing)",
        )
    return Report("unknown", why="not a bounce, complaint, unsubscribe or auto-reply")


def report_id(data: bytes) -> str:
    """What identifies a report across runs: its Message-ID, else a hash of its bytes."""
    msg = email.message_from_bytes(data[:65536])
    mid = " ".join(str(msg.get("Message-ID", "")).split())
    return mid[:300] if mid else "sha256:" + hashlib.sha256(data).hexdigest()
