"""The ``newsletter`` command: thin click commands over the library."""

from __future__ import annotations

import calendar
import contextlib
import datetime as dt
import functools
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from newsletter import logs
from newsletter.config import Config, load_config, recall_listening
from newsletter.errors import NewsletterError
from newsletter.files import PRIVATE_UMASK
from newsletter.mail.tokens import check_keys
from newsletter.models import Archive, Pick, Problem
from newsletter.select import IsoWeek, top_daily, top_weekly
from newsletter.words import count

if TYPE_CHECKING:
    from newsletter.archive.cache import Catalog

F = TypeVar("F", bound=Callable[..., Any])


def _configured(*, source: bool = False, service: bool = False) -> Callable[[F], F]:
    """Give a command ``--config`` and ``-v`` (and ``--source``), set up logging, and pass
    it the loaded :class:`Config`. ``service``: a long-lived process that listens on
    ``--host`` and ``--port`` (``web.host``, ``web.port``) and logs at least information.

    Library errors become one-line messages with their exit code, never tracebacks.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(config_path: Path | None, verbose: int, **kwargs: Any) -> Any:
            # -v counts before the command name (`newsletter -v run`) and after it alike.
            root = click.get_current_context().find_root()
            logs.configure(verbose + root.params.get("verbose", 0), service=service)
            overrides = {"source": kwargs.pop("source")} if source else {}
            if service:
                # Into the settings, so that links follow them while base_url is unset.
                overrides |= {"web.host": kwargs.pop("host"), "web.port": kwargs.pop("port")}
            try:
                cfg = load_config(config_path, overrides=overrides)
                if not service:
                    # Beside a running `newsletter run --port P`, links go where it listens.
                    cfg = recall_listening(cfg)
                check_keys(cfg)
                if source:
                    _check_source(cfg)
                return func(cfg, **kwargs)
            except NewsletterError as exc:
                raise _fail(str(exc), exc.exit_code) from None

        wrapper = click.option(
            "--config",
            "config_path",
            type=click.Path(path_type=Path, dir_okay=False),
            envvar="NEWSLETTER_CONFIG",
            help="Settings file (default: ./config.toml when present).",
        )(wrapper)
        wrapper = click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")(
            wrapper
        )
        if service:
            wrapper = click.option(
                "--port",
                type=click.IntRange(1, 65535),
                help="TCP port (default: web.port, 8000).",
            )(wrapper)
            wrapper = click.option(
                "--host", help="Address to listen on (default: web.host, 127.0.0.1)."
            )(wrapper)
        if source:
            wrapper = click.option(
                "--source",
                type=str,
                default=None,
                help="Digest folder (or URL template) to read instead of the configured source.",
            )(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


class _Fail(click.ClickException):
    """A one-line ``error: ...`` on stderr and exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _UsageFail(_Fail):
    exit_code = 2


def _fail(message: str, exit_code: int) -> _Fail:
    return _UsageFail(message) if exit_code == 2 else _Fail(message)


def _check_source(cfg: Config) -> None:
    """A source folder that is not there stops a command that reads it, in one line."""
    if not cfg.source_is_url and not cfg.source_path.exists():
        raise _Fail(
            f"the source folder {cfg.source_path} does not exist; --source (or source in "
            "the settings) takes a folder of digests or one digest file"
        )


def _looked_in(cfg: Config) -> str:
    """Where the archive was read from, for a message that found nothing there."""
    from newsletter.archive.cache import archive_folders

    folders = archive_folders(cfg) or [cfg.archive_path]
    return " and ".join(str(folder) for folder in folders)


def _catalog(cfg: Config, strict: bool) -> Catalog:
    """What the parse cache knows of the source and archive_dir; problems reported."""
    from newsletter.archive.cache import local_catalog

    catalog = local_catalog(cfg)
    if not cfg.source_is_url and cfg.source_path.is_file():
        # One file given as the source: it must be a digest, not any file at all.
        path = str(cfg.source_path)
        if not any(papers for e in catalog.entries if e.path == path for _, papers in e.days):
            why = next((p.message for p in catalog.problems if p.file == path), "no paper in it")
            raise _Fail(
                f"{path} cannot be read as a digest: {why}; --source takes a folder of "
                "digests or one digest file"
            )
    _report(catalog.problems, strict)
    return catalog


