"""Transports (SMTP, Maildir) and the typed failures they raise.

A failure is classified where it happens, because what the sender must do differs:

- :class:`ServerError`: the server, not the recipient (connection refused or reset, a
  timeout before RCPT, TLS or login refused, ``421``, ``454``, a full outbox disk). It
  never consumes a recipient's attempts: the issue pauses and the server is retried.
- :class:`RecipientError`: RCPT (or a per-recipient DATA reply) refused. ``hard`` for an
  address that does not exist (``5.1.x``, or a ``5xx`` without an enhanced code: the same
  codes as a report by mail, :func:`bounce_kind`); a full mailbox (``5.2.2``) and ``4xx``
  replies are soft and retried.
- :class:`MessageError`: the message itself (``552`` too big, ``554`` content).
- :class:`PolicyError`: a policy block (``5.7.x``): says nothing about the address.

Enhanced status codes (RFC 3463) refine the basic reply code wherever a server sends one.

Every transport takes a ``gate``: awaited right before the message itself is handed over,
after the server has taken the envelope. The sender marks the message's row in the
ledger meanwhile, and a message goes only once its mark is written, so a crash never
leaves a message sent and its row unmarked. When the gate answers False the transaction
is abandoned and nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox
import os
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import aiosmtplib

from newsletter.config import Config
from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)

# Awaited before a message is handed over: False to abandon it (see the module's docstring).
Gate = Callable[[], Awaitable[bool]]


async def opened(gate: Gate | None) -> bool:
    """Whether a message may be handed over: no gate, or one that says so."""
    return gate is None or await gate()


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class DeliveryError(Exception):
    """A message that did not reach the server's queue. ``kind`` says whose fault it is."""

    kind: ClassVar[str] = "recipient"

    def __init__(
        self,
        message: str,
        *,
        permanent: bool,
        code: int | None = None,
        enhanced: str | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.enhanced = enhanced

    @property
    def reason(self) -> str:
        """What identical failures share, for the circuit breaker: the codes, not the text."""
        return f"{self.kind} {self.code or ''} {self.enhanced or ''}".strip()


class ServerError(DeliveryError):
    kind = "server"

    def __init__(self, message: str, *, code: int | None = None, enhanced: str | None = None):
        super().__init__(message, permanent=False, code=code, enhanced=enhanced)


class RecipientError(DeliveryError):
    kind = "recipient"

    @property
    def counts_as(self) -> str | None:
        """What the address's refusal counts as, once the message fails for good: the same
        as a report by mail with this code (:func:`bounce_kind`), ``hard`` (bounced at
        once) or ``soft`` (toward ``smtp.bounce_threshold``); None when the code says
        nothing about the address."""
        kind = bounce_kind(self.enhanced or "", self.permanent)
        return kind if kind in ("hard", "soft") else None

    @property
    def hard(self) -> bool:
        """An address that does not exist."""
        return self.counts_as == "hard"


class MessageError(DeliveryError):
    kind = "message"


class PolicyError(DeliveryError):
    kind = "policy"


def bounce_kind(status: str, permanent: bool = True) -> str:
    """``hard``, ``soft`` or ``blocked`` for an RFC 3463 status code of a failure.

    Address failures (``5.1.x``; ``5.2.x`` but a full mailbox or a too-large message;
    ``5.4.x`` routing; ``5.0.0``, which MTAs send for a 5xx that had no code) are hard;
    ``4.x.x``, ``5.2.2`` and ``5.2.3`` are soft. The mail system, protocol, content and
    policy subjects (``5.3``, ``5.5``, ``5.6``, ``5.7``) say nothing about the address.
    """
    if not status:
        return "hard" if permanent else "soft"
    klass, subject, detail = status.split(".")
    if klass == "4":
        return "soft"
    if klass != "5":
        return "blocked"
    if subject == "2" and detail in ("2", "3"):
        return "soft"
    if subject in ("0", "1", "2", "4"):
        return "hard"
    return "blocked"


def enhanced_code(message: str) -> str | None:
    """The RFC 3463 status code at the start of a reply's text, e.g. ``5.1.1``."""
    found = _ENHANCED.match(message or "")
    return ".".join(found.groups()) if found else None


def classify(stage: str, code: int, message: str) -> DeliveryError:
    """The typed failure for ``code message`` in reply to ``stage`` (MAIL, RCPT or DATA).

    ``421`` and ``454`` are the server's at any stage; at MAIL a ``4xx`` is the server's
    too (it refuses any sender for now), a ``5xx`` refuses our sender: a policy matter.
    """
    text = f"{code} {message}".strip()
    enhanced = enhanced_code(message)
    permanent = code >= 500
    if code in (421, 454) or (stage == "MAIL" and not permanent):
        return ServerError(text, code=code, enhanced=enhanced)
    detail = (enhanced or "")[2:]  # "7.1" of "5.7.1": the subject and its detail
    if detail.startswith("7."):
        return PolicyError(text, permanent=permanent, code=code, enhanced=enhanced)
    if stage == "MAIL":
        return PolicyError(text, permanent=True, code=code, enhanced=enhanced)
    if detail == "2.2":
        # A full mailbox (552 5.2.2 included): soft, whatever the basic code says.
        return RecipientError(text, permanent=False, code=code, enhanced=enhanced)
    if stage == "DATA" and permanent and (code in (552, 554) or detail.startswith(("6.", "3.4"))):
        return MessageError(text, permanent=True, code=code, enhanced=enhanced)
    return RecipientError(text, permanent=permanent, code=code, enhanced=enhanced)


class Transport(Protocol):
    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> str | None:
        """Hand one message over once ``gate`` allows; the id the receiving end gave
        it, when it gives one (a chat service does; a mail server's queue id is not
        kept)."""
        ...

    async def probe(self) -> None:
        """Raise :class:`ServerError` unless the server takes connections now."""
        ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Writes each message into a Maildir (``new/``), readable by any mail client."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Made here, each folder tolerating another process making it at the same moment
        # (mailbox creates tmp/, new/ and cur/ only if the top folder is new, and fails
        # when it loses that race).
        for folder in (path, path / "tmp", path / "new", path / "cur"):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.box = mailbox.Maildir(str(path), factory=None, create=False)

    def _add(self, data: bytes) -> None:
        # Maildir files use the local line ending; the message itself is unchanged.
        self.box.add(data.replace(b"\r\n", b"\n"))

    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> None:
        if not await opened(gate):
            return
        # In a thread: a file write with fsync must not hold up the loop (signal handlers,
        # the other workers, and in `serve` the web app).
        try:
            await asyncio.to_thread(self._add, data)
        except OSError as exc:
            raise ServerError(f"cannot write to the outbox {self.path}: {exc}") from None

    async def probe(self) -> None:
        if not self.path.is_dir():
            raise ServerError(f"the outbox {self.path} is missing")

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

    @property
    def where(self) -> str:
        return f"{self.cfg.smtp.host}:{self.cfg.smtp.port}"

    async def _connect(self) -> None:
        smtp = self.cfg.smtp
        try:
            await self.client.connect()
            if smtp.username:
                await self.client.login(smtp.username, smtp.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self.close()
            raise ServerError(
                f"SMTP login refused by {self.where}: {exc.code} {exc.message}", code=exc.code
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            await self.close()
            raise ServerError(
                f"{self.where} refused the connection: {exc.code} {exc.message}", code=exc.code
            ) from None
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise ServerError(f"cannot connect to {self.where}: {exc}") from None

    async def probe(self) -> None:
        if not self.client.is_connected:
            await self._connect()
        try:
            await self.client.noop()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise ServerError(f"{self.where} does not answer: {exc}") from None

    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> None:
        """Send one message; ``wire_ready`` bytes (CRLF, no line starting with a dot) go
        out as they are, anything else through aiosmtplib's ``sendmail``. ``gate`` is
        awaited once the server has taken the envelope (before the whole transaction
        for ``sendmail``)."""
        from newsletter.mail.message import is_wire_ready

        ready = wire_ready or is_wire_ready(data)
        for attempt in (1, 2):
            if not self.client.is_connected:
                await self._connect()
            # Asked once connected: before, the client has no protocol to ask.
            fast = ready and hasattr(self.client.protocol, "read_response")
            try:
                if fast:
                    await self._transaction(sender, recipient, data, gate)
                elif await opened(gate):
                    await self._sendmail(sender, recipient, data)
                return
            except _Refused as exc:
                if exc.code == 421 and attempt == 1:
                    # "closing connection" (e.g. a per-connection message limit): the
                    # message was not taken, so a fresh connection may send it at once.
                    await self.close()
                    continue
                failure = classify(exc.stage, exc.code, exc.message)
                if isinstance(failure, ServerError):
                    await self.close()
                else:
                    await self._reset()
                raise failure from None
            except aiosmtplib.SMTPServerDisconnected as exc:
                # Usually an idle or per-connection limit noticed on the next command:
                # retry once on a fresh connection. A drop after the final "." is
                # ambiguous (the server may have kept the message): at least once wins.
                await self.close()
                if attempt == 1:
                    continue
                raise ServerError(f"{self.where} disconnected: {exc}") from None
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                await self.close()
                raise ServerError(f"{self.where}: {type(exc).__name__}: {exc}") from None

    async def _sendmail(self, sender: str, recipient: str, data: bytes) -> None:
        try:
            errors, _ = await self.client.sendmail(sender, [recipient], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise _Refused("RCPT", refused.code, refused.message) from None
        except aiosmtplib.SMTPSenderRefused as exc:
            raise _Refused("MAIL", exc.code, exc.message) from None
        except aiosmtplib.SMTPDataError as exc:
            raise _Refused("DATA", exc.code, exc.message) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _Refused("DATA", exc.code, exc.message) from None
        if errors:
            code, message = next(iter(errors.values()))
            raise _Refused("RCPT", code, message)

    async def _transaction(
        self, sender: str, recipient: str, data: bytes, gate: Gate | None
    ) -> None:
        """MAIL, RCPT and DATA for a message that is already wire-ready; DATA only once
        ``gate`` allows, else the transaction is reset.

        ``sendmail`` runs two regular-expression passes over every message (line endings
        and dot-stuffing) and parses both addresses again: with 80 KB messages that was
        a third of the sender's time. Our messages are built with CRLF endings and no
        line starting with a dot, and the addresses were validated when they were
        stored, so the bytes go out as they are.
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
        ):
            response = await client.execute_command(verb, argument)
            if response.code not in accepted:
                raise _Refused(verb.decode(), response.code, response.message)
        if not await opened(gate):
            await self._reset()
            return
        response = await client.execute_command(b"DATA")
        if response.code != 354:
            raise _Refused("DATA", response.code, response.message)
        protocol = client.protocol
        assert protocol is not None
        protocol.write(data + b".\r\n")
        response = await protocol.read_response(timeout=self.cfg.smtp.timeout_seconds)
        if response.code != 250:
            raise _Refused("DATA", response.code, response.message)

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


class _Refused(Exception):
    """A reply the transaction did not expect, before it is classified."""

    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.stage, self.code, self.message = stage, code, message


TransportFactory = Callable[[], Transport]


def transport_factory(cfg: Config) -> TransportFactory:
    """SMTP when a host is configured, else the Maildir outbox."""
    if not cfg.smtp.host:
        path = cfg.outbox_path
        return lambda: MaildirTransport(path)
    if cfg.smtp.password and cfg.smtp.tls == "none":
        raise NewsletterError(
            "smtp.tls: a password is set, so TLS (starttls or implicit) is required"
        )
    return lambda: SmtpTransport(cfg)


async def probe(factory: TransportFactory) -> None:
    """Raise :class:`ServerError` unless a transport of ``factory`` reaches its server now."""
    transport = factory()
    try:
        await transport.probe()
    finally:
        with contextlib.suppress(Exception):
            await transport.close()


def describe(exc: BaseException) -> dict[str, Any]:
    """The columns a failure is recorded with."""
    if isinstance(exc, DeliveryError):
        return {"error_kind": exc.kind, "smtp_code": exc.code, "enhanced_code": exc.enhanced}
    return {"error_kind": None, "smtp_code": None, "enhanced_code": None}


# A Maildir writer's temporary file: ``TIME.M...P{pid}Q....HOST`` (mailbox.Maildir).
_TMP_PID = re.compile(r"P(\d+)Q")
# Maildir's own rule for a temporary file nobody finished (qmail's maildir(5)).
_TMP_MAX_AGE = 36 * 3600


def clean_maildir_tmp(path: Path) -> int:
    """Remove from the Maildir outbox's ``tmp/`` the files a killed writer left: those of
    a process of this host that no longer runs, and any older than 36 hours. Returns how
    many were removed. Never a file being written: its writer is alive."""
    folder = path / "tmp"
    removed = 0
    host = socket.gethostname()
    now = time.time()
    for entry in folder.iterdir() if folder.is_dir() else []:
        name = entry.name
        match = _TMP_PID.search(name)
        try:
            stale = now - entry.stat().st_mtime > _TMP_MAX_AGE
            dead = match is not None and name.endswith(host) and not pid_alive(int(match[1]))
            if stale or dead:
                entry.unlink()
                removed += 1
        except (FileNotFoundError, ValueError):
            continue
    if removed:
        log.info("removed %d unfinished files from %s", removed, folder)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
