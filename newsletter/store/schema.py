"""Schema revisions: Alembic, configured in code, and release 0.1's databases."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.base import StoreBase, StoreError

if TYPE_CHECKING:
    import alembic.config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Release 0.1 kept its own table of applied migrations; its schema is revision 0001.
_RELEASE_0_1_TABLE = "schema_migrations"
_RELEASE_0_1_REVISION = "0001"
# Alembic keeps the running migration in module globals: one at a time per process.
_MIGRATING = threading.Lock()


@functools.cache
def numbered_head() -> str:
    """:func:`head_revision` without loading Alembic: revisions are numbered as their
    files are named (``0014_console_indexes.py`` is revision ``0014``), each following
    the one before."""
    versions = MIGRATIONS_DIR / "versions"
    return max(path.name[:4] for path in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


def _alembic_config(conn: Connection | None = None) -> alembic.config.Config:
    """Alembic's settings in code (no alembic.ini), running on ``conn`` and its transaction."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    """The newest schema revision this version of newsletter knows."""
    from alembic.script import ScriptDirectory

    config = _alembic_config()
    return str(ScriptDirectory.from_config(config).get_current_head())


def _check_release_0_1(conn: Connection) -> None:
    version = conn.execute(sa.text(f"SELECT max(version) FROM {_RELEASE_0_1_TABLE}")).scalar()
    if version != 2:
        raise StoreError(
            f"the database's schema is at version {version} of a build before release 0.1; "
            "make a new database"
        )


class SchemaQueries(StoreBase):
    def schema_version(self) -> str | None:
        """The database's schema revision (``"0002"``), or None when it has no schema yet."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and sa.inspect(conn).has_table(_RELEASE_0_1_TABLE):
                return _RELEASE_0_1_REVISION
            return current

    def _at_head(self) -> bool:
        """Whether the database is at the newest revision already: one query, and no
        Alembic to load (a tenth of a second of every command's start otherwise). Any
        doubt (no version table, an older or unknown revision) goes the whole way."""
        try:
            with self.engine.connect() as conn:
                found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        except sa.exc.DBAPIError:
            return False
        return [tuple(row) for row in found] == [(numbered_head(),)]

    def migrate(self) -> list[str]:
        """Apply every pending revision; returns the revisions applied, oldest first.

        A database made by release 0.1 (its own ``schema_migrations`` table and no Alembic
        version) is first stamped as revision 0001, which is its schema.
        """
        if self._at_head():
            return []
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        with _MIGRATING, self.engine.begin() as conn:
            if self.is_postgres:
                # Two processes starting at once must not both create the tables.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7245001)"))
            elif self.dialect == "sqlite":
                # The same on SQLite: take the write lock before reading the version.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            config = _alembic_config(conn)
            current = MigrationContext.configure(conn).get_current_revision()
            if current is None and sa.inspect(conn).has_table(_RELEASE_0_1_TABLE):
                _check_release_0_1(conn)
                command.stamp(config, _RELEASE_0_1_REVISION)
                current = _RELEASE_0_1_REVISION
            script = ScriptDirectory.from_config(config)
            if current is not None and current not in {r.revision for r in script.walk_revisions()}:
                raise StoreError(
                    f"the database's schema is at revision {current}, which this version of "
                    "newsletter does not know; upgrade newsletter"
                )
            pending = [r.revision for r in script.iterate_revisions("heads", current or "base")]
            pending.reverse()
            if pending:
                command.upgrade(config, "heads")
        for revision in pending:
            log.info("applied schema revision %s", revision)
        return pending