def _archive(cfg: Config, strict: bool) -> Archive:
    # The source folder and the digests stored from a URL source (archive_dir).
    return _catalog(cfg, strict).load()


def _report(problems: tuple[Problem, ...], strict: bool) -> None:
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if strict and problems:
        raise _Fail(f"{count(len(problems), 'problem')} in the archive (--strict)")


if TYPE_CHECKING:
    _ParamType = click.ParamType[dt.date, Any]
else:  # generic only in newer click releases
    _ParamType = click.ParamType


class _Day(_ParamType):
    """A day written YYYY-MM-DD; one the calendar does not have is said to be so."""

    name = "YYYY-MM-DD"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.date:
        if isinstance(value, dt.date):
            return value
        match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a date written YYYY-MM-DD, such as 2024-05-20", param, ctx)
        year, month, day = (int(part) for part in match.groups())
        if not 1 <= month <= 12:
            self.fail(f"{value} does not exist: there is no month {month}", param, ctx)
        last = calendar.monthrange(year, month)[1] if year else 31
        if not year or not 1 <= day <= last:
            when = f"{calendar.month_name[month]} {year}" if year else "year 0"
            has = f"has {last} days" if year else "is not in the calendar"
            self.fail(f"{value} does not exist: {when} {has}", param, ctx)
        return dt.date(year, month, day)


_DAY = _Day()
_strict = click.option(
    "--strict", is_flag=True, help="Exit non-zero when any digest has a problem."
)
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _votes(votes: int | None) -> str:
    return "-" if votes is None else str(votes)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsletter")
