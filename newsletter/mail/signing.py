"""DKIM signatures (RFC 6376) made with OpenSSL: RSA-SHA256, and Ed25519-SHA256 (RFC 8463).

Both use relaxed/relaxed canonicalization. Keys are loaded once into a :class:`Signer`,
which then signs any finished message (bytes) in well under a millisecond per key; a
pure-Python RSA signature took about 10 ms and capped the sending rate. An issue's
messages are signed from their pieces instead, with what their template shares worked out
once (:mod:`newsletter.mail.signplan`); the rules here are the ones both follow.

The signed-header list ``h=`` is taken from the message itself: every header it has,
except those relays add or rewrite in transit, plus one more instance of each header in
:data:`OVERSIGNED` than the message has. An instance listed but absent signs as empty, so
a second Subject, From, Reply-To or Content-Type added on the way breaks the signature.

Receivers applying DMARC count a signature only when its ``d=`` domain is aligned with
the From domain: :func:`alignment_problem` says when it is not.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from publicsuffixlist import PublicSuffixList

from newsletter.config import Config
from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)

__all__ = [
    "OVERSIGNED",
    "DkimKey",
    "Signer",
    "SigningInput",
    "alignment_problem",
    "body_hash",
    "has_wsp_to_rewrite",
    "header_names",
    "load_key",
    "relaxed_header",
    "relaxed_lines",
    "sign_message",
    "signed_order",
    "signing_domain",
    "split_message",
]

# Signed once more than present, absent ones as absent, so that a copy replayed with one
# more of any of them fails: who it is from and for, where replies go, what it answers, how
# its body reads (a second Content-Type or Content-Transfer-Encoding on top is the one many
# readers obey), the list's links, and the bulk marking (RFC 6376, sections 5.4.1 and 5.4.2).
OVERSIGNED = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Archive",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Help",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
    "Precedence",
)
# Never signed: what RFC 6376 (section 5.4.1) says not to sign (Return-Path, Received,
# Comments, Keywords), Bcc (removed on the way), and the trace and result headers that
# relays and verifiers add, which would break the signature of any message they touch.
UNSIGNED = frozenset(
    {
        "dkim-signature",
        "return-path",
        "received",
        "comments",
        "keywords",
        "bcc",
        "resent-bcc",
        "delivered-to",
        "x-original-to",
        "authentication-results",
        "received-spf",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
    }
)
RSA_MIN_BITS = 1024  # RFC 8301: verifiers must reject shorter keys
_LINE = 78  # RFC 5322 recommended maximum, CRLF excluded
_WSP = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
_LINE_END = re.compile(rb"\r?\n")
_TAG = re.compile(rb"([a-z]+)=([^;]*)")

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


# -- canonicalization (RFC 6376, section 3.4) -----------------------------------------------


def relaxed_header(field: bytes) -> bytes:
    """One header field (``Name: value``, possibly folded) in relaxed form, without CRLF."""
    name, _, value = field.partition(b":")
    if b"\r\n" in value or b"\t" in value or b"  " in value:
        value = _WSP.sub(b" ", value.replace(b"\r\n", b""))
    return name.strip(b" \t").lower() + b":" + value.strip(b" \t")


def relaxed_lines(lines: bytes) -> bytes:
    """Whole lines (each ending in CRLF) in relaxed form: white space runs as one space,
    none at a line's end. Trailing empty lines are the body's end's business."""
    if has_wsp_to_rewrite(lines):
        return _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", lines))
    return lines


