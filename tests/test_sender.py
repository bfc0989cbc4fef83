"""The sender against real servers: outages, the circuit breaker, frozen content, stops."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import mailbox
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import SEEDS, DkimVerifiers, FaultySmtpHandler, free_port, run_newsletter, smtp_cfg

from newsletter.config import Config
from newsletter.models import Archive
from newsletter.select import IsoWeek
from newsletter.store import Store, open_store

WEEK = "2024-W05"
INSECURE = "--allow-insecure-links"  # the tests' base_url is http on loopback


def _config(tmp_path: Path, port: int | None, source: Path = SEEDS, **smtp: object) -> Path:
    lines = [f'source = "{source}"', 'database_url = "sqlite:///newsletter.db"']
    if port is not None:
        lines.append("[smtp]")
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "retry_base_seconds": 0.2,
            "outage_retry_max": "1s",
            "timeout_seconds": 5.0,
            **smtp,
        }
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _subscribe(store: Store, count: int) -> list[str]:
    addresses = [f"reader{i:04d}@example.org" for i in range(count)]
    for i, address in enumerate(addresses):
        store.add_subscriber(address, f"독자 {i}", "en" if i % 4 == 0 else "ko")
    return addresses


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_outage_pauses_the_issue_and_every_recipient_gets_one_message(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = _config(tmp_path, port)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 60)
    proc = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    try:
        _wait(
            lambda: (row := store.get_issue(WEEK)) is not None and row.status == "paused",
            30,
            "the issue to pause",
        )
        row = store.get_issue(WEEK)
        assert "cannot connect to 127.0.0.1" in row.paused_reason
        assert row.resume_at is not None and row.paused_by == "outage"
        status = run_newsletter(config, "status")
        out, _ = status.communicate(timeout=30)
        assert "paused by a server outage since" in out and "cannot connect" in out
        assert "(next try " in out
        time.sleep(20)  # nothing listening for 20 s
        assert proc.poll() is None, "send gave up during a short outage"
        counts = store.counts(store.get_issue(WEEK).id)
        assert counts["failed"] == 0 and counts["sent"] == 0
        handler = FaultySmtpHandler()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            controller.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert handler.counts() == dict.fromkeys(addresses, 1)
    row = store.get_issue(WEEK)
    assert row.status == "sent"
    counts = store.counts(row.id)
    assert counts["sent"] == 60 and counts["failed"] == 0
    # No recipient paid for the outage.
    assert all(f.attempts == 1 for f in _attempts(store, row.id))
    store.close()


def _attempts(store: Store, issue_id: int) -> list[object]:
    import sqlalchemy as sa

    from newsletter.store import deliveries

    with store.engine.connect() as conn:
        return list(
            conn.execute(sa.select(deliveries.c.attempts).where(deliveries.c.issue_id == issue_id))
        )


def test_send_gives_up_after_outage_max_and_leaves_the_issue_paused(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port(), outage_max="2s")
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 5)
    proc = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "paused" in err and "smtp.outage_max" in err
    row = store.get_issue(WEEK)
    assert row.status == "paused" and row.paused_by == "outage"
    assert store.counts(row.id)["queued"] == 5
    store.close()


def test_the_circuit_breaker_pauses_on_a_policy_block_and_resume_delivers(
    tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    config = _config(tmp_path, port, breaker_window=10, concurrency=1)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 40)
    for address in addresses:
        handler.always[address] = "policy"
    proc = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "circuit breaker" in err
    row = store.get_issue(WEEK)
    assert (row.status, row.paused_by, row.resume_at) == ("paused", "breaker", None)
    assert "5.7.1" in row.paused_reason
    counts = store.counts(row.id)
    assert counts["failed"] == 0 and counts["sent"] == 0  # nobody marked failed
    assert all(s.status == "active" for s in store.iter_subscribers())
    tried = sum(handler.attempts.values())
    assert tried == 10  # stopped at the window, not after the whole list

    # The cause is fixed; the operator resumes.
    handler.always.clear()
    resumed = run_newsletter(config, "resume", "--week", WEEK)
    out, err = resumed.communicate(timeout=30)
    assert resumed.returncode == 0, err
    assert "sending" in out
    again = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert handler.counts() == dict.fromkeys(addresses, 1)
    assert store.get_issue(WEEK).status == "sent"
    store.close()


def _bodies(messages: list[bytes]) -> set[tuple[str, str, str]]:
    """(Subject, From, HTML without the recipient's own links) of each message."""
    seen = set()
    for raw in messages:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
        html = re.sub(r"/(unsubscribe|preferences)/[^\"'<\s]+", r"/\1/TOKEN", html)
        seen.add((str(message["Subject"]), str(message["From"]), html))
    return seen


def test_a_resumed_send_sends_the_frozen_content_whatever_changed(
    tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    handler.delay = 0.01
    source = tmp_path / "digests"
    shutil.copytree(SEEDS, source)
    config = _config(tmp_path, port, source=source, concurrency=2)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 200)
    proc = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _wait(lambda: sum(handler.counts().values()) >= 20, 60, "the first messages")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    first = sum(handler.counts().values())
    assert first < 200

    # A corrected digest and a changed configuration after the issue was frozen.
    for digest in source.iterdir():
        text = digest.read_text(encoding="utf-8")
        digest.write_text(text.replace("### [", "### [CHANGED "), encoding="utf-8")
    with config.open("a") as fh:
        fh.write('[email]\nfrom_name = "Changed Name"\nsubject_template = "CHANGED {week}"\n')
        fh.write('[email.en]\nfrom_name = "Changed Name"\nsubject_template = "CHANGED"\n')

    resumed = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert set(handler.counts()) == set(addresses)
    everything = [m for messages in handler.received.values() for m in messages]
    seen = _bodies(everything)
    assert len(seen) == 2  # one Korean and one English edition, each always the same
    for subject, sender, html in seen:
        assert "CHANGED" not in subject + html and "Changed Name" not in sender

    # Re-freezing is refused once messages went out.
    refreeze = run_newsletter(config, "send", "--week", WEEK, "--refreeze", INSECURE)
    _out, err = refreeze.communicate(timeout=60)
    assert refreeze.returncode == 1
    assert "can no longer change" in err
    store.close()


def test_sigint_in_maildir_mode_stops_after_the_messages_in_flight(tmp_path: Path) -> None:
    config = _config(tmp_path, None)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 3000)
    proc = run_newsletter(config, "send", "--week", WEEK)
    new = tmp_path / "outbox" / "new"
    _wait(lambda: new.is_dir() and len(list(new.iterdir())) >= 50, 60, "the first messages")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped before the end" in err
    written = len(list(new.iterdir()))
    assert written < 3000
    row = store.get_issue(WEEK)
    assert store.counts(row.id)["sent"] == written  # every written message recorded
    again = run_newsletter(config, "send", "--week", WEEK)
    _out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    box = mailbox.Maildir(str(tmp_path / "outbox"), create=False)
    received = sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in box)
    assert received == addresses  # everyone once
    store.close()


