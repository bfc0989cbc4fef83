"""The email: a rendered issue -> signed RFC 5322 bytes, one per recipient, cheaply.

:func:`message_template` builds the MIME structure once per (issue, language) with the
email package. Bodies going over SMTP are base64 (7-bit clean, and a third smaller than
quoted-printable for Korean text), encoded once in pieces that end on 3-byte boundaries,
so a recipient's unsubscribe and preferences URLs are spliced in by encoding only the few
bytes around them (:mod:`newsletter.mail.mime`, which also folds the headers written per
recipient). Into the Maildir outbox (no SMTP host) the text part is 8bit instead,
UTF-8 as it is, so that ``cat`` shows it and its links (:func:`readable_text`).
:meth:`MessageTemplate.personalize` then writes four headers and joins pre-encoded
bytes once; when a key is configured it DKIM-signs them, from the pieces, with what the
template's :class:`~newsletter.mail.signplan.SigningPlan` worked out once (keys loaded once
per template, or once for a frozen issue, whose languages share one signer). Delivery
sends exactly those bytes. A sender may compose a recipient's parts
(:meth:`MessageTemplate.compose`), have them signed in a signing process
(:meth:`MessageTemplate.signing_parts`, :mod:`newsletter.mail.signproc`), and join them
with those signatures (:meth:`MessageTemplate.finish`).

:func:`build_message` is the plain reference: one full EmailMessage per recipient.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import html
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Required, TypedDict, Unpack
from urllib.parse import quote, urlsplit

from newsletter.config import Config
from newsletter.mail.mime import (
    CRLF,
    HeaderError,
    canonical,
    fits_8bit,
    fold_list,
    mailbox_header,
    one_line,
    plain_address,
    subject_header,
)
from newsletter.mail.mime import SlottedBase64 as _SlottedBase64
from newsletter.mail.mime import SlottedText as _SlottedText
from newsletter.mail.signing import Signer, signing_domain
from newsletter.mail.signplan import SigningPlan
from newsletter.mail.tokens import PREFERENCES, UNSUBSCRIBE, make_mailed_token, make_token
from newsletter.publish.render import RenderedIssue

log = logging.getLogger(__name__)

__all__ = [
    "POLICY",
    "Composed",
    "HeaderError",
    "MessageTemplate",
    "PreparedMessage",
    "build_message",
    "list_key",
    "message_domain",
    "message_template",
    "preferences_url",
    "recipient_tokens",
    "unsubscribe_mailto",
    "unsubscribe_url",
]

# 76-character lines for both quoted-printable and encoded words (RFC 2045, RFC 2047).
POLICY = email.policy.SMTP.clone(max_line_length=76)
# Room left on a line for an unsubscribe token (tokens are well under 100 characters).
_LONGEST_TOKEN = 200
_MSGID_RE = re.compile(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.\-\[\]]+)>?")


class Recipient(TypedDict, total=False):
    """What :meth:`MessageTemplate.compose` takes about a recipient."""

    to_address: Required[str]
    to_name: Required[str]
    unsubscribe_token: Required[str]
    preferences_token: str | None
    mailto_token: str | None
    message_id: str | None
    delivery_token: str | None


@dataclass(frozen=True, slots=True)
class Composed:
    """One recipient's message before it is joined and signed: its Message-ID (with the
    ``<>``), its own header fields (above the shared ones, each without CRLF) and its body
    after the shared lead, in pieces."""

    message_id: str
    own: list[bytes]
    body: list[bytes]


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


def message_domain(cfg: Config) -> str:
    """The domain of Message-IDs: ``email.dkim_domain``, else the sender's domain."""
    return signing_domain(cfg) or "localhost"


def _page_url(cfg: Config, page: str, token: str) -> str:
    one_line(f"{page} token", token)
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


def list_key(cfg: Config) -> str:
    """The list as a whole, which a mailed unsubscribe token is bound to: the identifier of
    ``email.list_id`` (``weekly.example.org`` of ``Weekly <weekly.example.org>``), else
    ``newsletter.DOMAIN``; the same for every language, as an unsubscribe is."""
    shared = one_line("email.list_id", cfg.email.list_id.strip())
    if "<" in shared:
        shared = shared.partition("<")[2].rstrip(">").strip()
    return shared or f"newsletter.{message_domain(cfg)}"


