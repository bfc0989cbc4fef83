"""The ASGI app: the feeds and the web copies of the issues, from the public folder.

Every file goes through :func:`conditional_response`: a strong ETag from the content
hash, Last-Modified, 304 Not Modified for If-None-Match and If-Modified-Since, gzip for
clients that accept it, and Cache-Control. Pages with their own handlers (subscribe,
unsubscribe) belong in :func:`routes`, before the public folder's catch-all route.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import logging
import os
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import anyio.to_thread
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from newsletter.config import LANGS, Config
from newsletter.publish.names import (
    ATOM_TYPE,
    FEED_NAMES,
    ISSUES_JSON_NAME,
    JSON_NAME,
    JSON_TYPE,
)
from newsletter.publish.pending import PendingPages
from newsletter.web.edge import HttpMiddleware, RequestEdge

log = logging.getLogger(__name__)

__all__ = [
    "CACHE_SECONDS",
    "PublicFolder",
    "Resource",
    "conditional_response",
    "create_app",
    "routes",
]

# Feeds change once a day and revalidating is a cheap 304, so a short freshness is enough.
CACHE_SECONDS = 900
# The favicon and robots.txt change only with a new release.
STATIC_SECONDS = 86400
# A page still being built after a start is there within seconds.
BUILDING_RETRY_SECONDS = 5
_UTF8 = "; charset=utf-8"
_TYPES = {
    ".atom": ATOM_TYPE + _UTF8,
    ".html": "text/html" + _UTF8,
    ".json": "application/json" + _UTF8,
    ".txt": "text/plain" + _UTF8,
    ".css": "text/css" + _UTF8,
    ".js": "text/javascript" + _UTF8,
    ".xml": "application/xml" + _UTF8,
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
}
# JSON Feeds are told apart from other JSON by name.
_NAMED_TYPES = {JSON_NAME: JSON_TYPE + _UTF8, ISSUES_JSON_NAME: JSON_TYPE + _UTF8}
_GZIP_MIN = 512  # below this, headers outweigh what gzip saves
_CACHE_FILES = 256


@dataclass(frozen=True, slots=True)
class Resource:
    """One representation to serve, with its validators and (when it pays) its gzip form."""

    body: bytes
    media_type: str
    etag: str
    last_modified: int  # seconds since the epoch
    gzipped: bytes | None = None

    @classmethod
    def from_bytes(
        cls, body: bytes, media_type: str, last_modified: float, packed: bytes | None = None
    ) -> Resource:
        """``packed``: the gzip form of ``body`` when one is at hand (the public folder's
        copy beside a feed), rather than compressing it again."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        gzipped = None
        if len(body) >= _GZIP_MIN and _compressible(media_type):
            # mtime=0: the same body always compresses to the same bytes.
            packed = packed or gzip.compress(body, compresslevel=6, mtime=0)
            gzipped = packed if len(packed) < len(body) else None
        return cls(body, media_type, f'"{digest}"', int(last_modified), gzipped)

    @property
    def gzip_etag(self) -> str:
        # A strong ETag names one exact representation: the gzip form needs its own.
        return self.etag[:-1] + '-gz"'


def _compressible(media_type: str) -> bool:
    return media_type.startswith("text/") or any(
        kind in media_type for kind in ("json", "xml", "javascript")
    )


def _accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip;q=0`` refuses it)."""
    star: bool | None = None
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            return q > 0
        if name == "*":
            star = q > 0
    return bool(star)


def _etag_matches(header: str, etags: tuple[str, ...]) -> bool:
    """If-None-Match uses the weak comparison: ``W/`` prefixes are ignored."""
    if header.strip() == "*":
        return True
    for tag in header.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag in etags:
            return True
    return False


def _not_modified_since(header: str, last_modified: int) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:  # "-0000": treat as UTC, as HTTP dates are
        return False
    return last_modified <= since.timestamp()


def conditional_response(
    request: Request, resource: Resource, *, max_age: int = CACHE_SECONDS
) -> Response:
    """200 with the (possibly gzipped) body, or 304 when the client's copy is current."""
    gzipped = resource.gzipped
    if gzipped is not None and not _accepts_gzip(request.headers.get("accept-encoding", "")):
        gzipped = None
    headers = {
        "ETag": resource.etag if gzipped is None else resource.gzip_etag,
        "Last-Modified": formatdate(resource.last_modified, usegmt=True),
        "Cache-Control": f"public, max-age={max_age}",
        "X-Content-Type-Options": "nosniff",
    }
    if resource.gzipped is not None:
        headers["Vary"] = "Accept-Encoding"
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        fresh = _etag_matches(if_none_match, (resource.etag, resource.gzip_etag))
    else:
        since = request.headers.get("if-modified-since")
        fresh = since is not None and _not_modified_since(since, resource.last_modified)
    if fresh:
        return Response(status_code=304, headers=headers)
    if gzipped is not None:
        headers["Content-Encoding"] = "gzip"
        return Response(gzipped, media_type=resource.media_type, headers=headers)
    return Response(resource.body, media_type=resource.media_type, headers=headers)


