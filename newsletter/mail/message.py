"""The email: a rendered issue -> signed RFC 5322 bytes, one per recipient, cheaply.

:func:`message_template` builds the MIME structure once per (issue, language) with the
email package. Bodies going over SMTP are base64 (7-bit clean, and a third smaller than
quoted-printable for Korean text), encoded once in pieces that end on 3-byte boundaries,
so a recipient's unsubscribe and preferences URLs are spliced in by encoding only the few
bytes around them. Into the Maildir outbox (no SMTP host) the text part is 8bit instead,
UTF-8 as it is, so that ``cat`` shows it and its links (:func:`readable_text`).
:meth:`MessageTemplate.personalize` then writes four headers, joins pre-encoded bytes
and, when a key is configured, DKIM-signs the result (:mod:`newsletter.mail.signing`, keys
loaded once per template). Delivery sends exactly those bytes.

:func:`build_message` is the plain reference: one full EmailMessage per recipient.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.policy
import email.utils
import html
import logging
import re
import secrets
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from urllib.parse import quote

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.mail.signing import Signer, signing_domain
from newsletter.publish.render import RenderedIssue

log = logging.getLogger(__name__)

__all__ = [
    "POLICY",
    "HeaderError",
    "MessageTemplate",
    "PreparedMessage",
    "build_message",
    "message_domain",
    "message_template",
    "preferences_url",
    "unsubscribe_url",
]

# 76-character lines for both quoted-printable and encoded words (RFC 2045, RFC 2047).
POLICY = email.policy.SMTP.clone(max_line_length=76)
CRLF = b"\r\n"
_B64_LINE = 57  # input bytes per 76-character base64 line
# RFC 5322: a line is at most 998 octets; an 8bit body must keep to it.
_MAX_LINE = 998
# Room left on a line for an unsubscribe token (tokens are well under 100 characters).
_LONGEST_TOKEN = 200
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)
_ATOM_PHRASE_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_MSGID_RE = re.compile(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.\-\[\]]+)>?")


class HeaderError(NewsletterError):
    """A value that cannot go into a mail header as given (a line break, a bad address)."""


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """One recipient's message, ready to send unchanged. ``message_id`` includes the ``<>``.

    ``wire_ready`` promises that :func:`is_wire_ready` holds for ``data``, so a sender may
    skip rewriting line endings and dot-stuffing.
    """

    message_id: str
    data: bytes
    wire_ready: bool = False


def is_wire_ready(data: bytes) -> bool:
    """True when ``data`` can follow SMTP DATA unchanged: it ends with CRLF, has no bare CR
    or LF, and no line starts with a dot (so no dot-stuffing is needed)."""
    crlf = data.count(b"\r\n")
    return (
        data.endswith(b"\r\n")
        and data.count(b"\n") == crlf
        and data.count(b"\r") == crlf
        and b"\n." not in data
        and not data.startswith(b".")
    )


def _one_line(what: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderError(
            f"{what} contains a line break, which would inject mail headers: {value!r}"
        )
    if _CONTROL_RE.search(value):
        raise HeaderError(f"{what} contains a control character: {value!r}")
    return value


def _address(what: str, value: str) -> str:
    _one_line(what, value)
    if not _ADDRESS_RE.fullmatch(value):
        raise HeaderError(
            f"{what} is not a plain ASCII address such as name@example.org: {value!r}"
        )
    return value


def message_domain(cfg: Config) -> str:
    """The domain of Message-IDs: ``email.dkim_domain``, else the sender's domain."""
    return signing_domain(cfg) or "localhost"


def _page_url(cfg: Config, page: str, token: str) -> str:
    _one_line(f"{page} token", token)
    if not token:
        raise HeaderError(f"{page} token is empty")
    return f"{cfg.site_url}{page}/{quote(token, safe='')}"


def unsubscribe_url(cfg: Config, token: str) -> str:
    """The one-click unsubscribe URL of a recipient's token."""
    return _page_url(cfg, "unsubscribe", token)


