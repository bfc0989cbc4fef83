"""The two HTTP APIs the writer talks to: Hugging Face Daily Papers and an
OpenAI-compatible chat-completions endpoint (plus arXiv for a paper's text).

Both go through :func:`request`, which retries what may pass by itself (timeouts,
connection errors, 429 with its ``Retry-After``, 5xx, a 200 whose JSON is cut off) with
backoff, and reports anything else at once as an :class:`ApiError` with a one-line
message. httpx is used as in :mod:`newsletter.sources`; no vendor SDK is needed for one
POST.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .errors import NewsletterError
from .models import HF_BASE, Media

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
    "request",
]

_ARXIV_ID_RE = re.compile(r"(\d{4}\.\d{4,5}|[a-z][a-z.\-]*/\d{7})$", re.IGNORECASE)
_CTRL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
# Characters the digest's media lines cannot carry inside a URL.
_URL_UNSAFE = re.compile(r"[\s()<>\[\]]")


class ApiError(NewsletterError):
    """An API that did not answer usefully after every try; ``str()`` says which and why.
    ``retryable``: a later try may succeed (429, 5xx, timeouts); ``wait``: the server's
    ``Retry-After``, in seconds."""

    def __init__(self, message: str, *, retryable: bool = False, wait: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.wait = wait


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting ``backoff`` seconds, then twice as long, between
    them (never less than a 429's ``Retry-After``, never more than ``max_wait``)."""

    attempts: int = 4
    backoff: float = 2.0
    max_wait: float = 120.0
    timeout: float = 120.0
    connect_timeout: float = 10.0

    def timeouts(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


Stopping = Callable[[], bool]


def _never() -> bool:
    return False


def one_line(text: str) -> str:
    """Control characters out, runs of white space (line breaks included) folded."""
    return " ".join(_CTRL_RE.sub(" ", text).split())


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


async def pause(seconds: float, stopping: Stopping) -> None:
    # In slices: a stop (SIGTERM in `newsletter run`) must not wait out a long Retry-After.
    end = time.monotonic() + seconds
    while not stopping():
        left = end - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.25))


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    policy: RetryPolicy,
    stopping: Stopping = _never,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    want_json: bool = True,
    ok_missing: bool = False,
) -> Any:
    """The decoded JSON (or text, ``want_json=False``) of a 2xx answer, retrying what may
    pass by itself. None for a 404 when ``ok_missing``. :class:`ApiError` otherwise."""
    error = ""
    retryable = True
    wait: float | None = None
    for attempt in range(1, policy.attempts + 1):
        wait = None
        retryable = True
        try:
            response = await client.request(method, url, json=json_body, headers=headers)
        except httpx.TimeoutException:
            error = f"{what}: timed out"
        except httpx.TransportError as exc:
            error = f"{what}: {type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                if not want_json:
                    return response.text
                try:
                    return response.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    # A cut-off body: the next try usually gets all of it.
                    error = f"{what}: the answer is not valid JSON"
            elif status == 404 and ok_missing:
                return None
            else:
                error = f"{what}: HTTP {status}{_short_body(response)}"
                if status == 429:
                    wait = _retry_after(response)
                elif status < 500:
                    retryable = False
                    break  # a client error (bad key, bad request) will not fix itself
        if attempt == policy.attempts or stopping():
            break
        delay = min(max(policy.backoff * 2 ** (attempt - 1), wait or 0.0), policy.max_wait)
        log.info("%s; try %d of %d in %.1fs", error, attempt + 1, policy.attempts, delay)
        await pause(delay, stopping)
    raise ApiError(error, retryable=retryable, wait=wait)


def _short_body(response: httpx.Response) -> str:
    """The API's own error message, when it gives one, cut to a line (never the request,
    which carries the key in its headers)."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    message = data.get("error") if isinstance(data, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    return f" ({one_line(str(message))[:200]})" if message else ""


class RateLimiter:
    """At most ``per_minute`` request starts a minute, evenly spaced (0: no limit)."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


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
    stopping: Stopping = _never,
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
    stopping: Stopping = _never,
) -> str | None:
    """The paper's text from its arXiv HTML page, cut to ``budget_tokens``; None when
    arXiv has no such page (then the abstract is summarized)."""
    url = url_template.replace("{id}", arxiv_id)
    html = await request(
        client,
        "GET",
        url,
        what=f"text of {arxiv_id}",
        policy=policy,
        stopping=stopping,
        want_json=False,
        ok_missing=True,
    )
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
    stopping: Stopping = _never

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
