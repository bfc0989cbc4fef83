"""Building the site: the one build of the public folder that the daily job, the weekly
job, ``newsletter feed``, ``send`` and ``preview --web`` all run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from newsletter.archive.sources import local_catalog
from newsletter.config import LANGS, Config
from newsletter.errors import NewsletterError
from newsletter.files import public_folder
from newsletter.pacing import Steps
from newsletter.publish import site
from newsletter.publish.outputs import SiteBuild, Stop, build_site
from newsletter.select import IsoWeek
from newsletter.shipped import SETTINGS_FILE, shipped

__all__ = ["NewSite", "SiteBuild", "build", "start", "web_copy"]


@dataclass(frozen=True)
class NewSite:
    """What :func:`start` made: the settings file and the folders it names."""

    settings: Path
    archive: Path
    public: Path


def start(folder: Path) -> NewSite:
    """A new site in ``folder``: the commented settings file (every setting with its
    default, the same file as the shipped one) and the archive and public folders. An
    existing settings file is never overwritten: :class:`NewsletterError` then, or when
    the folder cannot be written."""
    path = folder / SETTINGS_FILE
    try:
        # Searchable by all, as the public folder inside must be; what is private (the
        # database, the key, the archive, the outbox) is private by its own mode.
        public_folder(folder)
        with path.open("xb") as out:
            out.write(shipped(SETTINGS_FILE).read_bytes())
    except FileExistsError:
        raise NewsletterError(f"{path} already exists; init leaves it as it is") from None
    except OSError as exc:
        raise NewsletterError(f"cannot write {path}: {exc.strerror or exc}") from None
    defaults = Config()
    archive = folder / defaults.archive_dir
    archive.mkdir(exist_ok=True)
    public = public_folder(folder / defaults.public_dir)
    return NewSite(path, archive, public)


def build(
    cfg: Config,
    *,
    today: dt.date | None = None,
    include: Iterable[IsoWeek] = (),
    stop: Stop | None = None,
    progress: Steps | None = None,
) -> SiteBuild:
    """The feeds and pages of the public folder, from the archive as it stands (each only
    when its inputs changed). ``progress`` is told the web pages rendered and the pages to
    render."""
    today = today or dt.datetime.now(cfg.tz).date()
    catalog = local_catalog(cfg)
    return build_site(cfg, catalog, today, include=include, stop=stop, progress=progress)


def web_copy(
    cfg: Config, week: IsoWeek, *, today: dt.date | None = None, progress: Steps | None = None
) -> list[Path]:
    """The site with the web copies of ``week``'s issue, finished or not (its neighbours,
    days and the front page with it). Returns the week's pages and the front page."""
    build(cfg, today=today, include=[week], progress=progress)
    public = cfg.public_path
    pages = [public / site.issue_path(week, lang, cfg.default_lang) for lang in LANGS]
    return [*pages, public / "index.html"]
