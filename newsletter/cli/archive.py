"""Commands over the archive: init, digests, top, feed, preview, write and search."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any, cast

import click

from newsletter.cli.base import (
    _DAY,
    _archive,
    _catalog,
    _clip,
    _configured,
    _dump,
    _existing_store,
    _Fail,
    _json,
    _looked_in,
    _store,
    _strict,
    _votes,
    main,
)
from newsletter.cli.progress import meter, page_meter
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.models import Pick
from newsletter.select import IsoWeek, top_daily, top_weekly
from newsletter.words import count


@main.command()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False), default=".")
def init(folder: Path) -> None:
    """Start a new site in FOLDER (default: here): a config.toml listing every setting with
    its default and what it does, and the folders it names. An existing config.toml is
    never overwritten.

    \b
    Example:
      newsletter init mysite && cd mysite && newsletter run
    """
    from newsletter.app import site

    try:
        made = site.start(folder)
    except NewsletterError as exc:
        raise _Fail(str(exc)) from None
    click.echo(f"wrote {made.settings}, with every setting and its default")
    click.echo(
        f"made {made.archive} (the digests `newsletter write` adds) and "
        f"{made.public} (the feeds and web pages)"
    )
    here = "" if folder.resolve() == Path.cwd() else f"cd {folder} && "
    click.echo(
        f"next: {here}newsletter run; it reads the sample archive shipped with newsletter "
        f"until {made.archive.name}/ holds a digest of your own (`newsletter write` adds "
        "them) or source names a folder of your own digests"
    )


@main.command()
@_configured(source=True)
@_strict
@_json
def digests(cfg: Config, strict: bool, as_json: bool) -> None:
    """List the digests in the archive (date, papers, top paper).

    \b
    Example:
      newsletter digests --source seeds/ --json > archive.json
    """
    if as_json:
        from newsletter.archive.export import write_archive_json

        write_archive_json(_catalog(cfg, strict), sys.stdout.buffer)
        return
    archive = _archive(cfg, strict)
    if archive.digests:
        click.echo(f"{'date':<10}  {'papers':>6}  {'votes':>5}  top paper")
    for digest in archive.digests:
        best = top_daily(digest, 1)
        top = f"{_votes(best[0].votes):>5}  {_clip(best[0].paper.title, 60)}" if best else ""
        click.echo(f"{digest.date}  {len(digest.papers):>6}  {top}".rstrip())
    click.echo(
        f"{count(len(archive.digests), 'digest')}, {count(archive.paper_count, 'paper')}, "
        f"{count(len(archive.problems), 'problem')}"
    )


def _picks_json(picks: list[Pick]) -> list[dict[str, Any]]:
    return [
        {"rank": p.rank, "date": p.date.isoformat(), **p.paper.to_json(), "votes": p.votes}
        for p in picks
    ]


@main.command()
@_configured(source=True)
@click.option("--date", "day", type=_DAY, help="A day: its top papers.")
@click.option("--week", help="An ISO week such as 2024-W05: its top papers.")
@click.option(
    "--n", "n", type=click.IntRange(min=1), help="How many (default: top_n_daily/top_n_weekly)."
)
@_strict
@_json
def top(
    cfg: Config,
    day: dt.date | None,
    week: str | None,
    n: int | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Show the top-voted papers of a day or of an ISO week.

    \b
    Examples:
      newsletter top --date 2024-05-20
      newsletter top --week 2024-W05 --n 5 --json
    """
    if (day is None) == (week is None):
        raise click.UsageError("give exactly one of --date or --week")
    archive = _archive(cfg, strict)
    label: dict[str, str]
    if day is not None:
        digest = archive.by_date(day)
        if digest is None:
            raise _Fail(f"no digest for {day} in {_looked_in(cfg)}")
        picks = top_daily(digest, n or cfg.top_n_daily)
        label = {"date": day.isoformat()}
    else:
        try:
            iso = IsoWeek.parse(week or "")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--week") from None
        picks = top_weekly(archive.digests, iso, n or cfg.top_n_weekly)
        if not picks:
            raise _Fail(
                f"no digest in week {iso} ({iso.monday} to {iso.sunday}) in {_looked_in(cfg)}"
            )
        label = {"week": str(iso)}
    if as_json:
        _dump(
            {
                **label,
                "papers": _picks_json(picks),
                "errors": [p.to_json() for p in archive.problems],
            }
        )
        return
    click.echo(f"{'rank':>4}  {'votes':>5}  {'date':<10}  {'arXiv id':<11}  title")
    for p in picks:
        click.echo(
            f"{p.rank:>4}  {_votes(p.votes):>5}  {p.date}  {p.paper.arxiv_id:<11}  "
            f"{_clip(p.paper.title, 70)}"
        )


@main.command()
@_configured(source=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write to (default: public_dir).",
)
@_strict
def feed(cfg: Config, out: Path | None, strict: bool) -> None:
    """Write feed.atom and feed.json (the daily top papers of the last feed_days days),
    issues.atom and issues.json (the latest finished weeks' issues), and the web pages
    they link to: a page per day, each finished week's issue, the index.

    Files whose content would not change are left untouched.

    \b
    Examples:
      newsletter feed
      newsletter feed --source seeds/ --out /var/www/newsletter
    """
    from newsletter.app import site
    from newsletter.publish.names import FEED_NAMES

    archive = _archive(cfg, strict)
    if not archive.digests:
        raise _Fail(f"no digest in {_looked_in(cfg)}: nothing to put in the feed")
    site_cfg = cfg if out is None else cfg.replace(public_dir=out.resolve())
    with page_meter() as pages:
        built = site.build(site_cfg, progress=pages)
    folder = cfg.public_path if out is None else out
    written = {path.name for path in built.feeds}
    for name in sorted(FEED_NAMES):
        click.echo(f"{folder / name}: {'written' if name in written else 'unchanged'}")
    click.echo(f"{folder}: {count(len(built.pages), 'web page')} rendered")


