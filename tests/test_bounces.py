"""Bounces, complaints and mailed unsubscribes: read from a Maildir or IMAP, acted on once."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from newsletter import bounces
from newsletter.bounces import read_report, report_id
from newsletter.cli import main
from newsletter.config import Config
from newsletter.store import Store, open_store
from newsletter.subscription import request_subscription
from newsletter.tokens import make_delivery_token, make_token

REPORTS = FIXTURES / "bounces"
KEY = b"test-secret-key"
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


def fixtures(store: Store) -> dict[str, bytes]:
    leaving = store.get_subscriber(email="leaving@example.org")
    assert leaving is not None
    token = make_token(KEY, "unsubscribe", leaving.id).encode()
    return {
        path.name: path.read_bytes().replace(b"{unsubscribe_token}", token)
        for path in sorted(REPORTS.glob("*.eml"))
    }


def status(store: Store, address: str) -> tuple[str, str, str]:
    sub = store.get_subscriber(email=address)
    assert sub is not None
    return sub.status, sub.status_reason, sub.status_code


def test_each_report_format_is_classified(bounce_cfg: Config) -> None:
    data = {path.name: path.read_bytes() for path in REPORTS.glob("*.eml")}
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
        # Without a real token, the subject names nobody: the sender's address does.
        "unsubscribe-address.eml": "unsubscribe",
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
    for name, data in fixtures(store).items():
        drop(box, name, data)
    (box / "new" / "1.unreadable.test").mkdir()  # a name that cannot be read as a file

    result = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert status(store, "gone@example.net") == ("bounced", "hard_bounce", "5.1.1")
    assert status(store, "olduser@gmail.example") == ("bounced", "hard_bounce", "5.1.1")
    assert status(store, "exuser@corp.example.org")[:2] == ("bounced", "hard_bounce")
    assert status(store, "complainer@example.com")[:2] == ("unsubscribed", "complaint")
    assert status(store, "leaving@example.org")[:2] == ("unsubscribed", "unsubscribe_mail")
    assert status(store, "Plain.Reader@example.org")[:2] == ("unsubscribed", "unsubscribe_mail")
    for address in ("full@example.com", "reader@example.org", "slow@example.net"):
        assert status(store, address)[0] == "active", address
    assert status(store, "bystander@example.org") == ("active", "", "")
    full = store.get_subscriber(email="full@example.com")
    assert full is not None and full.soft_bounces == 1
    assert dict(result.counts) == {
        "hard": 3,
        "soft": 1,
        "complaint": 1,
        "unsubscribe": 2,
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
    # Recorded on the delivery too, with the diagnostic.
    with store.engine.connect() as conn:
        kind, code, detail = conn.exec_driver_sql(
            "select bounce_kind, bounce_status, bounce_detail from deliveries where id = ?",
            (deliveries["gone@example.net"],),
        ).one()
    assert (kind, code) == ("hard", "5.1.1") and "User unknown" in detail

    # Handled messages moved aside; the garbage and the unreadable entry flagged and kept.
    assert len(os.listdir(box / ".Processed" / "cur")) == 9
    assert all(name.endswith(":2,S") for name in os.listdir(box / ".Processed" / "cur"))
    assert os.listdir(box / "new") == []
    kept = sorted(os.listdir(box / "cur"))
    assert len(kept) == 2 and all(name.endswith(":2,F") for name in kept)

    # The same reports again (a second copy, or a crash before the move): nothing changes.
    events = len(store.reports())
    subscribers_before = list(store.iter_subscribers())
    for name, data in fixtures(store).items():
        drop(box, name, data)
    again = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert len(store.reports()) == events
    assert list(store.iter_subscribers()) == subscribers_before
    assert "hard: gone@example.net: already recorded" in again.lines
    # A second run over the same mailbox reads nothing more (the flagged ones are skipped).
    third = bounces.process(bounce_cfg, store, KEY, maildir=box)
    assert sum(third.counts.values()) == 0
    store.close()


def test_verp_token_names_the_delivery_before_anything_else(bounce_cfg: Config) -> None:
    store = open_store(bounce_cfg.database_url, bounce_cfg.base_dir)
    for address in ("gone@example.net", "other@example.net"):
        store.add_subscriber(address)
    ids = deliver(store, "2024-W31", ("gone@example.net", "other@example.net"))
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

    # The form again: only a confirmation goes out; the issue does not.
    assert request_subscription(bounce_cfg, store, KEY, sub.email, "", "ko") is not None
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("pending", "complaint")
    issue = store.ensure_issue("2024-W32", "weekly", status="sending")
    assert store.fan_out(issue.id) == 0

    # Never confirmed: after the link's seven days it is unsubscribed (complaint) again.
    later = bounces.utcnow() + dt_days(8)
    assert bounces.expire_unconfirmed(store, later) == (0, 1)
    sub = store.get_subscriber(email="complainer@example.com")
    assert sub is not None and (sub.status, sub.status_reason) == ("unsubscribed", "complaint")

    # Confirming anew (the form, then the link) makes it active, the complaint cleared.
    request_subscription(bounce_cfg, store, KEY, sub.email, "", "ko")
    store.set_status(sub.id, "active")
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


def test_the_bounces_command_prints_counts_and_actions(
    bounce_cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    (line,) = listed.stdout.splitlines()
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
