"""Signing in to the console over HTTP, on a real server: the login, the session cookie,
CSRF on every POST, the lockout after failed logins, and what /admin/ sends back."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from newsletter.app import admins
from newsletter.config import Config
from newsletter.store import Store, open_store
from newsletter.web.app import create_app

PASSWORD = "correct horse battery staple"


@pytest.fixture
def site(cfg: Config, live_server: Callable[..., str]) -> Iterator[tuple[Store, str]]:
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        yield store, live_server(create_app(cfg))
    finally:
        store.close()


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: httpx.Client, username: str, password: str, nxt: str = "") -> httpx.Response:
    page = client.get("/admin/login", params={"next": nxt} if nxt else None)
    assert page.status_code == 200
    form = {"csrf": _csrf(page), "username": username, "password": password, "next": nxt}
    return client.post("/admin/login", data=form)


def client_for(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, follow_redirects=False)


def test_no_console_without_an_account(site: tuple[Store, str]) -> None:
    _, url = site
    with client_for(url) as client:
        for path in ("/admin", "/admin/", "/admin/login", "/admin/console.js", "/admin/nope"):
            assert client.get(path).status_code == 404, path
        assert client.post("/admin/login", data={"username": "x"}).status_code == 404


def test_pages_need_a_session_and_go_back_after_it(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        answer = client.get("/admin/subscribers?state=active")
        assert answer.status_code == 303
        assert (
            answer.headers["location"]
            == "/admin/login?next=%2Fadmin%2Fsubscribers%3Fstate%3Dactive"
        )
        assert client.get("/admin/live.json?issue=1").status_code == 401
        signed = sign_in(client, "editor", PASSWORD, "/admin/subscribers?state=active")
        assert signed.status_code == 303
        assert signed.headers["location"] == "/admin/subscribers?state=active"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("newsletter_admin=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/admin"):
            assert attribute.lower() in cookie.lower()
        assert "secure" not in cookie.lower()  # http: a Secure cookie would never come back
        page = client.get("/admin/")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/admin/", "/feed.atom"])
def test_after_signing_in_only_console_addresses(site: tuple[Store, str], target: str) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        assert sign_in(client, "editor", PASSWORD, target).headers["location"] == "/admin/"


def test_the_cookie_is_secure_on_an_https_site(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    secure = cfg.replace(base_url="https://news.example.org/")
    store = open_store(secure.database_url, secure.base_dir)
    admins.add(store, "editor", PASSWORD)
    url = live_server(create_app(secure))
    # The browser's Origin is the site's: the form is same-origin behind the TLS proxy.
    with httpx.Client(
        base_url=url, follow_redirects=False, headers={"Origin": "https://news.example.org"}
    ) as client:
        page = client.get("/admin/login")
        form = {"csrf": _csrf(page), "username": "editor", "password": PASSWORD}
        # A Secure cookie is not sent back over this test's plain http: sent by hand.
        login = f"newsletter_admin_login={_login_cookie(page)}"
        answer = client.post("/admin/login", data=form, headers={"Cookie": login})
    store.close()
    assert answer.status_code == 303
    assert "secure" in answer.headers["set-cookie"].lower()


def _login_cookie(page: httpx.Response) -> str:
    found = re.search(r"newsletter_admin_login=([^;]+)", page.headers["set-cookie"])
    assert found
    return found.group(1)


def test_every_post_needs_the_sessions_csrf_token(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    store.add_subscriber("reader@example.org", "", "ko")
    reader = store.get_subscriber(email="reader@example.org")
    assert reader is not None
    with client_for(url) as client:
        page = client.get("/admin/login")
        # the login form itself: no token, or another one
        for token in ("", "forged"):
            form = {"csrf": token, "username": "editor", "password": PASSWORD}
            assert client.post("/admin/login", data=form).status_code == 403
        assert client.get("/admin/").status_code == 303  # not signed in by the refusals
        assert sign_in(client, "editor", PASSWORD).status_code == 303
        good = _csrf(client.get("/admin/"))
        target = f"/admin/subscribers/{reader.id}/unsubscribe"
        for form in ({}, {"csrf": "forged"}, {"csrf": good[:-1]}):
            assert client.post(target, data=form).status_code == 403
        assert store.get_subscriber(id=reader.id).status == "active"  # type: ignore[union-attr]
        # a right token from another site's page
        refused = client.post(
            target, data={"csrf": good}, headers={"Origin": "https://evil.example"}
        )
        assert refused.status_code == 403
        assert client.post(target, data={"csrf": good}).status_code == 303
        assert store.get_subscriber(id=reader.id).status == "unsubscribed"  # type: ignore[union-attr]
        assert page.status_code == 200


def test_ten_wrong_passwords_lock_the_account_out(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        answers = [sign_in(client, "editor", "wrong password!").status_code for _ in range(10)]
        assert answers[: admins_failures()] == [401] * admins_failures()
        assert answers[-1] == 429
        locked = sign_in(client, "editor", PASSWORD)  # the right one waits too
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0
        assert client.get("/admin/").status_code == 303


def admins_failures() -> int:
    from newsletter.web.admin import ACCOUNT_FAILURES

    return ACCOUNT_FAILURES


def test_a_logged_out_cookie_no_longer_works_and_others_stay(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "alice", PASSWORD)
    admins.add(store, "bob", PASSWORD + "b")
    with client_for(url) as alice, client_for(url) as bob:
        assert sign_in(alice, "alice", PASSWORD).status_code == 303
        assert sign_in(bob, "bob", PASSWORD + "b").status_code == 303
        kept = alice.cookies["newsletter_admin"]
        out = alice.post("/admin/logout", data={"csrf": _csrf(alice.get("/admin/"))})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        with client_for(url) as thief:
            thief.cookies.set("newsletter_admin", kept, path="/admin")
            assert thief.get("/admin/").status_code == 303
        assert bob.get("/admin/").status_code == 200
        admins.remove(store, "bob")
        assert bob.get("/admin/").status_code == 303


def test_wrong_username_and_wrong_password_answer_alike(site: tuple[Store, str]) -> None:
    """The answer does not tell which accounts exist."""
    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        unknown = sign_in(client, "nobody", PASSWORD)
        wrong = sign_in(client, "editor", "not the password")

    def page(answer: httpx.Response) -> str:
        text = re.sub(r'name="csrf" value="[^"]+"', "", answer.text)
        return re.sub(r'name="username"([^>]*) value="[^"]*"', "", text)

    assert unknown.status_code == wrong.status_code == 401
    assert page(unknown) == page(wrong)


def test_the_console_refuses_what_the_lifecycle_refuses(site: tuple[Store, str]) -> None:
    """A button the page no longer shows (another editor acted, or a stale tab) is
    refused with the CLI's one line, and nothing changes."""
    store, url = site
    admins.add(store, "editor", PASSWORD)
    store.ensure_issue("2024-W05", "subject", "draft")
    with client_for(url) as client:
        sign_in(client, "editor", PASSWORD)
        page = client.get("/admin/issues/2024-W05")
        assert 'action="/admin/issues/2024-W05/approve"' in page.text
        assert 'action="/admin/issues/2024-W05/resume"' not in page.text
        csrf = _csrf(page)
        refused = client.post("/admin/issues/2024-W05/resume", data={"csrf": csrf})
        assert refused.status_code == 409
        assert "2024-W05" in refused.text and "draft" in refused.text
        cancelled = client.post("/admin/issues/2024-W05/cancel", data={"csrf": csrf})
        assert cancelled.status_code == 303
        assert store.get_issue("2024-W05").status == "cancelled"  # type: ignore[union-attr]
        again = client.post("/admin/issues/2024-W05/approve", data={"csrf": csrf})
        assert again.status_code == 409
        assert store.get_issue("2024-W05").status == "cancelled"  # type: ignore[union-attr]
        assert client.post("/admin/issues/2024-W05/explode", data={"csrf": csrf}).status_code == 409
        assert client.get("/admin/issues/1999-W01").status_code == 404


