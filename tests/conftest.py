"""Shared fixtures: the seeds archive, a settings object for a temporary folder."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.archive.digest import load_archive
from newsletter.config import Config, load_config
from newsletter.models import Archive, Digest, Media, Paper, Section

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return SEEDS


@pytest.fixture(scope="session")
def seeds_archive() -> Archive:
    return load_archive(SEEDS)


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    """Each test starts with the usual umask: the CLI sets 077 for its process, and a test
    that runs it in-process must not make the next test's files private."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Embedded defaults, with every relative path under a temporary folder."""
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return load_config(path, env={}, overrides={"source": str(SEEDS)})


# -- the weekly issue and its email ---------------------------------------------------------


@pytest.fixture
def issue_cfg(cfg: Config) -> Config:
    """Settings of a deployed newsletter: a public https site and a real sender domain."""
    import dataclasses

    return cfg.replace(
        base_url="https://news.example.org/",
        email=dataclasses.replace(
            cfg.email,
            from_address="weekly@news.example.org",
            unsubscribe_mailto="unsubscribe@news.example.org",
            contact="문의: editor@news.example.org",
        ),
    )


def make_paper(
    arxiv_id: str,
    *,
    title: str = "A paper",
    votes: int | None = 10,
    authors: tuple[str, ...] = ("A. Author", "B. Author"),
    sections: tuple[tuple[str | None, str], ...] = ((None, "요약 한 줄입니다."),),
    media_url: str | None = None,
) -> Paper:
    """A paper for tests, with an image thumbnail when ``media_url`` is given."""
    return Paper(
        arxiv_id=arxiv_id,
        title=title,
        votes=votes,
        authors=authors,
        sections=tuple(Section(label, text) for label, text in sections),
        media=Media("image", media_url) if media_url else None,
    )


def long_week(papers: int = 10, day: dt.date = dt.date(2024, 5, 20)) -> Archive:
    """One day of ``papers`` papers with long labelled Korean summaries (a worst case)."""
    text = (
        "대규모 언어 모델의 추론 능력을 향상시키기 위한 새로운 방법을 제안하고 실험으로 검증합니다. "
        * 12
    )
    labels = ("What's New", "Technical Details", "Performance Highlights", "Limitations")
    return Archive(
        digests=(
            Digest(
                date=day,
                papers=tuple(
                    make_paper(
                        f"2405.{10000 + i}",
                        title=f"Paper {i}: Scaling Long-Context Reasoning with Sparse Mixture of Experts",
                        votes=100 - i,
                        authors=tuple(f"Author {j}" for j in range(12)),
                        sections=tuple((label, text) for label in labels),
                        media_url=f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.{10000 + i}.png",
                    )
                    for i in range(papers)
                ),
            ),
        )
    )


# -- a real HTTP server -----------------------------------------------------------------


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """Start an ASGI app on a real uvicorn server on a free loopback port; gives the base URL.

    ``base = live_server(create_app(cfg))``; every server is stopped at teardown. An app
    that must know its own address is built by a function of it:
    ``base = live_server(build=lambda base: create_app(cfg.replace(base_url=base + "/")))``.
    """
    import socket
    import threading
    import time

    import uvicorn

    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: Any = None, *, build: Callable[[str], Any] | None = None) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound before the server starts: no port race
        if build is not None:
            app = build(f"http://127.0.0.1:{sock.getsockname()[1]}")
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", ws="none", lifespan="on", http="h11")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- a real SMTP server on loopback, with faults on demand ----------------------------------

SMTP_FAULTS = ("temp", "perm", "drop", "slow", "policy", "content")


