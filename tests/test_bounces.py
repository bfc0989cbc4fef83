"""Bounces, complaints and mailed unsubscribes: read from a Maildir or IMAP, acted on once."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, legacy_delivery_token

from newsletter.app.subscription import request_subscription
from newsletter.cli import main
from newsletter.config import Config
from newsletter.mail import bounces
from newsletter.mail.bounces import read_report, report_id
from newsletter.mail.message import list_key
from newsletter.mail.tokens import make_delivery_token, make_mailed_token, make_token
from newsletter.store import Store, open_store

REPORTS = FIXTURES / "bounces"
KEY = b"test-secret-key-of-at-least-32-bytes"
# The subscriber each fixture is about (the test gives each a delivered issue).
READERS = (
    "gone@example.net",
    "full@example.com",
    "complainer@example.com",
    "olduser@gmail.example",
    "exuser@corp.example.org",
    "reader@example.org",
    "leaving@example.org",
    "Plain.Reader@example.org",
    "slow@example.net",
    "bystander@example.org",
    "by.mailto@example.org",
)


@pytest.fixture
def bounce_cfg(cfg: Config) -> Config:
    return cfg.replace(
        secret_key=KEY.decode(),
        email=dataclasses.replace(cfg.email, unsubscribe_mailto="unsubscribe@news.example.org"),
        bounces=dataclasses.replace(cfg.bounces, return_path="bounces@news.example.org"),
    )


def deliver(store: Store, week: str, emails: tuple[str, ...] = READERS) -> dict[str, int]:
    """An issue of ``week`` handed to the server for each address (which must subscribe);
    its Message-IDs are ``<WEEK.ko.LOCAL@news.example.org>``. Returns email -> delivery id."""
    issue = store.ensure_issue(week, "weekly", status="sent")
    store.fan_out(issue.id)
    ids = {}
    with store.engine.begin() as conn:
        rows = conn.exec_driver_sql(
            "select d.id, s.email from deliveries d join subscribers s on s.id = d.subscriber_id "
            "where d.issue_id = ?",
            (issue.id,),
        ).all()
        for delivery_id, address in rows:
            local = address.split("@")[0].lower()
            conn.exec_driver_sql(
                "update deliveries set status = 'sent', message_id = ? where id = ?",
                (f"<{week}.ko.{local}@news.example.org>", delivery_id),
            )
            ids[address] = delivery_id
    return ids


def maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def drop(box: Path, name: str, data: bytes) -> None:
    (box / "new" / f"{time.time_ns()}.{name}.test").write_bytes(data)


def fixtures(cfg: Config, store: Store, ids: dict[str, int]) -> dict[str, bytes]:
    """The report fixtures with their placeholders filled in (see fixtures/bounces/README.md)
    for the subscribers and deliveries ``ids`` (email -> delivery id)."""

    def token(found: re.Match[bytes]) -> bytes:
        what, address = found.group(1).decode(), found.group(2).decode()
        if what == "delivery_token":
            return make_delivery_token(KEY, ids[address]).encode()
        sub = store.get_subscriber(email=address)
        assert sub is not None
        return make_mailed_token(KEY, list_key(cfg), sub.id).encode()

    leaving = store.get_subscriber(email="leaving@example.org")
    assert leaving is not None
    legacy = make_token(KEY, "unsubscribe", leaving.id).encode()
    return {
        path.name: re.sub(
            rb"\{(delivery_token|mailto_token):([^}]+)\}",
            token,
            path.read_bytes().replace(b"{unsubscribe_token}", legacy),
        )
        for path in sorted(REPORTS.glob("*.eml"))
    }


def status(store: Store, address: str) -> tuple[str, str, str]:
    sub = store.get_subscriber(email=address)
    assert sub is not None
    return sub.status, sub.status_reason, sub.status_code


def test_each_report_format_is_classified(bounce_cfg: Config) -> None:
    # Placeholders left as tokens that are not ours: the kind does not depend on them.
    data = {
        path.name: re.sub(rb"\{[a-z_]+:[^}]+\}", b"notours", path.read_bytes())
        for path in REPORTS.glob("*.eml")
    }
    kinds = {name: read_report(bounce_cfg, KEY, raw) for name, raw in data.items()}
    assert {name: report.kind for name, report in kinds.items()} == {
        "arf-complaint.eml": "complaint",
        "auto-reply.eml": "auto_reply",
        "dsn-delayed.eml": "notice",
        "dsn-hard.eml": "hard",
        "dsn-soft.eml": "soft",
        "exchange-bounce.eml": "hard",
        "garbage.eml": "unknown",
        "gmail-bounce.eml": "hard",
        # Without a real token: a mailed unsubscribe that names nobody (see below).
        "unsubscribe-address.eml": "unsubscribe",
        "unsubscribe-mailto.eml": "unsubscribe",
        "unsubscribe-token.eml": "unsubscribe",
    }
    assert kinds["dsn-hard.eml"].status == "5.1.1"
    assert "User unknown" in kinds["dsn-hard.eml"].diagnostic
    assert kinds["dsn-soft.eml"].status == "5.2.2"
    assert kinds["gmail-bounce.eml"].status == "5.1.1"
    assert kinds["gmail-bounce.eml"].addresses == ["olduser@gmail.example"]
    assert "not recognized" in kinds["exchange-bounce.eml"].diagnostic
    assert kinds["arf-complaint.eml"].message_ids == ["<2024-W31.ko.complainer@news.example.org>"]
    assert report_id(data["garbage.eml"]).startswith("sha256:")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("5.1.1", "hard"),
        ("5.1.10", "hard"),
        ("5.0.0", "hard"),
        ("5.4.4", "hard"),
        ("5.2.1", "hard"),
        ("5.2.2", "soft"),
        ("4.2.2", "soft"),
        ("4.4.1", "soft"),
        ("5.7.1", "blocked"),
        ("5.3.4", "blocked"),
        ("5.6.0", "blocked"),
    ],
)
def test_status_codes(status: str, kind: str) -> None:
    assert bounces.bounce_kind(status) == kind


def test_a_mailbox_of_reports_acts_once_and_keeps_what_it_cannot_read(
    bounce_cfg: Config, tmp_path: Path
) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    for address in READERS:
        store.add_subscriber(address)
    deliveries = deliver(store, "2024-W31")
    box = maildir(tmp_path / "Maildir")
    for name, data in fixtures(bounce_cfg, store, deliveries).items():
        drop(box, name, data)
    (box / "new" / "1.unreadable.test").mkdir()  # a name that cannot be read as a file

    result = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert status(store, "gone@example.net") == ("bounced", "hard_bounce", "5.1.1")
    assert status(store, "olduser@gmail.example") == ("bounced", "hard_bounce", "5.1.1")
    assert status(store, "exuser@corp.example.org")[:2] == ("bounced", "hard_bounce")
    assert status(store, "complainer@example.com")[:2] == ("unsubscribed", "complaint")
    assert status(store, "leaving@example.org")[:2] == ("unsubscribed", "unsubscribe_mail")
    assert status(store, "by.mailto@example.org")[:2] == ("unsubscribed", "unsubscribe_mail")
    # Its From: is a subscriber's address, which anyone can write: it acts on nobody.
    for address in ("Plain.Reader@example.org", "full@example.com", "reader@example.org"):
        assert status(store, address)[0] == "active", address
    assert status(store, "bystander@example.org") == ("active", "", "")
    full = store.get_subscriber(email="full@example.com")
    assert full is not None and full.soft_bounces == 1
    assert dict(result.counts) == {
        "hard": 3,
        "soft": 1,
        "complaint": 1,
        "unsubscribe": 2,
        "unmatched": 1,
        "auto_reply": 1,
        "notice": 1,
        "unknown": 1,
        "unreadable": 1,
    }
    assert "hard: gone@example.net: bounced (5.1.1)" in result.lines
    assert "complaint: complainer@example.com: unsubscribed (complaint)" in result.lines
    assert "soft: full@example.com: soft bounce 1 of 3 (5.2.2)" in result.lines
    assert any(
        line.startswith(f"unknown: {box}/new/") and "garbage" in line and "kept" in line
        for line in result.lines
    )
    assert any(line.startswith("unreadable: ") for line in result.lines)
    assert any(
        line.startswith(f"unmatched: {box}/new/")
        and "unsubscribe report with no token or Message-ID of ours" in line
        and "(names plain.reader@example.org); moved to Unmatched for a person" in line
        for line in result.lines
    )
    # Recorded on the delivery too, with the diagnostic.
    with store.engine.connect() as conn:
        kind, code, detail = conn.exec_driver_sql(
            "select bounce_kind, bounce_status, bounce_detail from deliveries where id = ?",
            (deliveries["gone@example.net"],),
        ).one()
    assert (kind, code) == ("hard", "5.1.1") and "User unknown" in detail

    # Handled messages moved aside; the unmatched one set aside, unread, for a person; the
    # garbage and the unreadable entry flagged and kept.
    assert len(os.listdir(box / ".Processed" / "cur")) == 9
    (aside,) = os.listdir(box / ".Unmatched" / "new")
    assert b"please remove me" in (box / ".Unmatched" / "new" / aside).read_bytes()
    assert store.unmatched().count == 1
    assert all(name.endswith(":2,S") for name in os.listdir(box / ".Processed" / "cur"))
    assert os.listdir(box / "new") == []
    kept = sorted(os.listdir(box / "cur"))
    assert len(kept) == 2 and all(name.endswith(":2,F") for name in kept)

    # The same reports again (a second copy, or a crash before the move): nothing changes.
    events = len(store.reports())
    subscribers_before = list(store.iter_subscribers())
    for name, data in fixtures(bounce_cfg, store, deliveries).items():
        drop(box, name, data)
    again = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert len(store.reports()) == events
    assert store.unmatched().count == 1  # the same report, noted once
    assert list(store.iter_subscribers()) == subscribers_before
    assert "hard: gone@example.net: already recorded" in again.lines
    # A second run over the same mailbox reads nothing more (the flagged ones are skipped).
    third = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert sum(third.counts.values()) == 0
    store.close()


def test_verp_token_names_the_delivery_before_anything_else(bounce_cfg: Config) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    readers = ("gone@example.net", "other@example.net", "earlier@example.net")
    for address in readers:
        store.add_subscriber(address)
    ids = deliver(store, "2024-W31", readers)
    raw = (REPORTS / "dsn-hard.eml").read_bytes()
    # The VERP address names other@'s delivery: it wins over the address and Message-ID.
    token = make_delivery_token(KEY, ids["other@example.net"]).encode()
    raw = raw.replace(
        b"Delivered-To: bounces@news.example.org",
        b"Delivered-To: bounces+" + token + b"@news.example.org",
    )
    report = read_report(bounce_cfg, KEY, raw)
    actions = bounces.act(bounce_cfg, store, KEY, report, report_id(raw), "mailbox")
    assert [a.email for a in actions] == ["other@example.net"]
    assert status(store, "gone@example.net")[0] == "active"
    # A token signed with another key names nobody: the Message-ID decides.
    forged = raw.replace(
        token, make_delivery_token(b"other key", ids["other@example.net"]).encode()
    )
    report = read_report(
        bounce_cfg, KEY, forged.replace(b"Message-Id: <2024", b"Message-Id: <x2024")
    )
    actions = bounces.act(bounce_cfg, store, KEY, report, "another report", "mailbox")
    assert [a.email for a in actions] == ["gone@example.net"]
    # A message sent before tokens were sealed carries an ID-SIG token: still its delivery.
    earlier = raw.replace(token, legacy_delivery_token(KEY, ids["earlier@example.net"]).encode())
    earlier = earlier.replace(b"<2024-W31.ko.gone@", b"<not-ours@")
    report = read_report(bounce_cfg, KEY, earlier)
    actions = bounces.act(bounce_cfg, store, KEY, report, "a third report", "mailbox")
    assert [a.email for a in actions] == ["earlier@example.net"]
    store.close()


def _soft(store: Store, cfg: Config, address: str, week: str, delivery: int) -> str | None:
    sub = store.get_subscriber(email=address)
    assert sub is not None
    return store.record_report(
        report_id=f"soft-{week}",
        source="mailbox",
        kind="soft",
        subscriber_id=sub.id,
        delivery_id=delivery,
        status_code="4.2.2",
        diagnostic="mailbox full",
        bounce_threshold=cfg.smtp.bounce_threshold,
    )


def test_soft_bounces_count_over_consecutive_issues_only(bounce_cfg: Config) -> None:
    cfg = bounce_cfg.replace(smtp=dataclasses.replace(bounce_cfg.smtp, bounce_threshold=2))
    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber("full@example.com")
    first = deliver(store, "2024-W30", ("full@example.com",))
    deliver(store, "2024-W31", ("full@example.com",))  # delivered, nothing came back
    third = deliver(store, "2024-W32", ("full@example.com",))
    assert _soft(store, cfg, "full@example.com", "2024-W30", first["full@example.com"]) == (
        "soft bounce 1 of 2"
    )
    # W31 did not bounce: the count starts again at W32.
    assert _soft(store, cfg, "full@example.com", "2024-W32", third["full@example.com"]) == (
        "soft bounce 1 of 2"
    )
    assert status(store, "full@example.com")[0] == "active"
    fourth = deliver(store, "2024-W33", ("full@example.com",))
    assert _soft(store, cfg, "full@example.com", "2024-W33", fourth["full@example.com"]) == (
        "soft bounce 2 of 2: bounced"
    )
    assert status(store, "full@example.com") == ("bounced", "soft_bounces", "4.2.2")
    # The same report again changes nothing.
    assert _soft(store, cfg, "full@example.com", "2024-W33", fourth["full@example.com"]) is None
    store.close()


def test_a_complaint_is_never_mailed_again_until_it_confirms_anew(
    bounce_cfg: Config,
) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    store.add_subscriber("complainer@example.com")
    deliver(store, "2024-W31", ("complainer@example.com",))
    raw = (REPORTS / "arf-complaint.eml").read_bytes()
    report = read_report(bounce_cfg, KEY, raw)
    bounces.act(bounce_cfg, store, KEY, report, report_id(raw), "mailbox")
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("unsubscribed", "complaint")

    # The form again: answered as for anyone, but its confirmation is never mailed.
    mail_id = request_subscription(bounce_cfg, store, KEY, sub.email, "", "ko")
    withheld = store.mail(mail_id)
    assert withheld is not None and withheld.status == "skipped"
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("unsubscribed", "complaint")
    issue = store.ensure_issue("2024-W32", "weekly", status="sending")
    assert store.fan_out(issue.id) == 0

    # Never confirmed: after the link's seven days the request is gone, the complaint stays.
    later = bounces.utcnow() + dt_days(8)
    assert bounces.expire_unconfirmed(store, later) == (0, 0)
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("unsubscribed", "complaint")
    assert store.open_confirmations(sub.id) == []  # its link no longer works

    # A confirmed request makes it active, the complaint cleared.
    import sqlalchemy as sa

    from newsletter.store import deliveries

    with store.engine.begin() as conn:  # a day later: the per-address limit allows another
        conn.execute(sa.delete(deliveries).where(deliveries.c.kind == "confirm"))
    request_subscription(bounce_cfg, store, KEY, sub.email, "", "ko")
    (request,) = store.open_confirmations(sub.id)
    assert store.confirm(request.id, request.nonce) is not None
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("active", "")
    store.close()


def dt_days(days: int) -> Any:
    import datetime as dt

    return dt.timedelta(days=days)


def test_unconfirmed_subscriptions_are_deleted_after_seven_days(bounce_cfg: Config) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    request_subscription(bounce_cfg, store, KEY, "new@example.org", "", "ko")
    store.add_subscriber("active@example.org")
    assert bounces.expire_unconfirmed(store, bounces.utcnow() + dt_days(6)) == (0, 0)
    assert bounces.expire_unconfirmed(store, bounces.utcnow() + dt_days(8)) == (1, 0)
    assert store.get_subscriber(email="new@example.org") is None
    assert store.get_subscriber(email="active@example.org") is not None
    store.close()


def test_the_bounces_command_prints_counts_and_actions(bounce_cfg: Config, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[email]\nunsubscribe_mailto = "unsubscribe@news.example.org"\n', encoding="utf-8"
    )
    store = open_store("sqlite:///newsletter.db", tmp_path)
    store.add_subscriber("gone@example.net")
    deliver(store, "2024-W31", ("gone@example.net",))
    store.close()
    box = maildir(tmp_path / "box")
    shutil.copy(REPORTS / "dsn-hard.eml", box / "new" / "1.dsn.test")
    shutil.copy(REPORTS / "garbage.eml", box / "new" / "2.garbage.test")
    runner = CliRunner(env={"NEWSLETTER_SECRET_KEY": KEY.decode()})
    result = runner.invoke(main, ["bounces", "--config", str(config), "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "hard: gone@example.net: bounced (5.1.1)"
    assert lines[1] == (f"unknown: {box}/new/2.garbage.test: no mail headers; kept for a person")
    assert lines[2].startswith("hard 1, soft 0, blocked 0, complaint 0, unsubscribe 0,")
    listed = runner.invoke(
        main, ["subscribers", "list", "--status", "bounced", "--config", str(config)]
    )
    header, line = listed.stdout.splitlines()
    assert header == "email\tname\tlang\tstatus\twhy"
    assert line.startswith("gone@example.net\t\tko\tbounced\thard_bounce 5.1.1 ")
    assert "User unknown" in line
    status_out = runner.invoke(main, ["status", "--week", "2024-W31", "--config", str(config)])
    assert "bounces: hard 1, soft 0" in status_out.stdout
    assert "bounce rate 100.00%" in status_out.stdout
    assert "warning: bounce rate 100.00% is above 2%" in status_out.stderr
    # Without a mailbox configured or given: a one-line error.
    missing = runner.invoke(main, ["bounces", "--config", str(config)])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: no bounce mailbox: set [bounces] maildir")
    nothing = runner.invoke(
        main, ["bounces", "--config", str(config), "--maildir", str(tmp_path / "nope")]
    )
    assert nothing.exit_code == 1 and "is not a Maildir" in nothing.stderr


# --- end to end: Postfix bounces an issue by mail -----------------------------------------------

BOUNCE_MAILDIR = Path(
    os.environ.get("NEWSLETTER_TEST_BOUNCE_MAILDIR", "/home/newsletter-bounces/Maildir")
)


def _arrived(folder: Path, needle: bytes, timeout: float = 60.0) -> Path:
    """The message with ``needle`` in its first 4 KB that Postfix delivered into the
    Maildir ``folder`` (asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sub in ("new", "cur"):
            where = folder / sub
            for path in where.iterdir() if where.is_dir() else []:
                with contextlib.suppress(OSError):
                    if needle in path.read_bytes()[:4096]:
                        return path
        time.sleep(0.2)
    raise AssertionError(f"nothing with {needle!r} in {folder} within {timeout}s")


def _dsn_for(token: str) -> Path:
    """The DSN Postfix delivered to newsletter-bounces+TOKEN@localhost."""
    return _arrived(BOUNCE_MAILDIR, f"newsletter-bounces+{token}@localhost".encode())


def _through_postfix(cfg: Config, port: int, **email: str) -> Config:
    """Settings that send into the test Postfix, bounces coming back by VERP."""
    if not BOUNCE_MAILDIR.parent.is_dir():
        from conftest import need_service

        need_service("the bounce mailbox", f"no {BOUNCE_MAILDIR.parent}")
    return cfg.replace(
        base_url="https://news.example.org/",
        secret_key=KEY.decode(),
        smtp=dataclasses.replace(cfg.smtp, host="127.0.0.1", port=port, tls="none"),
        email=dataclasses.replace(cfg.email, from_address="weekly@news.example.org", **email),
        bounces=dataclasses.replace(cfg.bounces, return_path="newsletter-bounces@localhost"),
    )


def _bounces_command(tmp_path: Path, *reports: Path, config_text: str = "") -> Any:
    """`newsletter bounces` on a mailbox holding ``reports`` alone."""
    box = maildir(tmp_path / "bounces")
    for report in reports:
        shutil.move(report, box / "new" / report.name.split(":")[0])
    config = tmp_path / "config.toml"
    config.write_text('database_url = "sqlite:///newsletter.db"\n' + config_text, encoding="utf-8")
    runner = CliRunner(env={"NEWSLETTER_SECRET_KEY": KEY.decode()})
    result = runner.invoke(main, ["bounces", "--config", str(config), "--maildir", str(box)])
    assert result.exit_code == 0, result.output
    if len(reports) == 1:
        assert len(os.listdir(box / ".Processed" / "cur")) == 1
    return result


def test_postfix_bounces_an_issue_and_exactly_that_subscriber_is_marked(
    cfg: Config, seeds_archive: Any, mta: tuple[int, Path], tmp_path: Path
) -> None:
    from newsletter.app.delivery import send_week
    from newsletter.select import IsoWeek

    cfg = _through_postfix(cfg, mta[0])
    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber("newsletter-test@localhost")
    store.add_subscriber("nosuchuser@localhost")
    report = send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 31), KEY)
    # Postfix took both with 250: the failure comes later, by mail.
    assert report.counts["sent"] == 2
    with store.engine.connect() as conn:
        rows = dict(
            conn.exec_driver_sql(
                "select s.email, d.id from deliveries d join subscribers s on s.id = d.subscriber_id"
            ).all()
        )
    token = make_delivery_token(KEY, rows["nosuchuser@localhost"])
    dsn = _dsn_for(token)
    result = _bounces_command(tmp_path, dsn)
    assert result.stdout.splitlines()[0] == "hard: nosuchuser@localhost: bounced (5.1.1)"
    assert status(store, "nosuchuser@localhost")[:2] == ("bounced", "hard_bounce")
    assert status(store, "newsletter-test@localhost") == ("active", "", "")
    store.close()


