"""The public folder served by this project's own layer against Starlette's StaticFiles
with GZipMiddleware (the well-kept alternative), side by side in one run.

Both serve the same built site in-process through httpx's ASGI transport, so the figures
are each layer's own cost, without the network: the feed (about 1 MB, gzipped on the
way), a week's page, and a revalidation answered 304. Also printed: what each answers,
so the behaviour the site relies on (a strong ETag per representation, 304 for the gzip
form too, Cache-Control) can be compared with the speed.

    .venv/bin/python bench/static_files.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from newsletter.app import site  # noqa: E402
from newsletter.config import load_config  # noqa: E402
from newsletter.web.app import create_app  # noqa: E402

PATHS = ("/feed.atom", "/issues/2024-W31.html")
GZIP = {"Accept-Encoding": "gzip"}


def build(folder: Path) -> Path:
    config = folder / "config.toml"
    config.write_text(
        f'source = "{ROOT / "seeds"}"\npublic_dir = "{folder / "public"}"\n'
        f'cache_dir = "{folder / "cache"}"\ndatabase_url = "sqlite:///{folder / "n.db"}"\n',
        encoding="utf-8",
    )
    cfg = load_config(config, env={})
    site.build(cfg, today=dt.date(2024, 8, 5))
    return config


async def timed(app: object, path: str, count: int, headers: dict[str, str]) -> float:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await client.get(path, headers=headers)  # warm: caches, first compression
        started = time.perf_counter()
        for _ in range(count):
            response = await client.get(path, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code}")
        return (time.perf_counter() - started) / count * 1000


async def answer(app: object, path: str) -> str:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        first = await client.get(path, headers=GZIP)
        etag = first.headers.get("etag", "")
        again = await client.get(path, headers={**GZIP, "If-None-Match": etag})
        return (
            f"{first.status_code}, {first.headers.get('content-encoding', 'identity')}, "
            f"ETag {etag or '-'}, Cache-Control {first.headers.get('cache-control', '-')}; "
            f"revalidated: {again.status_code}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-static-") as tmp:
        folder = Path(tmp)
        config = build(folder)
        cfg = load_config(config, env={})
        ours = create_app(cfg)
        theirs = Starlette(
            routes=[Mount("/", StaticFiles(directory=cfg.public_path, html=True))],
            middleware=[Middleware(GZipMiddleware, minimum_size=1000)],
        )
        for name, app in (("this project", ours), ("StaticFiles+GZip", theirs)):
            for path in PATHS:
                print(f"{name:<17} {path:<24} {await answer(app, path)}")
        print()
        print(
            f"{'ms per request (mean of ' + str(args.requests) + ')':<40}"
            f"{'this project':>14}{'StaticFiles':>14}{'ratio':>8}"
        )
        for path in PATHS:
            for label, headers in (("gzip", GZIP), ("identity", {})):
                mine = await timed(ours, path, args.requests, headers)
                other = await timed(theirs, path, args.requests, headers)
                print(f"{path + ' ' + label:<40}{mine:14.3f}{other:14.3f}{other / mine:7.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
