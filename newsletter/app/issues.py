"""The weekly issue as a first-class object: its states, their transitions, and the one
orchestration (prepare, freeze, deliver) that the CLI, the scheduler and the workers call.

::

    draft -> approved -> sending <-> paused -> sent
      \\________\\___________\\__________\\______-> cancelled

An issue's content is **frozen** when it leaves ``draft`` (approval, or the first send):
the subject, HTML and text of each language and the settings its messages are built
with are stored with a content hash, and every worker, resume and retry builds its
messages from that, never from the archive or the settings of the moment. It may be
frozen again only while no message of it has been handed to a server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from newsletter.config import Config, EmailConfig, EmailEdition
from newsletter.errors import NewsletterError
from newsletter.lifecycle import ISSUE_TRANSITIONS, IssueState, Op, PausedBy, refusal
from newsletter.mail.message import MessageTemplate, message_domain, message_template
from newsletter.models import Archive
from newsletter.publish.outputs import publish_issue
from newsletter.publish.render import LANGS, RenderedIssue, build_issue, render_issue
from newsletter.select import IsoWeek
from newsletter.store import Issue, Store, utcnow

log = logging.getLogger(__name__)

DRAFT, APPROVED, SENDING, PAUSED, SENT, CANCELLED = (
    IssueState.DRAFT,
    IssueState.APPROVED,
    IssueState.SENDING,
    IssueState.PAUSED,
    IssueState.SENT,
    IssueState.CANCELLED,
)
# The settings that shape an issue's messages (headers and links), frozen with it. The
# DKIM key and selector are not: a key rotation must apply to the rest of a send.
FROZEN_EMAIL = ("name", "from_address", "from_name", "reply_to", "list_id", "unsubscribe_mailto")
# Each language's edition (its sender name and List-Id), frozen the same way.
FROZEN_EDITIONS = LANGS
FROZEN_TOP = ("base_url", "default_lang")


class IssueStateError(NewsletterError):
    """A transition the issue's current state does not allow."""


class NoRecipients(NewsletterError):
    """Nobody to send to: the issue stays unsent."""


def try_transition(store: Store, row: Issue, op: Op, **values: Any) -> Issue | None:
    """Make ``op`` on ``row`` as :data:`lifecycle.ISSUE_TRANSITIONS` allows it, in one
    compare-and-set; the issue as it is now, or None when the table refused it (another
    process may have moved the issue since ``row`` was read)."""
    t = ISSUE_TRANSITIONS[op]
    now = utcnow()
    if t.sets_paused_by is not None:
        values = {"paused_by": t.sets_paused_by.value, "paused_at": now, **values}
    if t.clears_pause:
        values = {**values, "paused_by": None, "paused_reason": None, "paused_at": None}
        values["resume_at"] = None
    whose = None if t.paused_by is None else [p.value for p in t.paused_by]
    sources = [s.value for s in t.sources]
    if not store.transition(row.id, sources, t.target.value, when_paused_by=whose, **values):
        return None
    if row.status != t.target:
        log.info("%s: %s -> %s (%s)", row.week, row.status, t.target.value, op.value)
    return reload(store, row)


def transition(store: Store, row: Issue, op: Op, **values: Any) -> Issue:
    """:func:`try_transition`, refused with :class:`IssueStateError` and its one line."""
    moved = try_transition(store, row, op, **values)
    if moved is None:
        current = reload(store, row)
        raise IssueStateError(refusal(op, row.week, current.status, current.paused_by))
    return moved


def reload(store: Store, row: Issue) -> Issue:
    """The issue as it is now."""
    current = store.get_issue_by_id(row.id)
    if current is None:
        raise IssueStateError(f"{row.week} no longer exists")
    return current


def find(store: Store, week: str) -> Issue:
    row = store.get_issue(week)
    if row is None:
        raise IssueStateError(f"{week} has no issue yet (nothing was approved or sent)")
    return row


# --- rendering and freezing ---------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """An issue's messages, ready to personalize: one template per language."""

    week: IsoWeek
    subject: str
    templates: dict[str, MessageTemplate]

    def template(self, lang: str, default: str) -> MessageTemplate:
        return self.templates.get(lang) or self.templates[default]


