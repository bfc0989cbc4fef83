"""The processes: ``newsletter run`` (scheduler, web app and sender), ``serve`` (web app
and sender) and ``tick`` (everything due, once).

In ``run`` and ``serve`` the sender has its own thread and event loop: sending (store
calls, signing, Maildir writes) never holds up a web request, and a send in progress
never delays a job. The web app and the scheduler only queue work and wake the sender.

``run`` listens as soon as its feeds are in the public folder and nothing refuses the
start (the port taken, another ``run`` on the database, the settings): the database, the
scheduler, the sender and the rest of the web app are imported and opened after that,
while the feeds already answer (:mod:`newsletter.web.starting`). So the modules they need
are imported in the functions that use them, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from newsletter.config import Config, forget_listening, remember_listening, span_seconds
from newsletter.errors import NewsletterError
from newsletter.mail.tokens import signing_keys
from newsletter.pacing import logged_steps, on_signals, sleep_unless
from newsletter.publish.manifest import FEEDS, PAGES, Manifest
from newsletter.publish.names import ATOM_NAME, JSON_NAME
from newsletter.publish.pending import PendingPages
from newsletter.service.scheduler_lock import scheduler_lock
from newsletter.words import count

if TYPE_CHECKING:
    from newsletter.archive.cache import Catalog
    from newsletter.archive.sources import FetchOptions
    from newsletter.service.scheduler import JobContext, Outcome
    from newsletter.store import Store

log = logging.getLogger(__name__)

# How often the sender looks for work nobody woke it for (a `newsletter send` elsewhere,
# a retry coming due).
POLL_SECONDS = 5.0


class SenderThread:
    """The sender of a long-lived process (``run``, ``serve``): the outbox's one drain, in
    a thread with its own event loop, woken when the web app or the scheduler queues work."""

    def __init__(self, cfg: Config, store: Store, key: bytes) -> None:
        self.cfg = cfg
        self.store = store
        self.key = key
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None

    def start(self) -> SenderThread:
        self._thread.start()
        self._ready.wait()
        return self

    def running(self) -> bool:
        """Whether the thread runs: started, and neither stopped nor ended by an error."""
        return self._thread.is_alive()

    def wake(self) -> None:
        """There is new work (from any thread)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Finish the messages in flight, record them, and end the thread."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("the sender stopped on an error")
            self._ready.set()

    async def _main(self) -> None:
        from newsletter.app import delivery
        from newsletter.mail.sender import Outbox
        from newsletter.service.scheduler import logged_sending

        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        self._ready.set()
        outbox = Outbox(self.cfg, self.store, self.key, stop=self._stop, progress=logged_sending())
        await delivery.keep_draining(outbox, poll=POLL_SECONDS, wake=self._wake)


# --- newsletter run and newsletter tick -----------------------------------------------------


async def poll_bounces(cfg: Config, store: Store, key: bytes, stop: asyncio.Event) -> None:
    """Every ``bounces.poll_every``: the bounce mailbox (when one is configured) and the
    subscriptions never confirmed. In a thread: IMAP, Maildir and the database would
    otherwise hold up the web app on this loop."""
    from newsletter.mail import bounces

    every = span_seconds(cfg.bounces.poll_every)
    while not stop.is_set():
        try:
            result = await asyncio.to_thread(bounces.poll, cfg, store, signing_keys(cfg))
            if bounces.configured(cfg):
                log.info("bounce mailbox: %s", result.summary())
        except NewsletterError as exc:
            log.error("bounce mailbox: %s", exc)
        except Exception:
            log.exception("reading the bounce mailbox failed; trying again later")
        await sleep_unless(stop, every)


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, before anything else is done, so that a taken port
    is one line of ours at once, not uvicorn's exit after the start-up work. It listens
    when :func:`_listen` says so."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets it creates itself; Linux passes the listening
    # socket's setting to every accepted one, so keep-alive answers are not held ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def _listen(sock: socket.socket) -> socket.socket:
    host, port = sock.getsockname()[:2]
    try:
        sock.listen(128)
    except OSError as exc:  # another process bound it too, and listened first
        raise _cannot_listen(host, port, exc) from None
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> NewsletterError:
    where = f"cannot listen on {host}:{port}"
    other = port + 1 if port < 65535 else 8000
    if exc.errno == errno.EADDRINUSE:
        why = "another program is already listening there"
        hint = f"choose another port with --port, e.g. --port {other}"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
        hint = f"choose another port with --port, e.g. --port {max(other, 8000)}"
    else:
        why = (exc.strerror or str(exc)).lower()
        hint = "--host (web.host) must be an address of this machine"
    return NewsletterError(f"{where}: {why}; {hint}")