def _page(status: int, title: str, text: str, headers: dict[str, str] | None = None) -> Response:
    html = Markup(
        '<!doctype html>\n<html lang="ko"><head><meta charset="utf-8"><title>{}</title></head>'
        "<body><h1>{}</h1><p>{}</p></body></html>\n"
    ).format(title, title, text)
    return HTMLResponse(str(html), status_code=status, headers=headers)


def _not_found() -> Response:
    return _page(404, "찾을 수 없습니다 (404 Not Found)", "요청한 페이지가 없습니다.")


def _media_type(relative: str) -> str | None:
    """The Content-Type of a public file, None for a kind the site does not serve."""
    name = relative.rsplit("/", 1)[-1]
    return _NAMED_TYPES.get(relative) or _TYPES.get(os.path.splitext(name)[1].lower())


def _gzip_copy(path: Path, body: bytes) -> bytes | None:
    """The gzip copy written beside a feed (``feed.atom.gz``, for a web server in front),
    when it holds exactly ``body``: checking it costs a fifth of compressing a large feed
    again, which the first answer after a start or a rewrite would wait for."""
    try:
        packed = path.with_name(path.name + ".gz").read_bytes()
    except OSError:
        return None
    inflate = zlib.decompressobj(wbits=31)  # gzip; a member of at most len(body) + 1 bytes
    try:
        same = inflate.decompress(packed, len(body) + 1) == body
    except zlib.error:
        return None
    return packed if same and inflate.eof and not inflate.unused_data else None


def _file_resource(path: Path) -> Resource:
    media_type = _TYPES[path.suffix]
    return Resource.from_bytes(path.read_bytes(), media_type, path.stat().st_mtime)


class SitePages:
    """What the site answers besides its files: the 404 page in the site's look, and the
    favicon and robots.txt, which need no build step."""

    def __init__(self, cfg: Config) -> None:
        from newsletter.publish.render import templates_dir
        from newsletter.publish.site import robots_txt

        self.cfg = cfg
        folder = templates_dir() / "site"
        self.favicon = _file_resource(folder / "favicon.svg")
        self.favicon_ico = _file_resource(folder / "favicon.ico")
        self.robots = Resource.from_bytes(
            robots_txt(cfg).encode("utf-8"), _TYPES[".txt"], time.time()
        )

    def lang(self, request: Request) -> str:
        """``?lang=en``, or the language of a page's address (``2024-W31.en.html``)."""
        asked = request.query_params.get("lang", "")
        if asked in LANGS:
            return asked
        suffix = request.url.path.rsplit(".", 2)
        if len(suffix) == 3 and suffix[2] == "html" and suffix[1] in LANGS:
            return suffix[1]
        return self.cfg.default_lang

    def not_found(self, request: Request) -> Response:
        from newsletter.publish.site import render_not_found

        page = render_not_found(self.cfg, self.lang(request))
        return HTMLResponse(page, status_code=404, headers={"Cache-Control": "no-store"})

    def building(self, request: Request) -> Response:
        """A page a build in progress is about to write: come back in a moment."""
        from newsletter.publish.site import render_building

        page = render_building(self.cfg, self.lang(request))
        headers = {"Retry-After": str(BUILDING_RETRY_SECONDS), "Cache-Control": "no-store"}
        return HTMLResponse(page, status_code=503, headers=headers)

    async def favicon_svg(self, request: Request) -> Response:
        return conditional_response(request, self.favicon, max_age=STATIC_SECONDS)

    async def favicon_ico_file(self, request: Request) -> Response:
        return conditional_response(request, self.favicon_ico, max_age=STATIC_SECONDS)

    async def robots_txt(self, request: Request) -> Response:
        return conditional_response(request, self.robots, max_age=STATIC_SECONDS)


def _not_built(name: str) -> Response:
    return _page(
        503,
        "피드가 아직 없습니다 (503 Service Unavailable)",
        f"{name} has not been built yet: run `newsletter feed`. "
        "피드를 아직 만들지 않았습니다. 잠시 뒤에 다시 시도해 주세요.",
        {"Retry-After": "300", "Cache-Control": "no-store"},
    )