class FaultySmtpHandler:
    """An aiosmtpd handler that records every accepted message per recipient and can
    answer 4xx, 5xx, drop the connection mid-DATA or reply slowly, per address.

    ``script[address]`` is a list of actions consumed one per delivery attempt;
    ``always[address]`` applies to every attempt. ``per_connection`` makes the server
    refuse (421, and close) the next MAIL after that many messages on one connection.
    """

    def __init__(self) -> None:
        import threading
        from collections import defaultdict

        self.lock = threading.Lock()
        self.received: dict[str, list[bytes]] = defaultdict(list)
        # The envelope sender (MAIL FROM) of each accepted message, per recipient.
        self.senders: dict[str, list[str]] = defaultdict(list)
        self.peers: set[Any] = set()
        self.script: dict[str, list[str]] = {}
        self.always: dict[str, str] = {}
        self.delay = 0.0
        self.per_connection = 0
        self.attempts: dict[str, int] = defaultdict(int)
        # Replies to RCPT TO, per address (e.g. "550 5.1.1 No such user").
        self.rcpt: dict[str, str] = {}

    def _action(self, address: str) -> str:
        with self.lock:
            self.attempts[address] += 1
            queue = self.script.get(address)
            if queue:
                return queue.pop(0)
            return self.always.get(address, "ok")

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        count = getattr(session, "messages", 0)
        if self.per_connection and count >= self.per_connection:
            server.transport.close()
            return "421 4.7.0 Too many messages on this connection"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.rcpt.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        (address,) = envelope.rcpt_tos
        action = self._action(address.lower())
        if self.delay:
            await asyncio.sleep(self.delay)
        if action == "temp":
            return "451 4.3.0 Try again later"
        if action == "perm":
            return "550 5.1.1 No such user"
        if action == "policy":
            return "554 5.7.1 Message rejected: sender reputation"
        if action == "content":
            return "554 Message content rejected"
        if action == "drop":
            server.transport.close()
            return "451 4.4.2 Connection dropped"
        if action == "slow":
            await asyncio.sleep(0.2)
        session.messages = getattr(session, "messages", 0) + 1
        with self.lock:
            self.received[address.lower()].append(envelope.original_content or envelope.content)
            self.senders[address.lower()].append(envelope.mail_from)
            self.peers.add(session.peer)
        return "250 2.0.0 Accepted"

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {address: len(messages) for address, messages in self.received.items()}


def legacy_delivery_token(key: bytes, delivery_id: int) -> str:
    """A delivery token as written before tokens were sealed: ``ID-SIG``, the delivery id
    in base 36 and 64 bits of its HMAC in base 32 (what messages already sent carry)."""
    import base64
    import hashlib
    import hmac

    digits, number = "", delivery_id
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            break
    mac = hmac.new(key, f"delivery\x00{digits}".encode(), hashlib.sha256).digest()[:8]
    return f"{digits}-{base64.b32encode(mac).decode('ascii').rstrip('=').lower()}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port where a connection is neither made nor refused: its listener's
    queue is full and never accepted from, so the kernel drops every new SYN (as a host
    that does not answer would)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))  # in progress: it fills the queue
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


@pytest.fixture
def smtp_server() -> Iterator[tuple[FaultySmtpHandler, int]]:
    """A real SMTP server (aiosmtpd) on a free loopback port: (handler, port)."""
    from aiosmtpd.controller import Controller

    handler = FaultySmtpHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=10_000_000)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def smtp_cfg(cfg: Config, port: int, **smtp: Any) -> Config:
    """``cfg`` sending to the loopback test server, with fast retries."""
    import dataclasses

    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "retry_base_seconds": 0.01,
        "timeout_seconds": 10.0,
        **smtp,
    }
    return cfg.replace(
        smtp=dataclasses.replace(cfg.smtp, **values),
        secret_key="test-secret-key-of-at-least-32-bytes",
    )


# --- services started by .ci/services.sh (Postfix, PostgreSQL) ------------------------------

POSTGRES_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL",
    "postgresql+psycopg://newsletter:newsletter@127.0.0.1:5432/newsletter_test",
)
MTA_PORT = int(os.environ.get("NEWSLETTER_TEST_MTA_PORT", "25"))
MTA_MAILDIR = Path(os.environ.get("NEWSLETTER_TEST_MTA_MAILDIR", "/home/newsletter-test/Maildir"))


