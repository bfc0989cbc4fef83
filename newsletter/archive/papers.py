"""The two HTTP APIs the writer talks to: Hugging Face Daily Papers and an
OpenAI-compatible chat-completions endpoint (plus arXiv for a paper's text).

Both go through :func:`newsletter.http.request`, as the digest source does; no vendor SDK
is needed for one POST.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from newsletter.http import ApiError, Missing, RetryPolicy, request
from newsletter.models import HF_BASE, Media
from newsletter.pacing import RateLimiter, Stopping, never
from newsletter.words import one_line

log = logging.getLogger(__name__)

__all__ = [
    "ApiError",
    "ChatAnswer",
    "ChatClient",
    "DailyPaper",
    "RateLimiter",
    "RetryPolicy",
    "fetch_daily_papers",
    "fetch_full_text",
    "one_line",
]

_ARXIV_ID_RE = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})$", re.IGNORECASE)
_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
# Characters the digest's media lines cannot carry inside a URL.
_URL_UNSAFE = re.compile(r"[\s()<>\[\]]")


# --- Hugging Face Daily Papers ------------------------------------------------------------------


@dataclass(frozen=True)
class DailyPaper:
    """One entry of the Daily Papers list, cleaned to what a digest can hold."""

    arxiv_id: str
    title: str
    abstract: str
    votes: int | None
    authors: tuple[str, ...]
    media: Media | None
    published_at: str = ""


def _media(thumbnail: Any) -> Media | None:
    if not isinstance(thumbnail, str) or not thumbnail.strip():
        return None
    url = thumbnail.strip()
    if url.startswith("/") and not url.startswith("//"):
        url = HF_BASE + url
    if not url.lower().startswith(("https://", "http://")):
        return None
    url = _URL_UNSAFE.sub(lambda m: quote(m.group(0)), url)
    if not url.isprintable():
        return None
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return Media("video" if path.endswith(_VIDEO_SUFFIXES) else "image", url)


def _author_name(name: str) -> str:
    # The digest separates authors with commas and reads a leading "[" as a Python list.
    return one_line(name.replace(",", " ")).lstrip("[").strip()


def parse_daily_item(item: Any) -> DailyPaper | str:
    """One list entry -> :class:`DailyPaper`, or why it cannot be used."""
    if not isinstance(item, dict) or not isinstance(item.get("paper"), dict):
        return "entry without a 'paper' object"
    paper = item["paper"]
    arxiv_id = paper.get("id")
    if not isinstance(arxiv_id, str) or not _ARXIV_ID_RE.match(arxiv_id.strip()):
        return f"entry without an arXiv id: {str(arxiv_id)[:40]!r}"
    arxiv_id = arxiv_id.strip()
    title = one_line(str(paper.get("title") or item.get("title") or ""))
    if not title:
        return f"{arxiv_id}: no title"
    votes = paper.get("upvotes")
    if isinstance(votes, bool) or not isinstance(votes, int) or votes < 0:
        votes = None
    names: list[str] = []
    for author in paper.get("authors") or ():
        name = author.get("name") if isinstance(author, dict) else None
        if isinstance(name, str):
            cleaned = _author_name(name)
            if cleaned and cleaned != "+" and cleaned not in names:
                names.append(cleaned)
    return DailyPaper(
        arxiv_id=arxiv_id,
        title=title,
        abstract=one_line(str(paper.get("summary") or item.get("summary") or "")),
        votes=votes,
        authors=tuple(names),
        media=_media(item.get("thumbnail")),
        published_at=str(item.get("publishedAt") or paper.get("publishedAt") or ""),
    )


async def fetch_daily_papers(
    client: httpx.AsyncClient,
    papers_url: str,
    day: dt.date,
    *,
    policy: RetryPolicy,
    stopping: Stopping = never,
) -> list[DailyPaper]:
    """``GET {papers_url}?date=DAY``: the day's papers in the list's order, each once. An
    unusable entry is logged and left out; an unusable list is an :class:`ApiError`."""
    what = f"daily papers for {day}"
    joiner = "&" if "?" in papers_url else "?"
    url = f"{papers_url}{joiner}date={day.isoformat()}"
    data = await request(client, "GET", url, what=what, policy=policy, stopping=stopping)
    if not isinstance(data, list):
        raise ApiError(f"{what}: expected a JSON list, got {type(data).__name__}")
    found: dict[str, DailyPaper] = {}
    for index, item in enumerate(data):
        parsed = parse_daily_item(item)
        if isinstance(parsed, str):
            log.warning("%s: entry %d skipped: %s", what, index, parsed)
            continue
        found.setdefault(parsed.arxiv_id, parsed)
    return list(found.values())


# --- arXiv ------------------------------------------------------------------------------------

# About four characters of English per token: the budget is a cost cap, not an exact count.
CHARS_PER_TOKEN = 4


async def fetch_full_text(
    client: httpx.AsyncClient,
    url_template: str,
    arxiv_id: str,
    budget_tokens: int,
    *,
    policy: RetryPolicy,
    stopping: Stopping = never,
) -> str | None:
    """The paper's text from its arXiv HTML page, cut to ``budget_tokens``; None when
    arXiv has no such page (then the abstract is summarized)."""
    url = url_template.replace("{id}", arxiv_id)
    try:
        html = await request(
            client,
            "GET",
            url,
            what=f"text of {arxiv_id}",
            policy=policy,
            stopping=stopping,
            want="text",
            missing=(404,),
        )
    except Missing:
        return None
    if not html:
        return None
    text = await asyncio.to_thread(_html_text, html)
    return text[: budget_tokens * CHARS_PER_TOKEN] or None


def _html_text(html: str) -> str:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return ""
    for node in root.xpath("//script|//style|//nav|//header|//footer"):
        node.drop_tree()
    body = root.find("body")
    return one_line((body if body is not None else root).text_content())


# --- chat completions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    tokens_in: int
    tokens_out: int


@dataclass
class ChatClient:
    """``POST {base_url}/chat/completions`` with a JSON-object answer."""

    client: httpx.AsyncClient
    base_url: str
    model: str
    api_key: str
    policy: RetryPolicy
    limiter: RateLimiter
    stopping: Stopping = never

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    async def complete(self, system: str, user: str, *, what: str) -> ChatAnswer:
        await self.limiter.wait()
        data = await request(
            self.client,
            "POST",
            self.url,
            what=what,
            policy=self.policy,
            stopping=self.stopping,
            json_body={
                "model": self.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "response_format": {"type": "json_object"},
            },
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        usage = data.get("usage") if isinstance(data, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        tokens_in = _count(usage.get("prompt_tokens"))
        tokens_out = _count(usage.get("completion_tokens"))
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            return ChatAnswer("", tokens_in, tokens_out)
        return ChatAnswer(content, tokens_in, tokens_out)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
