"""The schema's Alembic revisions (versions/), run by ``Store.migrate``; see env.py."""

from __future__ import annotations

from typing import Any


def same_server_default(
    _context: Any,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected: str | None,
    _metadata_default: Any,
    rendered: str | None,
) -> bool | None:
    """Alembic's ``compare_server_default``, less one false alarm: SQLite reflects
    ``DEFAULT ''`` as ``('')``, which Alembic takes for another default. None leaves every
    other default to Alembic's own comparison."""
    if inspected == "('')" and rendered == "":
        return False
    return None
