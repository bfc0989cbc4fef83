"""The console's data: the list searched, filtered and paged by id (100,000 subscribers, on
SQLite and PostgreSQL), exported as searched, a send's counts and pace as it goes, the
issues' deliveries, the rates, the reports and the list over time."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from newsletter.app import console
from newsletter.app.status import status
from newsletter.app.subscribers import export_csv
from newsletter.errors import NewsletterError
from newsletter.store import Store, deliveries, open_store, subscribers

T0 = dt.datetime(2024, 5, 20, 9, 0, tzinfo=dt.UTC)
SEOUL = ZoneInfo("Asia/Seoul")

FAMILY = ("김", "이", "박", "Kim", "Lee")
GIVEN = ("민지", "서준", "Minji", "Seojun", "Élodie", "하은", "Doyun")
# Of every 100 subscribers: 90 active, 5 unsubscribed, 3 pending, 2 bounced.
STATES = ("active",) * 90 + ("unsubscribed",) * 5 + ("pending",) * 3 + ("bounced",) * 2


def fill_list(
    store: Store, count: int, *, start: dt.datetime = T0 - dt.timedelta(days=730)
) -> None:
    """``count`` subscribers in one transaction of batched inserts: every fifth in English,
    the states of :data:`STATES` in turn, joined evenly over the two years to ``T0`` (those
    no longer active left up to 30 days later, before ``T0``)."""
    step = dt.timedelta(days=730) / max(count, 1)
    with store.engine.begin() as conn:
        batch: list[dict[str, Any]] = []
        for i in range(count):
            state = STATES[i % len(STATES)]
            joined = start + i * step
            left = joined + min(dt.timedelta(days=30), (T0 - joined) / 2)
            email = f"reader{i:06d}@example{i % 50}.org"
            batch.append(
                {
                    "email": email,
                    "email_key": email,
                    "name": f"{FAMILY[i % len(FAMILY)]} {GIVEN[i % len(GIVEN)]}",
                    "lang": "en" if i % 5 == 0 else "ko",
                    "status": state,
                    "created_at": joined,
                    "updated_at": left if state != "active" else joined,
                    "confirmed_at": None if state == "pending" else joined,
                    "unsubscribed_at": left if state == "unsubscribed" else None,
                    "status_at": left if state == "bounced" else None,
                }
            )
            if len(batch) == 10_000:
                conn.execute(subscribers.insert(), batch)
                batch = []
        if batch:
            conn.execute(subscribers.insert(), batch)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("sqlite:///news.db", tmp_path)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """100,000 subscribers on SQLite, made once for the module's tests that only read."""
    opened = open_store("sqlite:///big.db", tmp_path_factory.mktemp("big"))
    fill_list(opened, 100_000)
    yield opened
    opened.close()


class Statements:
    """The SQL statements a store runs while it is watched."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.seen: list[str] = []
        self.parameters: list[Any] = []

    def _note(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("PRAGMA", "BEGIN", "COMMIT")):
            self.seen.append(statement)
            self.parameters.append(parameters)

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._note)
        return self

    def __exit__(self, *_exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._note)


def _plan(store: Store, statement: Any) -> str:
    """SQLite's plan of ``statement``, as one text."""
    compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": True})
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
    return " | ".join(row[-1] for row in rows)


# --- the list: filters, search, pages ---------------------------------------------------


def test_filters_by_state_and_language(store: Store) -> None:
    kim, _ = store.add_subscriber("kim@example.org", "김민지", "ko")
    lee, _ = store.add_subscriber("lee@example.org", "Lee", "en")
    park, _ = store.add_subscriber("park@example.org", "박", "ko")
    store.set_status(park.id, "unsubscribed", reason="unsubscribe")
    found = console.find_subscribers(store, state="active")
    assert [s.email for s in found.rows] == ["kim@example.org", "lee@example.org"]
    assert (found.total, found.next_after) == (2, None)
    assert [s.id for s in console.find_subscribers(store, lang="ko").rows] == [kim.id, park.id]
    both = console.find_subscribers(store, state="active", lang="en")
    assert [s.id for s in both.rows] == [lee.id] and both.total == 1
    assert console.find_subscribers(store, state="bounced").rows == []
    # A form's empty select means "any".
    assert console.find_subscribers(store, state="", lang="").total == 3


