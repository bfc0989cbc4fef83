"""Subscribe, confirm and unsubscribe against the running web app (real HTTP)."""

from __future__ import annotations

import mailbox
import re
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest

from newsletter.config import Config
from newsletter.service import SenderThread
from newsletter.store import Store, open_store
from newsletter.tokens import make_token
from newsletter.web import create_app

KEY = b"web-test-key"


@pytest.fixture
def web(
    cfg: Config, live_server: Callable[[Any], str]
) -> Iterator[tuple[Config, Store, httpx.Client]]:
    cfg = cfg.replace(secret_key=KEY.decode())
    store = open_store(cfg.database_url, cfg.base_dir)
    # The app queues its mails; the process's sender thread sends them, as in `serve`.
    sender = SenderThread(cfg, store, KEY, issues=False).start()
    app = create_app(cfg, wake_sender=sender.wake)
    try:
        with httpx.Client(base_url=live_server(app), follow_redirects=False) as client:
            yield cfg, store, client
    finally:
        sender.stop()
        store.close()


def _outbox(cfg: Config) -> list[Any]:
    """The outbox, once the sender has sent every queued mail."""
    store = open_store(cfg.database_url, cfg.base_dir)
    deadline = time.monotonic() + 20
    while store.next_mail_at() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    store.close()
    box = mailbox.Maildir(str(cfg.outbox_path), create=True)
    return [message_from_bytes(m.as_bytes(), policy=policy.default) for m in box]


def test_subscribe_then_confirm_activates(web: tuple[Config, Store, httpx.Client]) -> None:
    cfg, store, client = web
    form = client.get("/subscribe")
    assert form.status_code == 200 and 'name="email"' in form.text
    response = client.post(
        "/subscribe", data={"email": "New@Example.org", "name": "김독자", "lang": "ko"}
    )
    assert response.status_code == 200
    assert "확인 링크를 보냈습니다" in response.text
    assert "set-cookie" not in response.headers
    sub = store.get_subscriber(email="new@example.org")
    assert sub is not None and sub.status == "pending"
    (mail,) = _outbox(cfg)
    assert mail["To"] == "김독자 <New@example.org>"
    assert mail["Subject"].startswith("구독을 확인해 주세요")
    link = re.search(r"https?://\S+/confirm/(\S+)", mail.get_content())
    assert link is not None
    confirmed = client.get(f"/confirm/{link.group(1)}")
    assert confirmed.status_code == 200 and "구독이 확인되었습니다" in confirmed.text
    assert store.get_subscriber(email="new@example.org").status == "active"


