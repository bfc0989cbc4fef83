"""The console's accounts: add, remove and list them; sign in, look up and end sessions.

Passwords are kept as argon2id hashes (argon2-cffi, RFC 9106's parameters). A session is a
random cookie value the browser holds and the database knows only by its SHA-256; it ends
after :data:`SESSION_LIFETIME`, after :data:`IDLE_TIMEOUT` without a request, at sign-out,
and with its account.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from newsletter.errors import NewsletterError
from newsletter.store import Admin, AdminSession, Store, utcnow

log = logging.getLogger(__name__)

SESSION_LIFETIME = dt.timedelta(hours=12)
IDLE_TIMEOUT = dt.timedelta(hours=2)
# A session's last-seen time is written at most this often: reading a page stays a read.
_TOUCH_EVERY = dt.timedelta(minutes=1)
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class AccountError(NewsletterError):
    pass


def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id, 64 MiB, 3 passes: RFC 9106's second choice


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise AccountError(
            f"username {username!r}: use 1-64 of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password: at least {MIN_PASSWORD} characters, please")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password: at most {MAX_PASSWORD} characters")
    if password != password.strip("\r\n"):
        raise AccountError("password: no line break at its start or end")
    return password


def add(store: Store, username: str, password: str) -> Admin:
    name = check_username(username)
    admin = store.add_admin(name, _hasher().hash(check_password(password)))
    if admin is None:
        raise AccountError(f"admin {name!r} exists already (remove it first to reset it)")
    log.info("admin %s added", name)
    return admin


def remove(store: Store, username: str) -> None:
    name = username.strip().lower()
    if not store.remove_admin(name):
        raise AccountError(f"no admin named {username!r} (see `newsletter admin list`)")
    log.info("admin %s removed, with its sessions", name)


def accounts(store: Store, now: dt.datetime | None = None) -> list[Admin]:
    now = now or utcnow()
    return store.list_admins(now, now - IDLE_TIMEOUT)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


# Checked against when the username is unknown, so that a wrong name costs what a wrong
# password costs: the answer's timing does not tell which accounts exist.
_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(_hasher().hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


@dataclass(frozen=True)
class NewSession:
    """A session just made: ``token`` goes in the browser's cookie and nowhere else."""

    token: str
    session: AdminSession


def verify(store: Store, username: str, password: str) -> Admin | None:
    """The account if ``password`` is its password, else None (in the same time)."""
    name = username.strip().lower()
    admin = store.get_admin(name) if _USERNAME.fullmatch(name) else None
    hasher = _hasher()
    try:
        hasher.verify(admin.password_hash if admin else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if admin is None:
        return None
    if hasher.check_needs_rehash(admin.password_hash):
        store.set_admin_password(admin.id, hasher.hash(password))
    return admin


def sign_in(store: Store, admin: Admin, now: dt.datetime | None = None) -> NewSession:
    """A new session for ``admin``, which :func:`verify` returned."""
    now = now or utcnow()
    store.end_stale_admin_sessions(now, now - IDLE_TIMEOUT)
    token = secrets.token_urlsafe(32)
    store.add_admin_session(
        _digest(token), admin.id, secrets.token_urlsafe(32), now, now + SESSION_LIFETIME
    )
    session = store.get_admin_session(_digest(token))
    assert session is not None
    log.info("admin %s signed in", admin.username)
    return NewSession(token, session)


def session(
    store: Store, token: str, now: dt.datetime | None = None, *, touch: bool = True
) -> AdminSession | None:
    """The live session a cookie holds, or None (unknown, ended, expired or idle too long).
    A request a person made ``touch``es it; the page's own polling does not, so an open tab
    left alone still ends after :data:`IDLE_TIMEOUT`."""
    if not token or len(token) > 100:
        return None
    now = now or utcnow()
    found = store.get_admin_session(_digest(token))
    if found is None:
        return None
    if found.expires_at <= now or found.seen_at + IDLE_TIMEOUT <= now:
        store.end_admin_session(found.token_hash)
        return None
    if touch and now - found.seen_at >= _TOUCH_EVERY:
        store.touch_admin_session(found.token_hash, now)
    return found


def sign_out(store: Store, token: str) -> None:
    store.end_admin_session(_digest(token))