def test_bad_filters_are_refused_in_one_line(store: Store) -> None:
    with pytest.raises(NewsletterError, match="status must be one of"):
        console.find_subscribers(store, state="gone")
    with pytest.raises(NewsletterError, match="language must be one of ko, en, got 'fr'"):
        console.find_subscribers(store, lang="fr")
    with pytest.raises(NewsletterError, match="status must be one of"):
        console.export_filtered(store, io.StringIO(), state="x")


def test_search_finds_address_or_name_in_any_case(store: Store) -> None:
    store.add_subscriber("Minji.Kim@Example.org", "김민지", "ko")
    store.add_subscriber("reader@xn--3e0b707e.kr", "Seojun Lee", "en")
    store.add_subscriber("percent@example.org", "100% reader", "en")
    store.add_subscriber("under_score@example.org", "Élodie", "en")

    def emails(query: str) -> list[str]:
        return [s.email for s in console.find_subscribers(store, query=query).rows]

    assert emails("MINJI.KIM@EXAMPLE") == ["Minji.Kim@Example.org"]
    assert emails("민지") == ["Minji.Kim@Example.org"]
    assert emails("seojun") == ["reader@xn--3e0b707e.kr"]
    # The domain as typed in Korean finds its stored IDNA form.
    assert emails("@한국.kr") == ["reader@xn--3e0b707e.kr"]
    # LIKE's own characters are only themselves.
    assert emails("%") == ["percent@example.org"]
    assert emails("_") == ["under_score@example.org"]
    assert emails("Élodie") == ["under_score@example.org"]
    assert emails("  minji  ") == ["Minji.Kim@Example.org"]
    assert emails("nobody") == []
    found = console.find_subscribers(store, query="example", lang="en")
    assert (found.total, found.query, found.lang) == (2, "example", "en")


def _walk(store: Store, **search: Any) -> tuple[list[int], int]:
    """Every page of a search, in turn: the ids seen, and how many pages."""
    ids: list[int] = []
    after, pages = None, 0
    while True:
        page = console.find_subscribers(store, after=after, limit=500, **search)
        pages += 1
        ids.extend(s.id for s in page.rows)
        assert len(page.rows) <= 500
        if page.next_after is None:
            return ids, pages
        assert page.next_after == page.rows[-1].id
        after = page.next_after


def test_keyset_pages_cover_100000_subscribers_once(big: Store) -> None:
    ids, pages = _walk(big)
    assert ids == sorted(set(ids)) and len(ids) == 100_000 and pages == 200
    first = console.find_subscribers(big)
    assert (first.total, len(first.rows), first.next_after) == (100_000, 50, first.rows[-1].id)
    last = console.find_subscribers(big, after=ids[-51])
    assert (len(last.rows), last.next_after, last.total) == (50, None, 100_000)
    left, _ = _walk(big, state="unsubscribed", lang="en")
    assert len(left) == console.find_subscribers(big, state="unsubscribed", lang="en").total
    assert len(left) == 1_000  # one of each hundred: unsubscribed, and in English


def test_the_deepest_page_reads_as_little_as_the_first(big: Store) -> None:
    """Pages start from an id (no OFFSET), read from the primary key or the (language,
    state, id) index, so the last page of 100,000 costs what the first does."""
    with Statements(big) as watched:
        console.find_subscribers(big, after=99_950)
    # SQLite's dialect always writes LIMIT ? OFFSET ?: the offset must be 0.
    page_sql, page_parameters = watched.seen[0], watched.parameters[0]
    assert page_sql.rstrip().endswith("LIMIT ? OFFSET ?") and page_parameters[-2:] == (51, 0)
    assert "subscribers.id > ?" in page_sql and 99_950 in page_parameters
    s = subscribers.c
    page = sa.select(subscribers).where(s.id > 99_950).order_by(s.id).limit(51)
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in _plan(big, page)
    filtered = page.where(s.lang == "en", s.status == "unsubscribed")
    assert "ix_subscribers_lang_status (lang=? AND status=? AND id>?)" in _plan(big, filtered)
    counted = sa.select(sa.func.count()).where(s.lang == "en", s.status == "active")
    assert "COVERING INDEX ix_subscribers_lang_status" in _plan(big, counted)


def test_search_pages_through_100000(big: Store) -> None:
    ids, _ = _walk(big, query="MINJI", state="active")
    found = console.find_subscribers(big, query="MINJI", state="active")
    assert len(ids) == found.total > 0
    assert all("Minji" in s.name for s in found.rows)
    rare = console.find_subscribers(big, query="reader099999@")
    assert ([s.email for s in rare.rows], rare.total) == (["reader099999@example49.org"], 1)


