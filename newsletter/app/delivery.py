"""Sending, as the CLI (``send``, ``worker``, ``tick``), the scheduler and the web app ask
for it: an issue approved and queued, then sent; the long-running sender; single mails.

The operations on an issue are :mod:`newsletter.app.issues`'; the sending itself is the
outbox's drain (:mod:`newsletter.mail.sender`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from newsletter.app import issues, site
from newsletter.app.issues import Prepared, prepare
from newsletter.config import Config, span_seconds
from newsletter.lifecycle import IssueState
from newsletter.mail.message import PreparedMessage, recipient_tokens
from newsletter.mail.sender import Outbox, Progress, SendReport
from newsletter.mail.tokens import APPROVE, make_token
from newsletter.models import Archive
from newsletter.pacing import Steps, on_signals, sleep_unless
from newsletter.select import IsoWeek
from newsletter.store import Issue, Mail, Store, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "APPROVE",
    "Prepared",
    "SendReport",
    "approve_url",
    "delivered",
    "describe",
    "dry_run",
    "keep_draining",
    "outbox_note",
    "prepare",
    "queue_mail",
    "resume_sending",
    "run_worker",
    "send_issue",
    "send_queued_mail",
    "send_test_copy",
]

# How long the approve link in an editor's test copy works.
APPROVE_DAYS = 14


def approve_url(cfg: Config, key: bytes, issue_id: int) -> str:
    expires = int(time.time()) + APPROVE_DAYS * 86400
    return f"{cfg.site_url}approve/{make_token(key, APPROVE, issue_id, expires=expires)}"


def outbox_note(cfg: Config) -> str:
    """With no SMTP host, where messages go instead (nobody reading "sent" should believe
    that mail left the machine); else nothing."""
    if cfg.smtp.host:
        return ""
    return f"written to {cfg.outbox_path / 'new'} (no SMTP host set)"


def delivered(cfg: Config, count: int) -> str:
    """``N sent``, or ``N written to OUTBOX/new (no SMTP host set)``."""
    return f"{count} {outbox_note(cfg) or 'sent'}"


def describe(cfg: Config, report: SendReport) -> str:
    """A send's outcome in one line, as ``send`` and ``tick`` print it."""
    if cfg.smtp.host:
        return report.summary()
    counts = report.counts
    waiting = counts.get("queued", 0) + counts.get("sending", 0)
    text = (
        f"{report.week}: {delivered(cfg, counts.get('sent', 0))}, {counts.get('failed', 0)} "
        f"failed, {counts.get('skipped', 0)} skipped, {waiting} waiting "
        f"({report.this_run['sent']} in this run)"
    )
    if report.status == IssueState.PAUSED:
        text += f"; paused: {report.paused_reason}"
    return text


def ready_to_send(
    cfg: Config,
    store: Store,
    load_archive: Callable[[], Archive],
    week: IsoWeek,
    *,
    retry_failed: bool = False,
    refreeze: bool = False,
) -> Issue:
    """Approve the week's issue (freezing what it sends) unless it already left draft, and
    queue its deliveries. Returns the issue row; :class:`issues.NoRecipients` when nobody
    would get it."""
    row = store.get_issue(str(week))
    if row is None or row.status == issues.DRAFT or refreeze:
        prepared = prepare(cfg, load_archive(), week)
        row = issues.approve(store, cfg, prepared, refreeze=refreeze)
    return issues.start(store, row, retry_failed=retry_failed)


async def send_issue(
    cfg: Config,
    store: Store,
    row: Issue,
    key: bytes,
    *,
    wait: bool = True,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    outage_max: float | None = None,
) -> SendReport:
    """Send an approved issue from its frozen content until it is sent or halted."""
    outbox = Outbox(cfg, store, key, stop=stop, progress=progress)
    return await outbox.send_issue(row, wait=wait, outage_max=outage_max)


def send_week(
    cfg: Config,
    store: Store,
    load_archive: Callable[[], Archive],
    week: IsoWeek,
    key: bytes,
    *,
    wait: bool = True,
    retry_failed: bool = False,
    refreeze: bool = False,
    progress: Progress | None = None,
    pages: Steps | None = None,
    handle_signals: bool = False,
    foreground: bool = False,
) -> SendReport:
    """``newsletter send``: approve if needed, queue, and send in this process. With
    ``foreground``, a server outage is waited out for up to ``smtp.outage_max``. With
    ``handle_signals``, SIGTERM and SIGINT stop the claiming of new deliveries; messages in
    flight finish and are recorded. ``progress`` is told the sender's tally, ``pages`` how
    far the site build before it is."""
    # The page the mail's "view in browser" link opens, with the site around it.
    site.web_copy(cfg, week, progress=pages)
    row = ready_to_send(
        cfg, store, load_archive, week, retry_failed=retry_failed, refreeze=refreeze
    )

    async def main() -> SendReport:
        stop = asyncio.Event()
        if handle_signals:
            on_signals(stop)
        outage_max = span_seconds(cfg.smtp.outage_max) if foreground else None
        return await send_issue(
            cfg, store, row, key, wait=wait, stop=stop, progress=progress, outage_max=outage_max
        )

    return asyncio.run(main())


