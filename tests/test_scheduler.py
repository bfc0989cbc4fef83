"""The scheduler: fire times in Seoul on a UTC host, retries, catch-up after downtime,
one scheduler per database, draft mode, and a stop in the middle of a send.

The clock is injected (``JobContext.clock`` and ``tick(now)``); APScheduler's own timer
uses the real clock, so downtime is simulated by moving a stored job's next run time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import mailbox
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import SEEDS, FaultySmtpHandler, free_port, start_newsletter, wait_for_http

from newsletter.cli import main
from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError
from newsletter.service.processes import serve, tick
from newsletter.service.scheduler import (
    DAILY,
    WEEKLY,
    JobContext,
    daily_date,
    daily_trigger,
    due_fire_time,
    ensure_jobs,
    new_scheduler,
    restore_retries,
    run_job,
    weekly_trigger,
)
from newsletter.service.scheduler_lock import AlreadyRunning, scheduler_lock, sqlite_file
from newsletter.store import Store, open_store

SEOUL = dt.timezone(dt.timedelta(hours=9))
MONDAY_0830 = dt.datetime(2024, 8, 5, 8, 30, tzinfo=SEOUL)  # after the seeds' last week, 2024-W31


@pytest.fixture(autouse=True)
def utc_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in UTC, as servers often do: nothing may depend on it."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _cfg(folder: Path, text: str = "") -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(f'source = "{SEEDS}"\n{text}', encoding="utf-8")
    return load_config(path, env={"NEWSLETTER_SECRET_KEY": "test-secret-key-of-at-least-32-bytes"})


def _ctx(cfg: Config, store: Store, now: dt.datetime | None = None) -> JobContext:
    clock: Callable[[], dt.datetime] = (lambda: now) if now else (lambda: dt.datetime.now(dt.UTC))
    return JobContext(
        cfg, store, b"test-secret-key-of-at-least-32-bytes", asyncio.Event(), clock=clock
    )


def _outbox(cfg: Config) -> list[str]:
    """The To: of every message in the Maildir outbox."""
    if not cfg.outbox_path.exists():
        return []
    box = mailbox.Maildir(str(cfg.outbox_path), create=False)
    return sorted(str(message["To"]) for message in box)


def _subscribe(store: Store, count: int) -> list[str]:
    addresses = [f"reader{i:02d}@example.org" for i in range(count)]
    for address in addresses:
        store.add_subscriber(address)
    return addresses


# --- fire times ----------------------------------------------------------------------------


def test_triggers_fire_in_seoul_by_day_name_on_a_utc_host(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert time.localtime().tm_gmtoff == 0
    weekly = weekly_trigger(cfg)
    after = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
    fire = weekly.get_next_fire_time(None, after)
    # Monday 08:00 in Seoul is Sunday 23:00 in UTC: a host-time trigger would be a day late.
    assert fire == dt.datetime(2024, 8, 5, 8, 0, tzinfo=SEOUL)
    assert fire.astimezone(dt.UTC).weekday() == 6
    daily = daily_trigger(cfg)
    fires = [daily.get_next_fire_time(None, dt.datetime(2024, 5, 18, 0, 1, tzinfo=SEOUL))]
    for _ in range(2):
        fires.append(daily.get_next_fire_time(fires[-1], fires[-1] + dt.timedelta(seconds=1)))
    # mon-sat: Saturday, then Monday (no Sunday), then Tuesday.
    assert [f.astimezone(SEOUL).strftime("%a %H:%M") for f in fires] == [
        "Sat 09:00",
        "Mon 09:00",
        "Tue 09:00",
    ]


def test_the_daily_job_picks_the_seoul_date_around_midnight(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        '[schedule]\ndaily_at = "00:10"\ndaily_days = "mon-sun"\ndaily_deadline = "06:00"\n',
    )
    # 00:15 on the 20th in Seoul is still the 19th in UTC (and on this host).
    now = dt.datetime(2024, 5, 20, 0, 15, tzinfo=SEOUL)
    assert now.astimezone(dt.UTC).date() == dt.date(2024, 5, 19)
    fire = due_fire_time(cfg, DAILY, now)
    assert fire is not None and daily_date(cfg, fire) == dt.date(2024, 5, 20)
    # One minute before midnight the 19th's run is past its 06:00 deadline: nothing due.
    assert due_fire_time(cfg, DAILY, dt.datetime(2024, 5, 19, 23, 59, tzinfo=SEOUL)) is None

    store = open_store(cfg.database_url, cfg.base_dir)
    outcome = asyncio.run(run_job(_ctx(cfg, store), DAILY, now))
    assert outcome is not None and outcome.status == "done"
    assert outcome.detail.startswith("2024-05-20:")
    store.close()

    default = _cfg(tmp_path / "default")
    monday_0900 = dt.datetime(2024, 5, 20, 9, 0, tzinfo=SEOUL)
    fire = due_fire_time(default, DAILY, monday_0900)
    assert fire == monday_0900 and daily_date(default, fire) == dt.date(2024, 5, 20)
    # Before 09:00 on Monday: Saturday's run is long past its deadline, Sunday has none.
    assert due_fire_time(default, DAILY, monday_0900 - dt.timedelta(minutes=1)) is None


def test_a_missing_digest_is_retried_until_the_deadline_then_skipped(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, '[schedule]\nretry_every = "2h"\n')
    store = open_store(cfg.database_url, cfg.base_dir)
    ctx = _ctx(cfg, store)
    now = dt.datetime(2024, 5, 21, 9, 0, tzinfo=SEOUL)  # a Tuesday with no digest in seeds/
    tries = []
    while True:
        outcome = asyncio.run(run_job(ctx, DAILY, now))
        assert outcome is not None
        tries.append((now.astimezone(SEOUL).strftime("%H:%M"), outcome.status))
        if outcome.retry_at is None:
            break
        now = outcome.retry_at
    assert tries == [
        ("09:00", "waiting"),
        ("11:00", "waiting"),
        ("13:00", "waiting"),
        ("15:00", "waiting"),
        ("17:00", "waiting"),
        ("19:00", "waiting"),
        ("21:00", "skipped"),
    ]
    assert asyncio.run(run_job(ctx, DAILY, now + dt.timedelta(minutes=5))) is None
    (run,) = store.list_job_runs(DAILY)
    assert (run.status, run.attempts) == ("skipped", 7)
    store.close()


def test_a_failing_job_is_recorded_and_never_raises(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 'public_dir = "config.toml/not-a-folder"\n')
    store = open_store(cfg.database_url, cfg.base_dir)
    outcome = asyncio.run(
        run_job(_ctx(cfg, store), DAILY, dt.datetime(2024, 5, 20, 9, 0, tzinfo=SEOUL))
    )
    assert outcome is not None and outcome.status == "waiting"
    assert "Error" in outcome.detail
    store.close()


# --- downtime and restarts --------------------------------------------------------------------


def _service(cfg: Config, now: dt.datetime, until: Callable[[], bool], timeout: float = 30) -> None:
    """One life of the service (scheduler only, no web), with its clock at ``now``, until
    ``until()`` holds."""

    async def life() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, host="", port=0, clock=lambda: now, web=False, stop=stop, signals=False)
        )
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(life())


def test_a_monday_send_missed_during_downtime_runs_exactly_once_after_restart(
    tmp_path: Path,
) -> None:
    """No job store survives a stop: the missed run is found from the triggers and
    ``job_runs`` alone, and runs once however often the service starts again."""
    cfg = _cfg(tmp_path)
    store = open_store(cfg.database_url, cfg.base_dir)
    readers = _subscribe(store, 3)

    def issue_status() -> str | None:
        row = store.get_issue("2024-W31")
        return None if row is None else str(row.status)

    # Sunday evening: the service runs, nothing is due.
    sunday = dt.datetime(2024, 8, 4, 20, 0, tzinfo=SEOUL)
    started = time.monotonic()
    _service(cfg, sunday, lambda: time.monotonic() - started > 0.5)
    assert _outbox(cfg) == []
    assert not sa.inspect(store.engine).has_table("apscheduler_jobs")

    # Down across Monday 08:00; back on Monday at 09:00: the missed send runs once.
    monday = dt.datetime(2024, 8, 5, 9, 0, tzinfo=SEOUL)
    _service(cfg, monday, lambda: issue_status() == "sent")
    assert issue_status() == "sent"
    assert _outbox(cfg) == readers

    # Another restart on the same morning, and a tick: nothing more.
    again = time.monotonic()
    _service(cfg, monday, lambda: time.monotonic() - again > 1.0)
    assert asyncio.run(tick(cfg, monday)) == {DAILY: None, WEEKLY: None}
    assert _outbox(cfg) == readers
    assert [r.status for r in store.list_job_runs(WEEKLY)] == ["done"]
    store.close()


def test_a_daily_retry_comes_back_from_job_runs_after_a_restart(tmp_path: Path) -> None:
    """The retry of a missing digest is not a stored job: a restart schedules it again
    from the ``waiting`` run's ``next_try_at``, and runs it at once when it is due."""
    empty = tmp_path / "digests"
    empty.mkdir()
    cfg = _cfg(tmp_path).replace(source=str(empty))
    store = open_store(cfg.database_url, cfg.base_dir)
    morning = dt.datetime(2024, 8, 6, 9, 0, tzinfo=SEOUL)
    outcome = asyncio.run(run_job(_ctx(cfg, store, morning), DAILY, morning))
    assert outcome is not None and outcome.status == "waiting"
    assert outcome.retry_at == morning + dt.timedelta(minutes=30)

    async def restored(now: dt.datetime) -> list[dt.datetime]:
        scheduler = new_scheduler(cfg)
        scheduler.start(paused=True)
        ensure_jobs(scheduler, cfg)
        times = restore_retries(scheduler, cfg, store, now)
        job = scheduler.get_job("daily-retry")
        assert (job is None) == (not times)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
        return times

    # Restarted before the retry time: the retry is scheduled for it.
    assert asyncio.run(restored(morning + dt.timedelta(minutes=10))) == [outcome.retry_at]
    # Restarted after it: nothing to schedule; the start-up catch-up claims it now.
    later = morning + dt.timedelta(minutes=45)
    assert asyncio.run(restored(later)) == []
    (empty / "2024-08-06.md").write_text(
        (SEEDS / sorted(p.name for p in SEEDS.iterdir())[-1]).read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    again = asyncio.run(run_job(_ctx(cfg, store, later), DAILY, later))
    assert again is not None and again.status in ("done", "waiting")
    (row,) = store.list_job_runs(DAILY)
    assert row.attempts == 2
    # ...and once only.
    assert asyncio.run(run_job(_ctx(cfg, store, later), DAILY, later)) is None
    store.close()


def test_the_jobs_follow_the_settings_at_each_start(tmp_path: Path) -> None:
    """Jobs are not stored: each start schedules them from the settings as they are."""
    cfg = _cfg(tmp_path)

    async def trigger_of(c: Config) -> str:
        scheduler = new_scheduler(c)
        scheduler.start(paused=True)
        ensure_jobs(scheduler, c)
        result = str(scheduler.get_job(WEEKLY).trigger)
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
        return result

    assert "day_of_week='mon'" in asyncio.run(trigger_of(cfg))
    changed = _cfg(tmp_path, '[schedule]\nweekly_at = "tue 07:30"\n')
    trigger = asyncio.run(trigger_of(changed))
    assert "day_of_week='tue'" in trigger and "hour='7'" in trigger


# --- one scheduler per database ---------------------------------------------------------------


def test_the_scheduler_lock_is_exclusive(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    url, base = cfg.database_url, cfg.base_dir
    with (
        scheduler_lock(url, base),
        pytest.raises(AlreadyRunning, match="only one may run per database"),
        scheduler_lock(url, base),
    ):
        pass
    with scheduler_lock(url, base):  # released with the first holder
        pass


def test_the_postgres_scheduler_lock_is_exclusive(postgres_url: str, tmp_path: Path) -> None:
    with (
        scheduler_lock(postgres_url, tmp_path),
        pytest.raises(AlreadyRunning, match="newsletter worker"),
        scheduler_lock(postgres_url, tmp_path),
    ):
        pass
    with scheduler_lock(postgres_url, tmp_path):
        pass


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///newsletter.db",
        "sqlite:///data/news.db?timeout=5",
        "sqlite:///{tmp}/abs.db",
        "sqlite+pysqlite:///{tmp}/driver.db",
        "sqlite:///{tmp}/with%20space.db",
        "sqlite:///:memory:",
        "sqlite://",
        "sqlite:///",
    ],
)
def test_the_scheduler_lock_sits_beside_the_file_the_store_opens(tmp_path: Path, url: str) -> None:
    """The lock finds the SQLite file without SQLAlchemy, where the store opens it."""
    url = url.format(tmp=tmp_path)
    (tmp_path / "data").mkdir()
    store = open_store(url, tmp_path, migrate=False)
    try:
        assert sqlite_file(url, tmp_path) == (store.engine.url.database or "").replace(
            ":memory:", ""
        )
    finally:
        store.close()
    assert sqlite_file("postgresql+psycopg://news@db/news", tmp_path) is None


