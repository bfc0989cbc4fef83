"""The preferences page linked from every issue, against the running web app (real HTTP,
real database): email language and unsubscribe, by POST only."""

from __future__ import annotations

import base64
import dataclasses
import mailbox
import re
import signal
from email import message_from_bytes, policy
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SEEDS, free_port, start_newsletter, wait_for_http
from hypothesis import given, settings
from hypothesis import strategies as st
from test_subscription import FROM_WHERE, KEY, web  # noqa: F401  (web: the fixture)

from newsletter.config import Config, load_config
from newsletter.mail.message import (
    HeaderError,
    _SlottedBase64,
    build_message,
    message_template,
    preferences_url,
    unsubscribe_url,
)
from newsletter.mail.tokens import PREFERENCES, UNSUBSCRIBE, make_token
from newsletter.models import Archive
from newsletter.publish.render import RenderedIssue, render_issue
from newsletter.select import IsoWeek, build_issue
from newsletter.store import Store, deliveries, open_store, subscribers

Web = tuple[Config, Store, httpx.Client]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _link(subscriber_id: int) -> str:
    return f"/preferences/{make_token(KEY, PREFERENCES, subscriber_id)}"


def _state(store: Store, subscriber_id: int) -> tuple[str, str]:
    sub = store.get_subscriber(id=subscriber_id)
    assert sub is not None
    return sub.status, sub.lang


@pytest.mark.parametrize(
    ("lang", "accept", "says"),
    [
        ("en", "ko-KR,ko;q=0.9", "Settings for r***@example.org"),
        ("ko", "en-US,en;q=0.9", "r***@example.org 주소의 구독 설정"),
    ],
)
def test_the_page_speaks_the_subscribers_language_not_the_browsers(
    web: Web,  # noqa: F811
    lang: str,
    accept: str,
    says: str,
) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", lang)
    page = client.get(_link(sub.id), headers={"Accept-Language": accept})
    assert page.status_code == 200
    assert f'<html lang="{lang}">' in page.text and says in page.text
    assert "reader@example.org" not in page.text  # masked: issues get forwarded
    assert page.text.count('<form method="post">') == 2
    assert f'<option value="{lang}" selected>' in page.text
    assert 'value="unsubscribe"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "set-cookie" not in page.headers
    # The page's language switch shows it in the other language; the setting stays.
    other = "en" if lang == "ko" else "ko"
    switched = client.get(_link(sub.id) + f"?lang={other}")
    assert f'<html lang="{other}">' in switched.text
    assert f'<option value="{lang}" selected>' in switched.text
    assert store.get_subscriber(id=sub.id).lang == lang  # type: ignore[union-attr]


def test_looking_changes_nothing(web: Web) -> None:  # noqa: F811
    """Mail filters open every link, with GET and HEAD."""
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    before = store.get_subscriber(id=sub.id)
    for _ in range(2):
        assert client.get(_link(sub.id) + "?lang=en&action=unsubscribe").status_code == 200
        head = client.head(_link(sub.id))
        assert head.status_code == 200 and head.content == b""
    assert store.get_subscriber(id=sub.id) == before


def test_changing_the_language_answers_in_the_new_one_and_the_next_issue_follows(
    web: Web,  # noqa: F811
    seeds_archive: Archive,
) -> None:
    from newsletter.app.delivery import send_week

    cfg, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    response = client.post(_link(sub.id), data={"action": "language", "lang": "en"})
    assert response.status_code == 200
    assert '<html lang="en">' in response.text
    assert "Saved: from the next issue on, the newsletter comes in English." in response.text
    assert '<option value="en" selected>' in response.text
    assert _state(store, sub.id) == ("active", "en")
    # The next page the link opens, and the unsubscribe page too, are English.
    assert '<html lang="en">' in client.get(_link(sub.id)).text
    unsubscribe = client.get(f"/unsubscribe/{make_token(KEY, UNSUBSCRIBE, sub.id)}")
    assert '<html lang="en">' in unsubscribe.text
    # And so is the next issue.
    send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), KEY)
    (issue,) = (
        message_from_bytes(m.as_bytes(), policy=policy.default)
        for m in mailbox.Maildir(str(cfg.outbox_path), create=False)
    )
    html = issue.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert '<html lang="en"' in html

    back = client.post(_link(sub.id), data={"action": "language", "lang": "ko"})
    assert "저장했습니다. 다음 호부터 뉴스레터를 한국어로 보내 드립니다." in back.text
    assert '<html lang="ko">' in back.text
    assert _state(store, sub.id) == ("active", "ko")