def test_export_writes_the_search_in_batches(store: Store) -> None:
    fill_list(store, 2_500)
    wanted = console.find_subscribers(store, query="seojun", lang="ko", limit=500)
    out = io.StringIO()
    with Statements(store) as watched:
        written = console.export_filtered(store, out, query="seojun", lang="ko")
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["email", "name", "lang", "status"]
    assert written == len(rows) - 1 == wanted.total
    assert [r[0] for r in rows[1:]][: len(wanted.rows)] == [s.email for s in wanted.rows]
    assert {r[2] for r in rows[1:]} == {"ko"}
    # The list streamed 1,000 at a time; the same columns as `subscribers export`.
    assert sum("LIMIT" in s.upper() for s in watched.seen) >= 1
    whole = io.StringIO()
    assert export_csv(store, whole) == 2_500
    assert whole.getvalue().splitlines()[0] == out.getvalue().splitlines()[0]


def test_export_streams_a_page_at_a_time(store: Store) -> None:
    fill_list(store, 2_500)
    with Statements(store) as watched:
        assert console.export_filtered(store, io.StringIO()) == 2_500
    assert sum("LIMIT" in s.upper() for s in watched.seen) == 4  # 3 pages and the empty one


def test_search_and_pages_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    pg = open_store(postgres_url, tmp_path)
    try:
        fill_list(pg, 20_000)
        pg.add_subscriber("elodie@example.org", "ÉLODIE Martin", "en")
        ids, pages = _walk(pg)
        assert ids == sorted(set(ids)) and len(ids) == 20_001 and pages == 41
        # PostgreSQL folds every letter's case, not only ASCII's.
        found = console.find_subscribers(pg, query="élodie martin")
        assert [s.email for s in found.rows] == ["elodie@example.org"]
        minji, _ = _walk(pg, query="MINJI", state="active", lang="en")
        assert (
            len(minji)
            == console.find_subscribers(pg, query="minji", state="active", lang="en").total
        )
        assert len(minji) > 0
        assert console.find_subscribers(pg, query="%").total == 0
        out = io.StringIO()
        assert console.export_filtered(pg, out, state="bounced") == 400
        assert pg.count_by_lang() == {"en": 4001, "ko": 16_000}
    finally:
        pg.close()


# --- a send as it goes ----------------------------------------------------------------------


def _sending_issue(store: Store, subscribers_count: int, week: str = "2024-W21") -> int:
    """An issue being sent to a list of ``subscribers_count`` (90% of them active)."""
    if subscribers_count:
        fill_list(store, subscribers_count)
    issue = store.ensure_issue(week, f"Issue {week}")
    store.transition(issue.id, ["draft"], "sending")
    store.fan_out(issue.id)
    return issue.id


def _send(store: Store, issue_id: int, count: int, start: dt.datetime, per_second: float) -> None:
    """The issue's next ``count`` queued deliveries handed over, ``per_second`` from ``start``."""
    d = deliveries.c
    with store.engine.begin() as conn:
        ids = conn.execute(
            sa.select(d.id)
            .where(d.issue_id == issue_id, d.status == "queued")
            .order_by(d.id)
            .limit(count)
        ).scalars()
        conn.execute(
            deliveries.update()
            .where(d.id == sa.bindparam("b_id"))
            .values(status="sent", sent_at=sa.bindparam("b_at")),
            [
                {"b_id": i, "b_at": start + dt.timedelta(seconds=n / per_second)}
                for n, i in enumerate(ids)
            ],
        )


