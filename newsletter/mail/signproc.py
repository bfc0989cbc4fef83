"""DKIM signatures made in processes beside the sender's event loop.

An RSA-2048 signature costs about 0.28 ms, as much as half of everything else the event
loop does for a message, and it has to be made for each recipient (the signature covers
their own To and List-Unsubscribe). A thread does not take it off the loop: OpenSSL
signs without the GIL, but the thread needs the GIL back for every message, and each
hand-over stalls the loop (measured on two cores: the loop's CPU per message fell by 40%
and its messages per second not at all). A process of its own has no GIL to share.

Each process holds the signing plan of every message template of the send
(:class:`~newsletter.mail.signplan.SigningPlan`) and the body pieces the template's
messages share, sent it once (:meth:`SigningPool.plan`). A message then costs the loop
little: its own header fields and the few body pieces that differ per recipient go to a
process (about 1 KB; the shared pieces are named by number), which hashes the body,
canonicalizes the headers and signs, and answers with the DKIM-Signature fields as soon
as it has them. The messages come out byte for byte as signed on the loop (the same
plan's code runs in the process).

The processes read their requests on standard input and answer on standard output, in
frames (a 4-byte length, then a pickle: the two ends are this module, in one program).
They get the keys over that pipe, never on a command line, ignore Ctrl-C (the sender
decides when to stop) and leave when their input closes, which a killed sender's does
too. A process that dies fails its waiting requests with :class:`SigningGone`; the
sender then signs those on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from newsletter.errors import NewsletterError
from newsletter.mail.signing import DkimKey, Signer
from newsletter.mail.signplan import SigningPlan
from newsletter.pacing import usable_cores

log = logging.getLogger(__name__)

__all__ = ["Answer", "RemotePlan", "SigningGone", "SigningPool", "signing_processes"]

_LENGTH = struct.Struct("!I")
# No answer or request comes near this: a longer frame means the stream is not ours.
_MAX_FRAME = 1 << 24
# A process's requests answered before another is sent it: enough to keep it busy while
# answers travel, few enough that a request never waits behind work not yet needed.
_IN_FLIGHT = 4
# How long a closing process may take to finish what it was sent before it is killed.
_CLOSE_SECONDS = 5.0


class SigningGone(NewsletterError):
    """A signing process died (or was closed) before answering: sign on the loop instead."""


def signing_processes(cores: int | None = None) -> int:
    """How many processes sign beside the event loop: one per core but the loop's (at most
    eight), none on one core."""
    if cores is None:
        cores = usable_cores()
    return max(0, min(cores - 1, 8))


def _frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _key_pem(key: DkimKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# What a process answers: the signatures, True for a plan or its keys taken, or an error.
Answer = list[bytes] | bool


class _Channel(asyncio.SubprocessProtocol):
    """One signing process's pipes: the requests it was sent, in order, and its answers."""

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self.waiting: collections.deque[asyncio.Future[Answer]] = collections.deque()
        self.buffer = bytearray()
        self.gone = False
        self.closing = False
        # Called once the process cannot answer: requests not yet sent fail too.
        self.on_gone: Callable[[], None] | None = None
        # Called when answers made room for more requests.
        self.on_room: Callable[[], None] | None = None
        self.exited = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.transport = transport

    def send(self, value: object) -> None:
        pipe = self.transport.get_pipe_transport(0) if self.transport else None
        if pipe is None or self.gone:
            raise SigningGone("the signing process is gone")
        pipe.write(_frame(value))  # type: ignore[attr-defined]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        answered = False
        while len(self.buffer) >= _LENGTH.size and not self.gone:
            (size,) = _LENGTH.unpack_from(self.buffer)
            if size > _MAX_FRAME:
                # Not an answer (something else wrote to the channel): nothing that
                # follows can be trusted either.
                log.warning("a signing process wrote something other than answers")
                self.fail()
                return
            end = _LENGTH.size + size
            if len(self.buffer) < end:
                break
            answer = pickle.loads(self.buffer[_LENGTH.size : end])
            del self.buffer[:end]
            if not self.waiting:
                continue  # an answer to nothing asked: cannot be placed, so dropped
            answered = True
            future = self.waiting.popleft()
            if future.done():
                continue  # cancelled meanwhile (its worker stopped)
            if isinstance(answer, str):
                future.set_exception(NewsletterError(f"DKIM signing failed: {answer}"))
            else:
                future.set_result(answer)
        if answered and self.on_room is not None:
            self.on_room()  # fewer in flight, cancelled ones too: send what is queued

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.fail()

    def process_exited(self) -> None:
        self.fail()
        if not self.exited.done():
            self.exited.set_result(None)

    def fail(self) -> None:
        if not self.gone and not self.closing:
            log.warning("a signing process ended: signing on the event loop")
        self.gone = True
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(SigningGone("the signing process ended before answering"))
        if self.on_gone is not None:
            self.on_gone()