def body_hash(body: bytes) -> bytes:
    """SHA-256 of the body in relaxed form (``body`` has CRLF line endings)."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # a last line without its line break (rare): give it one
    body = relaxed_lines(body)
    end = len(body)
    while end >= 2 and body[end - 2 : end] == b"\r\n":
        end -= 2
    digest = hashlib.sha256(memoryview(body)[:end])
    if end:
        digest.update(b"\r\n")
    return digest.digest()


def has_wsp_to_rewrite(body: bytes) -> bool:
    """Whether relaxed canonicalization changes any white space in ``body``.

    Single spaces inside lines are already canonical; only tabs, runs of spaces and
    spaces before a line end need rewriting. Base64 bodies have spaces only in their part
    headers, so look at each space (single-byte searches run at memory speed, where
    searching for two-byte patterns took twice as long as hashing the body).
    """
    if b"\t" in body:
        return True
    at = body.find(b" ")
    for _ in range(256):
        if at < 0:
            return False
        if body[at + 1 : at + 2] in (b" ", b"\r"):
            return True
        at = body.find(b" ", at + 1)
    return b"  " in body or b" \r" in body  # text with many spaces: let the searches run


def split_message(data: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (folded, without their final CRLF) and the body of a message."""
    if data.startswith(b"\r\n"):
        return [], data[2:]
    end = data.find(b"\r\n\r\n")
    if end < 0:
        head, body = data.removesuffix(b"\r\n"), b""
    else:
        head, body = data[:end], data[end + 4 :]
    fields = _FIELD_END.split(head)
    for field in fields:
        if b":" not in field:
            raise NewsletterError(f"cannot DKIM-sign: not a header line: {field[:60]!r}")
    return fields, body


def header_names(fields: Sequence[bytes]) -> list[str]:
    """The ``h=`` list: each signable header as often as present, OVERSIGNED once more."""
    names = [f.partition(b":")[0].strip(b" \t").decode("ascii") for f in fields]
    signed = [n for n in names if n.lower() not in UNSIGNED]
    return signed + list(OVERSIGNED)


def signed_order(fields: Sequence[bytes], names: Sequence[str]) -> list[int]:
    """Which of ``fields`` each name of ``h=`` signs, in order: each name takes its
    instances bottom-up, and an absent or used-up one signs as nothing (over-signing)."""
    by_name: dict[bytes, list[int]] = {}
    for index, field in enumerate(fields):
        key = field.partition(b":")[0].strip(b" \t").lower()
        by_name.setdefault(key, []).append(index)
    order = []
    for name in names:
        instances = by_name.get(name.lower().encode("ascii"))
        if instances:
            order.append(instances.pop())
    return order


def _signed_fields(fields: Sequence[bytes], names: Sequence[str]) -> bytes:
    """The canonical headers named by ``h=``, each ending in CRLF."""
    return b"".join(relaxed_header(fields[i]) + b"\r\n" for i in signed_order(fields, names))


