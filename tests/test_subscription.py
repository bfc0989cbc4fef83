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
from newsletter.mail.tokens import make_token
from newsletter.service.processes import SenderThread
from newsletter.store import Store, open_store
from newsletter.web.app import create_app

KEY = b"web-test-key-of-at-least-32-bytes-long"


@pytest.fixture
def web(
    cfg: Config, live_server: Callable[[Any], str]
) -> Iterator[tuple[Config, Store, httpx.Client]]:
    cfg = cfg.replace(secret_key=KEY.decode())
    store = open_store(cfg.database_url, cfg.base_dir)
    # The app queues its mails; the process's sender thread sends them, as in `serve`.
    sender = SenderThread(cfg, store, KEY).start()
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


def test_subscribe_then_confirm_activates(
    web: tuple[Config, Store, httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, store, client = web
    caplog.set_level("INFO", logger="newsletter.app.subscription")
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
    assert sub.name == ""  # the form's name applies only once the address confirms
    (mail,) = _outbox(cfg)
    assert mail["To"] == "김독자 <New@example.org>"
    assert mail["Subject"].startswith("구독을 확인해 주세요")
    link = re.search(r"https?://\S+/confirm/(\S+)", mail.get_content())
    assert link is not None
    # No SMTP host: the link is in the log too, and the mail's text reads as it is.
    assert (
        f"confirmation link for N***@example.org (no SMTP host: the mail goes to "
        f"{cfg.outbox_path / 'new'}): {link.group(0)}"
    ) in caplog.messages
    assert mail.get_body(("plain",))["Content-Transfer-Encoding"] == "8bit"
    (raw,) = (cfg.outbox_path / "new").iterdir()
    assert link.group(0).encode() in raw.read_bytes()
    page = client.get(f"/confirm/{link.group(1)}")
    assert page.status_code == 200 and "구독 확인하기" in page.text
    assert "N***@example.org" in page.text
    assert client.head(f"/confirm/{link.group(1)}").status_code == 200
    assert store.get_subscriber(email="new@example.org").status == "pending"  # a look only
    confirmed = client.post(f"/confirm/{link.group(1)}")
    assert confirmed.status_code == 200 and "구독이 확인되었습니다" in confirmed.text
    sub = store.get_subscriber(email="new@example.org")
    assert (sub.status, sub.name, sub.lang) == ("active", "김독자", "ko")
    assert client.post(f"/confirm/{link.group(1)}").status_code == 400  # single use


@pytest.mark.parametrize(
    ("lang", "says"), [("ko", "{days}일 동안 유효합니다"), ("en", "{days} days")]
)
def test_the_confirmation_mail_says_how_long_its_link_works(
    web: tuple[Config, Store, httpx.Client], lang: str, says: str
) -> None:
    from newsletter.lifecycle import CONFIRM_DAYS

    cfg, _store, client = web
    client.post("/subscribe", data={"email": "new@example.org", "lang": lang})
    (mail,) = _outbox(cfg)
    text = mail.get_content()
    link = text.index("/confirm/")
    assert text.index(says.format(days=CONFIRM_DAYS)) > link  # below the link it is about


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
    assert "An email address has one @ between a name and a domain" in response.text
    assert store.count_subscribers() == {}


def test_one_click_unsubscribe_rfc8058(web: tuple[Config, Store, httpx.Client]) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "en")
    token = make_token(KEY, "unsubscribe", sub.id)
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "r***@example.org" in page.text and 'lang="en"' in page.text
    assert "reader@example.org" not in page.text
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
        # The real token, written another way: only the form it was made in is good.
        make_token(KEY, "unsubscribe", 1) + "=",
        make_token(KEY, "unsubscribe", 1) + "%3D%3D",
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
    """The link of the newest confirmation mail (as sent: the outbox holds it too)."""
    _outbox(cfg)
    store = open_store(cfg.database_url, cfg.base_dir)
    newest = store.mails("confirm")[-1]
    store.close()
    mail = message_from_bytes(newest.data, policy=policy.default)
    link = re.search(r"https?://\S+(/confirm/\S+)", mail.get_content())  # type: ignore[attr-defined]
    assert link is not None
    return link.group(1)


def _let_time_pass(store: Store) -> None:
    """Age the queued mails by a day, so that the per-address limits allow another."""
    import datetime as dt

    import sqlalchemy as sa

    from newsletter.store import deliveries

    with store.engine.begin() as conn:
        mails = sa.select(deliveries.c.id, deliveries.c.created_at).where(
            deliveries.c.issue_id.is_(None)
        )
        for row in conn.execute(mails).all():
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == row.id)
                .values(created_at=row.created_at - dt.timedelta(days=1))
            )