async def resume_sending(
    cfg: Config,
    store: Store,
    key: bytes,
    *,
    stop: asyncio.Event,
    progress: Progress | None = None,
) -> list[SendReport]:
    """Carry on every issue being sent, or paused by a server outage whose retry is due,
    from its frozen content, and send the single mails that are due: the outbox's one
    drain. The ledger makes sure nobody gets a message twice. ``progress`` is told the
    sender's tally."""
    _mails, reports = await Outbox(cfg, store, key, stop=stop, progress=progress).drain()
    return reports


async def keep_draining(
    outbox: Outbox,
    *,
    poll: float,
    once: bool = False,
    wake: asyncio.Event | None = None,
) -> int:
    """The long-running sender of ``run``, ``serve`` and ``worker``: drain the outbox, then
    sleep until the next retry, resume time or single mail is due (at most ``poll``
    seconds, or until ``wake`` is set), until stopped; with ``once``, until a drain finds
    nothing to do. Returns the number of messages sent."""
    sent = 0
    while not outbox.stop.is_set():
        busy = False
        try:
            mails, reports = await outbox.drain(wait=once)
            sent += mails["sent"] + sum(r.this_run["sent"] for r in reports)
            busy = bool(mails) or any(r.this_run for r in reports)
            due = await outbox.next_due()
        except Exception:
            # A database or server hiccup must not end a long-running sender.
            log.exception("sending failed; trying again shortly")
            due = None
        if once:
            if not busy:
                break
            continue  # at once: the next drain finds what came due meanwhile, or ends
        delay = poll
        if due is not None:
            delay = min(max((due - utcnow()).total_seconds(), 0.05), poll)
        await sleep_unless(outbox.stop, delay, wake=wake)
    return sent


# --- single mails ----------------------------------------------------------------------------


def queue_mail(store: Store, kind: str, recipient: str, message: PreparedMessage) -> int:
    """Hand a single mail to the sender (it is signed and sent with retries later)."""
    return store.enqueue_mail(kind, recipient, message.message_id, message.data)


async def send_mails_now(cfg: Config, store: Store, stop: asyncio.Event, key: bytes) -> None:
    """Send the single mails that are due, in this process (where no sender thread runs)."""
    await Outbox(cfg, store, key, stop=stop).send_mails()


def send_queued_mail(cfg: Config, store: Store, mail_id: int, key: bytes = b"") -> Mail:
    """Send one queued mail now, in this process (the editor waits for it); returns it."""
    from newsletter.mail.tokens import secret_key

    async def main() -> None:
        await Outbox(cfg, store, key or secret_key(cfg)).send_mails(only=mail_id)

    asyncio.run(main())
    mail = store.mail(mail_id)
    assert mail is not None  # queued a moment ago, and mails are never deleted
    return mail


def send_test_copy(
    cfg: Config,
    store: Store,
    prepared: Prepared,
    key: bytes,
    address: str,
    lang: str,
) -> int:
    """Queue one copy for the editor, outside the issue's ledger; returns the mail's id."""
    template = prepared.template(lang, cfg.default_lang)
    # Subscriber 0 does not exist: the copy's own links work but change nothing.
    message = template.personalize(
        to_address=address, to_name="", **recipient_tokens(cfg, key, 0), sign=False
    )
    return queue_mail(store, "test", address, message)


def dry_run(cfg: Config, store: Store, prepared: Prepared, key: bytes) -> tuple[int, int]:
    """Build the message of every active subscriber without sending or recording anything.
    Returns (messages, bytes)."""
    count = size = 0
    for sub in store.iter_subscribers("active"):
        message = prepared.template(sub.lang, cfg.default_lang).personalize(
            to_address=sub.email, to_name=sub.name, **recipient_tokens(cfg, key, sub.id)
        )
        count += 1
        size += len(message.data)
    return count, size


def run_worker(
    cfg: Config,
    store: Store,
    key: bytes,
    *,
    once: bool = False,
    poll: float = 10.0,
    progress: Progress | None = None,
) -> int:
    """Help send every issue being sent, and the queued single mails, until stopped (or,
    with ``once``, until there is nothing to do). Every worker sends the frozen content,
    so they all build the same bytes. Returns the number of messages this worker sent."""

    async def main() -> int:
        stop = asyncio.Event()
        on_signals(stop)
        outbox = Outbox(cfg, store, key, stop=stop, progress=progress)
        return await keep_draining(outbox, poll=poll, once=once)

    return asyncio.run(main())
