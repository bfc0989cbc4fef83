"""``newsletter post``: the day's papers in the team's Slack and Discord."""

from __future__ import annotations

import datetime as dt
import json

import click

from newsletter.cli.base import _archive, _configured, _Fail, _store, _strict, main
from newsletter.config import Config


@main.command()
@_configured(source=True)
@click.option("--date", "day", help="The day to post, YYYY-MM-DD (default: the latest digest).")
@click.option(
    "--dry-run", is_flag=True, help="Print the messages as JSON; send and record nothing."
)
@_strict
def post(cfg: Config, day: str | None, dry_run: bool, strict: bool) -> None:
    """Post the day's top papers to every configured chat, once.

    Slack: [slack] channel with NEWSLETTER_SLACK_TOKEN (the day's message, each paper a
    reply in its thread) or NEWSLETTER_SLACK_WEBHOOK_URL (the day in one message).
    Discord: NEWSLETTER_DISCORD_WEBHOOK_URL. Run again, it posts only what was not posted.

    \b
    Examples:
      newsletter post --dry-run
      newsletter post --date 2024-01-29
    """
    from newsletter.app import chat
    from newsletter.mail.tokens import secret_key

    when = _date(day) if day else None
    archive = _archive(cfg, strict)
    if not chat.channels(cfg):
        raise _Fail(
            "no chat configured: set slack.channel with NEWSLETTER_SLACK_TOKEN or "
            "NEWSLETTER_SLACK_WEBHOOK_URL, or NEWSLETTER_DISCORD_WEBHOOK_URL"
        )
    if dry_run:
        records = chat.dry_run(cfg, archive, when)
        click.echo(json.dumps(records, ensure_ascii=False, indent=2))
        return
    report = chat.post_day(cfg, _store(cfg), archive, secret_key(cfg), when)
    for name, added in report.queued.items():
        click.echo(
            f"{report.day} {name}: {report.posts[name]} posted"
            + (f" ({added} queued now)" if added else " (nothing new)")
        )
    waiting = report.tally["deferred"] + report.tally["retrying"]
    if waiting or report.tally["failed"]:
        raise _Fail(
            f"{report.tally['failed']} failed, {waiting} waiting: "
            "run `newsletter post` again to send what is left"
        )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise _Fail(f"--date: not a date (YYYY-MM-DD): {text!r}") from None
