"""One record per scheduled run of a job, so that no fire time runs twice."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.tables import (
    job_runs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobRun:
    """A scheduled run of a job as recorded; every time is timezone-aware (UTC)."""

    id: int
    job: str
    fire_time: dt.datetime
    status: str
    owner: str | None
    attempts: int
    next_try_at: dt.datetime | None
    detail: str | None
    started_at: dt.datetime
    updated_at: dt.datetime


def _job_run(row: sa.Row[Any]) -> JobRun:
    return JobRun(
        id=row.id,
        job=row.job,
        fire_time=_aware(row.fire_time),
        status=row.status,
        owner=row.owner,
        attempts=row.attempts,
        next_try_at=_aware(row.next_try_at),
        detail=row.detail,
        started_at=_aware(row.started_at),
        updated_at=_aware(row.updated_at),
    )


def _dead_local_owner(owner: str | None, alive: Callable[[int], bool]) -> bool:
    """Whether ``owner`` (``host:pid:nonce``) names a process of this host that is gone."""
    host, _, rest = (owner or "").partition(":")
    if host != socket.gethostname():
        return False
    try:
        return not alive(int(rest.split(":", 1)[0]))
    except ValueError:
        return False


class JobQueries(StoreBase):
    def claim_job_run(
        self,
        job: str,
        fire_time: dt.datetime,
        owner: str,
        now: dt.datetime,
        alive: Callable[[int], bool],
    ) -> bool:
        """Take the run of ``job`` at ``fire_time``: a new one, a ``waiting`` one whose
        retry time has come, or a ``running`` one whose local holder died. False when
        it is done, skipped, or held by a live process."""
        # Always UTC: SQLite keeps the wall time and drops the offset.
        fire_time, now = fire_time.astimezone(dt.UTC), now.astimezone(dt.UTC)
        with self.engine.begin() as conn:
            inserted = conn.execute(
                self._insert(job_runs)
                .values(
                    job=job,
                    fire_time=fire_time,
                    status="running",
                    owner=owner,
                    attempts=1,
                    started_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["job", "fire_time"])
            )
            if inserted.rowcount:
                return True
            row = _job_run(
                conn.execute(
                    sa.select(job_runs).where(
                        job_runs.c.job == job, job_runs.c.fire_time == fire_time
                    )
                ).one()
            )
            retry_due = row.status == "waiting" and (
                row.next_try_at is None or row.next_try_at <= now
            )
            orphaned = row.status == "running" and _dead_local_owner(row.owner, alive)
            if not (retry_due or orphaned):
                return False
            taken = conn.execute(
                job_runs.update()
                .where(
                    job_runs.c.id == row.id,
                    job_runs.c.status == row.status,
                    job_runs.c.attempts == row.attempts,
                )
                .values(status="running", owner=owner, attempts=row.attempts + 1, updated_at=now)
            )
            return bool(taken.rowcount)

    def finish_job_run(
        self,
        job: str,
        fire_time: dt.datetime,
        status: str,
        detail: str = "",
        next_try_at: dt.datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                job_runs.update()
                .where(job_runs.c.job == job, job_runs.c.fire_time == fire_time.astimezone(dt.UTC))
                .values(
                    status=status,
                    detail=detail[:1000],
                    next_try_at=next_try_at.astimezone(dt.UTC) if next_try_at else None,
                    owner=None,
                    updated_at=utcnow(),
                )
            )

    def list_job_runs(self, job: str | None = None) -> list[JobRun]:
        """Recorded runs, oldest fire time first (``fire_time`` and ``next_try_at`` in UTC)."""
        query = sa.select(job_runs).order_by(job_runs.c.fire_time, job_runs.c.job)
        if job is not None:
            query = query.where(job_runs.c.job == job)
        with self.engine.connect() as conn:
            return [_job_run(row) for row in conn.execute(query)]
