"""End to end, as a new user does it: `newsletter run`, subscribe through the web form,
read the feed and an issue page, stop, and a Monday-morning `tick` mails the weekly issue;
links that follow the process that serves."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import signal
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
from conftest import SEEDS, free_port, start_newsletter, wait_for_http

READER = "reader@example.org"


def _messages(outbox: Path) -> list[EmailMessage]:
    box = mailbox.Maildir(str(outbox), create=False)
    return [
        email.message_from_bytes(message.as_bytes(), policy=email.policy.default) for message in box
    ]


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def test_run_subscribe_read_then_a_monday_tick_mails_the_issue(tmp_path: Path) -> None:
    """On a port of its own, without base_url: every link follows --port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.toml").write_text(f'source = "{SEEDS}"\n', encoding="utf-8")
    service = start_newsletter(tmp_path, "run", "--port", str(port), log="run.log")
    try:
        wait_for_http(f"{base}/subscribe", service)
        with httpx.Client(base_url=base, timeout=10) as client:
            form = client.get("/subscribe")
            assert form.status_code == 200 and "<form" in form.text
            answer = client.post("/subscribe", data={"email": READER, "name": "김독자"})
            assert answer.status_code == 200

            # Queued by the request, sent by the service's sender thread a moment later.
            deadline = time.monotonic() + 20
            while not _messages(tmp_path / "outbox") and time.monotonic() < deadline:
                time.sleep(0.05)
            (confirmation,) = _messages(tmp_path / "outbox")
            assert confirmation["To"].addresses[0].addr_spec == READER
            link = re.search(rf"{re.escape(base)}/confirm/\S+", _text(confirmation))
            assert link is not None
            page = client.get(link.group(0).removeprefix(base))
            assert page.status_code == 200 and "<form" in page.text  # a button, not an action
            confirmed = client.post(link.group(0).removeprefix(base))
            assert confirmed.status_code == 200

            feed = client.get("/feed.atom")
            assert feed.status_code == 200
            assert feed.headers["content-type"].startswith("application/atom+xml")
            assert "<entry>" in feed.text
            assert f'<link href="{base}/feed.atom" rel="self"' in feed.text
            page = client.get("/issues/2024-W31.html")
            assert page.status_code == 200
            assert "2024" in page.text and "31" in page.text
            # The issues feed follows the weeks' web copies.
            deadline = time.monotonic() + 20
            while (issues := client.get("/issues.atom")).status_code != 200:
                assert time.monotonic() < deadline, issues.text
                time.sleep(0.1)
            assert issues.headers["content-type"] == "application/atom+xml; charset=utf-8"
            assert f"{base}/issues/2024-W31.html" in issues.text
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert "next weekly run" in log and "next daily run" in log
    assert f"listening on {base}/; links point to {base}/ (base_url is not set" in log

    ticked = start_newsletter(tmp_path, "tick", "--now", "2024-08-05T08:30+09:00", log="tick.log")
    assert ticked.wait(timeout=120) == 0, (tmp_path / "tick.log").read_text(encoding="utf-8")
    assert (
        f"weekly: done: 2024-W31: 1 written to {tmp_path / 'outbox' / 'new'} (no SMTP host set)"
        in (tmp_path / "tick.log").read_text(encoding="utf-8")
    )
    weekly = [m for m in _messages(tmp_path / "outbox") if "31주차" in str(m["Subject"])]
    assert len(weekly) == 1
    assert weekly[0]["To"].addresses[0].addr_spec == READER
    assert "List-Unsubscribe" in weekly[0]
    # The service has stopped: the tick links to the settings' address, never to the port
    # of a service that is gone.
    text = _text(weekly[0])
    settings = "http://127.0.0.1:8000"
    assert f"{settings}/issues/2024-W31.html" in text and f"{settings}/unsubscribe/" in text
    assert f"{base}/" not in text + weekly[0]["List-Unsubscribe"]

    again = start_newsletter(tmp_path, "tick", "--now", "2024-08-05T08:30+09:00", log="again.log")
    assert again.wait(timeout=120) == 0
    assert "weekly: nothing due" in (tmp_path / "again.log").read_text(encoding="utf-8")
    assert len(_messages(tmp_path / "outbox")) == 2


