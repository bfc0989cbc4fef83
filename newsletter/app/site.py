"""Building the site: the one build of the public folder that the daily job, the weekly
job, ``newsletter feed``, ``send`` and ``preview --web`` all run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from newsletter.archive.cache import local_catalog
from newsletter.config import LANGS, Config
from newsletter.publish import site
from newsletter.publish.outputs import SiteBuild, Stop, build_site
from newsletter.select import IsoWeek

__all__ = ["SiteBuild", "build", "web_copy"]


def build(
    cfg: Config,
    *,
    today: dt.date | None = None,
    include: Iterable[IsoWeek] = (),
    stop: Stop | None = None,
) -> SiteBuild:
    """The feeds and pages of the public folder, from the archive as it stands (each only
    when its inputs changed)."""
    today = today or dt.datetime.now(cfg.tz).date()
    return build_site(cfg, local_catalog(cfg), today, include=include, stop=stop)


def web_copy(cfg: Config, week: IsoWeek, *, today: dt.date | None = None) -> list[Path]:
    """The site with the web copies of ``week``'s issue, finished or not (its neighbours,
    days and the front page with it). Returns the week's pages and the front page."""
    build(cfg, today=today, include=[week])
    public = cfg.public_path
    pages = [public / site.issue_path(week, lang, cfg.default_lang) for lang in LANGS]
    return [*pages, public / "index.html"]