class _Process:
    """One signing process: requests beyond the few it is working on wait here, so that
    the one the sender needs next is the next it is sent."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        channel.on_gone = self.fail_queued
        channel.on_room = self.pump
        self.queued: collections.deque[tuple[tuple[Any, ...], asyncio.Future[Answer]]] = (
            collections.deque()
        )

    @property
    def load(self) -> int:
        return len(self.channel.waiting) + len(self.queued)

    def submit(self, request: tuple[Any, ...], future: asyncio.Future[Answer]) -> None:
        self.queued.append((request, future))
        self.pump()

    def pump(self) -> None:
        """Send queued requests while fewer than ``_IN_FLIGHT`` are unanswered."""
        channel = self.channel
        batch = []
        while self.queued and len(channel.waiting) < _IN_FLIGHT:
            request, future = self.queued.popleft()
            if future.done():
                continue
            channel.waiting.append(future)
            batch.append(request)
        if not batch:
            return
        try:
            channel.send(batch)
        except (SigningGone, OSError) as exc:
            log.debug("signing process: %s", exc)
            channel.fail()

    def fail_queued(self) -> None:
        while self.queued:
            _, future = self.queued.popleft()
            if not future.done():
                future.set_exception(SigningGone("the signing process is gone"))


class RemotePlan:
    """A signing plan the pool's processes hold (:meth:`SigningPool.plan`), and the body
    pieces they know by number."""

    __slots__ = ("chunks", "index", "number")

    def __init__(self, number: int, chunks: Sequence[bytes]) -> None:
        self.number = number
        # Kept alive here, so that no other object can take one of their ids.
        self.chunks = tuple(chunks)
        self.index = {id(chunk): i for i, chunk in enumerate(self.chunks)}

    def spec(self, body: Sequence[bytes]) -> list[int | bytes]:
        """``body``'s pieces, each shared one as its number (by identity: an equal piece
        made for one recipient is sent as it is)."""
        index = self.index
        return [index.get(id(piece), piece) for piece in body]


class SigningPool:
    """Processes that sign for one :class:`Signer`, each given the request that is needed
    soonest. :meth:`submit` returns a future of the DKIM-Signature fields (each ending in
    CRLF), or of :class:`SigningGone` when no process could answer."""

    def __init__(self, signer: Signer, processes: Sequence[_Process]) -> None:
        self._processes = list(processes)
        self._ready = [
            _quiet(self._ask(p, ("keys", signer.domain, _keys(signer)))) for p in processes
        ]
        self._plans = 0

    @classmethod
    async def start(cls, signer: Signer, count: int) -> SigningPool:
        """``count`` processes, each handed the signer's domain and keys as it starts
        (:attr:`ready` once they have loaded them)."""
        loop = asyncio.get_running_loop()
        processes: list[_Process] = []
        try:
            for _ in range(count):
                _, channel = await loop.subprocess_exec(
                    _Channel,
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                )
                processes.append(_Process(channel))
        except BaseException:
            await cls(signer, processes).close()  # the ones that did start
            raise
        log.debug("signing in %d processes beside the event loop", count)
        return cls(signer, processes)

    @property
    def ready(self) -> bool:
        """Whether a process has started and taken the keys (until then, and once all are
        gone, messages are better signed on the loop than kept waiting)."""
        return any(
            future.done() and not future.exception() and not process.channel.gone
            for future, process in zip(self._ready, self._processes, strict=True)
        )

    def plan(self, head: bytes, lead: bytes, chunks: Sequence[bytes]) -> RemotePlan:
        """Hand every process a :class:`SigningPlan` of ``head`` and ``lead``, and the body
        pieces ``chunks`` that messages may then name by number."""
        self._plans += 1
        plan = RemotePlan(self._plans, chunks)
        for process in self._processes:
            _quiet(self._ask(process, ("plan", plan.number, head, lead, plan.chunks)))
        return plan

    def submit(
        self, plan: RemotePlan, own: Sequence[bytes], body: Sequence[bytes]
    ) -> asyncio.Future[Answer]:
        """The signatures of the message made of ``own`` header fields and ``body``
        (as :meth:`SigningPlan.signatures` takes them), signed by the least busy process."""
        alive = [p for p in self._processes if not p.channel.gone]
        if not alive:
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            future.set_exception(SigningGone("no signing process is running"))
            return future
        return self._ask(
            min(alive, key=lambda p: p.load), ("sign", plan.number, own, plan.spec(body))
        )

    @staticmethod
    def _ask(process: _Process, request: tuple[Any, ...]) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if process.channel.gone:
            future.set_exception(SigningGone("the signing process is gone"))
        else:
            process.submit(request, future)
        return future

    async def close(self) -> None:
        """End the processes once they have answered what they were sent."""
        for future in self._ready:
            future.cancel()
        for process in self._processes:
            process.channel.closing = True
            process.fail_queued()
            if process.channel.transport is not None:
                pipe = process.channel.transport.get_pipe_transport(0)
                if pipe is not None:
                    pipe.close()
        for process in self._processes:
            channel = process.channel
            try:
                await asyncio.wait_for(asyncio.shield(channel.exited), _CLOSE_SECONDS)
            except TimeoutError:
                if channel.transport is not None:
                    with contextlib.suppress(ProcessLookupError):
                        channel.transport.kill()
            if channel.transport is not None:
                channel.transport.close()


def _quiet(future: asyncio.Future[Answer]) -> asyncio.Future[Answer]:
    """A future nobody awaits: its failure is seen by the requests that follow it."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