def test_a_scheduler_lock_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing/news.db"
    refused = pytest.raises(NewsletterError, match=r"cannot open the scheduler lock .*missing")
    with refused, scheduler_lock(url, tmp_path):
        pass


def _write_config(folder: Path, text: str = "") -> int:
    port = free_port()
    (folder / "config.toml").write_text(
        f'source = "{SEEDS}"\nbase_url = "http://127.0.0.1:{port}/"\n[web]\nport = {port}\n{text}',
        encoding="utf-8",
    )
    return port


def _stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def test_a_second_run_on_the_same_database_exits_with_a_clear_message(tmp_path: Path) -> None:
    port = _write_config(tmp_path)
    first = start_newsletter(tmp_path, "run", log="first.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/feed.atom", first)
        second = start_newsletter(tmp_path, "run", "--port", str(free_port()), log="second.log")
        assert second.wait(timeout=60) == 1
        message = (tmp_path / "second.log").read_text(encoding="utf-8")
        assert "error: another `newsletter run`" in message
        assert "only one may run per database" in message
        assert "newsletter worker" in message
        # Workers may still help with sending beside the one scheduler.
        worker = start_newsletter(tmp_path, "worker", "--once", log="worker.log")
        assert worker.wait(timeout=60) == 0
        assert first.poll() is None
    finally:
        assert _stop(first) == 0
    store = open_store(f"sqlite:///{tmp_path / 'newsletter.db'}")
    runs = store.list_job_runs()
    assert len({(r.job, r.fire_time) for r in runs}) == len(runs)
    store.close()