def preferences_url(cfg: Config, token: str) -> str:
    """The preferences page (email language, unsubscribe) of a recipient's token, made
    with ``make_token(key, tokens.PREFERENCES, subscriber_id)``."""
    return _page_url(cfg, "preferences", token)


def _list_id(cfg: Config, lang: str) -> str:
    """Each language's edition is a list of its own, so readers can filter them apart:
    ``[email.LANG] list_id``, else ``[email] list_id`` (or ``newsletter.DOMAIN``) as it is
    for the default language and under ``LANG.`` for another."""
    own = _one_line(f"email.{lang}.list_id", getattr(cfg.email, lang).list_id.strip())
    if own:
        return own if "<" in own else f"<{own}>"
    shared = _one_line("email.list_id", cfg.email.list_id.strip())
    name = cfg.email.edition(lang).name
    if shared and "<" in shared:
        name, _, shared = shared.partition("<")
        name, shared = name.strip(), shared.rstrip(">").strip()
    ident = shared or f"newsletter.{message_domain(cfg)}"
    prefix = "" if lang == cfg.default_lang else f"{lang}."
    # The name is a phrase before the <id>: brackets or quotes in it would end it early.
    name = re.sub(r'[<>"\\]', "", name).strip()
    return f"{name} <{prefix}{ident}>".lstrip()


def _from(cfg: Config, lang: str) -> Address:
    return Address(
        _one_line("email.from_name", cfg.email.edition(lang).from_name),
        addr_spec=_address("email.from_address", cfg.email.from_address),
    )


def _mailto(cfg: Config, token: str) -> str | None:
    target = _one_line("email.unsubscribe_mailto", cfg.email.unsubscribe_mailto.strip())
    if not target:
        return None
    target = target.removeprefix("mailto:")
    return f"mailto:{target}?subject={quote('unsubscribe ' + token, safe='')}"


def _list_unsubscribe(cfg: Config, token: str) -> str:
    parts = [f"<{unsubscribe_url(cfg, token)}>"]
    mailto = _mailto(cfg, token)
    if mailto:
        parts.append(f"<{mailto}>")
    return ", ".join(parts)


def _message_id(cfg: Config, rendered: RenderedIssue, message_id: str | None) -> str:
    if message_id is None:
        return f"<{rendered.week}.{rendered.lang}.{secrets.token_hex(12)}@{message_domain(cfg)}>"
    match = _MSGID_RE.fullmatch(_one_line("message_id", message_id.strip()))
    if match is None:
        raise HeaderError(f"message_id must look like <id@domain>: {message_id!r}")
    return f"<{match.group(1)}>"


def readable_text(cfg: Config) -> bool:
    """Whether text parts are written 8bit (UTF-8 as it is, readable with ``cat``): only
    for the Maildir outbox, whose files no relay ever re-encodes. Over SMTP bodies stay
    7-bit clean: a relay that turns an 8-bit body into 7 bits breaks its DKIM signature,
    and quoted-printable would show Korean as =XX codes and cut long links in two."""
    return not cfg.smtp.host


def _fits_8bit(text: str, markers: tuple[str, ...] = (), value_bytes: int = 0) -> bool:
    """Whether canonical ``text`` can go out as 8bit, each of its ``markers`` taking up to
    ``value_bytes`` bytes: no line over 998 octets, no NUL and no CR or LF outside a
    line break."""
    data = text.encode("utf-8")
    breaks = data.count(b"\r\n")
    if b"\0" in data or data.count(b"\r") != breaks or data.count(b"\n") != breaks:
        return False
    slots = [m.encode("utf-8") for m in markers if m]
    return all(
        len(line) + sum(line.count(slot) * (value_bytes - len(slot)) for slot in slots) <= _MAX_LINE
        for line in data.split(b"\r\n")
    )


def _text_cte(cfg: Config, text: str, markers: tuple[str, ...] = (), value_bytes: int = 0) -> str:
    """``8bit`` for a text part written readable (see :func:`readable_text`) that can be,
    else ``base64``."""
    if readable_text(cfg) and _fits_8bit(_canonical(text), markers, value_bytes):
        return "8bit"
    return "base64"


