"""/healthz, /readyz and /metrics: for a supervisor, a load balancer and Prometheus.

``/healthz`` answers 200 while the process lives, touching nothing. ``/readyz`` answers 200
when the database answers a quick question (within ``PROBE_SECONDS``) and the parts of the
process that do its work run (in ``newsletter run`` the scheduler, in ``run`` and ``serve``
the sender's thread); else 503 and one line saying what is wrong (the details go to the
log, not to whoever asks). ``/metrics`` asks for ``Authorization: Bearer <token>`` when
``NEWSLETTER_METRICS_TOKEN`` is set; without it, only a client on this machine's loopback
that no proxy forwarded may read it. None of them is ever cached.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping

import anyio
import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from newsletter.config import METRICS_TOKEN_ENV, Config
from newsletter.store import Monitor, StoreError, open_monitor
from newsletter.web.metrics import Complaint, Metrics, new_metrics, one_line

log = logging.getLogger(__name__)

__all__ = ["PROBE_SECONDS", "Health"]

# How long /readyz waits for the database.
PROBE_SECONDS = 2.0
_NO_STORE = {"Cache-Control": "no-store"}
# Headers a proxy adds: a request that carries one came from further away than its peer.
_FORWARDED = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(
        text + "\n", status_code=status, headers={**_NO_STORE, **(headers or {})}
    )


class Health:
    """The three endpoints of one app. ``running`` says, by name, whether each part of
    the process that must run does (``scheduler``, ``sender``); without it, readiness is
    the database's alone."""

    def __init__(
        self, cfg: Config, running: Mapping[str, Callable[[], bool]] | None = None
    ) -> None:
        self.cfg = cfg
        self.running = dict(running or {})
        self._monitor: Monitor | None = None
        self._opening = threading.Lock()
        self._probing = threading.Lock()
        self._complaint = Complaint("readiness")
        self.metrics: Metrics = new_metrics(self.monitor)

    def monitor(self) -> Monitor:
        """The engine monitoring asks with, made on first use (from any thread)."""
        with self._opening:
            if self._monitor is None:
                self._monitor = open_monitor(
                    self.cfg.database_url, self.cfg.base_dir, timeout=PROBE_SECONDS
                )
            return self._monitor

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        return _text(200, "ok")

    async def readyz(self, request: Request) -> Response:
        problem = await self.not_ready()
        if problem:
            return _text(503, f"not ready: {problem}")
        return _text(200, "ready")

    async def not_ready(self) -> str:
        """What keeps this process from doing its work, in a few words; "" when nothing."""
        for name, runs in self.running.items():
            if not runs():
                problem = f"the {name} is not running"
                self._complaint.say(problem)
                return problem
        error = f"no answer within {PROBE_SECONDS:g} s"
        with anyio.move_on_after(PROBE_SECONDS):
            error = await anyio.to_thread.run_sync(self._probe, abandon_on_cancel=True)
        if error:
            self._complaint.say(f"the database does not answer: {error}")
            return "the database does not answer"
        self._complaint.clear()
        return ""

    def _probe(self) -> str:
        # A probe given up on goes on in its thread: the next ones do not wait beside it.
        if not self._probing.acquire(blocking=False):
            return "the previous probe has not had an answer yet"
        try:
            self.monitor().ping()
            return ""
        except (SQLAlchemyError, StoreError, OSError) as exc:
            return one_line(exc)
        finally:
            self._probing.release()

    async def metrics_page(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        accept = request.headers.get("accept", "")
        body, content_type = await anyio.to_thread.run_sync(self.metrics.render, accept)
        return Response(body, headers={**_NO_STORE, "Content-Type": content_type})

    def _refusal(self, request: Request) -> Response | None:
        """None when ``request`` may read the metrics, else the answer that refuses it."""
        token = self.cfg.web.metrics_token
        if token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            # Compared in constant time: how much of a guess was right must not show.
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return None
            return _text(
                401,
                "the metrics need the bearer token of NEWSLETTER_METRICS_TOKEN",
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        if _loopback(request) and not _forwarded(request):
            return None
        return _text(
            403,
            f"the metrics are for this machine's own clients; set {METRICS_TOKEN_ENV} "
            "to read them from elsewhere",
        )


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback


def _forwarded(request: Request) -> bool:
    """Whether a proxy passed the request on: behind one, every client's peer is the proxy
    (often on loopback), whatever address uvicorn takes from X-Forwarded-For."""
    return any(name in _FORWARDED for name, _ in request.scope["headers"])
