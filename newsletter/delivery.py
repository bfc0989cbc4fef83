"""Sending an issue: transports (SMTP, Maildir) and the workers that drain the ledger.

The ledger in the database is the only truth about who got what. A delivery is
``sending`` just before its message is handed to the server and ``sent`` only after
the server's 250, so a crash can at worst repeat the messages that were in flight,
never skip anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import mailbox
import os
import random
import secrets
import signal
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib

from .config import Config
from .errors import NewsletterError
from .message import HeaderError, MessageTemplate, is_wire_ready, message_template
from .models import Archive
from .render import LANGS, build_issue, publish_issue, render_issue
from .select import IsoWeek
from .store import Store, utcnow
from .tokens import make_token

log = logging.getLogger(__name__)

UNSUBSCRIBE = "unsubscribe"
LEASE = dt.timedelta(minutes=5)
MAX_BACKOFF = 3600.0


class DeliveryError(Exception):
    """A message the server did not take. ``permanent`` for 5xx replies."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    async def send(
        self, sender: str, recipient: str, data: bytes, *, wire_ready: bool = False
    ) -> None: ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Writes each message into a Maildir (``new/``), readable by any mail client."""

    def __init__(self, path: Path) -> None:
        self.box = mailbox.Maildir(str(path), factory=None, create=True)

    async def send(
        self, sender: str, recipient: str, data: bytes, *, wire_ready: bool = False
    ) -> None:
        # Maildir files use the local line ending; the message itself is unchanged.
        try:
            self.box.add(data.replace(b"\r\n", b"\n"))
        except OSError as exc:
            raise DeliveryError(f"cannot write to the outbox: {exc}", permanent=False) from None

    async def close(self) -> None:
        return None


class SmtpTransport:
    """One long-lived SMTP connection; never shared between workers."""

    def __init__(self, cfg: Config) -> None:
        smtp = cfg.smtp
        self.cfg = cfg
        context = None
        if smtp.tls != "none":
            # Loading the system's CA certificates takes ~25 ms: only when TLS is used.
            context = ssl.create_default_context()
            if not smtp.verify_certificates:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self.client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            use_tls=smtp.tls == "implicit",
            # Explicit: without it aiosmtplib stays in plaintext when STARTTLS is not offered.
            start_tls=smtp.tls == "starttls",
            validate_certs=smtp.verify_certificates,
            tls_context=context,
            timeout=smtp.timeout_seconds,
        )

    async def _connect(self) -> None:
        smtp = self.cfg.smtp
        try:
            await self.client.connect()
            if smtp.username:
                await self.client.login(smtp.username, smtp.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self.close()
            raise DeliveryError(
                f"SMTP login refused: {exc.code} {exc.message}", permanent=False
            ) from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise DeliveryError(
                f"cannot connect to {smtp.host}:{smtp.port}: {exc}", permanent=False
            ) from None

    async def send(
        self, sender: str, recipient: str, data: bytes, *, wire_ready: bool = False
    ) -> None:
        """Send one message; ``wire_ready`` bytes (see :func:`is_wire_ready`) go out as
        they are, anything else through aiosmtplib's ``sendmail``."""
        fast = (wire_ready or is_wire_ready(data)) and hasattr(
            self.client.protocol, "read_response"
        )
        for attempt in (1, 2):
            if not self.client.is_connected:
                await self._connect()
            try:
                if fast:
                    errors = await self._transaction(sender, recipient, data)
                else:
                    errors, _ = await self.client.sendmail(sender, [recipient], data)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients[0]
                await self._reset()
                raise DeliveryError(
                    f"{refused.code} {refused.message}", permanent=refused.code >= 500
                ) from None
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421 and attempt == 1:
                    # "closing connection" (e.g. a per-connection message limit): the
                    # message was not taken, so a fresh connection may send it at once.
                    await self.close()
                    continue
                await self._reset()
                raise DeliveryError(
                    f"{exc.code} {exc.message}", permanent=exc.code >= 500
                ) from None
            except aiosmtplib.SMTPServerDisconnected as exc:
                # Usually an idle or per-connection limit noticed on the next command:
                # retry once on a fresh connection. A drop after the final "." is
                # ambiguous (the server may have kept the message): at least once wins.
                await self.close()
                if attempt == 1:
                    continue
                raise DeliveryError(f"server disconnected: {exc}", permanent=False) from None
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await self.close()
                raise DeliveryError(f"{type(exc).__name__}: {exc}", permanent=False) from None
            if errors:
                code, message = next(iter(errors.values()))
                raise DeliveryError(f"{code} {message}", permanent=code >= 500)
            return

    async def _transaction(self, sender: str, recipient: str, data: bytes) -> dict[str, Any]:
        """MAIL, RCPT and DATA for a message that is already wire-ready.

        ``sendmail`` runs two regular-expression passes over every message (line endings
        and dot-stuffing) and parses both addresses again: with 80 KB messages that was
        a third of the sender's time. Our messages are built with CRLF endings and no
        line starting with a dot (:func:`is_wire_ready`), and the addresses were
        validated when they were stored, so the bytes go out as they are.
        """
        client = self.client
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        for verb, argument, accepted in (
            (b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", (250,)),
            (b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", (250, 251)),
            (b"DATA", None, (354,)),
        ):
            args = (verb,) if argument is None else (verb, argument)
            response = await client.execute_command(*args)
            if response.code not in accepted:
                raise aiosmtplib.SMTPResponseException(response.code, response.message)
        protocol = client.protocol
        assert protocol is not None
        protocol.write(data + b".\r\n")
        response = await protocol.read_response(timeout=self.cfg.smtp.timeout_seconds)
        if response.code != 250:
            raise aiosmtplib.SMTPResponseException(response.code, response.message)
        return {}

    async def _reset(self) -> None:
        try:
            await self.client.rset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            await self.close()

    async def close(self) -> None:
        if self.client.is_connected:
            try:
                await self.client.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                self.client.close()


def transport_factory(cfg: Config) -> Callable[[], Transport]:
    """SMTP when a host is configured, else the Maildir outbox."""
    if not cfg.smtp.host:
        path = cfg.outbox_path
        return lambda: MaildirTransport(path)
    if cfg.smtp.password and cfg.smtp.tls == "none":
        raise NewsletterError(
            "smtp.tls: a password is set, so TLS (starttls or implicit) is required"
        )
    return lambda: SmtpTransport(cfg)


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


def backoff(attempts: int, base: float) -> float:
    """Exponential, with jitter so that retries after an outage do not arrive together."""
    delay: float = min(base * 2.0 ** max(attempts - 1, 0), MAX_BACKOFF)
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


@dataclass
class SendReport:
    week: str
    counts: dict[str, int] = field(default_factory=dict)
    this_run: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    stopped: bool = False

    @property
    def done(self) -> bool:
        return not self.counts.get("queued") and not self.counts.get("sending")

    def summary(self) -> str:
        c = self.counts
        rate = self.this_run["sent"] / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"{self.week}: {c.get('sent', 0)} sent, {c.get('failed', 0)} failed, "
            f"{c.get('skipped', 0)} skipped, {c.get('queued', 0) + c.get('sending', 0)} waiting "
            f"({self.this_run['sent']} sent in this run, {rate:.0f}/s)"
        )


# Called after every delivery with this run's tally and how many were due at the start.
Progress = Callable[[Counter[str], int], None]


class Sender:
    """Drains one issue's ledger with ``smtp.concurrency`` workers, each with its own
    transport, until every delivery is ``sent`` or ``failed`` (or only retries that are
    not yet due remain, when ``wait`` is false)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        templates: Mapping[str, MessageTemplate],
        key: bytes,
        factory: Callable[[], Transport],
        *,
        stop: asyncio.Event | None = None,
        progress: Progress | None = None,
        batch: int = 10,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.templates = templates
        self.key = key
        self.factory = factory
        self.stop = stop or asyncio.Event()
        self.progress = progress
        self.batch = batch
        self.owner = worker_id()
        self.limiter = RateLimiter(cfg.smtp.max_per_second)
        self.tally: Counter[str] = Counter()
        self.total = 0

    async def run(self, issue_id: int, *, wait: bool = True) -> Counter[str]:
        self.store.release_dead_local_leases(pid_alive)
        self.total = self.store.pending(issue_id)
        workers = [
            asyncio.create_task(self._worker(issue_id, wait, f"{self.owner}:{i}"))
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

    async def _worker(self, issue_id: int, wait: bool, owner: str) -> None:
        # Each worker leases under its own name: rows whose lease ran out while still in
        # this worker's batch can then go to another worker, but never to both.
        transport = self.factory()
        batch: list[Any] = []
        # The last message the server accepted, not yet recorded (see Store.mark_sending).
        accepted: list[tuple[int, str]] = []
        try:
            while not self.stop.is_set():
                if not batch:
                    self._record(accepted)
                    batch = self.store.claim(issue_id, owner, self.batch, LEASE)
                    if not batch:
                        if not wait or not self.store.pending(issue_id):
                            return
                        await self._idle(issue_id)
                        continue
                row = batch.pop(0)
                await self._deliver(transport, row, accepted, owner)
        finally:
            self._record(accepted)
            self.store.release((r.id for r in batch), owner)
            await transport.close()

    def _record(self, accepted: list[tuple[int, str]]) -> None:
        while accepted:
            self.store.mark_sent(*accepted.pop())

    async def _idle(self, issue_id: int) -> None:
        """Nothing claimable now: wait for the next retry (or a peer's lease), or a stop."""
        due = self.store.next_retry_at(issue_id)
        delay = 1.0
        if due is not None:
            delay = min(max((due - utcnow()).total_seconds(), 0.05), 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=delay)

    async def _deliver(
        self, transport: Transport, row: Any, accepted: list[tuple[int, str]], owner: str
    ) -> None:
        template = self.templates.get(row.lang) or self.templates[self.cfg.default_lang]
        try:
            message = template.personalize(
                to_address=row.email,
                to_name=row.name,
                unsubscribe_token=make_token(self.key, UNSUBSCRIBE, row.subscriber_id),
                # A re-send after a crash keeps its Message-ID, so receivers can spot it.
                message_id=row.message_id,
            )
        except HeaderError as exc:
            self._record(accepted)
            self.store.mark_failed(row.id, str(exc), permanent=False, bounce_threshold=0)
            self._count("failed")
            return
        state = self.store.mark_sending(
            row.id,
            owner,
            message.message_id,
            sent=accepted.pop() if accepted else None,
            lease=LEASE,
        )
        if state != "sending":
            self._count("skipped" if state == "skipped" else "lost")
            return
        await self.limiter.wait()
        try:
            await transport.send(
                self.cfg.email.from_address, row.email, message.data, wire_ready=message.wire_ready
            )
        except DeliveryError as exc:
            self._failed(row, str(exc), exc.permanent)
            return
        # Recorded with the next message's 'sending', or at once if there is none.
        accepted.append((row.id, message.message_id))
        self._count("sent")

    def _failed(self, row: Any, error: str, permanent: bool) -> None:
        attempts = row.attempts + 1
        smtp = self.cfg.smtp
        if permanent or attempts >= smtp.max_attempts:
            bounced = self.store.mark_failed(
                row.id, error, permanent=permanent, bounce_threshold=smtp.bounce_threshold
            )
            log.warning("delivery to %s failed: %s", row.email, error)
            if bounced:
                log.warning("%s is now marked bounced", row.email)
            self._count("failed")
            return
        delay = backoff(attempts, smtp.retry_base_seconds)
        self.store.mark_retry(row.id, error, utcnow() + dt.timedelta(seconds=delay))
        log.info("delivery to %s will be retried in %.0fs: %s", row.email, delay, error)
        self._count("retrying")


# --- sending an issue --------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedIssue:
    week: IsoWeek
    subject: str
    templates: dict[str, MessageTemplate]


def prepare_issue(
    cfg: Config, archive: Archive, week: IsoWeek, *, publish: bool = True
) -> PreparedIssue:
    """Render the week's issue once per language and publish its web copy."""
    issue = build_issue(cfg, archive, week)
    if publish:
        publish_issue(cfg, issue)
    templates = {lang: message_template(cfg, render_issue(cfg, issue, lang)) for lang in LANGS}
    return PreparedIssue(week, templates[cfg.default_lang].rendered.subject, templates)


async def deliver_issue(
    cfg: Config,
    store: Store,
    prepared: PreparedIssue,
    key: bytes,
    *,
    wait: bool = True,
    retry_failed: bool = False,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> SendReport:
    """Create the issue (once), queue every active subscriber (idempotently), and send."""
    started = time.monotonic()
    row = store.ensure_issue(str(prepared.week), prepared.subject, status="sending")
    if row.status == "draft":
        store.set_issue_status(row.id, "sending")
    if retry_failed:
        log.info("%d failed deliveries queued again", store.retry_failed(row.id))
    added = store.fan_out(row.id)
    log.info("%s: %d new deliveries queued", prepared.week, added)
    sender = Sender(
        cfg, store, prepared.templates, key, transport_factory(cfg), stop=stop, progress=progress
    )
    report = SendReport(str(prepared.week))
    report.this_run = await sender.run(row.id, wait=wait)
    report.counts = store.counts(row.id)
    report.elapsed = time.monotonic() - started
    report.stopped = sender.stop.is_set()
    if report.done:
        store.set_issue_status(row.id, "sent")
    return report


def send_issue(
    cfg: Config,
    store: Store,
    prepared: PreparedIssue,
    key: bytes,
    *,
    wait: bool = True,
    retry_failed: bool = False,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> SendReport:
    """:func:`deliver_issue` in its own event loop. With ``handle_signals``, SIGTERM and
    SIGINT stop the claiming of new deliveries; messages in flight finish and are recorded."""

    async def main() -> SendReport:
        stop = asyncio.Event()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        return await deliver_issue(
            cfg,
            store,
            prepared,
            key,
            wait=wait,
            retry_failed=retry_failed,
            stop=stop,
            progress=progress,
        )

    return asyncio.run(main())


def send_test_copy(
    cfg: Config, prepared: PreparedIssue, key: bytes, address: str, lang: str
) -> str:
    """One copy to ``address`` outside the ledger (for the editor); returns its Message-ID."""
    template = prepared.templates.get(lang) or prepared.templates[cfg.default_lang]
    # Subscriber 0 does not exist: the copy's unsubscribe link works but changes nothing.
    message = template.personalize(
        to_address=address, to_name="", unsubscribe_token=make_token(key, UNSUBSCRIBE, 0)
    )

    async def main() -> None:
        transport = transport_factory(cfg)()
        try:
            await transport.send(cfg.email.from_address, address, message.data)
        finally:
            await transport.close()

    try:
        asyncio.run(main())
    except DeliveryError as exc:
        raise NewsletterError(f"test copy to {address} was not sent: {exc}") from None
    return message.message_id


def dry_run(cfg: Config, store: Store, prepared: PreparedIssue, key: bytes) -> tuple[int, int]:
    """Build the message of every active subscriber without sending or recording anything.
    Returns (messages, bytes)."""
    count = size = 0
    for sub in store.iter_subscribers("active"):
        template = prepared.templates.get(sub.lang) or prepared.templates[cfg.default_lang]
        message = template.personalize(
            to_address=sub.email,
            to_name=sub.name,
            unsubscribe_token=make_token(key, UNSUBSCRIBE, sub.id),
        )
        count += 1
        size += len(message.data)
    return count, size


def run_worker(
    cfg: Config,
    store: Store,
    load_archive: Callable[[], Archive],
    key: bytes,
    *,
    once: bool = False,
    poll: float = 10.0,
    progress: Progress | None = None,
) -> int:
    """Help send every issue in ``sending`` state until stopped (or, with ``once``, until
    there is none). Rendering is deterministic, so every worker builds the same bytes.
    Returns the number of messages this worker sent."""
    prepared: dict[str, PreparedIssue] = {}
    sent = 0

    async def main() -> None:
        nonlocal sent
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            rows = store.issues_in_status("sending")
            for row in rows:
                if stop.is_set():
                    break
                if row.week not in prepared:
                    prepared[row.week] = prepare_issue(
                        cfg, load_archive(), IsoWeek.parse(row.week), publish=False
                    )
                sender = Sender(
                    cfg,
                    store,
                    prepared[row.week].templates,
                    key,
                    transport_factory(cfg),
                    stop=stop,
                    progress=progress,
                )
                tally = await sender.run(row.id, wait=True)
                sent += tally["sent"]
                if not store.pending(row.id):
                    store.set_issue_status(row.id, "sent")
            if once and not rows:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll)

    asyncio.run(main())
    return sent
