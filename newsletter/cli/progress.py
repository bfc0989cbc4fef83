"""How far a command's long work is: a progress bar on a terminal, a line every few seconds
elsewhere.

The library counts (a :data:`~newsletter.pacing.Steps` callback: steps done, steps in all);
the command decides how that shows. With standard output and standard error both a
terminal, a rich progress bar on standard error with the counts, the rate and the time left;
in a pipe, a log file or under cron, a plain ``progress:`` line on standard error every
:data:`EVERY` seconds. Nothing of it ever reaches a standard output that is not a terminal.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import click

from newsletter.pacing import Pace

__all__ = ["EVERY", "PAGES_AT_LEAST", "Meter", "Task", "meter", "page_meter", "pages", "sending"]

# How often long work says how far it is where no bar can be drawn.
EVERY = 5.0
# A site build shows how far it is from this many web pages to render: a few hundred take
# seconds, fewer are done before a bar could be read.
PAGES_AT_LEAST = 200


class Task:
    """One piece of work of a :class:`Meter`, called as it goes with the steps done, the
    steps in all, and a note such as ``sent 10 · failed 1``. Nothing is shown while the
    steps in all are fewer than ``at_least``: short work needs no sign of life."""

    def __init__(self, meter: Meter, what: str, at_least: int) -> None:
        self.meter = meter
        self.what = what
        self.at_least = at_least
        self.pace = Pace(meter.every, meter.clock)
        self.bar_task: Any = None

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if total < self.at_least:
            self.pace.rate(done)  # the clock starts with the work, shown or not
            return
        label = f"{self.what}: {note}" if note else self.what
        bar = self.meter.shown()
        if bar is None:
            line = self.pace.line(label, done, total)
            if line is not None:
                click.echo(f"progress: {line}", err=True)
            return
        if self.bar_task is None:
            self.bar_task = bar.add_task(label, total=total, rate=0.0)
        rate = self.pace.rate(done)
        bar.update(self.bar_task, total=total, completed=done, rate=rate, description=label)


class Meter:
    """The long work of one command: a line every ``every`` seconds, or, given a rich
    ``bar`` (not yet started), that bar, drawn from the first piece of work that shows."""

    def __init__(
        self,
        bar: Any = None,
        *,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bar = bar
        self.every = every
        self.clock = clock
        self.drawn = False

    def track(self, what: str, *, at_least: int = 1) -> Task:
        """A callback for one piece of work, shown once it has ``at_least`` steps."""
        return Task(self, what, at_least)

    def shown(self) -> Any:
        """The bar, drawing it now if it is not yet; None without one."""
        if self.bar is not None and not self.drawn:
            self.bar.start()
            self.drawn = True
        return self.bar

    def close(self) -> None:
        if self.drawn:
            self.bar.stop()


def _bar() -> Any:
    """A rich progress bar on standard error, when both standard streams are a terminal."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f}/s"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


@contextlib.contextmanager
def meter() -> Iterator[Meter]:
    """The :class:`Meter` of a command's long work, for as long as the work runs."""
    found = Meter(_bar())
    try:
        yield found
    finally:
        found.close()


def pages(meter: Meter) -> Task:
    """How far a site build is, in web pages, once there are :data:`PAGES_AT_LEAST`."""
    return meter.track("rendering web pages", at_least=PAGES_AT_LEAST)


@contextlib.contextmanager
def page_meter() -> Iterator[Task]:
    """:func:`pages`, for a command whose one long piece of work is a site build."""
    with meter() as found:
        yield pages(found)


def sending(meter: Meter) -> Callable[[Counter[str], int], None]:
    """The sender's tally (sent, failed, skipped, retrying) as one piece of work."""
    task = meter.track("sending")

    def update(tally: Counter[str], total: int) -> None:
        done = tally["sent"] + tally["failed"] + tally["skipped"]
        note = f"sent {tally['sent']} · failed {tally['failed']} · retrying {tally['retrying']}"
        task(done, total, note)

    return update
