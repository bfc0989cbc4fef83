"""Sending through a real SMTP server on loopback: faults, retries, bounces, resume."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import mailbox
import random
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from conftest import SEEDS, FaultySmtpHandler, run_newsletter, smtp_cfg

from newsletter.app import delivery, issues
from newsletter.app.delivery import prepare, send_week
from newsletter.cli import main
from newsletter.config import Config, load_config
from newsletter.mail import lane, sender
from newsletter.mail.lane import backoff
from newsletter.mail.transport import Gate, opened
from newsletter.models import Archive
from newsletter.select import IsoWeek
from newsletter.store import Store, deliveries, open_store, subscribers

WEEK = IsoWeek(2024, 5)
KEY = b"test-secret-key-of-at-least-32-bytes"


def _store(cfg: Config) -> Store:
    return open_store(cfg.database_url, cfg.base_dir)


def _subscribe(store: Store, count: int, prefix: str = "reader") -> list[str]:
    addresses = [f"{prefix}{i:04d}@example.org" for i in range(count)]
    for i, address in enumerate(addresses):
        store.add_subscriber(address, f"독자 {i}", "en" if i % 3 == 0 else "ko")
    return addresses


def _send(cfg: Config, store: Store, archive: Archive, **kwargs: object) -> delivery.SendReport:
    return send_week(cfg, store, lambda: archive, WEEK, KEY, **kwargs)  # type: ignore[arg-type]


def test_maildir_outbox_by_default_and_second_run_sends_nothing(
    cfg: Config, seeds_archive: Archive
) -> None:
    store = _store(cfg)
    addresses = _subscribe(store, 5)
    store.add_subscriber("gone@example.org", "", "ko", status="unsubscribed")
    report = _send(cfg, store, seeds_archive)
    assert report.counts["sent"] == 5 and report.done
    box = mailbox.Maildir(str(cfg.outbox_path), create=False)
    recipients = sorted(str(message["To"]) for message in box)
    assert [r.split("<")[-1].rstrip(">") for r in recipients] == addresses
    again = _send(cfg, store, seeds_archive)
    assert again.this_run["sent"] == 0
    assert len(box) == 5
    assert store.get_issue("2024-W05").status == "sent"


def test_send_tick_and_worker_say_that_the_mail_went_to_the_outbox(
    tmp_path: Path, seeds_archive: Archive
) -> None:
    """With no SMTP host nothing leaves the machine: no command says "sent"."""
    config = tmp_path / "config.toml"
    config.write_text(f'source = "{SEEDS}"\noutbox_dir = "mail/out"\n', encoding="utf-8")
    cfg = load_config(config, env={})
    store = _store(cfg)
    _subscribe(store, 2)
    new = tmp_path / "mail" / "out" / "new"
    runner = CliRunner()
    env = {"NEWSLETTER_SECRET_KEY": KEY.decode()}

    def run(*args: str) -> str:
        result = runner.invoke(main, [*args, "--config", str(config)], env=env)
        assert result.exit_code == 0, result.output
        assert " sent" not in result.stdout, result.stdout
        return result.stdout

    # The Monday after 2024-W05: the weekly job sends that week's issue.
    ticked = run("tick", "--now", "2024-02-05T08:30+09:00")
    assert (
        f"weekly: done: 2024-W05: 2 written to {new} (no SMTP host set), 0 failed, "
        "0 skipped, 0 waiting (2 in this run)\n"
    ) in ticked
    sent = run("send", "--week", "2024-W01")
    assert sent.splitlines()[-1] == (
        f"2024-W01: 2 written to {new} (no SMTP host set), 0 failed, 0 skipped, 0 waiting "
        "(2 in this run)"
    )
    delivery.ready_to_send(cfg, store, lambda: seeds_archive, IsoWeek(2024, 21))
    assert run("worker", "--once") == f"2 written to {new} (no SMTP host set)\n"
    copy = run("send", "--week", "2024-W21", "--to", "editor@example.org")
    assert (
        copy == f"2024-W21: test copy to editor@example.org written to {new} (no SMTP host set)\n"
    )
    assert len(list(new.iterdir())) == 7
    store.close()


def test_every_good_message_once_and_faults_classified(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port, concurrency=3, max_attempts=4)
    store = _store(cfg)
    good = _subscribe(store, 30)
    faulty = {
        "temp@example.org": ["temp", "temp"],  # two 451s, then accepted
        "drop@example.org": ["drop"],  # disconnected mid-DATA once
        "slow@example.org": ["slow"],
    }
    for address, script in faulty.items():
        store.add_subscriber(address)
        handler.script[address] = list(script)
    store.add_subscriber("perm@example.org")
    handler.always["perm@example.org"] = "perm"
    store.add_subscriber("never@example.org")
    handler.always["never@example.org"] = "temp"

    report = _send(cfg, store, seeds_archive)

    counts = handler.counts()
    for address in [*good, *faulty]:
        assert counts.get(address) == 1, address
    assert "perm@example.org" not in counts and "never@example.org" not in counts
    assert report.counts == {"queued": 0, "sending": 0, "sent": 33, "failed": 2, "skipped": 0}
    issue = store.get_issue("2024-W05")
    failures = {f.email: f for f in store.failures(issue.id)}
    assert failures["perm@example.org"].attempts == 1
    assert failures["perm@example.org"].last_error.startswith("550")
    assert failures["never@example.org"].attempts == 4  # smtp.max_attempts, all 4xx
    assert store.get_subscriber(email="perm@example.org").status == "bounced"  # 5.1.1: at once
    never = store.get_subscriber(email="never@example.org")
    assert (never.status, never.soft_bounces) == ("active", 1)  # 4xx: 1 of 3
    with store.engine.connect() as conn:
        temp = conn.execute(
            sa.select(deliveries.c.attempts)
            .where(deliveries.c.status == "sent")
            .order_by(deliveries.c.attempts.desc())
        ).first()
    assert temp is not None and temp.attempts == 3


def test_message_on_the_wire_is_the_prepared_bytes(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port)
    store = _store(cfg)
    store.add_subscriber("one@example.org", "김독자", "ko")
    _send(cfg, store, seeds_archive)
    (raw,) = handler.received["one@example.org"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"] == "[주간 HF 논문] 2024년 5주차: OLMo 외 9편"
    assert message["To"] == "김독자 <one@example.org>"
    assert "/unsubscribe/" in message["List-Unsubscribe"]
    issue = store.get_issue("2024-W05")
    with store.engine.connect() as conn:
        recorded = conn.execute(
            sa.select(deliveries.c.message_id).where(deliveries.c.issue_id == issue.id)
        ).scalar()
    assert message["Message-ID"] == recorded


def test_a_refused_unknown_address_bounces_at_once_and_a_4xx_counts_toward_the_threshold(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    """One policy with reports by mail: 5.1.1 at RCPT bounces the address as a DSN with
    5.1.1 does; a soft refusal counts, and bounces after bounce_threshold issues in a row."""
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port, bounce_threshold=2, max_attempts=2)
    store = _store(cfg)
    for address in ("gone@example.org", "busy@example.org", "fine@example.org"):
        store.add_subscriber(address)
    handler.rcpt["gone@example.org"] = "550 5.1.1 No such user"
    handler.rcpt["busy@example.org"] = "450 4.2.1 Mailbox busy, try again later"
    first = _send(cfg, store, seeds_archive)
    assert first.counts["sent"] == 1 and first.counts["failed"] == 2
    assert handler.attempts == {"fine@example.org": 1}  # refused at RCPT: no DATA
    gone = store.get_subscriber(email="gone@example.org")
    assert (gone.status, gone.status_reason, gone.status_code) == ("bounced", "refused", "5.1.1")
    assert "550 5.1.1 No such user" in (gone.status_detail or "")
    busy = store.get_subscriber(email="busy@example.org")
    assert (busy.status, busy.soft_bounces) == ("active", 1)
    issue = store.get_issue("2024-W05")
    counts = store.bounce_counts(issue.id)
    assert (counts["refused"], counts.get("hard", 0), counts.get("soft", 0)) == (2, 0, 0)

    # The next issue refused too: the second soft bounce in a row bounces the address.
    second = send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 21), KEY)
    assert second.counts["sent"] == 1 and second.counts["failed"] == 1  # gone@ is not sent
    busy = store.get_subscriber(email="busy@example.org")
    assert (busy.status, busy.status_reason, busy.soft_bounces) == ("bounced", "soft_bounces", 2)
    assert busy.status_code == "4.2.1"
    assert store.get_subscriber(email="fine@example.org").status == "active"


def test_reconnects_when_the_server_limits_messages_per_connection(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    handler.per_connection = 3
    cfg = smtp_cfg(cfg, port, concurrency=2)
    store = _store(cfg)
    addresses = _subscribe(store, 20)
    report = _send(cfg, store, seeds_archive)
    assert report.counts["sent"] == 20
    assert handler.counts() == dict.fromkeys(addresses, 1)
    assert len(handler.peers) >= 7  # 20 messages, at most 3 per connection


def test_unsubscribed_mid_send_gets_nothing_more(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port, concurrency=1)
    store = _store(cfg)
    addresses = _subscribe(store, 10)
    leaver = store.get_subscriber(email=addresses[-1])
    assert leaver is not None

    def progress(tally: object, total: int) -> None:
        store.set_status(leaver.id, "unsubscribed")  # after the first message, mid-send

    report = _send(cfg, store, seeds_archive, progress=progress)
    assert addresses[-1] not in handler.counts()
    assert report.counts["sent"] == 9 and report.counts["skipped"] == 1


def test_dry_run_and_test_copy_leave_no_trace(
    cfg: Config, seeds_archive: Archive, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port)
    store = _store(cfg)
    _subscribe(store, 4)
    prepared = prepare(cfg, seeds_archive, WEEK)
    count, size = delivery.dry_run(cfg, store, prepared, KEY)
    assert count == 4 and size > 4 * 10_000
    mail_id = delivery.send_test_copy(cfg, store, prepared, KEY, "editor@example.org", "en")
    assert delivery.send_queued_mail(cfg, store, mail_id).status == "sent"
    assert handler.counts() == {"editor@example.org": 1}
    assert store.get_issue("2024-W05") is None


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    random.seed(1)
    delays = [backoff(n, 30.0) for n in range(1, 6)]
    for n, value in enumerate(delays, 1):
        assert 0.5 * 30 * 2 ** (n - 1) <= value <= 1.5 * 30 * 2 ** (n - 1)
    assert backoff(30, 30.0) <= 1.5 * 3600


# --- processes stopped and killed -------------------------------------------------------------


def _config_file(tmp_path: Path, port: int, **smtp: object) -> Path:
    lines = [f'source = "{SEEDS}"', 'database_url = "sqlite:///newsletter.db"', "[smtp]"]
    values = {"host": "127.0.0.1", "port": port, "tls": "none", "retry_base_seconds": 0.01, **smtp}
    for key, value in values.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sigterm_finishes_in_flight_and_resume_sends_no_duplicate(
    tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    handler.delay = 0.02
    config = _config_file(tmp_path, port, concurrency=4)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 200)
    proc = run_newsletter(config, "send", "--week", "2024-W05", "--allow-insecure-links")
    deadline = time.monotonic() + 60
    while sum(handler.counts().values()) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped before the end" in err
    first = sum(handler.counts().values())
    assert 20 <= first < 200
    resumed = run_newsletter(config, "send", "--week", "2024-W05", "--allow-insecure-links")
    _out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert handler.counts() == dict.fromkeys(addresses, 1)


def test_sigkill_at_random_points_never_skips_anyone(
    tmp_path: Path, smtp_server: tuple[FaultySmtpHandler, int]
) -> None:
    handler, port = smtp_server
    handler.delay = 0.005
    concurrency = 4
    config = _config_file(tmp_path, port, concurrency=concurrency)
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 300)
    rng = random.Random(20240205)
    kills = 0
    for _ in range(60):
        # Killed after a random number of further messages reached the server, not after a
        # time: a loaded machine changes how long a run takes, never what is judged.
        target = sum(handler.counts().values()) + rng.randint(1, 60)
        proc = run_newsletter(config, "send", "--week", "2024-W05", "--allow-insecure-links")
        deadline = time.monotonic() + 300
        while proc.poll() is None and sum(handler.counts().values()) < target:
            assert time.monotonic() < deadline, "a run stalled"
            time.sleep(0.002)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            kills += 1
            continue
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        if "0 waiting" in out:
            break
    else:
        pytest.fail("the send never completed")
    counts = handler.counts()
    assert set(counts) == set(addresses)  # nobody skipped
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= kills * concurrency, (duplicates, kills)
    assert kills >= 1


def test_two_sends_at_once_on_sqlite_deliver_each_message_once(tmp_path: Path) -> None:
    # No row locks in SQLite: the claim must re-check what another process leased.
    config = tmp_path / "config.toml"
    config.write_text(f'source = "{SEEDS}"\n[smtp]\nconcurrency = 4\n')
    store = open_store("sqlite:///newsletter.db", tmp_path)
    addresses = _subscribe(store, 1500)
    procs = [
        run_newsletter(config, "send", "--week", "2024-W05", "--allow-insecure-links")
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    box = mailbox.Maildir(str(tmp_path / "outbox"), create=False)
    received = sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in box)
    assert received == addresses


class _SlowTransport:
    """Records what it is given, slowly: a stand-in for a slow server."""

    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> None:
        import asyncio

        await asyncio.sleep(0.05)
        if await opened(gate):
            self.sent.append(recipient)

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_a_lease_running_out_mid_batch_never_doubles_a_message(
    cfg: Config, seeds_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import datetime as dt

    monkeypatch.setattr(lane, "LEASE", dt.timedelta(seconds=0.2))
    cfg = cfg.replace(smtp=dataclasses.replace(cfg.smtp, concurrency=2))
    store = _store(cfg)
    addresses = _subscribe(store, 40)
    row = issues.start(store, issues.approve(store, cfg, prepare(cfg, seeds_archive, WEEK)))
    sent: list[str] = []
    outbox = sender.Outbox(cfg, store, KEY, factory=lambda: _SlowTransport(sent))

    async def send() -> None:
        await lane.Lane(outbox, row, await outbox.frozen(row)).run()

    asyncio.run(send())
    assert sorted(sent) == addresses  # batches of 10 take 0.5 s, leases last 0.2 s
    assert store.counts(row.id)["sent"] == 40


def test_an_issue_frozen_on_one_port_keeps_its_links_for_every_sender(
    cfg: Config, seeds_archive: Archive
) -> None:
    """With base_url unset, links follow the port of the process that froze the issue; a
    worker or `send` listening nowhere sends the same links."""
    on_18400 = cfg.replace(web=dataclasses.replace(cfg.web, port=18400))
    store = _store(cfg)
    row = issues.approve(store, on_18400, prepare(on_18400, seeds_archive, WEEK))
    message = (
        issues.frozen(store, cfg, row)
        .template("ko", "ko")
        .personalize(
            to_address="reader@example.org",
            to_name="",
            unsubscribe_token="1.abc",
            preferences_token="1.def",
        )
    )
    assert b"<http://127.0.0.1:18400/unsubscribe/1.abc>" in message.data


def test_a_real_send_refuses_links_to_the_listening_address(cfg: Config) -> None:
    real = smtp_cfg(cfg, 25)
    with pytest.raises(issues.InsecureLinks) as info:
        issues.check_links(real, allow_insecure=False)
    assert str(info.value).startswith(
        "base_url is not set, so links point to the listening address http://127.0.0.1:8000/: "
        "one-click unsubscribe (RFC 8058) needs an https base_url in a real send"
    )
    issues.check_links(real, allow_insecure=True)
    issues.check_links(cfg, allow_insecure=False)  # the Maildir outbox is exempt


def test_a_failed_mark_keeps_the_previous_message_to_record_as_sent(
    cfg: Config, seeds_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server accepted a message, and the transaction that was to record it with the
    next one's mark fails (the database locked too long): the worker records it on its
    way out, so it is never sent again."""
    import asyncio
    import sqlite3

    from newsletter.store.lanes import SqliteLaneLedger

    cfg = cfg.replace(smtp=dataclasses.replace(cfg.smtp, concurrency=1))
    store = _store(cfg)
    _subscribe(store, 5)
    row = issues.start(store, issues.approve(store, cfg, prepare(cfg, seeds_archive, WEEK)))
    sent: list[str] = []
    outbox = sender.Outbox(cfg, store, KEY, factory=lambda: _SlowTransport(sent))
    mark, calls = SqliteLaneLedger._mark, []

    def failing(self: SqliteLaneLedger, *args: object) -> int:
        calls.append(args)
        if len(calls) == 3:
            raise sqlite3.OperationalError("database is locked")
        return mark(self, *args)

    monkeypatch.setattr(SqliteLaneLedger, "_mark", failing)

    async def send() -> None:
        await lane.Lane(outbox, row, await outbox.frozen(row)).run()

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        asyncio.run(send())
    assert len(sent) == 2
    with store.engine.connect() as conn:
        statuses = sorted(
            conn.execute(
                sa.select(deliveries.c.status).where(deliveries.c.issue_id == row.id)
            ).scalars()
        )
    assert statuses == ["queued", "queued", "queued", "sent", "sent"]


