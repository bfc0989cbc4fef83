"""The service: when to load each day's digest and when to send the weekly issue.

Two jobs, both on cron triggers in ``timezone`` (never the host's):

- ``daily`` at ``schedule.daily_at`` on ``schedule.daily_days``: make sure that day's
  digest is in the archive (fetching it from a URL source), then rebuild the feeds and
  publish the web copy of every finished week. A day with no digest yet is retried
  every ``schedule.retry_every`` until ``schedule.daily_deadline``, then skipped.
- ``weekly`` at ``schedule.weekly_at``: the previous ISO week's issue, sent through the
  delivery ledger (``weekly_mode = "send"``), or rendered, published, mailed as a test
  copy to ``email.editor_email`` and left as a draft for ``newsletter send --week W``.

Every run of a job is recorded in the ``job_runs`` table under its fire time, and a job
runs only after claiming that row. ``newsletter run`` (APScheduler firing the jobs),
``newsletter tick`` (cron) and a restart's catch-up all go through :func:`run_job`, so a
fire time is never run twice, whichever process gets there first.

APScheduler 3.11 is the timer in ``newsletter run``; its traps are avoided on purpose:
day names rather than numbers, an explicit time zone on every trigger, hours of
``misfire_grace_time`` with ``coalesce`` and ``max_instances=1``, jobs persisted in the
same database and added only when missing (``replace_existing`` at start-up would drop a
run missed during downtime), and one scheduler per database, held by a lock.

Stored jobs name module-level coroutines (``newsletter.scheduler:daily_job``) and carry
no arguments. What a job needs (the settings with their environment and command-line
overrides, the open store, the stop event set by SIGTERM, the scheduler for retries)
exists only in the running process and mostly cannot be pickled, so ``newsletter run``
installs one :class:`JobContext` for the process before the scheduler starts. Storing a
config path instead would freeze a path into the database, lose the overrides, and still
not carry the stop event; :func:`run_job` itself takes the context as an argument, so
``tick`` and the tests never touch the process-wide one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from .config import Config, duration_seconds
from .delivery import deliver_issue, pid_alive, prepare_issue, send_test_copy, worker_id
from .errors import NewsletterError
from .feed import write_feeds
from .models import Archive
from .render import NoIssueError, build_issue, issue_weeks, publish_issue, web_copy_name
from .select import IsoWeek
from .sources import FetchOptions, ingest_day, load_local_archive
from .store import Store, open_store

log = logging.getLogger(__name__)

DAILY = "daily"
WEEKLY = "weekly"
DAILY_RETRY = "daily-retry"
JOBS = (DAILY, WEEKLY)
JOB_FUNCS = {
    DAILY: "newsletter.scheduler:daily_job",
    WEEKLY: "newsletter.scheduler:weekly_job",
}
# A weekly send missed by up to this much downtime still goes out when the service returns.
WEEKLY_GRACE = dt.timedelta(hours=12)
# How far back to look for a job's latest fire time: more than any grace period.
LOOKBACK = dt.timedelta(days=8)
# pg_advisory_lock key of the one scheduler per database (migrations use 7245001).
PG_LOCK_KEY = 7245002


class AlreadyRunning(NewsletterError):
    """Another ``newsletter run`` holds this database's scheduler lock."""


# --- triggers and fire times ------------------------------------------------------------------


def _clock(text: str) -> tuple[int, int]:
    hour, minute = text.split(":")
    return int(hour), int(minute)


def daily_trigger(cfg: Config) -> CronTrigger:
    hour, minute = _clock(cfg.schedule.daily_at)
    # Day names, never numbers: APScheduler's 0 is Monday, crontab's is Sunday.
    return CronTrigger(
        day_of_week=cfg.schedule.daily_days, hour=hour, minute=minute, timezone=cfg.tz
    )


def weekly_trigger(cfg: Config) -> CronTrigger:
    day, at = cfg.schedule.weekly_at.split()
    hour, minute = _clock(at)
    return CronTrigger(day_of_week=day, hour=hour, minute=minute, timezone=cfg.tz)


def trigger(cfg: Config, job: str) -> CronTrigger:
    return daily_trigger(cfg) if job == DAILY else weekly_trigger(cfg)


def daily_deadline(cfg: Config, fire: dt.datetime) -> dt.datetime:
    """When the daily run at ``fire`` gives up: ``daily_deadline`` on the same local day
    (the next day when the deadline is not after ``daily_at``)."""
    local = fire.astimezone(cfg.tz)
    hour, minute = _clock(cfg.schedule.daily_deadline)
    deadline = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if deadline <= local:
        deadline += dt.timedelta(days=1)
    return deadline


