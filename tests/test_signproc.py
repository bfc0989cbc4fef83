"""DKIM signatures made in signing processes: they verify as those made on the loop do, a
process that dies or is interrupted never leaves a request unanswered, and processes end
with the sender."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DKIM_DOMAIN, DKIM_ED25519_SELECTOR, DkimVerifiers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.mail.message import Composed, MessageTemplate
from newsletter.mail.signing import DkimKey, Signer
from newsletter.mail.signproc import (
    Answer,
    RemotePlan,
    SigningGone,
    SigningPool,
    signing_processes,
)
from newsletter.publish.render import RenderedIssue, render_issue
from newsletter.select import IsoWeek, build_issue

NAMES = ("김독자", 'Dr. "Quoted" Reader', "  spaced   out  name ", "a" * 120, "📧 Reader")


@pytest.fixture
def signer(dkim_key: tuple[bytes, bytes], ed25519_key: tuple[bytes, bytes]) -> Signer:
    keys = []
    for selector, pem in (("mail", dkim_key[0]), (DKIM_ED25519_SELECTOR, ed25519_key[0])):
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
        keys.append(DkimKey(selector, key))
    return Signer(DKIM_DOMAIN, keys)


@pytest.fixture
def template(issue_cfg: Config, seeds_archive, signer: Signer) -> MessageTemplate:  # type: ignore[no-untyped-def]
    cfg = issue_cfg.replace(smtp=dataclasses.replace(issue_cfg.smtp, host="smtp.example.org"))
    rendered: RenderedIssue = render_issue(
        cfg, build_issue(cfg, seeds_archive, IsoWeek(2024, 31)), "ko"
    )
    return MessageTemplate(cfg, rendered, signer=signer)


def _composed(template: MessageTemplate, count: int) -> list[Composed]:
    return [
        template.compose(
            to_address=f"reader{i}@example.org",
            to_name=NAMES[i % len(NAMES)],
            unsubscribe_token=f"u{i}x" * (1 + i % 5),
            preferences_token=f"p{i}",
            delivery_token=f"d-{i}",
        )
        for i in range(count)
    ]


def _tags(data: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature field of ``data``, unfolded."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields = head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n")
    found = []
    for field in fields:
        if field.lower().startswith("dkim-signature:"):
            tags = (part.strip().partition("=") for part in field.split(":", 1)[1].split(";"))
            found.append({name: value.replace(" ", "") for name, _, value in tags})
    return found


@pytest.mark.parametrize("processes", [1, 2])
def test_signatures_from_processes_verify_and_match_the_loops(
    template: MessageTemplate, dkim_verifiers: DkimVerifiers, processes: int
) -> None:
    composed = _composed(template, 12)

    async def sign() -> list[Answer]:
        assert template.signer is not None
        pool = await SigningPool.start(template.signer, processes)
        plan = pool.plan(*template.signing_parts())
        try:
            return await asyncio.gather(*(pool.submit(plan, c.own, c.body) for c in composed))
        finally:
            await pool.close()

    for index, (one, signatures) in enumerate(zip(composed, asyncio.run(sign()), strict=True)):
        assert isinstance(signatures, list)
        data = template.finish(one, signatures=signatures).data
        on_loop = template.finish(one).data
        # The same fields signed and the same body hash as on the loop; b= differs only
        # where the signing second (t=) does.
        for remote, local in zip(_tags(data), _tags(on_loop), strict=True):
            assert {k: remote[k] for k in ("s", "a", "d", "h", "bh")} == {
                k: local[k] for k in ("s", "a", "d", "h", "bh")
            }
        assert data.split(b"\r\n\r\n", 1)[1] == on_loop.split(b"\r\n\r\n", 1)[1]
        both = {"mail": True, DKIM_ED25519_SELECTOR: True}
        if index < 3:
            assert dkim_verifiers.verdicts(data) == both
        else:
            assert dkim_verifiers.dkimpy(data) == both


def test_a_killed_process_answers_every_request_with_signing_gone(
    template: MessageTemplate, caplog: pytest.LogCaptureFixture
) -> None:
    one = _composed(template, 1)[0]

    async def run() -> tuple[list[object], BaseException | None]:
        assert template.signer is not None
        pool = await SigningPool.start(template.signer, 1)
        plan = pool.plan(*template.signing_parts())
        first = await pool.submit(plan, one.own, one.body)
        assert isinstance(first, list) and len(first) == 2  # answered while it runs
        many = [pool.submit(plan, one.own, one.body) for _ in range(50)]
        (process,) = pool._processes
        assert process.channel.transport is not None
        process.channel.transport.kill()
        results = await asyncio.wait_for(asyncio.gather(*many, return_exceptions=True), 10)
        late: BaseException | None = None
        try:
            await pool.submit(plan, one.own, one.body)
        except SigningGone as exc:
            late = exc
        await pool.close()
        return results, late

    results, late = asyncio.run(run())
    assert "a signing process ended: signing on the event loop" in caplog.text
    assert all(isinstance(r, list | SigningGone) for r in results)
    assert any(isinstance(r, SigningGone) for r in results)
    assert isinstance(late, SigningGone)


def test_ctrl_c_leaves_the_process_signing_and_close_ends_it(template: MessageTemplate) -> None:
    one = _composed(template, 1)[0]

    async def run() -> int | None:
        assert template.signer is not None
        pool = await SigningPool.start(template.signer, 1)
        plan = pool.plan(*template.signing_parts())
        (process,) = pool._processes
        transport = process.channel.transport
        assert transport is not None
        await pool.submit(plan, one.own, one.body)
        assert pool.ready
        os.kill(transport.get_pid(), signal.SIGINT)  # as a terminal's Ctrl-C reaches it
        await asyncio.sleep(0.2)
        answer = await pool.submit(plan, one.own, one.body)
        assert isinstance(answer, list) and len(answer) == 2
        await pool.close()
        return transport.get_returncode()

    assert asyncio.run(run()) == 0


def test_a_request_the_process_cannot_sign_fails_alone(template: MessageTemplate) -> None:
    one = _composed(template, 1)[0]

    async def run() -> Answer:
        assert template.signer is not None
        pool = await SigningPool.start(template.signer, 1)
        plan = pool.plan(*template.signing_parts())
        unknown = RemotePlan(plan.number + 1, ())  # a plan the process was never given
        try:
            with pytest.raises(NewsletterError, match="DKIM signing failed: KeyError"):
                await pool.submit(unknown, one.own, one.body)
            return await pool.submit(plan, one.own, one.body)
        finally:
            await pool.close()

    answer = asyncio.run(run())
    assert isinstance(answer, list) and len(answer) == 2


def test_shared_body_pieces_are_sent_by_number(template: MessageTemplate) -> None:
    """Only what differs per recipient travels to a process: the pieces every message
    shares go as numbers."""
    chunks = template.signing_parts()[2]
    plan = RemotePlan(1, chunks)
    body = _composed(template, 1)[0].body
    spec = plan.spec(body)
    sent = sum(len(piece) for piece in spec if isinstance(piece, bytes))
    assert sent < 2_000 < sum(map(len, body))
    assert b"".join(chunks[p] if isinstance(p, int) else p for p in spec) == b"".join(body)
    copy = bytes(bytearray(chunks[0]))  # equal to a shared piece, but not it
    assert plan.spec([copy]) == [copy]


def test_the_process_leaves_when_the_sender_is_killed(tmp_path: Path) -> None:
    """A sender killed with SIGKILL closes its end of the pipe: the process reads the end
    of its input and leaves, instead of living on beside nothing."""
    program = """
