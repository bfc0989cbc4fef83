"""The lifecycle as data: every issue transition the table lists is made, every other one is
refused in one line, and who paused an issue decides who may end the pause."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.app import issues
from newsletter.lifecycle import ISSUE_TRANSITIONS, IssueState, Op, PausedBy, allowed
from newsletter.store import Store, open_store, utcnow

WEEK = "2024-W05"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store("sqlite:///newsletter.db", tmp_path)
    yield store  # type: ignore[misc]
    store.close()


def _issue(store: Store, state: IssueState, paused_by: PausedBy | None = None) -> object:
    row = store.ensure_issue(WEEK, "subject", status=state.value)
    if paused_by is not None:
        store.transition(row.id, [state.value], state.value, paused_by=paused_by.value)
    return store.get_issue(WEEK)


CASES = [
    (op, state, by)
    for op in Op
    for state in IssueState
    for by in ([*PausedBy] if state == IssueState.PAUSED else [None])
]


@pytest.mark.parametrize(("op", "state", "by"), CASES, ids=lambda v: str(v))
def test_every_transition_is_made_or_refused_as_the_table_says(
    store: Store, op: Op, state: IssueState, by: PausedBy | None
) -> None:
    row = _issue(store, state, by)
    target = ISSUE_TRANSITIONS[op].target
    if allowed(op, state, by):
        moved = issues.transition(store, row, op)
        assert moved.status == target
        if target == IssueState.PAUSED and op != Op.RETRY_LATER:
            assert moved.paused_by == ISSUE_TRANSITIONS[op].sets_paused_by
        if target != IssueState.PAUSED:
            assert moved.paused_by is None and moved.resume_at is None
        return
    with pytest.raises(issues.IssueStateError) as refused:
        issues.transition(store, row, op)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{WEEK} is {state}")
    assert f"{op}" in message
    after = store.get_issue(WEEK)
    assert (after.status, after.paused_by) == (state, by)
    # The quiet form, for the sender's races, refuses the same way without raising.
    assert issues.try_transition(store, row, op) is None


def test_the_refusals_an_operator_meets_read_as_one_line(store: Store) -> None:
    sent = _issue(store, IssueState.SENT)
    with pytest.raises(issues.IssueStateError, match=r"^2024-W05 is sent: resume is allowed only"):
        issues.resume(store, WEEK)
    store.transition(sent.id, ["sent"], "cancelled")
    with pytest.raises(issues.IssueStateError, match=r"is cancelled: approve is allowed only"):
        issues.transition(store, store.get_issue(WEEK), Op.APPROVE)


@pytest.mark.parametrize("by", [PausedBy.OPERATOR, PausedBy.BREAKER])
def test_the_outage_logic_never_ends_a_pause_it_did_not_make(store: Store, by: PausedBy) -> None:
    row = _issue(store, IssueState.PAUSED, by)
    later = utcnow() + dt.timedelta(seconds=1)
    assert not issues.retry_later(store, row, "server: down", later)
    assert not issues.end_outage(store, row)
    after = store.get_issue(WEEK)
    assert (after.status, after.paused_by, after.resume_at) == ("paused", by, None)


def test_an_operator_pause_takes_over_an_outage_pause(store: Store) -> None:
    row = _issue(store, IssueState.SENDING)
    issues.pause_for_outage(store, row, "server: down", utcnow())
    assert store.get_issue(WEEK).paused_by == "outage"
    paused = issues.pause(store, WEEK)
    assert (paused.paused_by, paused.resume_at) == ("operator", None)
    assert not issues.end_outage(store, paused)
    assert issues.resume(store, WEEK).status == "approved"  # nothing was queued yet


def test_approving_a_cancelled_issue_is_refused_by_the_table(store: Store, tmp_path: Path) -> None:
    from newsletter.archive.sources import load_local_archive
    from newsletter.config import load_config
    from newsletter.select import IsoWeek

    config = tmp_path / "config.toml"
    config.write_text('source = "seeds"\n', encoding="utf-8")
    cfg = load_config(
        config, env={}, overrides={"source": str(Path(__file__).parents[1] / "seeds")}
    )
    store.ensure_issue(WEEK, "subject", status="cancelled")
    prepared = issues.prepare(cfg, load_local_archive(cfg), IsoWeek.parse(WEEK))
    with pytest.raises(issues.IssueStateError, match=r"^2024-W05 is cancelled: approve is"):
        issues.approve(store, cfg, prepared)