def test_run_keeps_its_files_private_and_its_log_free_of_tokens(tmp_path: Path) -> None:
    import stat

    from newsletter.mail.tokens import make_token

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.toml").write_text(
        f'source = "{SEEDS}"\nbase_url = "{base}/"\n[web]\nport = {port}\n', encoding="utf-8"
    )
    service = start_newsletter(tmp_path, "run", log="run.log")
    try:
        wait_for_http(f"{base}/subscribe", service)
        key = (tmp_path / ".newsletter-secret-key").read_bytes().strip()
        token = make_token(key, "unsubscribe", 1)
        with httpx.Client(base_url=base, timeout=10) as client:
            client.get(f"/unsubscribe/{token}")
            client.get(f"/confirm/{token}")
            client.post("/subscribe", data={"email": READER})
            deadline = time.monotonic() + 20
            while not _messages(tmp_path / "outbox") and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert "/unsubscribe/…" in log and "/confirm/…" in log
    assert token not in log and token.split(".")[-1] not in log
    private = [
        tmp_path / "newsletter.db",
        tmp_path / ".newsletter-secret-key",
        tmp_path / "outbox",
        *(tmp_path / "outbox" / "new").iterdir(),
    ]
    for path in private:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is readable by others: {oct(mode)}"
    # The public folder is for everyone (a web server may run as another user).
    for path in (tmp_path / "public", tmp_path / "public" / "feed.atom"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o004, path


def test_a_busy_port_is_one_line_suggesting_another(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from conftest import service_env

    (tmp_path / "config.toml").write_text(f'source = "{SEEDS}"\n', encoding="utf-8")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for command in ("serve", "run"):
            proc = subprocess.run(
                [sys.executable, "-m", "newsletter", command, "--port", str(port)],
                cwd=tmp_path,
                env=service_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr == (
                f"error: cannot listen on 127.0.0.1:{port}: another program is already "
                f"listening there; choose another port with --port, e.g. --port {port + 1}\n"
            )


def test_serve_logs_in_the_one_format_without_tokens_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    service = start_newsletter(tmp_path, "serve", "--port", str(port), log="serve.log")
    try:
        wait_for_http(f"{base}/subscribe", service)
        httpx.get(f"{base}/unsubscribe/1.secret-token-part", timeout=10)
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    lines = (tmp_path / "serve.log").read_text(encoding="utf-8").splitlines()
    assert lines and all(re.match(r"time=\S+ level=[a-z]+ logger=\S+ msg=", x) for x in lines)
    assert any(
        'logger=uvicorn.access msg="127.0.0.1:' in x and "/unsubscribe/… " in x for x in lines
    )
    assert not any("secret-token-part" in x for x in lines)
    assert any(f"listening on {base}/; links point to {base}/" in x for x in lines)


def _settled(client: httpx.Client, path: str) -> httpx.Response:
    """``path`` once a start's build has written it: until then 503 with Retry-After,
    never 404."""
    deadline = time.monotonic() + 60
    while True:
        response = client.get(path)
        if response.status_code != 503:
            return response
        assert response.headers["retry-after"] == "5", response.text[-300:]
        assert time.monotonic() < deadline, f"{path} was still being built after 60 s"
        time.sleep(0.05)


def _links(text: str) -> set[str]:
    return set(re.findall(r"http://127\.0\.0\.1:\d+/", text))


def test_links_follow_the_process_that_serves_never_a_stopped_one(tmp_path: Path) -> None:
    """A site made by `newsletter init`, without base_url: `run --port Q` links to Q, and
    so does a command run beside it; once it stopped, a command links to the settings'
    address, and `serve --port P` rewrites the pages and feeds to link to P."""
    made = start_newsletter(tmp_path, "init", "site", log="init.log")
    assert made.wait(timeout=60) == 0
    site = tmp_path / "site"
    run_port, serve_port = free_port(), free_port()
    there = f"http://127.0.0.1:{run_port}/"
    service = start_newsletter(site, "run", "--port", str(run_port), log="run.log")
    try:
        wait_for_http(f"{there}feed.atom", service)
        with httpx.Client(base_url=there, timeout=10) as client:
            for path in ("/", "/feed.atom", "/issues.atom", "/issues/2024-W31.html"):
                page = _settled(client, path)
                assert page.status_code == 200, path
                assert _links(page.text) == {there}, path
        beside = start_newsletter(site, "feed", log="beside.log")
        assert beside.wait(timeout=120) == 0
        assert _links((site / "public" / "feed.atom").read_text(encoding="utf-8")) == {there}
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    assert not (site / "cache" / "listening").exists()

    after = start_newsletter(site, "feed", log="after.log")
    assert after.wait(timeout=120) == 0
    settings = "http://127.0.0.1:8000/"
    for name in ("feed.atom", "issues.atom", "index.html", "issues/2024-W31.html"):
        assert _links((site / "public" / name).read_text(encoding="utf-8")) == {settings}, name

    here = f"http://127.0.0.1:{serve_port}/"
    served = start_newsletter(site, "serve", "--port", str(serve_port), log="serve.log")
    try:
        wait_for_http(f"{here}feed.atom", served)
        public = site / "public"
        pages = sorted(str(p.relative_to(public)) for p in public.rglob("*.html"))
        assert "days/2024-07-31.en.html" in pages
        with httpx.Client(base_url=here, timeout=10) as client:
            for path in ("feed.atom", "feed.json", "issues.atom", "issues.json", *pages):
                page = _settled(client, "/" + path)
                assert page.status_code == 200, path
                assert _links(page.text) == {here}, path
    finally:
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=30) == 0
    log = (site / "serve.log").read_text(encoding="utf-8")
    assert f"listening on {here}; links point to {here} (base_url is not set" in log


def test_ctrl_c_on_run_stops_it_and_nothing_follows_stopped(tmp_path: Path) -> None:
    """SIGINT, as Ctrl-C sends it: the jobs stop, the web app and the sender end, "stopped"
    is said last and the process exits 0 right after (nothing left to wait for)."""
    port = free_port()
    (tmp_path / "config.toml").write_text(f'source = "{SEEDS}"\n', encoding="utf-8")
    service = start_newsletter(tmp_path, "run", "--port", str(port), log="run.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/feed.atom", service)
        httpx.get(f"http://127.0.0.1:{port}/feed.atom", timeout=10)
        # Let the start-up work end, so that nothing is in flight.
        log = tmp_path / "run.log"
        deadline = time.monotonic() + 30
        while "rendered" not in log.read_text(encoding="utf-8"):
            assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.1)
    finally:
        service.send_signal(signal.SIGINT)
        assert service.wait(timeout=30) == 0
    lines = (tmp_path / "run.log").read_text(encoding="utf-8").splitlines()
    said = [re.search(r'msg="([^"]*)', x).group(1) for x in lines]  # type: ignore[union-attr]
    assert said[-1] == "stopped", lines[-5:]
    stopping = next(i for i, x in enumerate(said) if x.startswith("stopping: "))
    finished = next(i for i, x in enumerate(said) if x.startswith("Finished server process"))
    assert stopping < finished < len(said) - 1
    assert not any("Traceback" in x or "level=error" in x for x in lines), lines


# `newsletter run`, writing the modules it has imported when it starts listening to argv[1].
_LISTENING = """
import json, sys
from newsletter.service import processes
real = processes._listen
def listen(sock):
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(sorted(sys.modules), out)
    return real(sock)
processes._listen = listen
from newsletter.cli import main
main(sys.argv[2:])
"""
# What the feeds do not need: the database, the scheduler, the sender, the archive, the
# renderers and the pages that use them.
_NOT_BEFORE_LISTENING = {
    "alembic",
    "apscheduler",
    "babel",
    "feedgen",
    "jinja2",
    "lxml",
    "sqlalchemy",
    "newsletter.app.delivery",
    "newsletter.archive.cache",
    "newsletter.mail.sender",
    "newsletter.publish.render",
    "newsletter.service.scheduler",
    "newsletter.store",
    "newsletter.web.subscription",
}


def test_run_listens_before_importing_what_its_feeds_do_not_need(tmp_path: Path) -> None:
    """Feeds written by an earlier life answer as soon as `run` listens; the database, the
    scheduler and the rest of the web app come after, and then answer too."""
    import json
    import subprocess
    import sys

    from conftest import newsletter_in, service_env

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "config.toml").write_text(
        f'source = "{SEEDS}"\nbase_url = "{base}/"\n[web]\nport = {port}\n', encoding="utf-8"
    )
    assert newsletter_in(tmp_path, "feed").returncode == 0
    modules = tmp_path / "modules.json"
    with (tmp_path / "run.log").open("ab") as log:
        service = subprocess.Popen(
            [sys.executable, "-c", _LISTENING, str(modules), "run"],
            cwd=tmp_path,
            env=service_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"{base}/feed.atom", service)
        assert httpx.get(f"{base}/feed.atom", timeout=10).status_code == 200
        assert httpx.get(f"{base}/subscribe", timeout=30).status_code == 200
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
    imported = set(json.loads(modules.read_text(encoding="utf-8")))
    early = {name for name in imported if name.split(".")[0] in _NOT_BEFORE_LISTENING}
    early |= imported & _NOT_BEFORE_LISTENING
    assert early == set()
    assert {"newsletter.web.starting", "newsletter.service.scheduler_lock"} <= imported
    said = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert said.index("listening on") < said.index("next daily run")
    assert "reading digests" not in said.split("listening on")[0]  # the cache, after
