"""What the web app refuses before any page sees a request, over raw sockets to a real
uvicorn server: request smuggling, and clients that leave mid-request."""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from newsletter.config import Config
from newsletter.web.app import create_app


def _exchange(base: str, request: bytes, *, close_after: float | None = None) -> bytes:
    """Send ``request`` on a new connection and read until the server closes it (a kept
    connection is closed by the server's keep-alive timeout)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(request)
        if close_after is not None:
            time.sleep(close_after)
            return b""
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


# Asks for the connection to end after it: where it is answered, nothing waits after it.
SMUGGLED = b"GET /robots.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 49\r\n",
        b"content-length: 0\r\ntransfer-encoding: chunked\r\n",
    ],
)
def test_a_request_with_both_lengths_is_refused_and_its_connection_closed(
    cfg: Config, live_server: Callable[..., str], framing: bytes
) -> None:
    """A front proxy reading the length the other way would pass a second request hidden
    in the body; it must not be answered on this connection."""
    base = live_server(create_app(cfg))
    request = (
        b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + framing + b"\r\n0\r\n\r\n"
    )
    answer = _exchange(base, request + SMUGGLED)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nconnection: close\r\n" in answer.lower()
    # Closed after the answer: the GET after it, sent already, was never answered.
    assert answer.count(b"HTTP/1.1 ") == 1
    # Framed one way, the same request is answered and the connection kept for the next.
    fine = request.replace(framing, b"Transfer-Encoding: chunked\r\n")
    answer = _exchange(base, fine + SMUGGLED)
    assert answer.count(b"HTTP/1.1 ") == 2 and answer.endswith(b"Disallow: /preferences/\n")


def test_a_client_leaving_mid_body_is_one_log_line(
    cfg: Config, live_server: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = cfg.replace(
        secret_key="test-secret-key-of-at-least-32-bytes",
        bounces=dataclasses.replace(cfg.bounces, webhook_token="t" * 40),
    )
    base = live_server(create_app(cfg))
    caplog.set_level(logging.INFO)
    for head in (
        b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a",
        b"POST /webhooks/bounce HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + b"t" * 40
        + b"\r\nContent-Length: 100\r\n\r\n{",
    ):
        _exchange(base, head, close_after=0.2)
    deadline = time.monotonic() + 10
    while len(_left(caplog.records)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.getMessage() for r in _left(caplog.records)] == [
        "POST /subscribe: the client went away before sending the whole request",
        "POST /webhooks/bounce: the client went away before sending the whole request",
    ]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def _left(records: list[Any]) -> list[Any]:
    return [r for r in records if r.name == "newsletter.web.edge"]