# -- the reference path --------------------------------------------------------------------


def build_message(
    cfg: Config,
    rendered: RenderedIssue,
    *,
    to_address: str,
    to_name: str = "",
    unsubscribe_token: str,
    preferences_token: str | None = None,
    message_id: str | None = None,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """One complete message built the plain way (the reference for the fast path)."""
    _address("recipient address", to_address)
    _one_line("recipient name", to_name)
    url = unsubscribe_url(cfg, unsubscribe_token)
    preferences = None if preferences_token is None else preferences_url(cfg, preferences_token)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _from(cfg, rendered.lang)
    msg["To"] = Address(to_name, addr_spec=to_address)
    msg["Subject"] = _one_line("subject", rendered.subject)
    msg["Date"] = date or dt.datetime.now(dt.UTC)
    msg["Message-ID"] = _message_id(cfg, rendered, message_id)
    if cfg.email.reply_to:
        msg["Reply-To"] = _address("email.reply_to", cfg.email.reply_to)
    msg["List-Id"] = _list_id(cfg, rendered.lang)
    msg["List-Unsubscribe"] = _list_unsubscribe(cfg, unsubscribe_token)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text, body = rendered.text_for(url, preferences), rendered.html_for(url, preferences)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_text_cte(cfg, text))
    msg.add_alternative(body, subtype="html", charset="utf-8", cte="base64")
    return msg


# -- the fast path ---------------------------------------------------------------------------


def _b64_lines(data: bytes) -> bytes:
    """Base64 in lines of at most 76 characters, each ending in CRLF."""
    if not data:
        return b""
    return b"".join(
        binascii.b2a_base64(data[i : i + _B64_LINE], newline=False) + CRLF
        for i in range(0, len(data), _B64_LINE)
    )


def _canonical(text: str) -> str:
    """Text in MIME canonical form (RFC 2046): CRLF line breaks, ending with one."""
    text = "\r\n".join(text.replace("\r\n", "\n").split("\n"))
    return text if text.endswith("\r\n") else text + "\r\n"


def _split_slots(text: str, markers: tuple[str, ...]) -> tuple[list[bytes], list[int]]:
    """``text`` cut at its markers: the UTF-8 pieces, and which marker (by its place in
    ``markers``) stood between piece i and piece i + 1. An empty marker has no slot."""
    kind = {marker: index for index, marker in enumerate(markers) if marker}
    pieces = re.split("(" + "|".join(map(re.escape, kind)) + ")", text) if kind else [text]
    return [p.encode("utf-8") for p in pieces[0::2]], [kind[m] for m in pieces[1::2]]


class _SlottedBase64:
    """A body with slots, base64-encoded once in pieces that can be joined around values.

    Base64 of a concatenation equals the concatenation of the parts' base64 when every
    part but the last is a multiple of 3 bytes long. Each static piece is encoded once for
    each of the three ways it can be entered (0, 1 or 2 of its bytes taken by the joint
    before it); per recipient only the joints (the value plus at most 4 static bytes) are
    encoded. Every line stays a multiple of 4 characters and at most 76 long.

    Each marker names a slot kind: :meth:`encode` takes one value per marker, in order
    (an empty marker has no slot).
    """

    __slots__ = ("_kinds", "_parts", "_variants")

    def __init__(self, text: str, *markers: str) -> None:
        self._parts, self._kinds = _split_slots(text, markers)
        # _variants[i][h] = (encoded middle of part i after its first h bytes, leftover tail)
        self._variants: list[list[tuple[bytes, bytes] | None]] = []
        for part in self._parts:
            variants: list[tuple[bytes, bytes] | None] = []
            for head in range(3):
                if head > len(part):
                    variants.append(None)
                    continue
                body = part[head:]
                cut = len(body) - len(body) % 3
                variants.append((_b64_lines(body[:cut]), body[cut:]))
            self._variants.append(variants)

    def has_slot(self, kind: int) -> bool:
        return kind in self._kinds

    def encode(self, *values: bytes) -> bytes:
        out: list[bytes] = []
        carry = b""
        for index, part in enumerate(self._parts):
            if index:
                carry += values[self._kinds[index - 1]]
            need = -len(carry) % 3
            variant = self._variants[index][need]
            if variant is None:  # a piece shorter than the joint needs: it joins the carry
                carry += part
                continue
            carry += part[:need]
            if carry:
                out.append(_b64_lines(carry))
            middle, carry = variant
            out.append(middle)
        if carry:
            out.append(_b64_lines(carry))
        return b"".join(out)