def grace(cfg: Config, job: str) -> dt.timedelta:
    """How late a run may still start: the daily job until its deadline, the weekly job
    for :data:`WEEKLY_GRACE`."""
    if job == WEEKLY:
        return WEEKLY_GRACE
    at_h, at_m = _clock(cfg.schedule.daily_at)
    end_h, end_m = _clock(cfg.schedule.daily_deadline)
    minutes = (end_h * 60 + end_m - at_h * 60 - at_m) % (24 * 60) or 24 * 60
    return dt.timedelta(minutes=minutes)


def latest_fire_time(trig: CronTrigger, now: dt.datetime) -> dt.datetime | None:
    """The trigger's last fire time at or before ``now`` (within :data:`LOOKBACK`)."""
    latest = None
    fire = trig.get_next_fire_time(None, now - LOOKBACK)
    while fire is not None and fire <= now:
        latest = fire
        fire = trig.get_next_fire_time(fire, fire + dt.timedelta(seconds=1))
    return latest


def due_fire_time(cfg: Config, job: str, now: dt.datetime) -> dt.datetime | None:
    """The fire time ``job`` should run for at ``now``, if one is within its grace."""
    fire = latest_fire_time(trigger(cfg, job), now)
    if fire is None or now - fire > grace(cfg, job):
        return None
    return fire


def daily_date(cfg: Config, fire: dt.datetime) -> dt.date:
    """The digest a daily run is for: the local date of its fire time (never the host's)."""
    return fire.astimezone(cfg.tz).date()


# --- the jobs --------------------------------------------------------------------------------


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class JobContext:
    """What a job needs: settings, store, signing key, and the stop event (set by SIGTERM:
    no new job starts, a send finishes its in-flight messages)."""

    cfg: Config
    store: Store
    key: bytes
    stop: asyncio.Event
    clock: Callable[[], dt.datetime] = utcnow
    # True in `run` (a send waits for its retries); `tick` leaves them to the next tick.
    wait: bool = True
    fetch: FetchOptions = field(default_factory=FetchOptions)
    scheduler: AsyncIOScheduler | None = None
    owner: str = field(default_factory=worker_id)
    running: set[asyncio.Task[Any]] = field(default_factory=set)


@dataclass(frozen=True)
class Outcome:
    status: str  # done, waiting, skipped, failed
    detail: str
    retry_at: dt.datetime | None = None


def publish_finished_weeks(cfg: Config, archive: Archive, today: dt.date) -> list[Path]:
    """Write the web copy of every finished week that has none yet (a restart is cheap;
    the weekly job rewrites its own week's copy when it sends)."""
    written: list[Path] = []
    for week in issue_weeks(archive):
        if week.sunday >= today:
            continue
        page = cfg.public_path / "issues" / web_copy_name(week, cfg.default_lang, cfg.default_lang)
        if not page.exists():
            written.extend(publish_issue(cfg, build_issue(cfg, archive, week)))
    return written


def refresh_site(cfg: Config, archive: Archive, now: dt.datetime) -> None:
    """The feeds and the finished weeks' web copies, from the archive as it stands."""
    if archive.digests:
        write_feeds(cfg, archive)
    publish_finished_weeks(cfg, archive, now.astimezone(cfg.tz).date())


async def _daily(ctx: JobContext, fire: dt.datetime, now: dt.datetime) -> Outcome:
    cfg = ctx.cfg
    day = daily_date(cfg, fire)
    result, archive = await ingest_day(cfg, day, options=ctx.fetch, stop=ctx.stop)
    if result.found:
        await asyncio.to_thread(refresh_site, cfg, archive, now)
        return Outcome("done", result.detail)
    deadline = daily_deadline(cfg, fire)
    if now < deadline:
        retry = min(
            now + dt.timedelta(seconds=duration_seconds(cfg.schedule.retry_every)), deadline
        )
        return Outcome("waiting", result.detail, retry)
    log.warning("no digest for %s by %s: skipped (%s)", day, deadline, result.detail)
    return Outcome("skipped", result.detail)


