"""Ten years of digests: `newsletter run` ready cold and warm, a daily job, peak memory.

    python bench/scale.py [DAYS]

Builds a synthetic archive of DAYS digests (default 3,650: about 58,000 papers with every
format variant, bench/synthetic.py) and measures, in processes of their own:

- `newsletter run` ready (GET /feed.atom answers 200) with no cache and no public folder
  (cold), then again with both in place (warm); its peak RSS (VmHWM) over each life,
  the cold one including the first build of every week's web copies;
- the daily job of the day after the archive, its digest added to the folder
  (`newsletter tick -v --now ...`: the job's own time, from its `started` and `done` log
  lines, and the whole process).

The archive ends the day before yesterday (Seoul time), so that every week before this
one is finished for `newsletter run`, which runs on the real clock: the cold start's
background build covers the whole archive, as it would on a real service, and the daily
job renders only what the new day changed. A one-minute daily deadline keeps the
service's own catch-up from running a daily job while it is measured.

Targets: ready warm < 0.5 s, cold < 5 s; the daily job < 0.5 s; peak RSS < 250 MB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import build

NEWSLETTER = [sys.executable, "-m", "newsletter"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_peak_mb(pid: int, peak: float) -> float:
    """The larger of ``peak`` and the peak RSS of each live child of ``pid`` (the worker
    processes of a cold scan)."""
    kids: list[str] = []
    # A child belongs to the thread that started it (the scan runs in a worker thread).
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids.extend(task.read_text().split())
    for kid in kids:
        with contextlib.suppress(OSError):  # ended meanwhile
            peak = max(peak, peak_rss_mb(int(kid)))
    return peak


def run_life(
    folder: Path, port: int, *, settle: str | None = None
) -> tuple[float, float, float, float]:
    """Start `newsletter run`; seconds until the feed answers, seconds until ``settle``
    appears in the log (or the feed, when None), the peak RSS in MB before stopping, and
    the largest peak RSS of a child process seen meanwhile."""
    log = folder / "run.log"
    log.write_bytes(b"")
    started = time.perf_counter()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*NEWSLETTER, "run"], cwd=folder, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready = settled = kids = 0.0
        with httpx.Client(timeout=5) as client:
            while not ready:
                kids = children_peak_mb(process.pid, kids)
                if process.poll() is not None:
                    raise SystemExit(log.read_text(encoding="utf-8")[-3000:])
                try:
                    if client.get(f"http://127.0.0.1:{port}/feed.atom").status_code == 200:
                        ready = time.perf_counter() - started
                except httpx.TransportError:
                    time.sleep(0.01)
        while settle is not None and not settled:
            kids = children_peak_mb(process.pid, kids)
            if settle in log.read_text(encoding="utf-8"):
                settled = time.perf_counter() - started
            elif time.perf_counter() - started > 600:
                raise SystemExit("the start-up work did not finish in 10 minutes")
            else:
                time.sleep(0.05)
        time.sleep(0.5)  # let the start-up catch-up run
        rss = peak_rss_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    return ready, settled or ready, rss, kids


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 3650
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "digests"
        folder.mkdir()
        today = dt.datetime.now(ZoneInfo("Asia/Seoul")).date()
        start = today - dt.timedelta(days=days + 1)
        files = build(days + 1, start=start)
        names = sorted(files)
        for name in names[:-1]:
            (folder / name).write_text(files[name], encoding="utf-8")
        size = sum(p.stat().st_size for p in folder.iterdir())
        papers = sum(text.count("\n### [") + text.startswith("### [") for text in files.values())
        port = free_port()
        (root / "config.toml").write_text(
            f'source = "{folder}"\nbase_url = "http://127.0.0.1:{port}/"\n'
            f'[web]\nport = {port}\n[schedule]\ndaily_days = "mon-sun"\n'
            'daily_at = "09:05"\ndaily_deadline = "09:06"\n',
            encoding="utf-8",
        )
        os.environ["NEWSLETTER_SECRET_KEY"] = "bench-secret-key-" + "x" * 32
        print(f"archive: {days} files, {size / 1e6:.0f} MB, ~{papers} paper blocks")

        cold, built, cold_rss, worker_rss = run_life(root, port, settle="rendered ")
        pages = len(list((root / "public" / "issues").glob("*.html")))
        finished = {
            (start + dt.timedelta(days=d)).isocalendar()[:2]
            for d in range(days)
            if start + dt.timedelta(days=d + 7 - (start + dt.timedelta(days=d)).isoweekday())
            < today
        }
        warm, _, warm_rss, _ = run_life(root, port)
        warm2, _, warm2_rss, _ = run_life(root, port)

        # The next day's digest arrives; its daily job runs at 09:05 Seoul time.
        last = names[-1]
        (folder / last).write_text(files[last], encoding="utf-8")
        day = start + dt.timedelta(days=days)
        now = f"{day.isoformat()}T09:05+09:00"
        started = time.perf_counter()
        tick = subprocess.run(
            [*NEWSLETTER, "tick", "-v", "--now", now], cwd=root, capture_output=True, text=True
        )
        tick_s = time.perf_counter() - started
        if tick.returncode != 0 or "daily: done" not in tick.stdout:
            raise SystemExit(tick.stdout[-1000:] + tick.stderr[-3000:])
        # time=2033-05-30T09:05:00.123+00:00 level=info logger=newsletter.service.scheduler
        #   msg="job daily started for ..." (newsletter.logs's one format)
        stamps = [
            dt.datetime.fromisoformat(m)
            for m in re.findall(
                r"^time=(\S+) level=info logger=newsletter\.service\.scheduler "
                r'msg="job daily (?:started|for \S+: done)',
                tick.stderr,
                re.M,
            )
        ]
        if len(stamps) != 2:
            raise SystemExit("no `job daily started` and `done` lines:\n" + tick.stderr[-3000:])
        job_s = (stamps[1] - stamps[0]).total_seconds()

    rss = max(cold_rss, warm_rss, warm2_rss)
    print(f"run ready, cold (no cache, no public/): {cold:6.2f} s   target < 5 s: {_ok(cold < 5)}")
    print(
        f"  every week's web copy built ({pages} pages of {2 * len(finished)}) after: {built:6.2f} s, in the background"
    )
    print(
        f"run ready, warm:                       {min(warm, warm2):6.2f} s   target < 0.5 s: {_ok(min(warm, warm2) < 0.5)}"
    )
    print(
        f"daily job adding one digest:           {job_s:6.2f} s   target < 0.5 s: {_ok(job_s < 0.5)}"
    )
    print(f"  (the whole `newsletter tick` process: {tick_s:.2f} s)")
    print(
        f"peak RSS of `newsletter run`: cold {cold_rss:.0f} MB, warm {warm_rss:.0f} MB   "
        f"target < 250 MB: {_ok(rss < 250)}"
    )
    print(f"  (each worker process of the cold scan: at most {worker_rss:.0f} MB)")


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    main()