# --- draft mode ---------------------------------------------------------------------------------


def test_draft_mode_sends_only_the_test_copy_until_approved(
    smtp_server: tuple[FaultySmtpHandler, int], tmp_path: Path
) -> None:
    handler, port = smtp_server
    text = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\n'
        '[email]\neditor_email = "editor@example.org"\n'
        '[schedule]\nweekly_mode = "draft"\n'
    )
    cfg = _cfg(tmp_path, text)
    store = open_store(cfg.database_url, cfg.base_dir)
    readers = _subscribe(store, 3)

    outcomes = asyncio.run(tick(cfg, MONDAY_0830))
    weekly = outcomes[WEEKLY]
    assert weekly is not None and "newsletter send --week 2024-W31" in weekly.detail
    assert handler.counts() == {"editor@example.org": 1}
    assert store.get_issue("2024-W31").status == "draft"
    assert (cfg.public_path / "issues" / "2024-W31.html").is_file()

    # Later ticks wait for the editor.
    asyncio.run(tick(cfg, MONDAY_0830 + dt.timedelta(hours=2)))
    assert handler.counts() == {"editor@example.org": 1}

    result = CliRunner().invoke(
        main,
        [
            "send",
            "--week",
            "2024-W31",
            "--config",
            str(tmp_path / "config.toml"),
            "--allow-insecure-links",
        ],
        env={"NEWSLETTER_SECRET_KEY": "test-secret-key-of-at-least-32-bytes"},
    )
    assert result.exit_code == 0, result.output
    assert handler.counts() == {"editor@example.org": 1, **dict.fromkeys(readers, 1)}
    assert store.get_issue("2024-W31").status == "sent"
    store.close()


