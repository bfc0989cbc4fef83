"""Pacing: the one rate limiter, the sleep a stop cuts short, the signals that say stop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

from newsletter.pacing import RateLimiter, on_signals, sleep_unless


def test_the_rate_limiter_spaces_starts_evenly_across_tasks() -> None:
    limiter = RateLimiter(20.0)
    assert limiter.interval == 0.05
    assert RateLimiter(0).interval == 0.0
    starts: list[float] = []

    async def task() -> None:
        for _ in range(3):
            await limiter.wait()
            starts.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(task(), task())

    asyncio.run(main())
    starts.sort()
    # Six starts at 20 a second take at least five intervals, whoever asks.
    assert starts[-1] - starts[0] >= 5 * 0.05 - 0.005


def test_a_sleep_ends_early_on_an_event_or_a_stop_set_from_another_thread() -> None:
    async def on_event() -> tuple[bool, float]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        started = time.monotonic()
        return await sleep_unless(stop, 30), time.monotonic() - started

    stopped, took = asyncio.run(on_event())
    assert stopped and took < 5

    async def on_wake() -> tuple[bool, float, bool]:
        stop, wake = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, wake.set)
        started = time.monotonic()
        stopped = await sleep_unless(stop, 30, wake=wake)
        return stopped, time.monotonic() - started, wake.is_set()

    stopped, took, still_set = asyncio.run(on_wake())
    assert not stopped and took < 5 and not still_set  # woken for new work, and ready again

    flag = threading.Event()
    threading.Timer(0.05, flag.set).start()
    started = time.monotonic()
    assert asyncio.run(sleep_unless(flag.is_set, 30)) is True
    assert time.monotonic() - started < 5
    assert asyncio.run(sleep_unless(None, 0.01)) is False
    assert asyncio.run(sleep_unless(threading.Event().is_set, 0.01)) is False


def test_sigterm_sets_the_stop() -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        on_signals(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        return await sleep_unless(stop, 30)

    try:
        assert asyncio.run(main()) is True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_logged_steps_says_how_far_long_work_is_every_few_seconds_and_short_work_nothing() -> None:
    from newsletter.pacing import logged_steps

    now = [100.0]
    lines: list[str] = []
    steps = logged_steps(lines.append, "sending", every=5.0, clock=lambda: now[0])
    for done in range(0, 40):  # 0.5 s a step: 20 s of work
        steps(done, 40)
        now[0] += 0.5
    # One line each 5 s, none before the work has run 5 s.
    assert len(lines) == 3, lines
    assert lines[0] == "sending: 10 of 40 (2.0/s, 15s left)"
    assert lines[-1].startswith("sending: 30 of 40")

    short: list[str] = []
    quick = logged_steps(short.append, "rendering web pages", every=5.0, clock=lambda: now[0])
    for done in range(10):
        quick(done, 10)
        now[0] += 0.1
    assert short == []
