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
from newsletter.store.lanes import GROUP_TURNS, LaneLedger, SqliteLaneLedger, lane_ledger

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


def test_a_lanes_claims_take_what_the_stores_claims_take(tmp_path: Path) -> None:
    """The same outbox claimed by the store and by a lane, step by step: due rows in
    order up to the limit (fewer when fewer are due), none leased to another owner or
    waiting for a retry, single mails apart from the issue's, one row alone (``only``),
    and a chat channel's posts one at a time."""

    async def claims(store: Any, issue_id: int, lane: bool) -> list[list[tuple[int, str]]]:
        ledger = await lane_ledger(store) if lane else LaneLedger(store)
        assert isinstance(ledger, SqliteLaneLedger) == lane
        steps = [
            await ledger.claim(issue_id, "one", 3, LEASE),
            await ledger.claim(issue_id, "two", 10, LEASE),  # what "one" holds is skipped
            await ledger.claim(issue_id, "three", 10, LEASE),  # nothing is left
            await ledger.claim(None, "one", 10, LEASE),
            await ledger.claim(None, "one", 10, LEASE, only=99),
            await ledger.claim(None, "one", 10, LEASE, chat=True),
        ]
        await ledger.close()
        return [[(row.id, row.email) for row in step] for step in steps]

    results = {}
    for lane in (False, True):
        store = open_store(f"sqlite:///claims-{lane}.db", tmp_path)
        for i in range(8):
            store.add_subscriber(f"r{i}@example.org")
        issue = store.ensure_issue("2024-W05", "subject", status="sending")
        store.fan_out(issue.id)
        first = min(_rows(store))
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        store.mark_retry(first + 4, "busy", later)  # not due for an hour
        store.enqueue_mail("confirm", "c@example.org", "<c@x>", b"Subject: c\r\n\r\nc\r\n")
        store.queue_posts("slack", "#papers", [("<p1@x>", b"first"), ("<p2@x>", b"second")])
        results[lane] = asyncio.run(claims(store, issue.id, lane))
        store.close()
    assert results[True] == results[False]
    steps = results[True]
    assert [len(step) for step in steps] == [3, 4, 0, 1, 0, 1]
    assert [email for _, email in steps[0] + steps[1]] == [
        f"r{i}@example.org" for i in (0, 1, 2, 3, 5, 6, 7)
    ]
    assert steps[3][0][1] == "c@example.org" and steps[5][0][1] == "#papers"


def test_marks_asked_for_together_are_committed_together(tmp_path: Path) -> None:
    """Workers' marks of one turn of the event loop: one transaction for all, each told
    its own outcome; when that transaction fails, every one of them fails and none is
    written."""
    store = open_store("sqlite:///group.db", tmp_path)
    for i in range(6):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)
    store.remove_subscriber("r2@example.org")

    async def scenario() -> tuple[list[str], list[str], list[object]]:
        ledger = await lane_ledger(store)
        assert isinstance(ledger, SqliteLaneLedger) and ledger.shared
        begun: list[str] = []
        ledger.conn.set_trace_callback(
            lambda sql: begun.append(sql) if sql.startswith("BEGIN") else None
        )
        rows = await ledger.claim(issue.id, "one", 6, LEASE)
        begun.clear()
        states = await asyncio.gather(
            *(
                ledger.mark_sending(row.id, "one", f"<{row.id}@x>", sent=None, lease=LEASE)
                for row in rows[:4]
            )
        )
        together = begun[:]
        ledger.sending = dataclasses.replace(ledger.sending, sql="not sql", names=())
        failed = await asyncio.gather(
            *(
                ledger.mark_sending(row.id, "one", f"<{row.id}@x>", sent=None, lease=LEASE)
                for row in rows[4:]
            ),
            return_exceptions=True,
        )
        await ledger.close()
        return states, together, failed

    states, together, failed = asyncio.run(scenario())
    assert states == ["sending", "sending", "skipped", "sending"]
    assert len(together) == 1
    assert all(isinstance(exc, sqlite3.OperationalError) for exc in failed)
    statuses = [row["status"] for _, row in sorted(_rows(store).items())]
    assert statuses == ["sending", "sending", "skipped", "sending", "queued", "queued"]
    store.close()


def test_a_group_gathers_marks_for_a_few_turns_of_the_loop(tmp_path: Path) -> None:
    """Workers wake one at a time: a mark asked for two turns after the first joins its
    commit; one asked for after GROUP_TURNS turns starts the next group."""
    store = open_store("sqlite:///turns.db", tmp_path)
    for i in range(3):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)

    async def later(turns: int, ledger: SqliteLaneLedger, row_id: int) -> str:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await ledger.mark_sending(row_id, "one", f"<{row_id}@x>", sent=None, lease=LEASE)

    async def scenario() -> tuple[list[str], list[list[int]]]:
        ledger = await lane_ledger(store)
        assert isinstance(ledger, SqliteLaneLedger)
        groups: list[list[int]] = []
        commit = ledger._commit_marks

        def recorded() -> None:
            groups.append([args[0] for args, _ in ledger._marks])
            commit()

        ledger._commit_marks = recorded  # type: ignore[method-assign]
        rows = await ledger.claim(issue.id, "one", 3, LEASE)
        turns = (0, 2, GROUP_TURNS + 2)
        states = await asyncio.gather(
            *(later(n, ledger, row.id) for n, row in zip(turns, rows, strict=True))
        )
        await ledger.close()
        return states, groups

    states, groups = asyncio.run(scenario())
    assert states == ["sending"] * 3
    first, second, third = sorted(_rows(store))
    assert groups == [[first, second], [third]]
    assert [row["status"] for row in _rows(store).values()] == ["sending"] * 3
    store.close()


def test_a_mark_whose_worker_has_gone_is_not_written(tmp_path: Path) -> None:
    """A worker cancelled while its mark waits for the group's commit: its row stays as it
    was (no attempt counted, no lease taken), and the others' marks are written."""
    store = open_store("sqlite:///gone.db", tmp_path)
    for i in range(2):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)

    async def scenario() -> str:
        ledger = await lane_ledger(store)
        kept, gone = await ledger.claim(issue.id, "one", 2, LEASE)
        staying = asyncio.ensure_future(
            ledger.mark_sending(kept.id, "one", "<1@x>", sent=None, lease=LEASE)
        )
        leaving = asyncio.ensure_future(
            ledger.mark_sending(gone.id, "one", "<2@x>", sent=None, lease=LEASE)
        )
        await asyncio.sleep(0)
        leaving.cancel()
        state = await staying
        await ledger.close()
        return state

    assert asyncio.run(scenario()) == "sending"
    rows = sorted(_rows(store).values(), key=lambda row: row["id"])
    assert [(row["status"], row["attempts"]) for row in rows] == [("sending", 1), ("queued", 0)]
    store.close()
