"""The sender: drains an issue's deliveries, and the queue of single mails, through the
transports.

The ledger in the database is the only truth about who got what. A delivery is
``sending`` just before its message is handed to the server and ``sent`` only after the
server's 250, so a crash can at worst repeat the messages that were in flight, never
skip anyone.

Failures are acted on by kind (:mod:`newsletter.transport`): a server failure puts the
delivery back untouched and pauses the issue until the server answers again; a bad
address fails at once and counts as a bounce; a soft failure is retried with backoff;
and when most recent recipients fail for one reason that is not their address (a policy
block, a rejected message) the circuit breaker pauses the issue for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import issues
from .config import Config, span_seconds
from .lifecycle import PausedBy
from .message import HeaderError, MessageTemplate, PreparedMessage
from .store import Store, utcnow
from .tokens import PREFERENCES, UNSUBSCRIBE, make_delivery_token, make_token
from .transport import (
    DeliveryError,
    MessageError,
    PolicyError,
    RecipientError,
    ServerError,
    TransportFactory,
    describe,
    transport_factory,
)

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF = 3600.0

# Called after every delivery with this run's tally and how many were due at the start.
Progress = Callable[[Counter[str], int], None]
# Turns a built message into the bytes that go out (DKIM signing, or nothing).
Sign = Callable[[bytes], bytes]


class RateLimiter:
    """Spaces sends evenly across all workers; 0 means no limit."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


def envelope_sender(cfg: Config, key: bytes, delivery_id: int) -> str:
    """The envelope sender of a delivery: ``LOCAL+TOKEN@DOMAIN`` from ``bounces.return_path``
    (VERP: a bounce comes back to an address that names its delivery), else the sender."""
    return_path = cfg.bounces.return_path
    if not return_path:
        return cfg.email.from_address
    local, _, domain = return_path.rpartition("@")
    return f"{local}+{make_delivery_token(key, delivery_id)}@{domain}"


def backoff(attempts: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Exponential, with jitter so that retries after an outage do not arrive together."""
    delay: float = min(base * 2.0 ** max(attempts - 1, 0), cap)
    return delay * random.uniform(0.5, 1.5)


def worker_id() -> str:
    """Lease owner: host and pid (so a restart can tell a dead local holder) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, or wake early when ``stop`` is set; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))
    return stop.is_set()


class Breaker:
    """Trips when most of the last ``window`` recipients failed for the same reason that
    says nothing about their address (a policy block, a rejected message)."""

    def __init__(self, window: int, share: float = 0.8) -> None:
        self.window = window
        self.needed = max(1, int(window * share + 0.999))
        self.recent: deque[tuple[int, str | None]] = deque(maxlen=window)

    def record(self, delivery_id: int, failure: DeliveryError | None) -> tuple[str, list[int]]:
        """Add one outcome; returns (reason, the deliveries it failed) once tripped, else
        ("", [])."""
        shared = isinstance(failure, PolicyError | MessageError)
        self.recent.append((delivery_id, failure.reason if shared and failure else None))
        if len(self.recent) < self.window:
            return "", []
        reasons = Counter(reason for _, reason in self.recent if reason)
        if not reasons:
            return "", []
        reason, count = reasons.most_common(1)[0]
        if count < self.needed:
            return "", []
        ids = [i for i, r in self.recent if r == reason]
        self.recent.clear()
        return reason, ids


@dataclass
class Halt:
    """Why workers stopped claiming before the issue was done."""

    why: str = ""  # "", "outage", "breaker", "state"
    detail: str = ""

    def set(self, why: str, detail: str) -> bool:
        if self.why:
            return False
        self.why, self.detail = why, detail
        return True


