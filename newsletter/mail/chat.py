"""The outbox's chat transport: a queued post goes to Slack's Web API (``chat.postMessage``
with a bot token), a Slack incoming webhook, or a Discord webhook.

A post's row holds what to send (:func:`post_data`); the secrets come from the settings
when it is sent, never from the database. Failures are typed as the sender knows them: a
service that does not answer usefully after the retries of :mod:`newsletter.http` (429
with its wait, 5xx, timeouts) is a :class:`ServerError`, and the post waits; a message the
service refuses is a :class:`MessageError`; a refused token, a gone webhook or a channel
the bot is not in is a :class:`ChatSetupError`, which stops the run with one line saying
what to fix, since every post after it would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.http import ApiError, RetryPolicy, request
from newsletter.mail.transport import Gate, MessageError, ServerError, opened

if TYPE_CHECKING:
    import httpx

    from newsletter.store import Store

log = logging.getLogger(__name__)

SLACK_API = "slack-api"
SLACK_WEBHOOK = "slack-webhook"
DISCORD = "discord"

# Slack's answers that mean the setup, not this message, is wrong.
_SLACK_SETUP = {
    "invalid_auth": "NEWSLETTER_SLACK_TOKEN was refused",
    "not_authed": "NEWSLETTER_SLACK_TOKEN was refused",
    "token_revoked": "NEWSLETTER_SLACK_TOKEN was revoked",
    "token_expired": "NEWSLETTER_SLACK_TOKEN has expired",
    "account_inactive": "NEWSLETTER_SLACK_TOKEN belongs to a deactivated app or user",
    "missing_scope": "NEWSLETTER_SLACK_TOKEN lacks the chat:write scope",
    "channel_not_found": "slack.channel was not found",
    "not_in_channel": "the app is not in slack.channel: invite it (/invite @app)",
    "is_archived": "slack.channel is archived",
}
# Retries and waits well within the five minutes a sender leases a post for; a post the
# service may have taken without answering is not sent again at once.
POLICY = RetryPolicy(attempts=4, backoff=1.0, max_wait=30.0, timeout=30.0, repeat_unanswered=False)


class ChatSetupError(NewsletterError):
    """The chat service refused the token, the webhook or the channel."""


def webhook_id(url: str) -> str:
    """A webhook's name in the outbox (its hash: the URL itself is a secret)."""
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def post_data(service: str, topic: str, payload: dict[str, Any], thread: str | None) -> bytes:
    """A queued post's row data: the service, its place in the day, the message, and the
    topic of the post whose thread it goes in."""
    body = {"service": service, "topic": topic, "payload": payload, "thread": thread}
    return json.dumps(body, ensure_ascii=False).encode()


class ChatTransport:
    """Posts queued chat messages; :meth:`send` answers the id the service gave the post
    (Slack's ``ts``, Discord's message id), kept as the row's message id."""

    def __init__(self, cfg: Config, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.client: httpx.AsyncClient | None = None

    async def send(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        *,
        wire_ready: bool = False,
        gate: Gate | None = None,
    ) -> str | None:
        if not await opened(gate):
            return None
        post = json.loads(data)
        service, payload = post["service"], dict(post["payload"])
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(timeout=POLICY.timeouts(), follow_redirects=False)
        if service == SLACK_API:
            posted = await self._slack(recipient, payload, post.get("thread"))
        elif service == SLACK_WEBHOOK:
            await self._call(
                self.cfg.slack.webhook_url,
                payload,
                "Slack webhook",
                check="NEWSLETTER_SLACK_WEBHOOK_URL",
                want="text",
            )
            posted = "webhook"
        elif service == DISCORD:
            url = self.cfg.discord.webhook_url
            answer = await self._call(
                url + ("&" if "?" in url else "?") + "wait=true",
                payload,
                "Discord webhook",
                check="NEWSLETTER_DISCORD_WEBHOOK_URL",
            )
            posted = str(answer.get("id", "")) if isinstance(answer, dict) else ""
        else:
            raise MessageError(f"unknown chat service {service!r}", permanent=True)
        return posted

    async def _slack(self, channel: str, payload: dict[str, Any], thread: str | None) -> str:
        if not self.cfg.slack.token:
            raise ChatSetupError("NEWSLETTER_SLACK_TOKEN is not set (needed to post threads)")
        payload["channel"] = channel
        if thread is not None:
            # The day's message is recorded before a reply can be claimed (a channel's
            # posts go one after another), so its ts is in the ledger.
            parent = self._parent(channel, thread)
            if parent:
                payload["thread_ts"] = parent
        url = self.cfg.slack.api_url.rstrip("/") + "/chat.postMessage"
        headers = {"Authorization": f"Bearer {self.cfg.slack.token}"}
        answer = await self._call(
            url,
            payload,
            "Slack chat.postMessage",
            check="NEWSLETTER_SLACK_TOKEN and slack.api_url",
            headers=headers,
        )
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = str(answer.get("error", "no answer")) if isinstance(answer, dict) else "?"
            if error in _SLACK_SETUP:
                raise ChatSetupError(
                    f"Slack: {_SLACK_SETUP[error]} ({error}; slack.channel = {channel!r})"
                )
            if error in ("ratelimited", "service_unavailable", "internal_error", "fatal_error"):
                raise ServerError(f"Slack: {error}")
            raise MessageError(f"Slack refused the message: {error}", permanent=True)
        return str(answer.get("ts", ""))

    def _parent(self, channel: str, thread: str) -> str:
        """The ts of the post a reply threads to; "" when that post failed for good (the
        reply then goes to the channel itself rather than nowhere)."""
        row = self.store.post("slack", channel, thread)
        if row is not None and row.status == "sent" and row.message_id:
            return row.message_id
        if row is None or row.status in ("failed", "skipped"):
            log.warning("%s was not posted: its replies go to the channel", thread)
            return ""
        raise MessageError(f"{thread} is not posted yet", permanent=False)

    async def _call(
        self,
        url: str,
        payload: dict[str, Any],
        what: str,
        *,
        check: str,
        headers: dict[str, str] | None = None,
        want: Any = "json",
    ) -> Any:
        """The service's answer; ``check``: what to fix when it refuses us (401, 403, 404,
        410: a bad token, a gone webhook, a wrong address)."""
        assert self.client is not None
        try:
            return await request(
                self.client,
                "POST",
                url,
                what=what,
                policy=POLICY,
                json_body=payload,
                headers=headers,
                want=want,
            )
        except ApiError as exc:
            if exc.retryable:
                raise ServerError(str(exc), code=exc.status) from None
            if exc.status in (401, 403, 404, 410):
                raise ChatSetupError(f"{exc}: check {check}") from None
            raise MessageError(str(exc), permanent=True, code=exc.status) from None

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
