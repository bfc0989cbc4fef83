"""The sender: one drain of the outbox, for every message and every command.

Every outgoing message is a row of the ledger (:mod:`newsletter.store.ledger`): an issue's
deliveries, and single mails (confirmations, editor copies). :class:`Outbox` drains them
all the same way, whichever command runs it (``run``, ``serve``, ``worker``, ``tick``,
``send``): one claim, one rate limit, one signing point, one outage policy.

The ledger is the only truth about who got what. A message is ``sending`` just before it
is handed to the server and ``sent`` only after the server's 250, so a crash can at worst
repeat the messages that were in flight, never skip anyone.

Failures are acted on by kind (:mod:`newsletter.mail.transport`): a server failure puts the
message back untouched and pauses the issue (``paused_by`` outage) until the server
answers again, which any drain ends once the pause's ``resume_at`` has passed; a refused
address counts as a report by mail with its code would (a ``5.1.x`` bounces at once, a
soft failure is retried with backoff, then counts toward ``smtp.bounce_threshold``); and
when most recent recipients of an issue fail for one reason that is not their address
(a policy block, a rejected message) the circuit breaker pauses the issue for a person.
A single mail has no issue to pause: it waits for the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from newsletter import lifecycle
from newsletter.config import Config, span_seconds
from newsletter.errors import NewsletterError
from newsletter.lifecycle import IssueState, PausedBy
from newsletter.mail.breaker import Breaker
from newsletter.mail.chat import ChatSetupError, ChatTransport
from newsletter.mail.frozen import Prepared, frozen
from newsletter.mail.message import HeaderError, recipient_tokens
from newsletter.mail.signing import alignment_problem, sign_message
from newsletter.mail.signplan import off_loop
from newsletter.mail.tokens import envelope_sender, make_delivery_token
from newsletter.mail.transport import (
    DeliveryError,
    RecipientError,
    ServerError,
    Transport,
    TransportFactory,
    clean_maildir_tmp,
    describe,
    pid_alive,
    probe,
    transport_factory,
)
from newsletter.pacing import RateLimiter, sleep_unless
from newsletter.store import Claimed, Issue, Store, utcnow
from newsletter.store.lanes import LaneLedger, lane_ledger, ledger_call, worker_id
from newsletter.store.tables import CHAT_KINDS

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF = 3600.0
# How often a sender busy with an issue looks for single mails that came due meanwhile
# (a confirmation should not wait for the end of a large send).
MAIL_CHECK_SECONDS = 1.0
PEER_POLL_SECONDS = 0.1
# How long a long-running sender leaves the chat posts alone after a chat refused its
# token or webhook (a command such as `newsletter post` stops at once instead).
CHAT_HOLD_SECONDS = 600.0

# Called after every delivery with this run's tally and how many were due at the start.
Progress = Callable[[Counter[str], int], None]
# Turns a built message into the bytes that go out (DKIM signing, or nothing).
Sign = Callable[[bytes], bytes]


def backoff(attempts: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Exponential, with jitter so that retries after an outage do not arrive together."""
    delay: float = min(base * 2.0 ** max(attempts - 1, 0), cap)
    return delay * random.uniform(0.5, 1.5)


@dataclass
class Halt:
    """Why workers stopped claiming before the issue was done: "", "outage", "breaker" or
    "state" (an operator paused or cancelled it)."""

    why: str = ""

    def set(self, why: str) -> bool:
        """The first reason wins; True for the worker that gave it."""
        if self.why:
            return False
        self.why = why
        return True


