"""The web app of a starting service: a feed that is there answers at once, exactly as the
whole app answers it; every other request waits for the whole app, and is answered 503
if the service stops before it is there."""

from __future__ import annotations

import asyncio
from typing import Any

from newsletter.config import Config
from newsletter.models import Archive
from newsletter.publish.feed import write_feeds
from newsletter.publish.pending import PendingPages
from newsletter.web.app import create_app
from newsletter.web.starting import StartingApp


async def _get(app: Any, path: str, *headers: tuple[bytes, bytes]) -> tuple[int, dict[str, str]]:
    """One GET through the ASGI interface: the status and the headers."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def test_a_feed_answers_before_the_whole_app_as_the_whole_app_answers_it(
    cfg: Config, seeds_archive: Archive
) -> None:
    write_feeds(cfg, seeds_archive)
    gzip = (b"accept-encoding", b"gzip")

    async def both() -> list[tuple[int, dict[str, str]]]:
        early = StartingApp(cfg, PendingPages())
        answers = [await _get(early, "/feed.atom", gzip), await _get(early, "/feed.json")]
        whole = create_app(cfg)
        answers += [await _get(whole, "/feed.atom", gzip), await _get(whole, "/feed.json")]
        etag = answers[0][1]["etag"].encode()
        answers.append(await _get(early, "/feed.atom", gzip, (b"if-none-match", etag)))
        return answers

    early_atom, early_json, atom, json, not_modified = asyncio.run(both())
    assert early_atom == atom and early_json == json
    assert atom[0] == 200 and atom[1]["content-encoding"] == "gzip"
    assert "content-security-policy" in atom[1] and "x-frame-options" in atom[1]
    assert not_modified[0] == 304


def test_everything_else_waits_for_the_whole_app(cfg: Config, seeds_archive: Archive) -> None:
    """Pages, a missing feed, a feed being rewritten: the whole app's answer, once it is
    there."""
    write_feeds(cfg, seeds_archive)
    (cfg.public_path / "issues.atom").write_text("<feed/>", encoding="utf-8")
    pending = PendingPages()
    pending.start(stale=True)  # the pages and the issues feeds link elsewhere

    async def life() -> list[int]:
        app = StartingApp(cfg, pending)
        asked = [
            asyncio.create_task(_get(app, path))
            for path in ("/subscribe", "/", "/issues.atom", "/issues.json", "/robots.txt")
        ]
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in asked)
        app.attach(create_app(cfg, pending=pending))
        return [(await task)[0] for task in asked]

    assert asyncio.run(life()) == [200, 503, 503, 503, 200]


def test_a_service_stopping_before_its_whole_app_answers_what_waits(cfg: Config) -> None:
    async def life() -> tuple[int, dict[str, str]]:
        app = StartingApp(cfg)
        waiting = asyncio.create_task(_get(app, "/feed.atom"))  # not built: it waits too
        await asyncio.sleep(0.05)
        app.close()
        return await asyncio.wait_for(waiting, 5)

    status, headers = asyncio.run(life())
    assert status == 503 and headers["retry-after"] == "30"


def test_the_feeds_answer_early_only_while_starting(cfg: Config, seeds_archive: Archive) -> None:
    """Once attached, the whole app answers the feeds too (its middleware, its counters)."""
    write_feeds(cfg, seeds_archive)
    seen: list[str] = []

    async def whole(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await create_app(cfg)(scope, receive, send)

    async def life() -> int:
        app = StartingApp(cfg)
        app.attach(whole)
        return (await _get(app, "/feed.atom"))[0]

    assert asyncio.run(life()) == 200
    assert seen == ["/feed.atom"]