# --- a stop in the middle of a send -------------------------------------------------------------


def test_sigterm_during_a_send_leaves_no_duplicate_on_resume(
    smtp_server: tuple[FaultySmtpHandler, int], tmp_path: Path
) -> None:
    handler, smtp_port = smtp_server
    handler.delay = 0.05
    _write_config(
        tmp_path,
        f'\n[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntls = "none"\nconcurrency = 2\n',
    )
    store = open_store(f"sqlite:///{tmp_path / 'newsletter.db'}")
    readers = _subscribe(store, 40)

    insecure = "--allow-insecure-links"  # http base_url, on loopback
    ticking = start_newsletter(
        tmp_path, "tick", "--now", MONDAY_0830.isoformat(), insecure, log="tick.log"
    )
    deadline = time.monotonic() + 60
    while sum(handler.counts().values()) < 5 and time.monotonic() < deadline:
        assert ticking.poll() is None, (tmp_path / "tick.log").read_text(encoding="utf-8")
        time.sleep(0.02)
    assert _stop(ticking) == 0, (tmp_path / "tick.log").read_text(encoding="utf-8")
    sent_before = sum(handler.counts().values())
    assert 5 <= sent_before < len(readers)
    assert store.get_issue("2024-W31").status == "sending"

    # The next start resumes the send.
    service = start_newsletter(tmp_path, "run", insecure, log="run.log")
    try:
        deadline = time.monotonic() + 60
        while store.get_issue("2024-W31").status != "sent" and time.monotonic() < deadline:
            assert service.poll() is None, (tmp_path / "run.log").read_text(encoding="utf-8")
            time.sleep(0.1)
    finally:
        assert _stop(service) == 0
    assert handler.counts() == dict.fromkeys(readers, 1)
    assert "resuming the send of 2024-W31" in (tmp_path / "run.log").read_text(encoding="utf-8")
    store.close()


