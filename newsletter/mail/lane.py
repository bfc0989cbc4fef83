"""One lane of the outbox, drained: an issue's deliveries, the single mails, or the chat
posts (:class:`Lane`), for :class:`~newsletter.mail.sender.Outbox`.

A lane's workers each send one message at a time over a transport of their own. Each
builds its next few messages ahead (:data:`AHEAD`): where a signing process signs
(:mod:`newsletter.mail.signproc`), the signatures of the next messages are being made
while the current one is on the wire, so that the event loop never waits for them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from newsletter import lifecycle
from newsletter.lifecycle import IssueState
from newsletter.mail.breaker import Breaker
from newsletter.mail.chat import ChatSetupError, ChatTransport
from newsletter.mail.frozen import Prepared
from newsletter.mail.message import Composed, HeaderError, MessageTemplate, recipient_tokens
from newsletter.mail.signproc import (
    Answer,
    RemotePlan,
    SigningGone,
    SigningPool,
    signing_processes,
)
from newsletter.mail.tokens import envelope_sender, make_delivery_token
from newsletter.mail.transport import (
    DeliveryError,
    RecipientError,
    ServerError,
    Transport,
    describe,
)
from newsletter.pacing import sleep_unless
from newsletter.store import Claimed, Issue, utcnow
from newsletter.store.lanes import LaneLedger, lane_ledger, ledger_call, worker_id
from newsletter.store.tables import CHAT_KINDS

if TYPE_CHECKING:
    from newsletter.mail.sender import Outbox

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF = 3600.0
# How often a sender busy with an issue looks for single mails that came due meanwhile
# (a confirmation should not wait for the end of a large send).
MAIL_CHECK_SECONDS = 1.0
PEER_POLL_SECONDS = 0.1
# How many messages each worker has built (and sent to be signed) ahead of the one on the
# wire: the signatures are ready when their turn comes, and a signing process is never
# asked for one long before it is needed (it signs in the order it is asked).
AHEAD = 3
# How long a message waits for a signing process (stopped, or stuck) before the event
# loop signs it itself.
SIGN_WAIT_SECONDS = 10.0
# Signing processes start for a send of at least this many messages (starting one takes
# about a tenth of a second); smaller ones are signed on the loop.
SIGN_IN_PROCESSES_FROM = 200


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


@dataclass(slots=True)
class _Outgoing:
    """A claimed message on its way out, its building started by :meth:`Lane._start`."""

    row: Claimed
    template: MessageTemplate | None = None
    composed: Composed | None = None
    error: HeaderError | None = None
    signatures: asyncio.Future[Answer] | None = None


class _Hand:
    """What one worker holds: rows claimed and not started yet, then its next messages,
    their building started."""

    def __init__(self) -> None:
        self.rows: collections.deque[Claimed] = collections.deque()
        self.ahead: collections.deque[_Outgoing] = collections.deque()
        # The last claim found nothing: send what is in hand before claiming again.
        self.dry = False

    def drop(self) -> list[int]:
        """Let go of everything in hand (a stop, a halt): the ids to release."""
        ids = [out.row.id for out in self.ahead] + [row.id for row in self.rows]
        for out in self.ahead:
            if out.signatures is not None:
                out.signatures.cancel()
        self.ahead.clear()
        self.rows.clear()
        return ids


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
        self.pool: SigningPool | None = None
        # The lane's ledger, when its workers share one (:attr:`LaneLedger.shared`); else
        # the first worker's, until that worker takes it.
        self.ledger: LaneLedger | None = None
        # The pool's plans, by the id of the template they sign for.
        self.plans: dict[int, RemotePlan] = {}
        self._mails_checked = 0.0

    async def run(self) -> Counter[str]:
        await self.outbox.recover()
        if not self.chat:
            self.outbox.check_signing()
        if self.issue_id is not None:
            self.total = await asyncio.to_thread(self.store.pending, self.issue_id)
        count = self.cfg.smtp.concurrency if self.issue_id is not None else 1
        try:
            self.pool = await self._signing_pool()
            self.ledger = await lane_ledger(self.store)
            await self._run_workers(count)
        finally:
            if self.ledger is not None:  # shared, or not taken by a worker
                await self.ledger.close()
            if self.pool is not None:
                await self.pool.close()
        return self.tally

    async def _run_workers(self, count: int) -> None:
        workers = [asyncio.create_task(self._worker(f"{self.owner}:{i}")) for i in range(count)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _signing_pool(self) -> SigningPool | None:
        """Processes to sign this send's messages, when it is large enough to pay for
        starting them and there is a core for them (:func:`signing_processes`)."""
        if self.prepared is None or self.total < SIGN_IN_PROCESSES_FROM:
            return None
        signers = {template.signer for template in self.prepared.templates.values()}
        count = signing_processes()
        if len(signers) != 1 or None in signers or not count:
            return None
        (signer,) = signers
        assert signer is not None
        try:
            pool = await SigningPool.start(signer, count)
        except OSError as exc:
            log.warning("signing on the event loop: cannot start a signing process: %s", exc)
            return None
        try:
            for template in self.prepared.templates.values():
                self.plans[id(template)] = pool.plan(*template.signing_parts())
        except BaseException:
            await pool.close()
            raise
        return pool

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
            ledger = self.ledger
            if ledger is None or not ledger.shared:
                # A ledger of its own: the lane's first one, or a new one.
                ledger, self.ledger = ledger or await lane_ledger(self.store), None
                closing.push_async_callback(ledger.close)
            hand = _Hand()
            # The last message the server accepted, not yet recorded (Store.mark_sending).
            accepted: list[tuple[int, str]] = []
            try:
                while not self._halted():
                    if not await self._refill(hand, ledger, owner, accepted):
                        if self._halted():
                            break
                        if not self.wait or not await self._pending():
                            return
                        await self._idle()
                        continue
                    await self._deliver(transport, ledger, hand.ahead.popleft(), accepted, owner)
            finally:
                await self._record(ledger, accepted)
                await self._ledger(self.store.release, hand.drop(), owner)

    async def _refill(
        self, hand: _Hand, ledger: LaneLedger, owner: str, accepted: list[tuple[int, str]]
    ) -> bool:
        """Claim more as the worker's hand runs low, and start building its next messages.
        False when it holds nothing to send (or the lane halted).

        The last message accepted is recorded with the next one's 'sending', or here when
        there is no next one; a channel's next post is claimed only once the previous one
        is recorded (its lane holds one post of a thread at a time)."""
        if not hand.rows and not hand.ahead:
            hand.dry = False
        depth = 1 if self.chat else AHEAD
        if not hand.dry and len(hand.rows) + len(hand.ahead) < (1 if self.chat else AHEAD + 1):
            if self.chat:
                await self._record(ledger, accepted)
            claimed = await self._claim(ledger, owner)
            hand.rows.extend(claimed)
            # Nothing more now: the hand is sent out before the next claim.
            hand.dry = not claimed
        if self._halted():
            return False
        while hand.rows and len(hand.ahead) < depth:
            hand.ahead.append(self._start(hand.rows.popleft()))
        if not hand.ahead:
            await self._record(ledger, accepted)
            return False
        return True

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
            # Taken off the list once written: a write cancelled or failed keeps it there.
            await ledger.mark_sent(*accepted[-1])
            accepted.pop()

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

    def _start(self, row: Claimed) -> _Outgoing:
        """Start building an issue's message: composed for its recipient, and its
        signatures asked of a signing process when there is one."""
        out = _Outgoing(row)
        if row.issue_id is None or row.kind in CHAT_KINDS:
            return out  # built in advance, signed (if a mail) as it goes out
        assert self.prepared is not None
        key = self.outbox.key
        out.template = template = self.prepared.template(row.lang, self.cfg.default_lang)
        try:
            out.composed = template.compose(
                to_address=row.email,
                to_name=row.name,
                **recipient_tokens(self.cfg, key, row.subscriber_id or 0),
                # A re-send after a crash keeps its Message-ID, so receivers can spot it.
                message_id=row.message_id,
                delivery_token=make_delivery_token(key, row.id),
            )
        except HeaderError as exc:
            out.error = exc
            return out
        plan = self.plans.get(id(template))
        if self.pool is not None and plan is not None and self.pool.ready:
            out.signatures = self.pool.submit(plan, out.composed.own, out.composed.body)
        return out

    async def _build(self, out: _Outgoing) -> tuple[str, bytes, bool]:
        """The message as it goes out: (Message-ID, bytes, wire-ready). The one place
        messages are signed: an issue's by a signing process (started by :meth:`_start`)
        or here, a single mail's here."""
        row = out.row
        if row.kind in CHAT_KINDS:
            return "", row.data or b"", False
        if row.issue_id is None:
            return row.message_id or "", self.outbox.sign(row.data or b""), False
        if out.error is not None:
            raise out.error
        assert out.template is not None and out.composed is not None
        signatures = None
        if (future := out.signatures) is not None:
            try:
                # Most are ready by now: no timer for those.
                answer = (
                    future.result()
                    if future.done()
                    else await asyncio.wait_for(future, SIGN_WAIT_SECONDS)
                )
                assert isinstance(answer, list)
                signatures = answer
            except (SigningGone, TimeoutError) as exc:
                log.debug("signing on the event loop: %r", exc)  # finish signs, below
        message = out.template.finish(out.composed, signatures=signatures)
        return message.message_id, message.data, message.wire_ready

    async def _deliver(
        self,
        transport: Transport,
        ledger: LaneLedger,
        out: _Outgoing,
        accepted: list[tuple[int, str]],
        owner: str,
    ) -> None:
        row = out.row
        try:
            message_id, data, wire_ready = await self._build(out)
        except HeaderError as exc:
            await self._record(ledger, accepted)
            self.store.mark_failed(
                row.id, str(exc), permanent=False, bounce_threshold=0, error_kind="message"
            )
            self._count("failed")
            return
        sent = accepted.pop() if accepted else None
        # Marked while the rate limit is waited for and the server takes the envelope:
        # the previous message's 'sent' goes with it at once, and the transport hands
        # this message over only once the mark is written (its gate).
        marking = asyncio.ensure_future(
            ledger.mark_sending(row.id, owner, message_id, sent=sent, lease=LEASE)
        )
        try:
            await self.outbox.limiter.wait()
            posted, failure = await self._send(transport, row, data, wire_ready, marking)
            state = await marking
        except BaseException:
            if sent is not None:  # maybe not written: recorded on the way out instead
                accepted.append(sent)
            marking.cancel()
            raise
        if state == "stopped":
            self.halt.set("state")  # paused or cancelled: what the workers hold goes back
            return
        if state != "sending":
            self._count("skipped" if state == "skipped" else "lost")
            return
        if isinstance(failure, ServerError):
            self._outage(row, failure)
            return
        if isinstance(failure, DeliveryError):
            self._failed(row, failure)
            return
        if isinstance(failure, ChatSetupError):
            # Not this post's fault: it waits, due at once, for the setup to be fixed.
            self.store.requeue([row.id], str(failure))
            raise failure
        # Recorded with the next message's 'sending', or at once if there is none.
        accepted.append((row.id, posted or message_id))
        self._count("sent")
        if row.issue_id is not None:
            self.breaker.record(row.id, None)
        else:
            log.info("%s mail %s sent", row.kind, message_id)

    async def _send(
        self,
        transport: Transport,
        row: Claimed,
        data: bytes,
        wire_ready: bool,
        marking: asyncio.Future[str],
    ) -> tuple[str | None, DeliveryError | ChatSetupError | None]:
        """The message handed to ``transport`` once ``marking`` says its row is marked
        sending: what the receiving end called it, or why it was not taken."""

        async def marked() -> bool:
            try:
                return await marking == "sending"
            except Exception:
                return False  # raised where the lane awaits the mark

        try:
            posted = await transport.send(
                envelope_sender(self.cfg, self.outbox.key, row.id),
                row.email,
                data,
                wire_ready=wire_ready,
                gate=marked,
            )
        except (DeliveryError, ChatSetupError) as exc:
            return None, exc
        return posted, None

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
