"""Messages per second into Postfix's smtp-sink on loopback: this sender, a naive smtplib
loop and Postfix's own C load generator smtp-source, measured side by side in one run.

Starts ``smtp-sink`` on a free loopback port, then:

- this sender: a temporary SQLite database with 10,000 active subscribers and the
  2024-W05 issue rendered from the seeds, approved (frozen) untimed, then fanned out and sent by ``send_issue`` (leases and
  every ledger write included) with ``smtp.concurrency`` N; subscriber creation is not
  timed;
- the same send with DKIM on (a 2048-bit RSA key made here; signed by as many signing
  processes beside the event loop as ``newsletter.mail.signproc.signing_processes``
  gives this machine) and off again, alternately
  for ``--rounds`` rounds, and the ratio of the best of each (alternating keeps a busy
  neighbour on a shared machine from favouring either); each send also says how much CPU
  its event loop's thread took per message, which a busy neighbour disturbs far less
  than the rate;
- naive: ``smtplib.SMTP`` per message (connect, sendmail, quit) with the same bytes,
  built beforehand and not timed, on a sample whose rate is extrapolated;
- ``smtp-source`` with as many sessions as the sender's concurrency and messages of the
  real mean size, on reused connections (``-d``, like the sender) and one per message;
- peak RSS of a child process that sends the issue to 100,000 subscribers.

Needs Postfix (Debian package ``postfix``) for /usr/sbin/smtp-sink and smtp-source.

    .venv/bin/python bench/send.py [--messages 10000] [--naive 1000] [--concurrency 4,8]
                                   [--rss 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.app import issues  # noqa: E402
from newsletter.app.delivery import Prepared, dry_run, prepare, send_issue  # noqa: E402
from newsletter.archive.digest import load_archive  # noqa: E402
from newsletter.config import Config, load_config  # noqa: E402
from newsletter.mail.signproc import signing_processes  # noqa: E402
from newsletter.mail.tokens import PREFERENCES, UNSUBSCRIBE, make_token  # noqa: E402
from newsletter.select import IsoWeek  # noqa: E402
from newsletter.store import Store, open_store, subscribers  # noqa: E402

WEEK = IsoWeek(2024, 5)
KEY = b"bench-secret-key"
FROM = "weekly@news.example.org"
SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sink(dump: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """smtp-sink on a free loopback port, once it accepts connections; with ``dump``, it
    writes every message it accepts into that folder, a file each."""
    port = _free_port()
    command = [SINK]
    if os.geteuid() == 0:
        # smtp-sink refuses to run as root without a user to switch to.
        command += ["-u", pwd.getpwuid(0).pw_name]
    if dump is not None:
        dump.mkdir(parents=True)
        command += ["-d", f"{dump}/%H%M%S."]
    command += [f"127.0.0.1:{port}", "1000"]
    sink = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sink.poll() is not None:
            raise SystemExit(f"smtp-sink exited: {sink.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink, port
        except OSError:
            time.sleep(0.05)
    sink.kill()
    raise SystemExit("smtp-sink did not start listening")


def bench_config(
    folder: Path, port: int, concurrency: int, dkim_key_file: Path | None = None
) -> Config:
    cfg = load_config(ROOT / "config.toml", env={}, overrides={"source": str(ROOT / "seeds")})
    dkim = {"dkim_selector": "bench", "dkim_key_file": str(dkim_key_file)} if dkim_key_file else {}
    return cfg.replace(
        base_url="https://news.example.org/",
        database_url=f"sqlite:///{folder / 'bench.db'}",
        public_dir=str(folder / "public"),
        email=dataclasses.replace(
            cfg.email,
            from_address=FROM,
            unsubscribe_mailto="unsubscribe@news.example.org",
            **dkim,
        ),
        smtp=dataclasses.replace(
            cfg.smtp,
            host="127.0.0.1",
            port=port,
            tls="none",
            concurrency=concurrency,
            timeout_seconds=30.0,
        ),
    )


def add_subscribers(store: Store, count: int, chunk: int = 10_000) -> None:
    """Active subscribers, a third of them English, in bulk (executemany per chunk)."""
    now = dt.datetime.now(dt.UTC)
    for start in range(0, count, chunk):
        rows = [
            {
                "email": f"reader{i:06d}@example.org",
                "email_key": f"reader{i:06d}@example.org",
                "name": f"독자 {i}",
                "lang": "en" if i % 3 == 0 else "ko",
                "status": "active",
                "created_at": now,
                "updated_at": now,
                "confirmed_at": now,
            }
            for i in range(start, min(start + chunk, count))
        ]
        with store.engine.begin() as conn:
            conn.execute(subscribers.insert(), rows)


def send_to_subscribers(
    folder: Path,
    port: int,
    concurrency: int,
    count: int,
    prepared_by: list[Prepared],
    dkim_key_file: Path | None = None,
) -> tuple[float, float, dict[str, int], int, float]:
    """A fresh database of ``count`` subscribers and the issue approved (frozen), then one
    timed fan-out and send. Returns (setup seconds, send seconds, ledger counts, mean
    message bytes, CPU seconds of the event loop's thread)."""
    folder.mkdir()
    cfg = bench_config(folder, port, concurrency, dkim_key_file)
    started = time.perf_counter()
    store = open_store(cfg.database_url, cfg.base_dir)
    add_subscribers(store, count)
    row = issues.approve(store, cfg, prepare(cfg, load_archive(ROOT / "seeds"), WEEK))
    prepared = issues.frozen(store, cfg, row)
    if not prepared_by:
        prepared_by.append(prepared)
    messages, size = dry_run(cfg, store, prepared, KEY)
    setup = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.thread_time()
    row = issues.start(store, row)
    report = asyncio.run(send_issue(cfg, store, row, KEY))
    seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    store.close()
    return setup, seconds, report.counts, size // max(messages, 1), cpu


def rsa_key_pem() -> bytes:
    """A fresh 2048-bit RSA key, PEM (PKCS#1), as ``openssl genrsa`` writes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def naive_loop(port: int, messages: list[tuple[str, bytes]]) -> float:
    """One smtplib connection per message; returns the seconds taken."""
    started = time.perf_counter()
    for recipient, data in messages:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.sendmail(FROM, [recipient], data)
        client.quit()
    return time.perf_counter() - started


def smtp_source(port: int, sessions: int, messages: int, size: int, reuse: bool) -> float:
    command = [SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    if reuse:
        command.append("-d")
    command += ["-f", FROM, "-t", "reader@example.org", f"127.0.0.1:{port}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def vm_kb(field: str) -> int:
    """A line of /proc/self/status in KiB: VmHWM (the peak resident set so far, of this
    process alone) or VmRSS (now). Not ``ru_maxrss``: Linux carries a process's peak over
    ``exec``, so a child started by a big parent reports at least the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def rss_child(port: int, count: int, concurrency: int) -> None:
    """Runs in its own process: prints JSON with its peak RSS before and after sending."""
    with tempfile.TemporaryDirectory(prefix="bench-send-rss-") as tmp:
        folder = Path(tmp)
        cfg = bench_config(folder, port, concurrency)
        started = time.perf_counter()
        store = open_store(cfg.database_url, cfg.base_dir)
        add_subscribers(store, count)
        row = issues.approve(store, cfg, prepare(cfg, load_archive(ROOT / "seeds"), WEEK))
        setup = time.perf_counter() - started
        before = vm_kb("VmHWM")
        started = time.perf_counter()
        report = asyncio.run(send_issue(cfg, store, issues.start(store, row), KEY))
        seconds = time.perf_counter() - started
        after = vm_kb("VmHWM")
        store.close()
    print(
        json.dumps(
            {
                "setup": setup,
                "seconds": seconds,
                "before_kb": before,
                "after_kb": after,
                "sent": report.counts["sent"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--naive", type=int, default=1_000, help="naive-loop sample size")
    parser.add_argument(
        "--concurrency", default="4", help="comma-separated smtp.concurrency values to try"
    )
    parser.add_argument("--rss", type=int, default=100_000, help="subscribers of the RSS run")
    parser.add_argument("--rounds", type=int, default=2, help="DKIM on/off rounds")
    parser.add_argument(
        "--quick", action="store_true", help="2,000 messages, 200 naive, 20,000 for RSS"
    )
    parser.add_argument("--rss-child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.quick:
        args.messages, args.naive, args.rss = 2_000, 200, 20_000
    levels = [int(n) for n in args.concurrency.split(",")]
    for tool in (SINK, SOURCE):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is missing: install Postfix (Debian package postfix)")

    sink, port = start_sink()
    tmp = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        prepared: list[Prepared] = []
        sender: dict[int, float] = {}
        size = 0
        for n in levels:
            setup, seconds, counts, size, _ = send_to_subscribers(
                tmp / f"n{n}", port, n, args.messages, prepared
            )
            if counts["sent"] != args.messages:
                raise SystemExit(f"concurrency {n}: ledger says {counts}")
            sender[n] = _rate(args.messages, seconds)
            print(
                f"this sender, concurrency {n}: {sender[n]:8,.0f} messages/s "
                f"({args.messages:,} in {seconds:.1f}s; setup {setup:.1f}s untimed)"
            )
        best = max(sender, key=lambda n: sender[n])
        verdict = {True: "met", False: "MISSED"}

        key_file = tmp / "dkim.pem"
        key_file.write_bytes(rsa_key_pem())
        rates: dict[bool, list[float]] = {True: [], False: [sender[best]]}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(args.rounds):
            for dkim in (True, False):
                folder = tmp / f"round{round_}-{'on' if dkim else 'off'}"
                setup, seconds, counts, _, loop_cpu = send_to_subscribers(
                    folder,
                    port,
                    best,
                    args.messages,
                    [] if dkim else prepared,
                    dkim_key_file=key_file if dkim else None,
                )
                if counts["sent"] != args.messages:
                    raise SystemExit(f"DKIM {'on' if dkim else 'off'}: ledger says {counts}")
                rates[dkim].append(_rate(args.messages, seconds))
                cpu[dkim].append(loop_cpu / args.messages * 1e6)
                print(
                    f"this sender, concurrency {best}, DKIM {'on (RSA-2048)' if dkim else 'off'}: "
                    f"{rates[dkim][-1]:8,.0f} messages/s ({args.messages:,} in {seconds:.1f}s; "
                    f"setup {setup:.1f}s untimed; the loop's thread took "
                    f"{cpu[dkim][-1]:,.0f} us of CPU per message)"
                )
        print(f"DKIM signing processes beside the event loop: {signing_processes()}")
        ratio_dkim = max(rates[True]) / max(rates[False])
        print(
            f"DKIM on: {max(rates[True]):,.0f} messages/s, off: {max(rates[False]):,.0f} "
            f"(best of each); ratio on/off: {ratio_dkim:.2f} "
            f"(target >= 0.85: {verdict[ratio_dkim >= 0.85]}); the loop's CPU per message, "
            f"off/on: {min(cpu[False]) / min(cpu[True]):.2f}"
        )

        templates = prepared[0].templates
        sample = [
            (
                f"reader{i:06d}@example.org",
                templates["en" if i % 3 == 0 else "ko"]
                .personalize(
                    to_address=f"reader{i:06d}@example.org",
                    to_name=f"독자 {i}",
                    unsubscribe_token=make_token(KEY, UNSUBSCRIBE, i + 1),
                    preferences_token=make_token(KEY, PREFERENCES, i + 1),
                )
                .data,
            )
            for i in range(args.naive)
        ]
        seconds = naive_loop(port, sample)
        naive = _rate(len(sample), seconds)
        print(
            f"naive smtplib, connection per message: {naive:8,.0f} messages/s "
            f"({len(sample):,} in {seconds:.1f}s, extrapolated to {args.messages:,})"
        )

        source: dict[bool, float] = {}
        for reuse in (True, False):
            seconds = smtp_source(port, best, args.messages, size, reuse)
            source[reuse] = _rate(args.messages, seconds)
            how = "reused connections (-d)" if reuse else "connection per message"
            print(
                f"smtp-source, {best} sessions, {how}: {source[reuse]:8,.0f} messages/s "
                f"({args.messages:,} of {size:,} bytes in {seconds:.1f}s)"
            )

        print(f"message: {size:,} bytes (mean of the real messages, ko and en)")
        ratio_source = sender[best] / source[True]
        ratio_naive = sender[best] / naive
        print(
            f"ratio sender/smtp-source (-d): {ratio_source:.2f} "
            f"(target >= 0.50: {verdict[ratio_source >= 0.5]})"
        )
        print(f"ratio sender/naive: {ratio_naive:.1f}x (target >= 5x: {verdict[ratio_naive >= 5]})")

        child = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(port), str(args.rss), str(best)],
            check=True,
            capture_output=True,
            text=True,
        )
        rss = json.loads(child.stdout.strip().splitlines()[-1])
        if rss["sent"] != args.rss:
            raise SystemExit(f"RSS run sent {rss['sent']} of {args.rss}")
        print(
            f"peak RSS, {args.rss:,} subscribers: {rss['before_kb'] / 1024:.0f} MB before sending, "
            f"{rss['after_kb'] / 1024:.0f} MB after (target < 200 MB: "
            f"{verdict[rss['after_kb'] < 200 * 1024]}); "
            f"setup {rss['setup']:.1f}s, sending {rss['seconds']:.1f}s "
            f"= {_rate(args.rss, rss['seconds']):,.0f} messages/s"
        )
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
