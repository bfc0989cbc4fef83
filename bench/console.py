"""The editor's console on a list of 100,000: pages of the list, a search, a filtered
count and a send's live numbers, on SQLite and (when reachable) PostgreSQL side by side.

    .venv/bin/python bench/console.py [--subscribers 100000] [--repeat 20] [--no-postgres]
                                      [--postgres-url URL]

The list is made as tests/test_console.py makes it (every fifth subscriber in English,
90% active), and one issue fanned out to the active ones, 60,000 of them sent over the
last ten minutes at 100 a second. Each figure is the median of --repeat calls, in ms;
"deepest / first" is the last page's time over the first's (keyset paging: about 1).

PostgreSQL runs in a schema of its own in the test database (NEWSLETTER_TEST_POSTGRES_URL),
dropped at the end, so that tests running meanwhile are not disturbed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_console import T0, _send, _sending_issue, fill_list  # noqa: E402

from newsletter.app import console  # noqa: E402
from newsletter.store import Store, open_store, subscribers  # noqa: E402
from newsletter.store.subscribers import matching  # noqa: E402

POSTGRES_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL",
    "postgresql+psycopg://newsletter:newsletter@127.0.0.1:5432/newsletter_test",
)


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm: the statement's cache, the database's pages
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def prepare(store: Store, count: int) -> int:
    """The list, and an issue two thirds sent; returns the issue's id."""
    fill_list(store, count)
    issue_id = _sending_issue(store, 0, "2024-W21")
    sent = min(60_000, count * 2 // 3)
    _send(store, issue_id, sent, T0 - dt.timedelta(seconds=sent / 100), per_second=100)
    return issue_id


def measure(store: Store, issue_id: int, repeat: int) -> dict[str, float]:
    with store.engine.connect() as conn:
        last = int(conn.execute(sa.select(sa.func.max(subscribers.c.id))).scalar_one())
    deep = last - 50
    where = matching(store.dialect, status="active", lang="en")
    count = sa.select(sa.func.count()).select_from(subscribers).where(*where)

    def counted() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(count).scalar_one())

    found = {
        "first page": median_ms(lambda: console.find_subscribers(store), repeat),
        "deepest page": median_ms(lambda: console.find_subscribers(store, after=deep), repeat),
        "search 'minji', first page": median_ms(
            lambda: console.find_subscribers(store, query="minji"), repeat
        ),
        "search 'minji', deepest page": median_ms(
            lambda: console.find_subscribers(store, query="minji", after=deep), repeat
        ),
        "active + en, first page": median_ms(
            lambda: console.find_subscribers(store, state="active", lang="en"), repeat
        ),
        "active + en, deepest page": median_ms(
            lambda: console.find_subscribers(store, state="active", lang="en", after=deep),
            repeat,
        ),
        "count of active + en": median_ms(counted, repeat),
        "live (one send's numbers)": median_ms(
            lambda: console.live(store, issue_id, T0).as_json(), repeat
        ),
        "dashboard": median_ms(lambda: console.dashboard(store, T0), repeat),
    }
    found["deepest / first"] = found["deepest page"] / found["first page"]
    return found


@contextmanager
def own_schema(url: str) -> Iterator[str | None]:
    """A URL of ``url``'s database working in a schema of its own, dropped after; None
    when the server does not answer."""
    name = f"bench_console_{os.getpid()}"
    try:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    except Exception as exc:  # any driver or connection failure: measure SQLite alone
        print(f"PostgreSQL left out: {str(exc).splitlines()[0]}", file=sys.stderr)
        yield None
        return
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()


def run(url: str, folder: Path, count: int, repeat: int) -> dict[str, float]:
    store = open_store(url, folder)
    try:
        started = time.perf_counter()
        issue_id = prepare(store, count)
        if store.is_postgres:
            with store.engine.begin() as conn:
                conn.execute(sa.text("ANALYZE"))
        print(f"{store.dialect}: made in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return measure(store, issue_id, repeat)
    finally:
        store.close()


def report(columns: dict[str, dict[str, float]], count: int) -> None:
    names = list(columns)
    print(f"{count:,} subscribers; median ms of each call")
    print(f"{'':32}" + "".join(f"{name:>14}" for name in names))
    for row in next(iter(columns.values())):
        unit = "x" if row == "deepest / first" else ""
        cells = "".join(f"{columns[name][row]:>13.2f}{unit or ' '}" for name in names)
        print(f"{row:32}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    args = parser.parse_args()
    columns = {}
    with tempfile.TemporaryDirectory() as folder:
        columns["SQLite"] = run("sqlite:///console.db", Path(folder), args.subscribers, args.repeat)
    if not args.no_postgres:
        with own_schema(args.postgres_url) as url:
            if url is not None:
                columns["PostgreSQL"] = run(url, Path("."), args.subscribers, args.repeat)
    report(columns, args.subscribers)


if __name__ == "__main__":
    main()
