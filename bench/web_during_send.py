"""Is the web app of ``newsletter run`` responsive while it sends? ``/feed.atom`` latency
with no send, and during a send of the 2024-W05 issue to N subscribers into the Maildir
outbox (the mode that used to freeze the web app), measured side by side in one run.

Starts ``newsletter run`` in a child process on a temporary folder (the seeds as the
archive, SQLite, Maildir outbox), requests ``/feed.atom`` back to back on one keep-alive
connection for a while with no send, then approves the issue (as the Approve button
does) and keeps requesting until the whole list is sent. Prints p50, p99 and the worst
latency of each phase and their ratio; the target is p99 under 100 ms during the send.

    .venv/bin/python bench/web_during_send.py [--subscribers 5000] [--idle 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.app import delivery  # noqa: E402
from newsletter.archive.sources import load_local_archive  # noqa: E402
from newsletter.config import load_config  # noqa: E402
from newsletter.select import IsoWeek  # noqa: E402
from newsletter.store import open_store, subscribers  # noqa: E402

WEEK = IsoWeek(2024, 5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def _hammer(client: httpx.Client, until: object) -> list[float]:
    samples = []
    while not until():  # type: ignore[operator]
        started = time.perf_counter()
        response = client.get("/feed.atom")
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds measured with no send")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    config = folder / "config.toml"
    port = _free_port()
    config.write_text(
        f'source = "{ROOT / "seeds"}"\nbase_url = "http://127.0.0.1:{port}/"\n', encoding="utf-8"
    )
    cfg = load_config(config, env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    now = store_now()
    with store.engine.begin() as conn:
        conn.execute(
            subscribers.insert(),
            [
                {
                    "email": f"reader{i:06d}@example.org",
                    "email_key": f"reader{i:06d}@example.org",
                    "name": f"독자 {i}",
                    "lang": "en" if i % 4 == 0 else "ko",
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now,
                }
                for i in range(args.subscribers)
            ],
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET_KEY"] = "bench-secret-key-bench-secret-key"
    log = (folder / "run.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "run", "--port", str(port)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/feed.atom").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or service.poll() is not None:
                    raise SystemExit(f"the service did not start: see {folder / 'run.log'}")
                time.sleep(0.1)
            idle_end = time.monotonic() + args.idle
            idle = _hammer(client, lambda: time.monotonic() >= idle_end)

            row = delivery.ready_to_send(cfg, store, lambda: load_local_archive(cfg), WEEK)
            started = time.monotonic()
            sent_at: list[float] = []

            def finished() -> bool:
                current = store.get_issue(str(WEEK))
                if current.status == "sent":
                    sent_at.append(time.monotonic())
                    return True
                return time.monotonic() - started > 600

            during = _hammer(client, finished)
        counts = store.counts(row.id)
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()
        store.close()

    if not sent_at:
        raise SystemExit("the send did not finish within 10 minutes")
    elapsed = sent_at[0] - started
    i50, i99, imax = _percentiles(idle)
    d50, d99, dmax = _percentiles(during)
    print(
        f"subscribers: {args.subscribers}, sent {counts['sent']} in {elapsed:.1f} s "
        f"({counts['sent'] / elapsed:.0f}/s, Maildir outbox, in `newsletter run`)"
    )
    print(
        f"/feed.atom with no send:  {len(idle):6d} requests  p50 {i50:6.1f} ms  "
        f"p99 {i99:6.1f} ms  max {imax:6.1f} ms"
    )
    print(
        f"/feed.atom during send:   {len(during):6d} requests  p50 {d50:6.1f} ms  "
        f"p99 {d99:6.1f} ms  max {dmax:6.1f} ms"
    )
    print(
        f"p99 during / p99 idle: {d99 / i99:.1f}x; target p99 during send < 100 ms: "
        f"{'met' if d99 < 100 else 'MISSED'}"
    )


def store_now() -> object:
    import datetime as dt

    return dt.datetime.now(dt.UTC)


if __name__ == "__main__":
    main()
