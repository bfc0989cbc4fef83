"""What /metrics shows, in the Prometheus text format: the database's counts, read at each
scrape, and this process's request durations.

The counts come from the database, not from counters in this process: the outbox is
drained by ``run``, ``serve`` and any ``worker`` process alike, and only the ledger knows
what all of them sent. A scrape reads them in a few GROUP BY queries (on the scraping
thread, never the event loop); when the database does not answer, those families are left
out, ``newsletter_database_up`` says 0, and the log says so in one line.

Each app has its own :class:`~prometheus_client.CollectorRegistry`: nothing is global, so
tests and several apps in one process never share a series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.lifecycle import WAITING, DeliveryState, PausedBy
from newsletter.publish.names import FEED_PATHS
from newsletter.store import (
    ISSUE_STATUSES,
    MESSAGE_KINDS,
    SUBSCRIBER_STATUSES,
    Monitor,
    StoreError,
    Tallies,
)
from newsletter.web.edge import HttpMiddleware

log = logging.getLogger(__name__)

__all__ = ["Metrics", "RequestTimer", "StoreCollector", "new_metrics", "one_line", "route_class"]

# From a feed served from memory (well under a millisecond) to a slow form post.
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# What the outbox is done with: the counter's outcomes.
OUTCOMES = (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED)


def one_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapping with the statement), one line."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Complaint:
    """Logs a failure that repeats at every scrape or probe once, when it starts or
    changes, and once more when it is over."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = ""

    def say(self, problem: str) -> None:
        if problem != self._last:
            log.warning("%s: %s", self.what, problem)
        self._last = problem

    def clear(self) -> None:
        if self._last:
            log.info("%s: over: %s", self.what, self._last)
        self._last = ""


class StoreCollector:
    """The ``newsletter_*`` families read from the database when a scrape asks.
    ``monitor`` gives the :class:`Monitor` to read with (made on first use)."""

    def __init__(self, monitor: Callable[[], Monitor], timeout: float = 5.0) -> None:
        self.monitor = monitor
        self.timeout = timeout
        # One scrape reads at a time: scrapes piling up behind a stuck database would
        # each hold a thread.
        self._reading = threading.Lock()
        self._complaint = Complaint("metrics")

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        tallies = self._read()
        yield GaugeMetricFamily(
            "newsletter_database_up",
            "1 when this scrape's queries answered, 0 when the database did not",
            value=0 if tallies is None else 1,
        )
        if tallies is not None:
            yield from families(tallies)

    def _read(self) -> Tallies | None:
        if not self._reading.acquire(timeout=self.timeout):
            self._complaint.say("the previous scrape's queries have not finished")
            return None
        try:
            tallies = self.monitor().tallies()
        except (SQLAlchemyError, StoreError, OSError) as exc:
            self._complaint.say(f"the database does not answer: {one_line(exc)}")
            return None
        finally:
            self._reading.release()
        self._complaint.clear()
        return tallies


def families(tallies: Tallies) -> Iterator[Metric]:
    """The metric families of one reading of the database."""
    kinds = sorted(set(MESSAGE_KINDS) | {kind for kind, _ in tallies.messages})
    messages = CounterMetricFamily(
        "newsletter_messages",
        "Messages the outbox is done with, by kind (issue, confirm, test, slack, discord) "
        "and outcome, from the ledger: every process that sends counts",
        labels=["kind", "outcome"],
    )
    queued = GaugeMetricFamily(
        "newsletter_outbox_queued",
        "Messages waiting in the outbox (queued, or being sent), by kind",
        labels=["kind"],
    )
    for kind in kinds:
        for outcome in OUTCOMES:
            messages.add_metric([kind, outcome], tallies.messages.get((kind, outcome), 0))
        queued.add_metric([kind], sum(tallies.messages.get((kind, s), 0) for s in WAITING))
    yield messages
    yield queued
    states = GaugeMetricFamily("newsletter_subscribers", "Subscribers by state", labels=["state"])
    for state in sorted(set(SUBSCRIBER_STATUSES) | set(tallies.subscribers)):
        states.add_metric([state], tallies.subscribers.get(state, 0))
    yield states
    yield from _issue_families(tallies)
    yield from _writer_families(tallies)


