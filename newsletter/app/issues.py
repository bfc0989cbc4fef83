"""The weekly issue's operations: prepare, freeze and approve, start, pause, resume and
cancel, as the CLI, the scheduler and the web app call them.

Every change of state goes through the lifecycle's table (:mod:`newsletter.lifecycle`);
the content is frozen when the issue leaves ``draft`` (:mod:`newsletter.mail.frozen`), and
may be frozen again only while no message of it has been handed to a server.
"""

from __future__ import annotations

import json
import logging

from newsletter.app.links import InsecureLinks, check_links
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.lifecycle import (
    IssueState,
    IssueStateError,
    Op,
    PausedBy,
    describe_counts,
    end_outage,
    finish_if_done,
    pause_for_breaker,
    pause_for_outage,
    refusal,
    reload,
    retry_later,
    transition,
    try_transition,
)
from newsletter.mail.frozen import (
    Prepared,
    content_hash,
    contents,
    frozen,
    frozen_settings,
)
from newsletter.mail.message import message_template
from newsletter.models import Archive
from newsletter.publish.render import LANGS, render_issue
from newsletter.select import IsoWeek, build_issue
from newsletter.store import Issue, Store, utcnow

# The sender's transitions and the frozen content are defined below this layer, and the
# check before a real send beside it; they are named here too, as the operations of an issue.
__all__ = [
    "APPROVED",
    "CANCELLED",
    "DRAFT",
    "PAUSED",
    "SENDING",
    "SENT",
    "InsecureLinks",
    "IssueStateError",
    "NoRecipients",
    "Prepared",
    "approve",
    "cancel",
    "check_links",
    "describe_counts",
    "end_outage",
    "find",
    "finish_if_done",
    "freeze",
    "frozen",
    "pause",
    "pause_for_breaker",
    "pause_for_outage",
    "prepare",
    "reload",
    "resume",
    "retry_later",
    "start",
    "transition",
    "try_transition",
]

log = logging.getLogger(__name__)

DRAFT, APPROVED, SENDING, PAUSED, SENT, CANCELLED = (
    IssueState.DRAFT,
    IssueState.APPROVED,
    IssueState.SENDING,
    IssueState.PAUSED,
    IssueState.SENT,
    IssueState.CANCELLED,
)


class NoRecipients(NewsletterError):
    """Nobody to send to: the issue stays unsent."""


def find(store: Store, week: str) -> Issue:
    row = store.get_issue(week)
    if row is None:
        raise IssueStateError(f"{week} has no issue yet (nothing was approved or sent)")
    return row


# --- rendering and freezing ---------------------------------------------------------------


def prepare(
    cfg: Config,
    archive: Archive,
    week: IsoWeek,
    *,
    approve_url: str = "",
) -> Prepared:
    """Render the week's issue once per language; nothing is written. With
    ``approve_url``, the editor's draft copy: a notice and that link at the top."""
    issue = build_issue(cfg, archive, week)
    templates = {
        lang: message_template(cfg, render_issue(cfg, issue, lang, approve_url=approve_url))
        for lang in LANGS
    }
    return Prepared(week, templates[cfg.default_lang].rendered.subject, templates)


def freeze(store: Store, cfg: Config, prepared: Prepared, *, refreeze: bool = False) -> Issue:
    """Store the issue's content (once; again with ``refreeze`` while nothing was sent)."""
    row = store.ensure_issue(str(prepared.week), prepared.subject, status=DRAFT)
    if row.status == CANCELLED:
        raise IssueStateError(refusal(Op.APPROVE, row.week, row.status))
    if row.content_hash and not refreeze:
        return row
    built = contents(prepared)
    settings = json.dumps(frozen_settings(cfg), sort_keys=True, ensure_ascii=False)
    digest = content_hash(built, settings)
    result = store.freeze_issue(row.id, built, settings, digest, replace=refreeze)
    if result == "refused":
        raise IssueStateError(
            f"{row.week}: messages were already sent, so its content can no longer change"
        )
    if result == "frozen":
        log.info("%s: content frozen (%s)", row.week, digest[:12])
    return reload(store, row)


# --- the transitions an operator makes ---------------------------------------------------------


def approve(store: Store, cfg: Config, prepared: Prepared, *, refreeze: bool = False) -> Issue:
    """Freeze the issue and make it ``approved`` (from ``draft``; a no-op later on)."""
    row = freeze(store, cfg, prepared, refreeze=refreeze)
    if row.status == DRAFT:
        # Another process may approve it at the same moment: either one's move is enough.
        row = try_transition(store, row, Op.APPROVE, approved_at=utcnow()) or reload(store, row)
    return row


def start(store: Store, row: Issue, *, retry_failed: bool = False) -> Issue:
    """Queue a delivery for every active subscriber (idempotently) and make the issue
    ``sending``. :class:`NoRecipients` when the issue would have no delivery at all."""
    if row.status in (DRAFT, CANCELLED):
        raise IssueStateError(refusal(Op.START, row.week, row.status))
    if retry_failed:
        log.info("%s: %d failed deliveries queued again", row.week, store.retry_failed(row.id))
    if row.status == PAUSED:
        return row  # paused stays paused until `newsletter resume` or the server is back
    if row.status == SENT and not retry_failed:
        return row
    added = store.fan_out(row.id)
    log.info("%s: %d new deliveries queued", row.week, added)
    if not store.has_deliveries(row.id):
        raise NoRecipients(f"{row.week}: there are no active subscribers: nothing was sent")
    if row.status in (APPROVED, SENT):
        row = try_transition(store, row, Op.START) or reload(store, row)
    return row


def pause(store: Store, week: str, reason: str = "paused by the operator") -> Issue:
    """An operator's pause: only `newsletter resume` ends it. Pausing an issue that is
    already paused makes the pause the operator's, so the sender never ends it."""
    row = find(store, week)
    if row.status == PAUSED and row.paused_by == PausedBy.OPERATOR:
        return row
    return transition(store, row, Op.PAUSE, paused_reason=reason, resume_at=None)


def resume(store: Store, week: str) -> Issue:
    """An operator's resume of a paused issue (whoever paused it)."""
    row = find(store, week)
    if row.status != PAUSED:
        raise IssueStateError(refusal(Op.RESUME, row.week, row.status))
    op = Op.RESUME if store.has_deliveries(row.id) else Op.UNQUEUE
    return transition(store, row, op)


def cancel(store: Store, week: str) -> tuple[Issue, int]:
    """Cancel the issue: nothing more of it is sent. Returns the row and the deliveries
    that will not be made."""
    row = transition(store, find(store, week), Op.CANCEL, cancelled_at=utcnow())
    return row, store.skip_pending(row.id, "issue cancelled")