def _web_server(app: Any, *, signals: bool = True) -> Any:
    """A uvicorn server for ``app``, logging through the process's one format. Without
    ``signals`` the caller owns SIGTERM and SIGINT (``run``: jobs stop first)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    # Its protocol classes now rather than once listening, where the first request waits.
    config.load()
    return uvicorn.Server(config) if signals else Server(config)


async def serve(
    cfg: Config,
    *,
    host: str,
    port: int,
    clock: Callable[[], dt.datetime] | None = None,
    web: bool = True,
    stop: asyncio.Event | None = None,
    signals: bool = True,
) -> None:
    """``newsletter run``: the scheduler and the web app in this event loop, and the sender
    in its own thread, until SIGTERM or SIGINT (or ``stop``). Jobs in progress finish
    first; a send stops after its in-flight messages.

    Before listening, only what may refuse the start or what the feeds need: the port, the
    scheduler lock, the signing key, and the feeds when they are missing or link elsewhere.
    The database, the whole web app, the sender and the scheduler follow, while the feeds
    answer."""
    from newsletter.mail.tokens import secret_key
    from newsletter.web.starting import StartingApp

    # Bound before anything else: a port in use is then all there is to say.
    sock = _bind(host, port) if web else None
    try:
        with scheduler_lock(cfg.database_url, cfg.base_dir):
            stop = stop or asyncio.Event()
            if signals:
                on_signals(stop)
            key = secret_key(cfg)
            clock = clock or _utcnow
            now = clock()
            pending = PendingPages()
            catalog = await _feeds_first(cfg, pending)
            app = StartingApp(cfg, pending)
            await app.preload()
            server = _web_server(app, signals=False)
            server_task = None
            if sock is not None:
                server_task = asyncio.create_task(server.serve(sockets=[_listen(sock)]))
                _log_listening(cfg, host, port)
            try:
                built = await asyncio.to_thread(_build, cfg, key, stop, clock, pending)
                ctx, sender, whole = built
                try:
                    app.attach(whole)
                    await _schedule_and_serve(ctx, sender, catalog, server_task, now, pending)
                finally:
                    ctx.store.close()
            finally:
                # The web app stops last; a request still waiting for it is answered.
                app.close()
                if server_task is not None:
                    server.should_exit = True
                    await server_task
            log.info("stopped")
    finally:
        if sock is not None:
            forget_listening(cfg)
            sock.close()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _build(
    cfg: Config,
    key: bytes,
    stop: asyncio.Event,
    clock: Callable[[], dt.datetime],
    pending: PendingPages,
) -> tuple[JobContext, SenderThread, Any]:
    """In a worker thread while the feeds answer: the scheduler's and the web app's
    imports, the database (its schema brought up to date), the jobs' context with their
    scheduler, the sender (neither started yet) and the whole web app."""
    from newsletter.service.scheduler import JobContext, new_scheduler
    from newsletter.store import open_store
    from newsletter.web.app import create_app

    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        sender = SenderThread(cfg, store, key)
        ctx = JobContext(cfg, store, key, stop, clock=clock, wake_sender=sender.wake)
        scheduler = ctx.scheduler = new_scheduler(cfg)
        # /readyz: not ready until the scheduler and the sender run, nor once either stops.
        running = {"scheduler": lambda: scheduler.running, "sender": sender.running}
        app = create_app(cfg, sender.wake, pending, running)
        return ctx, sender, app
    except BaseException:
        store.close()
        raise


async def _feeds_first(cfg: Config, pending: PendingPages) -> Catalog | None:
    """Before listening: the feeds, when they are missing or link to another address (a
    first start; base_url unset and a new --port); the archive read for them, if it was.
    Feeds written for this address answer at once and are brought up to date right after.
    The pages follow after listening: until each is written, the web app answers it with
    503 (``pending``)."""
    manifest = Manifest.load(cfg)
    catalog = None
    feeds = [cfg.public_path / name for name in (ATOM_NAME, JSON_NAME)]
    if manifest.stale(FEEDS) or not all(path.is_file() for path in feeds):
        catalog = await _refresh_feeds(cfg)
    pending.start(stale=manifest.stale(PAGES))
    return catalog


async def _schedule_and_serve(
    ctx: JobContext,
    sender: SenderThread,
    catalog: Catalog | None,
    server_task: asyncio.Task[Any] | None,
    now: dt.datetime,
    pending: PendingPages,
) -> None:
    """The sender, the scheduler, the start-up work and the bounce poller, until stopped
    (or the web server ends); then the jobs in progress finish, and the sender stops after
    its in-flight messages."""
    from newsletter.service.scheduler import ensure_jobs, installed, restore_retries

    cfg, store, stop, scheduler = ctx.cfg, ctx.store, ctx.stop, ctx.scheduler
    assert scheduler is not None
    sender.start()
    try:
        with installed(ctx):
            scheduler.start()
            ensure_jobs(scheduler, cfg)
            await asyncio.to_thread(restore_retries, scheduler, cfg, store, now)
            for job in scheduler.get_jobs():
                when = job.next_run_time
                log.info(
                    "next %s run: %s",
                    job.id,
                    when.astimezone(cfg.tz).isoformat() if when else "paused",
                )
            if not stop.is_set():  # else stopped while starting: the next start does it
                for work in (
                    _start_up(ctx, catalog, pending),
                    poll_bounces(cfg, store, ctx.key, stop),
                ):
                    task = asyncio.create_task(work)
                    ctx.running.add(task)
                    task.add_done_callback(ctx.running.discard)
            await _until_stopped(stop, server_task)
            log.info("stopping: %s to finish first", count(len(ctx.running), "job"))
            while ctx.running:
                await asyncio.gather(*list(ctx.running), return_exceptions=True)
    finally:
        await asyncio.to_thread(sender.stop)
        if scheduler.running:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop turn


async def _until_stopped(stop: asyncio.Event, server_task: asyncio.Task[Any] | None) -> None:
    """Until ``stop`` is set, or the web server ends by itself; then ``stop`` is set."""
    stopping = asyncio.create_task(stop.wait())
    waiters: set[asyncio.Task[Any]] = {stopping}
    if server_task is not None:
        waiters.add(server_task)
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await stopping


def _log_listening(cfg: Config, host: str, port: int) -> None:
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    remember_listening(cfg.replace(web=dataclasses.replace(cfg.web, host=host, port=port)))
    if cfg.base_url:
        log.info("listening on %s; links point to base_url, %s", address, cfg.site_url)
    else:
        log.info(
            "listening on %s; links point to %s (base_url is not set: set it to the "
            "public address before anyone subscribes)",
            address,
            cfg.site_url,
        )


async def _refresh_feeds(cfg: Config) -> Catalog:
    """The archive from the parse cache (new and changed files parsed), and the feeds
    brought up to date with it."""
    from newsletter.archive.sources import local_catalog
    from newsletter.publish.outputs import refresh_feeds

    catalog = await asyncio.to_thread(local_catalog, cfg)
    for problem in catalog.problems:
        log.warning("%s", problem)
    await asyncio.to_thread(refresh_feeds, cfg, catalog)
    dates = catalog.dates()
    log.info(
        "archive: %s (%s to %s; %s parsed), feeds in %s",
        count(len(dates), "digest"),
        dates[0] if dates else "-",
        dates[-1] if dates else "-",
        count(catalog.stats.parsed, "file"),
        cfg.public_path,
    )
    return catalog


async def _start_up(ctx: JobContext, catalog: Catalog | None, pending: PendingPages) -> None:
    from newsletter.service.scheduler import run_due, start_up

    try:
        if catalog is None:
            try:
                catalog = await _refresh_feeds(ctx.cfg)
            except Exception:
                log.exception("bringing the feeds up to date failed; the daily job tries again")
                pending.finish()
                await run_due(ctx, ctx.clock())
                return
        await start_up(ctx, catalog, pending)
    finally:
        pending.finish()  # whatever happened, no page waits for this build any more


async def _serve_until_signal(
    server: Any, cfg: Config, address: tuple[str, int], sock: socket.socket, pending: PendingPages
) -> None:
    """Serve until SIGTERM or SIGINT, bringing the site up to date for this address
    meanwhile (``pending``: the pages still to come); then let the requests in progress
    finish."""
    stop = asyncio.Event()
    on_signals(stop)
    writing, catalog = None, None
    try:
        catalog = await _feeds_first(cfg, pending)
    except Exception:
        # Serving the public folder as it is beats not serving it (one that another
        # process writes, say).
        log.exception("bringing the feeds up to date failed; serving the site as it is")
        pending.finish()
    serving = asyncio.create_task(server.serve(sockets=[_listen(sock)]))
    _log_listening(cfg, *address)
    if pending.building:
        writing = asyncio.create_task(_write_site(cfg, catalog, pending, stop))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()  # a build in progress stops between two pages
    stopping.cancel()
    if writing is not None:
        await writing
    server.should_exit = True
    await serving


async def _write_site(
    cfg: Config, catalog: Catalog | None, pending: PendingPages, stop: asyncio.Event
) -> None:
    """``serve``'s build: the feeds, the front page, then every page, each only when what
    it shows or where it links changed."""
    from newsletter.publish.outputs import publish_weeks

    try:
        if catalog is None:
            catalog = await _refresh_feeds(cfg)
        today = dt.datetime.now(cfg.tz).date()
        pages = logged_steps(log.info, "rendering web pages")
        await asyncio.to_thread(
            publish_weeks, cfg, catalog, today, None, stop, pending=pending, progress=pages
        )
    except Exception:
        log.exception("bringing the site up to date failed; the pages stay as they were")
    finally:
        pending.finish()


def serve_web(cfg: Config, host: str, port: int) -> None:
    """``newsletter serve``: the web app, the site brought up to date for its address, and
    a sender thread for the mails it queues and any issue being sent."""
    from newsletter.mail.tokens import secret_key
    from newsletter.store import open_store
    from newsletter.web.app import create_app

    with _bind(host, port) as sock:
        store = open_store(cfg.database_url, cfg.base_dir)
        sender = SenderThread(cfg, store, secret_key(cfg)).start()
        try:
            pending = PendingPages()
            app = create_app(cfg, sender.wake, pending, {"sender": sender.running})
            server = _web_server(app, signals=False)
            asyncio.run(_serve_until_signal(server, cfg, (host, port), sock, pending))
        finally:
            forget_listening(cfg)
            sender.stop()
            store.close()


def run_service(cfg: Config, host: str, port: int) -> None:
    asyncio.run(serve(cfg, host=host, port=port))


async def tick(
    cfg: Config, now: dt.datetime, *, fetch: FetchOptions | None = None
) -> dict[str, Outcome | None]:
    """``newsletter tick``: resume any send left unfinished, then run once each job due
    at ``now`` that has not run yet, and return. Retries not yet due are left for the
    next tick, so the command never lingers."""
    from newsletter.archive.sources import FetchOptions
    from newsletter.mail import bounces
    from newsletter.mail.tokens import secret_key
    from newsletter.service.scheduler import JobContext, resume_sending, run_due
    from newsletter.store import open_store

    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        stop = asyncio.Event()
        on_signals(stop)
        ctx = JobContext(
            cfg,
            store,
            secret_key(cfg),
            stop,
            clock=lambda: now,
            wait=False,
            fetch=fetch or FetchOptions(),
        )
        started = time.monotonic()
        await resume_sending(ctx)
        outcomes = await run_due(ctx, now)
        try:
            await asyncio.to_thread(bounces.poll, cfg, store, signing_keys(cfg))
        except NewsletterError as exc:
            log.error("bounce mailbox: %s", exc)
        log.debug("tick took %.1fs", time.monotonic() - started)
        return outcomes
    finally:
        store.close()