def _list_id(cfg: Config, lang: str) -> str:
    """Each language's edition is a list of its own, so readers can filter them apart:
    ``[email.LANG] list_id``, else ``[email] list_id`` (or ``newsletter.DOMAIN``) as it is
    for the default language and under ``LANG.`` for another."""
    own = one_line(f"email.{lang}.list_id", getattr(cfg.email, lang).list_id.strip())
    if own:
        return own if "<" in own else f"<{own}>"
    shared = one_line("email.list_id", cfg.email.list_id.strip())
    name = cfg.email.edition(lang).name
    if shared and "<" in shared:
        name = shared.partition("<")[0].strip()
    ident = list_key(cfg)
    prefix = "" if lang == cfg.default_lang else f"{lang}."
    # The name is a phrase before the <id>: brackets or quotes in it would end it early.
    name = re.sub(r'[<>"\\]', "", name).strip()
    return f"{name} <{prefix}{ident}>".lstrip()


def _from(cfg: Config, lang: str) -> Address:
    return Address(
        one_line("email.from_name", cfg.email.edition(lang).from_name),
        addr_spec=plain_address("email.from_address", cfg.email.from_address),
    )


def _mailto_address(cfg: Config) -> tuple[str, str]:
    target = one_line("email.unsubscribe_mailto", cfg.email.unsubscribe_mailto.strip())
    address = plain_address("email.unsubscribe_mailto", target.removeprefix("mailto:"))
    local, _, domain = address.rpartition("@")
    return local, domain


def unsubscribe_mailto(cfg: Config, token: str) -> str:
    """A recipient's List-Unsubscribe mailto (RFC 2369): ``mailto:LOCAL+TOKEN@DOMAIN?
    subject=unsubscribe`` for ``email.unsubscribe_mailto`` = ``LOCAL@DOMAIN``, where
    ``token`` is ``make_mailed_token(key, list_key(cfg), subscriber_id)``. The address
    itself is the proof: a mail to the bare address, or from a subscriber's own address,
    names nobody (anyone can write any ``From:``)."""
    local, domain = _mailto_address(cfg)
    one_line("mailto token", token)
    if not token or not token.isascii() or not token.isalnum():
        raise HeaderError(f"mailto token must be letters and digits: {token!r}")
    return f"mailto:{local}+{token}@{domain}?subject=unsubscribe"


class RecipientTokens(TypedDict):
    unsubscribe_token: str
    preferences_token: str
    mailto_token: str


def recipient_tokens(cfg: Config, key: bytes, subscriber_id: int) -> RecipientTokens:
    """A subscriber's tokens for :meth:`MessageTemplate.personalize` (subscriber 0, who
    does not exist, for samples and copies: their links work and change nothing)."""
    return {
        "unsubscribe_token": make_token(key, UNSUBSCRIBE, subscriber_id),
        "preferences_token": make_token(key, PREFERENCES, subscriber_id),
        "mailto_token": make_mailed_token(key, list_key(cfg), subscriber_id),
    }


def _list_unsubscribe(cfg: Config, token: str, mailto_token: str | None) -> str:
    parts = [f"<{unsubscribe_url(cfg, token)}>"]
    if cfg.email.unsubscribe_mailto.strip() and mailto_token is not None:
        parts.append(f"<{unsubscribe_mailto(cfg, mailto_token)}>")
    return ", ".join(parts)


def _message_id(cfg: Config, rendered: RenderedIssue, message_id: str | None) -> str:
    if message_id is None:
        return f"<{rendered.week}.{rendered.lang}.{secrets.token_hex(12)}@{message_domain(cfg)}>"
    match = _MSGID_RE.fullmatch(one_line("message_id", message_id.strip()))
    if match is None:
        raise HeaderError(f"message_id must look like <id@domain>: {message_id!r}")
    return f"<{match.group(1)}>"


def readable_text(cfg: Config) -> bool:
    """Whether text parts are written 8bit (UTF-8 as it is, readable with ``cat``): only
    for the Maildir outbox, whose files no relay ever re-encodes. Over SMTP bodies stay
    7-bit clean: a relay that turns an 8-bit body into 7 bits breaks its DKIM signature,
    and quoted-printable would show Korean as =XX codes and cut long links in two."""
    return not cfg.smtp.host


