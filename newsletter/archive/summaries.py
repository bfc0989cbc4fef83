"""The model's summaries of the day's papers, each paid for once.

A paper's summary is asked for up to ``writer.max_attempts`` times, an HTTP failure and an
unusable answer alike, ``writer.concurrency`` requests at once; a good one is kept in the
``summaries`` table as soon as it is paid for, and every request is added to the day's usage.

The run's first request goes alone: what every request would get the same way (a refused
key, an unknown model, an address nothing answers at) stops the run after that one request,
with one line naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from newsletter.archive.papers import ChatClient, DailyPaper, fetch_full_text
from newsletter.config import WRITER_API_KEY_ENV, Config
from newsletter.http import ApiError, RetryPolicy
from newsletter.pacing import RateLimiter, Steps, Stopping, sleep_unless
from newsletter.store import Store
from newsletter.words import one_line

if TYPE_CHECKING:
    from newsletter.archive.writer import Prompt, WriteResult

# The day's run logs as the writer: its records are read and filtered under that name.
log = logging.getLogger(__name__)

__all__ = ["KEYS", "SummaryRun", "chat_client", "parse_summary", "summarize_all"]

KEYS = ("What's New", "Technical Details", "Performance Highlights")
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S | re.IGNORECASE)


# --- the model's answer -----------------------------------------------------------------------


def parse_summary(content: str) -> dict[str, str] | str:
    """The model's answer -> the three sections, each one line; or why it is unusable."""
    text = content.strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return "the answer is not JSON"
    if not isinstance(data, dict):
        return f"the answer is a JSON {type(data).__name__}, not an object"
    found: dict[str, str] = {}
    for key in KEYS:
        value = data.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str) or not one_line(value):
            return f"the answer has no text for {key!r}"
        found[key] = one_line(value)
    return found


# --- the requests -----------------------------------------------------------------------------


@dataclass
class SummaryRun:
    """What every summary request of a day's run needs."""

    cfg: Config
    store: Store
    client: httpx.AsyncClient
    chat: ChatClient
    prompt: Prompt
    key: str
    day: dt.date
    policy: RetryPolicy
    stopping: Stopping
    result: WriteResult
    # Set once the API has answered the run's first request (or that paper is done).
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # An answer came back at all: from then on a failed connection is a passing fault.
    reached: bool = False


@dataclass(frozen=True)
class _Answer:
    """One request for a summary: the summary, or why there is none; and the tokens it
    cost. ``stop``: the one line that ends the run, when every request would fail alike."""

    summary: dict[str, str] | None
    why: str = ""
    wait: float | None = None
    retryable: bool = True
    tokens_in: int = 0
    tokens_out: int = 0
    stop: str = ""


def chat_client(
    cfg: Config, client: httpx.AsyncClient, policy: RetryPolicy, stopping: Stopping
) -> ChatClient:
    writer = cfg.writer
    return ChatClient(
        client,
        writer.base_url,
        writer.model,
        writer.api_key,
        RetryPolicy(
            attempts=1,  # retried below, where an unusable answer also counts
            timeout=policy.timeout,
            connect_timeout=policy.connect_timeout,
        ),
        RateLimiter(writer.requests_per_minute / 60),
        stopping,
    )


async def summarize_all(
    run: SummaryRun,
    papers: list[DailyPaper],
    cached: dict[str, dict[str, str]],
    progress: Steps | None = None,
) -> None:
    """Summarize ``papers`` into ``cached``, ``writer.concurrency`` at a time, once the
    first request has been answered, telling ``progress`` how many are done (summarized
    or given up on) of how many."""
    gate = asyncio.Semaphore(run.cfg.writer.concurrency)
    done = 0
    if progress is not None and papers:
        progress(0, len(papers))

    async def one(index: int, paper: DailyPaper) -> None:
        nonlocal done
        if index:
            await run.answered.wait()
        try:
            async with gate:
                if run.stopping() or run.result.refused:
                    return
                summary = await _summarize(run, paper)
        finally:
            run.answered.set()
        if summary is not None:
            cached[paper.arxiv_id] = summary
            run.result.summarized += 1
        done += 1
        if progress is not None:
            progress(done, len(papers))

    await asyncio.gather(*(one(i, p) for i, p in enumerate(papers)))