async def _weekly(ctx: JobContext, fire: dt.datetime, now: dt.datetime) -> Outcome:
    cfg, store = ctx.cfg, ctx.store
    week = IsoWeek.previous(fire, cfg.tz)
    archive = await asyncio.to_thread(load_local_archive, cfg)
    try:
        prepared = await asyncio.to_thread(prepare_issue, cfg, archive, week, publish=True)
    except NoIssueError as exc:
        log.warning("%s", exc)
        return Outcome("skipped", str(exc))
    row = store.get_issue(str(week))
    if row is not None and row.status == "sent":
        return Outcome("done", f"{week} was already sent")
    if cfg.schedule.weekly_mode == "draft" and (row is None or row.status == "draft"):
        detail = f"{week} is a draft: approve it with `newsletter send --week {week}`"
        if row is None:
            editor = cfg.email.editor_email
            if editor:
                await asyncio.to_thread(
                    send_test_copy, cfg, prepared, ctx.key, editor, cfg.default_lang
                )
                detail += f"; test copy sent to {editor}"
            else:
                log.warning("email.editor_email is empty: no test copy of %s was sent", week)
            store.ensure_issue(str(week), prepared.subject, status="draft")
        log.info("%s", detail)
        return Outcome("done", detail)
    report = await deliver_issue(cfg, store, prepared, ctx.key, wait=ctx.wait, stop=ctx.stop)
    detail = report.summary()
    if report.stopped:
        detail += "; stopped, resumes on the next start"
    return Outcome("done", detail)


_BODIES: dict[str, Callable[[JobContext, dt.datetime, dt.datetime], Coroutine[Any, Any, Outcome]]]
_BODIES = {DAILY: _daily, WEEKLY: _weekly}


async def run_job(ctx: JobContext, job: str, now: dt.datetime) -> Outcome | None:
    """Run ``job`` for its latest fire time at or before ``now``, if that is within its
    grace and not run (or due for a retry) yet. Returns None when there was nothing to do.

    Never raises for a failure of the job itself: it is logged and recorded."""
    fire = due_fire_time(ctx.cfg, job, now)
    if fire is None or ctx.stop.is_set():
        return None
    if not ctx.store.claim_job_run(job, fire, ctx.owner, now, pid_alive):
        return None
    log.info("job %s started for %s", job, fire.astimezone(ctx.cfg.tz).isoformat())
    try:
        outcome = await _BODIES[job](ctx, fire, now)
    except Exception as exc:
        log.exception("job %s for %s failed", job, fire.isoformat())
        detail = f"{type(exc).__name__}: {exc}"
        outcome = Outcome("failed", detail)
        if job == DAILY and now < daily_deadline(ctx.cfg, fire):
            # The day's digest may still come: a failure is retried like a missing digest.
            retry_every = dt.timedelta(seconds=duration_seconds(ctx.cfg.schedule.retry_every))
            outcome = Outcome(
                "waiting", detail, min(now + retry_every, daily_deadline(ctx.cfg, fire))
            )
    ctx.store.finish_job_run(job, fire, outcome.status, outcome.detail, outcome.retry_at)
    log.info(
        "job %s for %s: %s: %s%s",
        job,
        fire.astimezone(ctx.cfg.tz).isoformat(),
        outcome.status,
        outcome.detail,
        f" (retry at {outcome.retry_at.astimezone(ctx.cfg.tz).isoformat()})"
        if outcome.retry_at
        else "",
    )
    if outcome.retry_at is not None and ctx.scheduler is not None:
        schedule_retry(ctx.scheduler, ctx.cfg, outcome.retry_at, daily_deadline(ctx.cfg, fire))
    return outcome


async def run_due(
    ctx: JobContext, now: dt.datetime, jobs: tuple[str, ...] = JOBS
) -> dict[str, Outcome | None]:
    """Every job due at ``now``, one after the other (the daily job first, so that a
    weekly issue includes that morning's digest)."""
    return {job: await run_job(ctx, job, now) for job in jobs}


async def resume_sending(ctx: JobContext) -> int:
    """Carry on every issue left in ``sending`` (a crash or a stop mid-send); the ledger
    makes sure nobody gets a message twice. Returns how many issues were resumed."""
    cfg, store = ctx.cfg, ctx.store
    rows = store.issues_in_status("sending")
    for row in rows:
        if ctx.stop.is_set():
            break
        log.info("resuming the send of %s", row.week)
        try:
            archive = await asyncio.to_thread(load_local_archive, cfg)
            prepared = await asyncio.to_thread(
                prepare_issue, cfg, archive, IsoWeek.parse(row.week), publish=False
            )
            report = await deliver_issue(
                cfg, store, prepared, ctx.key, wait=ctx.wait, stop=ctx.stop
            )
            log.info("%s", report.summary())
        except Exception:
            log.exception("resuming the send of %s failed", row.week)
    return len(rows)