PREVIEW_DIR = Path("preview")


@main.command()
@_configured(source=True)
@click.option("--week", help="ISO week such as 2024-W05 (default: the latest in the archive).")
@click.option("--date", "day", type=_DAY, help="A day: its ISO week's issue.")
@click.option(
    "--lang", type=click.Choice(["ko", "en"]), help="Interface language (default: default_lang)."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "text", "eml"]),
    default="html",
    show_default=True,
    help="The HTML part, the text part, or the whole message.",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), help="File to write.")
@click.option("--open", "open_it", is_flag=True, help="Open the result in the default browser.")
@click.option(
    "--web",
    is_flag=True,
    help="Also write the week's web copies under public/issues/, with the website around them.",
)
@_strict
def preview(
    cfg: Config,
    week: str | None,
    day: dt.date | None,
    lang: str | None,
    fmt: str,
    out: Path | None,
    open_it: bool,
    web: bool,
    strict: bool,
) -> None:
    """Render a weekly issue exactly as a subscriber gets it (a sample recipient).

    Writes preview/WEEK.LANG.html (or .txt, .eml) and prints the path.

    \b
    Examples:
      newsletter preview
      newsletter preview --week 2024-W05 --lang en --format eml --out issue.eml
      newsletter preview --date 2024-05-20 --web --open
    """
    import webbrowser

    from newsletter.app import site
    from newsletter.app.preview import Format
    from newsletter.app.preview import preview as render_preview
    from newsletter.select import NoIssueError, latest_week

    if week is not None and day is not None:
        raise click.UsageError("give at most one of --week or --date")
    archive = _archive(cfg, strict)
    if week is not None:
        try:
            iso = IsoWeek.parse(week)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--week") from None
    elif day is not None:
        iso = IsoWeek.of(day)
    else:
        iso = latest_week(archive)
    lang = lang or cfg.default_lang
    try:
        data = render_preview(cfg, archive, iso, lang, cast("Format", fmt))
    except NoIssueError as exc:
        raise _Fail(f"{exc}; looked in {_looked_in(cfg)}") from None
    suffix = {"html": "html", "text": "txt", "eml": "eml"}[fmt]
    path = out or PREVIEW_DIR / f"{iso}.{lang}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    click.echo(str(path))
    if web:
        with page_meter() as pages:
            copies = site.web_copy(cfg, iso, progress=pages)
        click.echo("\n".join(map(str, copies)))
    if open_it and not webbrowser.open(path.resolve().as_uri()):
        click.echo(
            f"warning: no web browser could be started here; open {path.resolve()} in one",
            err=True,
        )


@main.command()
@_configured()
@click.option(
    "--date",
    "day",
    type=_DAY,
    help="The day (default: today, in timezone).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Fetch the list and show the plan; call no model, write nothing.",
)
def write(cfg: Config, day: dt.date | None, dry_run: bool) -> None:
    """Write the day's digest into archive_dir from Hugging Face Daily Papers, each paper
    summarized in Korean by the [writer] model (key: NEWSLETTER_WRITER_API_KEY).

    Summaries are cached: running it again later in the day updates the votes and adds
    late papers without paying twice.

    \b
    Examples:
      newsletter write --date 2025-05-12 --dry-run
      newsletter write
    """
    import asyncio

    from newsletter.archive.writer import missing_key, write_day

    no_key = missing_key(cfg)
    if dry_run and no_key:
        click.echo(f"warning: {no_key}; without it a run stops before the first summary", err=True)
    date = day or dt.datetime.now(cfg.tz).date()
    # A dry run reads the summary cache when there is a database, and never creates one.
    store = _existing_store(cfg) if dry_run else _store(cfg)
    with meter() as long_work:
        summarizing = long_work.track("summarizing papers")
        result = asyncio.run(write_day(cfg, store, date, dry_run=dry_run, progress=summarizing))
    for line in result.plan:
        click.echo(line)
    click.echo(result.summary() + (" (--dry-run: nothing written)" if dry_run else ""))


@main.command()
@_configured(source=True)
@click.argument("query")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many papers to show.",
)
@_json
def search(cfg: Config, query: str, n: int, as_json: bool) -> None:
    """Find papers in the archive by title, authors, arXiv id or Korean summary, ranked
    as the site's search page ranks them (most voted first among equals).

    \b
    Examples:
      newsletter search "가지치기"
      newsletter search "KV cache" --n 5 --json
    """
    from newsletter.app.search import find
    from newsletter.publish.search_text import snippet

    hits = find(cfg, query, n)
    if as_json:
        _dump(
            [
                {
                    "date": h.entry.day,
                    "arxiv_id": h.entry.arxiv_id,
                    "title": h.entry.title,
                    "authors": h.entry.authors,
                    "votes": h.entry.votes,
                    "score": h.score,
                    "url": f"https://arxiv.org/abs/{h.entry.arxiv_id}",
                    "hf_url": f"https://huggingface.co/papers/{h.entry.arxiv_id}",
                    "snippet": snippet(h.entry.summary, query)[0],
                }
                for h in hits
            ]
        )
        return
    for h in hits:
        click.echo(
            f"{h.entry.day}  {h.entry.votes:>5}  {h.entry.arxiv_id}  {_clip(h.entry.title, 70)}"
        )
        click.echo(f"    {snippet(h.entry.summary, query, 100)[0]}")
    click.echo(f"{count(len(hits), 'paper')} found for {query!r}")