class _PausingTransport(_SlowTransport):
    """Pauses the issue as the operator would, while its third message is on the wire."""

    def __init__(self, sent: list[str], store: Store, week: str) -> None:
        super().__init__(sent)
        self.store, self.week = store, week

    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> None:
        await super().send(sender, recipient, data, wire_ready=wire_ready, gate=gate)
        if len(self.sent) == 3:
            issues.pause(self.store, self.week)


def test_a_pause_stops_the_messages_a_sender_holds(cfg: Config, seeds_archive: Archive) -> None:
    """An operator's pause stops the send at the messages already on the wire, not after
    everything its workers had claimed; those go back, and the resume sends each reader
    exactly one message."""
    import asyncio

    cfg = cfg.replace(smtp=dataclasses.replace(cfg.smtp, concurrency=2))
    store = _store(cfg)
    addresses = _subscribe(store, 30)
    row = issues.start(store, issues.approve(store, cfg, prepare(cfg, seeds_archive, WEEK)))
    sent: list[str] = []
    outbox = sender.Outbox(
        cfg, store, KEY, factory=lambda: _PausingTransport(sent, store, str(WEEK))
    )

    async def send() -> None:
        await lane.Lane(outbox, row, await outbox.frozen(row)).run()

    asyncio.run(send())
    assert 3 <= len(sent) <= 4  # the other worker's message may have been on the wire
    with store.engine.connect() as conn:
        held = conn.execute(
            sa.select(sa.func.count())
            .select_from(deliveries)
            .where(deliveries.c.issue_id == row.id, deliveries.c.lease_owner.is_not(None))
        ).scalar_one()
    assert held == 0
    issues.resume(store, str(WEEK))
    resumed = issues.find(store, str(WEEK))
    asyncio.run(outbox.send_issue(resumed))
    assert sorted(sent) == addresses


