"""The sender: one drain of the outbox, for every message and every command.

Every outgoing message is a row of the ledger (:mod:`newsletter.store.ledger`): an issue's
deliveries, and single mails (confirmations, editor copies). :class:`Outbox` drains them
all the same way, whichever command runs it (``run``, ``serve``, ``worker``, ``tick``,
``send``): one claim, one rate limit, one signing point, one outage policy.

The ledger is the only truth about who got what. A message is ``sending`` before it is
handed to the server and ``sent`` only after the server's 250, so a crash can at worst
repeat the messages that were in flight, never skip anyone. How one lane is drained (its
workers, their marks, signing, and the failures below) is :mod:`newsletter.mail.lane`.

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
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from newsletter import lifecycle
from newsletter.config import Config, span_seconds
from newsletter.errors import NewsletterError
from newsletter.lifecycle import IssueState, PausedBy
from newsletter.mail.chat import ChatSetupError
from newsletter.mail.frozen import Prepared, frozen
from newsletter.mail.lane import Lane
from newsletter.mail.signing import alignment_problem, sign_message
from newsletter.mail.transport import (
    ServerError,
    TransportFactory,
    clean_maildir_tmp,
    pid_alive,
    probe,
    transport_factory,
)
from newsletter.pacing import RateLimiter, sleep_unless
from newsletter.store import Issue, Store, utcnow

log = logging.getLogger(__name__)

# How long a long-running sender leaves the chat posts alone after a chat refused its
# token or webhook (a command such as `newsletter post` stops at once instead).
CHAT_HOLD_SECONDS = 600.0

# Called after every delivery with this run's tally and how many were due at the start.
Progress = Callable[[Counter[str], int], None]
# Turns a built message into the bytes that go out (DKIM signing, or nothing).
Sign = Callable[[bytes], bytes]


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
