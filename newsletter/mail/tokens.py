"""HMAC-signed tokens for unsubscribe, preferences and confirmation links, and for deliveries.

A link's token names a purpose and a subscriber id and carries a SHA-256 HMAC over both,
so a link cannot be forged or pointed at someone else. The tokens of deliveries and of
mailed unsubscribes are sealed as well (the number and its HMAC encrypted as one AES
block), so that what anyone can read in a bounce address shows no count or order. Each
token is accepted only in the one form it is made in. The key comes only from
``NEWSLETTER_SECRET_KEY`` (the current key, then any old ones still accepted); with none
set, a random key is kept in a private file beside the config file, so links keep
working across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from newsletter.config import Config
from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)

KEY_FILE = ".newsletter-secret-key"
# What a token is for: a token made for one purpose is refused for any other.
UNSUBSCRIBE = "unsubscribe"
# The preferences page: not the unsubscribe token, which List-Unsubscribe hands to every
# mail provider on the way; like it, it never expires (links in old issues keep working).
PREFERENCES = "preferences"
CONFIRM = "confirm"
APPROVE = "approve"


# One key, or the keys links are checked with (the current one first; see signing_keys).
Keys = bytes | Sequence[bytes]


class TokenError(ValueError):
    """A token that was not made with our key, or not for this purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(key: bytes, purpose: str, subject: str) -> bytes:
    return hmac.new(key, f"{purpose}\x00{subject}".encode(), hashlib.sha256).digest()[:16]


def _keys(key: Keys) -> list[bytes]:
    return [key] if isinstance(key, bytes) else list(key)


def _number(text: str) -> int:
    """A decimal number written the one way :func:`make_token` writes it."""
    if not (text.isascii() and text.isdigit()) or str(int(text)) != text:
        raise TokenError("malformed token")
    return int(text)


def make_token(key: bytes, purpose: str, subscriber_id: int, *, expires: int | None = None) -> str:
    """``ID.SIG``, or ``ID.EXPIRES.SIG`` for a token that stops working at the Unix time
    ``expires`` (confirmation links: an old link must not undo a later unsubscribe)."""
    subject = str(subscriber_id) if expires is None else f"{subscriber_id}.{expires}"
    return f"{subject}.{_b64(_mac(key, purpose, subject))}"


def read_token(key: Keys, purpose: str, token: str, *, now: float | None = None) -> int:
    """The subscriber id in ``token``; :class:`TokenError` if it is forged, altered, made
    for another purpose, or expired. ``key`` may be several keys (the current one and
    those it replaced): a token made with any of them is good.

    Only the form :func:`make_token` writes is accepted: no padding, no other encoding
    of the same bytes, no leading zeros (a token is a name, and one thing has one name)."""
    subject, _, signature = token.rpartition(".")
    parts = subject.split(".")
    if len(token) > 100 or len(signature) != _SIGNATURE_CHARS or not 1 <= len(parts) <= 2:
        raise TokenError("malformed token")
    numbers = [_number(p) for p in parts]
    try:
        given = base64.urlsafe_b64decode(signature + "==")
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if _b64(given) != signature:
        raise TokenError("malformed token")
    # Every key is tried, whichever matches: the time taken does not tell which one did.
    matched = [hmac.compare_digest(given, _mac(k, purpose, subject)) for k in _keys(key)]
    if not any(matched):
        raise TokenError("bad signature")
    if len(numbers) == 2 and numbers[1] < (time.time() if now is None else now):
        raise TokenError("expired")
    return numbers[0]


# 16 bytes of HMAC in unpadded base64.
_SIGNATURE_CHARS = 22


# --- sealed tokens: for deliveries and mailed unsubscribes -------------------------------
#
# They travel in an address's local part (VERP, the List-Unsubscribe mailto), which some
# MTAs fold to lower case: lower-case base 32 only. And they must not show a count: the
# number they stand for (a delivery id, a subscriber id) and 64 bits of its HMAC are one
# AES block, encrypted with a key of their own. Decrypting a token that we did not make
# gives a number whose HMAC does not match (one chance in 2**64).