def _keys(signer: Signer) -> list[tuple[str, bytes]]:
    return [(key.selector, _key_pem(key)) for key in signer.keys]


# -- the signing process -----------------------------------------------------------------------


def _read(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    return pickle.loads(stream.read(size))


def _load_signer(domain: str, keys: list[tuple[str, bytes]]) -> Signer:
    loaded = []
    for selector, pem in keys:
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
        loaded.append(DkimKey(selector, key))
    return Signer(domain, loaded)


class _Signing:
    """The process's side: its signer and the plans it was handed."""

    def __init__(self) -> None:
        self.signer: Signer | None = None
        self.plans: dict[int, tuple[SigningPlan, tuple[bytes, ...]]] = {}

    def answer(self, request: tuple[Any, ...]) -> Answer:
        kind, *args = request
        if kind == "keys":
            self.signer = _load_signer(*args)
            return True
        assert self.signer is not None, "no keys yet"
        if kind == "plan":
            number, head, lead, chunks = args
            self.plans[number] = (SigningPlan(self.signer, head, lead), chunks)
            return True
        number, own, spec = args
        plan, chunks = self.plans[number]
        return plan.signatures(own, [chunks[p] if isinstance(p, int) else p for p in spec])


def _step_aside() -> None:
    """Run as a batch task: woken by the sender's request, it does not preempt the
    sender's event loop, whose core it would otherwise take (it would rather wait for
    the other core, which the loop cannot use)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main() -> None:
    """Answer what standard input asks for, each answer written as soon as it is made."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _step_aside()
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers may reach the channel
    signing = _Signing()
    while (batch := _read(requests)) is not None:
        for request in batch:
            answer: Answer | str
            try:
                answer = signing.answer(request)
            except Exception as exc:  # said to the sender, which fails that request
                answer = f"{type(exc).__name__}: {exc}"
            answers.write(_frame(answer))
            answers.flush()


if __name__ == "__main__":
    main()
