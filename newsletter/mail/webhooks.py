"""``POST /webhooks/bounce``: relays that post their bounce and complaint events.

The same actions as the bounce mailbox (:func:`newsletter.mail.bounces.act`). Authenticated
with a bearer token from ``NEWSLETTER_WEBHOOK_TOKEN`` (at least 32 bytes), compared in
constant time; a client that sent ten wrong ones within ten minutes is answered 429 with
Retry-After. With no token configured the endpoint does not exist (404). The body is one event or a list of
them (or ``{"events": [...]}``)::

    {"email": "reader@example.org",        # or "delivery": the X-Newsletter-Delivery token
     "kind": "hard",                       # hard, soft, complaint, unsubscribe, blocked
     "status": "5.1.1",                    # optional RFC 3463 code
     "diagnostic": "550 5.1.1 user unknown",  # optional
     "id": "relay-event-id"}               # optional; the same id is acted on once

An event without ``id`` is identified by its content, so a relay retrying a post changes
nothing the second time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.config import Config
from newsletter.mail.bounces import Report, act
from newsletter.mail.tokens import Keys, signing_keys
from newsletter.pacing import ClientWindow
from newsletter.store import REPORT_KINDS, LazyStore, Store
from newsletter.words import count

log = logging.getLogger(__name__)

PATH = "/webhooks/bounce"
_MAX_BODY = 1_000_000
_MAX_EVENTS = 1000
_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


class EventError(ValueError):
    """An event that does not have the documented shape; the message names the field."""


def parse_events(body: Any) -> list[dict[str, str]]:
    """The events of a webhook body, checked: :class:`EventError` names what is wrong."""
    if isinstance(body, dict) and "events" in body:
        body = body["events"]
    events = body if isinstance(body, list) else [body]
    if not events or len(events) > _MAX_EVENTS:
        raise EventError(f"give between 1 and {_MAX_EVENTS} events")
    checked = []
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise EventError(f"{where}: must be a JSON object")
        values: dict[str, str] = {}
        for name in ("email", "delivery", "kind", "status", "diagnostic", "id"):
            value = event.get(name, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise EventError(f"{where}.{name}: must be a string")
            values[name] = value.strip()
        if values["kind"] not in REPORT_KINDS:
            raise EventError(f"{where}.kind: must be one of {', '.join(REPORT_KINDS)}")
        if not values["email"] and not values["delivery"]:
            raise EventError(f"{where}: give email or delivery")
        if values["status"] and not _STATUS_RE.fullmatch(values["status"]):
            raise EventError(f"{where}.status: must be an RFC 3463 code such as 5.1.1")
        if len(values["email"]) > 320 or len(values["delivery"]) > 40 or len(values["id"]) > 200:
            raise EventError(f"{where}: email, delivery or id is too long")
        values["diagnostic"] = values["diagnostic"][:2000]
        checked.append(values)
    return checked


def event_id(event: dict[str, str]) -> str:
    if event["id"]:
        return f"webhook:{event['id']}"
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return "webhook:sha256:" + hashlib.sha256(canonical).hexdigest()


def apply_events(
    cfg: Config, store: Store, key: Keys, events: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Act on each event; what was done to whom, per event."""
    results = []
    for index, event in enumerate(events):
        report = Report(event["kind"], event["status"], event["diagnostic"])
        if event["delivery"]:
            report.tokens.append(event["delivery"])
        if event["email"]:
            report.addresses.append(event["email"])
        actions = act(cfg, store, key, report, event_id(event), "webhook")
        results.append(
            {
                "index": index,
                "matched": bool(actions),
                "actions": [{"email": a.email, "action": a.what} for a in actions],
            }
        )
    return results


# A client that sent this many wrong tokens within LOCKOUT_SECONDS is answered 429 until
# the oldest of them is that old, whatever it sends: guessing is slowed to a crawl, and a
# relay elsewhere is never locked out by someone else's guesses.
MAX_WRONG_TOKENS = 10
LOCKOUT_SECONDS = 600.0


class Lockout(ClientWindow):
    """The wrong tokens each client sent lately."""

    def __init__(self, most: int = MAX_WRONG_TOKENS, seconds: float = LOCKOUT_SECONDS) -> None:
        super().__init__(most, seconds)

    def failed(self, client: str, now: float | None = None) -> None:
        self.add(client, now)


class BounceWebhook:
    """The endpoint; the store opens on first use."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.lockout = Lockout()
        self.store = LazyStore(cfg.database_url, cfg.base_dir)
        self.close = self.store.close
        self._key: list[bytes] | None = None

    def _open(self) -> tuple[Store, list[bytes]]:
        if self._key is None:
            self._key = signing_keys(self.cfg)
        return self.store(), self._key

    def _authorized(self, request: Request, token: str) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not tell how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), token.encode("utf-8")
        )

    async def post(self, request: Request) -> Response:
        token = self.cfg.bounces.webhook_token
        if not token:
            return JSONResponse({"error": "not found"}, status_code=404)
        client = request.client.host if request.client else "-"
        wait = self.lockout.wait(client)
        if wait:
            return JSONResponse(
                {"error": f"too many wrong tokens: try again in {wait} s"},
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        if not self._authorized(request, token):
            self.lockout.failed(client)
            log.warning("webhook: a wrong bearer token from %s", client)
            return JSONResponse(
                {"error": "a valid bearer token is required"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="newsletter"'},
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                return JSONResponse({"error": "body larger than 1 MB"}, status_code=413)
        try:
            events = parse_events(json.loads(body.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return JSONResponse({"error": f"not JSON: {exc}"}, status_code=400)
        except EventError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        store, key = await run_in_threadpool(self._open)
        results = await run_in_threadpool(apply_events, self.cfg, store, key, events)
        log.info(
            "webhook: %s, %d matched",
            count(len(results), "event"),
            sum(r["matched"] for r in results),
        )
        return JSONResponse({"results": results})


def routes(cfg: Config, closers: list[Callable[[], None]] | None = None) -> list[BaseRoute]:
    """The endpoint; ``closers`` is given what closes its store."""
    webhook = BounceWebhook(cfg)
    if closers is not None:
        closers.append(webhook.close)
    return [Route(PATH, webhook.post, methods=["POST"])]