@pytest.mark.parametrize(
    "form",
    [
        {"action": "language", "lang": "fr"},
        {"action": "language"},
        {"lang": "en"},
        {"action": "delete", "lang": "en"},
        {},
    ],
)
def test_a_form_the_page_never_sends_changes_nothing(
    web: Web,  # noqa: F811
    form: dict[str, str],
) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    response = client.post(_link(sub.id), data=form)
    assert response.status_code == 400
    assert "r***@example.org 주소의 구독 설정" in response.text  # the page again, to retry
    assert _state(store, sub.id) == ("active", "ko")


def test_unsubscribing_here_does_what_the_unsubscribe_link_does(
    web: Web,  # noqa: F811
    seeds_archive: Archive,
) -> None:
    """Two readers of an issue being sent leave, one by each page: the same subscriber
    rows, the same open confirmation voided, and neither gets the issue."""
    import sqlalchemy as sa

    from newsletter.app.delivery import ready_to_send, send_week

    cfg, store, client = web
    here, _ = store.add_subscriber("here@example.org", "", "en")
    there, _ = store.add_subscriber("there@example.org", "", "en")
    store.add_subscriber("stays@example.org", "", "ko")
    for sub in (here, there):
        store.request_confirmation(sub.email, "", "ko")  # a request typed on the form
    ready_to_send(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5))  # queued for all three

    left = client.post(_link(here.id), data={"action": "unsubscribe"})
    assert left.status_code == 200
    assert "You are unsubscribed and will receive no more issues." in left.text
    client.post(f"/unsubscribe/{make_token(KEY, UNSUBSCRIBE, there.id)}")

    def row(subscriber_id: int) -> dict[str, Any]:
        assert store.open_confirmations(subscriber_id) == []
        with store.engine.connect() as conn:
            found = conn.execute(sa.select(subscribers).where(subscribers.c.id == subscriber_id))
            columns = dict(found.one()._mapping)
        for when in ("created_at", "updated_at", "confirmed_at", "unsubscribed_at", "status_at"):
            columns[when] = columns[when] is not None  # when differs; whether must not
        return {k: v for k, v in columns.items() if k not in ("id", "email", "email_key")}

    assert row(here.id) == row(there.id)
    assert row(here.id)["status"] == "unsubscribed"
    report = send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), KEY)
    assert report.counts["sent"] == 1
    received = [str(m["To"]) for m in mailbox.Maildir(str(cfg.outbox_path), create=False)]
    assert received == ["stays@example.org"]
    with store.engine.connect() as conn:
        statuses = dict(
            conn.execute(sa.select(deliveries.c.subscriber_id, deliveries.c.status)).all()
        )
    assert statuses[here.id] == statuses[there.id] != "sent"
    # Once unsubscribed, the link shows so, and the language form has nothing left to set.
    assert "You are unsubscribed" in client.get(_link(here.id)).text
    client.post(_link(here.id), data={"action": "language", "lang": "ko"})
    assert _state(store, here.id) == ("unsubscribed", "en")


@pytest.mark.parametrize(("headers", "allowed"), FROM_WHERE)
@pytest.mark.parametrize("form", [{"action": "language", "lang": "en"}, {"action": "unsubscribe"}])
def test_posts_from_another_site_are_refused(
    web: Web,  # noqa: F811
    headers: dict[str, str],
    allowed: bool,
    form: dict[str, str],
) -> None:
    _, store, client = web
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    response = client.post(_link(sub.id), data=form, headers=headers)
    if allowed:
        assert response.status_code == 200
        assert _state(store, sub.id) != ("active", "ko")
    else:
        assert response.status_code == 403
        assert "다른 사이트에서 보낸 양식이라" in response.text  # in the subscriber's language
        assert _state(store, sub.id) == ("active", "ko")