class PublicFolder:
    """Serves the files under ``root``; nothing outside it, nothing hidden. ``not_found``
    answers for any other address, and ``building`` for a page ``pending`` says a build in
    progress is about to write (or rewrite: its links changed)."""

    def __init__(
        self,
        root: Path,
        *,
        max_age: int = CACHE_SECONDS,
        not_found: Callable[[Request], Response] | None = None,
        pending: PendingPages | None = None,
        building: Callable[[Request], Response] | None = None,
    ) -> None:
        self.root = root
        self.max_age = max_age
        self.not_found = not_found or (lambda request: _not_found())
        self.pending = pending
        self.building = building or (lambda request: _not_built(request.url.path))
        self._cache: OrderedDict[Path, tuple[tuple[int, int, int], Resource]] = OrderedDict()

    def locate(self, relative: str) -> Path | None:
        """The file for a URL path below the root, or None when the path is not allowed:
        empty, ``.``/``..`` or hidden segments, backslashes, or a link leading outside."""
        parts = relative.split("/")
        for part in parts:
            if not part or part.startswith(".") or "\\" in part or "\x00" in part:
                return None
        path = self.root.joinpath(*parts)
        try:
            root = self.root.resolve()
            if not path.resolve().is_relative_to(root):
                return None
        except (OSError, RuntimeError):
            return None
        return path

    def _load(self, path: Path, media_type: str) -> tuple[tuple[int, int, int], Resource] | None:
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                body = fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        return key, Resource.from_bytes(body, media_type, st.st_mtime, _gzip_copy(path, body))

    async def resource(self, path: Path, media_type: str) -> Resource | None:
        """The file as a :class:`Resource`, re-read only when it changed on disk."""
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == (st.st_mtime_ns, st.st_size, st.st_ino):
            self._cache.move_to_end(path)
            return cached[1]
        loaded = await anyio.to_thread.run_sync(self._load, path, media_type)
        if loaded is None:
            return None
        self._cache[path] = loaded
        while len(self._cache) > _CACHE_FILES:
            self._cache.popitem(last=False)
        return loaded[1]

    async def serve(self, request: Request, relative: str) -> Response:
        name = relative.rsplit("/", 1)[-1]
        media_type = _media_type(relative)
        path = self.locate(relative) if media_type else None
        if path is None or media_type is None:
            return self.not_found(request)
        resource = await self.resource(path, media_type)
        if self.pending is not None and self.pending.holds(relative, exists=resource is not None):
            return self.building(request)
        if resource is None:
            return _not_built(name) if relative in FEED_NAMES else self.not_found(request)
        return conditional_response(request, resource, max_age=self.max_age)

    async def present(self, relative: str) -> Resource | None:
        """The file that :meth:`serve` would answer ``relative`` with (200, or 304), or None
        when it would answer otherwise: no such file, not to be served, or pending."""
        media_type = _media_type(relative)
        path = self.locate(relative) if media_type else None
        if path is None or media_type is None:
            return None
        resource = await self.resource(path, media_type)
        if resource is None or (
            self.pending is not None and self.pending.holds(relative, exists=True)
        ):
            return None
        return resource

    async def index(self, request: Request) -> Response:
        return await self.serve(request, "index.html")

    async def file(self, request: Request) -> Response:
        return await self.serve(request, request.path_params["path"])


def routes(
    cfg: Config,
    wake_sender: Callable[[], None] | None = None,
    pending: PendingPages | None = None,
    closers: list[Callable[[], None]] | None = None,
) -> list[BaseRoute]:
    """Every route of the site, in matching order; the public folder's catch-all is last.
    ``closers`` is given what closes the stores the routes open."""
    from newsletter.mail.webhooks import routes as webhook_routes
    from newsletter.web.console import routes as console_routes
    from newsletter.web.subscription import routes as subscription_routes

    pages = SitePages(cfg)
    public = PublicFolder(
        cfg.public_path, not_found=pages.not_found, pending=pending, building=pages.building
    )
    return [
        *console_routes(cfg, wake_sender, closers),
        *subscription_routes(cfg, wake_sender, closers),
        *webhook_routes(cfg, closers),
        Route("/favicon.svg", pages.favicon_svg, methods=["GET"]),
        Route("/favicon.ico", pages.favicon_ico_file, methods=["GET"]),
        Route("/robots.txt", pages.robots_txt, methods=["GET"]),
        Route("/", public.index, methods=["GET"]),
        Route("/{path:path}", public.file, methods=["GET"]),
    ]