@pytest.mark.parametrize("leaving", ["unsubscribed", "bounced"])
def test_an_old_confirmation_link_cannot_undo_an_unsubscribe_or_a_bounce(
    web: tuple[Config, Store, httpx.Client], leaving: str
) -> None:
    cfg, store, client = web
    client.post("/subscribe", data={"email": "r@example.org", "lang": "ko"})
    first = _confirm_link(cfg)
    _let_time_pass(store)
    client.post("/subscribe", data={"email": "r@example.org", "lang": "en"})
    second = _confirm_link(cfg)
    assert client.post(first).status_code == 400  # replaced by the newer request
    assert client.post(second).status_code == 200
    sub = store.get_subscriber(email="r@example.org")
    assert (sub.status, sub.lang) == ("active", "en")
    store.set_status(sub.id, leaving)
    assert client.post(second).status_code == 400
    assert client.get(second).status_code == 400
    # Someone submits the address again: it stays as it was until the new link is used.
    _let_time_pass(store)
    client.post("/subscribe", data={"email": "r@example.org", "lang": "ko"})
    assert store.get_subscriber(id=sub.id).status == leaving
    assert client.post(second).status_code == 400
    assert client.post(_confirm_link(cfg)).status_code == 200
    assert store.get_subscriber(id=sub.id).status == "active"


def test_confirmation_links_expire() -> None:
    from newsletter.mail.tokens import TokenError, read_token

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

    from newsletter.service.processes import tick

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
    cfg: Config, live_server: Callable[[Any], str], caplog: pytest.LogCaptureFixture
) -> None:
    """With the SMTP server down, the visitor still gets the page at once; the mail waits
    in the queue and goes out when the server is back (7-bit clean, its link never
    logged: over SMTP only the address's owner may see it)."""
    from aiosmtpd.controller import Controller
    from conftest import FaultySmtpHandler, free_port, smtp_cfg

    caplog.set_level("DEBUG")

    port = free_port()
    cfg = smtp_cfg(cfg, port).replace(secret_key=KEY.decode())
    store = open_store(cfg.database_url, cfg.base_dir)
    sender = SenderThread(cfg, store, KEY).start()
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
    (data,) = handler.received["later@example.org"]
    assert data.isascii() and b"Content-Transfer-Encoding: base64" in data
    assert not any("/confirm/" in message for message in caplog.messages)


# --- abuse: header injection, floods, cross-site posts, enumeration ------------------------------

INJECTION = "=?utf-8?q?=0D=0AReply-To:_boss@evil.example=0D=0A=0D=0APhishing_text?="


@pytest.mark.parametrize(
    "name",
    [
        INJECTION,
        "=?UTF-8?Q?=0D=0AReply-To:_x@evil.example?=",  # mixed case
        "=?utf-8?b?DQpSZXBseS1UbzogeEBldmlsLmV4YW1wbGU=?=",  # B encoding
        "Kim =?utf-8?q?=0D=0ABcc:_all@evil.example?= Lee",  # inside a longer name
        "=?utf-8?q?a?= =?utf-8?q?=0D=0AX:_y?=",  # two words, to be folded
        "trailing ?= only",
    ],
)
def test_encoded_words_in_a_name_are_refused_in_the_pages_language(
    web: tuple[Config, Store, httpx.Client], name: str
) -> None:
    _cfg, store, client = web
    response = client.post(
        "/subscribe", data={"email": "victim@example.org", "name": name, "lang": "ko"}
    )
    assert response.status_code == 400
    assert "이름에는 =? 또는 ?= 문자열을 쓸 수 없습니다" in response.text
    assert store.count_subscribers() == {} and store.mails() == []


