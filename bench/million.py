"""A million subscribers: the send's peak memory and rate into smtp-sink, on SQLite and on
PostgreSQL side by side.

For each database: a fresh one with ``--subscribers`` active subscribers (a third of them
English), built in bulk (``executemany`` in batches of 50,000 on SQLite, ``COPY`` on
PostgreSQL), and the 2024-W05 issue rendered from the seeds and approved (frozen), none
of it timed. Then a child process, the one measured, does what ``newsletter send`` does
after the approval: the fan-out (``issues.start``: one queued delivery per subscriber,
made in the database) and the send (``send_issue``: claims, leases, every ledger write)
with ``smtp.concurrency`` 4 into Postfix's smtp-sink on loopback. Its peak RSS (VmHWM,
and ``wait4``'s ``ru_maxrss``) is measured after the fan-out and at the end, against the
target of 150 MB.

``--messages N`` stops the send after N messages (the stop of a signal: no new claim,
what is in flight is finished and recorded). The fan-out always covers every subscriber,
and the claims read the same million-row ledger whatever N, so a capped run measures the
phases whose memory could grow with the list; what a message costs does not grow with
it. Sending all of a million takes minutes at the rates of a 2-core machine.

RSS figures do not depend on the machine's load; the rates do (a busy neighbour on a
shared machine slows them), so compare rates only between runs on a quiet machine.

Needs Postfix's /usr/sbin/smtp-sink, and for PostgreSQL a server: the database is
$NEWSLETTER_TEST_POSTGRES_URL or the tests' default, in a schema of its own (``million``,
dropped and made again), so the tests that empty the public schema are left alone.

    .venv/bin/python bench/million.py [--subscribers 1000000] [--messages N]
                                      [--sqlite] [--postgres] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# The parent process imports nothing more: a child's peak RSS as the kernel counts it
# (wait4) starts from its parent's at the spawn, so the parent stays small, and the
# database is built and the send measured in processes of their own.

TARGET_MB = 150
SCHEMA = "million"
POSTGRES_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL",
    "postgresql+psycopg://newsletter:newsletter@127.0.0.1:5432/newsletter_test",
)
BATCH = 50_000
COLUMNS = ("email", "email_key", "name", "lang", "status", "created_at", "updated_at")
# How often the sending process notes its resident set, in messages.
SAMPLE_EVERY = 100_000


def postgres_url() -> str:
    """The tests' database, with the search path on this benchmark's own schema."""
    import sqlalchemy as sa

    url = sa.engine.make_url(POSTGRES_URL)
    return url.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(
        hide_password=False
    )


def schema(*, create: bool) -> None:
    """Drop this benchmark's schema, and make it again with ``create``."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop schema if exists {SCHEMA} cascade"))
            if create:
                conn.execute(sa.text(f"create schema {SCHEMA}"))
    finally:
        engine.dispose()


def rows(count: int) -> Iterator[tuple[Any, ...]]:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        email = f"reader{i:07d}@example.org"
        yield (email, email, f"독자 {i}", "en" if i % 3 == 0 else "ko", "active", now, now)


def fill_sqlite(store: Any, count: int) -> None:
    """``executemany`` of plain tuples, a batch per transaction."""
    marks = ", ".join("?" * len(COLUMNS))
    sql = f"INSERT INTO subscribers ({', '.join(COLUMNS)}) VALUES ({marks})"
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        batch: list[tuple[Any, ...]] = []
        for row in rows(count):
            # As SQLAlchemy writes a DateTime into SQLite: text, without the zone.
            stamp = row[5].strftime("%Y-%m-%d %H:%M:%S.%f")
            batch.append((*row[:5], stamp, stamp))
            if len(batch) == BATCH:
                cursor.executemany(sql, batch)
                raw.commit()
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
            raw.commit()
        cursor.close()
    finally:
        raw.close()


def fill_postgres(store: Any, count: int) -> None:
    """One ``COPY`` through psycopg, then ANALYZE, as a restore would."""
    raw = store.engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY subscribers ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows(count):
                    copy.write_row(row)
            cursor.execute("ANALYZE subscribers")
        conn.commit()
    finally:
        raw.close()


def build(db: str, folder: Path, count: int) -> None:
    """Runs in its own process: a database of ``count`` subscribers with the week's issue
    approved; prints its URL and the seconds the subscribers took, as JSON."""
    from send import WEEK, bench_config

    from newsletter.app import issues
    from newsletter.app.delivery import prepare
    from newsletter.archive.digest import load_archive
    from newsletter.store import open_store

    if db == "postgres":
        schema(create=True)
        url = postgres_url()
    else:
        url = f"sqlite:///{folder / 'million.db'}"
    cfg = bench_config(folder, 0, 1).replace(database_url=url)
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        started = time.perf_counter()
        (fill_postgres if db == "postgres" else fill_sqlite)(store, count)
        seconds = time.perf_counter() - started
        issues.approve(store, cfg, prepare(cfg, load_archive(ROOT / "seeds"), WEEK))
    finally:
        store.close()
    print(json.dumps({"url": url, "built": seconds}))