# --- the jobs as APScheduler sees them ----------------------------------------------------------

_active: JobContext | None = None


@contextlib.contextmanager
def installed(ctx: JobContext) -> Iterator[JobContext]:
    """Make ``ctx`` the context of the scheduled jobs in this process."""
    global _active
    previous, _active = _active, ctx
    try:
        yield ctx
    finally:
        _active = previous


async def _scheduled(job: str) -> None:
    ctx = _active
    if ctx is None:
        raise RuntimeError(f"job {job} fired outside `newsletter run`")
    if ctx.stop.is_set():
        log.info("job %s not started: the service is stopping (it runs on the next start)", job)
        return
    task = asyncio.current_task()
    if task is not None:
        ctx.running.add(task)
    try:
        await run_job(ctx, job, ctx.clock())
    finally:
        if task is not None:
            ctx.running.discard(task)


async def daily_job() -> None:
    """Fired by the daily trigger and by its retries."""
    await _scheduled(DAILY)


async def weekly_job() -> None:
    await _scheduled(WEEKLY)


def new_scheduler(store: Store, cfg: Config) -> AsyncIOScheduler:
    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=store.engine)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=cfg.tz,
    )


def ensure_jobs(scheduler: AsyncIOScheduler, cfg: Config) -> None:
    """Add each job only when it is missing from the job store, so a run missed while
    the service was down is still due. A job whose schedule changed in the settings is
    rescheduled (a run missed under the old schedule is caught up by :func:`run_due`)."""
    for job in JOBS:
        trig = trigger(cfg, job)
        seconds = int(grace(cfg, job).total_seconds())
        existing = scheduler.get_job(job)
        if existing is None:
            scheduler.add_job(
                JOB_FUNCS[job],
                trig,
                id=job,
                name=job,
                misfire_grace_time=seconds,
                coalesce=True,
                max_instances=1,
            )
            continue
        if (str(existing.trigger), str(getattr(existing.trigger, "timezone", ""))) != (
            str(trig),
            str(trig.timezone),
        ) or existing.misfire_grace_time != seconds:
            log.info("schedule of %s changed to %s", job, trig)
            scheduler.modify_job(
                job, func=JOB_FUNCS[job], misfire_grace_time=seconds, coalesce=True, max_instances=1
            )
            scheduler.reschedule_job(job, trigger=trig)


def schedule_retry(
    scheduler: AsyncIOScheduler, cfg: Config, at: dt.datetime, deadline: dt.datetime
) -> None:
    """One more try of the daily job at ``at``; persisted, so a restart keeps it."""
    scheduler.add_job(
        JOB_FUNCS[DAILY],
        DateTrigger(run_date=at, timezone=cfg.tz),
        id=DAILY_RETRY,
        name=DAILY_RETRY,
        misfire_grace_time=max(int((deadline - at).total_seconds()), 60),
        coalesce=True,
        max_instances=1,
        # Not start-up: a newer retry replaces the one that just fired.
        replace_existing=True,
    )


# --- one scheduler per database -------------------------------------------------------------


