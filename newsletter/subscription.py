"""Subscribe, confirm and unsubscribe over the web (double opt-in, RFC 8058 one-click).

The pages answer the same whether or not an address is known, so the form cannot be
used to find out who subscribes. Tokens are HMAC-signed (:mod:`newsletter.tokens`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from .config import LANGS, Config
from .delivery import queue_mail
from .errors import NewsletterError
from .message import confirmation_message
from .render import environment
from .store import Store, open_store
from .subscribers import AddressError, check_name, normalize_address
from .tokens import TokenError, make_token, read_token, secret_key

log = logging.getLogger(__name__)

CONFIRM = "confirm"
APPROVE = "approve"
# How long a confirmation link works.
CONFIRM_DAYS = 7
UNSUBSCRIBE = "unsubscribe"
# Pages must never be cached or carry cookies: they act on a token in the URL.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


_MAX_FORM = 16_384


async def _form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (the only kind these pages send), size-capped."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def confirm_url(cfg: Config, token: str) -> str:
    return f"{cfg.site_url}confirm/{token}"


def request_subscription(
    cfg: Config, store: Store, key: bytes, email: str, name: str, lang: str
) -> int | None:
    """Record a pending subscriber (or find the known one) and queue the confirmation
    email for the sender. Returns the queued mail's id, or None when the address is
    already active and nothing needs sending."""
    sub, _ = store.add_subscriber(email, name, lang, status="pending", merge=False)
    if sub.status == "active":
        return None
    if sub.status != "pending":
        # Unsubscribed or bounced, asking again: waits for the new link like anyone new.
        store.set_status(sub.id, "pending")
    expires = int(time.time()) + CONFIRM_DAYS * 86400
    url = confirm_url(cfg, make_token(key, CONFIRM, sub.id, expires=expires))
    message = confirmation_message(
        cfg, lang=sub.lang, to_address=sub.email, to_name=sub.name, confirm_url=url
    )
    return queue_mail(store, "confirm", sub.email, message)


class SubscriptionPages:
    """Starlette endpoints; the store opens on first use, so serving feeds needs no database."""

    def __init__(self, cfg: Config, wake_sender: Callable[[], None] | None = None) -> None:
        self.cfg = cfg
        self.wake_sender = wake_sender
        self._store: Store | None = None
        self._key: bytes | None = None

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.cfg.database_url, self.cfg.base_dir)
        return self._store

    def key(self) -> bytes:
        if self._key is None:
            self._key = secret_key(self.cfg)
        return self._key

    def _page(self, lang: str, page: str, status: int = 200, **context: Any) -> Response:
        html = (
            environment(lang)
            .get_template("web/page.html")
            .render(
                page=page,
                name=self.cfg.email.name,
                site_url=self.cfg.site_url,
                email=context.pop("email", ""),
                sub_name=context.pop("sub_name", ""),
                error=context.pop("error", ""),
                **context,
            )
        )
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def _lang(self, request: Request) -> str:
        asked = request.query_params.get("lang", "")
        if asked in LANGS:
            return asked
        accept = request.headers.get("accept-language", "").lower()
        return "en" if accept.startswith("en") else self.cfg.default_lang

    async def subscribe_form(self, request: Request) -> Response:
        return self._page(self._lang(request), "subscribe")

    async def subscribe(self, request: Request) -> Response:
        form = await _form(request)
        lang = str(form.get("lang") or self._lang(request))
        lang = lang if lang in LANGS else self.cfg.default_lang
        raw_email, raw_name = str(form.get("email") or ""), str(form.get("name") or "")
        try:
            email, name = normalize_address(raw_email), check_name(raw_name)
        except AddressError as exc:
            return self._page(
                lang, "subscribe", 400, error=str(exc), email=raw_email, sub_name=raw_name
            )
        try:
            queued = await run_in_threadpool(
                request_subscription, self.cfg, self.store(), self.key(), email, name, lang
            )
            if queued is not None and self.wake_sender is not None:
                self.wake_sender()
        except NewsletterError as exc:
            # Logged without the address; the visitor sees the same page either way.
            log.error("could not queue a confirmation email: %s", exc)
        return self._page(lang, "check_inbox")

    async def confirm(self, request: Request) -> Response:
        try:
            subscriber_id = read_token(self.key(), CONFIRM, request.path_params["token"])
        except TokenError:
            return self._page(self._lang(request), "invalid", 400)
        store = self.store()
        sub = await run_in_threadpool(store.get_subscriber, id=subscriber_id)
        if sub is None:
            return self._page(self._lang(request), "invalid", 400)
        if sub.status == "pending":
            await run_in_threadpool(store.set_status, sub.id, "active")
        elif sub.status != "active":
            # Unsubscribed or bounced since this link was sent: it must not undo that.
            return self._page(sub.lang, "invalid", 400)
        return self._page(sub.lang, "confirmed")

    async def _unsubscriber(self, request: Request) -> tuple[str, Any]:
        try:
            subscriber_id = read_token(self.key(), UNSUBSCRIBE, request.path_params["token"])
        except TokenError:
            return "invalid", None
        if subscriber_id == 0:
            return "sample", None
        sub = await run_in_threadpool(self.store().get_subscriber, id=subscriber_id)
        return ("ok", sub) if sub is not None else ("invalid", None)

    async def unsubscribe_form(self, request: Request) -> Response:
        state, sub = await self._unsubscriber(request)
        if sub is None:
            return self._page(self._lang(request), state, 400 if state == "invalid" else 200)
        if sub.status == "unsubscribed":
            return self._page(sub.lang, "unsubscribed")
        return self._page(sub.lang, "unsubscribe", email=sub.email)

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click (``List-Unsubscribe=One-Click``) and the page's own button:
        200 with a page, no redirect, no cookie."""
        state, sub = await self._unsubscriber(request)
        if sub is None:
            return self._page(self._lang(request), state, 400 if state == "invalid" else 200)
        if sub.status != "unsubscribed":
            await run_in_threadpool(self.store().set_status, sub.id, "unsubscribed")
            log.info("subscriber %d unsubscribed", sub.id)
        return self._page(sub.lang, "unsubscribed")

    # --- the editor's Approve button (draft mode) -------------------------------------------

    async def _draft(self, request: Request) -> Any:
        try:
            issue_id = read_token(self.key(), APPROVE, request.path_params["token"])
        except TokenError:
            return None
        return await run_in_threadpool(self.store().get_issue_by_id, issue_id)

    async def approve_form(self, request: Request) -> Response:
        """What the editor is about to send, and a button; a GET changes nothing (mail
        filters open every link)."""
        row = await self._draft(request)
        lang = self.cfg.default_lang
        if row is None:
            return self._page(lang, "invalid", 400)
        counts = await run_in_threadpool(self.store().count_subscribers)
        return self._page(
            lang, "approve", issue=row, recipients=counts.get("active", 0), done=False
        )

    async def approve(self, request: Request) -> Response:
        row = await self._draft(request)
        lang = self.cfg.default_lang
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


def approve_and_start(cfg: Config, store: Store, row: Any) -> Any:
    """The Approve button: freeze the draft from the archive as it is now, and queue it."""
    from . import delivery
    from .select import IsoWeek
    from .sources import load_local_archive

    return delivery.ready_to_send(
        cfg, store, lambda: load_local_archive(cfg), IsoWeek.parse(row.week)
    )


def routes(cfg: Config, wake_sender: Callable[[], None] | None = None) -> list[BaseRoute]:
    pages = SubscriptionPages(cfg, wake_sender)
    return [
        Route("/approve/{token}", pages.approve_form, methods=["GET"]),
        Route("/approve/{token}", pages.approve, methods=["POST"]),
        Route("/subscribe", pages.subscribe_form, methods=["GET"]),
        Route("/subscribe", pages.subscribe, methods=["POST"]),
        Route("/confirm/{token}", pages.confirm, methods=["GET"]),
        Route("/unsubscribe/{token}", pages.unsubscribe_form, methods=["GET"]),
        Route("/unsubscribe/{token}", pages.unsubscribe, methods=["POST"]),
    ]