def test_postfix_bounces_a_confirmation_to_its_verp_address_and_bounces_reads_it(
    cfg: Config, mta: tuple[int, Path], tmp_path: Path
) -> None:
    """A single mail leaves like an issue's: from its own VERP address, with Reply-To, so
    its bounce reaches the mailbox `newsletter bounces` reads and acts on that address."""
    from newsletter.app.delivery import send_queued_mail

    cfg = _through_postfix(cfg, mta[0], reply_to="editor@example.org")
    store = open_store(cfg.database_url, cfg.base_dir)
    address = "nosuchreader@localhost"
    mail_id = request_subscription(cfg, store, KEY, address, "", "ko")
    assert send_queued_mail(cfg, store, mail_id, KEY).status == "sent"
    dsn = _dsn_for(make_delivery_token(KEY, mail_id))
    # The returned headers: the confirmation carried the Reply-To that is set.
    assert b"Reply-To: editor@example.org" in dsn.read_bytes()
    result = _bounces_command(tmp_path, dsn)
    assert result.stdout.splitlines()[0] == f"hard: {address}: bounced (5.1.1)"
    assert status(store, address)[:2] == ("bounced", "hard_bounce")
    (event,) = store.reports()
    assert event.delivery_id == mail_id  # found by the VERP token, not by the address
    store.close()


