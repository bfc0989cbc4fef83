"""Can the subscription form tell a known address from an unknown one by its answer time?

Starts ``newsletter serve`` on a temporary folder (SQLite, Maildir outbox) with 200
active subscribers, then posts the form for those 200 known addresses and 200 unknown
ones, interleaved, each address once, and prints the median and p90 answer time of each
group and their ratio. The target: medians within 10% of each other.

    .venv/bin/python bench/subscribe_timing.py [--addresses 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
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

from newsletter.config import load_config  # noqa: E402
from newsletter.store import open_store, subscribers  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-subscribe-"))
    port = _free_port()
    config = folder / "config.toml"
    config.write_text(
        f'source = "{ROOT / "seeds"}"\nbase_url = "http://127.0.0.1:{port}/"\n'
        f"[web]\nsubscribe_per_minute = 1000000\n",
        encoding="utf-8",
    )
    cfg = load_config(config, env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    now = dt.datetime.now(dt.UTC)
    known = [f"known{i:04d}@example.org" for i in range(args.addresses)]
    unknown = [f"new{i:04d}@example.org" for i in range(args.addresses)]
    with store.engine.begin() as conn:
        conn.execute(
            subscribers.insert(),
            [
                {
                    "email": a,
                    "email_key": a,
                    "name": "",
                    "lang": "ko",
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                    "confirmed_at": now,
                }
                for a in known
            ],
        )
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_SECRET_KEY"] = "bench-secret-key-bench-secret-key"
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/subscribe")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit(
                            f"the server did not start: see {folder}/serve.log"
                        ) from None
                    time.sleep(0.1)
            for _ in range(20):  # warm up
                client.get("/subscribe")
            for a, b in zip(known, unknown, strict=True):
                for group, address in (("known", a), ("unknown", b)):
                    started = time.perf_counter()
                    response = client.post("/subscribe", data={"email": address})
                    times[group].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.status_code
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    medians = {g: statistics.median(t) for g, t in times.items()}
    for group, samples in times.items():
        p90 = sorted(samples)[int(len(samples) * 0.9)]
        print(f"{group:8s} {len(samples)} posts: median {medians[group]:.2f} ms, p90 {p90:.2f} ms")
    ratio = medians["known"] / medians["unknown"]
    print(
        f"median known / unknown: {ratio:.3f}; target within 10%: "
        f"{'met' if abs(ratio - 1) <= 0.10 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
