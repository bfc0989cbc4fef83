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
``misfire_grace_time`` with ``coalesce`` and ``max_instances=1``, and one scheduler per
database, held by a lock. Its jobs live in memory only: ``job_runs`` is the one record of
what ran. A run missed while the service was down is computed at start from the triggers
and ``job_runs`` (:func:`run_due`), and a daily retry from the run's ``waiting`` row and
its ``next_try_at`` (:func:`restore_retries`). A persistent job store would be a second,
pickled record of the same thing, outside the migrations, that two processes could read
differently.

Jobs name module-level coroutines (``newsletter.service.scheduler:daily_job``) and carry no
arguments. What a job needs (the settings with their environment and command-line
overrides, the open store, the stop event set by SIGTERM, the scheduler for retries)
exists only in the running process, so ``newsletter run`` installs one
:class:`JobContext` for the process before the scheduler starts; :func:`run_job` itself
takes the context as an argument, so ``tick`` and the tests never touch the process-wide
one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from newsletter.app import delivery, issues, site
from newsletter.archive.cache import Catalog
from newsletter.archive.sources import FetchOptions, ingest_day, local_catalog
from newsletter.config import Config, duration_seconds
from newsletter.errors import NewsletterError
from newsletter.lifecycle import IssueState, describe_pause
from newsletter.mail.sender import Progress, SendReport
from newsletter.mail.transport import pid_alive
from newsletter.models import Archive
from newsletter.pacing import logged_steps
from newsletter.publish import outputs
from newsletter.publish.pending import PendingPages
from newsletter.select import IsoWeek, NoIssueError
from newsletter.store import Store
from newsletter.store.lanes import worker_id

log = logging.getLogger(__name__)

DAILY = "daily"
WEEKLY = "weekly"
DAILY_RETRY = "daily-retry"
JOBS = (DAILY, WEEKLY)
JOB_FUNCS = {
    DAILY: "newsletter.service.scheduler:daily_job",
    WEEKLY: "newsletter.service.scheduler:weekly_job",
}
# A weekly send missed by up to this much downtime still goes out when the service returns.
WEEKLY_GRACE = dt.timedelta(hours=12)
# How far back to look for a job's latest fire time: more than any grace period.
LOOKBACK = dt.timedelta(days=8)
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
    # The sender thread's wake-up in `run`: the weekly job only queues, the sender sends.
    # None in `tick` and tests: the job sends in place.
    wake_sender: Callable[[], None] | None = None


@dataclass(frozen=True)
class Outcome:
    status: str  # done, waiting, skipped, failed
    detail: str
    retry_at: dt.datetime | None = None


def logged_sending() -> Progress:
    """The sender's tally in the log every few seconds of a long send (the service, `tick`
    under cron: no terminal to draw a bar on)."""
    steps = logged_steps(log.info, "sending")

    def update(tally: Counter[str], total: int) -> None:
        steps(tally["sent"] + tally["failed"] + tally["skipped"], total)

    return update


def refresh_site(cfg: Config, catalog: Catalog, now: dt.datetime) -> None:
    """The feeds and the finished weeks' web copies, each only when its inputs changed."""
    pages = logged_steps(log.info, "rendering web pages")
    outputs.build_site(cfg, catalog, now.astimezone(cfg.tz).date(), progress=pages)


async def post_day(ctx: JobContext, catalog: Catalog, day: dt.date) -> None:
    """The day's papers to the team's chats once its digest is in: queued once (a retry
    of the daily job adds nothing), sent by the sender (``run``) or here (``tick``). A
    chat that refuses is logged; the feeds and the weekly issue do not depend on it."""
    from newsletter.app import chat

    try:
        if not chat.channels(ctx.cfg):
            return
        archive = await asyncio.to_thread(catalog.load, [day])
        added = await asyncio.to_thread(chat.queue_day, ctx.cfg, ctx.store, archive, day)
        if not any(added.values()):
            return
        if ctx.wake_sender is not None:
            ctx.wake_sender()
        else:
            await chat.send_posts(ctx.cfg, ctx.store, ctx.key, stop=ctx.stop)
    except NewsletterError as exc:
        log.error("chat posts for %s: %s", day, exc)


# --- the writer: the day's digest written before the daily job looks for it (issue 16) ---


async def write_digest(ctx: JobContext, day: dt.date) -> int:
    """With ``[writer] enabled``, write ``day``'s digest into the archive (newsletter.archive.writer).
    Returns how many of its papers are still without a summary. Its own event loop in a
    thread: model calls take minutes and must not share the web app's loop. A failure is
    logged: the daily job then finds no digest and tries again at its next retry."""
    if not ctx.cfg.writer.enabled:
        return 0
    from newsletter.archive.writer import write_day

    try:
        result = await asyncio.to_thread(
            asyncio.run, write_day(ctx.cfg, ctx.store, day, stopping=ctx.stop.is_set)
        )
    except NewsletterError as exc:
        log.error("writer: %s: %s", day, exc)
        return 0
    except Exception:
        log.exception("writer: %s failed", day)
        return 0
    log.info("writer: %s", result.summary())
    return result.pending