def test_no_name_can_add_a_header_to_the_confirmation(cfg: Config) -> None:
    """Below the form's check: the To header is built without the email package's folding,
    and a name that looks like encoded words is itself encoded."""
    from newsletter.mail.message import confirmation_message

    for name in (INJECTION, INJECTION.upper(), "=?x?=", "a\u00a0=?utf-8?b?QQ==?="):
        data = confirmation_message(
            cfg,
            lang="ko",
            to_address="v@example.org",
            to_name=name,
            confirm_url="https://x/c",
            valid_days=7,
        ).data
        head = data.split(b"\r\n\r\n", 1)[0]
        assert b"Reply-To" not in head and b"Bcc" not in head
        mail = message_from_bytes(data, policy=policy.default)
        # Read back as typed (CPython's parser puts a space between adjacent encoded words).
        assert mail["To"].addresses[0].display_name.replace(" ", "") == name.replace(" ", "")
        assert mail["To"].addresses[0].addr_spec == "v@example.org"
        assert len(mail.get_all("Subject")) == 1


def test_one_confirmation_mail_per_address_per_ten_minutes_and_three_a_day(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    _cfg, store, client = web
    assert client.post("/subscribe", data={"email": "x@example.org"}).status_code == 200
    again = client.post("/subscribe", data={"email": "X@example.org", "lang": "ko"})
    assert again.status_code == 429 and "요청이 너무 많습니다" in again.text
    assert again.headers["retry-after"] == "600"
    english = client.post("/subscribe", data={"email": "x@example.org", "lang": "en"})
    assert english.status_code == 429 and "Too many requests" in english.text
    assert len(store.mails("confirm")) == 1
    for _ in range(2):
        _let_time_pass_minutes(store, 11)
        assert client.post("/subscribe", data={"email": "x@example.org"}).status_code == 200
    _let_time_pass_minutes(store, 11)
    assert client.post("/subscribe", data={"email": "x@example.org"}).status_code == 429
    assert len(store.mails("confirm")) == 3  # three within a day, no more


def _let_time_pass_minutes(store: Store, minutes: int) -> None:
    import datetime as dt

    import sqlalchemy as sa

    from newsletter.store import deliveries

    with store.engine.begin() as conn:
        mails = sa.select(deliveries.c.id, deliveries.c.created_at).where(
            deliveries.c.issue_id.is_(None)
        )
        for row in conn.execute(mails).all():
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == row.id)
                .values(created_at=row.created_at - dt.timedelta(minutes=minutes))
            )


def test_a_client_may_post_the_form_only_so_often(
    cfg: Config, live_server: Callable[[Any], str]
) -> None:
    import dataclasses

    cfg = cfg.replace(
        secret_key=KEY.decode(), web=dataclasses.replace(cfg.web, subscribe_per_minute=5)
    )
    with httpx.Client(base_url=live_server(create_app(cfg))) as client:
        codes = [
            client.post("/subscribe", data={"email": f"a{i}@example.org"}).status_code
            for i in range(8)
        ]
    assert codes == [200] * 5 + [429] * 3


# Headers of a form post, and whether it comes from this site.
FROM_WHERE = [
    ({"Origin": "https://evil.example"}, False),
    ({"Origin": "null"}, False),
    ({"Referer": "https://evil.example/page"}, False),
    ({"Origin": "http://127.0.0.1:8000"}, True),  # base_url's origin
    ({}, True),  # no browser: nothing to forge
]


@pytest.mark.parametrize(("headers", "allowed"), FROM_WHERE)
def test_form_posts_from_another_site_are_refused(
    web: tuple[Config, Store, httpx.Client], headers: dict[str, str], allowed: bool
) -> None:
    _cfg, store, client = web
    sub, _ = store.add_subscriber("reader@example.org")
    response = client.post("/subscribe", data={"email": "new@example.org"}, headers=headers)
    unsubscribe = client.post(
        f"/unsubscribe/{make_token(KEY, 'unsubscribe', sub.id)}", headers=headers
    )
    if allowed:
        assert response.status_code == unsubscribe.status_code == 200
        assert store.get_subscriber(id=sub.id).status == "unsubscribed"
    else:
        assert response.status_code == unsubscribe.status_code == 403
        assert store.mails() == [] and store.get_subscriber(id=sub.id).status == "active"


