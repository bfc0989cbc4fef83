"""One ``newsletter run`` per database: the scheduler lock, taken before the service listens.

Before listening, because a second ``run`` must not answer at all: a health check or a
proxy would take it for a working instance, and it would write the feeds beside the
first. On SQLite the lock is an flock on a file beside the database, found from
``database_url`` as the store opens it, so that taking it imports no SQLAlchemy; on
PostgreSQL it is an advisory lock, which needs a connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Generator
from pathlib import Path
from urllib.parse import unquote

from newsletter.errors import NewsletterError

__all__ = ["PG_LOCK_KEY", "AlreadyRunning", "scheduler_lock", "sqlite_file"]

# pg_advisory_lock key of the one scheduler per database (migrations use 7245001).
PG_LOCK_KEY = 7245002
_WORKERS = "start `newsletter worker` processes to help sending"


class AlreadyRunning(NewsletterError):
    """Another ``newsletter run`` holds this database's scheduler lock."""


def sqlite_file(database_url: str, base_dir: Path) -> str | None:
    """The file a SQLite ``database_url`` names, as the store opens it (a relative
    ``sqlite:///PATH`` is below ``base_dir``); "" for a database in memory, None when the
    URL is not SQLite's. Read as SQLAlchemy reads it: ``sqlite[+driver]://[HOST]/PATH``,
    ``?query`` apart, percent-escapes decoded."""
    scheme, sep, rest = database_url.partition("://")
    if not sep or scheme.split("+", 1)[0] != "sqlite":
        return None
    if database_url.startswith("sqlite:///") and not database_url.startswith("sqlite:////"):
        path = database_url[len("sqlite:///") :]
        if path and path != ":memory:" and not os.path.isabs(path):
            rest = f"/{base_dir / path}"  # as newsletter.store.base._engine rewrites it
    slash = rest.find("/")
    if slash < 0 or "?" in rest[:slash]:
        return ""
    database = unquote(rest[slash + 1 :].partition("?")[0])
    return "" if database == ":memory:" else database


@contextlib.contextmanager
def scheduler_lock(database_url: str, base_dir: Path) -> Generator[None, None, None]:
    """Hold the database's scheduler lock: a PostgreSQL advisory lock, or an flock on a
    file beside the SQLite file. :class:`AlreadyRunning` when another process has it."""
    database = sqlite_file(database_url, base_dir)
    if database_url.partition("://")[0].split("+", 1)[0] == "postgresql":
        with _postgres_lock(database_url, base_dir):
            yield
        return
    if not database:
        yield  # a private database (or one the store refuses when it opens it)
        return
    path = Path(database + ".scheduler.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise NewsletterError(
            f"database_url: cannot open the scheduler lock {path} of {database}: "
            f"{exc.strerror or exc}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            raise AlreadyRunning(
                f"another `newsletter run` ({holder}) is already scheduling jobs on {database}: "
                f"only one may run per database (lock: {path}); {_WORKERS}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def _postgres_lock(database_url: str, base_dir: Path) -> Generator[None, None, None]:
    import sqlalchemy as sa

    from newsletter.store.base import StoreError, _engine

    engine = _engine(database_url, base_dir)
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as exc:
            where = engine.url.render_as_string()
            raise StoreError(
                f"database_url: cannot open the database {where}: {exc.orig}"
            ) from None
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            held = bool(got.scalar())
            conn.commit()  # a session lock outlives the transaction; don't idle in one
            if not held:
                raise AlreadyRunning(
                    f"another `newsletter run` is already scheduling jobs on "
                    f"{engine.url.render_as_string()}: only one may run per database "
                    f"({_WORKERS})"
                )
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        finally:
            conn.close()
    finally:
        engine.dispose()