def _submit(data: bytes, sender: str, recipient: str) -> None:
    """Hand a mail to the test Postfix, as anyone on the internet can."""
    import smtplib

    from conftest import MTA_PORT

    with smtplib.SMTP("127.0.0.1", MTA_PORT, timeout=30) as smtp:
        smtp.sendmail(sender, [recipient], data)


def _report_mail(
    to: str, message_id: str, report_type: str, fields: str, returned: str, subject: str = ""
) -> bytes:
    """A multipart/report (a DSN or an ARF) whose returned part is ``returned`` (headers)."""
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
        f"To: <{to}>\nSubject: {subject or 'Undelivered Mail Returned to Sender'}\n"
        f"Date: Mon, 5 Aug 2024 08:31:02 +0900\nMessage-ID: {message_id}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="b0"\n\n'
        "--b0\nContent-Type: text/plain\n\nA report about a message.\n\n"
        f"--b0\nContent-Type: message/{report_type}\n\n{fields}\n"
        f"--b0\nContent-Type: text/rfc822-headers\n\n{returned}\n--b0--\n"
    )
    return text.replace("\n", "\r\n").encode()


def _dsn_fields(recipient: str) -> str:
    return (
        "Reporting-MTA: dns; mx.example.net\n\n"
        f"Final-Recipient: rfc822; {recipient}\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n"
    )


