"""The store on SQLite: migrations, subscribers, the ledger's claims and leases."""

from __future__ import annotations

import contextlib
import datetime as dt
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from newsletter.store import Store, deliveries, head_revision, open_store, utcnow

LEASE = dt.timedelta(minutes=5)
T = TypeVar("T")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store("sqlite:///news.db", tmp_path)


def test_schema_is_created_on_first_use_and_migrations_are_recorded(tmp_path: Path) -> None:
    fresh = open_store("sqlite:///fresh.db", tmp_path, migrate=False)
    assert fresh.schema_version() is None
    applied = fresh.migrate()
    assert applied[:2] == ["0001", "0002"] and applied[-1] == head_revision()
    assert fresh.migrate() == []
    assert (tmp_path / "fresh.db").is_file()  # relative URLs resolve against the config folder
    assert open_store("sqlite:///fresh.db", tmp_path).schema_version() == head_revision()


def test_addresses_are_unique_whatever_their_case(store: Store) -> None:
    first, created = store.add_subscriber("Kim@Example.org", "김", "ko")
    assert created
    again, created = store.add_subscriber("kim@example.ORG", "", "en")
    assert not created and again.id == first.id
    assert again.email == "Kim@Example.org"  # the first spelling is kept
    assert again.lang == "en" and again.name == "김"  # given values merge, empty ones do not


def test_merging_never_reactivates_an_unsubscribed_address(store: Store) -> None:
    sub, _ = store.add_subscriber("gone@example.org")
    store.set_status(sub.id, "unsubscribed")
    again, _ = store.add_subscriber("gone@example.org", "Back")
    assert again.status == "unsubscribed"


def test_subscribers_stream_in_pages(store: Store) -> None:
    for i in range(25):
        store.add_subscriber(f"r{i:02d}@example.org", status="active" if i % 5 else "pending")
    streamed = list(store.iter_subscribers("active", batch=4))
    assert len(streamed) == 20
    assert [s.id for s in streamed] == sorted(s.id for s in streamed)
    assert store.count_subscribers() == {"active": 20, "pending": 5}


def test_claims_lease_rows_and_expired_leases_come_back(store: Store) -> None:
    for i in range(6):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    assert store.fan_out(issue.id) == 6
    now = utcnow()
    first = store.claim(issue.id, "a", 4, LEASE, now)
    second = store.claim(issue.id, "b", 4, LEASE, now + dt.timedelta(minutes=4))
    assert len(first) == 4 and len(second) == 2
    assert not {r.id for r in first} & {r.id for r in second}
    assert store.claim(issue.id, "c", 4, LEASE, now + dt.timedelta(minutes=4)) == []
    # "a" dies holding its rows; once its lease has run out they can be claimed again,
    # while "b"'s rows, still under lease, cannot.
    later = now + LEASE + dt.timedelta(seconds=1)
    assert {r.id for r in store.claim(issue.id, "c", 10, LEASE, later)} == {r.id for r in first}