def test_live_counts_and_pace_as_a_send_goes(store: Store) -> None:
    issue_id = _sending_issue(store, 1_000)
    start = console.live(store, issue_id, T0)
    assert (start.total, start.queued, start.sent, start.rate) == (900, 900, 0, 0.0)
    assert (start.seconds_left, start.done, start.rates) == (None, False, None)

    _send(store, issue_id, 100, T0, per_second=10)
    early = console.live(store, issue_id, T0 + dt.timedelta(seconds=10))
    # In the send's first minute the pace is over the time since its first message.
    assert (early.sent, early.queued, early.rate) == (100, 800, pytest.approx(10.0))
    assert early.seconds_left == pytest.approx(80.0)

    _send(store, issue_id, 600, T0 + dt.timedelta(seconds=10), per_second=10)
    steady = console.live(store, issue_id, T0 + dt.timedelta(seconds=70))
    assert (steady.sent, steady.waiting, steady.rate) == (700, 200, pytest.approx(10.0))
    assert steady.seconds_left == pytest.approx(20.0)

    # Nothing went out in the last minute (a pause): the time left is unknown.
    stalled = console.live(store, issue_id, T0 + dt.timedelta(minutes=5))
    assert (stalled.rate, stalled.seconds_left, stalled.done) == (0.0, None, False)

    _send(store, issue_id, 200, T0 + dt.timedelta(minutes=5), per_second=50)
    done = console.live(store, issue_id, T0 + dt.timedelta(minutes=5, seconds=4))
    assert (done.sent, done.waiting, done.seconds_left, done.done) == (900, 0, 0.0, True)
    assert done.rate == pytest.approx(50.0)


def test_live_json_is_plain_and_complete(store: Store) -> None:
    issue_id = _sending_issue(store, 200)
    _send(store, issue_id, 30, T0, per_second=3)
    found = console.live(store, issue_id, (T0 + dt.timedelta(seconds=10)).astimezone(SEOUL))
    data = json.loads(json.dumps(found.as_json()))
    assert data["issue"] == issue_id and data["week"] == "2024-W21"
    assert (data["status"], data["paused_by"], data["resume_at"]) == ("sending", None, None)
    assert (data["total"], data["sent"], data["queued"], data["sending"]) == (180, 30, 150, 0)
    assert (data["failed"], data["skipped"], data["bounced"], data["complained"]) == (0, 0, 0, 0)
    assert (data["rate"], data["seconds_left"], data["done"]) == (3.0, 50, False)
    assert (data["bounce_rate"], data["complaint_rate"]) == (0.0, 0.0)
    assert data["at"] == "2024-05-20T09:00:10+00:00"


def test_live_reads_indexes_only_in_three_statements(big: Store) -> None:
    issue_id = _sending_issue(big, 0, "2024-W30")
    _send(big, issue_id, 60_000, T0, per_second=100)
    with Statements(big) as watched:
        found = console.live(big, issue_id, T0 + dt.timedelta(seconds=600))
    assert (found.sent, found.queued, found.rate) == (60_000, 30_000, pytest.approx(100.0))
    assert len(watched.seen) == 3
    with big.engine.connect() as conn:
        plans = [
            " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in zip(watched.seen, watched.parameters, strict=True)
        ]
    assert any("COVERING INDEX ix_deliveries_issue_status" in p for p in plans)
    assert any("INDEX ix_deliveries_bounced" in p for p in plans)
    assert any("COVERING INDEX ix_deliveries_sent (issue_id=? AND sent_at>?)" in p for p in plans)
    assert not any("SCAN deliveries" in p for p in plans)


def test_an_unknown_issue_is_refused(store: Store) -> None:
    with pytest.raises(console.ConsoleError, match="no issue with id 42"):
        console.live(store, 42, T0)


# --- rates, issues, dashboard ----------------------------------------------------------------


def _bounce_some(store: Store, issue_id: int) -> None:
    """Of the issue's deliveries: 3 refused (hard) at once, 2 later reported soft and hard,
    and 1 complaint."""
    d = deliveries.c
    with store.engine.begin() as conn:
        rows = conn.execute(
            sa.select(d.id, d.subscriber_id).where(d.issue_id == issue_id).order_by(d.id)
        ).all()
        conn.execute(
            deliveries.update()
            .where(d.id.in_([r.id for r in rows[:3]]))
            .values(status="failed", error_kind="recipient", bounce_kind="hard")
        )
    for n, (kind, row) in enumerate(zip(("soft", "hard", "complaint"), rows[3:6], strict=True)):
        store.record_report(
            report_id=f"<report.{n}@mx.example>",
            source="mailbox",
            kind=kind,
            subscriber_id=row.subscriber_id,
            delivery_id=row.id,
        )


def test_rates_are_those_of_newsletter_status(store: Store) -> None:
    issue_id = _sending_issue(store, 1_000)
    _send(store, issue_id, 800, T0, per_second=100)
    _bounce_some(store, issue_id)
    found = console.live(store, issue_id, T0 + dt.timedelta(seconds=10))
    assert (found.failed, found.bounced, found.complained) == (3, 5, 1)
    expected = status(store).issue
    assert expected is not None and found.rates == expected.rates
    assert found.rates is not None
    assert found.rates.bounce == pytest.approx(5 / 800)
    assert found.rates.too_many_complaints and not found.rates.too_many_bounces
    board = console.dashboard(store, T0 + dt.timedelta(seconds=10))
    assert board.rates == found.rates and board.live == found


