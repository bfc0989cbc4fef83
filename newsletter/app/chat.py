"""The day's papers in the team's chat: ``newsletter post`` and the daily job.

A day's posts are queued in the outbox once per channel (each post's place in the day is
its topic, unique there), then sent by the outbox's chat lane, one after another, so that
a thread's replies follow their message. Queuing again adds nothing; a crash leaves the
posts not yet sent queued (and the one on the wire, which may go out twice).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.mail.chat import DISCORD, SLACK_API, SLACK_WEBHOOK, post_data, webhook_id
from newsletter.mail.sender import Outbox
from newsletter.models import Archive
from newsletter.publish.chat import ChatMessage, discord_messages, slack_messages
from newsletter.publish.site import day_path
from newsletter.select import top_daily
from newsletter.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Channel:
    """A chat the day's papers go to: the outbox kind, the recipient it is known by (a
    Slack channel, or a webhook's hash), and how to post there."""

    kind: str
    recipient: str
    service: str
    papers: int
    lang: str


@dataclass
class PostReport:
    day: dt.date
    # Per channel ("slack #papers"): posts queued now, and the channel's posts of the day.
    queued: dict[str, int]
    posts: dict[str, int]
    tally: Counter[str]


def channels(cfg: Config) -> list[Channel]:
    """The chats configured: Slack when ``slack.channel`` is set, Discord when its webhook
    is. A Slack channel with neither a token nor a webhook is an error, not a silence."""
    found = []
    slack = cfg.slack
    lang = slack.lang or cfg.default_lang
    if slack.channel:
        if slack.token:
            found.append(Channel("slack", slack.channel, SLACK_API, slack.papers, lang))
        elif slack.webhook_url:
            recipient = webhook_id(slack.webhook_url)
            found.append(Channel("slack", recipient, SLACK_WEBHOOK, slack.papers, lang))
        else:
            raise NewsletterError(
                "slack.channel is set, but neither NEWSLETTER_SLACK_TOKEN nor "
                "NEWSLETTER_SLACK_WEBHOOK_URL is"
            )
    elif slack.token or slack.webhook_url:
        log.warning("no Slack posts: slack.channel is empty")
    if cfg.discord.webhook_url:
        found.append(
            Channel(
                "discord",
                webhook_id(cfg.discord.webhook_url),
                DISCORD,
                cfg.discord.papers,
                cfg.discord.lang or cfg.default_lang,
            )
        )
    return found


def messages(cfg: Config, archive: Archive, day: dt.date, channel: Channel) -> list[ChatMessage]:
    """The day's messages for one channel, its top papers in vote order."""
    digest = archive.by_date(day)
    if digest is None:
        raise NewsletterError(f"no digest for {day}")
    picks = top_daily(digest, channel.papers)
    page = cfg.site_url + day_path(day, channel.lang, cfg.default_lang)
    if channel.kind == "discord":
        return discord_messages(day, picks, channel.lang, page)
    return slack_messages(
        day,
        picks,
        channel.lang,
        page,
        thread=cfg.slack.thread and channel.service == SLACK_API,
        webhook=channel.service == SLACK_WEBHOOK,
    )


def latest_day(archive: Archive) -> dt.date:
    if not archive.digests:
        raise NewsletterError("no digest to post: the archive is empty")
    return archive.digests[-1].date


def dry_run(cfg: Config, archive: Archive, day: dt.date | None = None) -> list[dict[str, Any]]:
    """What ``post`` would send, as JSON-ready records; sends and records nothing."""
    day = day or latest_day(archive)
    out = []
    for channel in channels(cfg):
        for message in messages(cfg, archive, day, channel):
            out.append(
                {
                    "service": channel.service,
                    "channel": channel.recipient,
                    "key": f"{day}/{message.key}",
                    "thread": f"{day}/{message.thread}" if message.thread else None,
                    "payload": message.payload,
                }
            )
    return out


def queue_day(cfg: Config, store: Store, archive: Archive, day: dt.date) -> dict[str, int]:
    """Queue the day's posts to every channel that has none of that day yet; per channel,
    how many were added. A day is posted once: later votes or summaries would only repeat
    papers already in the channel (and renumber them)."""
    added = {}
    for channel in channels(cfg):
        if store.post_counts(channel.kind, channel.recipient, f"{day}/"):
            added[_name(channel)] = 0
            continue
        posts = [
            (
                f"{day}/{m.key}",
                post_data(
                    channel.service,
                    f"{day}/{m.key}",
                    m.payload,
                    f"{day}/{m.thread}" if m.thread else None,
                ),
            )
            for m in messages(cfg, archive, day, channel)
        ]
        added[_name(channel)] = store.queue_posts(channel.kind, channel.recipient, posts)
    return added


def post_day(
    cfg: Config,
    store: Store,
    archive: Archive,
    key: bytes,
    day: dt.date | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> PostReport:
    """``newsletter post``: queue the day's posts (the latest day by default) and send
    every chat post that is due."""
    day = day or latest_day(archive)
    queued = queue_day(cfg, store, archive, day)
    tally = asyncio.run(send_posts(cfg, store, key, stop=stop))
    posts = {
        _name(c): store.post_counts(c.kind, c.recipient, f"{day}/")["sent"] for c in channels(cfg)
    }
    return PostReport(day, queued, posts, tally)


async def send_posts(
    cfg: Config, store: Store, key: bytes, *, stop: asyncio.Event | None = None
) -> Counter[str]:
    """Send every chat post that is due, in the order they were queued."""
    return await Outbox(cfg, store, key, stop=stop).send_posts()


def _name(channel: Channel) -> str:
    where = channel.recipient if channel.service == SLACK_API else "webhook"
    return f"{channel.kind} {where}"