def prepare(
    cfg: Config,
    archive: Archive,
    week: IsoWeek,
    *,
    publish: bool = True,
    approve_url: str = "",
) -> Prepared:
    """Render the week's issue once per language (and publish its web copy, with the site
    around it, from the archive as the parse cache holds it). With ``approve_url``, the
    editor's draft copy: a notice and that link at the top."""
    issue = build_issue(cfg, archive, week)
    if publish:
        publish_issue(cfg, week)
    templates = {
        lang: message_template(cfg, render_issue(cfg, issue, lang, approve_url=approve_url))
        for lang in LANGS
    }
    return Prepared(week, templates[cfg.default_lang].rendered.subject, templates)


def _frozen_settings(cfg: Config) -> dict[str, Any]:
    return {
        **{key: getattr(cfg, key) for key in FROZEN_TOP},
        # The address the links were made for: an unset base_url follows the port of the
        # process that froze the issue, and every later sender must use that one.
        "base_url": cfg.site_url,
        "email": {
            **{key: getattr(cfg.email, key) for key in FROZEN_EMAIL},
            **{lang: dataclasses.asdict(getattr(cfg.email, lang)) for lang in FROZEN_EDITIONS},
        },
    }


def _contents(prepared: Prepared) -> list[dict[str, str]]:
    rows = []
    for lang, template in sorted(prepared.templates.items()):
        r = template.rendered
        rows.append(
            {
                "lang": lang,
                "subject": r.subject,
                "html": r.html,
                "text": r.text,
                "preheader": r.preheader,
                "marker": r.marker,
                "web_url": r.web_url,
            }
        )
    return rows


def content_hash(contents: list[dict[str, str]], settings: str) -> str:
    digest = hashlib.sha256(settings.encode("utf-8"))
    for row in contents:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def freeze(store: Store, cfg: Config, prepared: Prepared, *, refreeze: bool = False) -> Issue:
    """Store the issue's content (once; again with ``refreeze`` while nothing was sent)."""
    row = store.ensure_issue(str(prepared.week), prepared.subject, status=DRAFT)
    if row.status == CANCELLED:
        raise IssueStateError(f"{row.week} was cancelled")
    if row.content_hash and not refreeze:
        return row
    contents = _contents(prepared)
    settings = json.dumps(_frozen_settings(cfg), sort_keys=True, ensure_ascii=False)
    digest = content_hash(contents, settings)
    result = store.freeze_issue(row.id, contents, settings, digest, replace=refreeze)
    if result == "refused":
        raise IssueStateError(
            f"{row.week}: messages were already sent, so its content can no longer change"
        )
    if result == "frozen":
        log.info("%s: content frozen (%s)", row.week, digest[:12])
    return reload(store, row)


def _frozen_email(email: EmailConfig, stored: dict[str, Any]) -> EmailConfig:
    # Issues frozen before editions existed have none stored: today's apply.
    values = {key: value for key, value in stored.items() if key not in FROZEN_EDITIONS}
    for lang in FROZEN_EDITIONS:
        if isinstance(stored.get(lang), dict):
            values[lang] = EmailEdition(**stored[lang])
    return dataclasses.replace(email, **values)


def frozen(store: Store, cfg: Config, row: Issue) -> Prepared:
    """The issue's messages as frozen: the stored content with the stored settings (and
    today's DKIM key)."""
    if not row.content_hash or row.frozen_settings is None:
        raise IssueStateError(f"{row.week} has no frozen content: approve it first")
    settings = json.loads(row.frozen_settings)
    built = dataclasses.replace(
        cfg,
        **{key: settings[key] for key in FROZEN_TOP if key in settings},
        email=_frozen_email(cfg.email, settings.get("email", {})),
    )
    week = IsoWeek.parse(row.week)
    templates = {}
    for content in store.frozen_contents(row.id):
        rendered = RenderedIssue(
            week=week,
            lang=content.lang,
            subject=content.subject,
            html=content.html,
            text=content.text,
            preheader=content.preheader,
            marker=content.marker,
            web_url=content.web_url,
        )
        templates[content.lang] = message_template(built, rendered)
    if not templates:
        raise IssueStateError(f"{row.week}: its frozen content is missing")
    default = built.default_lang if built.default_lang in templates else next(iter(templates))
    return Prepared(week, templates[default].rendered.subject, templates)


# --- the transitions an operator makes ---------------------------------------------------------