def test_the_form_does_the_same_work_for_known_and_unknown_addresses(cfg: Config) -> None:
    """The same SQL statements, in the same order, whether the address is active, pending,
    unsubscribed or unknown: the response time cannot tell them apart."""
    import sqlalchemy as sa

    from newsletter.app.subscription import request_subscription

    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber("active@example.org")
    store.add_subscriber("left@example.org", status="unsubscribed")
    store.add_subscriber("waiting@example.org", status="pending")
    store.add_subscriber("gone@example.org", status="bounced")
    spam, _ = store.add_subscriber("spam@example.org")
    store.set_status(spam.id, "unsubscribed", reason="complaint")
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(re.sub(r"\s+", " ", statement))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    shapes = []
    try:
        for address in ("active@", "left@", "waiting@", "nobody@", "gone@", "spam@"):
            seen.clear()
            request_subscription(cfg, store, KEY, address + "example.org", "이름", "ko")
            shapes.append(list(seen))
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert len(shapes[0]) >= 5
    assert all(shape == shapes[0] for shape in shapes)
    # Recorded alike, but the bounced and the complained address are never mailed.
    assert [m.status for m in store.mails("confirm")] == ["queued"] * 4 + ["skipped"] * 2
    store.close()


def test_the_subscribe_page_speaks_the_language_in_its_address_not_the_browsers(
    web: tuple[Config, Store, httpx.Client],
) -> None:
    cfg, _store, client = web
    browser = {"Accept-Language": "en-US,en;q=0.9"}
    korean = client.get("/subscribe", headers=browser).text
    assert '<html lang="ko">' in korean and "이메일 주소" in korean
    assert '<option value="ko" selected>' in korean
    assert 'action="?lang=ko"' in korean  # posted back where the page came from
    assert f'href="{cfg.site_url}subscribe?lang=en"' in korean  # the switch
    english = client.get("/subscribe?lang=en").text
    assert '<html lang="en">' in english and "Email address" in english
    assert '<option value="en" selected>' in english
    # Every page, the subscription pages too, lets feed readers find the feeds.
    for text in (korean, english, client.get("/confirm/1.bad").text):
        assert 'type="application/atom+xml"' in text and 'type="application/feed+json"' in text
        assert f'href="{cfg.site_url}issues.atom"' in text


@pytest.mark.parametrize(
    ("address", "korean"),
    [
        ("", "이메일 주소를 입력해 주세요."),
        ("reader.example.org", "이름과 도메인 사이에 @가 하나 있어야 합니다"),
        ("독자@example.org", "한글 등 다른 문자가 들어간 주소로는"),
        ("reader@example", "@ 뒷부분이 메일을 받을 수 있는 도메인이 아닙니다"),
        ("read er@example.org", "공백이나 줄바꿈을 쓸 수 없습니다"),
        ('"x"@example.org', "올바른 이메일 주소가 아닙니다"),
    ],
)
def test_form_mistakes_are_told_in_the_pages_language(
    web: tuple[Config, Store, httpx.Client], address: str, korean: str
) -> None:
    _cfg, store, client = web
    # A Korean page whose visitor wants English emails: the page stays Korean.
    response = client.post("/subscribe?lang=ko", data={"email": address, "lang": "en"})
    assert response.status_code == 400
    assert '<html lang="ko">' in response.text and korean in response.text
    assert "@-sign" not in response.text and "not valid" not in response.text
    assert '<option value="en" selected>' in response.text  # the visitor's choice is kept
    english = client.post("/subscribe?lang=en", data={"email": address, "lang": "ko"})
    assert '<html lang="en">' in english.text and "@-sign" not in english.text
    assert store.count_subscribers() == {}


# --- the per-address limit under concurrency -------------------------------------------------