def test_a_test_copy_from_the_console_is_queued_for_the_sender(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    store.ensure_issue("2024-W05", "subject", "draft")
    with client_for(url) as client:
        sign_in(client, "editor", PASSWORD)
        csrf = _csrf(client.get("/admin/issues/2024-W05"))
        bad = client.post(
            "/admin/issues/2024-W05/test", data={"csrf": csrf, "address": "not an address"}
        )
        assert bad.status_code == 409
        sent = client.post(
            "/admin/issues/2024-W05/test",
            data={"csrf": csrf, "address": "Editor@Example.org", "lang": "en"},
        )
        assert sent.status_code == 303 and sent.headers["location"].endswith("?done=test")
    (mail,) = store.mails("test")
    assert mail.recipient == "Editor@example.org"


def test_a_burst_of_guesses_meets_the_limit_all_the_same(site: tuple[Store, str]) -> None:
    """Attempts are counted before the password is checked: thirty posted at once get no
    more checks than five posted one after another."""
    from concurrent.futures import ThreadPoolExecutor

    from newsletter.web.admin import ACCOUNT_FAILURES

    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        page = client.get("/admin/login")
    form = {"csrf": _csrf(page), "username": "editor", "password": "a wrong guess!"}
    # One login page's token for every post, as a script would reuse it (each answer
    # sets a new one, which a shared cookie jar would take up in the middle).
    cookie = {"Cookie": f"newsletter_admin_login={_login_cookie(page)}"}

    def guess(_: int) -> int:
        with client_for(url) as own:
            return own.post("/admin/login", data=form, headers=cookie).status_code

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(guess, range(30)))
    assert answers.count(401) == ACCOUNT_FAILURES
    assert answers.count(429) == 30 - ACCOUNT_FAILURES


def test_a_right_password_does_not_count_against_the_limit(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    for _ in range(8):
        with client_for(url) as client:
            assert sign_in(client, "editor", PASSWORD).status_code == 303


@pytest.mark.parametrize(
    "path",
    [
        "/admin/subscribers?after=99999999999999999999999",
        "/admin/subscribers?after=-3&q=%00x",
        "/admin/subscribers.csv?q=%00",
        "/admin/live.json?issue=99999999999999999999999",
        "/admin/live.json?issue=x",
        "/admin/live.json?issue=12345",
        "/admin/issues/..%2F..%2Fetc",
        "/admin/subscribers?state=nonsense&language=xx",
    ],
)
def test_bad_addresses_are_answered_not_crashed_on(site: tuple[Store, str], path: str) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    with client_for(url) as client:
        sign_in(client, "editor", PASSWORD)
        assert client.get(path).status_code in (200, 400, 404)
        csrf = _csrf(client.get("/admin/"))
        target = "/admin/subscribers/99999999999999999999999/unsubscribe"
        assert client.post(target, data={"csrf": csrf}).status_code == 404


def test_the_csv_keeps_formulas_from_running_in_a_spreadsheet(site: tuple[Store, str]) -> None:
    store, url = site
    admins.add(store, "editor", PASSWORD)
    store.add_subscriber("a@example.org", '=HYPERLINK("http://evil.example","x")', "ko")
    store.add_subscriber("b@example.org", "김독자", "ko")
    with client_for(url) as client:
        sign_in(client, "editor", PASSWORD)
        body = client.get("/admin/subscribers.csv").text
    assert "'=HYPERLINK(" in body and ",김독자," in body
