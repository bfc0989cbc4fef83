"""The ``newsletter`` command: thin click commands over the library."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import Config, load_config
from .digest import load_archive
from .errors import NewsletterError
from .models import Archive, Pick
from .select import IsoWeek, top_daily, top_weekly

F = TypeVar("F", bound=Callable[..., Any])


def _configured(*, source: bool = False) -> Callable[[F], F]:
    """Give a command ``--config`` (and ``--source``), and pass it the loaded :class:`Config`.

    Library errors become one-line messages with their exit code, never tracebacks.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(config_path: Path | None, verbose: int, **kwargs: Any) -> Any:
            logging.basicConfig(
                level=logging.DEBUG
                if verbose > 1
                else logging.INFO
                if verbose
                else logging.WARNING,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            overrides = {"source": kwargs.pop("source")} if source else {}
            try:
                cfg = load_config(config_path, overrides=overrides)
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
        if source:
            wrapper = click.option(
                "--source",
                type=str,
                default=None,
                help="Digest folder to read instead of the configured one.",
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


def _archive(cfg: Config, strict: bool) -> Archive:
    archive = load_archive(cfg.source_path)
    for problem in archive.problems:
        click.echo(f"error: {problem}", err=True)
    if strict and archive.problems:
        raise _Fail(f"{len(archive.problems)} problem(s) in the archive (--strict)")
    return archive


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
def main() -> None:
    """Hugging Face Daily Papers in Korean: an Atom feed and a weekly email."""


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
    archive = _archive(cfg, strict)
    if as_json:
        _dump(archive.to_json())
        return
    for digest in archive.digests:
        best = top_daily(digest, 1)
        top = f"{_votes(best[0].votes):>4}  {_clip(best[0].paper.title, 60)}" if best else ""
        click.echo(f"{digest.date}  {len(digest.papers):3d} papers  {top}")
    click.echo(
        f"{len(archive.digests)} digests, {archive.paper_count} papers, "
        f"{len(archive.problems)} problems"
    )


def _picks_json(picks: list[Pick]) -> list[dict[str, Any]]:
    return [
        {"rank": p.rank, "date": p.date.isoformat(), **p.paper.to_json(), "votes": p.votes}
        for p in picks
    ]


@main.command()
@_configured(source=True)
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="A day: its top papers.")
@click.option("--week", help="An ISO week such as 2024-W05: its top papers.")
@click.option(
    "--n", "n", type=click.IntRange(min=1), help="How many (default: top_n_daily/top_n_weekly)."
)
@_strict
@_json
def top(
    cfg: Config,
    day: dt.datetime | None,
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
        digest = archive.by_date(day.date())
        if digest is None:
            raise _Fail(f"no digest for {day.date()} in {cfg.source}")
        picks = top_daily(digest, n or cfg.top_n_daily)
        label = {"date": day.date().isoformat()}
    else:
        try:
            iso = IsoWeek.parse(week or "")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--week") from None
        picks = top_weekly(archive.digests, iso, n or cfg.top_n_weekly)
        if not picks:
            raise _Fail(f"no digest in week {iso} ({iso.monday} to {iso.sunday})")
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
    for p in picks:
        click.echo(
            f"{p.rank:3d}  {_votes(p.votes):>4}  {p.date}  {p.paper.arxiv_id:<11} {_clip(p.paper.title, 70)}"
        )


PREVIEW_DIR = Path("preview")
SAMPLE_RECIPIENT = ("독자", "reader@example.com")
SAMPLE_TOKEN = "preview-sample-token"


@main.command()
@_configured(source=True)
@click.option("--week", help="ISO week such as 2024-W05 (default: the latest in the archive).")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="A day: its ISO week's issue.")
@click.option("--lang", type=click.Choice(["ko", "en"]), help="Interface language (default: default_lang).")
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
@click.option("--web", is_flag=True, help="Also write the web copies under public/issues/ and the index.")
@_strict
def preview(
    cfg: Config,
    week: str | None,
    day: dt.datetime | None,
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

    from .message import message_template, unsubscribe_url
    from .render import build_issue, latest_week, publish_issue, render_issue

    if week is not None and day is not None:
        raise click.UsageError("give at most one of --week or --date")
    archive = _archive(cfg, strict)
    if week is not None:
        try:
            iso = IsoWeek.parse(week)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--week") from None
    elif day is not None:
        iso = IsoWeek.of(day.date())
    else:
        iso = latest_week(archive)
    lang = lang or cfg.default_lang
    issue = build_issue(cfg, archive, iso)
    rendered = render_issue(cfg, issue, lang)
    url = unsubscribe_url(cfg, SAMPLE_TOKEN)
    data: bytes
    if fmt == "html":
        data = rendered.html_for(url).encode("utf-8")
    elif fmt == "text":
        data = rendered.text_for(url).encode("utf-8")
    else:
        name, address = SAMPLE_RECIPIENT
        data = (
            message_template(cfg, rendered)
            .personalize(to_address=address, to_name=name, unsubscribe_token=SAMPLE_TOKEN)
            .data
        )
    suffix = {"html": "html", "text": "txt", "eml": "eml"}[fmt]
    path = out or PREVIEW_DIR / f"{iso}.{lang}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    click.echo(str(path))
    if web:
        for written in publish_issue(cfg, issue):
            click.echo(str(written))
    if open_it:
        webbrowser.open(path.resolve().as_uri())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
