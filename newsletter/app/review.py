"""What the editor reviews of one issue: its email as subscribers get it (the frozen
content once approved, else as the archive renders it now) and test copies of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from newsletter.app import delivery
from newsletter.config import Config
from newsletter.mail.frozen import Prepared, frozen
from newsletter.mail.message import preferences_url, recipient_tokens, unsubscribe_url
from newsletter.mail.tokens import secret_key
from newsletter.select import IsoWeek, NoIssueError
from newsletter.store import Issue, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssueView:
    """An issue's email in one language: ``html`` with a sample recipient's links (""
    when there is nothing to show, then ``problem`` says why). ``frozen``: whether this is
    the content approved, not a draft's render."""

    issue: Issue
    lang: str
    html: str
    frozen: bool
    problem: str = ""


def _prepared(cfg: Config, store: Store, row: Issue) -> tuple[Prepared, bool]:
    if row.content_hash:
        return frozen(store, cfg, row), True
    from newsletter.archive.sources import load_local_archive

    return delivery.prepare(cfg, load_local_archive(cfg), IsoWeek.parse(row.week)), False


def issue_view(cfg: Config, store: Store, row: Issue, lang: str) -> IssueView:
    try:
        prepared, is_frozen = _prepared(cfg, store, row)
    except (NoIssueError, OSError) as exc:
        return IssueView(row, lang, "", False, str(exc))
    template = prepared.template(lang, cfg.default_lang)
    # Subscriber 0 does not exist: the links open real pages that say it is a sample.
    tokens = recipient_tokens(cfg, secret_key(cfg), 0)
    html = template.rendered.html_for(
        unsubscribe_url(cfg, tokens["unsubscribe_token"]),
        preferences_url(cfg, tokens["preferences_token"]),
    )
    return IssueView(row, template.rendered.lang, html, is_frozen)


def test_copy(cfg: Config, store: Store, row: Issue, key: bytes, address: str, lang: str) -> int:
    """Queue a copy of the issue (as approved, or as it renders now) for ``address``,
    outside the issue's ledger; the sender sends it. Returns the mail's id."""
    prepared, _ = _prepared(cfg, store, row)
    return delivery.send_test_copy(cfg, store, prepared, key, address, lang)