# --- end of the writer ---------------------------------------------------------------------


async def _daily(ctx: JobContext, fire: dt.datetime, now: dt.datetime) -> Outcome:
    cfg = ctx.cfg
    day = daily_date(cfg, fire)
    pending = await write_digest(ctx, day)
    result, catalog = await ingest_day(cfg, day, options=ctx.fetch, stop=ctx.stop)
    deadline = daily_deadline(cfg, fire)
    if result.found:
        await asyncio.to_thread(refresh_site, cfg, catalog, now)
        if pending and now < deadline:
            # Papers written without a summary: the retry runs the writer again for them.
            retry = min(
                now + dt.timedelta(seconds=duration_seconds(cfg.schedule.retry_every)), deadline
            )
            return Outcome("waiting", f"{result.detail}; {pending} without a summary", retry)
        # Posted once the day is final (every summary in, or the deadline reached): a post
        # is never taken back, and a day is posted only once.
        await post_day(ctx, catalog, day)
        return Outcome("done", result.detail)
    if now < deadline:
        retry = min(
            now + dt.timedelta(seconds=duration_seconds(cfg.schedule.retry_every)), deadline
        )
        return Outcome("waiting", result.detail, retry)
    log.warning("no digest for %s by %s: skipped (%s)", day, deadline, result.detail)
    return Outcome("skipped", result.detail)


async def _weekly(ctx: JobContext, fire: dt.datetime, now: dt.datetime) -> Outcome:
    week = IsoWeek.previous(fire, ctx.cfg.tz)
    outcome, row = await asyncio.to_thread(_weekly_issue, ctx, week)
    if ctx.wake_sender is not None:
        ctx.wake_sender()
        if row is not None:
            return Outcome("done", f"{week} is {row.status}: the sender has it")
    elif row is not None:
        report = await delivery.send_issue(
            ctx.cfg,
            ctx.store,
            row,
            ctx.key,
            wait=ctx.wait,
            stop=ctx.stop,
            progress=logged_sending(),
        )
        detail = delivery.describe(ctx.cfg, report)
        if report.stopped:
            detail += "; stopped, resumes on the next start"
        return Outcome("done", detail)
    else:
        await delivery.send_mails_now(ctx.cfg, ctx.store, ctx.stop, ctx.key)
    assert outcome is not None
    return outcome


def _weekly_issue(ctx: JobContext, week: IsoWeek) -> tuple[Outcome | None, Any]:
    """The week's issue: a draft for the editor (an outcome), or the issue row, approved
    and queued, for the sender."""
    cfg, store = ctx.cfg, ctx.store
    row = store.get_issue(str(week))
    if row is not None and row.status in (issues.SENT, issues.CANCELLED):
        return Outcome("done", f"{week} is {row.status}"), None
    # The week's days only: an issue never shows another week's papers.
    archive = local_catalog(cfg).load(week.monday + dt.timedelta(days=i) for i in range(7))
    try:
        # The page the mail's "view in browser" link opens, with the site around it.
        site.web_copy(cfg, week)
        if cfg.schedule.weekly_mode == "draft" and (row is None or row.status == issues.DRAFT):
            return Outcome("done", _draft(ctx, archive, week, row)), None
        return None, delivery.ready_to_send(cfg, store, lambda: archive, week)
    except NoIssueError as exc:
        log.warning("%s", exc)
        return Outcome("skipped", str(exc)), None
    except issues.NoRecipients as exc:
        log.warning("%s", exc)
        return Outcome("done", str(exc)), None


def _draft(ctx: JobContext, archive: Archive, week: IsoWeek, row: Any) -> str:
    """Render the week's issue, publish its web copy, and queue the editor's copy with an
    approve link; the issue waits as a draft."""
    cfg, store = ctx.cfg, ctx.store
    detail = (
        f"{week} is a draft: approve it from the editor's copy or `newsletter send --week {week}`"
    )
    if row is not None:
        return detail
    prepared = delivery.prepare(cfg, archive, week)
    row = store.ensure_issue(str(week), prepared.subject, status=issues.DRAFT)
    editor = cfg.email.editor_email
    if not editor:
        log.warning("email.editor_email is empty: no copy of the draft %s was sent", week)
        return detail
    approve = delivery.approve_url(cfg, ctx.key, row.id)
    copy = delivery.prepare(cfg, archive, week, approve_url=approve)
    delivery.send_test_copy(cfg, store, copy, ctx.key, editor, cfg.default_lang)
    return detail + f"; copy for {editor} queued"


_BODIES: dict[str, Callable[[JobContext, dt.datetime, dt.datetime], Coroutine[Any, Any, Outcome]]]
_BODIES = {DAILY: _daily, WEEKLY: _weekly}