def test_send_with_no_subscribers_says_so_and_leaves_the_issue_unsent(tmp_path: Path) -> None:
    config = _config(tmp_path, None)
    proc = run_newsletter(config, "send", "--week", WEEK)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "no active subscribers" in err and "sent" not in out
    store = open_store("sqlite:///newsletter.db", tmp_path)
    assert store.get_issue(WEEK).status == "approved"
    store.close()


def test_a_real_smtp_send_needs_https_links(
    tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    config = _config(tmp_path, port)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 2)
    proc = run_newsletter(config, "send", "--week", WEEK)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "needs an https base_url" in err
    with config.open("a") as fh:
        fh.write('[email]\nfrom_address = "weekly@localhost"\n')
    text = config.read_text().replace(
        'source = "', 'base_url = "https://news.example.org/"\nsource = "', 1
    )
    config.write_text(text)
    proc = run_newsletter(config, "send", "--week", WEEK)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "@localhost" in err
    config.write_text(text.replace("weekly@localhost", "weekly@news.example.org"))
    proc = run_newsletter(config, "send", "--week", WEEK)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(handler.counts()) == 2
    store.close()


def test_pause_resume_cancel_and_the_issue_list(tmp_path: Path) -> None:
    config = _config(tmp_path, None)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 3)

    def cli(*args: str) -> tuple[int, str, str]:
        proc = run_newsletter(config, *args)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out, err

    assert cli("pause", "--week", WEEK)[0] == 1  # no issue yet
    code, out, _ = cli("send", "--week", WEEK)
    assert code == 0 and "3 written to " in out and "(no SMTP host set)" in out
    code, _, err = cli("pause", "--week", WEEK)
    assert code == 1 and "2024-W05 is sent: pause is allowed only when it is" in err
    code, out, _ = cli("issues")
    assert code == 0 and re.search(r"2024-W05\s+sent\s+3 sent", out)
    code, out, _ = cli("status")  # the latest issue
    assert code == 0 and out.startswith("2024-W05  sent")

    from newsletter.app import issues
    from newsletter.archive.sources import load_local_archive
    from newsletter.config import load_config
    from newsletter.select import IsoWeek

    cfg = load_config(config)
    prepared = issues.prepare(cfg, load_local_archive(cfg), IsoWeek(2024, 21))
    issues.start(store, issues.approve(store, cfg, prepared))
    code, out, _ = cli("pause", "--week", "2024-W21")
    assert code == 0 and "paused" in out
    code, out, _ = cli("issues")
    assert "paused by the operator since" in out
    assert "(until `newsletter resume --week 2024-W21`)" in out
    code, out, _ = cli("send", "--week", "2024-W21")
    assert code == 1  # paused stays paused
    assert store.counts(store.get_issue("2024-W21").id)["sent"] == 0
    code, out, _ = cli("cancel", "--week", "2024-W21")
    assert code == 0 and "3 queued deliveries will not be made" in out
    code, _, err = cli("resume", "--week", "2024-W21")
    assert code == 1 and "cancelled" in err
    assert store.get_issue("2024-W21").status == "cancelled"
    store.close()


