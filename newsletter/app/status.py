"""What ``newsletter status`` reports: an issue's state and deliveries, its bounces and
complaints against the rates providers act on, the list, the reports by mail that acted on
nobody, and the writer's usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from newsletter.store import FailedDelivery, Issue, Store, Unmatched, WriterDay

# Above these shares of the messages handed over, mailbox providers throttle or block.
COMPLAINT_RATE_LIMIT = 0.001
BOUNCE_RATE_LIMIT = 0.02


@dataclass(frozen=True)
class Rates:
    """An issue's bounces and complaints as shares of the messages handed to a server."""

    bounce: float
    complaint: float

    @property
    def too_many_bounces(self) -> bool:
        return self.bounce > BOUNCE_RATE_LIMIT

    @property
    def too_many_complaints(self) -> bool:
        return self.complaint > COMPLAINT_RATE_LIMIT


@dataclass(frozen=True)
class IssueStatus:
    issue: Issue
    counts: dict[str, int]
    failures: list[FailedDelivery]
    reports: dict[str, int]

    @property
    def rates(self) -> Rates | None:
        """None while nothing was handed to a server."""
        return rates(self.counts, self.reports)


def rates(counts: Mapping[str, int], reports: Mapping[str, int]) -> Rates | None:
    """The rates of an issue whose deliveries are ``counts`` by state and ``reports`` by
    what came back (``refused`` included); None while nothing was handed to a server."""
    handed = counts.get("sent", 0) + counts.get("failed", 0)
    if not handed:
        return None
    bounced = reports.get("hard", 0) + reports.get("soft", 0) + reports.get("refused", 0)
    return Rates(bounced / handed, reports.get("complaint", 0) / handed)


@dataclass(frozen=True)
class Status:
    """The issue asked for (None when there is none yet), the list by state, the reports
    that proved no delivery of ours (``unmatched``, waiting in the mailbox for a person),
    and the writer's recent days."""

    issue: IssueStatus | None
    subscribers: dict[str, int]
    writer_days: list[WriterDay]
    unmatched: Unmatched


def status(store: Store, week: str | None = None) -> Status:
    """The status of ``week``'s issue, or of the latest one."""
    row = store.get_issue(week) if week else store.latest_issue()
    issue = None
    if row is not None:
        counts = store.counts(row.id)
        issue = IssueStatus(row, counts, store.failures(row.id), store.bounce_counts(row.id))
    return Status(issue, store.count_subscribers(), store.writer_days(), store.unmatched())