class IssueSender:
    """Drains one issue's ledger with ``smtp.concurrency`` workers, each with its own
    transport, until every delivery is ``sent``, ``failed`` or ``skipped``, the issue is
    halted (server down, breaker, an operator's pause or cancel), or ``stop`` is set.
    With ``wait`` false it also returns when only retries that are not due yet remain."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        row: Any,
        prepared: issues.Prepared,
        key: bytes,
        factory: TransportFactory,
        *,
        stop: asyncio.Event,
        progress: Progress | None = None,
        outage_delay: float = 30.0,
        batch: int = 10,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.row = row
        self.prepared = prepared
        self.key = key
        self.factory = factory
        self.stop = stop
        self.progress = progress
        self.outage_delay = outage_delay
        self.batch = batch
        self.owner = worker_id()
        self.limiter = RateLimiter(cfg.smtp.max_per_second)
        self.breaker = Breaker(cfg.smtp.breaker_window)
        self.halt = Halt()
        self.tally: Counter[str] = Counter()
        self.total = 0

    async def run(self, *, wait: bool = True) -> Counter[str]:
        issue_id = self.row.id
        self.store.release_dead_local_leases(pid_alive)
        self.total = self.store.pending(issue_id)
        workers = [
            asyncio.create_task(self._worker(wait, f"{self.owner}:{i}"))
            for i in range(self.cfg.smtp.concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        return self.tally

    def _count(self, what: str) -> None:
        self.tally[what] += 1
        if self.progress:
            self.progress(self.tally, self.total)

    def _halted(self) -> bool:
        return self.stop.is_set() or bool(self.halt.why)

    async def _worker(self, wait: bool, owner: str) -> None:
        # Each worker leases under its own name: rows whose lease ran out while still in
        # this worker's batch can then go to another worker, but never to both.
        transport = self.factory()
        batch: list[Any] = []
        # The last message the server accepted, not yet recorded (see Store.mark_sending).
        accepted: list[tuple[int, str]] = []
        try:
            while not self._halted():
                if not batch:
                    self._record(accepted)
                    batch = self._claim(owner)
                    if self._halted():
                        break
                    if not batch:
                        if not wait or not self.store.pending(self.row.id):
                            return
                        await self._idle()
                        continue
                await self._deliver(transport, batch.pop(0), accepted, owner)
        finally:
            self._record(accepted)
            self.store.release([r.id for r in batch], owner)
            await transport.close()

    def _claim(self, owner: str) -> list[Any]:
        current = self.store.get_issue_by_id(self.row.id)
        if current is None or current.status != issues.SENDING:
            self.halt.set("state", f"the issue is {current.status if current else 'gone'}")
            return []
        return self.store.claim(self.row.id, owner, self.batch, LEASE)

    def _record(self, accepted: list[tuple[int, str]]) -> None:
        while accepted:
            self.store.mark_sent(*accepted.pop())

    async def _idle(self) -> None:
        """Nothing claimable now: wait for the next retry (or a peer's lease), or a stop."""
        due = self.store.next_retry_at(self.row.id)
        delay = 1.0
        if due is not None:
            delay = min(max((due - utcnow()).total_seconds(), 0.05), 1.0)
        await sleep_unless(self.stop, delay)

    async def _deliver(
        self, transport: Any, row: Any, accepted: list[tuple[int, str]], owner: str
    ) -> None:
        template = self.prepared.template(row.lang, self.cfg.default_lang)
        try:
            message = self._personalize(template, row)
        except HeaderError as exc:
            self._record(accepted)
            self.store.mark_failed(
                row.id, str(exc), permanent=False, bounce_threshold=0, error_kind="message"
            )
            self._count("failed")
            return
        # The ledger is written from this loop's thread only: workers writing SQLite from
        # several threads wait on its lock (and its busy handler sleeps).
        sent = accepted.pop() if accepted else None
        state = self.store.mark_sending(row.id, owner, message.message_id, sent=sent, lease=LEASE)
        if state != "sending":
            self._count("skipped" if state == "skipped" else "lost")
            return
        await self.limiter.wait()
        try:
            await transport.send(
                envelope_sender(self.cfg, self.key, row.id),
                row.email,
                message.data,
                wire_ready=message.wire_ready,
            )
        except ServerError as exc:
            self._outage(row, exc)
            return
        except DeliveryError as exc:
            self._failed(row, exc)
            return
        # Recorded with the next message's 'sending', or at once if there is none.
        accepted.append((row.id, message.message_id))
        self._count("sent")
        self.breaker.record(row.id, None)

    def _personalize(self, template: MessageTemplate, row: Any) -> PreparedMessage:
        return template.personalize(
            to_address=row.email,
            to_name=row.name,
            unsubscribe_token=make_token(self.key, UNSUBSCRIBE, row.subscriber_id),
            preferences_token=make_token(self.key, PREFERENCES, row.subscriber_id),
            # A re-send after a crash keeps its Message-ID, so receivers can spot it.
            message_id=row.message_id,
            delivery_token=make_delivery_token(self.key, row.id),
        )

    def _outage(self, row: Any, exc: ServerError) -> None:
        """The server, not the recipient: the delivery goes back as if never tried, and
        the issue pauses until the server is tried again."""
        self.store.requeue([row.id], str(exc), **describe(exc))
        self._count("deferred")
        if self.halt.set("outage", str(exc)):
            resume_at = utcnow() + dt.timedelta(seconds=self.outage_delay)
            issues.pause_for_outage(self.store, self.row, f"server: {exc}", resume_at)

    def _failed(self, row: Any, exc: DeliveryError) -> None:
        attempts = row.attempts + 1
        smtp = self.cfg.smtp
        detail = describe(exc)
        hard = isinstance(exc, RecipientError) and exc.hard
        if exc.permanent or attempts >= smtp.max_attempts:
            bounced = self.store.mark_failed(
                row.id,
                str(exc),
                permanent=hard,
                bounce_threshold=smtp.bounce_threshold,
                **detail,
            )
            log.warning("delivery to %s failed (%s): %s", row.email, exc.kind, exc)
            if bounced:
                log.warning("%s is now marked bounced", row.email)
            self._count("failed")
        else:
            delay = backoff(attempts, smtp.retry_base_seconds)
            self.store.mark_retry(
                row.id, str(exc), utcnow() + dt.timedelta(seconds=delay), **detail
            )
            log.info("delivery to %s will be retried in %.0fs: %s", row.email, delay, exc)
            self._count("retrying")
        reason, ids = self.breaker.record(row.id, exc)
        if reason and self.halt.set("breaker", str(exc)):
            # Those recipients were not at fault: they get their message after the resume.
            self.store.requeue(ids, str(exc), **detail)
            why = (
                f"circuit breaker: {len(ids)} of the last {self.breaker.window} recipients "
                f"were refused for the same reason ({reason}): {exc}; "
                "check the sender's reputation or content, then `newsletter resume`"
            )
            issues.pause_for_breaker(self.store, self.row, why)


@dataclass
class SendReport:
    week: str
    status: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    this_run: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    stopped: bool = False
    paused_reason: str = ""
    gave_up: bool = False

    @property
    def done(self) -> bool:
        return self.status == issues.SENT

    def summary(self) -> str:
        rate = self.this_run["sent"] / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.week}: {issues.describe_counts(self.counts)} "
            f"({self.this_run['sent']} sent in this run, {rate:.0f}/s)"
        )
        if self.status == issues.PAUSED:
            text += f"; paused: {self.paused_reason}"
        return text


