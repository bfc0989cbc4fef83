"""What ``newsletter write`` paid for: summaries by paper and prompt, usage per day."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from newsletter.store.base import StoreBase, _aware, utcnow
from newsletter.store.tables import (
    summaries,
    writer_days,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterDay:
    """A digest day the writer worked on: the model's usage, and what the last write left
    (``written_at`` is None until a write finished). Times are timezone-aware (UTC)."""

    day: dt.date
    requests: int
    failures: int
    tokens_in: int
    tokens_out: int
    papers: int
    pending: int
    written_at: dt.datetime | None
    updated_at: dt.datetime


def _writer_day_row(row: sa.Row[Any]) -> WriterDay:
    return WriterDay(
        day=row.day,
        requests=row.requests,
        failures=row.failures,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        papers=row.papers,
        pending=row.pending,
        written_at=_aware(row.written_at),
        updated_at=_aware(row.updated_at),
    )


class WriterQueries(StoreBase):
    def get_summaries(self, arxiv_ids: Iterable[str], prompt_hash: str) -> dict[str, str]:
        """The cached summary bodies of ``arxiv_ids`` under ``prompt_hash``, by arXiv id."""
        ids = list(arxiv_ids)
        if not ids:
            return {}
        query = sa.select(summaries.c.arxiv_id, summaries.c.body).where(
            summaries.c.prompt_hash == prompt_hash, summaries.c.arxiv_id.in_(ids)
        )
        with self.engine.connect() as conn:
            return {row.arxiv_id: row.body for row in conn.execute(query)}

    def put_summary(
        self,
        arxiv_id: str,
        prompt_hash: str,
        model: str,
        body: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                self._insert(summaries)
                .values(
                    arxiv_id=arxiv_id,
                    prompt_hash=prompt_hash,
                    model=model,
                    body=body,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["arxiv_id", "prompt_hash"])
            )

    def _writer_day(self, conn: Connection, day: dt.date) -> None:
        conn.execute(
            self._insert(writer_days)
            .values(day=day, updated_at=utcnow())
            .on_conflict_do_nothing(index_elements=["day"])
        )

    def add_writer_usage(
        self, day: dt.date, *, requests: int, failures: int, tokens_in: int, tokens_out: int
    ) -> None:
        """Add one model call (or several) to ``day``'s usage."""
        with self.engine.begin() as conn:
            self._writer_day(conn, day)
            conn.execute(
                writer_days.update()
                .where(writer_days.c.day == day)
                .values(
                    requests=writer_days.c.requests + requests,
                    failures=writer_days.c.failures + failures,
                    tokens_in=writer_days.c.tokens_in + tokens_in,
                    tokens_out=writer_days.c.tokens_out + tokens_out,
                    updated_at=utcnow(),
                )
            )

    def finish_writer_day(self, day: dt.date, papers: int, pending: int) -> None:
        """Record that ``day``'s digest was written with ``papers`` papers, ``pending`` of
        them still without a summary."""
        now = utcnow()
        with self.engine.begin() as conn:
            self._writer_day(conn, day)
            conn.execute(
                writer_days.update()
                .where(writer_days.c.day == day)
                .values(papers=papers, pending=pending, written_at=now, updated_at=now)
            )

    def writer_day(self, day: dt.date) -> WriterDay | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(writer_days).where(writer_days.c.day == day)).first()
        return None if row is None else _writer_day_row(row)

    def writer_days(self, limit: int = 14) -> list[WriterDay]:
        """The latest ``limit`` days the writer worked on, newest first."""
        query = sa.select(writer_days).order_by(writer_days.c.day.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_writer_day_row(row) for row in conn.execute(query)]

    def close(self) -> None:
        self.engine.dispose()