@pytest.mark.parametrize(
    "token",
    [
        "1.AAAAAAAAAAAAAAAAAAAAAA",  # forged signature
        make_token(b"another-key-of-at-least-32-bytes-long", PREFERENCES, 1),  # another key
        make_token(KEY, UNSUBSCRIBE, 1),  # the unsubscribe link's token: another purpose
        make_token(KEY, "confirm", 1),
        "2" + make_token(KEY, PREFERENCES, 1)[1:],  # tampered id
        make_token(KEY, PREFERENCES, 99),  # nobody (a never-confirmed sign-up, deleted)
        "garbage",
    ],
)
def test_a_forged_or_foreign_token_gets_the_invalid_page(
    web: Web,  # noqa: F811
    token: str,
) -> None:
    _, store, client = web
    store.add_subscriber("one@example.org", "", "ko")
    store.add_subscriber("two@example.org", "", "ko")
    for response in (
        client.get(f"/preferences/{token}", headers={"Accept-Language": "en"}),
        client.post(f"/preferences/{token}", data={"action": "unsubscribe"}),
        client.post(f"/preferences/{token}", data={"action": "language", "lang": "en"}),
    ):
        assert response.status_code == 400
        assert "This link is not valid" in response.text or "올바르지 않은 링크" in response.text
    assert store.count_subscribers() == {"active": 2}
    assert {s.lang for s in store.iter_subscribers()} == {"ko"}


def test_the_sample_link_of_a_preview_changes_nothing(web: Web) -> None:  # noqa: F811
    _, store, client = web
    store.add_subscriber("reader@example.org", "", "ko")
    for response in (
        client.get(_link(0)),
        client.post(_link(0), data={"action": "unsubscribe"}),
        client.post(_link(0), data={"action": "language", "lang": "en"}),
    ):
        assert response.status_code == 200
        assert "미리보기 또는 테스트 메일의 설정 링크입니다" in response.text
    assert store.count_subscribers() == {"active": 1}


def test_the_access_log_of_serve_shows_no_preferences_token(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp_path / "config.toml"
    config.write_text(f'source = "{SEEDS}"\nbase_url = "{base}/"\n', encoding="utf-8")
    (tmp_path / ".newsletter-secret-key").write_bytes(KEY)
    (tmp_path / ".newsletter-secret-key").chmod(0o600)
    cfg = load_config(config, env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    sub, _ = store.add_subscriber("reader@example.org", "", "ko")
    token = make_token(KEY, PREFERENCES, sub.id)
    service = start_newsletter(tmp_path, "serve", "--port", str(port), log="serve.log")
    try:
        wait_for_http(f"{base}/subscribe", service)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get(f"/preferences/{token}").status_code == 200
            assert client.head(f"/preferences/{token}").status_code == 200
            changed = client.post(
                f"/preferences/{token}", data={"action": "language", "lang": "en"}
            )
            assert changed.status_code == 200
            left = client.post(f"/preferences/{token}", data={"action": "unsubscribe"})
            assert left.status_code == 200
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    assert _state(store, sub.id) == ("unsubscribed", "en")
    store.close()
    log = (tmp_path / "serve.log").read_text(encoding="utf-8")
    assert log.count("/preferences/…") == 4, log
    assert token not in log and token.split(".")[-1] not in log


# --- the link in every issue: a second personal URL, spliced in like the unsubscribe one --------


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.tuples(st.text(max_size=12), st.booleans()), min_size=1, max_size=8),
    first=st.text(max_size=30),
    second=st.text(max_size=30),
)
def test_slotted_base64_with_two_kinds_of_slot_equals_plain_encoding(
    pieces: list[tuple[str, bool]], first: str, second: str
) -> None:
    one, two = "\x00ONE\x00", "\x00TWO\x00"
    text = "".join(piece + (two if kind else one) for piece, kind in pieces)[: -len(one)]
    encoded = _SlottedBase64(text, one, two).encode(first.encode(), second.encode())
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 76 and len(line) % 4 == 0 for line in lines[:-1])
    expected = text.replace(one, first).replace(two, second)
    assert base64.b64decode(b"".join(lines)) == expected.encode()