def test_a_rate_limited_worker_records_the_last_message_before_it_waits(
    cfg: Config, seeds_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With smtp.max_per_second set, workers spend most of their time waiting for their
    turn: the message the server took last is recorded sent while they wait, so a kill -9
    in that wait sends nobody a second copy."""
    import asyncio

    from newsletter.pacing import RateLimiter

    cfg = cfg.replace(smtp=dataclasses.replace(cfg.smtp, concurrency=1, max_per_second=20.0))
    store = _store(cfg)
    _subscribe(store, 6)
    row = issues.start(store, issues.approve(store, cfg, prepare(cfg, seeds_archive, WEEK)))
    sent: list[str] = []
    outbox = sender.Outbox(cfg, store, KEY, factory=lambda: _SlowTransport(sent))
    wait, exposed = RateLimiter.wait, []

    async def watched(limiter: RateLimiter) -> None:
        await wait(limiter)
        await asyncio.sleep(0.02)  # a kill -9 now leaves the ledger as it is
        with store.engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    sa.select(subscribers.c.email, deliveries.c.status).join(
                        subscribers, subscribers.c.id == deliveries.c.subscriber_id
                    )
                ).all()
            )
        exposed.extend(address for address in sent if statuses[address] != "sent")

    monkeypatch.setattr(RateLimiter, "wait", watched)

    async def send() -> None:
        await lane.Lane(outbox, row, await outbox.frozen(row)).run()

    asyncio.run(send())
    assert len(sent) == 6
    assert exposed == []


def test_a_write_of_sent_that_fails_keeps_it_to_write_again() -> None:
    """The last messages accepted leave the worker's list only once written: a write that
    fails (or is cancelled) leaves them there for the next try."""
    import asyncio

    written: list[tuple[int, str]] = []

    class Flaky:
        async def mark_sent(self, delivery_id: int, message_id: str) -> None:
            if not written:
                written.append((0, "failed"))
                raise OSError("connection lost")
            written.append((delivery_id, message_id))

    accepted = [(7, "<7@x>")]
    with pytest.raises(OSError):
        asyncio.run(lane.Lane._record(None, Flaky(), accepted))  # type: ignore[arg-type]
    assert accepted == [(7, "<7@x>")]
    asyncio.run(lane.Lane._record(None, Flaky(), accepted))  # type: ignore[arg-type]
    assert accepted == [] and written[-1] == (7, "<7@x>")