def test_tick_at_the_same_moment_twice_does_nothing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    store = open_store(cfg.database_url, cfg.base_dir)
    readers = _subscribe(store, 2)
    first = asyncio.run(tick(cfg, MONDAY_0830))
    assert first[DAILY] is None  # Saturday's daily run is past its deadline
    assert first[WEEKLY] is not None and first[WEEKLY].status == "done"
    assert _outbox(cfg) == readers
    assert asyncio.run(tick(cfg, MONDAY_0830)) == {DAILY: None, WEEKLY: None}
    assert _outbox(cfg) == readers
    # Past the weekly grace the run is not made up any more.
    late = _cfg(tmp_path / "late")
    assert asyncio.run(tick(late, MONDAY_0830 + dt.timedelta(hours=13)))[WEEKLY] is None
    assert os.environ["TZ"] == "UTC"
    store.close()


def test_the_feed_answers_before_the_web_copies_are_written_and_they_all_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start answers the feed as soon as it is written; the front page, the issues
    feed and the weeks' web copies are written after, in the background, every finished
    week in both languages."""
    import threading

    import httpx

    from newsletter.archive.sources import local_catalog
    from newsletter.publish import outputs
    from newsletter.publish.render import LANGS, web_copy_name
    from newsletter.select import IsoWeek

    cfg = _cfg(tmp_path)
    release = threading.Event()
    real = outputs.publish_weeks

    def held(*args: object, **kwargs: object) -> object:
        release.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(outputs, "publish_weeks", held)
    port = free_port()
    sunday = dt.datetime(2024, 8, 4, 20, 0, tzinfo=SEOUL)
    issues = cfg.public_path / "issues"
    weeks = sorted({IsoWeek.of(d) for d in local_catalog(cfg).dates()})
    expected = {
        web_copy_name(week, lang, cfg.default_lang)
        for week in weeks
        if week.sunday < sunday.date()
        for lang in LANGS
    }
    assert len(expected) >= 4

    async def life() -> tuple[int, list[str], set[str]]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, host="127.0.0.1", port=port, clock=lambda: sunday, stop=stop, signals=False)
        )
        status = 0
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while not status and time.monotonic() < deadline and not task.done():
                try:
                    status = (await client.get(f"http://127.0.0.1:{port}/feed.atom")).status_code
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
        before = sorted(p.name for p in issues.glob("*.html")) if issues.is_dir() else []
        release.set()
        deadline = time.monotonic() + 30
        # The front page and the issues feed come first, then the web copies they link to
        # (answered 503 until written).
        after: set[str] = set()
        while time.monotonic() < deadline and not expected <= after:
            await asyncio.sleep(0.05)
            after = {p.name for p in issues.glob("*.html")}
        stop.set()
        await task
        return status, before, after

    status, before, after = asyncio.run(life())
    assert status == 200
    assert before == []
    assert after == expected
    feed = (cfg.public_path / "issues.atom").read_text(encoding="utf-8")
    assert feed.count("<entry>") == len(expected) // len(LANGS)
    assert all(f"{cfg.site_url}issues/{name}" in feed for name in expected if ".en." not in name)


def test_a_start_with_feeds_answers_them_at_once_and_brings_them_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feeds written by an earlier life answer before the archive is scanned; a digest
    added meanwhile reaches them right after."""
    import shutil
    import threading

    import httpx

    from newsletter.archive import sources
    from newsletter.archive.sources import local_catalog
    from newsletter.publish import outputs

    source = tmp_path / "digests"
    shutil.copytree(SEEDS, source)
    _cfg(tmp_path)
    cfg = load_config(
        tmp_path / "config.toml",
        env={"NEWSLETTER_SECRET_KEY": "test-secret-key-of-at-least-32-bytes"},
        overrides={"source": str(source)},
    )
    sunday = dt.datetime(2024, 8, 4, 20, 0, tzinfo=SEOUL)
    outputs.refresh_feeds(cfg, local_catalog(cfg))
    (source / "2024-08-04.md").write_text(
        "## Daily Papers (2024-08-04)\n\n"
        "### [A new paper](https://arxiv.org/abs/2408.99999)\nVote: 7\n- A point.\n",
        encoding="utf-8",
    )
    release = threading.Event()
    real = sources.local_catalog

    def held(*args: object, **kwargs: object) -> object:
        release.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sources, "local_catalog", held)
    port = free_port()
    feed = cfg.public_path / "feed.atom"

    async def life() -> tuple[bytes, bytes]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, host="127.0.0.1", port=port, clock=lambda: sunday, stop=stop, signals=False)
        )
        first = b""
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 30
            while not first and time.monotonic() < deadline and not task.done():
                try:
                    answer = await client.get(f"http://127.0.0.1:{port}/feed.atom")
                    first = answer.content if answer.status_code == 200 else b""
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
            release.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and b"2408.99999" not in feed.read_bytes():
                await asyncio.sleep(0.05)
            later = (await client.get(f"http://127.0.0.1:{port}/feed.atom")).content
        stop.set()
        await task
        return first, later

    first, later = asyncio.run(life())
    assert first and b"2408.99999" not in first
    assert b"2408.99999" in later


