"""/metrics, /healthz and /readyz on real servers: the counts follow a send made by another
process, the token and loopback rules hold, and readiness follows the database (a
PostgreSQL database dropped, a SQLite folder removed) and the scheduler.

Every /metrics answer is read with prometheus_client's own parser, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import POSTGRES_URL, SEEDS, FaultySmtpHandler, need_service, run_newsletter
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from newsletter.app import issues
from newsletter.app.issues import prepare
from newsletter.archive.sources import load_local_archive
from newsletter.config import Config, load_config
from newsletter.select import IsoWeek
from newsletter.store import open_store
from newsletter.web.app import create_app
from newsletter.web.health import PROBE_SECONDS
from newsletter.web.metrics import route_class

KEY = "test-secret-key-of-at-least-32-bytes"
TOKEN = "metrics-token-0123456789abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


def scrape(base: str, **headers: str) -> Samples:
    answer = httpx.get(base + "/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert answer.headers["cache-control"] == "no-store"
    return samples(answer.text)


def ask(app: Any, host: str, *requests: tuple[str, str], **headers: str) -> list[httpx.Response]:
    """``requests`` (method, path) made of ``app`` in this process, as from ``host``."""

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=(host, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.request(m, path, headers=headers) for m, path in requests]

    return asyncio.run(main())


def with_token(cfg: Config, token: str = TOKEN) -> Config:
    return cfg.replace(web=dataclasses.replace(cfg.web, metrics_token=token))


def migrated(cfg: Config) -> Config:
    """``cfg``, its database made (as `newsletter run` and `serve` make it on starting)."""
    open_store(cfg.database_url, cfg.base_dir).close()
    return cfg


# --- the counts ------------------------------------------------------------------------------


def test_the_counts_follow_a_send_made_by_another_process(
    tmp_path: Path,
    smtp_server: tuple[FaultySmtpHandler, int],
    live_server: Callable[..., str],
) -> None:
    """The web app counts what a `newsletter worker` sent: the ledger is the one source,
    so messages, the outbox, the issue's state and the writer's usage move together."""
    handler, port = smtp_server
    config = tmp_path / "config.toml"
    config.write_text(
        f'source = "{SEEDS}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\nretry_base_seconds = 0.01\n',
        encoding="utf-8",
    )
    cfg = load_config(config, env={"NEWSLETTER_SECRET_KEY": KEY})
    store = open_store(cfg.database_url, cfg.base_dir)
    for i in range(3):
        store.add_subscriber(f"reader{i}@example.org")
    base = live_server(build=lambda base: create_app(cfg.replace(base_url=base + "/")))

    before = scrape(base)
    assert value(before, "newsletter_database_up") == 1
    assert value(before, "newsletter_subscribers", state="active") == 3
    assert value(before, "newsletter_messages_total", kind="issue", outcome="sent") == 0
    assert "newsletter_issue_state" not in names(before)  # no issue yet

    # A sign-up queues its confirmation; an approved issue queues its deliveries.
    signup = httpx.post(
        base + "/subscribe", data={"email": "new@example.org"}, headers={"Origin": base}
    )
    assert signup.status_code == 200, signup.text
    row = issues.approve(store, cfg, prepare(cfg, load_local_archive(cfg), IsoWeek(2024, 5)))
    issues.start(store, row)
    issues.pause(store, "2024-W05")
    paused = scrape(base)
    assert value(paused, "newsletter_outbox_queued", kind="issue") == 3
    assert value(paused, "newsletter_outbox_queued", kind="confirm") == 1
    assert value(paused, "newsletter_subscribers", state="pending") == 1
    assert value(paused, "newsletter_issue_state", week="2024-W05", state="paused") == 1
    assert value(paused, "newsletter_issue_state", week="2024-W05", state="sending") == 0
    assert value(paused, "newsletter_issue_paused_by", week="2024-W05", paused_by="operator") == 1
    assert value(paused, "newsletter_issue_paused_by", week="2024-W05", paused_by="outage") == 0

    issues.resume(store, "2024-W05")
    assert value(scrape(base), "newsletter_issue_state", week="2024-W05", state="sending") == 1
    worker = run_newsletter(config, "worker", "--once", "--poll", "0.2", "--allow-insecure-links")
    _out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert len(handler.counts()) == 4  # three readers and the new address
    store.add_writer_usage(
        dt.date(2024, 5, 20), requests=5, failures=1, tokens_in=1200, tokens_out=300
    )

    after = scrape(base)
    assert value(after, "newsletter_messages_total", kind="issue", outcome="sent") == 3
    assert value(after, "newsletter_messages_total", kind="confirm", outcome="sent") == 1
    assert value(after, "newsletter_messages_total", kind="issue", outcome="failed") == 0
    assert value(after, "newsletter_outbox_queued", kind="issue") == 0
    assert value(after, "newsletter_outbox_queued", kind="confirm") == 0
    assert value(after, "newsletter_issue_state", week="2024-W05", state="sent") == 1
    assert value(after, "newsletter_issue_state", week="2024-W05", state="sending") == 0
    assert value(after, "newsletter_issue_paused_by", week="2024-W05", paused_by="operator") == 0
    assert value(after, "newsletter_writer_tokens_total", direction="in") == 1200
    assert value(after, "newsletter_writer_tokens_total", direction="out") == 300
    assert value(after, "newsletter_writer_requests_total", outcome="ok") == 4
    assert value(after, "newsletter_writer_requests_total", outcome="failed") == 1
    # The web app's own requests, by route class: the sign-up was one.
    post = {"method": "POST", "route": "subscribe", "status": "2xx"}
    assert value(after, "newsletter_http_request_duration_seconds_count", **post) == 1
    store.close()


def test_request_durations_have_few_labels_and_each_app_its_own(cfg: Config) -> None:
    """Methods, paths and statuses of any kind come to a few label values; one app's
    requests never show in another's metrics."""
    one, other = create_app(cfg), create_app(cfg)
    feed, page, brew, alive, metrics = ask(
        one,
        "127.0.0.1",
        ("GET", "/feed.atom"),
        ("GET", "/issues/2024-W31.html"),
        ("BREW", "/coffee/pot"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    )
    assert (feed.status_code, page.status_code, brew.status_code) == (503, 404, 405)
    assert alive.status_code == 200
    found = samples(metrics.text)
    count = "newsletter_http_request_duration_seconds_count"
    assert value(found, count, method="GET", route="feed", status="5xx") == 1
    assert value(found, count, method="GET", route="page", status="4xx") == 1
    assert value(found, count, method="other", route="other", status="4xx") == 1
    assert value(found, count, method="GET", route="health", status="2xx") == 1
    elsewhere = samples(ask(other, "127.0.0.1", ("GET", "/metrics"))[0].text)
    assert value(elsewhere, count, method="GET", route="feed", status="5xx") is None
    assert "process_resident_memory_bytes" in names(found)


def test_route_classes() -> None:
    expected = {
        "/feed.atom": "feed",
        "/issues.json": "feed",
        "/": "page",
        "/issues/2024-W31.en.html": "page",
        "/search.js": "static",
        "/search/index.json": "static",
        "/favicon.ico": "static",
        "/subscribe": "subscribe",
        "/confirm/abc": "subscribe",
        "/unsubscribe/abc": "subscribe",
        "/preferences/abc": "subscribe",
        "/approve/abc": "admin",
        "/admin/issues": "admin",
        "/webhooks/bounce": "webhook",
        "/metrics": "metrics",
        "/healthz": "health",
        "/readyz": "health",
        "/wp-login.php": "other",
        "": "other",
    }
    assert {path: route_class(path) for path in expected} == expected


def test_openmetrics_for_a_client_that_asks_for_it(cfg: Config) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    (answer,) = ask(create_app(migrated(cfg)), "127.0.0.1", ("GET", "/metrics"), Accept=accept)
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    found = {family.name for family in openmetrics_families(answer.text)}
    assert {"newsletter_messages", "newsletter_outbox_queued", "newsletter_database_up"} <= found


# --- who may read them -----------------------------------------------------------------------


def test_with_a_token_set_the_metrics_ask_for_it(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    app = create_app(with_token(migrated(cfg)))
    base = live_server(app)
    for authorization in ("", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
        headers = {"Authorization": authorization} if authorization else {}
        refused = httpx.get(base + "/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401, authorization
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.headers["cache-control"] == "no-store"
        assert TOKEN not in refused.text
    assert value(scrape(base, Authorization=f"Bearer {TOKEN}"), "newsletter_database_up") == 1
    assert value(scrape(base, Authorization=f"bearer {TOKEN}"), "newsletter_database_up") == 1
    # From another machine, the token is what counts.
    assert ask(app, "203.0.113.5", ("GET", "/metrics"))[0].status_code == 401
    bearer = f"Bearer {TOKEN}"
    assert ask(app, "203.0.113.5", ("GET", "/metrics"), Authorization=bearer)[0].is_success


def test_without_a_token_only_loopback_clients_may_read_them(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    app = create_app(cfg)
    for host, status in [
        ("127.0.0.1", 200),
        ("127.3.2.1", 200),
        ("::1", 200),
        ("::ffff:127.0.0.1", 200),
        ("203.0.113.5", 403),
        ("10.0.0.7", 403),
        ("::ffff:192.0.2.1", 403),
        ("testclient", 403),
    ]:
        (answer,) = ask(app, host, ("GET", "/metrics"))
        assert answer.status_code == status, host
        assert answer.headers["cache-control"] == "no-store"
    # A request a proxy forwarded comes from further away than its loopback peer, whatever
    # address the proxy says it came from.
    base = live_server(app)
    assert httpx.get(base + "/metrics", timeout=10).status_code == 200
    for header, claimed in [
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-For", "203.0.113.5"),
        ("Forwarded", "for=127.0.0.1"),
        ("X-Real-IP", "127.0.0.1"),
    ]:
        answer = httpx.get(base + "/metrics", headers={header: claimed}, timeout=10)
        assert answer.status_code == 403, header
        assert "NEWSLETTER_METRICS_TOKEN" in answer.text


# --- health and readiness --------------------------------------------------------------------


def _health(base: str) -> tuple[int, int, str]:
    alive = httpx.get(base + "/healthz", timeout=10)
    ready = httpx.get(base + "/readyz", timeout=10)
    for answer in (alive, ready):
        assert answer.headers["cache-control"] == "no-store"
    return alive.status_code, ready.status_code, ready.text


def test_readiness_follows_the_scheduler(cfg: Config, live_server: Callable[..., str]) -> None:
    running = [True]
    base = live_server(create_app(migrated(cfg), running={"scheduler": lambda: running[0]}))
    assert _health(base) == (200, 200, "ready\n")
    running[0] = False
    assert _health(base) == (200, 503, "not ready: the scheduler is not running\n")


def test_readiness_follows_the_senders_thread(cfg: Config, live_server: Callable[..., str]) -> None:
    """A process whose sender has stopped queues confirmations nobody sends: it is not
    ready, although its pages and its database still answer."""
    from newsletter.service.processes import SenderThread

    store = open_store(cfg.database_url, cfg.base_dir)
    sender = SenderThread(cfg, store, b"k" * 32)
    try:
        base = live_server(create_app(cfg, sender.wake, running={"sender": sender.running}))
        assert _health(base) == (200, 503, "not ready: the sender is not running\n")
        sender.start()
        assert _health(base) == (200, 200, "ready\n")
        sender.stop()
        assert _health(base) == (200, 503, "not ready: the sender is not running\n")
    finally:
        if sender.running():
            sender.stop()
        store.close()


def _one_line_each(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("newsletter.web") and r.levelno >= logging.WARNING
    ]


def test_a_sqlite_folder_removed_makes_it_unready(
    tmp_path: Path,
    cfg: Config,
    live_server: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The process still lives; readiness and the database's families say the database
    is gone, in one log line each however often they are asked; /metrics still answers."""
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = cfg.replace(database_url=f"sqlite:///{folder / 'newsletter.db'}")
    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber("reader@example.org")
    store.close()
    base = live_server(create_app(cfg))
    assert _health(base) == (200, 200, "ready\n")
    assert value(scrape(base), "newsletter_subscribers", state="active") == 1

    caplog.set_level(logging.INFO, logger="newsletter")
    shutil.rmtree(folder)
    for _ in range(3):
        assert _health(base) == (200, 503, "not ready: the database does not answer\n")
        gone = scrape(base)
        assert value(gone, "newsletter_database_up") == 0
        assert not names(gone) & {"newsletter_messages_total", "newsletter_subscribers"}
        assert "newsletter_http_request_duration_seconds_count" in names(gone)
    lines = _one_line_each(caplog)
    assert len(lines) == 2, lines
    assert all("unable to open database file" in line for line in lines), lines
    assert not (tmp_path / "data").exists()  # asking never made a new, empty database

    folder.mkdir()
    open_store(cfg.database_url, cfg.base_dir).close()
    assert _health(base) == (200, 200, "ready\n")
    assert value(scrape(base), "newsletter_database_up") == 1


@pytest.fixture
def own_postgres_database() -> Iterator[str]:
    """A database of its own on the PostgreSQL server, which the test may drop."""
    name = f"newsletter_metrics_{uuid.uuid4().hex[:10]}"

    def as_postgres(command: str) -> Any:
        try:
            return subprocess.run(
                ["su", "postgres", "-c", command],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError as exc:
            need_service("PostgreSQL", f"su postgres: {exc}")

    created = as_postgres(f"createdb -O newsletter {name}")
    if created.returncode != 0:
        need_service("PostgreSQL", f"createdb: {created.stderr.strip()}")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        as_postgres(f"dropdb --if-exists --force {name}")


def test_a_postgresql_database_dropped_makes_it_unready(
    own_postgres_database: str, cfg: Config, live_server: Callable[..., str]
) -> None:
    cfg = cfg.replace(database_url=own_postgres_database)
    store = open_store(cfg.database_url, cfg.base_dir)
    store.add_subscriber("reader@example.org")
    store.close()
    base = live_server(create_app(cfg))
    assert _health(base) == (200, 200, "ready\n")
    assert value(scrape(base), "newsletter_subscribers", state="active") == 1

    name = own_postgres_database.rsplit("/", 1)[1]
    dropped = subprocess.run(
        ["su", "postgres", "-c", f"dropdb --force {name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dropped.returncode == 0, dropped.stderr
    assert _health(base) == (200, 503, "not ready: the database does not answer\n")
    gone = scrape(base)
    assert value(gone, "newsletter_database_up") == 0
    assert "newsletter_messages_total" not in names(gone)


def test_a_database_server_that_does_not_answer_is_not_waited_for(
    silent_port: int, cfg: Config, live_server: Callable[..., str]
) -> None:
    """A server that neither accepts nor refuses: readiness says so within its time limit,
    and /metrics answers without the database's families."""
    import time

    url = f"postgresql+psycopg://newsletter:newsletter@127.0.0.1:{silent_port}/newsletter"
    base = live_server(create_app(cfg.replace(database_url=url)))
    started = time.monotonic()
    assert _health(base) == (200, 503, "not ready: the database does not answer\n")
    assert time.monotonic() - started < PROBE_SECONDS + 2
    assert value(scrape(base), "newsletter_database_up") == 0
