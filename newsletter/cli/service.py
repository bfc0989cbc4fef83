"""Commands that run the service: serve, run, tick, and migrate."""

from __future__ import annotations

import datetime as dt

import click

from newsletter.cli.base import (
    _allow_insecure,
    _configured,
    _Fail,
    main,
)
from newsletter.config import Config


@main.command()
@_configured(service=True)
def serve(cfg: Config) -> None:
    """Serve the feeds and the issues' web copies from the public folder over HTTP.

    While base_url is not set, links in pages and mails point to this address.

    \b
    Example:
      newsletter serve --host 127.0.0.1 --port 8000
    """
    from newsletter.service.processes import serve_web

    serve_web(cfg, cfg.web.host, cfg.web.port)


@main.command()
@_configured()
def migrate(cfg: Config) -> None:
    """Bring the database schema up to date (also done automatically on first use).

    \b
    Example:
      NEWSLETTER_DATABASE_URL=postgresql+psycopg://news@db/news newsletter migrate
    """
    from newsletter.store import head_revision, open_store

    store = open_store(cfg.database_url, cfg.base_dir, migrate=False)
    applied = store.migrate()
    version = store.schema_version()
    if applied:
        click.echo(f"applied {', '.join(applied)}")
    click.echo(f"database is at {version}" + (" (head)" if version == head_revision() else ""))


@main.command()
@_configured(source=True, service=True)
@_allow_insecure
def run(cfg: Config, allow_insecure_links: bool) -> None:
    """Run the service: the scheduler (daily digest and feeds, weekly issue) and the web
    app (feeds, issue pages, subscribe and unsubscribe) in one process. While base_url is
    not set, links in pages and mails point to the address it listens on.

    Only one may run per database; SIGTERM or Ctrl-C lets a send finish its in-flight
    messages and exits 0, and a send cut short resumes on the next start.

    \b
    Example:
      newsletter run --host 127.0.0.1 --port 8000
    """
    from newsletter.app.links import check_links
    from newsletter.service.processes import run_service

    check_links(cfg, allow_insecure=allow_insecure_links)
    run_service(cfg, cfg.web.host, cfg.web.port)


def _parse_now(cfg: Config, text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        now = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"not an ISO date and time: {text!r} (e.g. 2024-05-20T09:00+09:00)",
            param_hint="--now",
        ) from None
    # Without an offset, the time is read in the configured time zone, not the host's.
    return now if now.tzinfo is not None else now.replace(tzinfo=cfg.tz)


@main.command()
@_configured(source=True)
@click.option(
    "--now",
    "now_text",
    metavar="DATETIME",
    help="Act as if it were this moment, e.g. 2024-05-20T09:00+09:00 (default: now).",
)
@_allow_insecure
def tick(cfg: Config, now_text: str | None, allow_insecure_links: bool) -> None:
    """Run once, and exit, each job due at --now that has not run yet (for cron, and tests);
    also resumes a send left unfinished. Running it again at the same moment does nothing.

    \b
    Examples:
      newsletter tick
      newsletter tick --now 2024-08-05T08:30+09:00
    """
    import asyncio

    from newsletter.app.links import check_links
    from newsletter.service.processes import tick as run_tick

    check_links(cfg, allow_insecure=allow_insecure_links)
    now = _parse_now(cfg, now_text)
    outcomes = asyncio.run(run_tick(cfg, now))
    for job, outcome in outcomes.items():
        if outcome is None:
            click.echo(f"{job}: nothing due")
        else:
            click.echo(f"{job}: {outcome.status}: {outcome.detail}")
    failed = [job for job, outcome in outcomes.items() if outcome and outcome.status == "failed"]
    if failed:
        raise _Fail(f"{', '.join(failed)} failed (see above)")