@pytest.mark.parametrize("op", ["approve", "start", "resume", "finish", "pause"])
def test_no_transition_out_of_cancelled(tmp_path: Path, op: str) -> None:
    from newsletter.app import issues
    from newsletter.lifecycle import Op

    store = open_store("sqlite:///newsletter.db", tmp_path)
    row = store.ensure_issue(WEEK, "s", status="cancelled")
    with pytest.raises(issues.IssueStateError, match=f"{WEEK} is cancelled: {op} is allowed"):
        issues.transition(store, row, Op(op))
    assert store.get_issue(WEEK).status == "cancelled"
    store.close()


def test_newsletter_run_keeps_retrying_the_server_and_resumes_by_itself(tmp_path: Path) -> None:
    from conftest import start_newsletter, wait_for_http

    from newsletter.app import issues
    from newsletter.archive.sources import load_local_archive
    from newsletter.config import load_config
    from newsletter.select import IsoWeek

    smtp_port, web_port = free_port(), free_port()
    config = _config(tmp_path, smtp_port, outage_max="1s")  # `send`'s limit; `run` has none
    text = config.read_text().replace("[smtp]", f"[web]\nport = {web_port}\n[smtp]")
    config.write_text(text)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 20)
    cfg = load_config(config)
    prepared = issues.prepare(cfg, load_local_archive(cfg), IsoWeek(2024, 5))
    issues.start(store, issues.approve(store, cfg, prepared))
    service = start_newsletter(tmp_path, "run", INSECURE, log="run.log")
    handler = FaultySmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    try:
        wait_for_http(f"http://127.0.0.1:{web_port}/feed.atom", service)
        _wait(lambda: store.get_issue(WEEK).status == "paused", 30, "the issue to pause")
        time.sleep(4)  # several times smtp.outage_max: `run` does not give up
        assert service.poll() is None
        assert store.get_issue(WEEK).status == "paused"
        controller.start()
        _wait(lambda: store.get_issue(WEEK).status == "sent", 60, "the issue to be sent")
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=60) == 0
        controller.stop()
    assert handler.counts() == dict.fromkeys(addresses, 1)
    assert store.counts(store.get_issue(WEEK).id)["failed"] == 0
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert "paused" in log and "sending resumes" in log
    store.close()


