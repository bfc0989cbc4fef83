"""Commands over the weekly issues: send, issues, status, pause, resume, cancel, worker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from newsletter.cli.base import (
    F,
    _allow_insecure,
    _archive,
    _configured,
    _Fail,
    _parse_week,
    _store,
    _strict,
    _week_option,
    main,
)
from newsletter.cli.progress import meter, pages, sending
from newsletter.config import Config
from newsletter.select import IsoWeek
from newsletter.words import count

if TYPE_CHECKING:
    from newsletter.app.status import IssueStatus
    from newsletter.store import Unmatched, WriterDay


def _report_exit(cfg: Config, report: Any) -> None:
    """Print a send's outcome; exit non-zero when the issue is left paused."""
    from newsletter.app import delivery, issues

    click.echo(delivery.describe(cfg, report))
    if report.stopped:
        click.echo("stopped before the end: run the same command again to resume", err=True)
    elif report.status == issues.PAUSED:
        if report.gave_up:
            raise _Fail(
                f"{report.week} is paused: the server was down for longer than smtp.outage_max "
                f"({report.paused_reason}); `newsletter run` keeps trying, or "
                f"`newsletter send --week {report.week}` again later"
            )
        raise _Fail(f"{report.week} is paused: {report.paused_reason}")


@main.command()
@_configured(source=True)
@_week_option
@click.option(
    "--dry-run", is_flag=True, help="Build every message but send nothing and record nothing."
)
@click.option(
    "--to", "to_address", help="Send one test copy to ADDRESS; the ledger is not touched."
)
@click.option("--lang", type=click.Choice(["ko", "en"]), help="Language of the --to test copy.")
@click.option("--retry-failed", is_flag=True, help="Queue the failed deliveries of the week again.")
@click.option("--no-wait", is_flag=True, help="Leave retries that are not due yet for a later run.")
@click.option(
    "--refreeze",
    is_flag=True,
    help="Render the approved issue again from today's archive (only before any message went out).",
)
@_allow_insecure
@_strict
def send(
    cfg: Config,
    week: str | None,
    dry_run: bool,
    to_address: str | None,
    lang: str | None,
    retry_failed: bool,
    no_wait: bool,
    refreeze: bool,
    allow_insecure_links: bool,
    strict: bool,
) -> None:
    """Approve a weekly issue (freezing its content) and send it to every active subscriber,
    resuming where a previous run stopped.

    Running it again sends nothing twice; SIGTERM or Ctrl-C finishes the messages in
    flight, records them and exits 0. While the SMTP server is down the issue is paused
    and the server retried; after smtp.outage_max it exits non-zero, leaving it paused.

    \b
    Examples:
      newsletter send --week 2024-W05 --dry-run
      newsletter send --week 2024-W05 --to editor@example.org
      newsletter send --week 2024-W05
      newsletter send --week 2024-W05 --retry-failed
    """
    from newsletter.app import delivery, issues
    from newsletter.mail.tokens import secret_key

    iso = _parse_week(cfg, week)
    key = secret_key(cfg)
    if to_address or dry_run:
        _copy_or_dry_run(cfg, iso, strict, dry_run, to_address, lang, allow_insecure_links)
        return
    issues.check_links(cfg, allow_insecure=allow_insecure_links)
    store = _store(cfg)
    with meter() as long_work:
        report = delivery.send_week(
            cfg,
            store,
            lambda: _archive(cfg, strict),
            iso,
            key,
            wait=not no_wait,
            retry_failed=retry_failed,
            refreeze=refreeze,
            progress=sending(long_work),
            pages=pages(long_work),
            handle_signals=True,
            foreground=True,
        )
    _report_exit(cfg, report)


