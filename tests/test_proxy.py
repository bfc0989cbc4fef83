"""The production recipe in deploy/, run for real: nginx (and Caddy) in front of
`newsletter run` on a temporary site.

The shipped files are used as they are, with only this machine's paths and ports put in
place of the ones an operator edits. Static answers come from disk and never reach Python
(the service's access log, read up to a marker request, shows no line for them); 304, gzip
and the service's own headers hold; subscribe, confirm and one-click unsubscribe go
through; and slow or idle clients held by nginx do not keep a normal request from its
answer; /metrics reaches the service only with a token, /healthz and /readyz always. nginx
runs its workers as www-data when the tests run as root, as in production.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, SEEDS, free_port, need_service, start_newsletter, wait_for_http
from test_smtp_tls import _certificate

from newsletter.config import load_config
from newsletter.mail.tokens import UNSUBSCRIBE, make_token
from newsletter.store import open_store

DEPLOY = ROOT / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "newsletter.conf"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"
READER = "reader@example.org"
# The service's NEWSLETTER_METRICS_TOKEN.
TOKEN = "proxy-metrics-token-0123456789"
# The files of the public folder, each with a request path.
STATIC = (
    "/",
    "/index.en.html",
    "/feed.atom",
    "/feed.json",
    "/issues.atom",
    "/issues.json",
    "/issues/2024-W31.html",
    "/days/2024-07-31.en.html",
    # The search page may run its one script (its own policy), and the files it fetches.
    "/search.html",
    "/search.en.html",
    "/search.js",
    "/search/index.json",
)
# What the service says about a public file besides its bytes: a proxy must say the same.
SAME_HEADERS = (
    "content-type",
    "cache-control",
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
)


def render(shipped: Path, values: dict[str, str]) -> str:
    """The shipped file with ``values`` put in; each edited text must still be there."""
    text = shipped.read_text(encoding="utf-8")
    for old, new in values.items():
        assert old in text, f"{shipped.name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def wait_for_port(port: int, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(log.read_text(encoding="utf-8", errors="replace"))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def program(path: str) -> str:
    """A web server's program (where Debian's package puts it), which must be installed."""
    if not os.path.exists(path):
        need_service(Path(path).name, "its package is not installed")
    return path


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Site:
    """`newsletter run` on a temporary site, its public folder built."""

    folder: Path
    app: str  # the service itself: http://127.0.0.1:PORT
    tls_port: int
    http_port: int

    @property
    def app_port(self) -> int:
        return int(self.app.rsplit(":", 1)[1])

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def access_lines(self) -> list[str]:
        log = (self.folder / "run.log").read_text(encoding="utf-8", errors="replace")
        return [line for line in log.splitlines() if "logger=uvicorn.access" in line]

    def reached_app(self, base: str, verify: Any, send: Callable[[], object]) -> list[str]:
        """The service's access lines for what ``send`` asks through the proxy at ``base``.
        A marker request through the same proxy ends the span: the log is written in order,
        so a request that reached Python is logged before the marker."""
        before = len(self.access_lines())
        send()
        marker = f"/robots.txt?marker={uuid.uuid4().hex}"
        assert httpx.get(base + marker, verify=verify, timeout=10).status_code == 200
        deadline = time.monotonic() + 20
        while True:
            lines = self.access_lines()[before:]
            for index, line in enumerate(lines):
                if marker in line:
                    return lines[:index]
            assert time.monotonic() < deadline, "the marker request never reached the service"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A folder nginx's workers (www-data) can read: pytest's own are private to root."""
    folder = Path(tempfile.mkdtemp(prefix="newsletter-proxy-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def site(workdir: Path) -> Iterator[Site]:
    with running_site(workdir) as running:
        yield running


@contextlib.contextmanager
def running_site(workdir: Path) -> Iterator[Site]:
    """`newsletter run` on the seeds in ``workdir/site``, once its public folder is built."""
    folder = workdir / "site"
    folder.mkdir()
    folder.chmod(0o755)  # whatever the umask: nginx's workers read below it
    app_port, tls_port, http_port = free_port(), free_port(), free_port()
    (folder / "config.toml").write_text(
        f'source = "{SEEDS}"\nbase_url = "https://127.0.0.1:{tls_port}/"\n'
        f"[web]\nport = {app_port}\n",
        encoding="utf-8",
    )
    service = start_newsletter(folder, "run", log="run.log", NEWSLETTER_METRICS_TOKEN=TOKEN)
    app = f"http://127.0.0.1:{app_port}"
    try:
        wait_for_http(f"{app}/subscribe", service)
        # The pages are rendered right after the service starts listening.
        deadline = time.monotonic() + 60
        while 'msg="rendered ' not in (folder / "run.log").read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, "the public folder was not built"
            assert service.poll() is None
            time.sleep(0.1)
        yield Site(folder, app, tls_port, http_port)
    finally:
        stop(service)


@dataclass
class Proxy:
    """A web server running a shipped file in front of the site's service."""

    site: Site
    base: str
    verify: ssl.SSLContext | bool  # for nginx: trusts the test certificate
    folder: Path
    server: str  # its Server header

    def client(self, **transport: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            transport=httpx.HTTPTransport(verify=self.verify, **transport),
            timeout=30,
        )

    def reached_app(self, send: Callable[[], object]) -> list[str]:
        return self.site.reached_app(self.base, self.verify, send)


# --- slow clients ---------------------------------------------------------------------------


def _connections(port: int) -> int:
    """How many TCP connections are open to 127.0.0.1:``port``: the kernel's table, in
    which a client's own end may have the same port on another address."""
    ours = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += local == ours and state == "01"  # ESTABLISHED
    return count


def _connect(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def _slow(proxy: Proxy, count: int, first_bytes: bytes) -> list[socket.socket]:
    """``count`` connections from 127.0.0.3 that send ``first_bytes`` and no more."""
    port = int(proxy.base.rsplit(":", 1)[1])
    socks = []
    for _ in range(count):
        sock = _connect("127.0.0.3", port)
        if isinstance(proxy.verify, ssl.SSLContext):
            sock = proxy.verify.wrap_socket(sock, server_hostname="127.0.0.1")
        sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def _post(path: str) -> bytes:
    """A form post that promises 2,000 bytes of body and sends 10."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 2000\r\n\r\nemail=slow"
    ).encode()


@contextlib.contextmanager
def slow_clients(proxy: Proxy, posts: int) -> Iterator[list[socket.socket]]:
    """From 127.0.0.3: 1,100 connections that never send a byte, 100 that send half their
    headers, and ``posts`` posts that send a sliver of their body (a third to the form, the
    rest to the bounce webhook), which it yields; all of them closed afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2000, hard))
    port = int(proxy.base.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        held += [_connect("127.0.0.3", port) for _ in range(1100)]
        held += _slow(proxy, 100, b"GET /feed.atom HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
        form = posts // 3
        sent = _slow(proxy, form, _post("/subscribe"))
        sent += _slow(proxy, posts - form, _post("/webhooks/bounce"))
        held += sent
        yield sent
    finally:
        for sock in held:
            sock.close()


def check_answered_meanwhile(proxy: Proxy, before: int, email: str) -> None:
    """While the proxy holds the slow clients' unfinished posts: the service has no more
    connections than ``before`` them (a request is passed on only once the proxy has all
    of it), and a feed and a form post from another address are answered."""
    assert _connections(proxy.site.app_port) <= before

    def visit() -> None:
        with proxy.client(local_address="127.0.0.4") as client:
            feed = client.get("/feed.atom")
            assert feed.status_code == 200 and b"<entry>" in feed.content
            form = client.post("/subscribe", data={"email": email})
            assert form.status_code == 200

    lines = proxy.reached_app(visit)
    assert not any("127.0.0.3:" in line for line in lines)
    assert [x for x in lines if '"POST /subscribe ' in x and "127.0.0.4:" in x]


# --- nginx ---------------------------------------------------------------------------------


def nginx_main(folder: Path, site_conf: Path) -> str:
    """nginx.conf around the shipped site file: Debian's main settings, with the connection
    budget the site file asks for, every path in ``folder``."""
    user = "user www-data www-data;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes auto;\nworker_rlimit_nofile 8192;\n"
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n"
        "    sendfile on;\n    tcp_nopush on;\n    gzip on;\n"
        f"    access_log {folder / 'access.log'};\n{temp}    include {site_conf};\n}}\n"
    )


@pytest.fixture(scope="module")
def nginx(site: Site, workdir: Path) -> Iterator[Proxy]:
    with running_nginx(site, workdir) as running:
        yield running


@contextlib.contextmanager
def running_nginx(site: Site, workdir: Path) -> Iterator[Proxy]:
    """nginx with the shipped site file in front of ``site``, on its TLS and http ports."""
    binary = program("/usr/sbin/nginx")
    folder = workdir / "nginx"
    folder.mkdir()
    folder.chmod(0o755)  # whatever the umask: nginx's workers read below it
    cert, key = _certificate(folder)
    conf = render(
        NGINX_SITE,
        {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{site.app_port};",
            "listen 80;": f"listen 127.0.0.1:{site.http_port};",
            "listen [::]:80;": "",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{site.tls_port} ssl http2;",
            "listen [::]:443 ssl http2;": "",
            "/etc/letsencrypt/live/news.example.org/fullchain.pem": str(cert),
            "/etc/letsencrypt/live/news.example.org/privkey.pem": str(key),
            "/var/www/letsencrypt": str(folder / "acme"),
            "/srv/newsletter/public": str(site.folder / "public"),
            # Slow clients are let go after 10 s; these tests hold theirs for longer, so
            # that they are still there when the normal request is made.
            "client_header_timeout 10s;": "client_header_timeout 300s;",
            "client_body_timeout 10s;": "client_body_timeout 300s;",
        },
    )
    (folder / "newsletter.conf").write_text(conf, encoding="utf-8")
    (folder / "nginx.conf").write_text(
        nginx_main(folder, folder / "newsletter.conf"), encoding="utf-8"
    )
    log = folder / "error.log"
    args = [binary, "-e", str(log), "-p", str(folder), "-c", str(folder / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    # Not a warning, but nginx 1.25.1's deprecation of "listen ... http2" (1.22 has no other
    # way to say it).
    warnings = [x for x in checked.stderr.splitlines() if "[warn]" in x and "http2" not in x]
    assert warnings == []
    process = subprocess.Popen(
        [*args, "-g", "daemon off;"], stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(site.tls_port, process, log)
        tls = ssl.create_default_context(cafile=str(cert))
        yield Proxy(site, site.https, tls, folder, "nginx")
    finally:
        stop(process)


def test_nginx_redirects_http_to_https(nginx: Proxy) -> None:
    redirect = httpx.get(f"http://127.0.0.1:{nginx.site.http_port}/feed.atom?x=1", timeout=30)
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "https://127.0.0.1/feed.atom?x=1"


def _outbox(folder: Path) -> list[str]:
    """The plain-text bodies of the mails the service has sent."""
    import email
    import email.policy
    import mailbox

    if not (folder / "outbox").is_dir():
        return []
    texts = []
    for message in mailbox.Maildir(str(folder / "outbox"), create=False):
        parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
        body = parsed.get_body(("plain",))  # type: ignore[attr-defined]
        texts.append(str(body.get_content()) if body is not None else "")
    return texts


def test_subscribe_confirm_and_one_click_unsubscribe_go_through(nginx: Proxy) -> None:
    """The forms work through nginx: the service sees the visitor's own address (from
    X-Forwarded-For) and https (from X-Forwarded-Proto), and an RFC 8058 one-click POST,
    as a mail provider sends it, unsubscribes."""
    site = nginx.site
    base = nginx.base
    # A visitor on another loopback address than nginx's own.
    with nginx.client(local_address="127.0.0.2") as visitor:
        answer = visitor.post(
            "/subscribe", data={"email": READER, "name": "김독자"}, headers={"Origin": base}
        )
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while not _outbox(site.folder):
            assert time.monotonic() < deadline, "no confirmation mail"
            time.sleep(0.05)
        link = re.search(rf"{re.escape(base)}(/confirm/[^\s\"<>]+)", _outbox(site.folder)[0])
        assert link is not None
        assert visitor.get(link.group(1)).status_code == 200
        confirmed = visitor.post(link.group(1), headers={"Origin": base})
        assert confirmed.status_code == 200, confirmed.text
        refused = visitor.post(link.group(1), headers={"Origin": "https://elsewhere.example"})
        assert refused.status_code == 403
        # The service takes this site's own origin from Host and the scheme nginx passes.
        for origin, status in [("https://127.0.0.1", 200), ("http://127.0.0.1", 403)]:
            other = visitor.post(
                "/subscribe", data={"email": "third@example.org"}, headers={"Origin": origin}
            )
            assert other.status_code == status, origin
    lines = site.access_lines()
    assert any('msg="127.0.0.2:' in x and '"POST /subscribe ' in x for x in lines), lines[-5:]

    cfg = load_config(site.folder / "config.toml", env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        sub = store.get_subscriber(email=READER)
        assert sub is not None and sub.status == "active"
        key = (site.folder / ".newsletter-secret-key").read_bytes().strip()
        url = f"/unsubscribe/{make_token(key, UNSUBSCRIBE, sub.id)}"
        # What a mail provider posts for List-Unsubscribe-Post: no Origin, no cookie.
        one_click = httpx.post(
            base + url,
            content=b"List-Unsubscribe=One-Click",
            verify=nginx.verify,
            timeout=30,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200, one_click.text
        now = store.get_subscriber(id=sub.id)
        assert now is not None and now.status == "unsubscribed"
    finally:
        store.close()


def test_the_front_pages_form_gets_through_nginx_in_a_browser(
    nginx: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pressed in Chromium, the subscribe form of the front page (a file nginx serves)
    posts this site's Origin, and the service takes it."""
    import test_browser_forms

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        need_service("chromium", "its package is not installed")
    # The test certificate is no authority Chromium knows.
    flags = [*test_browser_forms.FLAGS, "--ignore-certificate-errors"]
    monkeypatch.setattr(test_browser_forms, "FLAGS", flags)
    browser = test_browser_forms.Browser(str(binary), tmp_path / "profile")
    try:
        browser.open(nginx.base + "/")
        browser.run("document.getElementById('subscribe-email').value = 'front@example.org'")
        assert "확인 링크를 보냈습니다" in browser.press("main form button")
    finally:
        browser.close()


def test_request_limits(nginx: Proxy) -> None:
    """A body over the forms' 16 KB is refused by nginx; the bounce webhook takes more."""

    def ask() -> None:
        with nginx.client() as client:
            big = client.post("/subscribe", data={"email": READER, "name": "x" * 20_000})
            assert big.status_code == 413
            hook = client.post("/webhooks/bounce", content=b"[" + b" " * 20_000 + b"]")
            assert hook.status_code == 404  # no webhook token set: the endpoint is off

    lines = nginx.reached_app(ask)
    assert len(lines) == 1 and '"POST /webhooks/bounce ' in lines[0]


def _refusals(posts: list[socket.socket], expected: int) -> tuple[list[bytes], int]:
    """The answers to ``posts`` once ``expected`` came (or a minute passed), and how many
    are still waiting for one."""
    answers: list[bytes] = []
    with selectors.DefaultSelector() as waiting:
        for sock in posts:
            sock.setblocking(False)
            waiting.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while len(answers) < expected and time.monotonic() < deadline:
            for key, _ in waiting.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    answers.append(sock.recv(4096))
                except ssl.SSLWantReadError:  # a TLS session ticket, not an answer
                    continue
                waiting.unregister(sock)
        return answers, len(waiting.get_map())


def test_slow_clients_held_by_nginx_do_not_starve_the_service(nginx: Proxy) -> None:
    """nginx answers the slow posts beyond its per-client limit at once with 429 (form
    posts meet a request rate limit first, webhook posts the connection limit alone) and
    holds the rest; meanwhile the service answers others."""
    limit = re.search(r"limit_conn newsletter_conns (\d+);", NGINX_SITE.read_text("utf-8"))
    assert limit is not None
    per_client = int(limit.group(1))
    before = _connections(nginx.site.app_port)
    with slow_clients(nginx, 150) as posts:
        answers, waiting = _refusals(posts, len(posts) - per_client)
        assert all(answer.startswith(b"HTTP/1.1 429 ") for answer in answers), answers[:1]
        assert waiting == per_client
        check_answered_meanwhile(nginx, before, "second@example.org")
    errors = (nginx.folder / "error.log").read_text(encoding="utf-8", errors="replace")
    assert "worker_connections are not enough" not in errors


# --- Caddy ---------------------------------------------------------------------------------


def caddy_env(folder: Path) -> dict[str, str]:
    """Caddy keeps its state (certificates, autosave) under these: the test's folder."""
    return {
        **os.environ,
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
    }


@pytest.fixture(scope="module")
def caddy(site: Site, workdir: Path) -> Iterator[Proxy]:
    """The shipped Caddyfile on plain http (a certificate is Caddy's own business)."""
    binary = program("/usr/bin/caddy")
    folder = workdir / "caddy"
    folder.mkdir()
    port = free_port()
    conf = render(
        CADDYFILE,
        {
            "email webmaster@example.org": "admin off",
            "news.example.org {": f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1",
            "reverse_proxy 127.0.0.1:8000 {": f"reverse_proxy 127.0.0.1:{site.app_port} {{",
            "/srv/newsletter/public": str(site.folder / "public"),
            # As for nginx: the slow clients are held for as long as the test needs them.
            "read_header 10s": "read_header 300s",
            "read_body 10s": "read_body 300s",
        },
    )
    (folder / "Caddyfile").write_text(conf, encoding="utf-8")
    log = folder / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"],
            env=caddy_env(folder),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, log)
        yield Proxy(site, f"http://127.0.0.1:{port}", True, folder, "Caddy")
    finally:
        stop(process)


def test_the_caddyfile_as_shipped_is_valid(workdir: Path) -> None:
    binary = program("/usr/bin/caddy")
    folder = workdir / "caddy-validate"
    folder.mkdir()
    checked = subprocess.run(
        [binary, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=caddy_env(folder),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and "Valid configuration" in checked.stdout + checked.stderr
    formatted = subprocess.run(
        [binary, "fmt", str(CADDYFILE)], capture_output=True, text=True, check=True
    )
    assert formatted.stdout == CADDYFILE.read_text(encoding="utf-8")


def test_caddy_refuses_a_form_post_over_16_kb(caddy: Proxy) -> None:
    def ask() -> None:
        with caddy.client() as client:
            big = client.post("/subscribe", data={"email": READER, "name": "x" * 20_000})
            assert big.status_code == 413

    assert caddy.reached_app(ask) == []


def test_slow_clients_held_by_caddy_do_not_starve_the_service(caddy: Proxy) -> None:
    before = _connections(caddy.site.app_port)
    with slow_clients(caddy, 60):
        check_answered_meanwhile(caddy, before, "fourth@example.org")


# --- both ----------------------------------------------------------------------------------


@pytest.fixture(params=["nginx", "caddy"])
def proxy(request: pytest.FixtureRequest) -> Proxy:
    server: Proxy = request.getfixturevalue(request.param)
    return server


def test_public_files_come_from_disk_with_the_services_headers(proxy: Proxy) -> None:
    """Every public file: the same bytes, content type, caching and security headers as
    the service gives, from the proxy without a request reaching Python. Pages go with
    ``Referrer-Policy: same-origin``, so that their subscribe form posts this site's
    Origin (see the browser test below); other files with ``no-referrer``."""
    answers: dict[str, httpx.Response] = {}

    def fetch() -> None:
        with proxy.client() as client:
            for path in STATIC:
                answers[path] = client.get(path, headers={"Accept-Encoding": "identity"})

    assert proxy.reached_app(fetch) == []
    with httpx.Client(base_url=proxy.site.app, timeout=30) as app:
        for path, answer in answers.items():
            own = app.get(path, headers={"Accept-Encoding": "identity"})
            assert answer.status_code == own.status_code == 200, path
            assert answer.content == own.content, path
            for name in SAME_HEADERS:
                assert answer.headers.get_list(name) == own.headers.get_list(name), (path, name)
            page = answer.headers["content-type"].startswith("text/html")
            referrer = "same-origin" if page else "no-referrer"
            assert answer.headers.get_list("referrer-policy") == [referrer], path
            assert answer.headers["server"] == proxy.server, path
            assert answer.headers["strict-transport-security"] == "max-age=63072000"


def test_conditional_requests_and_gzip(proxy: Proxy) -> None:
    """304 for If-None-Match and for an If-Modified-Since at or after the file's time (as
    the service answers), gzip for clients that ask, and nothing of it reaches Python."""
    feed = proxy.site.folder / "public" / "feed.atom"

    def ask() -> None:
        with proxy.client() as client:
            plain = client.get("/feed.atom", headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200 and "content-encoding" not in plain.headers
            etag = plain.headers["etag"]
            modified = parsedate_to_datetime(plain.headers["last-modified"]).timestamp()
            assert int(modified) == int(feed.stat().st_mtime)
            for headers, status in [
                ({"If-None-Match": etag}, 304),
                ({"If-None-Match": '"another"'}, 200),
                ({"If-Modified-Since": formatdate(modified, usegmt=True)}, 304),
                ({"If-Modified-Since": formatdate(modified + 86400, usegmt=True)}, 304),
                ({"If-Modified-Since": formatdate(modified - 86400, usegmt=True)}, 200),
            ]:
                answer = client.get(
                    "/feed.atom", headers={"Accept-Encoding": "identity", **headers}
                )
                assert answer.status_code == status, headers
            with client.stream("GET", "/feed.atom", headers={"Accept-Encoding": "gzip"}) as packed:
                wire = b"".join(packed.iter_raw())
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["vary"] == "Accept-Encoding"
            assert gzip.decompress(wire) == feed.read_bytes() and len(wire) < len(plain.content)
            # The copy written beside the feed, not one compressed for each request.
            assert wire == feed.with_name("feed.atom.gz").read_bytes()
            page = client.get("/issues/2024-W31.html", headers={"Accept-Encoding": "gzip"})
            assert page.headers["content-encoding"] == "gzip"
            again = client.get(
                "/feed.atom",
                headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]},
            )
            assert again.status_code == 304

    assert proxy.reached_app(ask) == []


def test_what_has_no_file_is_the_services_answer(proxy: Proxy) -> None:
    """The favicons, robots.txt, the pages that act and the 404 page come from the service,
    with its own headers (not doubled); hidden files are never served."""

    def ask() -> None:
        with proxy.client() as client:
            missing = client.get("/issues/1999-W01.html")
            assert missing.status_code == 404 and "<html" in missing.text
            assert missing.headers["cache-control"] == "no-store"  # the service's 404 page
            icon = client.get("/favicon.svg")
            assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
            form = client.get("/subscribe")
            assert form.status_code == 200 and "<form" in form.text
            assert form.headers.get_list("referrer-policy") == ["same-origin"]
            assert len(form.headers.get_list("content-security-policy")) == 1
            assert form.headers["strict-transport-security"] == "max-age=63072000"
            (proxy.site.folder / "public" / ".feed.atom.x.tmp").write_text("half", "utf-8")
            assert client.get("/.feed.atom.x.tmp").status_code == 404
            assert client.get("/feed.atom.gz").status_code == 404

    lines = proxy.reached_app(ask)
    assert [re.search(r'"GET (\S+)', line).group(1) for line in lines] == [  # type: ignore[union-attr]
        "/issues/1999-W01.html",
        "/favicon.svg",
        "/subscribe",
    ]


def test_metrics_go_through_only_with_a_token_and_health_always(proxy: Proxy) -> None:
    """Behind a proxy every client's peer is the proxy: /metrics without a token never
    reaches the service (the proxy answers 404), a wrong token is the service's 401, and
    Prometheus with the token reads them. /healthz and /readyz (``run``: the scheduler
    and the sender run) go through."""
    from prometheus_client.parser import text_string_to_metric_families

    def anonymous() -> None:
        with proxy.client() as client:
            for path in (b"/metrics", b"/metrics?x=1", b"//metrics", b"/%6detrics"):
                url = httpx.URL(proxy.base).copy_with(raw_path=path)
                assert client.get(url).status_code == 404, path

    assert proxy.reached_app(anonymous) == []
    found: dict[str, float] = {}

    def with_tokens() -> None:
        with proxy.client() as client:
            wrong = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401 and wrong.headers["cache-control"] == "no-store"
            right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200, right.text
            for family in text_string_to_metric_families(right.text):
                for sample in family.samples:
                    found.setdefault(sample.name, sample.value)
            for path, text in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
                answer = client.get(path)
                assert (answer.status_code, answer.text) == (200, text), path
                assert answer.headers["cache-control"] == "no-store"

    lines = proxy.reached_app(with_tokens)
    assert len([line for line in lines if '"GET /metrics ' in line]) == 2
    assert found["newsletter_database_up"] == 1
    assert "newsletter_messages_total" in found