def test_sending_row_of_a_dead_local_process_is_freed_at_once(store: Store) -> None:
    import socket

    store.add_subscriber("r@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    store.fan_out(issue.id)
    owner = f"{socket.gethostname()}:999999:x"
    (row,) = store.claim(issue.id, owner, 1, LEASE)
    assert store.mark_sending(row.id, owner, "<m@x>") == "sending"
    assert store.claim(issue.id, "other", 1, LEASE) == []
    assert store.release_dead_local_leases(lambda pid: pid != 999999) == 1
    (again,) = store.claim(issue.id, "other", 1, LEASE)
    assert again.id == row.id and again.status == "sending" and again.message_id == "<m@x>"


def test_mark_sending_skips_a_subscriber_who_left(store: Store) -> None:
    sub, _ = store.add_subscriber("r@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    store.fan_out(issue.id)
    (row,) = store.claim(issue.id, "a", 1, LEASE)
    store.set_status(sub.id, "unsubscribed")
    assert store.mark_sending(row.id, "a", "<m@x>") == "skipped"
    assert store.counts(issue.id)["skipped"] == 1
    assert store.mark_sending(row.id, "b", "<m@x>") == "lost"


def test_retry_waits_for_its_time(store: Store) -> None:
    store.add_subscriber("r@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    store.fan_out(issue.id)
    (row,) = store.claim(issue.id, "a", 1, LEASE)
    store.mark_sending(row.id, "a", "<m@x>")
    due = utcnow() + dt.timedelta(seconds=60)
    store.mark_retry(row.id, "451 later", due)
    assert store.claim(issue.id, "a", 1, LEASE) == []
    assert store.next_retry_at(issue.id) == due
    assert len(store.claim(issue.id, "a", 1, LEASE, due + dt.timedelta(seconds=1))) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(deliveries.c.attempts)).scalar() == 1


def test_a_claim_reads_only_the_rows_left_to_send(store: Store) -> None:
    """SQLite finds a lane's due rows through the index of unsent rows: the status test
    is written so that the planner can see that index's condition."""
    from newsletter.store.claims import claimable_rows, due_rows

    statement = due_rows(claimable_rows("issue", False)).compile(dialect=store.engine.dialect)
    now = utcnow()
    params = {**statement.params, "b_now": now, "b_issue": 1, "b_only": None, "b_limit": 10}
    with store.engine.connect() as conn:
        values = tuple(params[name] for name in statement.positiontup or ())
        plan = conn.exec_driver_sql(f"explain query plan {statement}", values).all()
    assert any("ix_deliveries_due" in row[-1] for row in plan), plan


def test_an_issue_that_stopped_sending_has_nothing_to_claim(store: Store) -> None:
    store.add_subscriber("r@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    store.fan_out(issue.id)
    with store.engine.begin() as conn:
        conn.execute(sa.text("update issues set status = 'paused'"))
    assert store.claim(issue.id, "a", 10, LEASE) == []
    with store.engine.begin() as conn:
        conn.execute(sa.text("update issues set status = 'sending'"))
    assert len(store.claim(issue.id, "a", 10, LEASE)) == 1


def test_a_message_given_back_after_its_issue_was_cancelled_is_skipped(store: Store) -> None:
    """On the wire when the operator cancelled, then the server failed: requeued, it would
    wait forever (nothing sends a cancelled issue), so it is skipped instead."""
    for i in range(2):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "s", status="sending")
    store.fan_out(issue.id)
    first, _second = store.claim(issue.id, "a", 2, LEASE)
    assert store.mark_sending(first.id, "a", "<1@x>") == "sending"
    with store.engine.begin() as conn:
        conn.execute(sa.text("update issues set status = 'cancelled'"))
    assert store.requeue([first.id], "server: 421") == 1
    assert store.counts(issue.id)["skipped"] == 1 and store.counts(issue.id)["queued"] == 1


# --- a long list: what the send does with it stays in the database ----------------------


def many_subscribers(store: Store, count: int, *, inactive_every: int = 0) -> None:
    """``count`` subscribers made by the database itself (a recursive CTE); with
    ``inactive_every``, every such one has unsubscribed."""
    status = "'active'"
    if inactive_every:
        status = f"CASE WHEN i % {inactive_every} = 0 THEN 'unsubscribed' ELSE 'active' END"
    statement = sa.text(
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :count) "
        "INSERT INTO subscribers (email, email_key, name, lang, status, created_at, updated_at) "
        f"SELECT 'r' || i || '@example.org', 'r' || i || '@example.org', '', 'ko', {status}, "
        ":now, :now FROM seq"
    ).bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True)))
    with store.engine.begin() as conn:
        conn.execute(statement, {"count": count, "now": utcnow()})


