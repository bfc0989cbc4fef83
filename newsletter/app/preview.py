"""Previewing an issue exactly as a subscriber gets it, for a sample recipient."""

from __future__ import annotations

from typing import Literal

from newsletter.config import Config
from newsletter.mail.message import (
    message_template,
    preferences_url,
    recipient_tokens,
    unsubscribe_url,
)
from newsletter.mail.tokens import secret_key
from newsletter.models import Archive
from newsletter.publish.render import render_issue
from newsletter.select import IsoWeek, build_issue

# The recipient a preview is addressed to: never a real subscriber.
SAMPLE_RECIPIENT = ("독자", "reader@example.com")

Format = Literal["html", "text", "eml"]


def preview(cfg: Config, archive: Archive, week: IsoWeek, lang: str, fmt: Format) -> bytes:
    """The week's issue in ``lang`` as HTML, plain text or a whole message (.eml), with a
    sample recipient's links. :class:`newsletter.select.NoIssueError` for a week without
    digests."""
    rendered = render_issue(cfg, build_issue(cfg, archive, week), lang)
    key = secret_key(cfg)
    # Subscriber 0 does not exist: the links open real pages that say it is a sample.
    tokens = recipient_tokens(cfg, key, 0)
    url = unsubscribe_url(cfg, tokens["unsubscribe_token"])
    preferences = preferences_url(cfg, tokens["preferences_token"])
    if fmt == "html":
        return rendered.html_for(url, preferences).encode("utf-8")
    if fmt == "text":
        return rendered.text_for(url, preferences).encode("utf-8")
    name, address = SAMPLE_RECIPIENT
    message = message_template(cfg, rendered).personalize(
        to_address=address, to_name=name, **tokens
    )
    return message.data