def approve(store: Store, cfg: Config, prepared: Prepared, *, refreeze: bool = False) -> Issue:
    """Freeze the issue and make it ``approved`` (from ``draft``; a no-op later on)."""
    row = freeze(store, cfg, prepared, refreeze=refreeze)
    if row.status == DRAFT:
        # Another process may approve it at the same moment: either one's move is enough.
        row = try_transition(store, row, Op.APPROVE, approved_at=utcnow()) or (reload(store, row))
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
    if not any(store.counts(row.id).values()):
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


def pause_for_outage(store: Store, row: Issue, reason: str, resume_at: dt.datetime) -> bool:
    """The server failed: pause until ``resume_at``, when the sender tries it again. False
    when the issue is no longer sending (paused or cancelled meanwhile)."""
    done = try_transition(store, row, Op.OUTAGE, paused_reason=reason, resume_at=resume_at)
    if done is not None:
        log.warning("%s paused: %s (next try %s)", row.week, reason, resume_at.isoformat())
    return done is not None


def pause_for_breaker(store: Store, row: Issue, reason: str) -> bool:
    """Most recent recipients were refused for one reason: pause for a person to look."""
    done = try_transition(store, row, Op.BREAKER, paused_reason=reason)
    if done is not None:
        log.error("%s paused: %s", row.week, reason)
    return done is not None


def retry_later(store: Store, row: Issue, reason: str, resume_at: dt.datetime) -> bool:
    """Still failing: a new reason and resume time. False when the pause is no longer the
    outage's (an operator paused or cancelled the issue meanwhile)."""
    done = try_transition(store, row, Op.RETRY_LATER, paused_reason=reason, resume_at=resume_at)
    return done is not None


def end_outage(store: Store, row: Issue) -> bool:
    """The server answers again: back to ``sending``, unless an operator took over."""
    done = try_transition(store, row, Op.END_OUTAGE) is not None
    if done:
        log.info("%s: the server answers again, sending resumes", row.week)
    return done


def resume(store: Store, week: str) -> Issue:
    """An operator's resume of a paused issue (whoever paused it)."""
    row = find(store, week)
    if row.status != PAUSED:
        raise IssueStateError(refusal(Op.RESUME, row.week, row.status))
    op = Op.RESUME if any(store.counts(row.id).values()) else Op.UNQUEUE
    return transition(store, row, op)


def cancel(store: Store, week: str) -> tuple[Any, int]:
    """Cancel the issue: nothing more of it is sent. Returns the row and the deliveries
    that will not be made."""
    row = transition(store, find(store, week), Op.CANCEL, cancelled_at=utcnow())
    return row, store.skip_pending(row.id, "issue cancelled")


def finish_if_done(store: Store, row: Issue) -> bool:
    """``sending`` becomes ``sent`` only when no delivery is queued, sending or waiting."""
    if store.pending(row.id):
        return False
    return try_transition(store, row, Op.FINISH, finished_at=utcnow()) is not None


# --- checks before a real send ------------------------------------------------------------------


class InsecureLinks(NewsletterError):
    pass


def check_links(cfg: Config, *, allow_insecure: bool) -> None:
    """A real SMTP send needs https links (RFC 8058 one-click) and a real Message-ID domain;
    the Maildir outbox is for trying things out and is exempt."""
    if not cfg.smtp.host or allow_insecure:
        return
    if urlsplit(cfg.site_url).scheme != "https":
        where = (
            f"base_url is {cfg.base_url}"
            if cfg.base_url
            else f"base_url is not set, so links point to the listening address {cfg.site_url}"
        )
        raise InsecureLinks(
            f"{where}: one-click unsubscribe (RFC 8058) needs an https base_url in a real "
            "send (--allow-insecure-links to send anyway, for testing)"
        )
    domain = message_domain(cfg)
    if domain in ("localhost", "localhost.localdomain") or "." not in domain:
        raise InsecureLinks(
            f"Message-IDs would end in @{domain}: set email.from_address (or "
            "email.dkim_domain) to your domain (--allow-insecure-links to send anyway)"
        )


def describe_counts(counts: dict[str, int]) -> str:
    waiting = counts.get("queued", 0) + counts.get("sending", 0)
    return (
        f"{counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped, {waiting} waiting"
    )