@pytest.mark.parametrize("drain", ["tick", "worker", "run"])
def test_an_outage_pause_left_by_send_ends_under_cron_a_worker_or_the_service(
    tmp_path: Path, drain: str
) -> None:
    """`send` gives up on a dead server and leaves the issue paused by the outage; once the
    server is back and the pause's resume time has passed, any one drain finishes it."""
    from conftest import start_newsletter

    from newsletter.store import utcnow

    smtp_port, web_port = free_port(), free_port()
    config = _config(tmp_path, smtp_port, outage_max="1s")
    config.write_text(config.read_text().replace("[smtp]", f"[web]\nport = {web_port}\n[smtp]"))
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 12)
    sending = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = sending.communicate(timeout=60)
    assert sending.returncode == 1 and "smtp.outage_max" in err, err
    row = store.get_issue(WEEK)
    assert (row.status, row.paused_by) == ("paused", "outage")
    assert store.counts(row.id)["queued"] == 12

    if drain == "tick":
        # Cron before the server is back: the pause stays, is said, and backs off.
        _wait(lambda: store.get_issue(WEEK).resume_at <= utcnow(), 10, "resume_at to pass")
        early = run_newsletter(config, "tick", INSECURE)
        _out, err = early.communicate(timeout=60)
        assert early.returncode == 0, err
        assert "2024-W05 is still paused by a server outage: server: cannot connect" in err
        assert "(next try after " in err
        still = store.get_issue(WEEK)
        assert (still.status, still.paused_by) == ("paused", "outage")
        assert still.resume_at > row.resume_at

    handler = FaultySmtpHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        _wait(lambda: store.get_issue(WEEK).resume_at <= utcnow(), 10, "resume_at to pass")
        if drain == "run":
            service = start_newsletter(tmp_path, "run", INSECURE, log="run.log")
            try:
                _wait(lambda: store.get_issue(WEEK).status == "sent", 60, "the issue to be sent")
            finally:
                service.send_signal(signal.SIGTERM)
                assert service.wait(timeout=60) == 0
        else:
            args = ["tick"] if drain == "tick" else ["worker", "--once"]
            once = run_newsletter(config, *args, INSECURE)
            _out, err = once.communicate(timeout=120)
            assert once.returncode == 0, err
    finally:
        controller.stop()
    assert handler.counts() == dict.fromkeys(addresses, 1)
    row = store.get_issue(WEEK)
    assert (row.status, row.paused_by, row.resume_at) == ("sent", None, None)
    counts = store.counts(row.id)
    assert (counts["sent"], counts["queued"], counts["sending"]) == (12, 0, 0)
    store.close()


def test_a_cancel_during_a_send_leaves_nothing_queued_or_waiting(tmp_path: Path) -> None:
    """The operator cancels while the sender holds a leased batch: those rows and every
    other waiting one become skipped, and the send stops."""
    import asyncio

    from newsletter.app import delivery, issues
    from newsletter.archive.sources import load_local_archive
    from newsletter.config import load_config
    from newsletter.select import IsoWeek

    cfg = load_config(_config(tmp_path, None))
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 60)
    prepared = issues.prepare(cfg, load_local_archive(cfg), IsoWeek(2024, 5))
    row = issues.start(store, issues.approve(store, cfg, prepared))

    def cancel_after_five(tally: object, _total: int) -> None:
        if tally["sent"] == 5 and store.get_issue(WEEK).status == "sending":  # type: ignore[index]
            issues.cancel(store, WEEK)

    report = asyncio.run(
        delivery.send_issue(cfg, store, row, b"k" * 32, progress=cancel_after_five)
    )
    assert report.status == "cancelled"
    counts = store.counts(row.id)
    assert counts["queued"] == counts["sending"] == 0
    assert counts["sent"] + counts["skipped"] == 60 and counts["sent"] >= 5
    assert issues.describe_counts(counts).endswith("0 waiting")
    assert len(list((tmp_path / "outbox" / "new").iterdir())) == counts["sent"]
    store.close()


