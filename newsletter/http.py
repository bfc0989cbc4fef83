"""One way to ask an HTTP server: retries with backoff and ``Retry-After``, one-line errors.

Used by the digest source (a URL template) and the writer's APIs. What may pass by itself
(timeouts, connection errors, 429 with its ``Retry-After``, 5xx, a 200 whose JSON is cut
off) is retried; anything else is reported at once as an :class:`ApiError` whose message
is one line.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from newsletter.errors import NewsletterError
from newsletter.pacing import Stopping, never, sleep_unless
from newsletter.words import one_line

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

__all__ = ["ApiError", "Missing", "RetryPolicy", "request"]


class ApiError(NewsletterError):
    """A server that did not answer usefully after every try; ``str()`` says which and why.
    ``retryable``: a later try may succeed (429, 5xx, timeouts); ``wait``: the server's
    ``Retry-After``, in seconds; ``status``: the last answer's HTTP status, if any."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        wait: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.wait = wait
        self.status = status


class Missing(ApiError):
    """The server says the thing is not there (one of the statuses the caller named)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting ``backoff`` seconds, then twice as long, between
    them (never less than a 429's ``Retry-After``, never more than ``max_wait``)."""

    attempts: int = 4
    backoff: float = 2.0
    max_wait: float = 120.0
    timeout: float = 120.0
    connect_timeout: float = 10.0
    # False for a request that must not happen twice (a chat post): one the server may
    # have received but did not answer in time is left to the caller, not sent again.
    repeat_unanswered: bool = True

    def timeouts(self) -> httpx.Timeout:
        import httpx  # a start that fetches nothing need not import it

        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


def retry_after(response: httpx.Response) -> float | None:
    """A ``Retry-After`` in seconds (given as seconds or as an HTTP date), or a JSON body's
    ``retry_after`` (Discord's, in seconds, fractions included)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        wait = body.get("retry_after") if isinstance(body, dict) else None
        return float(wait) if isinstance(wait, int | float) and wait >= 0 else None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    policy: RetryPolicy,
    stopping: Stopping = never,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    want: Literal["json", "text", "bytes"] = "json",
    missing: tuple[int, ...] = (),
) -> Any:
    """The body of a 2xx answer (decoded JSON, text or bytes, as ``want`` says), retrying
    what may pass by itself. :class:`Missing` at once for a status in ``missing``;
    :class:`ApiError` when every try failed or the failure will not fix itself."""
    import httpx

    error = ""
    retryable = True
    wait: float | None = None
    status: int | None = None
    for attempt in range(1, policy.attempts + 1):
        wait = None
        retryable = True
        status = None
        try:
            response = await client.request(method, url, json=json_body, headers=headers)
        except httpx.TimeoutException as exc:
            error = f"{what}: timed out ({type(exc).__name__})"
            if not policy.repeat_unanswered and not isinstance(exc, httpx.ConnectTimeout):
                break
        except httpx.TransportError as exc:
            error = f"{what}: {type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            if 200 <= status < 300:
                try:
                    return _body(response, want)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    # A cut-off body: the next try usually gets all of it.
                    error = f"{what}: the answer is not valid JSON"
            elif status in missing:
                raise Missing(f"{what}: HTTP {status}", status)
            else:
                error = f"{what}: HTTP {status}{_short_body(response)}"
                if status == 429:
                    wait = retry_after(response)
                elif status < 500:
                    retryable = False
                    break  # a client error (bad key, bad request) will not fix itself
        if attempt == policy.attempts or stopping():
            break
        delay = min(max(policy.backoff * 2 ** (attempt - 1), wait or 0.0), policy.max_wait)
        log.info("%s; try %d of %d in %.1fs", error, attempt + 1, policy.attempts, delay)
        if await sleep_unless(stopping, delay):
            break
    raise ApiError(error, retryable=retryable, wait=wait, status=status)


def _body(response: httpx.Response, want: str) -> Any:
    if want == "bytes":
        return response.content
    return response.text if want == "text" else response.json()


def _short_body(response: httpx.Response) -> str:
    """The API's own error message, when it gives one, cut to a line (never the request,
    which carries the key in its headers)."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    message = (data.get("error") or data.get("message")) if isinstance(data, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    return f" ({one_line(str(message))[:200]})" if message else ""