def need_service(what: str, why: str) -> None:
    """Skip when a service is missing, unless NEWSLETTER_REQUIRE_SERVICES says it must run."""
    message = f"{what} is not available ({why}); run .ci/services.sh as root"
    if os.environ.get("NEWSLETTER_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty database on the PostgreSQL server (all tables dropped before and after)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # any driver or connection failure means "not available"
        need_service("PostgreSQL", str(exc).splitlines()[0])

    def clean() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("drop schema public cascade"))
            conn.execute(sa.text("create schema public"))

    clean()
    yield POSTGRES_URL
    clean()
    engine.dispose()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system of its own that is full: a 16 KiB tmpfs (mounted as root,
    as CI runs), filled once ``config.toml`` (empty) is written into it."""
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        need_service("a tmpfs mount (needs root)", mounted.stderr.strip())
    try:
        (folder / "config.toml").write_text("", encoding="utf-8")
        with (folder / "filler").open("wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 1024)
            except OSError:
                pass  # full
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


@pytest.fixture
def mta() -> tuple[int, Path]:
    """Postfix on loopback delivering newsletter-test@localhost into a Maildir: (port, Maildir)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", MTA_PORT), timeout=2) as sock:
            banner = sock.recv(200)
    except OSError as exc:
        need_service("Postfix", str(exc))
    if not banner.startswith(b"220") or not MTA_MAILDIR.parent.is_dir():
        need_service("Postfix", f"unexpected banner {banner!r} or no {MTA_MAILDIR.parent}")
    return MTA_PORT, MTA_MAILDIR


@pytest.fixture(scope="session")
def dkim_key() -> tuple[bytes, bytes]:
    """A fresh RSA key: (PEM private key, DNS TXT record)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.fixture(scope="session")
def ed25519_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key: (PEM private key, DNS TXT record with the raw public key)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return pem, b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)


# --- DKIM verifiers, with public keys served by a real DNS server (dnsmasq) -------------------

DKIM_DOMAIN = "news.example.org"
DKIM_RSA_SELECTORS = ("mail", "weekly")
DKIM_ED25519_SELECTOR = "mail-ed"
DKIM_VERIFY_PL = Path(__file__).resolve().parent / "dkim_verify.pl"


class DkimVerifiers:
    """dkimpy and Perl's Mail::DKIM, both asking dnsmasq on 127.0.0.1:``port`` for keys."""

    def __init__(self, port: int) -> None:
        import dns.resolver

        self.port = port
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = port

    def txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the TXT record at ``name``, its strings joined."""
        import dns.exception

        try:
            answer = self.resolver.resolve(name.decode("ascii"), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    def dkimpy(self, data: bytes) -> dict[str, bool]:
        """Selector -> whether dkimpy verifies that signature."""
        import dkim

        results: dict[str, bool] = {}
        checker = dkim.DKIM(data, minkey=1024)
        count = sum(
            1 for line in data.split(b"\r\n") if line.lower().startswith(b"dkim-signature:")
        )
        for index in range(count):
            try:
                ok = checker.verify(idx=index, dnsfunc=self.txt)
            except dkim.DKIMException:  # some failures (a body hash mismatch) raise
                ok = False
            results[checker.signature_fields[b"s"].decode("ascii")] = bool(ok)
        return results

    def mail_dkim(self, data: bytes) -> dict[str, tuple[str, str]]:
        """Selector -> Mail::DKIM's (result, detail): "pass", "fail", "invalid", ..."""
        import subprocess

        done = subprocess.run(
            ["perl", str(DKIM_VERIFY_PL), str(self.port)],
            input=data,
            capture_output=True,
            timeout=60,
            check=True,
        )
        results = {}
        for line in done.stdout.decode("ascii").splitlines():
            result, selector, algorithm, detail = line.split(" ", 3)
            results[selector] = (result, f"{algorithm} {detail}")
        return results

    def verdicts(self, data: bytes) -> dict[str, bool]:
        """Selector -> whether its signature verifies, asserting that the two verifiers agree.

        Mail::DKIM before 1.20230630 (Debian 12 has 1.20230212) does not know Ed25519 and
        says so ("unsupported algorithm"); dkimpy alone decides those.
        """
        ours, theirs = self.dkimpy(data), self.mail_dkim(data)
        assert set(ours) == set(theirs), (ours, theirs)
        for selector, (result, detail) in theirs.items():
            if detail.startswith("ed25519-sha256 ") and "unsupported_algorithm" in detail:
                continue
            assert ours[selector] == (result == "pass"), (selector, ours, theirs)
        return ours