@contextlib.contextmanager
def vm_steps(store: Store) -> Iterator[list[int]]:
    """SQLite's virtual-machine instructions, in hundreds, of the statements run inside:
    the work they did, whatever the machine's speed."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    def hook(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_progress_handler(tick, 100)

    store.engine.dispose()
    sa.event.listen(store.engine, "connect", hook)
    try:
        yield steps
    finally:
        sa.event.remove(store.engine, "connect", hook)
        store.engine.dispose()


def python_peak(work: Callable[[], T]) -> tuple[T, int]:
    """What ``work`` returns, and the most memory Python held for it at once (bytes)."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fan_out_goes_a_range_of_subscribers_at_a_time(store: Store) -> None:
    many_subscribers(store, 20, inactive_every=4)
    issue = store.ensure_issue("2024-W05", "s", status="approved")
    assert not store.has_deliveries(issue.id)
    assert store.fan_out(issue.id, batch=3) == 15
    assert store.has_deliveries(issue.id)
    assert store.fan_out(issue.id, batch=7) == 0
    late = store.add_subscriber("late@example.org")[0]
    assert store.fan_out(issue.id, batch=100) == 1
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(deliveries.c.subscriber_id)).scalars().all()
        recipients = conn.execute(sa.text("select recipients from issues")).scalar()
    expected = [i for i in range(1, 21) if i % 4] + [late.id]
    assert sorted(found) == expected and recipients == 16


def test_a_fan_out_to_a_long_list_never_holds_it(store: Store) -> None:
    """The deliveries are made by one INSERT ... SELECT per range of subscribers: none of
    them passes through Python (200,000 ids alone would take 7 MB there)."""
    many_subscribers(store, 200_000)
    issue = store.ensure_issue("2024-W05", "s", status="approved")
    store.fan_out(issue.id)  # the statements compiled once, as in any process
    other = store.ensure_issue("2024-W06", "s", status="approved")
    added, peak = python_peak(lambda: store.fan_out(other.id))
    assert added == 200_000
    assert peak < 500_000, peak


def test_a_claim_works_as_much_on_a_long_list_as_on_a_short_one(tmp_path: Path) -> None:
    """A claim finds the next rows through the index of unsent rows, by id: no reading of
    the list, neither of what is left to send nor of what was sent."""
    work = {}
    for count in (1_000, 200_000):
        store = open_store(f"sqlite:///{count}.db", tmp_path)
        many_subscribers(store, count)
        issue = store.ensure_issue("2024-W05", "s", status="sending")
        store.fan_out(issue.id)
        with vm_steps(store) as steps:
            assert len(store.claim(issue.id, "a", 10, LEASE)) == 10
        work[count] = steps[0]
        if count > 1_000:
            # All but the last 20 sent: the claim does not walk past what was sent.
            with store.engine.begin() as conn:
                conn.execute(
                    sa.text(f"update deliveries set status = 'sent' where id <= {count - 20}")
                )
            with vm_steps(store) as steps:
                claimed = store.claim(issue.id, "b", 10, LEASE)
            assert [row.id for row in claimed] == list(range(count - 19, count - 9))
            work["near the end"] = steps[0]
        store.close()
    assert work[200_000] <= 2 * work[1_000] + 10, work
    assert work["near the end"] <= 2 * work[1_000] + 10, work


def test_subscribers_are_read_a_page_at_a_time(store: Store) -> None:
    """The dry run and the exports go through the list with at most a page in memory."""
    many_subscribers(store, 200_000)
    count, peak = python_peak(lambda: sum(1 for _ in store.iter_subscribers("active")))
    assert count == 200_000
    assert peak < 3_000_000, peak


def test_the_confirmation_limit_reads_the_addresss_mails_from_the_index(store: Store) -> None:
    """The form's rate limit counts one address's confirmation mails inside the write lock:
    from the index of single mails, never by reading every delivery."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, *rest: Any) -> None:
        if "'confirm'" in sql or "confirm" in str(params):
            seen.append((sql, params))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        store.request_confirmation(
            "Reader@example.org", "", "ko", limits=[(dt.timedelta(hours=1), 3)]
        )
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    counting = [(sql, params) for sql, params in seen if sql.lstrip().upper().startswith("SELECT")]
    assert counting
    with store.engine.connect() as conn:
        for sql, params in counting:
            plan = " | ".join(
                row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            )
            assert "INDEX ix_deliveries_kind_recipient" in plan, plan
            assert "SCAN deliveries" not in plan, plan