def test_issue_rows_count_every_issue_in_one_statement(store: Store) -> None:
    first = _sending_issue(store, 300, "2024-W20")
    _send(store, first, 270, T0, per_second=100)
    _bounce_some(store, first)
    second = _sending_issue(store, 0, "2024-W21")
    _send(store, second, 100, T0, per_second=100)
    draft = store.ensure_issue("2024-W22", "Next")
    store.transition(second, ["sending"], "paused", paused_by="outage")
    with Statements(store) as watched:
        rows = console.issue_rows(store)
    assert len(watched.seen) == 2  # the issues, and every issue's counts at once
    assert [r.week for r in rows] == ["2024-W22", "2024-W21", "2024-W20"]
    assert rows[0].issue.id == draft.id and rows[0].total == 0 and rows[0].rates is None
    assert (rows[1].status, rows[1].paused_by) == ("paused", "outage")
    # The first issue's hard bounce and complaint left the list: 268 were still active.
    assert rows[1].counts == {"queued": 168, "sending": 0, "sent": 100, "failed": 0, "skipped": 0}
    assert (rows[2].counts["sent"], rows[2].counts["failed"]) == (267, 3)
    assert (rows[2].bounced, rows[2].complained) == (5, 1)
    assert rows[2].rates == status(store, "2024-W20").issue.rates  # type: ignore[union-attr]

    chart = console.issue_deliveries(store)
    assert [(c.week, c.sent, c.failed, c.bounced, c.complained) for c in chart] == [
        ("2024-W20", 267, 3, 5, 1),
        ("2024-W21", 100, 0, 0, 0),
    ]
    assert [c.week for c in console.issue_deliveries(store, limit=1)] == ["2024-W21"]


def test_dashboard_of_an_empty_database(store: Store) -> None:
    board = console.dashboard(store, T0)
    assert (board.issue, board.live, board.rates) == (None, None, None)
    assert board.subscribers == {"pending": 0, "active": 0, "unsubscribed": 0, "bounced": 0}
    assert board.languages == {"ko": 0, "en": 0}
    assert (board.writer_days, board.unmatched.count, board.at) == ([], 0, T0)


def test_dashboard_shows_the_latest_issue_the_list_and_the_writer(store: Store) -> None:
    issue_id = _sending_issue(store, 500)
    store.ensure_issue("2024-W01", "An older one")
    store.add_writer_usage(
        dt.date(2024, 5, 19), requests=12, failures=1, tokens_in=900, tokens_out=300
    )
    store.transition(issue_id, ["sending"], "paused", paused_by="operator", resume_at=T0)
    board = console.dashboard(store, T0)
    assert board.issue is not None and board.issue.week == "2024-W21"
    assert (board.issue.status, board.issue.paused_by, board.issue.resume_at) == (
        "paused",
        "operator",
        T0,
    )
    assert board.live is not None and board.live.queued == 450
    assert board.subscribers == {"pending": 15, "active": 450, "unsubscribed": 25, "bounced": 10}
    assert board.languages == {"ko": 400, "en": 100}
    assert [(d.day, d.requests, d.tokens_in) for d in board.writer_days] == [
        (dt.date(2024, 5, 19), 12, 900)
    ]


# --- reports -------------------------------------------------------------------------------


def test_recent_reports_say_who_what_and_what_was_done(store: Store) -> None:
    issue_id = _sending_issue(store, 100)
    _send(store, issue_id, 90, T0, per_second=100)
    _bounce_some(store, issue_id)
    store.record_unmatched(report_id="<u1@mx>", kind="hard", addresses=["a@x.org", "b@x.org"])
    store.record_unmatched(report_id="<u2@mx>", kind="complaint", addresses=[], diagnostic="?")
    found = console.recent_reports(store)
    assert [(r.kind, r.action, r.week, r.source) for r in found.acted] == [
        ("complaint", "unsubscribed (complaint)", "2024-W21", "mailbox"),
        ("hard", "bounced", "2024-W21", "mailbox"),
        ("soft", "soft bounce 1 of 3", "2024-W21", "mailbox"),
    ]
    first = store.get_subscriber(id=found.acted[0].subscriber_id)
    assert first is not None and found.acted[0].email == first.email
    assert [(u.report_id, u.addresses) for u in found.unmatched] == [
        ("<u2@mx>", ""),
        ("<u1@mx>", "a@x.org, b@x.org"),
    ]
    assert found.unmatched_total == 2
    assert len(console.recent_reports(store, limit=1).acted) == 1