def _copy_or_dry_run(
    cfg: Config,
    iso: IsoWeek,
    strict: bool,
    dry_run: bool,
    to_address: str | None,
    lang: str | None,
    allow_insecure_links: bool,
) -> None:
    """``send --dry-run`` (build every message, send nothing) or ``send --to`` (one copy
    for the editor, outside the issue's ledger)."""
    from newsletter.app import delivery, issues
    from newsletter.app.subscribers import normalize_address
    from newsletter.mail.tokens import secret_key

    key = secret_key(cfg)
    prepared = delivery.prepare(cfg, _archive(cfg, strict), iso)
    store = _store(cfg)
    if dry_run:
        built, size = delivery.dry_run(cfg, store, prepared, key)
        click.echo(
            f"{iso}: {count(built, 'message')} built ({size / 1e6:.1f} MB); "
            "nothing sent (--dry-run)"
        )
        return
    address = normalize_address(to_address or "")
    issues.check_links(cfg, allow_insecure=allow_insecure_links)
    mail_id = delivery.send_test_copy(cfg, store, prepared, key, address, lang or cfg.default_lang)
    mail = delivery.send_queued_mail(cfg, store, mail_id, key)
    if mail.status != "sent":
        raise _Fail(f"test copy to {address} was not sent: {mail.last_error}")
    note = delivery.outbox_note(cfg)
    click.echo(
        f"{iso}: test copy to {address} {note}" if note else f"{iso}: test copy sent to {address}"
    )


def _issue_line(row: Any, counts: dict[str, int]) -> str:
    from newsletter.app.issues import describe_counts
    from newsletter.lifecycle import PausedBy, describe_pause

    line = f"{row.week}  {row.status:<9}  {describe_counts(counts)}  {row.subject}"
    if row.status == "paused":
        who = describe_pause(row.paused_by)
        line += f"\n    paused {who + ' ' if who else ''}since {_when(row.paused_at)}"
        if row.paused_reason:
            line += f": {row.paused_reason}"
        if row.paused_by == PausedBy.OUTAGE and row.resume_at:
            line += f" (next try {_when(row.resume_at)})"
        elif row.paused_by in (PausedBy.OPERATOR, PausedBy.BREAKER):
            line += f" (until `newsletter resume --week {row.week}`)"
    return line


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@main.command()
@_configured()
@_week_option
def status(cfg: Config, week: str | None) -> None:
    """Show an issue's state, delivery counts and failures (default: the latest issue).

    \b
    Example:
      newsletter status --week 2024-W05
    """
    from newsletter.app.status import status as issue_status

    found = issue_status(_store(cfg), str(_parse_week(cfg, week)) if week else None)
    if found.issue is None:
        _writer_lines(found.writer_days)
        click.echo(
            f"{week or 'no issue'}: not sent yet; subscribers: "
            + ", ".join(f"{k} {v}" for k, v in sorted(found.subscribers.items()))
        )
        _unmatched_line(cfg, found.unmatched)
        return
    shown = found.issue
    click.echo(_issue_line(shown.issue, shown.counts))
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in shown.counts.items()))
    for failure in shown.failures:
        click.echo(
            f"  failed: {failure.email} after {count(failure.attempts, 'attempt')}: "
            f"{failure.last_error}"
        )
    _bounce_lines(shown)
    _unmatched_line(cfg, found.unmatched)
    _writer_lines(found.writer_days)


def _unmatched_line(cfg: Config, unmatched: Unmatched) -> None:
    """The reports by mail that acted on nobody, when there are any: a person looks."""
    if unmatched.count:
        click.echo(
            f"unmatched reports: {unmatched.count} (latest {_when(unmatched.latest)}): "
            "no token or Message-ID of ours, so they acted on nobody; they wait in the "
            f"bounce mailbox's {cfg.bounces.unmatched_folder} folder"
        )


def _writer_lines(days: list[WriterDay]) -> None:
    """The model's usage by `newsletter write`, per day, when it has written anything."""
    from newsletter.archive.writer import usage_lines

    if days:
        click.echo("writer (tokens per day, newest first):")
        for line in usage_lines(days):
            click.echo(line)


