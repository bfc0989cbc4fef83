"""A sending lane's ledger calls on SQLite: the marks over the lane's own connection write
what the store's own marks write (PostgreSQL's lane is in test_postgres.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from newsletter.store import deliveries, open_store
from newsletter.store.lanes import LaneLedger, SqliteLaneLedger, lane_ledger

LEASE = dt.timedelta(minutes=5)
COLUMNS = ("status", "attempts", "message_id", "lease_owner", "last_error")


def _rows(store: Any) -> dict[int, dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(deliveries)).mappings().all()
    return {row["id"]: dict(row) for row in rows}


async def _marks(store: Any, issue_id: int, lane: bool) -> list[str]:
    """Four messages marked: sent, skipped (the subscriber left), lost (another holds it)."""
    ledger = await lane_ledger(store) if lane else LaneLedger(store)
    assert isinstance(ledger, SqliteLaneLedger) == lane
    try:
        first, second, third, fourth = await ledger.claim(issue_id, "one", 4, LEASE)
        store.remove_subscriber(third.email)
        states = [
            await ledger.mark_sending(first.id, "one", "<1@x>", sent=None, lease=LEASE),
            await ledger.mark_sending(
                second.id, "one", "<2@x>", sent=(first.id, "<1@x>"), lease=LEASE
            ),
            await ledger.mark_sending(third.id, "one", "<3@x>", sent=None, lease=LEASE),
            await ledger.mark_sending(fourth.id, "two", "<4@x>", sent=None, lease=LEASE),
        ]
        await ledger.mark_sent(second.id, "<2@x>")
        return states
    finally:
        await ledger.close()


def test_a_lanes_marks_write_what_the_stores_write(tmp_path: Path) -> None:
    """The same issue marked twice, once by the store and once by a lane: sending (and the
    previous message sent in the same transaction), skipped when the subscriber left, lost
    when another holds the lease, and sent; the rows read back alike."""
    results = {}
    for lane in (False, True):
        store = open_store(f"sqlite:///{lane}.db", tmp_path)
        for i in range(4):
            store.add_subscriber(f"r{i}@example.org")
        issue = store.ensure_issue("2024-W05", "subject", status="sending")
        store.fan_out(issue.id)
        assert asyncio.run(_marks(store, issue.id, lane)) == [
            "sending",
            "sending",
            "skipped",
            "lost",
        ]
        rows = _rows(store)
        results[lane] = [{c: row[c] for c in COLUMNS} for _, row in sorted(rows.items())]
        first = rows[min(rows)]
        assert first["sent_at"] is not None and first["sent_at"] == first["updated_at"]
        assert first["lease_until"] is None
        store.close()
    assert results[True] == results[False]
    assert [r["status"] for r in results[True]] == ["sent", "sent", "skipped", "queued"]


def test_a_failed_mark_leaves_nothing_half_written(tmp_path: Path) -> None:
    """The previous message's 'sent' and this one's 'sending' are one transaction."""
    store = open_store("sqlite:///news.db", tmp_path)
    store.add_subscriber("r@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)

    async def scenario() -> None:
        ledger = await lane_ledger(store)
        assert isinstance(ledger, SqliteLaneLedger)
        (row,) = await ledger.claim(issue.id, "one", 1, LEASE)
        await ledger.mark_sending(row.id, "one", "<1@x>", sent=None, lease=LEASE)
        ledger.sending = dataclasses.replace(ledger.sending, sql="not sql", names=())
        try:
            with pytest.raises(sqlite3.OperationalError, match="syntax error"):
                await ledger.mark_sending(
                    row.id, "one", "<2@x>", sent=(row.id, "<1@x>"), lease=LEASE
                )
        finally:
            await ledger.close()

    asyncio.run(scenario())
    (row,) = _rows(store).values()
    assert row["status"] == "sending"  # the 'sent' of the failed transaction was undone
    store.close()


def test_an_in_memory_database_keeps_the_stores_connection() -> None:
    store = open_store("sqlite://", Path("."))
    ledger = asyncio.run(lane_ledger(store))
    assert type(ledger) is LaneLedger
    store.close()
