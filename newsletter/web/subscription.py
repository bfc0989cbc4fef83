"""Subscribe, confirm, unsubscribe and change preferences over the web (double opt-in,
RFC 8058 one-click).

The form does the same work and answers the same, in the same time, whether or not an
address is known, so it cannot be used to find out who subscribes; it queues the
confirmation mail for the sender and never sends inside the request. Rate limits per
address and per client keep it from being used to flood someone's mailbox, and every
form POST must come from this site (Origin, else Referer). Links are HMAC-signed
(:mod:`newsletter.mail.tokens`); a confirmation link is bound to its request's nonce, works
once, and changes nothing until its page's button is pressed: mail filters open links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from babel import Locale
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.app.subscribers import AddressError, EncodedWordError, check_name, normalize_address
from newsletter.app.subscription import (
    RateLimited,
    approve_and_start,
    confirm_purpose,
    mask_address,
    request_subscription,
)
from newsletter.config import LANGS, Config
from newsletter.errors import NewsletterError
from newsletter.mail.tokens import (
    APPROVE,
    PREFERENCES,
    UNSUBSCRIBE,
    TokenError,
    read_token,
    signing_keys,
)
from newsletter.pacing import ClientWindow
from newsletter.publish.render import LOCALES, N_, environment, translations_for
from newsletter.publish.site import layout, query_paths, subscribe_path
from newsletter.store import Confirmation, Issue, LazyStore, Subscriber

log = logging.getLogger(__name__)

# Pages must never be cached or carry cookies: they act on a token in the URL. Referrers go
# to this site only: with no-referrer, browsers post the pages' own forms with
# ``Origin: null`` (Fetch standard), which same_origin must refuse.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}


_MAX_FORM = 16_384


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (the only kind these pages send), size-capped."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def language_name(lang: str) -> str:
    """A language's name in itself (``한국어``, ``English``): right in a list of choices,
    and on a page shown in that language."""
    name = str(Locale.parse(LOCALES[lang]).language_name)
    return name[:1].upper() + name[1:]


class ClientLimiter(ClientWindow):
    """At most ``per_minute`` form posts per client address (a sliding minute)."""

    def __init__(self, per_minute: int) -> None:
        super().__init__(per_minute, 60.0)


def same_origin(request: Request, site_url: str) -> bool:
    """Whether a form POST comes from this site: its Origin (or, without one, its Referer)
    names this site. Requests with neither come from no browser form (RFC 8058 one-click
    unsubscribes are posted by mail providers' servers) and are let through."""
    ours = {_origin(site_url), f"{request.url.scheme}://{request.headers.get('host', '')}"}
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in ours
    referer = request.headers.get("referer")
    return referer is None or _origin(referer) in ours


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class SubscriptionPages:
    """Starlette endpoints; the store opens on first use, so serving feeds needs no database."""

    def __init__(self, cfg: Config, wake_sender: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.wake_sender = wake_sender
        self.limiter = ClientLimiter(cfg.web.subscribe_per_minute)
        self.store = LazyStore(cfg.database_url, cfg.base_dir)
        self.close = self.store.close
        self._keys: list[bytes] | None = None

    def keys(self) -> list[bytes]:
        """The signing keys: the current one (signs) first, then old ones (still accepted)."""
        if self._keys is None:
            self._keys = signing_keys(self.cfg)
        return self._keys

    def key(self) -> bytes:
        return self.keys()[0]

    def _page(
        self,
        lang: str,
        page: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Response:
        html = render_page(self.cfg, lang, page, **context)
        return HTMLResponse(html, status_code=status, headers={**_HEADERS, **(headers or {})})

    def _lang(self, request: Request, fallback: str = "") -> str:
        """The page's language: the visitor's pick in the URL (``?lang=en``), else
        ``fallback`` (the subscriber's own language on a page for one), else the site's.
        Never the browser's Accept-Language: the site speaks the newsletter's language
        unless the visitor chose the other one."""
        asked = request.query_params.get("lang", "")
        if asked in LANGS:
            return asked
        return fallback if fallback in LANGS else self.cfg.default_lang

    async def subscribe_form(self, request: Request) -> Response:
        return self._page(self._lang(request), "subscribe")

    def _refused(self, request: Request, lang: str) -> Response | None:
        """403 for a form posted from another site."""
        if same_origin(request, self.cfg.site_url):
            return None
        log.warning("refused a form post from another site (%s)", request.headers.get("origin"))
        return self._page(lang, "forbidden", 403)

    async def subscribe(self, request: Request) -> Response:
        form = await read_form(request)
        # The emails' language is the form's choice; the page answers in the language of the
        # page the form was on (its action carries ?lang=), else in the one chosen.
        chosen = str(form.get("lang") or "")
        email_lang = chosen if chosen in LANGS else self._lang(request)
        lang = self._lang(request, email_lang)
        refused = self._refused(request, lang)
        if refused is not None:
            return refused
        client = request.client.host if request.client else "-"
        if not self.limiter.allow(client):
            return self._page(lang, "too_many", 429, headers={"Retry-After": "60"})
        raw_email, raw_name = str(form.get("email") or ""), str(form.get("name") or "")
        try:
            email, name = normalize_address(raw_email), check_name(raw_name)
        except AddressError as exc:
            keep_name = "" if isinstance(exc, EncodedWordError) else raw_name
            return self._page(
                lang,
                "subscribe",
                400,
                error=form_error(exc, lang),
                email=raw_email,
                sub_name=keep_name,
                email_lang=email_lang,
            )
        try:
            await run_in_threadpool(
                request_subscription, self.cfg, self.store(), self.key(), email, name, email_lang
            )
        except RateLimited:
            return self._page(lang, "too_many", 429, headers={"Retry-After": "600"})
        except (NewsletterError, OSError, sa_exc.OperationalError) as exc:
            # Nothing was queued: the visitor is told so, not that a link is on its way.
            log.error("could not queue a confirmation email: %s", exc)
            return self._page(lang, "unavailable", 503, headers={"Retry-After": "300"})
        if self.wake_sender is not None:
            self.wake_sender()
        return self._page(lang, "check_inbox")

    async def _request(self, request: Request) -> Confirmation | None:
        """The confirmation request a link names, if its signature and nonce hold."""
        token = request.path_params["token"]
        try:
            unverified = int(token.split(".", 1)[0])
        except ValueError:
            return None
        row = await run_in_threadpool(self.store().get_confirmation, unverified)
        if row is None:
            return None
        try:
            read_token(self.keys(), confirm_purpose(row.nonce), token)
        except TokenError:
            return None
        return row

    async def confirm_form(self, request: Request) -> Response:
        """The link from the mail: a page with a button. Opening it changes nothing."""
        row = await self._request(request)
        if row is None:
            return self._page(self._lang(request), "invalid", 400)
        return self._page(self._lang(request, row.lang), "confirm", email=mask_address(row.email))

    async def confirm(self, request: Request) -> Response:
        row = await self._request(request)
        lang = self._lang(request, row.lang if row is not None else "")
        refused = self._refused(request, lang)
        if refused is not None:
            return refused
        if row is None:
            return self._page(lang, "invalid", 400)
        sub = await run_in_threadpool(self.store().confirm, row.id, row.nonce)
        if sub is None:
            return self._page(lang, "invalid", 400)
        log.info("subscriber %d confirmed", sub.id)
        return self._page(self._lang(request, sub.lang), "confirmed")

    async def _subscriber(self, request: Request, purpose: str) -> tuple[str, Subscriber | None]:
        """The subscriber a link's token names: ``("ok", sub)``, or ``("invalid", None)``
        for a bad token or a subscriber no longer there, or ``("sample", None)`` for
        subscriber 0, the link of a preview or test copy."""
        try:
            subscriber_id = read_token(self.keys(), purpose, request.path_params["token"])
        except TokenError:
            return "invalid", None
        if subscriber_id == 0:
            return "sample", None
        sub = await run_in_threadpool(self.store().get_subscriber, id=subscriber_id)
        return ("ok", sub) if sub is not None else ("invalid", None)

    def _no_subscriber(self, request: Request, state: str, sample_page: str) -> Response:
        if state == "invalid":
            return self._page(self._lang(request), "invalid", 400)
        return self._page(self._lang(request), sample_page)

    async def _unsubscribe(self, sub: Subscriber, lang: str) -> Response:
        if sub.status != "unsubscribed":
            await run_in_threadpool(self.store().set_status, sub.id, "unsubscribed")
            log.info("subscriber %d unsubscribed", sub.id)
        return self._page(lang, "unsubscribed")

    async def _opened(
        self, request: Request, purpose: str, sample_page: str
    ) -> Subscriber | Response:
        """For a GET of a subscriber's link: the subscriber still subscribed, or the page
        to answer instead (invalid, sample, or already unsubscribed)."""
        state, sub = await self._subscriber(request, purpose)
        if sub is None:
            return self._no_subscriber(request, state, sample_page)
        if sub.status == "unsubscribed":
            return self._page(self._lang(request, sub.lang), "unsubscribed")
        return sub

    async def _posted(
        self, request: Request, purpose: str, sample_page: str
    ) -> Subscriber | Response:
        """For a POST to a subscriber's link: the subscriber, or the page to answer
        instead (403 for a post from another site, invalid, sample)."""
        state, sub = await self._subscriber(request, purpose)
        refused = self._refused(request, self._lang(request, sub.lang if sub is not None else ""))
        if refused is not None:
            return refused
        if sub is None:
            return self._no_subscriber(request, state, sample_page)
        return sub

    async def unsubscribe_form(self, request: Request) -> Response:
        sub = await self._opened(request, UNSUBSCRIBE, "sample")
        if isinstance(sub, Response):
            return sub
        return self._page(
            self._lang(request, sub.lang), "unsubscribe", email=mask_address(sub.email)
        )

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click (``List-Unsubscribe=One-Click``) and the page's own button:
        200 with a page, no redirect, no cookie."""
        sub = await self._posted(request, UNSUBSCRIBE, "sample")
        if isinstance(sub, Response):
            return sub
        return await self._unsubscribe(sub, self._lang(request, sub.lang))

    # --- the preferences page, linked from every issue ---------------------------------------

    def _preferences_page(
        self, sub: Subscriber, status: int = 200, *, lang: str = "", saved: str = ""
    ) -> Response:
        """The page in ``lang`` (else the subscriber's language), the email language
        ``saved`` just now (else the stored one) selected."""
        return self._page(
            lang or sub.lang,
            "preferences",
            status,
            email=mask_address(sub.email),
            languages=[(code, language_name(code)) for code in LANGS],
            current=saved or sub.lang,
            saved=language_name(saved) if saved else "",
        )

    async def preferences_form(self, request: Request) -> Response:
        """The address (masked: the link travels in every issue, and issues get forwarded),
        the email language and an Unsubscribe button. Opening it changes nothing."""
        sub = await self._opened(request, PREFERENCES, "sample_preferences")
        if isinstance(sub, Response):
            return sub
        # The subscriber's language, unless the page's language switch asked for another.
        return self._preferences_page(sub, lang=self._lang(request, sub.lang))

    async def preferences(self, request: Request) -> Response:
        """One of the page's two forms: ``action=language`` with ``lang``, answered in the
        new language, or ``action=unsubscribe``, which does what the unsubscribe link does."""
        sub = await self._posted(request, PREFERENCES, "sample_preferences")
        if isinstance(sub, Response):
            return sub
        form = await read_form(request)
        action = form.get("action")
        if action == "unsubscribe":
            return await self._unsubscribe(sub, sub.lang)
        if sub.status == "unsubscribed":
            return self._page(sub.lang, "unsubscribed")  # nothing left to set
        lang = form.get("lang", "")
        if action != "language" or lang not in LANGS:
            return self._preferences_page(sub, 400, lang=self._lang(request, sub.lang))
        if lang != sub.lang:
            await run_in_threadpool(self.store().set_lang, sub.id, lang)
            log.info("subscriber %d now reads %s", sub.id, lang)
        return self._preferences_page(sub, lang=lang, saved=lang)

    # --- the editor's Approve button (draft mode) -------------------------------------------

    async def _draft(self, request: Request) -> Issue | None:
        try:
            issue_id = read_token(self.keys(), APPROVE, request.path_params["token"])
        except TokenError:
            return None
        return await run_in_threadpool(self.store().get_issue_by_id, issue_id)

    async def approve_form(self, request: Request) -> Response:
        """What the editor is about to send, and a button; a GET changes nothing (mail
        filters open every link)."""
        row = await self._draft(request)
        lang = self._lang(request)
        if row is None:
            return self._page(lang, "invalid", 400)
        counts = await run_in_threadpool(self.store().count_subscribers)
        return self._page(
            lang, "approve", issue=row, recipients=counts.get("active", 0), done=False
        )

    async def approve(self, request: Request) -> Response:
        row = await self._draft(request)
        lang = self._lang(request)
        refused = self._refused(request, lang)
        if refused is not None:
            return refused
        if row is None:
            return self._page(lang, "invalid", 400)
        try:
            row = await run_in_threadpool(approve_and_start, self.cfg, self.store(), row)
        except NewsletterError as exc:
            log.warning("approving %s: %s", row.week, exc)
            return self._page(lang, "approve", 409, issue=row, error=str(exc), done=False)
        if self.wake_sender is not None:
            self.wake_sender()
        return self._page(lang, "approve", issue=row, done=True)


def render_page(cfg: Config, lang: str, page: str, **context: Any) -> str:
    """One of the subscription pages (``templates/web/page.html``) in the site's layout."""
    context.setdefault("email", "")
    context.setdefault("sub_name", "")
    context.setdefault("error", "")
    context.setdefault("email_lang", "")
    if page == "subscribe":
        paths = {other: subscribe_path(other, cfg.default_lang) for other in LANGS}
        site = layout(cfg, lang, paths)
    else:
        site = layout(cfg, lang, query_paths(), public=False)
    return (
        environment(lang)
        .get_template("web/page.html")
        .render(
            page=page,
            name=cfg.email.edition(lang).name,
            site_url=cfg.site_url,
            site=site,
            **context,
        )
    )


# What a visitor is told about each kind of mistake in the form, in the page's language (the
# address validator's own messages are English and name its internals).
_FORM_ERRORS = {
    "empty": N_("Please enter your email address."),
    "at_sign": N_(
        "An email address has one @ between a name and a domain, as in name@example.com."
    ),
    "non_ascii": N_(
        "The part before the @ can only hold Latin letters, digits and . _ - +: we cannot "
        "send to addresses with Korean or other characters there."
    ),
    "spaces": N_("An email address cannot contain spaces or line breaks."),
    "domain": N_("The part after the @ is not a domain that can receive mail, as example.com is."),
    "too_long": N_("This email address is too long."),
    "invalid": N_("This is not a valid email address. Please check it, as in name@example.com."),
    "name_encoded_word": N_("A name cannot contain the character sequences =? or ?=."),
    "name_control": N_("A name must be one line, without control characters."),
    "name_too_long": N_("A name can be at most 200 characters long."),
}


def form_error(exc: AddressError, lang: str) -> str:
    """The sentence for what was wrong with the form, in ``lang``."""
    message = _FORM_ERRORS.get(exc.kind, _FORM_ERRORS["invalid"])
    return translations_for(lang).gettext(message)


def routes(
    cfg: Config,
    wake_sender: Callable[[], None] | None = None,
    closers: list[Callable[[], None]] | None = None,
) -> list[BaseRoute]:
    """The subscription pages; ``closers`` is given what closes their store."""
    pages = SubscriptionPages(cfg, wake_sender)
    if closers is not None:
        closers.append(pages.close)
    return [
        Route("/approve/{token}", pages.approve_form, methods=["GET"]),
        Route("/approve/{token}", pages.approve, methods=["POST"]),
        Route("/subscribe", pages.subscribe_form, methods=["GET"]),
        Route("/subscribe", pages.subscribe, methods=["POST"]),
        Route("/confirm/{token}", pages.confirm_form, methods=["GET"]),
        Route("/confirm/{token}", pages.confirm, methods=["POST"]),
        Route("/unsubscribe/{token}", pages.unsubscribe_form, methods=["GET"]),
        Route("/unsubscribe/{token}", pages.unsubscribe, methods=["POST"]),
        Route("/preferences/{token}", pages.preferences_form, methods=["GET"]),
        Route("/preferences/{token}", pages.preferences, methods=["POST"]),
    ]
