"""The same send on SQLite and on PostgreSQL, and on PostgreSQL by several processes at
once, into Postfix's smtp-sink on loopback, measured side by side in one run.

For each variant: a fresh database with ``--messages`` active subscribers and the 2024-W05
issue approved and queued (not timed); then the timed part, from starting the processes
to the last one's exit: ``newsletter send`` alone, or ``newsletter send`` beside
``--workers`` ``newsletter worker --once`` processes on the same database. smtp-sink
writes every message it accepts to a file, and the recipients are counted there: any
address that arrived twice is a duplicate. Those files go to /dev/shm when there is one:
on disk, the sink's CPU for the same 10,000 messages went from 5 to 9 s as the earlier
runs' 850 MB were written back, and set the pace of whichever variant met it.

Targets (issue 20): one process on PostgreSQL at least 0.8x the same send on SQLite; send
plus 2 workers on PostgreSQL at least 1.0x one process, with no duplicate.

Everything runs on this machine, so each variant also says where the CPU went in its timed
part: the newsletter processes, smtp-sink, and the rest (PostgreSQL, the kernel's own
work), against what the machine's cores could give. smtp-sink reads and files every
message on one core: when it is near a whole core, the sink, not the sender, sets the pace.

Needs Postfix's /usr/sbin/smtp-sink and a PostgreSQL server (``.ci/services.sh`` sets both
up); the database is $NEWSLETTER_TEST_POSTGRES_URL or the tests' default.

    .venv/bin/python bench/send_postgres.py [--messages 10000] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import collections
import compileall
import dataclasses
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from send import KEY, add_subscribers, start_sink  # noqa: E402

from newsletter.app import issues  # noqa: E402
from newsletter.archive.digest import load_archive  # noqa: E402
from newsletter.config import load_config  # noqa: E402
from newsletter.select import IsoWeek  # noqa: E402
from newsletter.store import open_store  # noqa: E402

WEEK = IsoWeek(2024, 5)
POSTGRES_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL",
    "postgresql+psycopg://newsletter:newsletter@127.0.0.1:5432/newsletter_test",
)
RCPT = re.compile(rb"^X-Rcpt-Args: <([^>]+)>", re.MULTILINE)


def recipients(dump: Path) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    for path in dump.iterdir():
        found.update(m.decode() for m in RCPT.findall(path.read_bytes()[:4096]))
    return found


def fresh_postgres() -> None:
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("drop schema public cascade"))
        conn.execute(sa.text("create schema public"))
    engine.dispose()


def prepare_run(folder: Path, url: str, port: int, messages: int) -> Path:
    """A database with the issue queued for ``messages`` subscribers; returns the settings
    file the processes read."""
    config = folder / "config.toml"
    config.write_text(
        f'source = "{ROOT / "seeds"}"\n'
        f'database_url = "{url}"\n'
        'base_url = "https://news.example.org/"\n'
        f'public_dir = "{folder / "public"}"\n'
        "[email]\n"
        'from_address = "weekly@news.example.org"\n'
        "[smtp]\n"
        f'host = "127.0.0.1"\nport = {port}\ntls = "none"\nconcurrency = 4\n',
        encoding="utf-8",
    )
    cfg = load_config(config, env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        add_subscribers(store, messages)
        prepared = issues.prepare(cfg, load_archive(ROOT / "seeds"), WEEK)
        issues.start(store, issues.approve(store, cfg, prepared))
    finally:
        store.close()
    return config


@dataclasses.dataclass(frozen=True)
class Cpu:
    """CPU seconds of a timed part, by whom."""

    senders: float
    sink: float
    busy: float  # the whole machine's
    wall: float

    def line(self) -> str:
        cores = os.cpu_count() or 1  # /proc/stat's busy time is the whole machine's
        rest = max(self.busy - self.senders - self.sink, 0.0)
        return (
            f"CPU: newsletter {self.senders:.1f} s, smtp-sink {self.sink:.1f} s "
            f"({self.sink / self.wall:.0%} of a core), the rest {rest:.1f} s; machine busy "
            f"{self.busy / self.wall / cores:.0%} of {cores} cores"
        )


def _machine_busy() -> float:
    """CPU seconds the machine has spent on anything but idling, since it started."""
    with open("/proc/stat", encoding="ascii") as stat:
        # user, nice, system, idle, iowait, irq, softirq, steal: the guest fields after
        # them are already counted in user and nice.
        fields = [int(v) for v in stat.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_send(config: Path, workers: int, sink_pid: int) -> tuple[float, Cpu]:
    env = {**os.environ, "NEWSLETTER_SECRET_KEY": KEY.decode() * 3}
    newsletter = [sys.executable, "-m", "newsletter"]
    commands = [[*newsletter, "send", "--week", str(WEEK), "--allow-insecure-links"]]
    commands += [[*newsletter, "worker", "--once", "--allow-insecure-links"]] * workers
    before = (_children_cpu(), _process_cpu(sink_pid), _machine_busy())
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*c, "--config", str(config)],
            cwd=config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for c in commands
    ]
    for proc in procs:
        _out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{proc.args!r} failed: {err.decode()[-2000:]}")
    seconds = time.perf_counter() - started
    after = (_children_cpu(), _process_cpu(sink_pid), _machine_busy())
    senders, sink, busy = (b - a for a, b in zip(before, after, strict=True))
    return seconds, Cpu(senders, sink, busy, seconds)


def _sink_folder(messages: int) -> str | None:
    """Where smtp-sink files the messages: in memory when the machine has a tmpfs with room
    for them (a container's is often 64 MB), else on disk."""
    try:
        room = os.statvfs("/dev/shm")
    except OSError:
        return None
    # 85 KB a message, and room to spare.
    return "/dev/shm" if room.f_bavail * room.f_frsize > messages * 200_000 else None


def run(variant: str, messages: int, workers: int) -> tuple[float, int, int, Cpu]:
    """(seconds, messages at the sink, duplicates, CPU) of one variant."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-pg-sink-", dir=_sink_folder(messages)) as dumps,
    ):
        folder = Path(tmp)
        sink, port = start_sink(Path(dumps) / "sink")
        try:
            if variant == "sqlite":
                url = f"sqlite:///{folder / 'bench.db'}"
            else:
                fresh_postgres()
                url = POSTGRES_URL
            config = prepare_run(folder, url, port, messages)
            seconds, cpu = timed_send(
                config, workers if variant == "postgres+workers" else 0, sink.pid
            )
        finally:
            sink.terminate()
            sink.wait()
        got = recipients(Path(dumps) / "sink")
        total = sum(got.values())
        if len(got) != messages:
            raise SystemExit(f"{variant}: {len(got)} recipients got mail, not {messages}")
        return seconds, total, total - len(got), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="best of this many per variant")
    args = parser.parse_args()
    # Every process imports the package: compile it once, as installing it does (pip
    # writes the bytecode), so that no process pays for compiling it as it starts.
    compileall.compile_dir(str(ROOT / "newsletter"), quiet=1)
    best: dict[str, tuple[float, int, int, Cpu]] = {}
    # Alternating the variants keeps a busy neighbour from favouring one of them.
    for _ in range(args.rounds):
        for variant in ("sqlite", "postgres", "postgres+workers"):
            result = run(variant, args.messages, args.workers)
            if variant not in best or result[0] < best[variant][0]:
                best[variant] = result
            print(
                f"  {variant:<17} {result[0]:6.2f} s  ({args.messages / result[0]:5.0f} msg/s)"
                f"  {result[3].line()}"
            )
    rate = {v: args.messages / s for v, (s, *_) in best.items()}
    print(f"\n{args.messages} messages, best of {args.rounds}, smtp.concurrency 4 per process")
    for variant, (seconds, total, dup, cpu) in best.items():
        print(
            f"{variant:<17} {rate[variant]:6.0f} msg/s  {seconds:6.2f} s  "
            f"{total} at the sink, {dup} duplicates\n    {cpu.line()}"
        )
    pg, sqlite = rate["postgres"], rate["sqlite"]
    together = rate["postgres+workers"]
    print(f"postgres / sqlite:                 {pg / sqlite:.2f}x (target >= 0.8x)")
    print(
        f"send + {args.workers} workers / one process: {together / pg:.2f}x (target >= 1.0x), "
        f"{best['postgres+workers'][2]} duplicates (target 0)"
    )


if __name__ == "__main__":
    main()