async def run_job(ctx: JobContext, job: str, now: dt.datetime) -> Outcome | None:
    """Run ``job`` for its latest fire time at or before ``now``, if that is within its
    grace and not run (or due for a retry) yet. Returns None when there was nothing to do.

    Never raises for a failure of the job itself: it is logged and recorded."""
    fire = due_fire_time(ctx.cfg, job, now)
    if fire is None or ctx.stop.is_set():
        return None
    # Database calls off this loop: in `newsletter run` it also serves the web app.
    if not await asyncio.to_thread(ctx.store.claim_job_run, job, fire, ctx.owner, now, pid_alive):
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
    await asyncio.to_thread(
        ctx.store.finish_job_run, job, fire, outcome.status, outcome.detail, outcome.retry_at
    )
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


async def resume_sending(ctx: JobContext) -> list[SendReport]:
    """The outbox's drain, once: every issue left sending (a crash or a stop mid-send) or
    paused by an outage whose retry is due, from its frozen content, and the single mails;
    the ledger makes sure nobody gets a message twice. A send left paused is said in a
    warning, with when the server is tried next. Returns a report per issue taken."""
    reports = await delivery.resume_sending(
        ctx.cfg, ctx.store, ctx.key, stop=ctx.stop, progress=logged_sending()
    )
    for report in reports:
        if report.status == IssueState.PAUSED:
            row = await asyncio.to_thread(ctx.store.get_issue, report.week)
            after = (
                row.resume_at.astimezone(ctx.cfg.tz).isoformat() if row and row.resume_at else ""
            )
            log.warning(
                "%s is still paused %s: %s%s",
                report.week,
                describe_pause(report.paused_by),
                report.paused_reason,
                f" (next try after {after})" if after else "",
            )
    return reports


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


def new_scheduler(cfg: Config) -> AsyncIOScheduler:
    """APScheduler as a timer only, its jobs in memory: what ran is recorded in
    ``job_runs`` alone, and a restart works out from there what is due."""
    return AsyncIOScheduler(
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=cfg.tz,
    )


def ensure_jobs(scheduler: AsyncIOScheduler, cfg: Config) -> None:
    """Add each job on its trigger. Nothing is stored: a run missed while the service was
    down is found in ``job_runs`` and run by :func:`run_due` at start."""
    for job in JOBS:
        scheduler.add_job(
            JOB_FUNCS[job],
            trigger(cfg, job),
            id=job,
            name=job,
            misfire_grace_time=int(grace(cfg, job).total_seconds()),
            coalesce=True,
            max_instances=1,
            replace_existing=True,
        )


def restore_retries(
    scheduler: AsyncIOScheduler, cfg: Config, store: Store, now: dt.datetime
) -> list[dt.datetime]:
    """Schedule again the daily retries recorded in ``job_runs`` (``waiting`` with a
    ``next_try_at`` still ahead and before the day's deadline); one already due is run by
    :func:`run_due` at start. Returns the retry times scheduled."""
    scheduled: list[dt.datetime] = []
    for row in store.list_job_runs(DAILY):
        if row.status != "waiting" or row.next_try_at is None:
            continue
        fire, at = row.fire_time, row.next_try_at
        deadline = daily_deadline(cfg, fire)
        if now < at < deadline and due_fire_time(cfg, DAILY, at) == fire:
            schedule_retry(scheduler, cfg, at, deadline)
            scheduled.append(at)
    return scheduled


def schedule_retry(
    scheduler: AsyncIOScheduler, cfg: Config, at: dt.datetime, deadline: dt.datetime
) -> None:
    """One more try of the daily job at ``at``. Held in memory only: ``job_runs`` keeps the
    waiting run with its ``next_try_at``, from which a restart schedules it again."""
    scheduler.add_job(
        JOB_FUNCS[DAILY],
        DateTrigger(run_date=at, timezone=cfg.tz),
        id=DAILY_RETRY,
        name=DAILY_RETRY,
        misfire_grace_time=max(int((deadline - at).total_seconds()), 60),
        coalesce=True,
        max_instances=1,
        # A newer retry replaces the one that just fired.
        replace_existing=True,
    )


async def start_up(ctx: JobContext, catalog: Catalog, pending: PendingPages | None = None) -> None:
    """What follows a start once the feeds answer: the front page, the issues feeds and the
    finished weeks' web copies (a first build of years of pages takes a while, and the feeds
    need not wait for it; ``pending`` tells the web app which pages are still to come),
    then every job missed while the service was down."""
    now = ctx.clock()
    try:
        await asyncio.to_thread(
            outputs.publish_weeks,
            ctx.cfg,
            catalog,
            now.astimezone(ctx.cfg.tz).date(),
            None,
            ctx.stop,
            pending=pending,
            progress=logged_steps(log.info, "rendering web pages"),
        )
    except Exception:
        log.exception("writing the web copies failed; the daily job tries again")
    await run_due(ctx, ctx.clock())
