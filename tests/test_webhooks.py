"""The bounce webhook's door: the token's length, and clients that keep guessing it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import run_newsletter

from newsletter.config import Config, ConfigError, load_config
from newsletter.mail.webhooks import LOCKOUT_SECONDS, MAX_WRONG_TOKENS, Lockout
from newsletter.web.app import create_app

TOKEN = "relay-token-of-at-least-thirty-two-bytes"


def test_a_short_webhook_token_stops_every_command_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(config, env={"NEWSLETTER_WEBHOOK_TOKEN": "x" * 31})
    assert str(refused.value) == (
        "NEWSLETTER_WEBHOOK_TOKEN: the webhook token must be at least 32 bytes, it has 31; "
        "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
    assert load_config(config, env={"NEWSLETTER_WEBHOOK_TOKEN": TOKEN}).bounces.webhook_token
    monkeypatch.setenv("NEWSLETTER_WEBHOOK_TOKEN", "short")
    process = run_newsletter(config, "config")
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0 and out == ""
    assert err.splitlines() == [
        "error: NEWSLETTER_WEBHOOK_TOKEN: the webhook token must be at least 32 bytes, it has 5; "
        "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    ]


def test_a_client_guessing_the_token_is_answered_429_and_others_are_not(
    cfg: Config, live_server: Callable[..., str]
) -> None:
    """Ten wrong tokens, then 429 with Retry-After whatever the client sends, the right
    token too; a relay at another address is let in all the while."""
    cfg = cfg.replace(bounces=dataclasses.replace(cfg.bounces, webhook_token=TOKEN))
    url = live_server(create_app(cfg)) + "/webhooks/bounce"
    event = {"email": "nobody@example.org", "kind": "soft"}
    codes = [
        httpx.post(url, json=event, headers={"Authorization": f"Bearer guess-{i}"}).status_code
        for i in range(MAX_WRONG_TOKENS)
    ]
    assert codes == [401] * MAX_WRONG_TOKENS
    for auth in ("Bearer guess-again", f"Bearer {TOKEN}"):
        locked = httpx.post(url, json=event, headers={"Authorization": auth})
        assert locked.status_code == 429
        assert 0 < int(locked.headers["retry-after"]) <= LOCKOUT_SECONDS
        assert locked.json()["error"].startswith("too many wrong tokens: try again in")
    # Another client (a relay posting from its own address) is not locked out.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport) as relay:
        answer = relay.post(url, json=event, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text


def test_the_lockout_ends_when_the_oldest_wrong_token_is_old_enough() -> None:
    lockout = Lockout(most=3, seconds=60)
    for at in (0.0, 10.0, 20.0):
        assert lockout.wait("203.0.113.9", now=at) == 0
        lockout.failed("203.0.113.9", now=at)
    assert lockout.wait("203.0.113.9", now=21.0) == 39
    assert lockout.wait("198.51.100.7", now=21.0) == 0
    assert lockout.wait("203.0.113.9", now=60.5) == 0  # one try more, then locked again
    lockout.failed("203.0.113.9", now=60.5)
    assert lockout.wait("203.0.113.9", now=61.0) == 9