def _issue_families(tallies: Tallies) -> Iterator[Metric]:
    latest = tallies.latest_issue
    if latest is None:
        return
    state = GaugeMetricFamily(
        "newsletter_issue_state",
        "The state of the latest week's issue: 1 for the state it is in",
        labels=["week", "state"],
    )
    for name in ISSUE_STATUSES:
        state.add_metric([latest.week, name], 1 if latest.status == name else 0)
    yield state
    paused = GaugeMetricFamily(
        "newsletter_issue_paused_by",
        "Who paused the latest week's issue (operator, outage, breaker): 1 while paused",
        labels=["week", "paused_by"],
    )
    for who in PausedBy:
        mark = latest.status == "paused" and latest.paused_by == who
        paused.add_metric([latest.week, who], 1 if mark else 0)
    yield paused


def _writer_families(tallies: Tallies) -> Iterator[Metric]:
    writer = tallies.writer
    tokens = CounterMetricFamily(
        "newsletter_writer_tokens",
        "Tokens the writer's model was sent (in) and answered (out)",
        labels=["direction"],
    )
    tokens.add_metric(["in"], writer.tokens_in)
    tokens.add_metric(["out"], writer.tokens_out)
    yield tokens
    requests = CounterMetricFamily(
        "newsletter_writer_requests",
        "Requests the writer made of its model, by outcome",
        labels=["outcome"],
    )
    requests.add_metric(["ok"], writer.requests - writer.failures)
    requests.add_metric(["failed"], writer.failures)
    yield requests


# --- request durations ----------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST"})
# By the first segment of the path; everything else is a page, a static file or "other".
_BY_SEGMENT = {
    "subscribe": "subscribe",
    "confirm": "subscribe",
    "unsubscribe": "subscribe",
    "preferences": "subscribe",
    "approve": "admin",
    "admin": "admin",
    "webhooks": "webhook",
    "metrics": "metrics",
    "healthz": "health",
    "readyz": "health",
}
_STATIC = frozenset({"js", "css", "json", "txt", "xml", "svg", "ico", "png", "jpg", "jpeg", "gif"})


def route_class(path: str) -> str:
    """What a path is, in a few words (feed, page, static, subscribe, admin, webhook,
    health, metrics, other): the label of its timings, never the path itself, whose
    values are unbounded."""
    if path in FEED_PATHS:
        return "feed"
    if path == "/" or path.endswith(".html"):
        return "page"
    segment = path[1:].partition("/")[0]
    known = _BY_SEGMENT.get(segment)
    if known is not None:
        return known
    return "static" if path.rpartition(".")[2] in _STATIC else "other"


class RequestTimer(HttpMiddleware):
    """Times every request into ``histogram`` by method, route class and status class.
    Its cost per request is a clock read at each end and two dictionary look-ups."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        super().__init__(app)
        self.histogram = histogram
        self._children: dict[tuple[str, str, int], Any] = {}

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            method = scope["method"]
            key = (method if method in _METHODS else "other", route_class(scope["path"]), status)
            child = self._children.get(key)
            if child is None:
                child = self.histogram.labels(key[0], key[1], f"{status // 100}xx")
                self._children[key] = child
            child.observe(time.perf_counter() - started)


@dataclass
class Metrics:
    """One app's registry: the database's families and the request timings."""

    registry: CollectorRegistry
    requests: Histogram

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition the client asked for (Prometheus' text format unless it asks
        for OpenMetrics), and its content type. Queries the database: call in a thread."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def new_metrics(monitor: Callable[[], Monitor]) -> Metrics:
    registry = CollectorRegistry()
    requests = Histogram(
        "newsletter_http_request_duration_seconds",
        "Time the web app took to answer, by method, route class and status class",
        ["method", "route", "status"],
        buckets=HTTP_BUCKETS,
        registry=registry,
    )
    registry.register(StoreCollector(monitor))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return Metrics(registry, requests)
