"""Transports and their typed failures: classification, and each kind from a real server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import FaultySmtpHandler, free_port, smtp_cfg

from newsletter.config import Config
from newsletter.mail.transport import (
    DeliveryError,
    Gate,
    MaildirTransport,
    MessageError,
    PolicyError,
    RecipientError,
    ServerError,
    SmtpTransport,
    classify,
    enhanced_code,
)

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\n\r\nbody\r\n"


@pytest.mark.parametrize(
    ("stage", "code", "text", "kind", "permanent"),
    [
        ("RCPT", 550, "5.1.1 No such user", RecipientError, True),
        ("RCPT", 550, "No such user here", RecipientError, True),
        ("RCPT", 450, "4.2.0 Greylisted, try again", RecipientError, False),
        ("RCPT", 552, "5.2.2 Mailbox full", RecipientError, False),
        ("DATA", 552, "5.2.2 Mailbox full", RecipientError, False),
        ("RCPT", 550, "5.7.1 Blocked by policy", PolicyError, True),
        ("DATA", 554, "5.7.1 Rejected for spam", PolicyError, True),
        ("DATA", 451, "4.7.1 Rate limited", PolicyError, False),
        ("DATA", 552, "5.3.4 Message too big", MessageError, True),
        ("DATA", 554, "Transaction failed", MessageError, True),
        ("DATA", 451, "4.3.0 Try again later", RecipientError, False),
        ("MAIL", 421, "4.7.0 Too many connections", ServerError, False),
        ("RCPT", 454, "4.7.0 TLS not available", ServerError, False),
        ("MAIL", 451, "4.3.0 Local error", ServerError, False),
        ("MAIL", 553, "5.1.8 Sender domain does not exist", PolicyError, True),
    ],
)
def test_classify(
    stage: str, code: int, text: str, kind: type[DeliveryError], permanent: bool
) -> None:
    failure = classify(stage, code, text)
    assert type(failure) is kind
    assert failure.permanent is permanent
    assert failure.code == code
    assert str(failure).startswith(str(code))


def test_hard_bounces_are_only_permanent_recipient_failures() -> None:
    assert classify("RCPT", 550, "5.1.1 unknown").hard  # type: ignore[attr-defined]
    assert not classify("RCPT", 552, "5.2.2 full").hard  # type: ignore[attr-defined]
    assert not isinstance(classify("DATA", 554, "5.7.1 spam"), RecipientError)


def test_enhanced_code() -> None:
    assert enhanced_code("5.1.1 No such user") == "5.1.1"
    assert enhanced_code("  4.2.2 full") == "4.2.2"
    assert enhanced_code("No code here 5.1.1") is None
    assert enhanced_code("") is None


def _send(cfg: Config, recipient: str) -> DeliveryError | None:
    async def main() -> DeliveryError | None:
        transport = SmtpTransport(cfg)
        try:
            await transport.send("sender@example.org", recipient, MESSAGE)
        except DeliveryError as exc:
            return exc
        finally:
            await transport.close()
        return None

    return asyncio.run(main())


def test_each_kind_from_a_real_server(
    cfg: Config, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port)
    handler.rcpt["gone@example.org"] = "550 5.1.1 No such user"
    handler.rcpt["full@example.org"] = "452 4.2.2 Mailbox full"
    handler.rcpt["blocked@example.org"] = "550 5.7.1 Blocked by policy"
    handler.always["spam@example.org"] = "policy"
    handler.always["content@example.org"] = "content"
    assert _send(cfg, "ok@example.org") is None
    gone = _send(cfg, "gone@example.org")
    assert isinstance(gone, RecipientError) and gone.hard and gone.enhanced == "5.1.1"
    full = _send(cfg, "full@example.org")
    assert isinstance(full, RecipientError) and not full.permanent
    blocked = _send(cfg, "blocked@example.org")
    assert isinstance(blocked, PolicyError) and blocked.code == 550
    spam = _send(cfg, "spam@example.org")
    assert isinstance(spam, PolicyError) and spam.reason == "policy 554 5.7.1"
    content = _send(cfg, "content@example.org")
    assert isinstance(content, MessageError) and content.code == 554
    assert handler.counts() == {"ok@example.org": 1}


def test_nothing_listening_is_the_servers_failure(cfg: Config) -> None:
    cfg = smtp_cfg(cfg, free_port(), timeout_seconds=2.0)
    failure = _send(cfg, "someone@example.org")
    assert isinstance(failure, ServerError)
    assert "cannot connect to 127.0.0.1" in str(failure)


def test_a_server_that_never_answers_is_the_servers_failure(cfg: Config) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts, never greets
        cfg = smtp_cfg(cfg, listener.getsockname()[1], timeout_seconds=0.5)
        assert isinstance(_send(cfg, "someone@example.org"), ServerError)


def test_probe_tells_whether_the_server_answers(
    cfg: Config, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    _, port = smtp_server

    async def probe(c: Config) -> None:
        transport = SmtpTransport(c)
        try:
            await transport.probe()
        finally:
            await transport.close()

    asyncio.run(probe(smtp_cfg(cfg, port)))
    with pytest.raises(ServerError):
        asyncio.run(probe(smtp_cfg(cfg, free_port())))


def test_an_unwritable_outbox_is_the_servers_failure(tmp_path: Path) -> None:
    box = tmp_path / "outbox"
    transport = MaildirTransport(box)
    asyncio.run(transport.send("a@example.org", "b@example.org", MESSAGE))
    assert len(list((box / "new").iterdir())) == 1
    # A file where the Maildir's tmp/ should be: no write can succeed, even as root.
    (box / "tmp").rmdir()
    (box / "tmp").write_text("")
    with pytest.raises(ServerError, match="cannot write to the outbox"):
        asyncio.run(transport.send("a@example.org", "b@example.org", MESSAGE))


class _Steps(FaultySmtpHandler):
    """Records each SMTP step the server sees, in order."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps

    async def handle_MAIL(self, *args: Any) -> str:
        self.steps.append("MAIL")
        return await super().handle_MAIL(*args)

    async def handle_RCPT(self, *args: Any) -> str:
        self.steps.append("RCPT")
        return await super().handle_RCPT(*args)

    async def handle_DATA(self, *args: Any) -> str:
        self.steps.append("DATA")
        return await super().handle_DATA(*args)