@click.option(
    "-v", "--verbose", count=True, help="More log output (-vv: debug); also after the command."
)
def main(verbose: int) -> None:
    """Hugging Face Daily Papers in Korean: an Atom feed and a weekly email."""
    # The database, its WAL, the signing key, the outbox and the archive are private;
    # the public folder's output sets its own modes (newsletter.files).
    os.umask(PRIVATE_UMASK)


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
    from newsletter.config import Config
    from newsletter.files import public_folder
    from newsletter.shipped import SETTINGS_FILE, shipped

    path = folder / SETTINGS_FILE
    try:
        # Searchable by all, as the public folder inside must be; what is private (the
        # database, the key, the archive, the outbox) is private by its own mode.
        public_folder(folder)
        with path.open("xb") as out:
            out.write(shipped(SETTINGS_FILE).read_bytes())
    except FileExistsError:
        raise _Fail(f"{path} already exists; init leaves it as it is") from None
    except OSError as exc:
        raise _Fail(f"cannot write {path}: {exc.strerror or exc}") from None
    defaults = Config()
    (folder / defaults.archive_dir).mkdir(exist_ok=True)
    public_folder(folder / defaults.public_dir)
    click.echo(f"wrote {path}, with every setting and its default")
    click.echo(
        f"made {folder / defaults.archive_dir} (the digests `newsletter write` adds) and "
        f"{folder / defaults.public_dir} (the feeds and web pages)"
    )
    here = "" if folder.resolve() == Path.cwd() else f"cd {folder} && "
    click.echo(
        f"next: {here}newsletter run; it reads the sample archive shipped with newsletter "
        "until source names a folder of your own digests"
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
    from newsletter.publish.feed import ATOM_NAME, JSON_NAME
    from newsletter.publish.issue_feed import ISSUES_ATOM_NAME, ISSUES_JSON_NAME

    archive = _archive(cfg, strict)
    if not archive.digests:
        raise _Fail(f"no digest in {_looked_in(cfg)}: nothing to put in the feed")
    site_cfg = cfg if out is None else cfg.replace(public_dir=out.resolve())
    built = site.build(site_cfg)
    folder = cfg.public_path if out is None else out
    written = {path.name for path in built.feeds}
    for name in (ATOM_NAME, JSON_NAME, ISSUES_ATOM_NAME, ISSUES_JSON_NAME):
        click.echo(f"{folder / name}: {'written' if name in written else 'unchanged'}")
    click.echo(f"{folder}: {count(len(built.pages), 'web page')} rendered")


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
        for written in site.web_copy(cfg, iso):
            click.echo(str(written))
    if open_it and not webbrowser.open(path.resolve().as_uri()):
        click.echo(
            f"warning: no web browser could be started here; open {path.resolve()} in one",
            err=True,
        )


# --- subscribers and sending ---------------------------------------------------------


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[Counter[str], int], None]]:
    """A rich progress bar on a terminal; otherwise a plain log line every few seconds."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.0f}/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task("sending", total=None, rate=0.0)
            started = time.monotonic()

            def update(tally: Counter[str], total: int) -> None:
                done = tally["sent"] + tally["failed"] + tally["skipped"]
                elapsed = max(time.monotonic() - started, 1e-6)
                bar.update(
                    task,
                    total=total or None,
                    completed=done,
                    rate=tally["sent"] / elapsed,
                    description=f"sent {tally['sent']} · failed {tally['failed']} · retrying {tally['retrying']}",
                )

            yield update
        return
    last = [time.monotonic()]

    def log_line(tally: Counter[str], total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5:
            last[0] = now
            click.echo(
                f"progress: {tally['sent']} sent, {tally['failed']} failed, "
                f"{tally['retrying']} retrying, of {total}",
                err=True,
            )

    yield log_line


def _store(cfg: Config) -> Any:
    from newsletter.store import open_store

    return open_store(cfg.database_url, cfg.base_dir)


def _existing_store(cfg: Config) -> Any:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(cfg.database_url)
    except Exception:
        return _store(cfg)  # which says what is wrong with database_url
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or not cfg.resolve(Path(database)).exists():
            return None
    return _store(cfg)


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

    report = import_csv(_store(cfg), csv_file, cfg.default_lang)
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


def _week_option(func: F) -> F:
    return click.option("--week", help="ISO week such as 2024-W05 (default: the previous week).")(
        func
    )


def _parse_week(cfg: Config, week: str | None) -> IsoWeek:
    if week is None:
        return IsoWeek.previous(dt.datetime.now(dt.UTC), cfg.tz)
    try:
        return IsoWeek.parse(week)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week") from None


_allow_insecure = click.option(
    "--allow-insecure-links",
    is_flag=True,
    help="Send over SMTP even with an http base_url or a localhost Message-ID domain (testing).",
)


def _report_exit(report: Any) -> None:
    """Print a send's outcome; exit non-zero when the issue is left paused."""
    from newsletter.app import issues

    click.echo(report.summary())
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
        from newsletter.app.subscribers import normalize_address

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
        mail_id = delivery.send_test_copy(
            cfg, store, prepared, key, address, lang or cfg.default_lang
        )
        mail = delivery.send_queued_mail(cfg, store, mail_id)
        if mail.status != "sent":
            raise _Fail(f"test copy to {address} was not sent: {mail.last_error}")
        click.echo(f"{iso}: test copy sent to {address}")
        return
    issues.check_links(cfg, allow_insecure=allow_insecure_links)
    store = _store(cfg)
    with _progress() as progress:
        report = delivery.send_week(
            cfg,
            store,
            lambda: _archive(cfg, strict),
            iso,
            key,
            wait=not no_wait,
            retry_failed=retry_failed,
            refreeze=refreeze,
            progress=progress,
            handle_signals=True,
            foreground=True,
        )
    _report_exit(report)


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
    store = _store(cfg)
    row = store.get_issue(str(_parse_week(cfg, week))) if week else store.latest_issue()
    if row is None:
        _writer_lines(store)
        counts = store.count_subscribers()
        click.echo(
            f"{week or 'no issue'}: not sent yet; subscribers: "
            + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
        return
    counts = store.counts(row.id)
    click.echo(_issue_line(row, counts))
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for failure in store.failures(row.id):
        click.echo(
            f"  failed: {failure.email} after {count(failure.attempts, 'attempt')}: "
            f"{failure.last_error}"
        )
    _bounce_lines(store.bounce_counts(row.id), counts)
    _writer_lines(store)


def _writer_lines(store: Any) -> None:
    """The model's usage by `newsletter write`, per day, when it has written anything."""
    from newsletter.archive.writer import usage_lines

    rows = store.writer_days()
    if rows:
        click.echo("writer (tokens per day, newest first):")
        for line in usage_lines(rows):
            click.echo(line)


# Above these shares of the messages handed over, mailbox providers throttle or block.
COMPLAINT_RATE_LIMIT = 0.001
BOUNCE_RATE_LIMIT = 0.02


def _bounce_lines(found: dict[str, int], counts: dict[str, int]) -> None:
    """An issue's bounces and complaints, and a warning when either rate is too high."""
    handed = counts.get("sent", 0) + counts.get("failed", 0)
    bounced = found.get("hard", 0) + found.get("soft", 0) + found.get("refused", 0)
    complaints = found.get("complaint", 0)
    click.echo(
        f"  bounces: hard {found.get('hard', 0)}, soft {found.get('soft', 0)}, "
        f"refused {found.get('refused', 0)}, blocked {found.get('blocked', 0)}; "
        f"complaints {complaints}; mailed unsubscribes {found.get('unsubscribe', 0)}"
    )
    if not handed:
        return
    bounce_rate, complaint_rate = bounced / handed, complaints / handed
    click.echo(f"  bounce rate {bounce_rate:.2%}, complaint rate {complaint_rate:.2%}")
    if complaint_rate > COMPLAINT_RATE_LIMIT:
        click.echo(
            f"warning: complaint rate {complaint_rate:.2%} is above "
            f"{COMPLAINT_RATE_LIMIT:.1%}: mailbox providers throttle or block senders "
            "with many complaints; check how addresses were collected",
            err=True,
        )
    if bounce_rate > BOUNCE_RATE_LIMIT:
        click.echo(
            f"warning: bounce rate {bounce_rate:.2%} is above {BOUNCE_RATE_LIMIT:.0%}: "
            "the list holds dead addresses; check where they came from",
            err=True,
        )


@main.command()
@_configured()
@click.option(
    "--maildir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Read this Maildir instead of [bounces] maildir or imap_url.",
)
def bounces(cfg: Config, maildir: Path | None) -> None:
    """Process the bounce mailbox once: bounces, complaints and mailed unsubscribes act on
    the list; prints the counts per kind and one line per action. Handled messages move
    to the processed folder; the rest are flagged and kept for a person. Also deletes
    subscriptions never confirmed within seven days.

    \b
    Examples:
      newsletter bounces
      newsletter bounces --maildir /home/bounces/Maildir
    """
    from newsletter.mail.bounces import process
    from newsletter.mail.tokens import signing_keys

    store = _store(cfg)
    try:
        result = process(cfg, store, signing_keys(cfg), maildir=maildir)
    finally:
        store.close()
    for line in result.lines:
        click.echo(line)
    click.echo(result.summary())


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
    with _progress() as progress:
        delivery.run_worker(
            cfg, _store(cfg), secret_key(cfg), once=once, poll=poll, progress=progress
        )


# --- writing the day's digest ---------------------------------------------------------------


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

    from newsletter.archive.writer import write_day

    date = day or dt.datetime.now(cfg.tz).date()
    # A dry run reads the summary cache when there is a database, and never creates one.
    store = _existing_store(cfg) if dry_run else _store(cfg)
    try:
        result = asyncio.run(write_day(cfg, store, date, dry_run=dry_run))
    finally:
        if store is not None:
            store.close()
    for line in result.plan:
        click.echo(line)
    click.echo(result.summary() + (" (--dry-run: nothing written)" if dry_run else ""))


# --- the service -------------------------------------------------------------------------


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
    from newsletter.app.issues import check_links
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

    from newsletter.app.issues import check_links
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
