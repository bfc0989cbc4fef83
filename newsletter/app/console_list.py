"""The list as the editor's console shows it: searched and paged, exported as searched,
and counted over time."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TextIO

from newsletter.app.subscribers import check_filters, export_csv
from newsletter.errors import NewsletterError
from newsletter.store import Store, Subscriber

log = logging.getLogger(__name__)

# The most rows one page of the list may ask for, and the longest search kept.
MAX_PAGE = 500
MAX_QUERY = 200


def in_utc(now: dt.datetime) -> dt.datetime:
    """``now`` in UTC, as the database compares times (a naive time is taken as UTC)."""
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


# --- the list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriberPage:
    """One page of a search of the list, in id order: its ``rows``, how many match in all
    (``total``), and the ``after`` of the next page (None: this is the last). The search
    itself is echoed back for the page's links."""

    rows: list[Subscriber]
    total: int
    next_after: int | None
    query: str
    state: str | None
    lang: str | None
    after: int | None
    limit: int


def _search(query: str) -> str:
    return " ".join(query.split())[:MAX_QUERY]


def find_subscribers(
    store: Store,
    *,
    query: str = "",
    state: str | None = None,
    lang: str | None = None,
    after: int | None = None,
    limit: int = 50,
) -> SubscriberPage:
    """Subscribers whose address or name holds ``query`` (any case), in ``state`` and
    ``lang`` when given, ``limit`` at a time from id ``after`` on (keyset paging: the
    last page costs what the first does). An unknown state or language is refused with
    a :class:`NewsletterError` of one line; ``limit`` is kept within 1 to 500."""
    check_filters(state or None, lang or None)
    query = _search(query)
    limit = min(max(limit, 1), MAX_PAGE)
    found, total = store.subscriber_page(
        query=query, status=state or None, lang=lang or None, after=after, limit=limit
    )
    rows = found[:limit]
    more = len(found) > limit
    return SubscriberPage(
        rows=rows,
        total=total,
        next_after=rows[-1].id if more and rows else None,
        query=query,
        state=state or None,
        lang=lang or None,
        after=after,
        limit=limit,
    )


def export_filtered(
    store: Store,
    out: TextIO,
    *,
    query: str = "",
    state: str | None = None,
    lang: str | None = None,
) -> int:
    """The list as :func:`find_subscribers` finds it, as the CSV of ``newsletter
    subscribers export`` (``email,name,lang,status``), streamed a batch at a time;
    returns the rows written. Names that a spreadsheet would run as a formula are made
    inert: this file is downloaded to be opened in one."""
    return export_csv(
        store, out, state or None, query=_search(query), lang=lang or None, spreadsheet=True
    )


# --- the list over time ------------------------------------------------------------------

STEPS = {"day": 1, "week": 7}


def subscribers_over_time(
    store: Store, now: dt.datetime, days: int = 90, *, step: str = "day"
) -> list[tuple[dt.date, int]]:
    """Active subscribers at the end of each day (or week, from Monday) of the last
    ``days`` days up to ``now``'s, in ``now``'s time zone: (first day of the step, count),
    oldest first. The last point counts those active at ``now``.

    Told from each subscriber's latest confirmation and departure (unsubscribed,
    bounced), so one who left and came back counts from their return only."""
    if step not in STEPS:
        raise NewsletterError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
    local = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
    width = STEPS[step]
    first = local.date() - dt.timedelta(days=min(max(days, 1), 3660) - 1)
    if step == "week":
        first -= dt.timedelta(days=first.weekday())
    steps = (local.date() - first).days // width + 1
    start = dt.datetime.combine(first, dt.time(), tzinfo=local.tzinfo)
    # The current step ends at ``now``: whatever is later has not happened yet.
    end = max(start, in_utc(now) + dt.timedelta(microseconds=1))
    rows = store.joins_and_leaves(start, end, dt.timedelta(days=width))
    came = [0] * (steps + 1)
    went = [0] * (steps + 1)
    for joined, left, count in rows:
        came[min(joined, steps - 1) + 1] += count
        if left is not None:
            went[min(left, steps - 1) + 1] += count
    points = []
    active = came[0] - went[0]
    for index in range(steps):
        active += came[index + 1] - went[index + 1]
        points.append((first + dt.timedelta(days=index * width), active))
    return points