def _arf_fields(recipient: str) -> str:
    return (
        "Feedback-Type: abuse\nUser-Agent: SomeGenerator/1.0\nVersion: 1\n"
        f"Original-Mail-From: <redacted@isp.example>\nOriginal-Rcpt-To: <{recipient}>\n"
    )


def _returned(data: bytes, drop: tuple[str, ...]) -> str:
    """The headers of a delivered copy without ``drop``, as a feedback loop returns them."""
    import email.parser

    headers = email.parser.BytesHeaderParser().parsebytes(data)
    kept = [(k, v) for k, v in headers.items() if k.lower() not in drop]
    return "".join(f"{k}: {' '.join(str(v).split())}\n" for k, v in kept)


def test_postfix_forged_reports_act_on_nobody_and_genuine_ones_still_act(
    cfg: Config, seeds_archive: Any, mta: tuple[int, Path], tmp_path: Path
) -> None:
    """The bounce and unsubscribe addresses are public: forged reports that name
    subscribers by address (an invalid token, none at all, a From:) act on nobody and wait
    unmatched; a real DSN, a complaint carrying our token and a mail to a reader's own
    List-Unsubscribe address act."""
    import email
    import email.policy
    import secrets

    from newsletter.app.delivery import send_week
    from newsletter.select import IsoWeek

    port, delivered = mta
    run = secrets.token_hex(4)
    cfg = _through_postfix(cfg, port, unsubscribe_mailto="newsletter-bounces@localhost")
    store = open_store(cfg.database_url, cfg.base_dir)
    # newsletter-test+ANYTHING@localhost all reach the test Maildir; nosuch-* does not exist.
    victims = [f"newsletter-test+victim{i}-{run}@localhost" for i in range(4)]
    complainer = f"newsletter-test+complainer-{run}@localhost"
    leaver = f"newsletter-test+leaver-{run}@localhost"
    unknown = f"nosuch-{run}@localhost"
    for address in (*victims, complainer, leaver, unknown):
        store.add_subscriber(address)
    assert send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 31), KEY).counts["sent"] == 7
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select s.email, d.id, d.message_id from deliveries d"
            " join subscribers s on s.id = d.subscriber_id order by d.id"
        ).all()
    ids = {address: delivery for address, delivery, _ in rows}
    copies = {a: _arrived(delivered, mid.encode()) for a, _, mid in rows if a != unknown}

    # Each message's VERP address and correlation header: one opaque token, no id in it.
    first, second = (
        email.message_from_bytes(copies[v].read_bytes(), policy=email.policy.default)
        for v in victims[:2]
    )
    for message, address in ((first, victims[0]), (second, victims[1])):
        token = message["X-Newsletter-Delivery"]
        assert message["Return-Path"] == f"<newsletter-bounces+{token}@localhost>"
        assert len(token) == 26 and "-" not in token
        assert token != legacy_delivery_token(KEY, ids[address])
    assert first["X-Newsletter-Delivery"][:2] != second["X-Newsletter-Delivery"][:2]

    bounce_box = "newsletter-bounces@localhost"
    forged = {
        # An invalid VERP token; the subscriber in Final-Recipient and the returned To:.
        "invalid token": (
            f"newsletter-bounces+{'a' * 26}@localhost",
            _report_mail(
                bounce_box,
                f"<forged-1-{run}@attacker.example>",
                "delivery-status",
                _dsn_fields(victims[0]),
                f"From: weekly@news.example.org\nTo: {victims[0]}\nMessage-ID: <x-{run}@a>\n",
            ),
        ),
        # No token at all: the subscriber only in the returned message's To:.
        "no token": (
            bounce_box,
            _report_mail(
                bounce_box,
                f"<forged-2-{run}@attacker.example>",
                "delivery-status",
                _dsn_fields(f"someone-{run}@elsewhere.example"),
                f"From: weekly@news.example.org\nTo: {victims[1]}\n",
            ),
        ),
        # A subscriber's From: to the unsubscribe address, without its token.
        "from address": (
            bounce_box,
            (
                f"From: <{victims[2]}>\r\nTo: <{bounce_box}>\r\nSubject: unsubscribe\r\n"
                f"Message-ID: <forged-3-{run}@attacker.example>\r\n\r\nunsubscribe\r\n"
            ).encode(),
        ),
        # A complaint that carries no token or Message-ID of ours.
        "complaint": (
            bounce_box,
            _report_mail(
                bounce_box,
                f"<forged-4-{run}@attacker.example>",
                "feedback-report",
                _arf_fields(victims[3]),
                f"From: weekly@news.example.org\nTo: {victims[3]}\n",
                subject="complaint",
            ),
        ),
    }
    for recipient, data in forged.values():
        _submit(data, "" if b"multipart/report" in data else victims[2], recipient)

    # Genuine: a complaint whose returned headers (recipient and Message-ID redacted) keep
    # our X-Newsletter-Delivery; an unsubscribe mailed to the reader's own mailto address.
    returned = _returned(
        copies[complainer].read_bytes(),
        ("to", "message-id", "received", "delivered-to", "return-path", "x-original-to"),
    )
    assert "X-Newsletter-Delivery: " in returned and complainer not in returned
    complaint = _report_mail(
        bounce_box,
        f"<genuine-arf-{run}@isp.example>",
        "feedback-report",
        _arf_fields("redacted@isp.example"),
        returned,
        subject="complaint",
    )
    _submit(complaint, "", bounce_box)
    unsubscribe = email.message_from_bytes(
        copies[leaver].read_bytes(), policy=email.policy.default
    )["List-Unsubscribe"]
    mailto = re.search(r"<mailto:([^?>]+)\?subject=unsubscribe>", unsubscribe)
    assert mailto is not None and mailto.group(1).startswith("newsletter-bounces+")
    _submit(
        (
            f"From: <{leaver}>\r\nTo: <{mailto.group(1)}>\r\nSubject: unsubscribe\r\n"
            f"Message-ID: <genuine-unsub-{run}@example.org>\r\n\r\nunsubscribe\r\n"
        ).encode(),
        leaver,
        mailto.group(1),
    )

    reports = [
        _dsn_for(make_delivery_token(KEY, ids[unknown])),
        *(_arrived(BOUNCE_MAILDIR, f"<forged-{n}-{run}@".encode()) for n in range(1, 5)),
        _arrived(BOUNCE_MAILDIR, f"<genuine-arf-{run}@".encode()),
        _arrived(BOUNCE_MAILDIR, f"<genuine-unsub-{run}@".encode()),
    ]
    for copy in copies.values():
        copy.unlink()
    email_settings = '[email]\nfrom_address = "weekly@news.example.org"\n'
    email_settings += f'unsubscribe_mailto = "{bounce_box}"\n'
    result = _bounces_command(tmp_path, *reports, config_text=email_settings)
    lines = result.stdout.splitlines()
    assert f"hard: {unknown}: bounced (5.1.1)" in lines
    assert f"complaint: {complainer}: unsubscribed (complaint)" in lines
    assert f"unsubscribe: {leaver}: unsubscribed" in lines
    unmatched = [line for line in lines if line.startswith("unmatched: ")]
    assert len(unmatched) == 4 and all("moved to Unmatched" in line for line in unmatched)
    assert lines[-1].startswith(
        "hard 1, soft 0, blocked 0, complaint 1, unsubscribe 1, unmatched 4,"
    )

    for victim in victims:
        assert status(store, victim) == ("active", "", ""), victim
    assert status(store, unknown)[:2] == ("bounced", "hard_bounce")
    assert status(store, complainer)[:2] == ("unsubscribed", "complaint")
    assert status(store, leaver)[:2] == ("unsubscribed", "unsubscribe_mail")
    assert len(store.reports()) == 3
    box = tmp_path / "bounces"
    aside = [
        (box / ".Unmatched" / "new" / name).read_bytes()
        for name in os.listdir(box / ".Unmatched" / "new")
    ]
    assert sorted(
        next(n for n in range(1, 5) if f"<forged-{n}-{run}@".encode() in data) for data in aside
    ) == [1, 2, 3, 4]
    assert len(os.listdir(box / ".Processed" / "cur")) == 3
    assert store.unmatched().count == 4

    runner = CliRunner(env={"NEWSLETTER_SECRET_KEY": KEY.decode()})
    shown = runner.invoke(main, ["status", "--config", str(tmp_path / "config.toml")])
    assert shown.exit_code == 0, shown.output
    assert "unmatched reports: 4 (latest " in shown.stdout
    assert "they wait in the bounce mailbox's Unmatched folder" in shown.stdout
    store.close()