def child(url: str, messages: int, concurrency: int, folder: Path) -> None:
    """Runs in its own process, the one measured: the fan-out and the send into a sink of
    its own, then JSON on standard output."""
    import asyncio

    from send import KEY, WEEK, bench_config, start_sink, vm_kb

    from newsletter.app import issues
    from newsletter.app.delivery import send_issue
    from newsletter.store import open_store

    opened = vm_kb("VmHWM")
    sink, port = start_sink()
    cfg = bench_config(folder, port, concurrency).replace(database_url=url)
    store = open_store(cfg.database_url, cfg.base_dir)
    row = store.get_issue(str(WEEK))
    assert row is not None, "the issue was not approved"
    started = time.perf_counter()
    row = issues.start(store, row)
    fan_out = time.perf_counter() - started
    after_fan_out = vm_kb("VmHWM")
    samples: list[tuple[int, int, float]] = []

    async def main() -> Counter[str]:
        stop = asyncio.Event()

        def progress(tally: Counter[str], _total: int) -> None:
            if tally["sent"] % SAMPLE_EVERY == 0 and tally["sent"] > len(samples) * SAMPLE_EVERY:
                samples.append((tally["sent"], vm_kb("VmRSS"), time.perf_counter() - started))
            if messages and tally["sent"] >= messages:
                stop.set()

        report = await send_issue(cfg, store, row, KEY, stop=stop, progress=progress)
        return report.this_run

    started = time.perf_counter()
    try:
        tally = asyncio.run(main())
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    seconds = time.perf_counter() - started
    store.close()
    result = {
        "fan_out": fan_out,
        "seconds": seconds,
        "sent": tally["sent"],
        "opened_kb": opened,
        "fan_out_kb": after_fan_out,
        "peak_kb": vm_kb("VmHWM"),
        "samples": samples,
    }
    print(json.dumps(result))


def run(command: list[str]) -> tuple[dict[str, Any], int]:
    """A child process's JSON answer, and its peak RSS as ``wait4`` counts it (KiB)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command[2:4]} failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss


def measure(db: str, count: int, messages: int, concurrency: int) -> dict[str, Any]:
    """Build, then run and measure the sending process; returns its figures."""
    me = [sys.executable, __file__]
    with tempfile.TemporaryDirectory(prefix=f"bench-million-{db}-") as tmp:
        try:
            built, _ = run([*me, "--build", db, tmp, str(count)])
            print(f"  {db}: {count:,} subscribers in {built['built']:.1f}s, sending…", flush=True)
            found, maxrss = run(
                [*me, "--child", built["url"], str(messages), str(concurrency), tmp]
            )
        finally:
            if db == "postgres":
                schema(create=False)
    return {"db": db, **found, "built": built["built"], "maxrss_kb": maxrss}


def report(count: int, concurrency: int, results: list[dict[str, Any]]) -> None:
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL"}

    def line(label: str, show: Any) -> None:
        print(f"{label:<36}" + "".join(f"{show(r):>16}" for r in results))

    def mb(kb: int) -> str:
        return f"{kb / 1024:.0f} MB"

    print(f"\n{count:,} subscribers, smtp.concurrency {concurrency}, into smtp-sink")
    line("", lambda r: names[r["db"]])
    line("subscribers built (untimed)", lambda r: f"{r['built']:.1f} s")
    line("fan-out (issues.start)", lambda r: f"{r['fan_out']:.1f} s")
    line("messages sent", lambda r: f"{r['sent']:,}")
    line("send rate (depends on load)", lambda r: f"{r['sent'] / r['seconds']:,.0f} msg/s")
    line("peak RSS after imports", lambda r: mb(r["opened_kb"]))
    line("peak RSS after the fan-out", lambda r: mb(r["fan_out_kb"]))
    line("peak RSS of the send (VmHWM)", lambda r: mb(r["peak_kb"]))
    line("peak RSS of the process (wait4)", lambda r: mb(r["maxrss_kb"]))
    peak = {r["db"]: max(r["peak_kb"], r["maxrss_kb"]) for r in results}
    line(
        f"target < {TARGET_MB} MB", lambda r: "PASS" if peak[r["db"]] < TARGET_MB * 1024 else "MISS"
    )
    for r in results:
        if r["samples"]:
            print(f"{names[r['db']]} while sending (messages: RSS, rate since the last line):")
            last = (0, 0, 0.0)
            for sent, kb, at in r["samples"]:
                rate = (sent - last[0]) / max(at - last[2], 1e-9)
                print(f"  {sent:>9,}: {mb(kb):>7}, {rate:6,.0f} msg/s")
                last = (sent, kb, at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument(
        "--messages", type=int, default=0, help="stop the send after this many (default: all)"
    )
    parser.add_argument("--sqlite", action="store_true", help="SQLite (default: both)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (default: both)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        db, folder, count = args.build
        build(db, Path(folder), int(count))
        return
    if args.child:
        url, messages, concurrency, folder = args.child
        child(url, int(messages), int(concurrency), Path(folder))
        return
    chosen = [db for db in ("sqlite", "postgres") if getattr(args, db)] or ["sqlite", "postgres"]
    results = [measure(db, args.subscribers, args.messages, args.concurrency) for db in chosen]
    report(args.subscribers, args.concurrency, results)


if __name__ == "__main__":
    main()
