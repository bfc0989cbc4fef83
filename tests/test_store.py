"""The store on SQLite: migrations, subscribers, the ledger's claims and leases."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from newsletter.store import Store, deliveries, head_revision, open_store, utcnow

LEASE = dt.timedelta(minutes=5)


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