def _text_cte(cfg: Config, text: str, markers: tuple[str, ...] = (), value_bytes: int = 0) -> str:
    """``8bit`` for a text part written readable (see :func:`readable_text`) that can be,
    else ``base64``."""
    if readable_text(cfg) and fits_8bit(canonical(text), markers, value_bytes):
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
    mailto_token: str | None = None,
    message_id: str | None = None,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """One complete message built the plain way (the reference for the fast path)."""
    plain_address("recipient address", to_address)
    one_line("recipient name", to_name)
    url = unsubscribe_url(cfg, unsubscribe_token)
    preferences = None if preferences_token is None else preferences_url(cfg, preferences_token)
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _from(cfg, rendered.lang)
    msg["To"] = Address(to_name, addr_spec=to_address)
    msg["Subject"] = one_line("subject", rendered.subject)
    msg["Date"] = date or dt.datetime.now(dt.UTC)
    msg["Message-ID"] = _message_id(cfg, rendered, message_id)
    if cfg.email.reply_to:
        msg["Reply-To"] = plain_address("email.reply_to", cfg.email.reply_to)
    msg["List-Id"] = _list_id(cfg, rendered.lang)
    msg["List-Unsubscribe"] = _list_unsubscribe(cfg, unsubscribe_token, mailto_token)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text, body = rendered.text_for(url, preferences), rendered.html_for(url, preferences)
    msg.set_content(text, subtype="plain", charset="utf-8", cte=_text_cte(cfg, text))
    msg.add_alternative(body, subtype="html", charset="utf-8", cte="base64")
    return msg