class _SlottedText:
    """An 8bit body with slots: its UTF-8 bytes, joined around one value per marker."""

    __slots__ = ("_kinds", "_parts")

    def __init__(self, text: str, *markers: str) -> None:
        self._parts, self._kinds = _split_slots(text, markers)

    def has_slot(self, kind: int) -> bool:
        return kind in self._kinds

    def encode(self, *values: bytes) -> bytes:
        out = [self._parts[0]]
        for kind, part in zip(self._kinds, self._parts[1:], strict=True):
            out += (values[kind], part)
        return b"".join(out)


def _encoded_words(text: str, max_bytes: int = 45) -> list[str]:
    """RFC 2047 base64 encoded words of at most 72 characters (``max_bytes`` of UTF-8 each),
    split between characters."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > max_bytes:
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def _subject_header(subject: str) -> bytes:
    """The Subject's value, folded to 76 columns.

    Written here rather than by the email package, which folds text mixing ASCII words and
    encoded words with a space on both sides of the line break: readers then show two spaces
    (``with  Large…``). ASCII is folded at its own spaces; anything else is all encoded
    words, the whitespace between which readers drop."""
    _one_line("subject", subject)
    # A title holding "=?...?=" written as it is would be decoded by readers into whatever
    # it says: such a subject is encoded too, as a display name is (_mailbox_header).
    if not subject.isascii() or "=?" in subject or "?=" in subject:
        # 39 bytes make words of 64 characters, which fit after "Subject: ".
        return "\r\n ".join(_encoded_words(subject, 39)).encode("ascii")
    lines = [""]
    width = 76 - len("Subject: ")
    for index, word in enumerate(subject.split(" ")):
        if index and len(lines[-1]) + 1 + len(word) > width and lines[-1].strip():
            lines.append(" " + word)  # the break goes before the space, which stays
            width = 76
        else:
            lines[-1] += (" " if index else "") + word
    return "\r\n".join(lines).encode("ascii")


def _mailbox_header(name: str, address: str, prefix_len: int) -> bytes:
    """``name <address>`` folded to 76 columns, the name RFC 2047-encoded when needed."""
    _one_line("recipient name", name)
    _address("recipient address", address)
    name = name.strip()
    if not name:
        return address.encode("ascii")
    # A name that looks like an encoded word is itself encoded, never written as it is:
    # a reader would decode it into whatever it says.
    marked = "=?" in name or "?=" in name
    if len(name) <= 40 and not marked and _ATOM_PHRASE_RE.fullmatch(name):
        phrase = [name]
    elif len(name) <= 40 and not marked and name.isascii() and name.isprintable():
        phrase = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        phrase = _encoded_words(name)
    lines = list(phrase)  # each encoded word on its own folded line
    tail = f"<{address}>"
    width = prefix_len + len(lines[-1]) if len(lines) == 1 else 1 + len(lines[-1])
    if width + 1 + len(tail) <= 76:
        lines[-1] += " " + tail
    else:
        lines.append(tail)
    return "\r\n ".join(lines).encode("ascii")


def _fold_list(prefix_len: int, items: list[str]) -> bytes:
    text = ", ".join(items)
    if prefix_len + len(text) <= 76:
        return text.encode("ascii")
    return ",\r\n ".join(items).encode("ascii")


class MessageTemplate:
    """One (issue, language) message, built once; :meth:`personalize` per recipient."""

    def __init__(
        self,
        cfg: Config,
        rendered: RenderedIssue,
        *,
        signer: Signer | None = None,
    ) -> None:
        self.cfg = cfg
        self.rendered = rendered
        self._mailto = bool(cfg.email.unsubscribe_mailto.strip())
        markers = (rendered.marker, rendered.preferences_marker)
        self._html = _SlottedBase64(_canonical(rendered.html), *markers)
        text = _canonical(rendered.text)
        # A slot gets the site's unsubscribe or preferences URL: allow for any likely token.
        longest = len(preferences_url(cfg, "t")) + _LONGEST_TOKEN
        self._text_cte = _text_cte(cfg, text, markers, longest)
        self._text: _SlottedBase64 | _SlottedText
        if self._text_cte == "8bit":
            self._text = _SlottedText(text, *markers)
            # A line starting with a dot would need dot-stuffing over SMTP.
            self._wire_ready = "\r\n." not in text and not text.startswith(".")
        else:
            self._text = _SlottedBase64(text, *markers)
            self._wire_ready = True
        self.links_preferences = self._html.has_slot(1) or self._text.has_slot(1)
        self._head, self._between, self._tail = self._skeleton()
        self._signer = signer
        self._date_second = -1
        self._date = b""

    def _skeleton(self) -> tuple[bytes, bytes, bytes]:
        """The shared headers and MIME frame, from the email package, around two slots."""
        cfg, rendered = self.cfg, self.rendered
        root = EmailMessage(policy=POLICY)
        root["From"] = _from(cfg, rendered.lang)
        if cfg.email.reply_to:
            root["Reply-To"] = _address("email.reply_to", cfg.email.reply_to)
        root["List-Id"] = _list_id(cfg, rendered.lang)
        root["List-Archive"] = f"<{cfg.site_url}>"
        root["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        # Bulk mail: no vacation or out-of-office replies to the sender (Exchange reads the
        # second header, most others the first).
        root["Precedence"] = "bulk"
        root["X-Auto-Response-Suppress"] = "OOF, AutoReply"
        root["MIME-Version"] = "1.0"
        root["Content-Type"] = "multipart/alternative"
        root.set_boundary(f"=_{secrets.token_hex(16)}")
        slots = []
        for subtype, cte in (("plain", self._text_cte), ("html", "base64")):
            part = EmailMessage(policy=POLICY)
            part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
            part["Content-Transfer-Encoding"] = cte
            slot = f"SLOT-{subtype}-{secrets.token_hex(8)}"
            part.set_payload(slot + "\r\n")
            slots.append(slot.encode("ascii") + CRLF)
            root.attach(part)
        data = (
            b"Subject: " + _subject_header(rendered.subject) + CRLF + root.as_bytes(policy=POLICY)
        )
        head, between = data.split(slots[0])
        between, tail = between.split(slots[1])
        return head, between, tail

    def _now(self) -> bytes:
        now = dt.datetime.now(dt.UTC)
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second = second
            self._date = email.utils.format_datetime(now.replace(microsecond=0)).encode("ascii")
        return self._date

    def personalize(
        self,
        *,
        to_address: str,
        to_name: str,
        unsubscribe_token: str,
        preferences_token: str | None = None,
        message_id: str | None = None,
        delivery_token: str | None = None,
        sign: bool = True,
    ) -> PreparedMessage:
        """The message for one recipient: CRLF line endings, DKIM-signed when configured
        (unless ``sign`` is false: a queued single mail is signed when it goes out).

        ``preferences_token`` (``tokens.PREFERENCES``) is needed when the issue links the
        preferences page (:attr:`links_preferences`).

        ``delivery_token`` goes into ``X-Newsletter-Delivery``, so that a report that lost
        the envelope (a complaint carries the original headers) still names its delivery.

        Raises :class:`HeaderError` for a name, address, token or Message-ID that would
        break the headers.
        """
        url = unsubscribe_url(self.cfg, unsubscribe_token)
        preferences = ""
        if self.links_preferences:
            if preferences_token is None:
                raise HeaderError("this issue links the preferences page: no preferences token")
            preferences = preferences_url(self.cfg, preferences_token)
        mid = _message_id(self.cfg, self.rendered, message_id)
        to = _mailbox_header(to_name, to_address, len("To: "))
        correlation = b""
        if delivery_token is not None:
            token = _one_line("delivery token", delivery_token)
            if not token.isascii() or not token.replace("-", "").isalnum():
                raise HeaderError(f"delivery token must be letters, digits and '-': {token!r}")
            correlation = b"\r\nX-Newsletter-Delivery: " + token.encode("ascii")
        items = [f"<{url}>"]
        if self._mailto:
            mailto = _mailto(self.cfg, unsubscribe_token)
            items.append(f"<{mailto}>")
        data = b"".join(
            (
                b"To: ",
                to,
                b"\r\nDate: ",
                self._now(),
                b"\r\nMessage-ID: ",
                mid.encode("ascii"),
                correlation,
                b"\r\nList-Unsubscribe: ",
                _fold_list(len("List-Unsubscribe: "), items),
                CRLF,
                self._head,
                self._text.encode(url.encode("utf-8"), preferences.encode("utf-8")),
                self._between,
                self._html.encode(
                    html.escape(url, quote=True).encode("utf-8"),
                    html.escape(preferences, quote=True).encode("utf-8"),
                ),
                self._tail,
            )
        )
        if sign and self._signer is not None:
            data = b"".join(self._signer.signatures(data)) + data
        # Wire-ready by construction: CRLF everywhere (the policy, the canonical bodies and
        # the signature's folding) and no line can start with a dot (base64 has none, an
        # 8bit text was checked once, headers start with a name or folding white space,
        # boundaries with "--").
        return PreparedMessage(mid, data, wire_ready=self._wire_ready)


def message_template(
    cfg: Config, rendered: RenderedIssue, *, dkim_key: bytes | None = None
) -> MessageTemplate:
    """Build the shared part of an issue's messages once.

    DKIM signing is on when ``dkim_key`` (RSA, PEM bytes) is given or
    ``email.dkim_key_file`` is configured (it then needs ``email.dkim_selector``), and
    with ``email.dkim_ed25519_key_file`` a second, Ed25519 signature is added. The keys
    are loaded here, once for all the template's messages.
    """
    return MessageTemplate(cfg, rendered, signer=Signer.from_config(cfg, rsa_pem=dkim_key))


# -- the subscription confirmation ---------------------------------------------------------


def confirmation_message(
    cfg: Config,
    *,
    lang: str,
    to_address: str,
    to_name: str,
    confirm_url: str,
    valid_days: int,
) -> PreparedMessage:
    """The double opt-in email: a short text message with the confirmation link, which
    works for ``valid_days`` days (the mail says so)."""
    from newsletter.publish.render import environment, translations_for

    env = environment(lang)
    edition = cfg.email.edition(lang)
    text = env.get_template("email/confirm.txt").render(
        name=edition.name,
        confirm_url=confirm_url,
        valid_days=valid_days,
        contact=edition.contact,
    )
    gettext = translations_for(lang).gettext
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _from(cfg, lang)
    msg["Subject"] = _one_line(
        "subject", str(gettext("Confirm your subscription")) + f": {edition.name}"
    )
    msg["Date"] = dt.datetime.now(dt.UTC)
    message_id = f"<confirm.{secrets.token_hex(12)}@{message_domain(cfg)}>"
    msg["Message-ID"] = message_id
    if cfg.email.reply_to:
        msg["Reply-To"] = _address("email.reply_to", cfg.email.reply_to)
    msg["Auto-Submitted"] = "auto-generated"
    text = text.replace("\r\n", "\n")
    msg.set_content(text, cte=_text_cte(cfg, text))
    # To is built here, not by the email package, whose folding of a display name holding
    # encoded words could write header lines of the name's choosing (CVE-2024-6923).
    to = b"To: " + _mailbox_header(to_name, to_address, len("To: ")) + CRLF
    # Unsigned: the sender signs every queued mail as it goes out (newsletter.mail.signing).
    return PreparedMessage(message_id, to + msg.as_bytes(policy=POLICY))