# --- IMAP: a real Dovecot on a free loopback port ---------------------------------------------


@pytest.fixture
def dovecot(tmp_path: Path) -> Any:
    """Dovecot's IMAP server over TLS (a self-signed certificate) on a free port, one user
    ``bounces`` with the password ``secret``: (port, CA file, IMAP client factory)."""
    import imaplib
    import ssl
    import subprocess
    import tempfile

    from conftest import free_port, need_service

    binary = shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin")
    if binary is None:
        need_service("Dovecot", "Debian package dovecot-imapd")
    if os.geteuid() != 0:
        need_service("Dovecot", "the test starts it as root")
    # Outside pytest's private temporary folder: the mail processes run as nobody.
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    root.chmod(0o755)
    (root / "mail").mkdir()
    shutil.chown(root / "mail", "nobody", "nogroup")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (root / "passwd").write_text("bounces:{PLAIN}secret::::::\n", encoding="utf-8")
    port = free_port()
    (root / "dovecot.conf").write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/run
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
mail_location = maildir:{root}/mail
passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""",
        encoding="utf-8",
    )
    server = subprocess.Popen(
        [binary, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    context = ssl.create_default_context(cafile=str(root / "cert.pem"))

    def client() -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=10)
        imap.login("bounces", "secret")
        return imap

    deadline = time.monotonic() + 20
    while True:
        try:
            client().logout()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                log = root / "dovecot.log"
                raise RuntimeError(
                    f"dovecot did not start: {log.read_text() if log.exists() else ''}"
                ) from None
            time.sleep(0.1)
    try:
        yield port, root / "cert.pem", client
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_an_imap_mailbox_is_read_over_tls_and_handled_reports_moved(
    bounce_cfg: Config, dovecot: Any
) -> None:
    port, ca_file, client = dovecot
    cfg = bounce_cfg.replace(
        bounces=dataclasses.replace(
            bounce_cfg.bounces,
            imap_url=f"imaps://bounces@127.0.0.1:{port}/INBOX",
            imap_ca_file=str(ca_file),
            password="secret",
        )
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    for address in READERS:
        store.add_subscriber(address)
    deliver(store, "2024-W31")
    imap = client()
    for name in (
        "dsn-hard.eml",
        "arf-complaint.eml",
        "auto-reply.eml",
        "garbage.eml",
        "unsubscribe-address.eml",  # no token: names nobody
    ):
        imap.append("INBOX", None, None, (REPORTS / name).read_bytes())
    imap.logout()

    result = bounces.process(cfg, store, KEY)
    assert result.counts["hard"] == result.counts["complaint"] == result.counts["unmatched"] == 1
    assert "hard: gone@example.net: bounced (5.1.1)" in result.lines
    assert status(store, "complainer@example.com")[:2] == ("unsubscribed", "complaint")
    assert status(store, "Plain.Reader@example.org")[0] == "active"
    imap = client()
    imap.select("Unmatched")
    _, aside = imap.uid("SEARCH", "UNSEEN")
    assert len(aside[0].split()) == 1  # moved, left unread for a person
    imap.select("INBOX")
    _, left = imap.uid("SEARCH", "ALL")
    _, flagged = imap.uid("SEARCH", "FLAGGED")
    assert len(left[0].split()) == 1 and left == flagged  # the garbage, kept for a person
    imap.select("Processed")
    _, moved = imap.uid("SEARCH", "ALL")
    assert len(moved[0].split()) == 3
    imap.logout()
    # Again: the garbage is flagged, the rest gone from the inbox: nothing to do.
    again = bounces.process(cfg, store, KEY)
    assert sum(again.counts.values()) == 0

    # A wrong password and an untrusted certificate are one-line errors.
    wrong = cfg.replace(bounces=dataclasses.replace(cfg.bounces, password="nope"))
    with pytest.raises(bounces.BounceError, match=r"refused the login of bounces"):
        bounces.process(wrong, store, KEY)
    untrusted = cfg.replace(bounces=dataclasses.replace(cfg.bounces, imap_ca_file=""))
    with pytest.raises(
        bounces.BounceError, match=r"cannot connect to 127.0.0.1:\d+: .*CERTIFICATE"
    ):
        bounces.process(untrusted, store, KEY)
    store.close()


# --- the webhook -------------------------------------------------------------------------------


def test_the_webhook_acts_like_the_mailbox_behind_a_bearer_token(
    bounce_cfg: Config, live_server: Any
) -> None:
    import httpx

    from newsletter.web.app import create_app

    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    for address in ("gone@example.net", "complainer@example.com", "full@example.com"):
        store.add_subscriber(address)
    ids = deliver(store, "2024-W31", ("gone@example.net", "complainer@example.com"))

    off = live_server(create_app(bounce_cfg))
    assert httpx.post(f"{off}/webhooks/bounce", json={}).status_code == 404

    cfg = bounce_cfg.replace(
        bounces=dataclasses.replace(bounce_cfg.bounces, webhook_token="hook-token")
    )
    base = live_server(create_app(cfg))
    url = f"{base}/webhooks/bounce"
    auth = {"Authorization": "Bearer hook-token"}
    hard = {"email": "gone@example.net", "kind": "hard", "status": "5.1.1", "diagnostic": "550"}
    assert httpx.post(url, json=hard).status_code == 401
    wrong = httpx.post(url, json=hard, headers={"Authorization": "Bearer hook-tokeX"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    bad = httpx.post(url, json={"email": "gone@example.net", "kind": "gone"}, headers=auth)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("events[0].kind: must be one of hard, soft")
    assert httpx.post(url, content=b"{", headers=auth).status_code == 400

    token = make_delivery_token(KEY, ids["complainer@example.com"])
    events = [hard, {"delivery": token, "kind": "complaint", "id": "fbl-1"}]
    answer = httpx.post(url, json={"events": events}, headers=auth)
    assert answer.status_code == 200, answer.text
    assert [r["actions"] for r in answer.json()["results"]] == [
        [{"email": "gone@example.net", "action": "bounced (5.1.1)"}],
        [{"email": "complainer@example.com", "action": "unsubscribed (complaint)"}],
    ]
    assert status(store, "gone@example.net") == ("bounced", "hard_bounce", "5.1.1")
    assert status(store, "complainer@example.com")[:2] == ("unsubscribed", "complaint")
    # A relay posting the same events again changes nothing.
    again = httpx.post(url, json=events, headers=auth).json()["results"]
    assert [r["actions"][0]["action"] for r in again] == ["already recorded"] * 2
    nobody = httpx.post(url, json={"email": "x@example.org", "kind": "soft"}, headers=auth)
    assert nobody.json()["results"] == [{"index": 0, "matched": False, "actions": []}]
    # A token is taken only as made, from the relay too: another case is no token of ours.
    shouted = make_delivery_token(KEY, ids["gone@example.net"]).upper()
    upper = httpx.post(url, json={"delivery": shouted, "kind": "soft"}, headers=auth)
    assert upper.json()["results"] == [{"index": 0, "matched": False, "actions": []}]
    store.close()


def test_the_correlation_header_is_in_the_message_and_signed(
    issue_cfg: Config, seeds_archive: Any, dkim_key: tuple[bytes, bytes]
) -> None:
    import dkim

    from newsletter.mail.message import message_template
    from newsletter.publish.render import render_issue
    from newsletter.select import IsoWeek, build_issue

    pem, record = dkim_key
    cfg = issue_cfg.replace(
        email=dataclasses.replace(
            issue_cfg.email, dkim_domain="news.example.org", dkim_selector="weekly"
        )
    )
    rendered = render_issue(cfg, build_issue(cfg, seeds_archive, IsoWeek(2024, 31)), "ko")
    token = make_delivery_token(KEY, 42)
    message = message_template(cfg, rendered, dkim_key=pem).personalize(
        to_address="reader@example.org",
        to_name="",
        unsubscribe_token="1.x",
        preferences_token="1.x",
        delivery_token=token,
    )
    assert f"\r\nX-Newsletter-Delivery: {token}\r\n".encode() in message.data
    signature = message.data.split(b"\r\n\r\n", 1)[0].split(b"DKIM-Signature:")[1]
    assert b"x-newsletter-delivery" in signature.replace(b"\r\n", b"").replace(b" ", b"").lower()

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"weekly._domainkey.news.example.org." else None

    assert dkim.verify(message.data, dnsfunc=dns)
    tampered = message.data.replace(token.encode(), make_delivery_token(KEY, 43).encode())
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_the_envelope_sender_is_verp_only_with_a_return_path(bounce_cfg: Config) -> None:
    from newsletter.mail.tokens import TokenError, envelope_sender, read_delivery_token

    sender = envelope_sender(bounce_cfg, KEY, 1234)
    local, _, domain = sender.partition("@")
    assert domain == "news.example.org" and local.startswith("bounces+")
    token = local.split("+", 1)[1]
    assert read_delivery_token(KEY, token) == 1234 and "1234" not in token
    with pytest.raises(TokenError):  # only as made: lower case
        read_delivery_token(KEY, token.upper())
    assert len(local) <= 64  # RFC 5321: a local part is at most 64 characters
    plain = bounce_cfg.replace(bounces=dataclasses.replace(bounce_cfg.bounces, return_path=""))
    assert envelope_sender(plain, KEY, 1234) == plain.email.from_address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[bounces]\npassword = "x"\n',
            "bounces.password is a secret .*NEWSLETTER_BOUNCES_PASSWORD",
        ),
        (
            '[bounces]\nwebhook_token = "x"\n',
            "bounces.webhook_token is a secret .*NEWSLETTER_WEBHOOK",
        ),
        ('[bounces]\nimap_url = "imap://b@h/INBOX"\n', "bounces.imap_url must be imaps://"),
        ('[bounces]\nimap_url = "imaps://b:pw@h/INBOX"\n', "must not contain a password"),
        ('[bounces]\nreturn_path = "a+b@example.org"\n', "bounces.return_path must be a plain"),
        ('[bounces]\npoll_every = "soon"\n', "bounces.poll_every must be seconds or a duration"),
    ],
)
def test_bounce_settings_are_checked(tmp_path: Path, text: str, message: str) -> None:
    from newsletter.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


def test_bounce_secrets_come_from_the_environment(tmp_path: Path) -> None:
    from newsletter.config import load_config

    path = tmp_path / "config.toml"
    path.write_text('[bounces]\nimap_url = "imaps://b@mail.example.org/INBOX"\n', encoding="utf-8")
    token = "relay-token-of-at-least-thirty-two-bytes"
    env = {"NEWSLETTER_BOUNCES_PASSWORD": "pw", "NEWSLETTER_WEBHOOK_TOKEN": token}
    cfg = load_config(path, env=env)
    assert (cfg.bounces.password, cfg.bounces.webhook_token) == ("pw", token)
    assert "pw" not in repr(cfg) and token not in repr(cfg)


def test_a_complaint_is_matched_by_the_verp_sender_it_reports(bounce_cfg: Config) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    store.add_subscriber("complainer@example.com")
    store.add_subscriber("someone@example.org")
    ids = deliver(store, "2024-W31", ("complainer@example.com", "someone@example.org"))
    token = make_delivery_token(KEY, ids["someone@example.org"]).encode()
    raw = (REPORTS / "arf-complaint.eml").read_bytes()
    raw = raw.replace(b"bounces+redacted@", b"bounces+" + token + b"@")
    report = read_report(bounce_cfg, KEY, raw)
    actions = bounces.act(bounce_cfg, store, KEY, report, report_id(raw), "mailbox")
    assert [(a.email, a.what) for a in actions] == [
        ("someone@example.org", "unsubscribed (complaint)")
    ]
    assert status(store, "complainer@example.com")[0] == "active"
    store.close()


def test_a_bounce_for_mail_sent_before_a_key_rotation_is_still_attributed(
    bounce_cfg: Config,
) -> None:
    """VERP tokens in mail sent with the old key still name their delivery afterwards."""
    from newsletter.mail.tokens import TokenError, read_delivery_token, signing_keys

    old = KEY
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    store.add_subscriber("gone@example.com")
    ids = deliver(store, "2024-W31", ("gone@example.com",))
    token = make_delivery_token(old, ids["gone@example.com"])
    rotated = bounce_cfg.replace(secret_key="a-new-key-after-rotation-0123456789 " + old.decode())
    keys = signing_keys(rotated)
    assert keys[0] != old
    with pytest.raises(TokenError):
        read_delivery_token(keys[0], token)
    assert read_delivery_token(keys, token) == ids["gone@example.com"]
    store.close()