# -- the fast path ---------------------------------------------------------------------------


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
        if self._mailto:
            _mailto_address(cfg)  # a bad setting stops here, not at every recipient
        markers = (rendered.marker, rendered.preferences_marker)
        self._html = _SlottedBase64(canonical(rendered.html), *markers)
        text = canonical(rendered.text)
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
        self._plan: SigningPlan | None = None
        shared, _, lead = self._head.partition(CRLF + CRLF)
        self._plan_args = (shared, lead + self._text.lead)
        if signer is not None:
            self._plan = SigningPlan(signer, *self._plan_args)
        self._date_second = -1
        self._date = b""

    @property
    def signer(self) -> Signer | None:
        return self._plan.signer if self._plan is not None else None

    def signing_parts(self) -> tuple[bytes, bytes, list[bytes]]:
        """What signs this template's messages elsewhere (:mod:`newsletter.mail.signproc`):
        the :class:`SigningPlan`'s shared header block and body lead, and the body pieces
        every :meth:`compose` returns as they are (the same objects), which a signing
        process keeps so that a message need only name them."""
        chunks = [self._between, self._tail, *self._html.shared(), *self._text.shared()]
        return (*self._plan_args, chunks)

    def _skeleton(self) -> tuple[bytes, bytes, bytes]:
        """The shared headers and MIME frame, from the email package, around two slots."""
        cfg, rendered = self.cfg, self.rendered
        root = EmailMessage(policy=POLICY)
        root["From"] = _from(cfg, rendered.lang)
        if cfg.email.reply_to:
            root["Reply-To"] = plain_address("email.reply_to", cfg.email.reply_to)
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
        data = b"Subject: " + subject_header(rendered.subject) + CRLF + root.as_bytes(policy=POLICY)
        head, between = data.split(slots[0])
        between, tail = between.split(slots[1])
        return head, between, tail

    def _now(self) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            now = dt.datetime.fromtimestamp(second, dt.UTC)
            self._date = email.utils.format_datetime(now).encode("ascii")
            self._date_second = second
        return self._date

    def _recipient_headers(
        self,
        to_address: str,
        to_name: str,
        mid: str,
        url: str,
        mailto_token: str | None,
        delivery_token: str | None,
    ) -> list[bytes]:
        """The header fields that differ per recipient, each without its CRLF; they come
        above the shared ones."""
        own = [
            b"To: " + mailbox_header(to_name, to_address, len("To: ")),
            b"Date: " + self._now(),
            b"Message-ID: " + mid.encode("ascii"),
        ]
        if delivery_token is not None:
            token = one_line("delivery token", delivery_token)
            if not token.isascii() or not token.replace("-", "").isalnum():
                raise HeaderError(f"delivery token must be letters, digits and '-': {token!r}")
            own.append(b"X-Newsletter-Delivery: " + token.encode("ascii"))
        items = [f"<{url}>"]
        if self._mailto and mailto_token is not None:
            items.append(f"<{unsubscribe_mailto(self.cfg, mailto_token)}>")
        own.append(b"List-Unsubscribe: " + fold_list(len("List-Unsubscribe: "), items))
        return own

    def personalize(self, *, sign: bool = True, **recipient: Unpack[Recipient]) -> PreparedMessage:
        """The message for one recipient (:meth:`compose`, then :meth:`finish`): CRLF line
        endings, DKIM-signed when configured (unless ``sign`` is false: a queued single
        mail is signed when it goes out)."""
        return self.finish(self.compose(**recipient), sign=sign)

    def compose(
        self,
        *,
        to_address: str,
        to_name: str,
        unsubscribe_token: str,
        preferences_token: str | None = None,
        mailto_token: str | None = None,
        message_id: str | None = None,
        delivery_token: str | None = None,
    ) -> Composed:
        """One recipient's own parts of the message, checked.

        ``preferences_token`` (``tokens.PREFERENCES``) is needed when the issue links the
        preferences page (:attr:`links_preferences`).

        ``mailto_token`` (``make_mailed_token``) makes the recipient's own address of the
        ``List-Unsubscribe`` mailto, when ``email.unsubscribe_mailto`` is set; without it
        the header has the https link only.

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
        own = self._recipient_headers(to_address, to_name, mid, url, mailto_token, delivery_token)
        text = self._text.pieces(url.encode("utf-8"), preferences.encode("utf-8"))
        html_pieces = self._html.pieces(
            html.escape(url, quote=True).encode("utf-8"),
            html.escape(preferences, quote=True).encode("utf-8"),
        )
        # The body after the lead (the shared start of the text part), in pieces.
        body = [*text[1:], self._between, *html_pieces, self._tail]
        return Composed(mid, own, body)

    def finish(
        self,
        composed: Composed,
        *,
        sign: bool = True,
        signatures: Sequence[bytes] | None = None,
    ) -> PreparedMessage:
        """The message of :meth:`compose`'s parts, DKIM-signed when configured and
        ``sign``: joined once, the signatures worked out from the pieces, or the
        ``signatures`` made elsewhere of the same parts (a signing process given
        :meth:`signing_parts`)."""
        own, body = composed.own, composed.body
        if signatures is None:
            signatures = self._plan.signatures(own, body) if sign and self._plan else []
        data = b"".join((*signatures, CRLF.join(own), CRLF, self._head, self._text.lead, *body))
        # Wire-ready by construction: CRLF everywhere (the policy, the canonical bodies and
        # the signature's folding) and no line can start with a dot (base64 has none, an
        # 8bit text was checked once, headers start with a name or folding white space,
        # boundaries with "--").
        return PreparedMessage(composed.message_id, data, wire_ready=self._wire_ready)


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
    # The site's host says where the address was given, and its lowercase letters keep a
    # subject of Hangul and a name of capitals ("주간 HF 논문") from reading as all capitals
    # to spam filters, which look at Latin letters only (SUBJ_ALL_CAPS).
    host = urlsplit(cfg.site_url).hostname or ""
    # Outside the f-string: the catalog's extractor does not look inside one.
    label = gettext("Confirm your subscription")
    subject = f"{label}: {edition.name} ({host})"
    msg["Subject"] = one_line("subject", subject)
    msg["Date"] = dt.datetime.now(dt.UTC)
    message_id = f"<confirm.{secrets.token_hex(12)}@{message_domain(cfg)}>"
    msg["Message-ID"] = message_id
    if cfg.email.reply_to:
        msg["Reply-To"] = plain_address("email.reply_to", cfg.email.reply_to)
    msg["Auto-Submitted"] = "auto-generated"
    text = text.replace("\r\n", "\n")
    # ASCII text (an English mail) goes as it is: base64 for text that needs no encoding is
    # a mark of bulk junk to spam filters (rspamd's MIME_BASE64_TEXT_BOGUS).
    plain = text.isascii() and fits_8bit(canonical(text))
    msg.set_content(text, cte="7bit" if plain else _text_cte(cfg, text))
    # To is built here, not by the email package, whose folding of a display name holding
    # encoded words could write header lines of the name's choosing (CVE-2024-6923).
    to = b"To: " + mailbox_header(to_name, to_address, len("To: ")) + CRLF
    # Unsigned: the sender signs every queued mail as it goes out (newsletter.mail.signing).
    return PreparedMessage(message_id, to + msg.as_bytes(policy=POLICY))