def _dkim_tools() -> str:
    """The dnsmasq binary, once dnsmasq and Mail::DKIM (with Ed25519) are known present."""
    import shutil
    import subprocess

    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        need_service("dnsmasq", "Debian package dnsmasq-base")
    probe = ["perl", "-MMail::DKIM::Verifier", "-MNet::DNS", "-e1"]
    try:
        subprocess.run(probe, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        need_service("Mail::DKIM", "Debian package libmail-dkim-perl")
    return str(dnsmasq)


@pytest.fixture(scope="session")
def dkim_verifiers(
    dkim_key: tuple[bytes, bytes],
    ed25519_key: tuple[bytes, bytes],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DkimVerifiers]:
    """A dnsmasq on a free loopback port publishing the test keys under DKIM_DOMAIN (RSA at
    each of DKIM_RSA_SELECTORS, Ed25519 at DKIM_ED25519_SELECTOR), and both verifiers."""
    import subprocess
    import time

    dnsmasq = _dkim_tools()
    records = {selector: dkim_key[1] for selector in DKIM_RSA_SELECTORS}
    records[DKIM_ED25519_SELECTOR] = ed25519_key[1]
    log = tmp_path_factory.mktemp("dnsmasq") / "dnsmasq.log"
    for _attempt in range(3):  # another process may take the free port first
        port = free_port()
        command = [
            dnsmasq,
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={port}",
            "--log-facility=-",
            *(
                f"--txt-record={selector}._domainkey.{DKIM_DOMAIN},{record.decode('ascii')}"
                for selector, record in records.items()
            ),
        ]
        with log.open("ab") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        verifiers = DkimVerifiers(port)
        deadline = time.monotonic() + 10
        while server.poll() is None and time.monotonic() < deadline:
            if verifiers.txt(f"mail._domainkey.{DKIM_DOMAIN}".encode(), timeout=1):
                break
            time.sleep(0.05)
        if server.poll() is None:
            break
    else:
        raise RuntimeError(f"dnsmasq did not start: {log.read_text(errors='replace')}")
    try:
        yield verifiers
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_newsletter(config: Path, *args: str) -> Any:
    """``newsletter ARGS`` in a child process with ``config``, no stdin, output captured."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "NEWSLETTER_SECRET_KEY": "test-secret-key-of-at-least-32-bytes",
        "NEWSLETTER_CONFIG": str(config),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- the service in a child process ------------------------------------------------------------


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a child ``newsletter``: no NEWSLETTER_* settings from ours, and a
    host in UTC (the schedule must not depend on the host's time zone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return {**env, "TZ": "UTC", "PYTHONUNBUFFERED": "1", **extra}


def newsletter_in(folder: Path, *args: str, **env: str) -> Any:
    """``newsletter ARGS`` run to its end in ``folder`` (its config.toml applies, if any),
    with ``env`` added to :func:`service_env`: the completed process, output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=folder,
        env=service_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start_newsletter(folder: Path, *args: str, log: str = "newsletter.log", **env: str) -> Any:
    """``newsletter ARGS`` in ``folder`` (its config.toml applies), output in ``folder/log``
    (a file, so a chatty service can never block on a full pipe), with ``env`` added to
    :func:`service_env`."""
    import subprocess
    import sys

    out = (folder / log).open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", *args],
            cwd=folder,
            env=service_env(**env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def wait_for_http(url: str, process: Any, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers (any status), failing early if ``process`` exits."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


# --- chat services: Slack's chat.postMessage and webhooks, a Discord webhook ----------------

SLACK_TOKEN = "xoxb-test-token"


class ChatServer:
    """A loopback server keeping the documented contracts of Slack's ``chat.postMessage``
    (bearer token; ``ok``, ``ts`` or ``error`` answers; ``429`` with ``Retry-After``), a
    Slack incoming webhook (``ok``) and a Discord webhook (``?wait=true`` answers the
    message; ``429`` with ``retry_after`` in the body), and checking every payload against
    each service's limits. ``fail``: statuses to answer the next requests with instead."""

    def __init__(self) -> None:
        import threading

        self.posts: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.fail: list[int] = []
        self.delay = 0.0
        # A Slack post whose text holds this is refused (invalid_blocks).
        self.refuse = ""
        # After this many posts, the next request is held (taken, not answered) until
        # ``release`` is set: a message on the wire, for as long as a test needs.
        self.hold_after: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()
        self.requests = 0
        self.lock = threading.Lock()
        self.port = 0
        self.channels = {"C0PAPERS", "#papers"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check_slack(self, payload: dict[str, Any]) -> None:
        blocks = payload.get("blocks", [])
        if len(blocks) > 50:
            self.problems.append(f"{len(blocks)} blocks")
        # Slack's msg_blocks_too_long: all blocks' text together, at about 13,000.
        total = sum(len(b.get("text", {}).get("text", "")) for b in blocks)
        total += sum(len(e.get("text", "")) for b in blocks for e in b.get("elements", ()))
        if total > 13000:
            self.problems.append(f"blocks of {total} characters")
        if len(payload.get("text", "")) > 40000:
            self.problems.append("text over 40,000")
        if not payload.get("text"):
            self.problems.append("no text fallback")
        for block in blocks:
            text = block.get("text", {}).get("text", "")
            if block["type"] == "section" and len(text) > 3000:
                self.problems.append(f"section of {len(text)}")
            for element in block.get("elements", ()):
                if len(element.get("text", "")) > 3000:
                    self.problems.append("context element over 3,000")

    def check_discord(self, payload: dict[str, Any]) -> None:
        embeds = payload.get("embeds", [])
        if len(embeds) > 10:
            self.problems.append(f"{len(embeds)} embeds")
        if len(payload.get("content", "")) > 2000:
            self.problems.append("content over 2,000")
        total = 0
        for embed in embeds:
            if len(embed.get("description", "")) > 4096:
                self.problems.append("description over 4,096")
            if len(embed.get("title", "")) > 256:
                self.problems.append("title over 256")
            total += len(embed.get("title", "")) + len(embed.get("description", ""))
            total += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", ()))
            total += len(embed.get("footer", {}).get("text", ""))
        if total > 6000:
            self.problems.append(f"embeds of {total} characters")
        if not embeds and not payload.get("content"):
            self.problems.append("empty message")

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        import json
        import time

        with self.lock:
            self.requests += 1
            failing = (self.fail.pop(0) if self.fail else None) or None  # 0: answer normally
        if self.delay:
            time.sleep(self.delay)
        if self.hold_after is not None and len(self.posts) >= self.hold_after:
            self.holding.set()
            self.release.wait(60)
        payload = json.loads(body)
        service = "discord" if path.startswith("/discord") else "slack"
        if failing == 429:
            if service == "discord":
                return 429, {}, json.dumps({"retry_after": 0.2, "global": False}).encode()
            return 429, {"Retry-After": "1"}, b'{"ok": false, "error": "ratelimited"}'
        if failing is not None:
            return failing, {}, b"upstream trouble"
        if path == "/api/chat.postMessage":
            if headers.get("Authorization") != f"Bearer {SLACK_TOKEN}":
                return 200, {}, b'{"ok": false, "error": "invalid_auth"}'
            if payload.get("channel") not in self.channels:
                return 200, {}, b'{"ok": false, "error": "channel_not_found"}'
            if self.refuse and self.refuse in payload.get("text", ""):
                return 200, {}, b'{"ok": false, "error": "invalid_blocks"}'
            self.check_slack(payload)
            with self.lock:
                ts = f"{1700000000 + len(self.posts)}.{len(self.posts):06d}"
                self.posts.append({"service": "slack", "ts": ts, **payload})
            answer = {"ok": True, "channel": "C0PAPERS", "ts": ts, "message": {"ts": ts}}
            return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
        if path == "/slack-webhook/good":
            self.check_slack(payload)
            with self.lock:
                self.posts.append({"service": "slack-webhook", **payload})
            return 200, {"Content-Type": "text/plain"}, b"ok"
        if path.startswith("/discord/good"):
            if "wait=true" not in path:
                self.problems.append("no ?wait=true")
            self.check_discord(payload)
            with self.lock:
                message_id = str(900000 + len(self.posts))
                self.posts.append({"service": "discord", "id": message_id, **payload})
            answer = {"id": message_id, "channel_id": "1", "content": payload.get("content", "")}
            return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()
        if path.startswith("/discord/"):
            body = b'{"message": "Invalid Webhook Token", "code": 50027}'
            return 401, {"Content-Type": "application/json"}, body
        return 404, {}, b"no_service"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    import http.server
    import threading

    server = ChatServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, data = server.answer(self.path, self.headers, body)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (a timeout under test)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()