DELIVERY = "delivery"
# A mailed unsubscribe (LOCAL+TOKEN@DOMAIN), for one subscriber of one list.
MAILED_UNSUBSCRIBE = "unsubscribe-mail"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
SEALED_CHARS = 26  # 16 bytes in base 32, without padding
_LEGACY_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


@lru_cache(maxsize=64)
def _cipher_key(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, f"aes-256\x00{purpose}".encode(), hashlib.sha256).digest()


def _aes(key: bytes, purpose: str) -> Cipher[modes.ECB]:
    # One block per token, never two: ECB is AES as the keyed permutation it is.
    return Cipher(algorithms.AES(_cipher_key(key, purpose)), modes.ECB())


# Each thread's AES contexts, by key and purpose. Making a context costs several times what
# encrypting one block does (OpenSSL looks the cipher up each time), and a send seals two
# tokens per message; an ECB context keeps no state between blocks, so one serves them all.
# cryptography's contexts are not to be shared between threads, hence one set per thread.
_CONTEXTS = threading.local()


def _context(key: bytes, purpose: str, encrypt: bool) -> Any:
    found: dict[tuple[bytes, str, bool], Any] | None = getattr(_CONTEXTS, "found", None)
    if found is None:
        found = _CONTEXTS.found = {}
    context = found.get((key, purpose, encrypt))
    if context is None:
        cipher = _aes(key, purpose)
        context = cipher.encryptor() if encrypt else cipher.decryptor()
        if len(found) >= 64:
            found.clear()
        found[key, purpose, encrypt] = context
    return context


def _seal(key: bytes, purpose: str, number: int) -> str:
    if not 0 <= number < 2**63:
        raise ValueError(f"cannot seal {number}")
    block = number.to_bytes(8, "big") + _mac(key, purpose, str(number))[:8]
    return _b32(_context(key, purpose, True).update(block))


def _unseal(key: Keys, purpose: str, token: str) -> int:
    if len(token) != SEALED_CHARS or any(c not in _B32 for c in token):
        raise TokenError("malformed token")
    block = base64.b32decode(token.upper() + "======")
    if _b32(block) != token:  # the last character's two spare bits set
        raise TokenError("malformed token")
    found = []
    for k in _keys(key):  # every key, whichever matches (see read_token)
        plain = _context(k, purpose, False).update(block)
        number = int.from_bytes(plain[:8], "big")
        if hmac.compare_digest(plain[8:], _mac(k, purpose, str(number))[:8]):
            found.append(number)
    if not found:
        raise TokenError("bad signature")
    return found[0]


def make_delivery_token(key: bytes, delivery_id: int) -> str:
    """The token of a delivery, for its VERP address and ``X-Newsletter-Delivery``: 26
    lower-case letters and digits that name the delivery to us alone (sealed, see above).
    The same delivery always gets the same token, so a message sent again after a crash
    is reported under the same name."""
    return _seal(key, DELIVERY, delivery_id)


def read_delivery_token(key: Keys, token: str) -> int:
    """The delivery id in a token from :func:`make_delivery_token`, or in one of the
    ``ID-SIG`` tokens written before them (the id in base 36, then 64 bits of HMAC in base
    32), which reports for messages already sent still carry: both are signed and cannot
    be forged. :class:`TokenError` if it is malformed, not written exactly as made, or not
    signed with ``key`` (or any of the keys)."""
    if "-" not in token:
        return _unseal(key, DELIVERY, token)
    subject, _, signature = token.partition("-")
    if not 1 <= len(subject) <= 13 or len(signature) != 13:
        raise TokenError("malformed delivery token")
    if any(c not in _LEGACY_BASE36 for c in subject) or subject[0] == "0" != subject:
        raise TokenError("malformed delivery token")
    expected = [_b32(_mac(k, DELIVERY, subject)[:8]) for k in _keys(key)]
    if not any([hmac.compare_digest(signature, e) for e in expected]):
        raise TokenError("bad signature")
    return int(subject, 36)


def _mailed_purpose(list_key: str) -> str:
    return f"{MAILED_UNSUBSCRIBE}\x00{list_key}"


