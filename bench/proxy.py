"""``/feed.atom`` from the service itself against nginx in front of it, side by side in one
run: deploy/nginx/newsletter.conf as tests/test_proxy.py runs it (TLS, a self-signed
certificate), before ``newsletter run`` on the seeds (its web app is ``newsletter serve``'s).

- requests per second on ``/feed.atom`` as feed readers ask for it (gzip), at
  ``--connections`` connections, measured by wrk for ``--seconds`` each;
- whether a request is still answered while 1,100 idle connections are open to each. The
  service runs with the usual limit of 1,024 open files, as it would under a login shell.

Needs nginx and wrk (``apt-get install nginx wrk``); run it alone on an idle machine.

    .venv/bin/python bench/proxy.py [--seconds 10] [--connections 100]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_proxy import running_nginx, running_site  # noqa: E402

IDLE = 1100


@contextlib.contextmanager
def open_files(limit: int) -> Iterator[None]:
    """This process's soft limit of open files set to ``limit`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def requests_per_second(url: str, seconds: int, connections: int) -> str:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", "Accept-Encoding: gzip", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    figure = f"{float(rate.group(1)):>9,.0f} req/s" if rate else "no figure"
    return figure + (f"  ({errors.group(0)})" if errors else "")


def answered_while_idle(url: str, port: int) -> str:
    """One request while IDLE connections that never send a byte are open to ``port``."""
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        started = time.perf_counter()
        try:
            answer = httpx.get(url, verify=False, timeout=5)
        except httpx.TransportError as exc:
            return f"{len(idle)} idle open: no answer within 5 s ({type(exc).__name__})"
        took = (time.perf_counter() - started) * 1000
        return f"{len(idle)} idle open: {answer.status_code} in {took:.0f} ms"
    finally:
        for sock in idle:
            sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-proxy-"))
    work.chmod(0o755)  # nginx's workers (www-data) read the public folder
    try:
        with contextlib.ExitStack() as running:
            with open_files(1024):  # the service's, not nginx's nor this process's
                site = running.enter_context(running_site(work))
            nginx = running.enter_context(running_nginx(site, work))
            rows = [
                ("newsletter (uvicorn)", site.app, site.app_port),
                ("nginx in front (TLS)", nginx.base, site.tls_port),
            ]
            print(f"/feed.atom, gzip, {args.connections} connections, {args.seconds} s each")
            for name, base, _ in rows:
                rate = requests_per_second(base + "/feed.atom", args.seconds, args.connections)
                print(f"  {name:<22} {rate}")
            print(f"a request while {IDLE} idle connections are open")
            for name, base, port in rows:
                print(f"  {name:<22} {answered_while_idle(base + '/feed.atom', port)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
