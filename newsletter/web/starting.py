"""The web app of a service that is starting: its feeds at once, everything else as soon
as the whole app is there.

``newsletter run`` listens as soon as its feeds are in the public folder. The whole app
(:func:`newsletter.web.app.create_app`: the subscription pages, the webhooks, the site's
404 and 503 pages) needs the database, the signing keys and the renderers, whose imports
alone take longer than answering a feed. Until it is attached, a GET or HEAD of a feed
that is there and not about to be rewritten is answered from the public folder, exactly
as the whole app would answer it (validators, gzip, security headers); any other request
waits for the whole app.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from newsletter.config import Config
from newsletter.publish.names import FEED_PATHS
from newsletter.publish.pending import PendingPages
from newsletter.web.app import PublicFolder, Resource, SecurityHeaders, conditional_response
from newsletter.web.edge import RequestEdge

log = logging.getLogger(__name__)

__all__ = ["StartingApp"]

_UNAVAILABLE = b"The service is stopping.\n"


class StartingApp:
    """The ASGI app to listen with while the whole app is being built (:meth:`attach`)."""

    def __init__(self, cfg: Config, pending: PendingPages | None = None) -> None:
        self.public = PublicFolder(cfg.public_path, pending=pending)
        self._app: ASGIApp | None = None
        self._attached = asyncio.Event()

    async def preload(self) -> None:
        """Read the feeds into memory before listening: the first request for each is then
        answered at once, not after a read in a worker thread that competes with the rest
        of the service being imported."""
        for path in sorted(FEED_PATHS):
            await self.public.present(path[1:])

    def attach(self, app: ASGIApp) -> None:
        """``app`` answers every request from now on, those waiting for it first."""
        self._app = app
        self._attached.set()

    def close(self) -> None:
        """The service stops before its whole app was attached: what waits for it is told
        503 (come back later), so that the server can stop."""
        if self._app is None:
            self.attach(_unavailable)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            resource = await self._feed(scope)
            if resource is not None:
                await SecurityHeaders(RequestEdge(_Answer(resource, self.public.max_age)))(
                    scope, receive, send
                )
                return
            await self._attached.wait()
        assert self._app is not None
        await self._app(scope, receive, send)

    async def _feed(self, scope: Scope) -> Resource | None:
        """The feed a request asks for, when it may be answered before the whole app."""
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or path not in FEED_PATHS
        ):
            return None
        return await self.public.present(path[1:])


class _Answer:
    """The public folder's answer with one file, as :class:`PublicFolder` gives it."""

    def __init__(self, resource: Resource, max_age: int) -> None:
        self.resource = resource
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The folder's own freshness, so that an early answer is the whole app's, byte
        # for byte and header for header.
        response = conditional_response(
            Request(scope, receive), self.resource, max_age=self.max_age
        )
        await response(scope, receive, send)


async def _unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = {"Retry-After": "30", "Cache-Control": "no-store", "Connection": "close"}
    response = Response(_UNAVAILABLE, 503, headers=headers, media_type="text/plain")
    await response(scope, receive, send)