@contextlib.contextmanager
def scheduler_lock(store: Store) -> Generator[None, None, None]:
    """Hold the database's scheduler lock: a PostgreSQL advisory lock, or an flock on a
    file beside the SQLite file. :class:`AlreadyRunning` when another process has it."""
    url = store.engine.url
    if store.is_postgres:
        conn = store.engine.connect()
        try:
            import sqlalchemy as sa

            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            held = bool(got.scalar())
            conn.commit()  # a session lock outlives the transaction; don't idle in one
            if not held:
                raise AlreadyRunning(
                    f"another `newsletter run` is already scheduling jobs on "
                    f"{url.render_as_string()}: only one may run per database "
                    "(start `newsletter worker` processes to help sending)"
                )
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        finally:
            conn.close()
        return
    database = url.database or ""
    if store.dialect != "sqlite" or database in ("", ":memory:"):
        yield  # a private database: nobody else can schedule on it
        return
    path = Path(database + ".scheduler.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            raise AlreadyRunning(
                f"another `newsletter run` ({holder}) is already scheduling jobs on {database}: "
                f"only one may run per database (lock: {path}); "
                "start `newsletter worker` processes to help sending"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


# --- newsletter run and newsletter tick -----------------------------------------------------


class LogfmtFormatter(logging.Formatter):
    """``time=... level=info logger=... msg="..."``: one line per record, easy to grep and to
    parse (journald, Loki)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line = (
            f"time={stamp} level={record.levelname.lower()} logger={record.name} "
            f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}"
        )
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info), ensure_ascii=False)}"
        return line


def configure_logging() -> None:
    """Structured lines on stderr, at least at INFO (the service's log is its record)."""
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(LogfmtFormatter())
    # One line per scheduler decision is ours to log; APScheduler's own are noise at INFO.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _listen(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is a clear error of ours, not uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


async def serve(
    cfg: Config,
    *,
    host: str,
    port: int,
    clock: Callable[[], dt.datetime] = utcnow,
    web: bool = True,
    stop: asyncio.Event | None = None,
    signals: bool = True,
) -> None:
    """``newsletter run``: the scheduler and the web app in this event loop until SIGTERM
    or SIGINT (or ``stop``). Jobs in progress finish first; a send stops after its
    in-flight messages."""
    import uvicorn

    from .tokens import secret_key
    from .web import create_app

    class Server(uvicorn.Server):
        # The service owns SIGTERM/SIGINT: jobs stop first, then the server.
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        with scheduler_lock(store):
            stop = stop or asyncio.Event()
            if signals:
                _on_signals(stop)
            ctx = JobContext(cfg, store, secret_key(cfg), stop, clock=clock)
            now = clock()
            archive = await asyncio.to_thread(load_local_archive, cfg)
            for problem in archive.problems:
                log.warning("%s", problem)
            await asyncio.to_thread(refresh_site, cfg, archive, now)
            log.info(
                "archive: %d digests (%s to %s), feeds in %s",
                len(archive.digests),
                archive.digests[0].date if archive.digests else "-",
                archive.digests[-1].date if archive.digests else "-",
                cfg.public_path,
            )
            sock = _listen(host, port) if web else None
            with installed(ctx):
                scheduler = new_scheduler(store, cfg)
                ctx.scheduler = scheduler
                scheduler.start()
                try:
                    ensure_jobs(scheduler, cfg)
                    for job in scheduler.get_jobs():
                        when = job.next_run_time
                        log.info(
                            "next %s run: %s",
                            job.id,
                            when.astimezone(cfg.tz).isoformat() if when else "paused",
                        )
                    server = Server(
                        uvicorn.Config(create_app(cfg), log_config=None, lifespan="off")
                    )
                    server_task = None
                    if sock is not None:
                        server_task = asyncio.create_task(server.serve(sockets=[sock]))
                        log.info(
                            "listening on http://%s:%d/ (public address, base_url: %s)",
                            host,
                            port,
                            cfg.site_url,
                        )

                    async def catch_up() -> None:
                        await resume_sending(ctx)
                        await run_due(ctx, clock())

                    startup = asyncio.create_task(catch_up())
                    ctx.running.add(startup)
                    startup.add_done_callback(ctx.running.discard)
                    stopping = asyncio.create_task(stop.wait())
                    waiters: set[asyncio.Task[Any]] = {stopping}
                    if server_task is not None:
                        waiters.add(server_task)
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    stop.set()
                    await stopping
                    log.info("stopping: %d job(s) to finish first", len(ctx.running))
                    while ctx.running:
                        await asyncio.gather(*list(ctx.running), return_exceptions=True)
                finally:
                    if scheduler.running:
                        scheduler.shutdown(wait=False)
                        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop turn
                if server_task is not None:
                    server.should_exit = True
                    await server_task
                if sock is not None:
                    sock.close()
            log.info("stopped")
    finally:
        store.close()


def run_service(cfg: Config, host: str, port: int) -> None:
    configure_logging()
    asyncio.run(serve(cfg, host=host, port=port))


async def tick(
    cfg: Config, now: dt.datetime, *, fetch: FetchOptions | None = None
) -> dict[str, Outcome | None]:
    """``newsletter tick``: resume any send left unfinished, then run once each job due
    at ``now`` that has not run yet, and return. Retries not yet due are left for the
    next tick, so the command never lingers."""
    from .tokens import secret_key

    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        stop = asyncio.Event()
        _on_signals(stop)
        ctx = JobContext(
            cfg,
            store,
            secret_key(cfg),
            stop,
            clock=lambda: now,
            wait=False,
            fetch=fetch or FetchOptions(),
        )
        started = time.monotonic()
        await resume_sending(ctx)
        outcomes = await run_due(ctx, now)
        log.debug("tick took %.1fs", time.monotonic() - started)
        return outcomes
    finally:
        store.close()
