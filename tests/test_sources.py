"""Digest sources: a URL template against a real HTTP server on loopback, and the archive."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SEEDS

from newsletter.archive.sources import FetchOptions, fetch_digest, load_local_archive, rejected_path
from newsletter.config import Config, ConfigError, load_config
from newsletter.service.scheduler import JobContext, run_job
from newsletter.store import open_store

DAY = dt.date(2024, 5, 20)
SEOUL = dt.timezone(dt.timedelta(hours=9))
DIGEST = next(p for p in sorted(SEEDS.iterdir()) if b"(2024-05-20)" in p.read_bytes()).read_bytes()
FAST = FetchOptions(attempts=3, backoff=0.01, timeout=0.5, connect_timeout=0.5)


class Script:
    """What the server answers, one entry per request: a status and a body, or a delay."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes, float]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def next(self, path: str) -> tuple[int, bytes, float]:
        with self.lock:
            self.paths.append(path)
            return self.answers.pop(0) if self.answers else (404, b"", 0.0)


@pytest.fixture
def digest_server() -> Iterator[tuple[Script, str]]:
    """A real ``http.server`` on a free loopback port: (script, URL template)."""
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, delay = script.next(self.path)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield script, f"http://127.0.0.1:{port}/paper_logs/{{date:%Y/%m/%d}}.md"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _url_cfg(tmp_path: Path, template: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return load_config(path, env={}, overrides={"source": template})


def test_404_then_500_then_the_digest_through_the_daily_job(
    digest_server: tuple[Script, str], tmp_path: Path
) -> None:
    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    store = open_store(cfg.database_url, cfg.base_dir)
    ctx = JobContext(cfg, store, b"key", asyncio.Event(), fetch=FAST)

    script.answers = [(404, b"not yet", 0.0)]
    first = asyncio.run(run_job(ctx, "daily", dt.datetime(2024, 5, 20, 9, 0, tzinfo=SEOUL)))
    assert first is not None and first.status == "waiting"
    assert "not published yet (404)" in first.detail
    assert first.retry_at == dt.datetime(2024, 5, 20, 9, 30, tzinfo=SEOUL)
    assert not cfg.archive_path.exists()

    # Not before the retry time, even when asked.
    assert asyncio.run(run_job(ctx, "daily", dt.datetime(2024, 5, 20, 9, 10, tzinfo=SEOUL))) is None

    script.answers = [(500, b"oops", 0.0), (200, DIGEST, 0.0)]
    second = asyncio.run(run_job(ctx, "daily", dt.datetime(2024, 5, 20, 9, 30, tzinfo=SEOUL)))
    assert second is not None and second.status == "done", second
    assert script.paths == ["/paper_logs/2024/05/20.md"] * 3
    stored = cfg.archive_path / "2024-05-20.md"
    assert stored.read_bytes() == DIGEST
    assert "2024-05-20" in (cfg.public_path / "feed.atom").read_text(encoding="utf-8")
    (run,) = store.list_job_runs("daily")
    assert (run.status, run.attempts) == ("done", 2)
    store.close()


def test_the_archive_outlives_the_source(digest_server: tuple[Script, str], tmp_path: Path) -> None:
    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    script.answers = [(200, DIGEST, 0.0)]
    result = asyncio.run(fetch_digest(cfg, DAY, options=FAST))
    assert result.outcome == "stored"
    script.answers = [(503, b"", 0.0)] * 10  # the source is down from now on
    archive = load_local_archive(cfg)
    assert [d.date for d in archive.digests] == [DAY]
    assert not archive.problems


def test_timeouts_and_connection_errors_are_retried(
    digest_server: tuple[Script, str], tmp_path: Path
) -> None:
    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    script.answers = [(200, DIGEST, 1.5), (200, DIGEST, 0.0)]
    result = asyncio.run(fetch_digest(cfg, DAY, options=FAST))
    assert result.outcome == "stored"
    assert len(script.paths) == 2

    closed = _url_cfg(tmp_path, "http://127.0.0.1:9/{date:%Y-%m-%d}.md")  # discard port: refused
    down = asyncio.run(fetch_digest(closed, DAY, options=FAST))
    assert down.outcome == "unavailable"
    assert "ConnectError" in down.detail


def test_server_errors_give_up_after_the_attempts(
    digest_server: tuple[Script, str], tmp_path: Path
) -> None:
    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    script.answers = [(502, b"", 0.0)] * 3
    result = asyncio.run(fetch_digest(cfg, DAY, options=FAST))
    assert (result.outcome, len(script.paths)) == ("unavailable", 3)
    assert result.detail.endswith("HTTP 502")
    # A client error is not retried within the fetch; the schedule tries again later.
    script.answers = [(403, b"", 0.0)]
    assert asyncio.run(fetch_digest(cfg, DAY, options=FAST)).outcome == "unavailable"
    assert len(script.paths) == 4


def test_a_body_that_does_not_parse_is_kept_aside_with_the_error(
    digest_server: tuple[Script, str], tmp_path: Path
) -> None:
    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    script.answers = [(200, b"<html>Service temporarily unavailable</html>\n", 0.0)]
    result = asyncio.run(fetch_digest(cfg, DAY, options=FAST))
    assert result.outcome == "rejected"
    assert "no '## Daily Papers (YYYY-MM-DD)' heading" in result.detail
    assert result.path is not None and result.path.parent == rejected_path(cfg)
    assert result.path.read_bytes().startswith(b"<html>")
    error = result.path.with_name(result.path.name.replace(".md", ".error.txt"))
    assert "no '## Daily Papers" in error.read_text(encoding="utf-8")
    assert not cfg.archive_path.exists()

    # A readable digest of another day is not that day's digest either.
    script.answers = [(200, DIGEST, 0.0)]
    other = asyncio.run(fetch_digest(cfg, dt.date(2024, 5, 21), options=FAST))
    assert other.outcome == "rejected"
    assert "days found: 2024-05-20" in other.detail
    assert load_local_archive(cfg).digests == ()


def test_the_archive_merges_the_source_folder_and_the_stored_digests(
    cfg: Config, tmp_path: Path
) -> None:
    import shutil

    own = tmp_path / "digests"  # a folder of the site's own, not the shipped samples
    shutil.copytree(SEEDS, own)
    cfg = cfg.replace(source=str(own))
    stored = tmp_path / "archive"
    stored.mkdir()
    (stored / "2024-08-01.md").write_bytes(DIGEST.replace(b"(2024-05-20)", b"(2024-08-01)"))
    dates = [str(d.date) for d in load_local_archive(cfg).digests]
    assert dates == ["2024-01-02", "2024-02-02", "2024-05-20", "2024-07-31", "2024-08-01"]


def test_the_shipped_samples_are_read_only_until_the_site_has_a_digest_of_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from newsletter.app.site import start
    from newsletter.archive.sources import archive_folders, local_catalog, reads_samples

    caplog.set_level("INFO", logger="newsletter.archive.sources")
    made = start(tmp_path / "site")  # what `newsletter init` makes
    cfg = load_config(made.settings, env={})
    assert reads_samples(cfg)
    samples = [str(d) for d in local_catalog(cfg).dates()]
    assert samples == ["2024-01-02", "2024-02-02", "2024-05-20", "2024-07-31"]
    assert archive_folders(cfg) == [cfg.source_path, made.archive]
    # Not a digest: the samples still stand in.
    (made.archive / "notes.txt").write_text("to do\n", encoding="utf-8")
    assert [str(d) for d in local_catalog(cfg).dates()] == samples

    (made.archive / "2025-05-12.md").write_bytes(DIGEST.replace(b"(2024-05-20)", b"(2025-05-12)"))
    catalog = local_catalog(cfg)
    assert [str(d) for d in catalog.dates()] == ["2025-05-12"]
    assert not any(e.path.startswith(str(cfg.source_path)) for e in catalog.entries)
    assert archive_folders(cfg) == [made.archive]
    assert [str(d.date) for d in load_local_archive(cfg).digests] == ["2025-05-12"]
    assert caplog.messages == [
        f"reading digests from {cfg.source_path} and {made.archive} (the shipped samples "
        f"stand in until {made.archive} holds a digest)",
        f"reading digests from {made.archive}; the shipped samples in {cfg.source_path} are "
        "left out from now on",
    ]


def test_a_url_template_is_checked_when_the_settings_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source"):
        _url_cfg(tmp_path, "https://example.org/{day:%Y}.md")
    assert _url_cfg(tmp_path, "https://example.org/{date:%Y/%m/%d}.md").source_is_url


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_fetched_digest_is_stored_private_whatever_the_umask(
    digest_server: tuple[Script, str], tmp_path: Path, umask: int
) -> None:
    """The archive is private (it is the project's own material): 0600 even under a
    permissive umask, and never wider than it under a strict one."""
    import os
    import stat

    script, template = digest_server
    cfg = _url_cfg(tmp_path, template)
    script.answers = [(200, DIGEST, 0.0)]
    previous = os.umask(umask)
    try:
        result = asyncio.run(fetch_digest(cfg, DAY, options=FAST))
    finally:
        os.umask(previous)
    assert result.outcome == "stored" and result.path is not None
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    # A body that does not parse is kept aside just as privately.
    script.answers = [(200, b"<html>not a digest</html>", 0.0)]
    previous = os.umask(umask)
    try:
        rejected = asyncio.run(fetch_digest(cfg, DAY + dt.timedelta(days=1), options=FAST))
    finally:
        os.umask(previous)
    assert rejected.outcome == "rejected"
    kept = sorted(rejected_path(cfg).iterdir())
    assert kept and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