def _bounce_lines(shown: IssueStatus) -> None:
    """An issue's bounces and complaints, and a warning when either rate is too high."""
    from newsletter.app.status import BOUNCE_RATE_LIMIT, COMPLAINT_RATE_LIMIT

    found = shown.reports
    click.echo(
        f"  bounces: hard {found.get('hard', 0)}, soft {found.get('soft', 0)}, "
        f"refused {found.get('refused', 0)}, blocked {found.get('blocked', 0)}; "
        f"complaints {found.get('complaint', 0)}; mailed unsubscribes "
        f"{found.get('unsubscribe', 0)}"
    )
    rates = shown.rates
    if rates is None:
        return
    click.echo(f"  bounce rate {rates.bounce:.2%}, complaint rate {rates.complaint:.2%}")
    if rates.too_many_complaints:
        click.echo(
            f"warning: complaint rate {rates.complaint:.2%} is above "
            f"{COMPLAINT_RATE_LIMIT:.1%}: mailbox providers throttle or block senders "
            "with many complaints; check how addresses were collected",
            err=True,
        )
    if rates.too_many_bounces:
        click.echo(
            f"warning: bounce rate {rates.bounce:.2%} is above {BOUNCE_RATE_LIMIT:.0%}: "
            "the list holds dead addresses; check where they came from",
            err=True,
        )


@main.command("issues")
@_configured()
def issues_command(cfg: Config) -> None:
    """List every issue with its state and delivery counts, newest first.

    \b
    Example:
      newsletter issues
    """
    store = _store(cfg)
    counts = store.all_counts()
    rows = store.list_issues()
    if not rows:
        click.echo("no issues yet")
    for row in rows:
        click.echo(_issue_line(row, counts.get(row.id, {})))


def _operator(action: str) -> Callable[[F], F]:
    """``pause``, ``resume`` and ``cancel``: one required --week, one transition."""

    def decorate(func: F) -> F:
        func = click.option("--week", required=True, help="ISO week such as 2024-W05.")(func)
        func = _configured()(func)
        return main.command(action)(func)  # type: ignore[return-value]

    return decorate


@_operator("pause")
def pause(cfg: Config, week: str) -> None:
    """Pause an issue being sent: no new message goes out until `newsletter resume`.

    \b
    Example:
      newsletter pause --week 2024-W05
    """
    from newsletter.app import issues

    row = issues.pause(_store(cfg), str(_parse_week(cfg, week)))
    click.echo(f"{row.week} is {row.status}")


@_operator("resume")
def resume(cfg: Config, week: str) -> None:
    """Resume a paused issue (`newsletter run` or `newsletter send` then sends the rest).

    \b
    Example:
      newsletter resume --week 2024-W05
    """
    from newsletter.app import issues

    row = issues.resume(_store(cfg), str(_parse_week(cfg, week)))
    click.echo(f"{row.week} is {row.status}")


@_operator("cancel")
def cancel(cfg: Config, week: str) -> None:
    """Cancel an issue: nothing more of it is sent (what went out stays recorded).

    \b
    Example:
      newsletter cancel --week 2024-W05
    """
    from newsletter.app import issues

    row, skipped = issues.cancel(_store(cfg), str(_parse_week(cfg, week)))
    queued = count(skipped, "queued delivery", "queued deliveries")
    click.echo(f"{row.week} is {row.status}: {queued} will not be made")


@main.command()
@_configured()
@click.option("--once", is_flag=True, help="Exit when there is nothing to send instead of waiting.")
@click.option(
    "--poll",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds between looks for work.",
)
@_allow_insecure
def worker(cfg: Config, once: bool, poll: float, allow_insecure_links: bool) -> None:
    """Help send every issue that is being sent, and queued single mails (any number of
    workers, on any machine sharing the PostgreSQL database).

    \b
    Example:
      newsletter worker
    """
    from newsletter.app import delivery, issues
    from newsletter.mail.tokens import secret_key

    issues.check_links(cfg, allow_insecure=allow_insecure_links)
    note = delivery.outbox_note(cfg)
    if note:
        click.echo(f"worker: messages are {note}", err=True)
    with meter() as long_work:
        sent = delivery.run_worker(
            cfg, _store(cfg), secret_key(cfg), once=once, poll=poll, progress=sending(long_work)
        )
    click.echo(delivery.delivered(cfg, sent))