# --- the list over time ----------------------------------------------------------------------


def _at(days_ago: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    """A time in Seoul, ``days_ago`` days before 2024-05-20."""
    day = dt.date(2024, 5, 20) - dt.timedelta(days=days_ago)
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=SEOUL).astimezone(dt.UTC)


def _subscriber(store: Store, email: str, status: str, **times: dt.datetime | None) -> None:
    sub, _ = store.add_subscriber(email, status=status)
    values = {"created_at": times.get("confirmed_at") or _at(30), "confirmed_at": None, **times}
    with store.engine.begin() as conn:
        conn.execute(subscribers.update().where(subscribers.c.id == sub.id).values(**values))


def test_subscribers_over_time_by_seoul_days(store: Store) -> None:
    _subscriber(store, "a@x.org", "active", confirmed_at=_at(5))
    _subscriber(store, "pending@x.org", "pending", created_at=_at(3))
    _subscriber(store, "c@x.org", "unsubscribed", confirmed_at=_at(10), unsubscribed_at=_at(2))
    _subscriber(store, "d@x.org", "bounced", confirmed_at=_at(4), status_at=_at(1))
    # Left, and came back yesterday: counted from the return.
    _subscriber(store, "e@x.org", "active", confirmed_at=_at(1), unsubscribed_at=_at(15))
    # Imported active by release 0.1, without a confirmation time.
    _subscriber(store, "f@x.org", "active", created_at=_at(6))
    # At 00:30 in Seoul today, which is yesterday in UTC.
    _subscriber(store, "g@x.org", "active", confirmed_at=_at(0, 0, 30))
    # Later than now: not yet.
    _subscriber(store, "h@x.org", "active", confirmed_at=_at(0, 23))
    now = _at(0, 15).astimezone(SEOUL)
    points = console.subscribers_over_time(store, now, days=7)
    assert [day for day, _ in points] == [dt.date(2024, 5, 14 + i) for i in range(7)]
    assert [count for _, count in points] == [2, 3, 4, 4, 3, 3, 4]
    weekly = console.subscribers_over_time(store, now, days=14, step="week")
    # Weeks from Monday: 6 May, 13 May, 20 May.
    assert weekly == [
        (dt.date(2024, 5, 6), 1),
        (dt.date(2024, 5, 13), 3),
        (dt.date(2024, 5, 20), 4),
    ]
    with pytest.raises(NewsletterError, match="step must be one of day, week"):
        console.subscribers_over_time(store, now, step="month")


def test_subscribers_over_time_reads_100000_in_one_statement(big: Store) -> None:
    with Statements(big) as watched:
        points = console.subscribers_over_time(big, T0, days=730, step="week")
    assert len(watched.seen) == 1
    assert points[-1][1] == big.count_subscribers()["active"] == 90_000
    assert all(b >= a for (_, a), (_, b) in itertools.pairwise(points))  # growing


def test_subscribers_over_time_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    pg = open_store(postgres_url, tmp_path)
    try:
        _subscriber(pg, "a@x.org", "active", confirmed_at=_at(5))
        _subscriber(pg, "c@x.org", "unsubscribed", confirmed_at=_at(10), unsubscribed_at=_at(2))
        _subscriber(pg, "g@x.org", "active", confirmed_at=_at(0, 0, 30))
        points = console.subscribers_over_time(pg, _at(0, 15).astimezone(SEOUL), days=7)
        assert [count for _, count in points] == [1, 2, 2, 2, 1, 1, 2]
        issue_id = _sending_issue(pg, 100)
        _send(pg, issue_id, 60, T0, per_second=6)
        _bounce_some(pg, issue_id)
        found = console.live(pg, issue_id, T0 + dt.timedelta(seconds=10))
        assert (found.sent, found.bounced, found.complained, found.rate) == (57, 5, 1, 6.0)
        assert console.issue_rows(pg)[0].counts["failed"] == 3
    finally:
        pg.close()
