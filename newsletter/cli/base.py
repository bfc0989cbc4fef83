"""The command group, and what every command shares: settings, archive and store access,
one-line failures, options."""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import gc
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from newsletter import logs
from newsletter.config import Config, load_config, recall_listening
from newsletter.errors import NewsletterError
from newsletter.files import PRIVATE_UMASK
from newsletter.mail.tokens import check_keys
from newsletter.models import Archive, Problem
from newsletter.select import IsoWeek
from newsletter.words import count

if TYPE_CHECKING:
    from newsletter.archive.cache import Catalog
    from newsletter.store import Store


F = TypeVar("F", bound=Callable[..., Any])


def _configured(
    *, source: bool = False, service: bool = False, recall: bool = True
) -> Callable[[F], F]:
    """Give a command ``--config`` and ``-v`` (and ``--source``), set up logging, and pass
    it the loaded :class:`Config`. ``service``: a long-lived process that listens on
    ``--host`` and ``--port`` (``web.host``, ``web.port``) and logs at least information.
    ``recall``: links go where a running service listens (see recall_listening).

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
                if recall and not service:
                    # Beside a running `newsletter run --port P`, links go where it listens.
                    cfg = recall_listening(cfg)
                check_keys(cfg)
                if source:
                    _check_source(cfg)
                return func(cfg, **kwargs)
            except NewsletterError as exc:
                raise _fail(str(exc), exc.exit_code) from None

        return _options(cast("F", wrapper), source=source, service=service)

    return decorate


def _options(wrapper: F, *, source: bool, service: bool) -> F:
    """The options of :func:`_configured` on ``wrapper``."""
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
    return wrapper


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
    from newsletter.archive.sources import archive_folders

    folders = archive_folders(cfg) or [cfg.archive_path]
    return " and ".join(str(folder) for folder in folders)


def _catalog(cfg: Config, strict: bool) -> Catalog:
    """What the parse cache knows of the source and archive_dir; problems reported."""
    from newsletter.archive.sources import local_catalog

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


def entry() -> None:
    """The ``newsletter`` program: :func:`main`, then the interpreter's exit without its
    search of the whole heap for reference cycles as it tears the modules down. That
    search was 0.10-0.15 s of every ``send`` and ``worker`` after its last message (most
    of a second for a service with a big archive's catalog in memory); by then every
    command has written and closed what it opened, so the heap is kept out of it
    (:func:`gc.freeze`). Tests call :func:`main`, whose heap is theirs."""
    try:
        main()
    finally:
        gc.freeze()


def _store(cfg: Config) -> Store:
    """The database, open until the command ends (closed then, whatever happens)."""
    from newsletter.store import open_store

    store = open_store(cfg.database_url, cfg.base_dir)
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(store.close)
    return store


def _existing_store(cfg: Config) -> Store | None:
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