def _post_at_once(base: str, posts: int, data: dict[str, str]) -> list[int]:
    """``posts`` form posts sent together, each on its own connection: their status codes."""
    import threading

    start = threading.Barrier(posts)
    codes: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            start.wait()
            code = client.post("/subscribe", data=data).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=post) for _ in range(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return codes


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_forty_posts_at_once_for_one_address_mail_it_once(
    cfg: Config, live_server: Callable[[Any], str], request: pytest.FixtureRequest, database: str
) -> None:
    """The limit is checked and recorded in one transaction: of forty posts arriving
    together, one is mailed and the others are told to wait, on either database."""
    import dataclasses

    if database == "postgresql":
        cfg = cfg.replace(database_url=request.getfixturevalue("postgres_url"))
    # Only the per-address limit is under test: the per-client one lets all forty through.
    cfg = cfg.replace(
        secret_key=KEY.decode(), web=dataclasses.replace(cfg.web, subscribe_per_minute=1000)
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    sender = SenderThread(cfg, store, KEY).start()
    try:
        base = live_server(create_app(cfg, wake_sender=sender.wake))
        codes = _post_at_once(base, 40, {"email": "target@example.org", "lang": "ko"})
        assert sorted(codes) == [200] + [429] * 39
        mails = _outbox(cfg)
    finally:
        sender.stop()
    assert [str(m["To"]) for m in mails] == ["target@example.org"]
    assert [m.status for m in store.mails("confirm")] == ["sent"]
    store.close()


def test_a_bounced_or_complained_address_is_answered_alike_and_never_mailed(
    web: tuple[Config, Store, httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can type any address: one that bounced, or whose owner reported a mail as
    spam, gets the same page (and the same limit) as any other, and no mail."""
    cfg, store, client = web
    caplog.set_level("INFO", logger="newsletter.app.subscription")
    store.add_subscriber("gone@example.org", status="bounced")
    spam, _ = store.add_subscriber("spam@example.org")
    store.set_status(spam.id, "unsubscribed", reason="complaint")
    pages = [
        client.post("/subscribe", data={"email": address, "lang": "ko"})
        for address in ("gone@example.org", "spam@example.org", "new@example.org")
    ]
    assert [p.status_code for p in pages] == [200, 200, 200]
    assert pages[0].text == pages[1].text == pages[2].text
    again = [
        client.post("/subscribe", data={"email": address, "lang": "ko"}).status_code
        for address in ("gone@example.org", "spam@example.org", "new@example.org")
    ]
    assert again == [429, 429, 429]
    assert [str(m["To"]) for m in _outbox(cfg)] == ["new@example.org"]
    withheld = {m.recipient: (m.status, m.last_error) for m in store.mails("confirm")}
    assert withheld == {
        "gone@example.org": ("skipped", "not mailed: the address bounced"),
        "spam@example.org": ("skipped", "not mailed: the address complained"),
        "new@example.org": ("sent", None),
    }
    assert "confirmation for g***@example.org not mailed: the address bounced" in caplog.messages
    # Nothing about either changed.
    assert store.get_subscriber(email="gone@example.org").status == "bounced"
    complained = store.get_subscriber(email="spam@example.org")
    assert (complained.status, complained.status_reason) == ("unsubscribed", "complaint")


def test_an_idn_address_from_the_form_is_mailed_in_ascii_form(
    cfg: Config, live_server: Callable[[Any], str], smtp_server: tuple[Any, int]
) -> None:
    """``user@例え.jp`` is stored and mailed as ``user@xn--r8jz45g.jp`` over a real SMTP
    server; Korean before the @ is refused with the form's sentence, and nothing kept."""
    from conftest import smtp_cfg

    handler, port = smtp_server
    cfg = smtp_cfg(cfg, port).replace(secret_key=KEY.decode())
    store = open_store(cfg.database_url, cfg.base_dir)
    sender = SenderThread(cfg, store, KEY).start()
    try:
        with httpx.Client(base_url=live_server(create_app(cfg, wake_sender=sender.wake))) as client:
            page = client.post("/subscribe", data={"email": "user@例え.jp", "lang": "ko"})
            assert page.status_code == 200 and "확인 링크" in page.text
            korean = client.post("/subscribe", data={"email": "독자@例え.jp", "lang": "ko"})
            assert (
                korean.status_code == 400 and "한글 등 다른 문자가 들어간 주소로는" in korean.text
            )
        deadline = time.monotonic() + 30
        while not handler.counts() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sender.stop()
    assert handler.counts() == {"user@xn--r8jz45g.jp": 1}
    (sub,) = store.iter_subscribers()
    assert (sub.email, sub.status) == ("user@xn--r8jz45g.jp", "pending")
    assert [m.status for m in store.mails("confirm")] == ["sent"]
    store.close()