async def deliver(
    cfg: Config,
    store: Store,
    row: Any,
    prepared: issues.Prepared,
    key: bytes,
    *,
    wait: bool = True,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    outage_max: float | None = None,
    factory: TransportFactory | None = None,
) -> SendReport:
    """Send an issue that is ``sending`` until it is ``sent`` or halted.

    A server outage pauses the issue; with ``wait`` the server is tried again after
    ``smtp.retry_base_seconds``, doubling up to ``smtp.outage_retry_max``, and sending
    resumes by itself when it answers (after ``outage_max`` seconds of outage, if given,
    this gives up and leaves the issue paused). Without ``wait`` the paused issue is left
    for a later run."""
    stop = stop or asyncio.Event()
    factory = factory or transport_factory(cfg)
    started = time.monotonic()
    report = SendReport(row.week)
    base = max(cfg.smtp.retry_base_seconds, 0.05)
    cap = max(span_seconds(cfg.smtp.outage_retry_max), base)
    delay = base
    outage_since: float | None = None
    while not stop.is_set():
        row = await asyncio.to_thread(store.get_issue_by_id, row.id)
        if row.status == issues.PAUSED and row.paused_by == PausedBy.OUTAGE:
            if outage_since is None:
                outage_since = time.monotonic()
            if not wait:
                break
            if await sleep_unless(stop, (_aware(row.resume_at) - utcnow()).total_seconds()):
                break
            try:
                await _probe(factory)
            except ServerError as exc:
                if outage_max is not None and time.monotonic() - outage_since >= outage_max:
                    report.gave_up = True
                    break
                delay = min(delay * 2, cap)
                at = utcnow() + dt.timedelta(seconds=delay)
                await asyncio.to_thread(issues.retry_later, store, row, f"server: {exc}", at)
                continue
            await asyncio.to_thread(issues.end_outage, store, row)
            delay, outage_since = base, None
            continue
        if row.status != issues.SENDING:
            break
        sender = IssueSender(
            cfg,
            store,
            row,
            prepared,
            key,
            factory,
            stop=stop,
            progress=progress,
            outage_delay=delay,
        )
        report.this_run += await sender.run(wait=wait)
        if sender.halt.why != "outage":
            break
    row = await asyncio.to_thread(store.get_issue_by_id, row.id)
    if row.status == issues.SENDING and await asyncio.to_thread(issues.finish_if_done, store, row):
        row = await asyncio.to_thread(store.get_issue_by_id, row.id)
    report.status = row.status
    report.paused_reason = row.paused_reason or ""
    report.counts = await asyncio.to_thread(store.counts, row.id)
    report.elapsed = time.monotonic() - started
    report.stopped = stop.is_set()
    return report


