"""What the web app refuses or shrugs off before any page sees a request: a request whose
length is told twice (request smuggling), and a client that leaves in the middle of one."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

_AMBIGUOUS = b"A request must not carry both Content-Length and Transfer-Encoding.\n"


class HttpMiddleware:
    """A plain ASGI middleware (cheap: no request objects) for HTTP requests; anything
    else passes through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestEdge(HttpMiddleware):
    """On the raw header list, whichever HTTP parser the server uses.

    A request with both ``Content-Length`` and ``Transfer-Encoding`` is answered 400 and
    its connection closed (RFC 9112, 6.3): a proxy in front that reads its length the other
    way would see a second request hidden in its body, and answering on the same connection
    would serve it. A client that disconnects before its body is whole is one log line,
    not a traceback."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        names = {name.lower() for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            log.warning(
                "refused %s %s: both Content-Length and Transfer-Encoding",
                scope["method"],
                scope["path"],
            )
            await _refuse(send)
            return
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.info(
                "%s %s: the client went away before sending the whole request",
                scope["method"],
                scope["path"],
            )


async def _refuse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(_AMBIGUOUS)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _AMBIGUOUS})
