"""What the daily and the issues feeds' entries share, in the feed's language.

The words around the summaries come from the catalogs of :mod:`newsletter.publish.render`
(section labels through the same entries as the email's); the summaries stay as written,
their own inline Markdown rendered by :mod:`newsletter.publish.inline`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from newsletter.models import Section
from newsletter.publish import inline

__all__ = ["AUTHORS_IN_CONTENT", "Words", "byline", "points_html", "words"]

NO_BREAK_SPACE = "\u00a0"
# Names in the content's author line before "and N more": a paper with hundreds of
# authors would otherwise outweigh a whole day of others.
AUTHORS_IN_CONTENT = 20


@dataclass(frozen=True, slots=True)
class Words:
    """The words a feed puts around the summaries, in one language (from the catalogs)."""

    lang: str
    locale: str
    gettext: Callable[[str], str]
    ngettext: Callable[[str, str, int], str]
    video: str
    hf_page: str
    day_rank: str
    papers_of: str
    authors: str
    # Babel takes tens of microseconds a call; a feed repeats few dates and vote counts.
    dates: dict[dt.date, str] = field(default_factory=dict)
    counts: dict[int, str] = field(default_factory=dict)

    def date(self, day: dt.date) -> str:
        """``2024년 5월 20일`` / ``May 20, 2024``."""
        text = self.dates.get(day)
        if text is None:
            from babel.dates import format_date

            text = self.dates[day] = str(format_date(day, format="long", locale=self.locale))
        return text

    def votes(self, votes: int) -> str:
        """``추천 1,234`` / ``1,234 votes``, the word and the number joined by a no-break
        space: a narrow screen or a wrapped text line never puts them on two lines."""
        text = self.counts.get(votes)
        if text is None:
            from babel.numbers import format_decimal

            number = str(format_decimal(votes, locale=self.locale))
            text = self.ngettext("%(votes)s vote", "%(votes)s votes", votes) % {"votes": number}
            text = self.counts[votes] = text.replace(" ", NO_BREAK_SPACE)
        return text

    def more(self, count: int) -> str:
        return self.ngettext("and %(count)s more", "and %(count)s more", count) % {"count": count}


@functools.cache
def words(lang: str) -> Words:
    """The feed words of ``lang``; section labels go through the same catalog entries as
    the email's (render.KNOWN_LABELS), so both say ``새로운 점``."""
    # Imported here, so that importing the feeds for their file names (ATOM_NAME, ...)
    # does not load Jinja, Babel and css_inline.
    from newsletter.publish.render import LOCALES, translations_for

    t = translations_for(lang)
    return Words(
        lang=lang,
        locale=LOCALES[lang],
        gettext=t.gettext,
        ngettext=t.ngettext,
        video=t.gettext("Watch the video"),
        hf_page=t.gettext("Hugging Face paper page"),
        day_rank=t.gettext("No. %(rank)d of %(date)s"),
        papers_of=t.gettext("Papers of %(date)s"),
        authors=t.gettext("Authors: %(names)s"),
    )


def points_html(sections: Sequence[Section], w: Words) -> Markup:
    """The summary points as (nested) lists, labels translated and in bold, each point's
    own inline Markdown rendered (links, bold, emphasis, code) and everything else escaped."""
    # f-strings of escape() and to_html() (both safe HTML): several times faster than
    # Markup's % or format(), which matters at hundreds of entries a build.
    out: list[str] = []
    depth = -1
    for section in sections:
        level = min(section.level, depth + 1)  # never open two levels at once
        if level > depth:
            out.append("<ul>")
            depth = level
        else:
            out.append("</li>")
            out.extend("</ul></li>" for _ in range(depth - level))
            depth = level
        text = inline.to_html(section.text)
        if section.label:
            out.append(f"<li><strong>{escape(w.gettext(section.label))}</strong>: {text}")
        else:
            out.append(f"<li>{text}")
    if depth >= 0:
        out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return Markup("".join(out))


def byline(authors: Sequence[str], w: Words, limit: int = AUTHORS_IN_CONTENT) -> str:
    """``Authors: A, B, C`` with at most ``limit`` names, then ``and N more``."""
    names = ", ".join(authors[:limit])
    if len(authors) > limit:
        names = f"{names} {w.more(len(authors) - limit)}"
    return w.authors % {"names": names}
