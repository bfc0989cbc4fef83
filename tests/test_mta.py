"""End to end through a real MTA: Postfix on loopback relays into a local Maildir."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import mailbox
import re
import time
from email.header import decode_header, make_header
from pathlib import Path

import dkim

from newsletter.app.delivery import send_week
from newsletter.config import Config
from newsletter.mail.message import list_key
from newsletter.mail.tokens import read_mailed_token
from newsletter.models import Archive
from newsletter.select import IsoWeek
from newsletter.store import open_store

RECIPIENT = "newsletter-test@localhost"


def _dns(record: bytes):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"weekly._domainkey.news.example.org." else None

    return lookup


def _delivered(maildir: Path, message_id: str, timeout: float = 30.0) -> bytes:
    """The delivered copy of ``message_id`` (Postfix delivers asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (maildir / "new").is_dir():
            for _key, message in mailbox.Maildir(str(maildir), create=False).iteritems():
                if message["Message-ID"] == message_id:
                    return message.as_bytes()
        time.sleep(0.2)
    raise AssertionError(f"{message_id} was not delivered to {maildir} within {timeout}s")


def test_issue_through_postfix_keeps_headers_korean_and_dkim(
    cfg: Config,
    seeds_archive: Archive,
    mta: tuple[int, Path],
    dkim_key: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    port, maildir = mta
    pem, record = dkim_key
    (tmp_path / "dkim.pem").write_bytes(pem)
    cfg = cfg.replace(
        base_url="https://news.example.org/",
        secret_key="mta-test-key-of-at-least-32-bytes-long",
        smtp=dataclasses.replace(cfg.smtp, host="127.0.0.1", port=port, tls="none"),
        email=dataclasses.replace(
            cfg.email,
            from_address="weekly@news.example.org",
            dkim_selector="weekly",
            dkim_key_file=str(tmp_path / "dkim.pem"),
            unsubscribe_mailto="unsubscribe@news.example.org",
        ),
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber(RECIPIENT, "김독자", "ko")
    report = send_week(
        cfg,
        store,
        lambda: seeds_archive,
        IsoWeek(2024, 31),
        b"mta-test-key-of-at-least-32-bytes-long",
    )
    assert report.counts["sent"] == 1
    issue = store.get_issue("2024-W31")
    with store.engine.connect() as conn:
        ((message_id,),) = conn.exec_driver_sql(
            "select message_id from deliveries where issue_id = ?", (issue.id,)
        ).all()

    raw = _delivered(maildir, message_id)
    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    # The MTA added its trace headers on top; the signature still verifies.
    assert b"Received: " in data.split(b"DKIM-Signature:")[0]
    assert dkim.verify(data, dnsfunc=_dns(record))

    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["Subject"] == "[주간 HF 논문] 2024년 31주차: Meltemi 외 9편"
    assert str(make_header(decode_header(message["To"]))) == f"김독자 <{RECIPIENT}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://news.example.org/unsubscribe/" in message["List-Unsubscribe"]
    # The mailto is the reader's own address: a mail to it is the only proof that counts.
    mailto = re.search(
        r"<mailto:unsubscribe\+([a-z2-7]{26})@news\.example\.org\?subject=unsubscribe>",
        message["List-Unsubscribe"],
    )
    assert mailto is not None
    reader = store.get_subscriber(email=RECIPIENT)
    key = b"mta-test-key-of-at-least-32-bytes-long"
    assert read_mailed_token(key, list_key(cfg), mailto.group(1)) == reader.id
    text, html = (part.get_content() for part in message.iter_parts())
    assert "Meltemi" in text and "그리스어" in text
    assert "Meltemi" in html and "<table" in html
