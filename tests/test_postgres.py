"""PostgreSQL: migrations, the idempotent fan-out, and several workers sharing one send."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import SEEDS, SLACK_TOKEN, ChatServer, FaultySmtpHandler, run_newsletter
from sqlalchemy.sql.compiler import SQLCompiler

from newsletter.app import issues
from newsletter.app.issues import prepare
from newsletter.archive.sources import load_local_archive
from newsletter.config import load_config
from newsletter.select import IsoWeek
from newsletter.store import Store, deliveries, head_revision, open_store


def test_migrations_apply_once(postgres_url: str, tmp_path: Path) -> None:
    store = open_store(postgres_url, tmp_path)
    assert store.schema_version() == head_revision()
    assert store.migrate() == []
    store.close()


def test_fan_out_is_idempotent_and_addresses_case_insensitive(
    postgres_url: str, tmp_path: Path
) -> None:
    store = open_store(postgres_url, tmp_path)
    store.add_subscriber("Reader@Example.org")
    _, created = store.add_subscriber("reader@example.org")
    assert not created
    store.add_subscriber("other@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    assert store.fan_out(issue.id, batch=1) == 2  # a subscriber id per transaction
    assert store.fan_out(issue.id) == 0
    store.add_subscriber("late@example.org")
    assert store.fan_out(issue.id) == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(deliveries)).scalar() == 3
    store.close()


def test_three_workers_and_a_send_share_the_list_without_doubles(
    postgres_url: str, tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    handler.delay = 0.01
    config = tmp_path / "config.toml"
    config.write_text(
        f'source = "{SEEDS}"\ndatabase_url = "{postgres_url}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\nconcurrency = 2\n'
        "retry_base_seconds = 0.01\n"
    )
    store = open_store(postgres_url, tmp_path)
    addresses = [f"reader{i:03d}@example.org" for i in range(300)]
    for address in addresses:
        store.add_subscriber(address)
    # The issue is approved and being sent before the workers look for work.
    cfg = load_config(config)
    archive = load_local_archive(cfg)
    issue = issues.start(store, issues.approve(store, cfg, prepare(cfg, archive, IsoWeek(2024, 5))))
    assert issue.status == "sending"

    insecure = "--allow-insecure-links"  # http base_url, on loopback
    procs = [
        run_newsletter(config, "worker", "--once", "--poll", "0.2", insecure) for _ in range(3)
    ]
    procs.append(run_newsletter(config, "send", "--week", "2024-W05", insecure))
    for proc in procs:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    assert handler.counts() == dict.fromkeys(addresses, 1)  # everyone once, nobody twice
    assert len(handler.peers) > 2  # more connections than one process opens: the work was shared
    assert store.counts(issue.id)["sent"] == 300
    assert store.get_issue("2024-W05").status == "sent"
    store.close()


def test_the_marks_around_each_message_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    """The one-statement mark: the previous message recorded sent with this one marked
    sending; a subscriber who left meanwhile is skipped (the previous mark still stands);
    a row whose lease went to another worker is lost."""
    import datetime as dt

    store = open_store(postgres_url, tmp_path)
    for address in ("a@example.org", "b@example.org", "c@example.org"):
        store.add_subscriber(address)
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)
    first, second, third = store.claim(issue.id, "me", 10, dt.timedelta(minutes=5))
    assert store.mark_sending(first.id, "me", "<1@x>") == "sending"
    store.remove_subscriber(second.email)
    assert store.mark_sending(second.id, "me", "<2@x>", sent=(first.id, "<1@x>")) == "skipped"
    assert store.mark_sending(third.id, "someone else", "<3@x>") == "lost"
    with store.engine.connect() as conn:
        rows = dict(
            conn.execute(sa.select(deliveries.c.id, deliveries.c.status)).all()  # type: ignore[arg-type]
        )
    assert rows == {first.id: "sent", second.id: "skipped", third.id: "queued"}
    store.close()


def test_refused_recipients_and_unmatched_reports_on_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    """A 5.1.1 refusal bounces at once, a 4xx counts; a report that proved nothing is
    noted once."""
    import datetime as dt

    store = open_store(postgres_url, tmp_path)
    for address in ("gone@example.org", "busy@example.org"):
        store.add_subscriber(address)
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)
    rows = {r.email: r for r in store.claim(issue.id, "me", 10, dt.timedelta(minutes=5))}
    refused = {"error_kind": "recipient", "bounce_threshold": 2}
    gone, busy = rows["gone@example.org"], rows["busy@example.org"]
    assert store.mark_failed(
        gone.id, "550 5.1.1 No such user", bounce="hard", smtp_code=550, enhanced_code="5.1.1",
        **refused,
    )  # fmt: skip
    assert not store.mark_failed(
        busy.id, "450 4.2.1 Busy", bounce="soft", smtp_code=450, enhanced_code="4.2.1",
        **refused,
    )  # fmt: skip
    after = store.get_subscriber(email="gone@example.org")
    assert (after.status, after.status_reason, after.status_code) == ("bounced", "refused", "5.1.1")
    after = store.get_subscriber(email="busy@example.org")
    assert (after.status, after.soft_bounces) == ("active", 1)
    assert store.bounce_counts(issue.id)["refused"] == 2

    assert store.unmatched().count == 0 and store.unmatched().latest is None
    for _ in range(2):
        store.record_unmatched(report_id="<r1@x>", kind="hard", addresses=["a@example.org"])
    found = store.unmatched()
    assert found.count == 1 and found.latest is not None and found.latest.tzinfo is not None
    store.close()


def test_a_sending_lane_claims_and_marks_over_its_own_connection(
    postgres_url: str, tmp_path: Path
) -> None:
    """The lane's asyncio connection runs the store's statements: two lanes never hold the
    same row, the marks record sent, skipped and lost as the store's do, and a paused
    issue has nothing to claim."""
    import asyncio
    import datetime as dt

    from newsletter.store.lanes import PostgresLaneLedger, lane_ledger

    lease = dt.timedelta(minutes=5)
    store = open_store(postgres_url, tmp_path)
    for i in range(5):
        store.add_subscriber(f"r{i}@example.org")
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)

    async def scenario() -> dict[int, str]:
        one, two = await lane_ledger(store), await lane_ledger(store)
        assert isinstance(one, PostgresLaneLedger)
        # Marks commit without waiting for the disk (see newsletter.store.lanes).
        setting = await (await one.conn.execute("show synchronous_commit")).fetchone()
        assert setting == ("off",)
        try:
            mine = await one.claim(issue.id, "one", 3, lease)
            theirs = await two.claim(issue.id, "two", 3, lease)
            assert [len(mine), len(theirs)] == [3, 2]
            assert not {r.id for r in mine} & {r.id for r in theirs}
            assert {r.email for r in mine + theirs} == {f"r{i}@example.org" for i in range(5)}
            first, second, third = mine
            assert await one.mark_sending(first.id, "one", "<1@x>", sent=None, lease=lease) == (
                "sending"
            )
            store.remove_subscriber(second.email)
            state = await one.mark_sending(
                second.id, "one", "<2@x>", sent=(first.id, "<1@x>"), lease=lease
            )
            assert state == "skipped"
            assert await one.mark_sending(third.id, "two", "<3@x>", sent=None, lease=lease) == (
                "lost"
            )
            assert await two.mark_sending(theirs[0].id, "two", "<4@x>", sent=None, lease=lease) == (
                "sending"
            )
            await two.mark_sent(theirs[0].id, "<4@x>")
            store.release([theirs[1].id], "two")
            with store.engine.begin() as conn:
                conn.execute(sa.text("update issues set status = 'paused'"))
            assert await one.claim(issue.id, "one", 10, lease) == []
        finally:
            await one.close()
            await two.close()
        with store.engine.connect() as conn:
            return dict(conn.execute(sa.select(deliveries.c.id, deliveries.c.status)).all())  # type: ignore[arg-type]

    rows = asyncio.run(scenario())
    assert sorted(rows.values()) == ["queued", "queued", "sent", "sent", "skipped"]
    store.close()


def test_a_claim_reads_only_the_rows_left_to_send(postgres_url: str, tmp_path: Path) -> None:
    """The claim walks the index of unsent rows, not the rows already sent (walking the
    primary key past them made each claim slower as a send went on)."""
    import datetime as dt

    from newsletter.store.claims import claim_statement

    store = open_store(postgres_url, tmp_path)
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "insert into subscribers (email, email_key, created_at, updated_at)"
                " select 'r' || i || '@example.org', 'r' || i || '@example.org', now(), now()"
                " from generate_series(1, 5000) as i"
            )
        )
    store.fan_out(issue.id)
    with store.engine.begin() as conn:
        # As a big send leaves the table: mostly sent, the rest queued.
        conn.execute(sa.text("update deliveries set status = 'sent' where id % 100 <> 0"))
        conn.execute(sa.text("analyze deliveries"))
    now = dt.datetime.now(dt.UTC)
    params = {"b_now": now, "b_issue": issue.id, "b_only": None, "b_limit": 10}
    params |= {"b_owner": "me", "b_until": now}
    compiled = claim_statement("issue", False).compile(dialect=store.engine.dialect)
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql("explain " + str(compiled), {**compiled.params, **params})
        text = "\n".join(row[0] for row in plan)
    assert "ix_deliveries_due" in text, text
    store.close()


@pytest.mark.parametrize("statement", ["PG_MARK", "MARK_SENDING"])
def test_a_mark_reads_one_subscriber_before_the_list_is_analyzed(
    postgres_url: str, tmp_path: Path, statement: str
) -> None:
    """Marking a message sending checks that its subscriber is still active by that one
    row, also on a list imported moments ago, before autovacuum has taken its statistics:
    planned from the empty table's, the check read every active subscriber into a hash at
    each mark (a millisecond per message on 3,000 subscribers, and more as the list
    grows)."""
    import datetime as dt

    from newsletter.store import claims

    lease = dt.timedelta(minutes=5)
    store = open_store(postgres_url, tmp_path)
    _import_subscribers(store, 3000)
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    store.fan_out(issue.id)
    first, second = store.claim(issue.id, "me", 2, lease)
    if statement == "PG_MARK":
        compiled = claims.PG_MARK.compile(dialect=store.engine.dialect)
        values = claims.pg_mark_params(second.id, "me", "<2@x>", (first.id, "<1@x>"), lease)
    else:
        compiled = claims.MARK_SENDING.compile(dialect=store.engine.dialect)
        now = dt.datetime.now(dt.UTC)
        values = {"b_id": second.id, "b_owner": "me", "b_message_id": "<2@x>"}
        values |= {"b_now": now, "b_until": now + lease}
    assert isinstance(compiled, SQLCompiler)
    expanded = compiled.construct_expanded_state(values)  # the IN list's values, too
    with store.engine.connect() as conn:
        (plan,) = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {expanded.statement}", expanded.parameters
        ).scalar_one()
        conn.commit()

    read = [(name, rows) for table, name, rows in _reads(plan) if table == "subscribers"]
    assert read == [("subscribers_pkey", 1)], read
    with store.engine.connect() as conn:
        status = deliveries.c.status
        marked = conn.execute(sa.select(status).where(deliveries.c.id == second.id)).scalar()
    assert marked == "sending"
    store.close()


def test_a_day_posts_to_slack_from_postgresql(
    postgres_url: str, tmp_path: Path, chat_server: ChatServer
) -> None:
    """The chat lane on PostgreSQL (its claim over the lane's own connection): the day's
    message, then its papers in its thread; a second run adds nothing."""
    import datetime as dt

    from newsletter.app import chat

    config = tmp_path / "config.toml"
    config.write_text(
        f'source = "{SEEDS}"\ndatabase_url = "{postgres_url}"\n'
        f'[slack]\nchannel = "C0PAPERS"\napi_url = "{chat_server.url}/api"\npapers = 3\n'
    )
    cfg = load_config(config, env={"NEWSLETTER_SLACK_TOKEN": SLACK_TOKEN})
    store = open_store(postgres_url, tmp_path)
    for _ in range(2):
        chat.post_day(cfg, store, load_local_archive(cfg), b"k" * 32, dt.date(2024, 7, 31))
    day, *papers = chat_server.posts
    assert len(papers) == 3 and {p["thread_ts"] for p in papers} == {day["ts"]}
    store.close()


def test_a_claim_on_a_long_list_reads_only_the_rows_it_takes(
    postgres_url: str, tmp_path: Path
) -> None:
    """A claim goes through the index of unsent rows, whatever the statistics say: those
    taken as the send began (every row queued) would otherwise make the planner walk the
    primary key past every row sent since, a little longer at each claim."""
    import datetime as dt

    from newsletter.store.claims import claim_params, claim_statement

    lease = dt.timedelta(minutes=5)
    store = open_store(postgres_url, tmp_path)
    _import_subscribers(store, 100_000)
    issue = store.ensure_issue("2024-W05", "subject", status="sending")
    assert store.fan_out(issue.id) == 100_000
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))  # as autovacuum does after the fan-out
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE deliveries SET status = 'sent' WHERE id <= 10000"))
    statement = claim_statement("issue", False).compile(dialect=store.engine.dialect)
    now = dt.datetime.now(dt.UTC)
    params = {**statement.params, **claim_params(issue.id, "me", 10, lease, now, None)}
    with store.engine.connect() as conn:
        (plan,) = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params
        ).scalar_one()
        conn.rollback()

    read = [(name, rows) for table, name, rows in _reads(plan) if table == "deliveries"]
    assert ("ix_deliveries_due", 10) in read, read
    assert sum(rows for _, rows in read) <= 20, read
    assert [row.id for row in store.claim(issue.id, "me", 10, lease)] == list(range(10001, 10011))
    store.close()


def _import_subscribers(store: Store, count: int) -> None:
    """``count`` active subscribers in one statement, as an import leaves them: the
    table's statistics not yet taken."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscribers (email, email_key, name, lang, status, created_at, "
                "updated_at) SELECT 'r' || i || '@example.org', 'r' || i || '@example.org', "
                "'', 'ko', 'active', now(), now() FROM generate_series(1, :count) AS i"
            ),
            {"count": count},
        )


def _reads(plan: dict[str, Any]) -> list[tuple[str, str | None, int]]:
    """The table reads of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan: (table, index, rows
    read, those filtered out included)."""

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    return [
        (
            node["Relation Name"],
            node.get("Index Name"),
            node["Actual Rows"] + node.get("Rows Removed by Filter", 0),
        )
        for node in nodes(plan["Plan"])
        if "Relation Name" in node and node["Node Type"] != "ModifyTable"
    ]
