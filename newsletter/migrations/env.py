"""Runs the revisions in versions/ against one connection.

``Store.migrate`` passes its connection, inside its transaction and lock, as
``config.attributes["connection"]``. Run from the ``alembic`` command line instead (see
alembic.ini), a connection is opened to ``-x url=...`` or the ini's ``sqlalchemy.url``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from newsletter.migrations import same_server_default
from newsletter.store import metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        # Only autogenerate reads the live tables; a revision never does.
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch operations copy the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=same_server_default,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) mode is not supported; give a database with -x url=")
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = sa.create_engine(url or "sqlite:///newsletter.db")
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


main()