def test_a_start_after_kill_9_clears_the_files_a_dead_writer_left_in_outbox_tmp(
    tmp_path: Path,
) -> None:
    import os
    import socket
    import subprocess

    from newsletter.mail.transport import clean_maildir_tmp

    config = _config(tmp_path, None)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 3)
    store.close()
    tmp = tmp_path / "outbox" / "tmp"
    tmp.mkdir(parents=True)
    # A writer killed mid-message: its pid no longer runs.
    writer = subprocess.Popen(["sleep", "60"])
    writer.kill()
    writer.wait()
    host = socket.gethostname()
    orphan = tmp / f"1733500000.M1P{writer.pid}Q1.{host}"
    orphan.write_bytes(b"Subject: half a message\n")
    # One being written right now, by a live process (this one): never touched.
    live = tmp / f"1733500000.M2P{os.getpid()}Q2.{host}"
    live.write_bytes(b"Subject: being written\n")
    # Anything unfinished for over 36 hours goes too, whoever wrote it.
    ancient = tmp / "1600000000.M3P1Q3.elsewhere"
    ancient.write_bytes(b"Subject: old\n")
    os.utime(ancient, (1_600_000_000, 1_600_000_000))

    sent = run_newsletter(config, "send", "--week", WEEK)
    out, err = sent.communicate(timeout=60)
    assert sent.returncode == 0, err
    assert f"3 written to {tmp.parent / 'new'} (no SMTP host set)" in out
    assert sorted(p.name for p in tmp.iterdir()) == [live.name]
    assert clean_maildir_tmp(tmp.parent) == 0


@pytest.mark.parametrize(
    ("dkim_domain", "over_smtp", "warns"),
    [("example.org", True, False), ("example.net", True, True), ("example.net", False, False)],
    ids=["aligned", "not-aligned", "not-aligned-into-the-outbox"],
)
def test_a_real_send_warns_when_dmarc_would_not_count_the_dkim_signature(
    tmp_path: Path,
    smtp_server: tuple[FaultySmtpHandler, int],
    dkim_key: tuple[bytes, bytes],
    dkim_domain: str,
    over_smtp: bool,
    warns: bool,
) -> None:
    """From news.example.org, signed as d=example.org: aligned (its parent domain). Signed
    as d=example.net: one warning naming both, for a real send only."""
    handler, port = smtp_server
    (tmp_path / "dkim.pem").write_bytes(dkim_key[0])
    config = _config(tmp_path, port if over_smtp else None)
    with config.open("a") as fh:
        fh.write(
            '[email]\nfrom_address = "weekly@news.example.org"\ndkim_selector = "mail"\n'
            f'dkim_key_file = "dkim.pem"\ndkim_domain = "{dkim_domain}"\n'
        )
    store = open_store("sqlite:///newsletter.db", tmp_path)
    _subscribe(store, 2)
    proc = run_newsletter(config, "send", "--week", WEEK, INSECURE)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(handler.counts()) == (2 if over_smtp else 0)
    warning = (
        "email.dkim_domain example.net is not aligned with the domain of email.from_address "
        "news.example.org: receivers applying DMARC will not count the DKIM signature"
    )
    assert err.count(warning) == (1 if warns else 0), err
    assert ("DMARC" in err) == warns
    store.close()