async def _probe(factory: TransportFactory) -> None:
    transport = factory()
    try:
        await transport.probe()
    finally:
        with contextlib.suppress(Exception):
            await transport.close()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# --- single mails -----------------------------------------------------------------------------


async def send_mails(
    cfg: Config,
    store: Store,
    sign: Sign,
    *,
    stop: asyncio.Event,
    factory: TransportFactory | None = None,
    only: int | None = None,
) -> Counter[str]:
    """Send every single mail that is due now (confirmations, test copies), through the
    same transports, signing and retries as issues; returns the tally. A server failure
    leaves the rest for later and gives the attempt back. With ``only``, that mail alone."""
    factory = factory or transport_factory(cfg)
    owner = worker_id()
    tally: Counter[str] = Counter()
    transport = factory()
    try:
        while not stop.is_set():
            rows = await asyncio.to_thread(store.claim_mail, owner, 10, LEASE)
            if only is not None:
                keep = [r for r in rows if r.id == only]
                for r in rows:
                    if r.id != only:
                        await asyncio.to_thread(
                            store.finish_mail, r.id, "queued", attempts=r.attempts - 1
                        )
                rows = keep
            if not rows:
                return tally
            for mail in rows:
                outcome = await _send_mail(cfg, store, sign, transport, mail)
                tally[outcome] += 1
                if outcome == "deferred":
                    for rest in rows[rows.index(mail) + 1 :]:
                        await asyncio.to_thread(
                            store.finish_mail, rest.id, "queued", attempts=rest.attempts - 1
                        )
                    return tally
    finally:
        await transport.close()
    return tally


async def _send_mail(cfg: Config, store: Store, sign: Sign, transport: Any, mail: Any) -> str:
    smtp = cfg.smtp
    try:
        await transport.send(cfg.email.from_address, mail.recipient, sign(mail.data))
    except ServerError as exc:
        at = utcnow() + dt.timedelta(seconds=backoff(1, smtp.retry_base_seconds))
        await asyncio.to_thread(
            store.finish_mail,
            mail.id,
            "queued",
            attempts=mail.attempts - 1,
            next_attempt_at=at,
            last_error=str(exc),
            error_kind=exc.kind,
            smtp_code=exc.code,
        )
        log.warning("%s mail %s deferred: %s", mail.kind, mail.message_id, exc)
        return "deferred"
    except DeliveryError as exc:
        values = {"last_error": str(exc), "error_kind": exc.kind, "smtp_code": exc.code}
        if exc.permanent or mail.attempts >= smtp.max_attempts:
            await asyncio.to_thread(store.finish_mail, mail.id, "failed", **values)
            log.warning("%s mail %s failed: %s", mail.kind, mail.message_id, exc)
            return "failed"
        at = utcnow() + dt.timedelta(seconds=backoff(mail.attempts, smtp.retry_base_seconds))
        await asyncio.to_thread(store.finish_mail, mail.id, "queued", next_attempt_at=at, **values)
        return "retrying"
    await asyncio.to_thread(store.finish_mail, mail.id, "sent")
    log.info("%s mail %s sent", mail.kind, mail.message_id)
    return "sent"