# -- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A private key and the selector its public key is published under."""

    selector: str
    private_key: PrivateKey

    @property
    def algorithm(self) -> str:
        return (
            "ed25519-sha256"
            if isinstance(self.private_key, ed25519.Ed25519PrivateKey)
            else "rsa-sha256"
        )

    def sign(self, data: bytes) -> bytes:
        """The signature of canonical header data ``data``."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            # RFC 8463: Ed25519 signs the SHA-256 hash, not the data itself.
            return self.private_key.sign(hashlib.sha256(data).digest())
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def load_key(pem: bytes, kind: type[PrivateKey], where: str) -> PrivateKey:
    """A PEM private key (PKCS#1 or PKCS#8) of type ``kind``; ``where`` names the setting
    and file in the one-line error."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise NewsletterError(
            f"{where}: the key is encrypted; store it without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise NewsletterError(f"{where}: not a PEM private key") from None
    if not isinstance(key, kind):
        wanted = "an RSA" if kind is rsa.RSAPrivateKey else "an Ed25519"
        raise NewsletterError(f"{where}: {wanted} key is needed, this is {type(key).__name__}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < RSA_MIN_BITS:
        raise NewsletterError(
            f"{where}: a {key.key_size}-bit RSA key is too short (at least {RSA_MIN_BITS})"
        )
    return key


def _read(cfg: Config, setting: str, value: str) -> tuple[bytes, str]:
    path = cfg.resolve(Path(value))
    try:
        return path.read_bytes(), f"email.{setting} {path}"
    except OSError as exc:
        raise NewsletterError(
            f"email.{setting}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def _selector(setting: str, value: str) -> str:
    selector = value.strip()
    if not selector:
        raise NewsletterError(f"email.{setting} must be set to sign with DKIM")
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", selector):
        raise NewsletterError(f"email.{setting} is not a DNS label such as 'news': {value!r}")
    return selector


def signing_domain(cfg: Config) -> str:
    """The ``d=`` domain: ``email.dkim_domain``, else the sender's domain ('' if none)."""
    return (cfg.email.dkim_domain or cfg.email.from_address.rpartition("@")[2]).strip()


def alignment_problem(cfg: Config) -> str:
    """Why receivers applying DMARC would not count the signature, in one line: the
    ``d=`` domain is not aligned with the From domain. '' when it is, or when nothing is
    signed.

    Relaxed alignment (RFC 7489, section 3.1.1), what DMARC records ask for unless they
    say ``adkim=s``: both domains have the same organizational domain, the one just below
    a public suffix of the Public Suffix List (``example.org`` for ``news.example.org``,
    ``example.co.kr`` for ``mail.example.co.kr``).
    """
    email = cfg.email
    if not (email.dkim_key_file or email.dkim_ed25519_key_file):
        return ""
    signing = signing_domain(cfg).lower().rstrip(".")
    sender = email.from_address.rpartition("@")[2].strip().lower().rstrip(".")
    if signing == sender:
        return ""
    organizational = _public_suffixes().privatesuffix
    if organizational(signing) is not None and organizational(signing) == organizational(sender):
        return ""
    return (
        f"email.dkim_domain {signing} is not aligned with the domain of email.from_address "
        f"{sender}: receivers applying DMARC will not count the DKIM signature (sign with "
        "the From domain, or a domain under the same registered domain)"
    )


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    # The list the package ships (kept current by its releases): never fetched at run time.
    return PublicSuffixList()


# -- the signer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningInput:
    """What a message's signatures cover besides their own header: the ``h=`` list, the
    canonical header fields it names (each ending in CRLF) and the body's SHA-256."""

    names: str
    headers: bytes
    body_hash: bytes


class Signer:
    """Signs messages for one domain with one or more keys (one signature each)."""

    def __init__(
        self, domain: str, keys: Sequence[DkimKey], *, clock: Callable[[], float] = time.time
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", domain):
            raise NewsletterError(f"email.dkim_domain is not a domain name: {domain!r}")
        if not keys:
            raise ValueError("a Signer needs at least one key")
        self.domain = domain
        self.keys = tuple(keys)
        self._clock = clock
        self._prefixes: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    @classmethod
    def from_config(cls, cfg: Config, *, rsa_pem: bytes | None = None) -> Signer | None:
        """The signer ``cfg`` asks for, or None when no DKIM key is configured.

        ``rsa_pem`` stands in for the contents of ``email.dkim_key_file``.
        """
        email = cfg.email
        keys = []
        if rsa_pem is not None or email.dkim_key_file:
            selector = _selector("dkim_selector", email.dkim_selector)
            if rsa_pem is None:
                rsa_pem, where = _read(cfg, "dkim_key_file", email.dkim_key_file)
            else:
                where = "email.dkim_key_file (the given key)"
            keys.append(DkimKey(selector, load_key(rsa_pem, rsa.RSAPrivateKey, where)))
        if email.dkim_ed25519_key_file:
            selector = _selector("dkim_ed25519_selector", email.dkim_ed25519_selector)
            if keys and selector == keys[0].selector:
                raise NewsletterError(
                    "email.dkim_ed25519_selector must differ from email.dkim_selector "
                    "(each selector publishes one public key)"
                )
            pem, where = _read(cfg, "dkim_ed25519_key_file", email.dkim_ed25519_key_file)
            keys.append(DkimKey(selector, load_key(pem, ed25519.Ed25519PrivateKey, where)))
        if not keys:
            return None
        return cls(signing_domain(cfg), keys)

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature header per key on top, CRLF line endings.

        A key whose signature (same domain and selector) is already on the message adds
        nothing, so a message may go through more than one signing step unharmed.
        """
        if data.count(b"\n") != data.count(b"\r\n"):
            data = _LINE_END.sub(b"\r\n", data)  # sign what SMTP will carry
        return b"".join(self.signatures(data)) + data

    def signatures(self, data: bytes) -> list[bytes]:
        """The DKIM-Signature header fields (each ending in CRLF) for CRLF ``data``."""
        fields, body = split_message(data)
        done = _signed_by(fields)
        keys = [k for k in self.keys if (self.domain.lower(), k.selector.lower()) not in done]
        if not keys:
            return []
        names = ":".join(header_names(fields))
        signed = SigningInput(names, _signed_fields(fields, names.split(":")), body_hash(body))
        return self.signatures_over(signed, keys)

    def signatures_over(
        self, signed: SigningInput, keys: Sequence[DkimKey] | None = None
    ) -> list[bytes]:
        """The DKIM-Signature header fields (each ending in CRLF) over ``signed``, one per
        key of ``keys`` (all of the signer's by default)."""
        stamp = str(int(self._clock()))
        bh = base64.b64encode(signed.body_hash)
        # bh= and b= each start a line: relaxed, the folds read as single spaces.
        tail = b" bh=" + bh + b"; b="
        out = []
        for key in self.keys if keys is None else keys:
            folded, canonical = self._prefix(key, stamp, signed.names)
            signature = base64.b64encode(key.sign(signed.headers + canonical + tail))
            out.append(
                b"".join((folded, b"\r\n bh=", bh, b";\r\n b=", _fold_b(signature), b"\r\n"))
            )
        return out

    def _prefix(self, key: DkimKey, stamp: str, names: str) -> tuple[bytes, bytes]:
        """The signature header up to ``h=``, folded and relaxed; the same for every
        message of a template within a second, so kept."""
        cache_key = (key.selector, stamp, names)
        found = self._prefixes.get(cache_key)
        if found is None:
            if len(self._prefixes) > 64:
                self._prefixes.clear()
            tags = [
                ("v", "1"),
                ("a", key.algorithm),
                ("c", "relaxed/relaxed"),
                ("d", self.domain),
                ("s", key.selector),
                ("t", stamp),
                ("h", names),
            ]
            folded = _fold(tags)
            found = self._prefixes[cache_key] = (folded, relaxed_header(folded))
        return found


def _signed_by(fields: Sequence[bytes]) -> set[tuple[str, str]]:
    """(domain, selector) of the DKIM-Signature fields already on top of a message."""
    found = set()
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip(b" \t").lower() != b"dkim-signature":
            break
        tags = dict(_TAG.findall(_WSP.sub(b"", value.replace(b"\r\n", b""))))
        found.add(
            (
                tags.get(b"d", b"").decode("ascii", "replace").lower(),
                tags.get(b"s", b"").decode("ascii", "replace").lower(),
            )
        )
    return found


def _fold(tags: Sequence[tuple[str, str]]) -> bytes:
    """``DKIM-Signature: tag=value; ...`` folded to 78 columns, ``h=`` at its colons."""
    lines = ["DKIM-Signature:"]
    for tag, value in tags:
        pieces = [f"{tag}={value};"] if tag != "h" else _h_pieces(value)
        for index, piece in enumerate(pieces):
            sep = "" if index else " "
            if len(lines[-1]) + len(sep) + len(piece) > _LINE:
                lines.append(" ")
                sep = ""
            lines[-1] += sep + piece
    return "\r\n".join(lines).encode("ascii")


def _h_pieces(names: str) -> list[str]:
    parts = f"h={names}".split(":")
    return [p + ":" for p in parts[:-1]] + [parts[-1] + ";"]


def _fold_b(value: bytes) -> bytes:
    """The signature after `` b=``, continued on lines of 78 columns."""
    first = _LINE - len(" b=")
    chunks = [value[:first]]
    chunks += [value[i : i + _LINE - 1] for i in range(first, len(value), _LINE - 1)]
    return b"\r\n ".join(chunks)


# -- any message, by configuration -------------------------------------------------------------


def sign_message(cfg: Config, data: bytes) -> bytes:
    """``data`` DKIM-signed as ``cfg`` asks, or unchanged when no key is configured.

    For any kind of mail (confirmations, test copies); the keys are read again only when
    a key file changes, so a rotated key takes effect without a restart.
    """
    signer = _cached_signer(
        cfg, _stamp(cfg, cfg.email.dkim_key_file), _stamp(cfg, cfg.email.dkim_ed25519_key_file)
    )
    return data if signer is None else signer.sign(data)


def _stamp(cfg: Config, value: str) -> tuple[str, int, int] | None:
    if not value:
        return None
    path = cfg.resolve(Path(value))
    try:
        stat = os.stat(path)
    except OSError:
        return (str(path), -1, -1)  # from_config reports the reason
    return (str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _cached_signer(cfg: Config, *stamps: tuple[str, int, int] | None) -> Signer | None:
    return Signer.from_config(cfg)
