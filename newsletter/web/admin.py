"""Signing in to the console at /admin/: the login page, sessions, CSRF and lockouts.

Nothing under /admin/ exists (404) until ``newsletter admin add`` made an account. A page
asked for without a session redirects to the login. The session cookie is ``HttpOnly``,
``SameSite=Strict``, ``Secure`` when the site is served over https, and limited to /admin;
the database knows it only by its hash (:mod:`newsletter.app.admins`). Every POST carries
the session's CSRF token (the login form a token of its own, held in a cookie beside it:
a double submit) and must come from this site. Failed logins are counted per client and
per account in a sliding window; past the limit the answer is 429 with Retry-After, for
the right password too, so guessing cannot go faster than the window allows.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from newsletter.app import admins
from newsletter.config import LANGS, Config
from newsletter.pacing import ClientWindow
from newsletter.publish.render import environment
from newsletter.store import AdminSession, LazyStore, Store
from newsletter.web.subscription import language_name, read_form, same_origin

log = logging.getLogger(__name__)

PREFIX = "/admin"
COOKIE = "newsletter_admin"
LOGIN_COOKIE = "newsletter_admin_login"
LANG_COOKIE = "newsletter_admin_lang"
# Failed logins allowed within LOCKOUT_SECONDS: per client address, and per account (a
# guesser spread over many addresses still meets the second).
CLIENT_FAILURES = 10
ACCOUNT_FAILURES = 5
LOCKOUT_SECONDS = 900.0
# Everything under /admin/ is for one signed-in person, now: never stored by a browser or
# a proxy, never shown inside another site's frame, never indexed.
HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "same-origin",
}

# Each language by its own name (한국어, English): the console's language switch and lists.
LANGUAGE_NAMES = {lang: language_name(lang) for lang in LANGS}
T = TypeVar("T")
Handler = Callable[[Request, AdminSession], Awaitable[Response]]


class Console:
    """The console's shared state: its store (opened on first use), the lockout windows,
    and how its pages are rendered. Page handlers are wrapped by :meth:`page` and
    :meth:`action`, which answer for a missing session or a bad CSRF token."""

    def __init__(self, cfg: Config, wake_sender: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.wake_sender = wake_sender
        self.secure = cfg.site_url.startswith("https://")
        self.clients = ClientWindow(CLIENT_FAILURES, LOCKOUT_SECONDS)
        self.accounts = ClientWindow(ACCOUNT_FAILURES, LOCKOUT_SECONDS)
        self.tz = ZoneInfo(cfg.timezone)
        self.store = LazyStore(cfg.database_url, cfg.base_dir)
        self.close = self.store.close
        # An argon2id check takes 64 MiB and a core for about 0.1 s: two at a time, so that
        # a burst of sign-ins queues here instead of filling memory and the thread pool.
        self.checks = anyio.CapacityLimiter(2)

    async def db(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``work(store, *args)`` in a worker thread: the store is opened (connected,
        migrated) there too, never on the event loop."""
        return await run_in_threadpool(lambda: work(self.store(), *args, **kwargs))

    # -- rendering ----------------------------------------------------------------------

    def lang(self, request: Request) -> str:
        """``?lang=`` if given (and remembered in a cookie), else the remembered one, else
        the site's language."""
        for asked in (request.query_params.get("lang", ""), request.cookies.get(LANG_COOKIE, "")):
            if asked in LANGS:
                return asked
        return self.cfg.default_lang

    def render(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        session: AdminSession | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        lang = self.lang(request)
        html = (
            environment(lang)
            .get_template(f"admin/{template}")
            .render(
                session=session,
                site_name=self.cfg.site_title,
                here=request.url.path,
                langs=LANGS,
                language_names=LANGUAGE_NAMES,
                tz=self.tz,
                clock=clock,
                **context,
            )
        )
        response = HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})
        if request.query_params.get("lang", "") in LANGS:
            self._cookie(response, LANG_COOKIE, lang, max_age=365 * 86400)
        return response

    def _cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=PREFIX,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def redirect(self, url: str) -> Response:
        return RedirectResponse(url, status_code=303, headers=HEADERS)

    def not_found(self) -> Response:
        return Response("Not Found\n", status_code=404, media_type="text/plain", headers=HEADERS)

    # -- sessions -----------------------------------------------------------------------

    async def session(self, request: Request, *, touch: bool = True) -> AdminSession | None:
        token = request.cookies.get(COOKIE, "")
        if not token:
            return None
        return await self.db(admins.session, token, touch=touch)

    async def exists(self) -> bool:
        """Whether the console exists: it has an account."""
        return await self.db(Store.has_admins)

    def _to_login(self, request: Request) -> Response:
        if request.method != "GET":  # after signing in, a GET of a POST's address is a 404
            return self.redirect(f"{PREFIX}/login")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.redirect(f"{PREFIX}/login?next={quote(target, safe='')}")

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: 404 without accounts, the login without a session."""

        async def endpoint(request: Request) -> Response:
            if not await self.exists():
                return self.not_found()
            # The page's own polling is no sign of a person: it does not keep a session alive.
            polled = request.url.path.endswith(".json")
            found = await self.session(request, touch=not polled)
            if found is None:
                if polled:
                    return Response(status_code=401, headers=HEADERS)
                return self._to_login(request)
            return await handler(request, found)

        return endpoint

    def action(
        self, handler: Callable[[Request, AdminSession, dict[str, str]], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST: as :meth:`page`, and refused (403) unless it carries the session's
        CSRF token and comes from this site."""

        async def endpoint(request: Request) -> Response:
            if not await self.exists():
                return self.not_found()
            found = await self.session(request)
            if found is None:
                return self._to_login(request)
            form = await read_form(request)
            token = form.get("csrf", "")
            if not (
                same_origin(request, self.cfg.site_url)
                and token
                and hmac.compare_digest(token.encode(), found.csrf.encode())
            ):
                log.warning("console: %s refused: no valid CSRF token", request.url.path)
                return self.forbidden(request, found)
            return await handler(request, found, form)

        return endpoint

    def forbidden(self, request: Request, session: AdminSession | None = None) -> Response:
        return self.render(request, "forbidden.html", status=403, session=session)

    # -- the login ------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not await self.exists():
            return self.not_found()
        if await self.session(request) is not None:
            return self.redirect(_next(request.query_params.get("next", "")))
        return self._login_page(request)

    def _login_page(
        self, request: Request, *, status: int = 200, error: str = "", username: str = ""
    ) -> Response:
        token = secrets.token_urlsafe(24)
        headers = {}
        if status == 429:
            headers["Retry-After"] = str(self._wait(request, username))
        response = self.render(
            request,
            "login.html",
            status=status,
            headers=headers,
            csrf=token,
            error=error,
            username=username,
            next=_next(request.query_params.get("next", "")),
        )
        self._cookie(response, LOGIN_COOKIE, token, max_age=3600)
        return response

    def _wait(self, request: Request, username: str) -> int:
        client = request.client.host if request.client else "-"
        account = username.strip().lower()
        return max(self.clients.wait(client), self.accounts.wait(account) if account else 0)

    async def login(self, request: Request) -> Response:
        if not await self.exists():
            return self.not_found()
        form = await read_form(request)
        username = form.get("username", "")[:200]
        expected = request.cookies.get(LOGIN_COOKIE, "")
        token = form.get("csrf", "")
        if not (
            same_origin(request, self.cfg.site_url)
            and expected
            and hmac.compare_digest(token.encode(), expected.encode())
        ):
            return self._login_page(request, status=403, error="csrf", username=username)
        client = request.client.host if request.client else "-"
        account = username.strip().lower()
        # Counted before the check, so that attempts in flight at once count too; given
        # back when the password was right.
        if not self.clients.allow(client):
            return self._login_page(request, status=429, error="locked", username=username)
        if not self.accounts.allow(account):
            self.clients.give_back(client)
            return self._login_page(request, status=429, error="locked", username=username)
        async with self.checks:
            admin = await self.db(admins.verify, username, form.get("password", ""))
        if admin is None:
            log.warning("console: failed sign-in as %r from %s", username[:64], client)
            return self._login_page(request, status=401, error="wrong", username=username)
        self.clients.give_back(client)
        self.accounts.give_back(account)
        made = await self.db(admins.sign_in, admin)
        response = self.redirect(_next(form.get("next", "")))
        self._cookie(
            response, COOKIE, made.token, max_age=int(admins.SESSION_LIFETIME.total_seconds())
        )
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def logout(
        self, request: Request, session: AdminSession, form: dict[str, str]
    ) -> Response:
        await self.db(admins.sign_out, request.cookies.get(COOKIE, ""))
        log.info("admin %s signed out", session.username)
        response = self.redirect(f"{PREFIX}/login")
        response.delete_cookie(
            COOKIE, path=PREFIX, secure=self.secure, httponly=True, samesite="strict"
        )
        return response


def clock(seconds: float | None) -> str:
    """``1:02:03``, ``2:03``, or ``–`` when unknown: a time left, as console.js writes it."""
    if seconds is None:
        return "–"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _next(target: str) -> str:
    """Where to go after signing in: a console address of this site, else the dashboard."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(PREFIX + "/") or "\\" in target:
        return PREFIX + "/"
    return target
