"""The states of issues, deliveries and subscribers, and the one table of issue transitions.

::

    draft -> approved -> sending <-> paused -> sent
      \\________\\___________\\__________\\______-> cancelled

Every change of an issue's state is one named operation of :data:`ISSUE_TRANSITIONS`,
made by :func:`newsletter.app.issues.transition` as a compare-and-set in the database: the
row changes only if it is, at that instant, in a state the operation may start from
(and, for a paused issue, paused by whom the operation may act for). Two processes can
never both make the same move, and a move the table does not list is refused in one line.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from newsletter.errors import NewsletterError
from newsletter.store import Issue, Store, utcnow

log = logging.getLogger(__name__)


class IssueState(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    CANCELLED = "cancelled"


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class SubscriberState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class PausedBy(StrEnum):
    """Who paused an issue, and so who may end the pause: only ``newsletter resume`` ends
    an operator's or the circuit breaker's; the sender ends its own outage pause when the
    server answers again."""

    OPERATOR = "operator"
    OUTAGE = "outage"
    BREAKER = "breaker"


# How long a pending subscriber's confirmation link works; a sign-up never confirmed
# within it is deleted.
CONFIRM_DAYS = 7

# Deliveries a sender may still take: not yet handed to a server for good.
WAITING = (DeliveryState.QUEUED, DeliveryState.SENDING)


class Op(StrEnum):
    """The operations that change an issue's state, by the name an operator knows."""

    APPROVE = "approve"
    START = "start"
    PAUSE = "pause"
    OUTAGE = "outage"
    BREAKER = "breaker"
    RETRY_LATER = "retry later"
    END_OUTAGE = "end outage"
    RESUME = "resume"
    UNQUEUE = "resume before the first delivery"
    CANCEL = "cancel"
    FINISH = "finish"


@dataclass(frozen=True)
class Transition:
    op: Op
    sources: frozenset[IssueState]
    target: IssueState
    # For a source of ``paused``: whose pauses this operation may act on (None: anyone's).
    paused_by: frozenset[PausedBy] | None = None
    # What the transition sets on the issue: who paused it, and the pause's fields cleared.
    sets_paused_by: PausedBy | None = None
    clears_pause: bool = False


_S = IssueState
ISSUE_TRANSITIONS: dict[Op, Transition] = {
    t.op: t
    for t in (
        Transition(Op.APPROVE, frozenset({_S.DRAFT}), _S.APPROVED),
        # `newsletter send --retry-failed` sends a finished issue's failures once more.
        Transition(Op.START, frozenset({_S.APPROVED, _S.SENT}), _S.SENDING),
        # An operator's pause also takes over an outage's or the breaker's: then only
        # `newsletter resume` ends it.
        Transition(
            Op.PAUSE,
            frozenset({_S.APPROVED, _S.SENDING, _S.PAUSED}),
            _S.PAUSED,
            sets_paused_by=PausedBy.OPERATOR,
        ),
        Transition(Op.OUTAGE, frozenset({_S.SENDING}), _S.PAUSED, sets_paused_by=PausedBy.OUTAGE),
        Transition(Op.BREAKER, frozenset({_S.SENDING}), _S.PAUSED, sets_paused_by=PausedBy.BREAKER),
        # The server still fails: a new reason and time, only while the pause is the outage's.
        Transition(
            Op.RETRY_LATER,
            frozenset({_S.PAUSED}),
            _S.PAUSED,
            paused_by=frozenset({PausedBy.OUTAGE}),
        ),
        Transition(
            Op.END_OUTAGE,
            frozenset({_S.PAUSED}),
            _S.SENDING,
            paused_by=frozenset({PausedBy.OUTAGE}),
            clears_pause=True,
        ),
        Transition(Op.RESUME, frozenset({_S.PAUSED}), _S.SENDING, clears_pause=True),
        # Paused before its first delivery was queued: back to approved.
        Transition(Op.UNQUEUE, frozenset({_S.PAUSED}), _S.APPROVED, clears_pause=True),
        Transition(
            Op.CANCEL,
            frozenset({_S.DRAFT, _S.APPROVED, _S.SENDING, _S.PAUSED}),
            _S.CANCELLED,
            clears_pause=True,
        ),
        Transition(Op.FINISH, frozenset({_S.SENDING}), _S.SENT),
    )
}


def allowed(op: Op, state: str, paused_by: str | None = None) -> bool:
    """Whether ``op`` may start from an issue in ``state`` (paused by ``paused_by``)."""
    t = ISSUE_TRANSITIONS[op]
    if state not in t.sources:
        return False
    if state == IssueState.PAUSED and t.paused_by is not None:
        return paused_by in t.paused_by
    return True


_PAUSERS: dict[str, str] = {
    PausedBy.OPERATOR: "by the operator",
    PausedBy.OUTAGE: "by a server outage",
    PausedBy.BREAKER: "by the circuit breaker",
}


def describe_pause(paused_by: str | None) -> str:
    """Who paused, in the words `newsletter issues` and `status` use ("" if unknown)."""
    return _PAUSERS.get(paused_by or "", "")


def refusal(op: Op, week: str, state: str, paused_by: str | None = None) -> str:
    """The one line that refuses ``op`` on an issue in ``state``."""
    t = ISSUE_TRANSITIONS[op]
    if state == IssueState.PAUSED and state in t.sources and t.paused_by is not None:
        whose = " or ".join(_PAUSERS[p] for p in sorted(t.paused_by))
        return f"{week} is paused {describe_pause(paused_by)}: {op} applies only to a pause {whose}"
    sources = " or ".join(s.value for s in IssueState if s in t.sources)
    return f"{week} is {state}: {op} is allowed only when it is {sources}"


# --- making a transition ---------------------------------------------------------------------


class IssueStateError(NewsletterError):
    """A transition the issue's current state does not allow."""


def try_transition(store: Store, row: Issue, op: Op, **values: Any) -> Issue | None:
    """Make ``op`` on ``row`` as :data:`lifecycle.ISSUE_TRANSITIONS` allows it, in one
    compare-and-set; the issue as it is now, or None when the table refused it (another
    process may have moved the issue since ``row`` was read)."""
    t = ISSUE_TRANSITIONS[op]
    now = utcnow()
    if t.sets_paused_by is not None:
        values = {"paused_by": t.sets_paused_by.value, "paused_at": now, **values}
    if t.clears_pause:
        cleared = ("paused_by", "paused_reason", "paused_at", "resume_at")
        values = {**values, **dict.fromkeys(cleared)}
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


# --- the sender's own transitions -------------------------------------------------------------


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


def finish_if_done(store: Store, row: Issue) -> bool:
    """``sending`` becomes ``sent`` only when no delivery is queued, sending or waiting."""
    if store.pending(row.id):
        return False
    return try_transition(store, row, Op.FINISH, finished_at=utcnow()) is not None


def describe_counts(counts: dict[str, int]) -> str:
    waiting = counts.get("queued", 0) + counts.get("sending", 0)
    return (
        f"{counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
        f"{counts.get('skipped', 0)} skipped, {waiting} waiting"
    )