def test_subscribe_answers_the_same_for_known_and_unknown(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    _cfg, store, client = web
    store.add_subscriber("known@example.org", "", "ko", status="active")
    known = client.post("/subscribe", data={"email": "known@example.org", "lang": "ko"})
    unknown = client.post("/subscribe", data={"email": "unknown@example.org", "lang": "ko"})
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    assert store.get_subscriber(email="known@example.org").status == "active"


def test_subscribe_rejects_a_bad_address_without_recording(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    _, store, client = web
    response = client.post("/subscribe", data={"email": "not-an-address", "lang": "en"})
    assert response.status_code == 400
    assert "not a valid email address" in response.text
    assert store.count_subscribers() == {}


def test_one_click_unsubscribe_rfc8058(web: tuple[Config, Store, httpx.Client]) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "en")
    token = make_token(KEY, "unsubscribe", sub.id)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "reader@example.org" in page.text and 'lang="en"' in page.text
    assert store.get_subscriber(id=sub.id).status == "active"  # GET changes nothing
    response = client.post(
        f"/unsubscribe/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert store.get_subscriber(id=sub.id).status == "unsubscribed"


def test_unsubscribe_page_speaks_the_subscribers_language(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("ko@example.org", "", "ko")
    page = client.get(f"/unsubscribe/{make_token(KEY, 'unsubscribe', sub.id)}")
    assert "그만 받으시겠어요" in page.text


@pytest.mark.parametrize(
    "token",
    [
        "1.AAAAAAAAAAAAAAAAAAAAAA",  # forged signature
        make_token(b"another-key", "unsubscribe", 1),  # someone else's key
        make_token(KEY, "confirm", 1),  # a token for another purpose
        "2" + make_token(KEY, "unsubscribe", 1)[1:],  # tampered id
        "garbage",
    ],
)
def test_forged_or_tampered_tokens_are_refused(
    web: tuple[Config, Store, httpx.Client], token: str
) -> None:
    _, store, client = web
    store.add_subscriber("one@example.org")
    store.add_subscriber("two@example.org")
    assert client.get(f"/unsubscribe/{token}").status_code == 400
    assert (
        client.post(f"/unsubscribe/{token}", content="List-Unsubscribe=One-Click").status_code
        == 400
    )
    assert store.count_subscribers() == {"active": 2}


def test_sample_link_of_a_preview_changes_nothing(web: tuple[Config, Store, httpx.Client]) -> None:
    _, _, client = web
    response = client.post(f"/unsubscribe/{make_token(KEY, 'unsubscribe', 0)}")
    assert response.status_code == 200
    assert "미리보기" in response.text


def test_subscribing_a_known_address_changes_nothing_about_it(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("victim@example.org", "진짜 이름", "ko")
    response = client.post(
        "/subscribe",
        data={"email": "victim@example.org", "name": "Your account is suspended", "lang": "en"},
    )
    assert response.status_code == 200
    again = store.get_subscriber(id=sub.id)
    assert (again.name, again.lang, again.status) == ("진짜 이름", "ko", "active")


def _confirm_link(cfg: Config) -> str:
    mail = _outbox(cfg)[-1]
    link = re.search(r"https?://\S+(/confirm/\S+)", mail.get_content())
    assert link is not None
    return link.group(1)


def test_an_old_confirmation_link_cannot_undo_an_unsubscribe(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    cfg, store, client = web
    client.post("/subscribe", data={"email": "r@example.org", "lang": "ko"})
    old_link = _confirm_link(cfg)
    assert client.get(old_link).status_code == 200
    sub = store.get_subscriber(email="r@example.org")
    store.set_status(sub.id, "unsubscribed")
    assert client.get(old_link).status_code == 400
    assert store.get_subscriber(id=sub.id).status == "unsubscribed"
    # Asking again is the way back: a new link, then active.
    client.post("/subscribe", data={"email": "r@example.org", "lang": "ko"})
    assert store.get_subscriber(id=sub.id).status == "pending"
    assert client.get(_confirm_link(cfg)).status_code == 200
    assert store.get_subscriber(id=sub.id).status == "active"


def test_confirmation_links_expire() -> None:
    from newsletter.tokens import TokenError, read_token

    token = make_token(KEY, "confirm", 7, expires=1_000)
    assert read_token(KEY, "confirm", token, now=999) == 7
    with pytest.raises(TokenError, match="expired"):
        read_token(KEY, "confirm", token, now=1_001)
    forged = token.replace(".1000.", ".9999999999.")
    with pytest.raises(TokenError, match="bad signature"):
        read_token(KEY, "confirm", forged, now=1_001)


def test_the_editors_copy_approves_the_draft_by_post_only(
    cfg: Config, live_server: Callable[[Any], str]
) -> None:
    import asyncio
    import dataclasses
    import datetime as dt
    from zoneinfo import ZoneInfo

    from newsletter.service import tick

    cfg = cfg.replace(
        secret_key=KEY.decode(),
        schedule=dataclasses.replace(cfg.schedule, weekly_mode="draft"),
        email=dataclasses.replace(cfg.email, editor_email="editor@example.org"),
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    readers = [f"reader{i}@example.org" for i in range(3)]
    for address in readers:
        store.add_subscriber(address)
    monday = dt.datetime(2024, 8, 5, 8, 30, tzinfo=ZoneInfo("Asia/Seoul"))
    asyncio.run(tick(cfg, monday))
    assert store.get_issue("2024-W31").status == "draft"
    (copy,) = _outbox(cfg)
    assert str(copy["To"]) == "editor@example.org"
    text = copy.get_body(("plain",)).get_content()
    assert "초안입니다" in text
    link = re.search(r"https?://\S+/(approve/\S+)", text)
    assert link is not None

    sender = SenderThread(cfg, store, KEY).start()
    try:
        with httpx.Client(base_url=live_server(create_app(cfg, wake_sender=sender.wake))) as client:
            page = client.get(f"/{link.group(1)}")
            assert page.status_code == 200
            assert "승인하고 발송하기" in page.text and "3명" in page.text
            assert client.head(f"/{link.group(1)}").status_code in (200, 405)
            assert store.get_issue("2024-W31").status == "draft"  # looking changes nothing
            forged = client.post(f"/{link.group(1)[:-2]}xx")
            assert forged.status_code == 400
            assert store.get_issue("2024-W31").status == "draft"
            approved = client.post(f"/{link.group(1)}")
            assert approved.status_code == 200
            assert store.get_issue("2024-W31").content_hash is not None
            deadline = time.monotonic() + 30
            while store.get_issue("2024-W31").status != "sent" and time.monotonic() < deadline:
                time.sleep(0.05)
            again = client.post(f"/{link.group(1)}")  # a second press sends nothing more
            assert again.status_code == 200
    finally:
        sender.stop()
    assert store.get_issue("2024-W31").status == "sent"
    received = sorted(str(m["To"]).split("<")[-1].rstrip(">") for m in _outbox(cfg))
    assert received == sorted(["editor@example.org", *readers])
    store.close()


def test_the_form_queues_the_confirmation_and_never_sends_in_the_request(
    cfg: Config, live_server: Callable[[Any], str]
) -> None:
    """With the SMTP server down, the visitor still gets the page at once; the mail waits
    in the queue and goes out when the server is back."""
    from aiosmtpd.controller import Controller
    from conftest import FaultySmtpHandler, free_port, smtp_cfg

    port = free_port()
    cfg = smtp_cfg(cfg, port).replace(secret_key=KEY.decode())
    store = open_store(cfg.database_url, cfg.base_dir)
    sender = SenderThread(cfg, store, KEY, issues=False).start()
    try:
        with httpx.Client(base_url=live_server(create_app(cfg, wake_sender=sender.wake))) as client:
            response = client.post("/subscribe", data={"email": "later@example.org"})
            assert response.status_code == 200 and "확인 링크" in response.text
        (mail,) = store.mails("confirm")
        assert mail.recipient == "later@example.org" and mail.status in ("queued", "sending")
        handler = FaultySmtpHandler()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            sender.wake()
            deadline = time.monotonic() + 30
            while not handler.counts() and time.monotonic() < deadline:
                sender.wake()
                time.sleep(0.1)
        finally:
            controller.stop()
    finally:
        sender.stop()
    assert handler.counts() == {"later@example.org": 1}
    (mail,) = store.mails("confirm")
    assert mail.status == "sent"
    store.close()