import asyncio, sys
from cryptography.hazmat.primitives.asymmetric import ed25519
from newsletter.mail.signing import DkimKey, Signer
from newsletter.mail.signproc import SigningPool

async def main():
    signer = Signer("example.org", [DkimKey("s", ed25519.Ed25519PrivateKey.generate())])
    pool = await SigningPool.start(signer, 1)
    print(pool._processes[0].channel.transport.get_pid(), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""
    sender = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    assert sender.stdout is not None
    with sender.stdout:
        child = int(sender.stdout.readline())
    os.kill(child, 0)  # running
    sender.kill()
    sender.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # A child of a dead parent is reaped by init; until then it is a zombie.
        try:
            if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"signing process {child} outlived its sender")


@pytest.mark.parametrize(("cores", "processes"), [(1, 0), (2, 1), (3, 2), (16, 8)])
def test_one_signing_process_per_core_but_the_loops(cores: int, processes: int) -> None:
    assert signing_processes(cores) == processes


def test_requests_behind_cancelled_ones_are_still_sent(template: MessageTemplate) -> None:
    """Workers that stop cancel what they asked for; a request queued behind those still
    goes to the process once it has answered them (the process's in-flight slots free)."""
    one = _composed(template, 1)[0]

    async def run() -> Answer:
        assert template.signer is not None
        pool = await SigningPool.start(template.signer, 1)
        plan = pool.plan(*template.signing_parts())
        try:
            await pool.submit(plan, one.own, one.body)  # the keys and the plan taken
            cancelled = [pool.submit(plan, one.own, one.body) for _ in range(8)]
            waiting = pool.submit(plan, one.own, one.body)
            for future in cancelled:
                future.cancel()
            return await asyncio.wait_for(waiting, 10)
        finally:
            await pool.close()

    answer = asyncio.run(run())
    assert isinstance(answer, list) and len(answer) == 2


def test_bytes_that_are_no_answer_end_the_process_s_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Something other than answers on the channel (a library printing to standard
    output): the waiting requests fail at once, to be signed on the loop, instead of
    waiting for a frame of a gigabyte."""
    from newsletter.mail.signproc import _Channel

    async def run() -> BaseException | None:
        channel = _Channel()
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        channel.waiting.append(future)
        channel.pipe_data_received(1, b"hello from a library\n")
        return future.exception()

    assert isinstance(asyncio.run(run()), SigningGone)
    assert "a signing process wrote something other than answers" in caplog.text
