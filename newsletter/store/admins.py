"""The editor's console accounts and their sessions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.tables import admin_sessions, admins


@dataclass(frozen=True, slots=True)
class Admin:
    """An account of the console; ``password_hash`` is argon2id's encoded string."""

    id: int
    username: str
    password_hash: str
    created_at: dt.datetime
    sessions: int = 0


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in browser: its account, the CSRF token its forms carry, and its times
    (aware, UTC)."""

    token_hash: str
    admin_id: int
    username: str
    csrf: str
    created_at: dt.datetime
    seen_at: dt.datetime
    expires_at: dt.datetime


def _admin(row: sa.Row[Any]) -> Admin:
    return Admin(
        row.id,
        row.username,
        row.password_hash,
        _aware(row.created_at),
        getattr(row, "sessions", 0) or 0,
    )


class AdminQueries(StoreBase):
    def add_admin(self, username: str, password_hash: str) -> Admin | None:
        """A new account, or None when ``username`` is taken."""
        now = utcnow()
        values = {
            "username": username,
            "password_hash": password_hash,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(admins)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["username"])
                .returning(admins.c.id)
            ).scalar()
        if inserted is None:
            return None
        return Admin(inserted, username, password_hash, now)

    def get_admin(self, username: str) -> Admin | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admins).where(admins.c.username == username)).first()
        return None if row is None else _admin(row)

    def set_admin_password(self, admin_id: int, password_hash: str) -> None:
        """Store a rehashed password (argon2's parameters grew since it was hashed)."""
        with self.engine.begin() as conn:
            conn.execute(
                admins.update()
                .where(admins.c.id == admin_id)
                .values(password_hash=password_hash, updated_at=utcnow())
            )

    def remove_admin(self, username: str) -> bool:
        """Remove an account and end its sessions; whether there was one."""
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(admins.c.id).where(admins.c.username == username)
            ).scalar()
            if found is None:
                return False
            conn.execute(admin_sessions.delete().where(admin_sessions.c.admin_id == found))
            conn.execute(admins.delete().where(admins.c.id == found))
        return True

    def list_admins(self, now: dt.datetime, idle_before: dt.datetime) -> list[Admin]:
        """Every account, by name, with its number of live sessions: not past their end
        at ``now``, and used since ``idle_before``."""
        live = (
            sa.select(sa.func.count())
            .where(
                admin_sessions.c.admin_id == admins.c.id,
                admin_sessions.c.expires_at > now,
                admin_sessions.c.seen_at >= idle_before,
            )
            .scalar_subquery()
            .label("sessions")
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(admins, live).order_by(admins.c.username)).all()
        return [_admin(row) for row in rows]

    def has_admins(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(admins.c.id).limit(1)).first() is not None

    def add_admin_session(
        self, token_hash: str, admin_id: int, csrf: str, now: dt.datetime, expires_at: dt.datetime
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_sessions.insert().values(
                    token_hash=token_hash,
                    admin_id=admin_id,
                    csrf=csrf,
                    created_at=now,
                    seen_at=now,
                    expires_at=expires_at,
                )
            )

    def get_admin_session(self, token_hash: str) -> AdminSession | None:
        query = (
            sa.select(admin_sessions, admins.c.username)
            .join(admins, admins.c.id == admin_sessions.c.admin_id)
            .where(admin_sessions.c.token_hash == token_hash)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return AdminSession(
            row.token_hash,
            row.admin_id,
            row.username,
            row.csrf,
            _aware(row.created_at),
            _aware(row.seen_at),
            _aware(row.expires_at),
        )

    def touch_admin_session(self, token_hash: str, seen_at: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                admin_sessions.update()
                .where(admin_sessions.c.token_hash == token_hash)
                .values(seen_at=seen_at)
            )

    def end_admin_session(self, token_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.token_hash == token_hash))

    def end_stale_admin_sessions(self, now: dt.datetime, idle_before: dt.datetime) -> int:
        """Remove sessions past their end at ``now`` or idle since before ``idle_before``."""
        with self.engine.begin() as conn:
            result = conn.execute(
                admin_sessions.delete().where(
                    sa.or_(
                        admin_sessions.c.expires_at <= now,
                        admin_sessions.c.seen_at < idle_before,
                    )
                )
            )
        return int(result.rowcount or 0)
