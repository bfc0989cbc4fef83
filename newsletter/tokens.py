"""HMAC-signed tokens for unsubscribe and confirmation links, and for deliveries.

A token names a purpose and a subscriber id and carries a SHA-256 HMAC over both,
so a link cannot be forged or pointed at someone else. The key comes only from
``NEWSLETTER_SECRET_KEY``; with none set, a random key is kept in a private file
beside the database so links keep working across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from .config import Config

log = logging.getLogger(__name__)

KEY_FILE = ".newsletter-secret-key"


class TokenError(ValueError):
    """A token that was not made with our key, or not for this purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, purpose: str, subject: str) -> bytes:
    return hmac.new(key, f"{purpose}\x00{subject}".encode(), hashlib.sha256).digest()[:16]


def make_token(key: bytes, purpose: str, subscriber_id: int, *, expires: int | None = None) -> str:
    """``ID.SIG``, or ``ID.EXPIRES.SIG`` for a token that stops working at the Unix time
    ``expires`` (confirmation links: an old link must not undo a later unsubscribe)."""
    subject = str(subscriber_id) if expires is None else f"{subscriber_id}.{expires}"
    return f"{subject}.{_b64(_mac(key, purpose, subject))}"


def read_token(key: bytes, purpose: str, token: str, *, now: float | None = None) -> int:
    """The subscriber id in ``token``; :class:`TokenError` if it is forged, altered, made
    for another purpose, or expired."""
    subject, _, signature = token.rpartition(".")
    parts = subject.split(".")
    if len(token) > 100 or not signature or not 1 <= len(parts) <= 2:
        raise TokenError("malformed token")
    if not all(p.isdigit() and p.isascii() for p in parts):
        raise TokenError("malformed token")
    try:
        given = _unb64(signature)
    except (ValueError, TypeError):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(key, purpose, subject)):
        raise TokenError("bad signature")
    if len(parts) == 2 and int(parts[1]) < (time.time() if now is None else now):
        raise TokenError("expired")
    return int(parts[0])


DELIVERY = "delivery"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if not number:
            return digits


def make_delivery_token(key: bytes, delivery_id: int) -> str:
    """``ID-SIG``: the delivery id in base 36 and 64 bits of HMAC in base 32, lower case
    letters and digits only, because it travels in an address's local part (VERP), which
    some MTAs fold to lower case."""
    subject = _base36(delivery_id)
    signature = base64.b32encode(_mac(key, DELIVERY, subject)[:8]).decode("ascii")
    return f"{subject}-{signature.rstrip('=').lower()}"


def read_delivery_token(key: bytes, token: str) -> int:
    """The delivery id in a token from :func:`make_delivery_token` (any case);
    :class:`TokenError` if it is malformed or not signed with ``key``."""
    subject, _, signature = token.strip().lower().partition("-")
    if not subject or len(subject) > 13 or len(signature) != 13:
        raise TokenError("malformed delivery token")
    if not all(c in _BASE36 for c in subject) or not signature.isalnum():
        raise TokenError("malformed delivery token")
    expected = base64.b32encode(_mac(key, DELIVERY, subject)[:8]).decode("ascii")
    if not hmac.compare_digest(signature, expected.rstrip("=").lower()):
        raise TokenError("bad signature")
    return int(subject, 36)


def secret_key(cfg: Config) -> bytes:
    """The signing key: the environment's, else one generated once and kept on disk."""
    if cfg.secret_key:
        return cfg.secret_key.encode()
    path = cfg.resolve(Path(KEY_FILE))
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    log.warning("NEWSLETTER_SECRET_KEY is not set; generated a signing key in %s", path)
    return key
