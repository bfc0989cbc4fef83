"""How long work waits: one rate limiter, one per-client window (how often a client may
post), one sleep that a stop cuts short, the one way the signals say stop, and how long
work says how far it is (:class:`Pace`).

A stop is an :class:`asyncio.Event` of the running loop, or, where work runs in a loop of
its own in another thread (the writer inside ``newsletter run``), the ``is_set`` of the
service's event passed as a plain callable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable

Stopping = Callable[[], bool]

# How far a long piece of work is, told as it goes: the steps done so far and the steps in
# all. The library only counts; the command line decides how to show it (a bar on a
# terminal, a line every few seconds in a log).
Steps = Callable[[int, int], None]

# How often a sleep polls a stop it cannot await (one set from another thread or loop).
_POLL = 0.25


def never() -> bool:
    return False


async def sleep_unless(
    stop: asyncio.Event | Stopping | None, seconds: float, *, wake: asyncio.Event | None = None
) -> bool:
    """Sleep ``seconds``, waking early when ``stop`` is set (or ``wake``, which is then
    cleared: there is new work); True when stopped."""
    seconds = max(seconds, 0.0)
    if wake is not None and isinstance(stop, asyncio.Event):
        waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        wake.clear()
        return stop.is_set()
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if isinstance(stop, asyncio.Event):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        return stop.is_set()
    end = time.monotonic() + seconds
    while not stop():
        left = end - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, _POLL))
    return True


def on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (in the running loop): work in flight finishes and
    is recorded, nothing new starts."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class RateLimiter:
    """At most ``per_second`` starts a second, evenly spaced, across every task of a loop
    that shares it (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        # No await between reading and moving next_at: the tasks of one loop take turns.
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class Pace:
    """How fast long work goes, and when it is time to say how far it is where no bar can
    be drawn: at most every ``every`` seconds, the first once the work has run that long,
    so that short work says nothing."""

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.started: float | None = None
        self.last = 0.0

    def rate(self, done: int) -> float:
        """Steps a second since the first call."""
        now = self.clock()
        if self.started is None:
            self.started = self.last = now
        return done / max(now - self.started, 1e-6)

    def line(self, what: str, done: int, total: int) -> str | None:
        """``WHAT: DONE of TOTAL (RATE/s, TIME left)`` when it is time to say it, else None."""
        rate = self.rate(done)
        if not total or self.clock() - self.last < self.every:
            return None
        self.last = self.clock()
        left = f", {duration((total - done) / rate)} left" if rate > 0 else ""
        return f"{what}: {done} of {total} ({rate:.1f}/s{left})"


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def logged_steps(
    log: Callable[[str], None],
    what: str,
    *,
    every: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> Steps:
    """A :data:`Steps` for work with no terminal to draw on (the service, its log): a
    :class:`Pace` line through ``log``."""
    pace = Pace(every, clock)

    def update(done: int, total: int) -> None:
        line = pace.line(what, done, total)
        if line is not None:
            log(line)

    return update


class ClientWindow:
    """At most ``most`` events per client address within ``seconds`` (a sliding window, in
    memory): form posts per minute, wrong webhook tokens per ten minutes."""

    # Past this many clients, the quiet ones are forgotten: memory stays bounded whoever
    # sends from however many addresses.
    CLIENTS = 10_000

    def __init__(self, most: int, seconds: float) -> None:
        self.most = most
        self.seconds = seconds
        self.events: dict[str, collections.deque[float]] = {}
        self.lock = threading.Lock()

    def wait(self, client: str, now: float | None = None) -> int:
        """Whole seconds until ``client`` may have another event (0: now)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            return self._wait(client, now)

    def add(self, client: str, now: float | None = None) -> None:
        """Count an event of ``client``."""
        now = time.monotonic() if now is None else now
        with self.lock:
            self._add(client, now)

    def allow(self, client: str, now: float | None = None) -> bool:
        """Count an event of ``client`` if the window has room for it; whether it had."""
        now = time.monotonic() if now is None else now
        with self.lock:
            if self._wait(client, now):
                return False
            self._add(client, now)
            return True

    def give_back(self, client: str) -> None:
        """Forget ``client``'s latest event (an attempt counted up front that succeeded)."""
        with self.lock:
            times = self.events.get(client)
            if times:
                times.pop()

    def _wait(self, client: str, now: float) -> int:
        times = self.events.get(client)
        while times and times[0] <= now - self.seconds:
            times.popleft()
        if not times:
            self.events.pop(client, None)
            return 0
        if len(times) < self.most:
            return 0
        return max(1, math.ceil(times[0] + self.seconds - now))

    def _add(self, client: str, now: float) -> None:
        if len(self.events) > self.CLIENTS:
            self.events = {k: v for k, v in self.events.items() if v and v[-1] > now - self.seconds}
        self.events.setdefault(client, collections.deque()).append(now)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset
    narrows), for sizing pools of workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