@pytest.mark.parametrize("wire_ready", [True, False])
def test_a_message_goes_only_through_an_open_gate(cfg: Config, wire_ready: bool) -> None:
    """The gate is asked once the server has taken the envelope (before the whole
    transaction for a message that still needs dot-stuffing); closed, the transaction is
    abandoned and the connection still serves the next message."""
    from aiosmtpd.controller import Controller

    steps: list[str] = []
    handler = _Steps(steps)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    message = MESSAGE if wire_ready else MESSAGE + b".dot-stuffed\r\n"

    def gate(answer: bool) -> Gate:
        async def asked() -> bool:
            steps.append(f"gate {answer}")
            return answer

        return asked

    async def main() -> None:
        transport = SmtpTransport(smtp_cfg(cfg, port))
        try:
            for answer, to in ((False, "closed@example.org"), (True, "open@example.org")):
                await transport.send(
                    "a@example.org", to, message, wire_ready=wire_ready, gate=gate(answer)
                )
        finally:
            await transport.close()

    try:
        asyncio.run(main())
    finally:
        controller.stop()
    assert handler.counts() == {"open@example.org": 1}
    envelope = ["MAIL", "RCPT"]
    if wire_ready:
        assert steps == [*envelope, "gate False", *envelope, "gate True", "DATA"]
    else:
        assert steps == ["gate False", "gate True", *envelope, "DATA"]


def test_a_closed_gate_writes_nothing_to_the_outbox(tmp_path: Path) -> None:
    async def closed() -> bool:
        return False

    box = tmp_path / "outbox"
    transport = MaildirTransport(box)
    asyncio.run(transport.send("a@example.org", "b@example.org", MESSAGE, gate=closed))
    assert list((box / "new").iterdir()) == []