async def _summarize(run: SummaryRun, paper: DailyPaper) -> dict[str, str] | None:
    """One paper's summary, paid for once: tried up to ``max_attempts`` times (an HTTP
    failure or an unusable answer alike), kept in the cache as soon as it is good."""
    policy, stopping = run.policy, run.stopping
    content, full = await _content(run, paper)
    if not content:
        log.warning("writer: %s has no abstract to summarize", paper.arxiv_id)
        return None
    system, user = run.prompt.fill(paper, content, full)
    what = f"summary of {paper.arxiv_id}"
    why = ""
    for attempt in range(1, policy.attempts + 1):
        if stopping() or run.result.refused:
            return None
        answer = await _ask(run, paper, system, user, what)
        await _count_usage(run, answer)
        if answer.stop:
            run.result.refused = run.result.refused or answer.stop
        run.answered.set()
        if answer.summary is not None:
            return answer.summary
        why = answer.why
        if answer.stop:
            return None  # said once, by the run's error
        if not answer.retryable:
            break
        if attempt < policy.attempts and not stopping():
            wait = answer.wait or 0.0
            delay = min(max(policy.backoff * 2 ** (attempt - 1), wait), policy.max_wait)
            log.info("writer: %s; try %d of %d in %.1fs", why, attempt + 1, policy.attempts, delay)
            await sleep_unless(stopping, delay)
    log.warning("writer: %s failed after %d tries: %s", paper.arxiv_id, attempt, why)
    return None


async def _content(run: SummaryRun, paper: DailyPaper) -> tuple[str, bool]:
    """The text to summarize, and whether it is the paper's full text (else its abstract)."""
    writer = run.cfg.writer
    if writer.full_text:
        try:
            text = await fetch_full_text(
                run.client,
                writer.full_text_url,
                paper.arxiv_id,
                writer.full_text_budget,
                policy=run.policy,
                stopping=run.stopping,
            )
        except ApiError as exc:
            log.warning("writer: %s; summarizing the abstract instead", exc)
            text = None
        if text:
            return text, True
    return paper.abstract, False


async def _ask(run: SummaryRun, paper: DailyPaper, system: str, user: str, what: str) -> _Answer:
    """One request for ``paper``'s summary; a good one is kept in the cache at once."""
    try:
        reply = await run.chat.complete(system, user, what=what)
    except ApiError as exc:
        stop = _stop_reason(run, exc)
        run.reached = run.reached or not exc.unreachable
        return _Answer(None, str(exc), exc.wait, exc.retryable, stop=stop)
    run.reached = True
    tokens_in, tokens_out = reply.tokens_in, reply.tokens_out
    parsed = parse_summary(reply.content)
    if not isinstance(parsed, dict):
        return _Answer(None, f"{what}: {parsed}", tokens_in=tokens_in, tokens_out=tokens_out)
    body = json.dumps(parsed, ensure_ascii=False)
    await asyncio.to_thread(
        run.store.put_summary,
        paper.arxiv_id,
        run.key,
        run.cfg.writer.model,
        body,
        tokens_in,
        tokens_out,
    )
    return _Answer(parsed, tokens_in=tokens_in, tokens_out=tokens_out)


def _stop_reason(run: SummaryRun, exc: ApiError) -> str:
    """The one line that ends the run when ``exc`` is what every request would get, with
    the setting to fix; else nothing (the paper is tried again, or left without)."""
    writer = run.cfg.writer
    where = f"writer.base_url ({writer.base_url})"
    if exc.status in (401, 403):
        return (
            f"{exc.reason} from {where}: the key was refused; check {WRITER_API_KEY_ENV} "
            "and that it is a key of that server"
        )
    if exc.status == 404:
        return (
            f'{exc.reason} from {where}: no model writer.model = "{writer.model}" there '
            "(or no chat-completions API at that address); check writer.model and "
            "writer.base_url"
        )
    if exc.status is not None and not exc.retryable:
        return f'{exc.reason} from {where} for writer.model = "{writer.model}"'
    if exc.unreachable and not run.reached:
        return f"cannot connect to {where}: {exc.reason}"
    return ""


async def _count_usage(run: SummaryRun, answer: _Answer) -> None:
    """Add ``answer``'s request to the run's result and to the day's usage."""
    failed = 0 if answer.summary is not None else 1
    result = run.result
    result.requests += 1
    result.failures += failed
    result.tokens_in += answer.tokens_in
    result.tokens_out += answer.tokens_out
    await asyncio.to_thread(
        run.store.add_writer_usage,
        run.day,
        requests=1,
        failures=failed,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
    )