def make_mailed_token(key: bytes, list_key: str, subscriber_id: int) -> str:
    """The token of a subscriber's List-Unsubscribe mailto address, ``LOCAL+TOKEN@DOMAIN``:
    sealed like a delivery token, and good for this subscriber of the list ``list_key``
    only (see :func:`newsletter.mail.message.list_key`)."""
    return _seal(key, _mailed_purpose(list_key), subscriber_id)


def read_mailed_token(key: Keys, list_key: str, token: str) -> int:
    """The subscriber id in a token from :func:`make_mailed_token`; :class:`TokenError`
    if it is malformed, forged, or made for another list."""
    return _unseal(key, _mailed_purpose(list_key), token)


# A shorter key can be guessed offline from any one link: 32 bytes is HMAC-SHA256's own size.
MIN_KEY_BYTES = 32


class SigningKeyError(NewsletterError):
    """A signing key that must not be used."""


def _split_keys(text: str) -> list[bytes]:
    return [k.encode() for k in re.split(r"[\s,]+", text.strip()) if k]


def _checked(keys: list[bytes], where: str) -> list[bytes]:
    if not keys:
        raise SigningKeyError(
            f"{where} holds no key (links signed with it could be forged): delete it to "
            "have a new one made, or set NEWSLETTER_SECRET_KEY"
        )
    for key in keys:
        if len(key) < MIN_KEY_BYTES:
            raise SigningKeyError(
                f"{where}: a signing key must be at least {MIN_KEY_BYTES} bytes, one has "
                f"{len(key)}; make one with: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )
    return keys


def signing_keys(cfg: Config) -> list[bytes]:
    """Every key links are checked with, the current one (which signs) first.

    ``NEWSLETTER_SECRET_KEY`` may hold the current key followed by old ones (separated by
    spaces or commas): links signed with an old key keep working after a rotation. With
    none set, one key is generated once into a private file beside the config file."""
    if cfg.secret_key:
        return _checked(_split_keys(cfg.secret_key), "NEWSLETTER_SECRET_KEY")
    path = cfg.resolve(Path(KEY_FILE))
    try:
        return _checked(_split_keys(path.read_text(encoding="ascii")), str(path))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{path}: cannot read the signing key: {exc}") from None
    return [_generate(path)]


def secret_key(cfg: Config) -> bytes:
    """The key that signs new links."""
    return signing_keys(cfg)[0]


def check_keys(cfg: Config) -> None:
    """Stop early on a key that is too short: from the environment, or a key file that
    exists (a missing one is made when first needed)."""
    if cfg.secret_key or cfg.resolve(Path(KEY_FILE)).exists():
        signing_keys(cfg)


def _generate(path: Path) -> bytes:
    """Write a new random key atomically (temporary file, fsync, rename), mode 0600: a
    crash or a full disk can never leave an empty key behind."""
    key = secrets.token_urlsafe(32).encode()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".newsletter-key-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
            # link, not rename: of two processes starting at once, the first key wins.
            try:
                os.link(tmp, path)
            except FileExistsError:
                return _checked(_split_keys(path.read_text(encoding="ascii")), str(path))[0]
        finally:
            Path(tmp).unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        # A full disk, a read-only or missing folder: one line, and no key file left behind.
        raise SigningKeyError(
            f"{path}: cannot write a new signing key: {exc.strerror or exc}; free some disk "
            "space or fix the folder, or set NEWSLETTER_SECRET_KEY"
        ) from None
    log.warning("NEWSLETTER_SECRET_KEY is not set; generated a signing key in %s", path)
    return key


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def envelope_sender(cfg: Config, key: bytes, delivery_id: int) -> str:
    """The envelope sender of a delivery: ``LOCAL+TOKEN@DOMAIN`` from ``bounces.return_path``
    (VERP: a bounce comes back to an address that names its delivery), else the sender."""
    return_path = cfg.bounces.return_path
    if not return_path:
        return cfg.email.from_address
    local, _, domain = return_path.rpartition("@")
    return f"{local}+{make_delivery_token(key, delivery_id)}@{domain}"