class Lane:
    """Drains one lane of the outbox: an issue's deliveries, with ``smtp.concurrency``
    workers each with its own transport, or the single mails, with one. An issue's workers
    also take single mails that come due meanwhile.

    Runs until the lane is empty (every delivery ``sent``, ``failed`` or ``skipped``), the
    issue is halted (server down, breaker, an operator's pause or cancel), or ``stop`` is
    set. With ``wait`` false it also returns when only retries that are not due remain."""

    def __init__(
        self,
        outbox: Outbox,
        row: Issue | None = None,
        prepared: Prepared | None = None,
        *,
        wait: bool = True,
        only: int | None = None,
        chat: bool = False,
    ) -> None:
        self.outbox = outbox
        # The chat posts' lane: one worker, so that a thread's replies keep their order.
        self.chat = chat
        self.cfg = outbox.cfg
        self.store = outbox.store
        self.row = row
        self.issue_id: int | None = None if row is None else row.id
        self.prepared = prepared
        self.wait = wait
        self.only = only
        self.owner = worker_id()
        self.breaker = Breaker(self.cfg.smtp.breaker_window)
        self.halt = Halt()
        self.tally: Counter[str] = Counter()
        self.total = 0
        self._mails_checked = 0.0

    async def run(self) -> Counter[str]:
        await self.outbox.recover()
        if not self.chat:
            self.outbox.check_signing()
        if self.issue_id is not None:
            self.total = await asyncio.to_thread(self.store.pending, self.issue_id)
        count = self.cfg.smtp.concurrency if self.issue_id is not None else 1
        workers = [asyncio.create_task(self._worker(f"{self.owner}:{i}")) for i in range(count)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        return self.tally

    def _count(self, what: str) -> None:
        self.tally[what] += 1
        if self.outbox.progress and self.issue_id is not None:
            self.outbox.progress(self.tally, self.total)

    def _halted(self) -> bool:
        return self.outbox.stop.is_set() or bool(self.halt.why)

    async def _worker(self, owner: str) -> None:
        # Each worker leases under its own name: rows whose lease ran out while still in
        # this worker's batch can then go to another worker, but never to both.
        async with contextlib.AsyncExitStack() as closing:
            transport: Transport = (
                ChatTransport(self.cfg, self.store) if self.chat else self.outbox.factory()
            )
            closing.push_async_callback(transport.close)
            ledger = await lane_ledger(self.store)
            closing.push_async_callback(ledger.close)
            batch: list[Claimed] = []
            # The last message the server accepted, not yet recorded (Store.mark_sending).
            accepted: list[tuple[int, str]] = []
            try:
                while not self._halted():
                    if not batch:
                        batch = await self._next_batch(ledger, owner, accepted)
                        if self._halted():
                            break
                        if not batch:
                            if not self.wait or not await self._pending():
                                return
                            await self._idle()
                            continue
                    await self._deliver(transport, ledger, batch.pop(0), accepted, owner)
            finally:
                await self._record(ledger, accepted)
                await self._ledger(self.store.release, [r.id for r in batch], owner)

    async def _next_batch(
        self, ledger: LaneLedger, owner: str, accepted: list[tuple[int, str]]
    ) -> list[Claimed]:
        """The next claim. The last message accepted is recorded with the next one's
        'sending', or here when there is no next one; a channel's next post waits for it."""
        if self.chat:
            await self._record(ledger, accepted)
        batch = await self._claim(ledger, owner)
        if not batch:
            await self._record(ledger, accepted)
        return batch

    async def _pending(self) -> int:
        if self.issue_id is None:
            return 0
        return await self._ledger(self.store.pending, self.issue_id)

    async def _ledger(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await ledger_call(self.store, fn, *args, **kwargs)

    async def _claim(self, ledger: LaneLedger, owner: str) -> list[Claimed]:
        batch = self.outbox.batch
        if self.issue_id is None:
            return await ledger.claim(None, owner, batch, LEASE, only=self.only, chat=self.chat)
        if time.monotonic() - self._mails_checked >= MAIL_CHECK_SECONDS:
            self._mails_checked = time.monotonic()
            mails = await ledger.claim(None, owner, batch, LEASE)
            if mails:
                return mails
        claimed = await ledger.claim(self.issue_id, owner, batch, LEASE)
        if not claimed:
            # An issue that stopped sending has nothing claimable: find out whether it did.
            current = await self._ledger(self.store.get_issue_by_id, self.issue_id)
            if current is None or current.status != IssueState.SENDING:
                self.halt.set("state")
        return claimed

    async def _record(self, ledger: LaneLedger, accepted: list[tuple[int, str]]) -> None:
        while accepted:
            await ledger.mark_sent(*accepted.pop())

    async def _idle(self) -> None:
        """Nothing claimable now: wait for the next retry (or a peer's lease), or a stop."""
        assert self.issue_id is not None
        due = await self._ledger(self.store.next_retry_at, self.issue_id)
        # Nothing queued: the rest is on the wire in other workers, which are about to
        # finish (or die, and their leases run out); looked at often, so that the send
        # ends with them rather than up to a second later.
        delay = PEER_POLL_SECONDS
        if due is not None:
            delay = min(max((due - utcnow()).total_seconds(), 0.05), 1.0)
        await sleep_unless(self.outbox.stop, delay)

    async def _build(self, row: Claimed) -> tuple[str, bytes, bool]:
        """The message of ``row`` as it goes out: (Message-ID, bytes, wire-ready). The one
        place messages are signed: an issue's as it is personalized (in a signing thread
        where there are cores to spare), a single mail's here."""
        if row.kind in CHAT_KINDS:
            return "", row.data or b"", False
        if row.issue_id is None:
            return row.message_id or "", self.outbox.sign(row.data or b""), False
        assert self.prepared is not None
        key = self.outbox.key
        template = self.prepared.template(row.lang, self.cfg.default_lang)
        composed = template.compose(
            to_address=row.email,
            to_name=row.name,
            **recipient_tokens(self.cfg, key, row.subscriber_id or 0),
            # A re-send after a crash keeps its Message-ID, so receivers can spot it.
            message_id=row.message_id,
            delivery_token=make_delivery_token(key, row.id),
        )
        message = await off_loop(template.finish, composed, template.signs)
        return message.message_id, message.data, message.wire_ready

    async def _deliver(
        self,
        transport: Transport,
        ledger: LaneLedger,
        row: Claimed,
        accepted: list[tuple[int, str]],
        owner: str,
    ) -> None:
        try:
            message_id, data, wire_ready = await self._build(row)
        except HeaderError as exc:
            await self._record(ledger, accepted)
            self.store.mark_failed(
                row.id, str(exc), permanent=False, bounce_threshold=0, error_kind="message"
            )
            self._count("failed")
            return
        sent = accepted.pop() if accepted else None
        state = await ledger.mark_sending(row.id, owner, message_id, sent=sent, lease=LEASE)
        if state != "sending":
            self._count("skipped" if state == "skipped" else "lost")
            return
        await self.outbox.limiter.wait()
        try:
            posted = await transport.send(
                envelope_sender(self.cfg, self.outbox.key, row.id),
                row.email,
                data,
                wire_ready=wire_ready,
            )
        except ServerError as exc:
            self._outage(row, exc)
            return
        except DeliveryError as exc:
            self._failed(row, exc)
            return
        except ChatSetupError as exc:
            # Not this post's fault: it waits, due at once, for the setup to be fixed.
            self.store.requeue([row.id], str(exc))
            raise
        # Recorded with the next message's 'sending', or at once if there is none.
        accepted.append((row.id, posted or message_id))
        self._count("sent")
        if row.issue_id is not None:
            self.breaker.record(row.id, None)
        else:
            log.info("%s mail %s sent", row.kind, message_id)

    def _outage(self, row: Claimed, exc: ServerError) -> None:
        """The server, not the recipient: the message goes back as if never tried, and
        the issue pauses until the server is tried again (a single mail waits as long)."""
        resume_at = utcnow() + dt.timedelta(seconds=self.outbox.outage_delay(self.row))
        at = resume_at if row.issue_id is None else None
        self.store.requeue([row.id], str(exc), at=at, **describe(exc))
        self._count("deferred")
        if not self.halt.set("outage"):
            return
        if self.row is not None:
            lifecycle.pause_for_outage(self.store, self.row, f"server: {exc}", resume_at)
        else:
            log.warning("%s mail %s deferred: %s", row.kind, row.message_id, exc)

    def _failed(self, row: Claimed, exc: DeliveryError) -> None:
        attempts = row.attempts + 1
        smtp = self.cfg.smtp
        detail = describe(exc)
        if exc.permanent or attempts >= smtp.max_attempts:
            bounced = self.store.mark_failed(
                row.id,
                str(exc),
                # An issue's refused recipient: hard or soft, as by mail (RecipientError).
                bounce=exc.counts_as
                if isinstance(exc, RecipientError) and row.issue_id is not None
                else None,
                bounce_threshold=smtp.bounce_threshold,
                **detail,
            )
            log.warning("%s to %s failed (%s): %s", _what(row), row.email, exc.kind, exc)
            if bounced:
                log.warning("%s is now marked bounced", row.email)
            self._count("failed")
        else:
            delay = backoff(attempts, smtp.retry_base_seconds)
            self.store.mark_retry(
                row.id, str(exc), utcnow() + dt.timedelta(seconds=delay), **detail
            )
            log.info("%s to %s will be retried in %.0fs: %s", _what(row), row.email, delay, exc)
            self._count("retrying")
        if row.issue_id is None or self.row is None:
            return  # the breaker watches an issue's recipients; a single mail stands alone
        reason, ids = self.breaker.record(row.id, exc)
        if reason and self.halt.set("breaker"):
            # Those recipients were not at fault: they get their message after the resume.
            self.store.requeue(ids, str(exc), **detail)
            why = (
                f"circuit breaker: {len(ids)} of the last {self.breaker.window} recipients "
                f"were refused for the same reason ({reason}): {exc}; "
                "check the sender's reputation or content, then `newsletter resume`"
            )
            lifecycle.pause_for_breaker(self.store, self.row, why)


def _what(row: Claimed) -> str:
    return "delivery" if row.issue_id is not None else f"{row.kind} mail"


@dataclass
class SendReport:
    week: str
    status: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    this_run: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    stopped: bool = False
    paused_reason: str = ""
    paused_by: str = ""
    gave_up: bool = False

    @property
    def done(self) -> bool:
        return self.status == IssueState.SENT

    def summary(self) -> str:
        rate = self.this_run["sent"] / self.elapsed if self.elapsed > 0 else 0.0
        text = (
            f"{self.week}: {lifecycle.describe_counts(self.counts)} "
            f"({self.this_run['sent']} sent in this run, {rate:.0f}/s)"
        )
        if self.status == IssueState.PAUSED:
            text += f"; paused: {self.paused_reason}"
        return text


class Outbox:
    """The one drain of the outbox in a process: every command that sends runs it, so each
    of them sends single mails, carries on every issue being sent, and ends an outage
    pause once its ``resume_at`` has passed and the server answers.

    One rate limit (``smtp.max_per_second``) and one transport factory for every lane;
    an issue's frozen content is read once per drain."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        key: bytes,
        *,
        stop: asyncio.Event | None = None,
        factory: TransportFactory | None = None,
        progress: Progress | None = None,
        sign: Sign | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.key = key
        self.stop = stop or asyncio.Event()
        self.factory = factory or transport_factory(cfg)
        self.progress = progress
        self.sign = sign or _signer(cfg)
        self.batch = max(cfg.smtp.claim_batch, 1)
        self.limiter = RateLimiter(cfg.smtp.max_per_second)
        self._frozen: dict[tuple[int, str], Prepared] = {}
        # Issues this drain has taken up, so that the log says so once per process.
        self._taken: set[int] = set()
        self._recovered = False
        self._signing_checked = not cfg.smtp.host
        self._chat_held_until = 0.0
        self.base_delay = max(cfg.smtp.retry_base_seconds, 0.05)
        self.max_delay = max(span_seconds(cfg.smtp.outage_retry_max), self.base_delay)

    async def recover(self) -> None:
        """What processes of this host killed mid-send left, undone before the first
        message (once: finding dead leases reads every row's lease). Their leased rows go
        back at once instead of when the leases run out, and in the Maildir outbox their
        half-written files leave ``tmp/``."""
        if self._recovered:
            return
        self._recovered = True
        await asyncio.to_thread(self.store.release_dead_local_leases, pid_alive)
        if not self.cfg.smtp.host:
            await asyncio.to_thread(clean_maildir_tmp, self.cfg.outbox_path)

    def check_signing(self) -> None:
        """Say once, as a real send starts, if receivers applying DMARC would not count its
        DKIM signature (the Maildir outbox, for trying things out, is not checked)."""
        if not self._signing_checked and (problem := alignment_problem(self.cfg)):
            log.warning("%s", problem)
        self._signing_checked = True

    def outage_delay(self, row: Issue | None) -> float:
        """How long to wait before trying the server again: ``smtp.retry_base_seconds``
        at first, then as long as the outage has lasted (so the waits double), up to
        ``smtp.outage_retry_max``. Worked out from the issue's row alone, so a `tick`
        run by cron an hour later backs off as a long-running `run` would."""
        if row is None or row.paused_at is None or row.status != IssueState.PAUSED:
            return self.base_delay
        lasted = (utcnow() - row.paused_at).total_seconds()
        return min(max(lasted, self.base_delay), self.max_delay)

    async def frozen(self, row: Issue) -> Prepared:
        key = (row.id, row.content_hash or "")
        if key not in self._frozen:
            self._frozen[key] = await asyncio.to_thread(frozen, self.store, self.cfg, row)
        return self._frozen[key]

    async def send_mails(self, *, only: int | None = None) -> Counter[str]:
        """Every single mail that is due now (``only``: that one alone)."""
        return await Lane(self, wait=False, only=only).run()

    async def send_posts(self) -> Counter[str]:
        """Every chat post that is due now, in the order they were queued."""
        return await Lane(self, wait=False, chat=True).run()

    async def drain(self, *, wait: bool = False) -> tuple[Counter[str], list[SendReport]]:
        """Everything due now, once: the single mails, then every issue being sent or
        paused by an outage whose retry time has come. Retries not yet due are left for
        a later drain, unless ``wait`` (then an issue's retries are waited for, and a
        server outage is tried once more before it is left). Returns the single mails'
        tally and a report per issue."""
        mails = await self.send_mails()
        if time.monotonic() >= self._chat_held_until:
            try:
                mails += await self.send_posts()
            except ChatSetupError as exc:
                # A refused token must not hold the mail back; said again in a while.
                log.error("chat posts: %s", exc)
                self._chat_held_until = time.monotonic() + CHAT_HOLD_SECONDS
        reports = []
        for row in await asyncio.to_thread(
            self.store.issues_in_status, IssueState.SENDING, IssueState.PAUSED
        ):
            if self.stop.is_set():
                break
            if row.status == IssueState.PAUSED and row.paused_by != PausedBy.OUTAGE:
                continue  # an operator's or the breaker's pause: only `resume` ends it
            if row.status == IssueState.PAUSED and row.resume_at and row.resume_at > utcnow():
                continue
            if row.id not in self._taken:
                self._taken.add(row.id)
                log.info("resuming the send of %s", row.week)
            try:
                report = await self.send_issue(row, wait=wait, outage_max=0.0 if wait else None)
            except NewsletterError as exc:
                log.error("the send of %s cannot go on: %s", row.week, exc)
                continue
            if report.this_run or report.status != row.status:
                log.info("%s", report.summary())
            reports.append(report)
        return mails, reports

    async def next_due(self) -> dt.datetime | None:
        """When a drain next has something to do (None: nothing is waiting)."""

        def due() -> dt.datetime | None:
            # Chat posts held back after a refusal wait for the hold, not for their time.
            held = time.monotonic() < self._chat_held_until
            times = [self.store.next_mail_at(chat=not held)]
            for row in self.store.issues_in_status(IssueState.SENDING, IssueState.PAUSED):
                if row.status == IssueState.SENDING:
                    times.append(self.store.next_retry_at(row.id))
                elif row.paused_by == PausedBy.OUTAGE:
                    times.append(row.resume_at)
            found = [t for t in times if t is not None]
            return min(found) if found else None

        return await asyncio.to_thread(due)

    async def send_issue(
        self, row: Issue, *, wait: bool = True, outage_max: float | None = None
    ) -> SendReport:
        """Send an issue that is ``sending`` (or paused by an outage) until it is ``sent``
        or halted.

        An outage's pause ends here once its ``resume_at`` has passed and the server
        answers, with ``wait`` or without; with ``wait`` this also sleeps until then, and
        keeps trying, doubling the wait up to ``smtp.outage_retry_max``, for up to
        ``outage_max`` seconds of outage if given (then it gives up, leaving the issue
        paused). Without ``wait`` a pause not yet due, and retries not yet due, are left
        for a later drain."""
        started = time.monotonic()
        report = SendReport(row.week)
        outage_since: float | None = None
        while not self.stop.is_set():
            row = await asyncio.to_thread(lifecycle.reload, self.store, row)
            if row.status == IssueState.PAUSED and row.paused_by == PausedBy.OUTAGE:
                if outage_since is None:
                    outage_since = time.monotonic()
                left = (row.resume_at - utcnow()).total_seconds() if row.resume_at else 0.0
                if left > 0 and (not wait or await sleep_unless(self.stop, left)):
                    break
                if not await self._server_back(row):
                    if outage_max is not None and time.monotonic() - outage_since >= outage_max:
                        report.gave_up = True
                        break
                    if not wait:
                        break
                continue
            if row.status != IssueState.SENDING:
                break
            lane = Lane(self, row, await self.frozen(row), wait=wait)
            report.this_run += await lane.run()
            if lane.halt.why != "outage":
                break
        row = await asyncio.to_thread(lifecycle.reload, self.store, row)
        if row.status == IssueState.SENDING and await asyncio.to_thread(
            lifecycle.finish_if_done, self.store, row
        ):
            row = await asyncio.to_thread(lifecycle.reload, self.store, row)
        report.status = row.status
        report.paused_reason = row.paused_reason or ""
        report.paused_by = row.paused_by or ""
        report.counts = await asyncio.to_thread(self.store.counts, row.id)
        report.elapsed = time.monotonic() - started
        report.stopped = self.stop.is_set()
        return report

    async def _server_back(self, row: Issue) -> bool:
        """Try the server for an issue paused by an outage: back to ``sending`` when it
        answers, else a later retry time. False while the server is still down."""
        try:
            await probe(self.factory)
        except ServerError as exc:
            at = utcnow() + dt.timedelta(seconds=self.outage_delay(row))
            await asyncio.to_thread(lifecycle.retry_later, self.store, row, f"server: {exc}", at)
            return False
        await asyncio.to_thread(lifecycle.end_outage, self.store, row)
        return True


def _signer(cfg: Config) -> Sign:
    return lambda data: sign_message(cfg, data)
