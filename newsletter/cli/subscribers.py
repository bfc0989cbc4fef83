"""Commands over the list: subscribers and bounces."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter.cli.base import (
    _configured,
    _Fail,
    _store,
    main,
)
from newsletter.cli.progress import meter
from newsletter.config import Config

# An import shows how far it is from this many lines (each is a database write: a few
# hundred take about a second).
ROWS_AT_LEAST = 500


@main.group("subscribers")
def subscribers_group() -> None:
    """Manage the subscriber list (add, remove, list, import, export)."""


@subscribers_group.command("add")
@_configured()
@click.argument("email")
@click.option("--name", default="", help="Display name used in the To: header.")
@click.option(
    "--lang", type=click.Choice(["ko", "en"]), help="Interface language (default: default_lang)."
)
def subscribers_add(cfg: Config, email: str, name: str, lang: str | None) -> None:
    """Add an active subscriber, or update the name and language of a known one.

    \b
    Example:
      newsletter subscribers add reader@example.org --name "김독자" --lang ko
    """
    from newsletter.app.subscribers import check_name, normalize_address

    store = _store(cfg)
    sub, created = store.add_subscriber(
        normalize_address(email), check_name(name), lang or cfg.default_lang
    )
    click.echo(f"{'added' if created else 'already known'}: {sub.email} ({sub.lang}, {sub.status})")


@subscribers_group.command("remove")
@_configured()
@click.argument("email")
def subscribers_remove(cfg: Config, email: str) -> None:
    """Unsubscribe an address (its delivery history is kept).

    \b
    Example:
      newsletter subscribers remove reader@example.org
    """
    if not _store(cfg).remove_subscriber(email.strip()):
        raise _Fail(f"no subscriber {email.strip()!r}")
    click.echo(f"unsubscribed: {email.strip()}")


@subscribers_group.command("list")
@_configured()
@click.option("--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced"]))
def subscribers_list(cfg: Config, status: str | None) -> None:
    """List subscribers (email, name, language, status, and why: the bounce or complaint
    that changed the status, with its code, time and diagnostic), tab-separated.

    \b
    Example:
      newsletter subscribers list --status active
    """
    from newsletter.app.subscribers import rows

    for line in rows(_store(cfg), status):
        click.echo(line)


@subscribers_group.command("import")
@_configured()
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def subscribers_import(cfg: Config, csv_file: Path) -> None:
    """Import a CSV with a header row email,name,lang (name and lang optional).

    Bad rows are reported with their line number and skipped; every good row is kept.

    \b
    Example:
      newsletter subscribers import readers.csv
    """
    from newsletter.app.subscribers import import_csv

    with meter() as long_work:
        rows = long_work.track("importing lines", at_least=ROWS_AT_LEAST)
        report = import_csv(_store(cfg), csv_file, cfg.default_lang, progress=rows)
    for problem in report.problems:
        click.echo(f"error: {problem}", err=True)
    click.echo(
        f"{report.added} added, {report.merged} already known, {len(report.problems)} skipped"
    )


@subscribers_group.command("export")
@_configured()
@click.option("--status", type=click.Choice(["pending", "active", "unsubscribed", "bounced"]))
def subscribers_export(cfg: Config, status: str | None) -> None:
    """Write the list as CSV (email,name,lang,status) to standard output.

    \b
    Example:
      newsletter subscribers export > readers.csv
    """
    from newsletter.app.subscribers import export_csv

    export_csv(_store(cfg), sys.stdout, status)


@main.command()
@_configured()
@click.option(
    "--maildir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Read this Maildir instead of [bounces] maildir or imap_url.",
)
def bounces(cfg: Config, maildir: Path | None) -> None:
    """Process the bounce mailbox once: bounces, complaints and mailed unsubscribes that
    prove they answer our mail (a token, a Message-ID we sent) act on the list; prints the
    counts per kind and one line per action. Handled messages move to the processed
    folder, unmatched ones (an address alone proves nothing) to the unmatched folder; the
    unreadable are flagged and kept. Needs write access to the mailbox. Also deletes
    subscriptions never confirmed within seven days.

    \b
    Examples:
      newsletter bounces
      newsletter bounces --maildir /home/bounces/Maildir
    """
    from newsletter.mail.bounces import process
    from newsletter.mail.tokens import signing_keys

    result = process(cfg, _store(cfg), signing_keys(cfg), maildir=maildir)
    for line in result.lines:
        click.echo(line)
    click.echo(result.summary())