# Content-Security-Policy by kind of response. No page has a script but the search page,
# which may run this site's search.js and read its index (never an inline script); styles
# are inline (each page carries its one <style> block, so it is whole wherever it is
# served from).
_CSP_FORM = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_CSP_PAGE = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https: data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_CSP_SEARCH = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The console runs its one script, /admin/console.js, and reads /admin/live.json; an
# issue's email is shown in a sandboxed srcdoc frame, whose images come from anywhere.
_CSP_CONSOLE = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SEARCH_PAGES = frozenset({"/search.html", "/search.en.html"})
_CSP_OTHER = "default-src 'none'; frame-ancestors 'none'; sandbox"
_FORM_PAGES = ("/subscribe", "/confirm/", "/unsubscribe/", "/preferences/", "/approve/")
_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
# Every page carries the subscribe form, and browsers post a form from a no-referrer page
# with "Origin: null", which the same-origin check refuses. same-origin tells other sites
# no more than no-referrer does; what is not a page keeps no-referrer.
_REFERRERS = {True: b"same-origin", False: b"no-referrer"}


def _is_page(headers: list[tuple[bytes, bytes]]) -> bool:
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    return content_type.startswith(b"text/html")


def _csp(path: str, page: bool) -> bytes:
    if not page:
        return _CSP_OTHER.encode()
    if path in _SEARCH_PAGES:
        return _CSP_SEARCH.encode()
    if path == "/admin" or path.startswith("/admin/"):
        return _CSP_CONSOLE.encode()
    return (_CSP_FORM if path.startswith(_FORM_PAGES) else _CSP_PAGE).encode()


class SecurityHeaders(HttpMiddleware):
    """Adds the security headers to every response."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _COMMON if k not in present]
                page = _is_page(headers)
                if b"referrer-policy" not in present:
                    headers.append((b"referrer-policy", _REFERRERS[page]))
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", _csp(path, page)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


_TOKEN_PATH = re.compile(r"(/(?:confirm|unsubscribe|approve|preferences)/)[^\s?\"]+")


class RedactTokens(logging.Filter):
    """Access log lines show ``/confirm/…``, ``/unsubscribe/…``, ``/preferences/…`` and
    ``/approve/…``, never the token: a log must not hand out links that act for a
    subscriber or the editor."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PATH.sub(r"\1…", a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_PATH.sub(r"\1…", record.msg)
        return True


def redact_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())


def _storage_failure(exc: BaseException) -> bool:
    """A full disk or a database that cannot be written: the visitor should retry later."""
    from sqlalchemy import exc as sa_exc

    from newsletter.store import StoreError

    if isinstance(exc, StoreError):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return True
    text = str(exc).lower()
    return isinstance(exc, sa_exc.OperationalError) and any(
        word in text for word in ("full", "readonly", "read-only", "disk i/o", "locked")
    )


def _unavailable(cfg: Config) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        if not _storage_failure(exc):
            raise exc
        log.error("storage failure on %s: %s", request.url.path, exc)
        from newsletter.web.subscription import render_page

        lang = request.query_params.get("lang", "")
        html = render_page(cfg, lang if lang in LANGS else cfg.default_lang, "unavailable")
        return HTMLResponse(
            html, status_code=503, headers={"Retry-After": "300", "Cache-Control": "no-store"}
        )

    return handler


def create_app(
    cfg: Config,
    wake_sender: Callable[[], None] | None = None,
    pending: PendingPages | None = None,
    running: Mapping[str, Callable[[], bool]] | None = None,
) -> Starlette:
    """The application for ``cfg``: ``newsletter serve`` runs it; tests build their own.

    Mails the pages queue (confirmations) are sent by the process's sender thread;
    ``wake_sender`` tells it there is one. ``pending``: the pages a build in progress is
    about to write, answered with 503 and Retry-After until they are there.
    ``running``: whether each part of the process that must run does, by name (the
    scheduler of ``newsletter run``, the sender's thread), for /readyz."""
    # Here, not at the top: a service answers its feeds while it starts
    # (newsletter.web.starting) before any of the database is imported.
    from sqlalchemy import exc as sa_exc

    from newsletter.store import StoreError
    from newsletter.web.health import Health
    from newsletter.web.metrics import RequestTimer

    redact_access_log()
    handler = _unavailable(cfg)
    health = Health(cfg, running)
    closers: list[Callable[[], None]] = [health.close]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for close in closers:  # where the server runs the lifespan: the stores opened
            close()

    app = Starlette(
        routes=[*health.routes(), *routes(cfg, wake_sender, pending, closers)],
        lifespan=lifespan,
        # The timer first: it times everything the other layers do too.
        middleware=[
            Middleware(RequestTimer, histogram=health.metrics.requests),
            Middleware(SecurityHeaders),
            Middleware(RequestEdge),
        ],
        exception_handlers={
            sa_exc.OperationalError: handler,
            OSError: handler,
            StoreError: handler,
        },
    )
    app.state.config = cfg
    return app