def test_a_slow_database_holds_up_the_subscription_pages_not_the_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feeds answer while the database is still being opened (a slow disk, a long
    migration); a subscription page waits for it, and is answered once it is open."""
    import threading

    import httpx

    from newsletter import store as stores
    from newsletter.archive.sources import local_catalog
    from newsletter.publish import outputs

    cfg = _cfg(tmp_path)
    outputs.refresh_feeds(cfg, local_catalog(cfg))
    release = threading.Event()
    real = stores.open_store

    def slow(*args: object, **kwargs: object) -> Store:
        release.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stores, "open_store", slow)
    port = free_port()
    sunday = dt.datetime(2024, 8, 4, 20, 0, tzinfo=SEOUL)

    async def life() -> tuple[int, bool, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, host="127.0.0.1", port=port, clock=lambda: sunday, stop=stop, signals=False)
        )
        feed = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while not feed and time.monotonic() < deadline and not task.done():
                try:
                    feed = (await client.get("/feed.atom")).status_code
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
            form = asyncio.create_task(client.get("/subscribe"))
            await asyncio.sleep(0.3)
            waited = not form.done()
            release.set()
            answer = (await form).status_code
        stop.set()
        await task
        return feed, waited, answer

    assert asyncio.run(life()) == (200, True, 200)


def test_a_stop_while_starting_leaves_the_start_up_work_to_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the database is still being opened: the service stops as soon as it is
    open, without reading the archive or rendering anything first."""
    import threading

    import httpx

    from newsletter import store as stores
    from newsletter.archive import sources
    from newsletter.publish import outputs

    cfg = _cfg(tmp_path)
    outputs.refresh_feeds(cfg, sources.local_catalog(cfg))
    release = threading.Event()
    real = stores.open_store
    read: list[object] = []

    def slow(*args: object, **kwargs: object) -> Store:
        release.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stores, "open_store", slow)
    monkeypatch.setattr(sources, "local_catalog", lambda *args: read.append(args))
    port = free_port()

    async def life() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(
            serve(cfg, host="127.0.0.1", port=port, stop=stop, signals=False)
        )
        feed = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while not feed and time.monotonic() < deadline and not task.done():
                try:
                    feed = (await client.get("/feed.atom")).status_code
                except httpx.TransportError:
                    await asyncio.sleep(0.02)
        stop.set()
        release.set()
        await asyncio.wait_for(task, 30)
        return feed

    assert asyncio.run(life()) == 200
    assert read == []
