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
    ``Retry-After``, in seconds; ``status``: the last answer's HTTP status, if any;
    ``unreachable``: no connection could be made at all; ``reason``: the why alone, without
    what was asked for (``HTTP 401 (Incorrect API key)``, ``connection refused``)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        wait: float | None = None,
        status: int | None = None,
        unreachable: bool = False,
        reason: str = "",
    ):
        super().__init__(message)
        self.retryable = retryable
        self.wait = wait
        self.status = status
        self.unreachable = unreachable
        self.reason = reason or message


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
    # False where a wrong address is likelier than a passing outage (the first request of
    # a run): a connection that cannot be made is reported at once, not after the backoff.
    retry_unreachable: bool = True

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

    failed = _Failure("no try made")
    for attempt in range(1, policy.attempts + 1):
        try:
            response = await client.request(method, url, json=json_body, headers=headers)
        except httpx.TransportError as exc:
            failed = _transport_failure(exc, policy)
        else:
            status = response.status_code
            if status in missing:
                raise Missing(f"{what}: HTTP {status}", status)
            if 200 <= status < 300:
                try:
                    return _body(response, want)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    # A cut-off body: the next try usually gets all of it.
                    failed = _Failure("the answer is not valid JSON")
            else:
                failed = _status_failure(response)
        if failed.final or attempt == policy.attempts or stopping():
            break
        delay = min(max(policy.backoff * 2 ** (attempt - 1), failed.wait or 0.0), policy.max_wait)
        log.info(
            "%s: %s; try %d of %d in %.1fs",
            what,
            failed.reason,
            attempt + 1,
            policy.attempts,
            delay,
        )
        if await sleep_unless(stopping, delay):
            break
    raise ApiError(
        f"{what}: {failed.reason}",
        retryable=failed.retryable,
        wait=failed.wait,
        status=failed.status,
        unreachable=failed.unreachable,
        reason=failed.reason,
    )


@dataclass(frozen=True)
class _Failure:
    """One try that failed: why, and whether another try may help (``final``: not now)."""

    reason: str
    retryable: bool = True
    final: bool = False
    wait: float | None = None
    status: int | None = None
    unreachable: bool = False


def _transport_failure(exc: Exception, policy: RetryPolicy) -> _Failure:
    import httpx

    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = f"{type(exc).__name__}: {_connect_reason(exc, policy)}"
        return _Failure(reason, final=not policy.retry_unreachable, unreachable=True)
    if isinstance(exc, httpx.TimeoutException):
        return _Failure(f"timed out ({type(exc).__name__})", final=not policy.repeat_unanswered)
    return _Failure(f"{type(exc).__name__}: {exc}")


def _status_failure(response: httpx.Response) -> _Failure:
    status = response.status_code
    reason = f"HTTP {status}{_short_body(response)}"
    if status == 429:
        return _Failure(reason, wait=retry_after(response), status=status)
    if status < 500:
        # A client error (a bad key, a bad request) will not fix itself.
        return _Failure(reason, retryable=False, final=True, status=status)
    return _Failure(reason, status=status)


def _connect_reason(exc: Exception, policy: RetryPolicy) -> str:
    """Why no connection could be made, in words (httpx often says only "All connection
    attempts failed", the cause being deeper in the chain)."""
    import socket

    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {policy.connect_timeout:g} s"
    cause: BaseException | None = exc
    deepest: BaseException = exc
    while cause is not None:
        deepest = cause
        cause = cause.__cause__ or cause.__context__
    if isinstance(deepest, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(deepest, socket.gaierror):
        return f"cannot resolve the host name ({deepest.strerror})"
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror
    return str(exc) or type(exc).__name__


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
