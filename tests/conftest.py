"""Shared fixtures: the seeds archive, a settings object for a temporary folder."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from newsletter.config import Config, load_config
from newsletter.digest import load_archive
from newsletter.models import Archive, Digest, Media, Paper, Section

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return SEEDS


@pytest.fixture(scope="session")
def seeds_archive() -> Archive:
    return load_archive(SEEDS)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Embedded defaults, with every relative path under a temporary folder."""
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return load_config(path, env={}, overrides={"source": str(SEEDS)})


# -- the weekly issue and its email ---------------------------------------------------------


@pytest.fixture
def issue_cfg(cfg: Config) -> Config:
    """Settings of a deployed newsletter: a public https site and a real sender domain."""
    import dataclasses

    return cfg.replace(
        base_url="https://news.example.org/",
        email=dataclasses.replace(
            cfg.email,
            from_address="weekly@news.example.org",
            unsubscribe_mailto="unsubscribe@news.example.org",
            contact="문의: editor@news.example.org",
        ),
    )


def make_paper(
    arxiv_id: str,
    *,
    title: str = "A paper",
    votes: int | None = 10,
    authors: tuple[str, ...] = ("A. Author", "B. Author"),
    sections: tuple[tuple[str | None, str], ...] = ((None, "요약 한 줄입니다."),),
    media_url: str | None = None,
) -> Paper:
    """A paper for tests, with an image thumbnail when ``media_url`` is given."""
    return Paper(
        arxiv_id=arxiv_id,
        title=title,
        votes=votes,
        authors=authors,
        sections=tuple(Section(label, text) for label, text in sections),
        media=Media("image", media_url) if media_url else None,
    )


def long_week(papers: int = 10, day: dt.date = dt.date(2024, 5, 20)) -> Archive:
    """One day of ``papers`` papers with long labelled Korean summaries (a worst case)."""
    text = "대규모 언어 모델의 추론 능력을 향상시키기 위한 새로운 방법을 제안하고 실험으로 검증합니다. " * 12
    labels = ("What's New", "Technical Details", "Performance Highlights", "Limitations")
    return Archive(
        digests=(
            Digest(
                date=day,
                papers=tuple(
                    make_paper(
                        f"2405.{10000 + i}",
                        title=f"Paper {i}: Scaling Long-Context Reasoning with Sparse Mixture of Experts",
                        votes=100 - i,
                        authors=tuple(f"Author {j}" for j in range(12)),
                        sections=tuple((label, text) for label in labels),
                        media_url=f"https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.{10000 + i}.png",
                    )
                    for i in range(papers)
                ),
            ),
        )
    )


# -- a real HTTP server -----------------------------------------------------------------


@pytest.fixture
def live_server() -> Iterator[Callable[[Any], str]]:
    """Start an ASGI app on a real uvicorn server on a free loopback port; gives the base URL.

    ``base = live_server(create_app(cfg))``; every server is stopped at teardown.
    """
    import socket
    import threading
    import time

    import uvicorn

    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: Any) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # bound before the server starts: no port race
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", ws="none", lifespan="on", http="h11")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