@pytest.fixture
def rendered(issue_cfg: Config, seeds_archive: Archive) -> RenderedIssue:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek(2024, 5))
    rendered = render_issue(issue_cfg, issue, "ko")
    assert rendered.preferences_marker.startswith("urn:x-newsletter:preferences:")
    assert rendered.preferences_marker != rendered.marker
    # The footer links it, in both parts.
    assert rendered.preferences_marker in rendered.html
    assert rendered.preferences_marker in rendered.text
    return rendered


@pytest.mark.parametrize("token", ["1.abc", "x" * 43, "a/b?c=d&e"])
def test_each_recipient_gets_their_own_preferences_link(
    issue_cfg: Config, rendered: RenderedIssue, token: str
) -> None:
    def parts(message: Any) -> list[str]:
        return [part.get_content() for part in message.iter_parts()]

    fast = message_template(issue_cfg, rendered).personalize(
        to_address="lee@example.org",
        to_name="Lee",
        unsubscribe_token="u" + token,
        preferences_token=token,
    )
    slow = build_message(
        issue_cfg,
        rendered,
        to_address="lee@example.org",
        to_name="Lee",
        unsubscribe_token="u" + token,
        preferences_token=token,
    )
    text, html = parts(message_from_bytes(fast.data, policy=policy.default))
    assert [text, html] == parts(message_from_bytes(slow.as_bytes(), policy=policy.default))
    url = preferences_url(issue_cfg, token)
    assert url.startswith("https://news.example.org/preferences/")
    assert url in text and f'href="{escape(url)}"' in html
    assert unsubscribe_url(issue_cfg, "u" + token) in text
    assert "urn:x-newsletter" not in text + html
    with pytest.raises(ValueError, match="preferences"):
        rendered.text_for(unsubscribe_url(issue_cfg, token))


def test_an_issue_that_links_the_page_needs_the_token_and_one_that_does_not_does_not(
    issue_cfg: Config, seeds_archive: Archive, rendered: RenderedIssue
) -> None:
    template = message_template(issue_cfg, rendered)
    assert template.links_preferences
    with pytest.raises(HeaderError, match="preferences token"):
        template.personalize(to_address="a@example.org", to_name="", unsubscribe_token="t")
    for bad in ("", "t\r\nX-Evil: 1"):
        with pytest.raises(HeaderError):
            template.personalize(
                to_address="a@example.org",
                to_name="",
                unsubscribe_token="t",
                preferences_token=bad,
            )
    # Content frozen before the templates linked the page personalizes as it always did.
    plain = render_issue(issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek(2024, 5)), "ko")
    unlinked = dataclasses.replace(
        plain,
        html=plain.html.replace(plain.preferences_marker, ""),
        text=plain.text.replace(plain.preferences_marker, ""),
    )
    assert not message_template(issue_cfg, unlinked).links_preferences
    message_template(issue_cfg, unlinked).personalize(
        to_address="a@example.org", to_name="", unsubscribe_token="t"
    )


def test_a_sent_issue_links_each_subscriber_to_their_own_page(
    web: Web,  # noqa: F811
    seeds_archive: Archive,
) -> None:
    """Through the ledger and the frozen content, as the weekly send does it: the footer
    link of each message opens that subscriber's page, in their language."""
    from newsletter.app.delivery import send_week

    cfg, store, client = web
    store.add_subscriber("kim@example.org", "", "ko")
    store.add_subscriber("lee@example.org", "", "en")
    assert send_week(cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), KEY).counts["sent"] == 2
    pages = {}
    for stored in mailbox.Maildir(str(cfg.outbox_path), create=False):
        mail = message_from_bytes(stored.as_bytes(), policy=policy.default)
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        links = re.findall(r"https?://\S+/preferences/\S+", text)
        assert len(set(links)) == 1
        pages[mail["To"].addresses[0].addr_spec] = client.get(links[0].split("/", 3)[3])
    assert pages["kim@example.org"].status_code == pages["lee@example.org"].status_code == 200
    assert "k***@example.org 주소의 구독 설정" in pages["kim@example.org"].text
    assert "Settings for l***@example.org" in pages["lee@example.org"].text