@pytest.mark.parametrize("fault", ["", "killed", "stopped"])
def test_messages_signed_in_signing_processes_verify_and_go_out_once(
    issue_cfg: Config,
    seeds_archive: Archive,
    smtp_server: tuple[FaultySmtpHandler, int],
    dkim_key: tuple[bytes, bytes],
    dkim_verifiers: DkimVerifiers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """A large enough send is signed by processes beside the event loop (none of it on
    the loop); when they are killed, or stopped (a message waits for its signatures
    ``SIGN_WAIT_SECONDS``), the loop signs instead. Either way each recipient gets one
    message, signed as it should be."""
    import asyncio

    from newsletter.app.delivery import send_week
    from newsletter.mail import lane
    from newsletter.mail.signing import Signer, SigningInput
    from newsletter.mail.signproc import SigningPool

    handler, port = smtp_server
    (tmp_path / "dkim.pem").write_bytes(dkim_key[0])
    cfg = smtp_cfg(issue_cfg, port, concurrency=4)
    cfg = cfg.replace(
        email=dataclasses.replace(
            cfg.email, dkim_selector="mail", dkim_key_file=str(tmp_path / "dkim.pem")
        )
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    addresses = _subscribe(store, 40)
    monkeypatch.setattr(lane, "SIGN_IN_PROCESSES_FROM", 10)
    monkeypatch.setattr(lane, "signing_processes", lambda: 2)
    monkeypatch.setattr(lane, "SIGN_WAIT_SECONDS", 0.3)
    on_loop: list[str] = []
    signatures_over, start = Signer.signatures_over, SigningPool.start

    def recorded(self: Signer, signed: SigningInput, *args: Any) -> list[bytes]:
        on_loop.append(signed.names)
        return signatures_over(self, signed, *args)

    async def started(signer: Signer, count: int) -> SigningPool:
        pool = await start(signer, count)
        if fault != "killed":  # ready before the first message
            while not pool.ready:
                await asyncio.sleep(0.01)
        for process in pool._processes:
            assert process.channel.transport is not None
            if fault == "killed":
                process.channel.transport.kill()
            elif fault == "stopped":
                os.kill(process.channel.transport.get_pid(), signal.SIGSTOP)
        return pool

    monkeypatch.setattr(Signer, "signatures_over", recorded)
    monkeypatch.setattr(SigningPool, "start", started)
    report = send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), b"k" * 32)
    assert report.counts["sent"] == 40
    assert len(on_loop) == (40 if fault else 0)
    assert handler.counts() == dict.fromkeys(addresses, 1)
    for address in addresses:
        (data,) = handler.received[address]
        assert dkim_verifiers.dkimpy(data) == {"mail": True}, address
    store.close()


class _LedgerWatch(FaultySmtpHandler):
    """Looks up each message's row in the ledger as the message arrives: it must be
    marked sending, with this message's Message-ID, before the server has it."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.seen: dict[str, tuple[str, str | None, str]] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import sqlalchemy as sa

        from newsletter.store import deliveries, subscribers

        (address,) = envelope.rcpt_tos
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.store.engine.connect() as conn:
            status, message_id = conn.execute(
                sa.select(deliveries.c.status, deliveries.c.message_id)
                .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .where(subscribers.c.email == address)
            ).one()
        self.seen[address] = (status, message_id, str(message["Message-ID"]))
        return await super().handle_DATA(server, session, envelope)


def test_each_message_reaches_the_server_only_after_its_row_is_marked(
    issue_cfg: Config, seeds_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark is written while the server takes the envelope, and the message is handed
    over only once it is: a crash at any moment never leaves a message sent whose row
    says it was never tried. (Marks made slow here, so that a message handed over
    before its mark would be seen.)"""
    from newsletter.app.delivery import send_week
    from newsletter.store import lanes

    monkeypatch.setattr(lanes, "GROUP_TURNS", 500)

    port = free_port()
    store = open_store(issue_cfg.database_url, issue_cfg.base_dir)
    handler = _LedgerWatch(store)
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        addresses = _subscribe(store, 24)
        cfg = smtp_cfg(issue_cfg, port, concurrency=4)
        report = send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), b"k" * 32)
    finally:
        controller.stop()
    assert report.counts["sent"] == 24
    assert sorted(handler.seen) == addresses
    for address, (status, marked, received) in handler.seen.items():
        assert (status, marked) == ("sending", received), address
    store.close()
