r"""Inline LaTeX in titles and summaries as readable text: ``$\nabla^2$DFT`` is ``∇²DFT``.

Paper titles and summaries carry the inline math of the papers themselves (``$VILA^2$``,
``$\times$``, ``$\mathcal{O}(n)$``). Every output shows them as text, through this module
at one point (:func:`shown`): pylatexenc turns macros into characters, and super- and
subscripts become Unicode super- and subscript characters where one exists for every
character of the script.

A math span is converted all or nothing: one that holds anything pylatexenc does not
know, or whose result still has LaTeX in it, stays exactly as written, dollars included.
What counts as a span follows Pandoc's ``tex_math_dollars``: the opening ``$`` has a
non-space character right after it, the closing one a non-space character right before
it and no digit after it, so prices (``$5 million``, ``$5-$10``) are never math. ``\$``
is a dollar sign. Code spans and URLs are left alone.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from newsletter.models import Paper, Pick, Section
from newsletter.select import WeekIssue

__all__ = ["REVISION", "shown", "shown_issue", "shown_pick", "shown_picks", "to_text"]

# What the conversion is made of: stored outputs (feeds, pages, the front page's leads)
# made by another revision or another pylatexenc are rendered again.
REVISION = f"latex-1/pylatexenc-{version('pylatexenc')}"

# $$display$$ first, then $inline$; neither after a backslash (an escaped dollar). An
# inline span with LaTeX in it (a macro, a script or a group) may be followed by anything
# (``$\sim$10%``); one without may not be followed by a digit (``$5-$10`` is two prices)
# nor by a Latin letter (``$HOME/$USER`` is two variables).
_BODY = r"(?:[^$\\]|\\.)"
_SPAN = re.compile(
    r"(?<!\\)\$\$(?=\S)(?P<display>[^$]+?)(?<=[^\s\\])\$\$"
    rf"|(?<!\\)\$(?=[^\s$])(?P<tex>{_BODY}*?(?:\\.|[\^_{{]){_BODY}*?)(?<=[^\s\\])\$"
    rf"|(?<!\\)\$(?=[^\s$])(?P<inline>{_BODY}*?)(?<=[^\s\\])\$(?![0-9A-Za-z])"
)
# Code spans and URLs (bare, or a Markdown link's target): never math.
_PROTECTED = re.compile(r"(`+)[^`]*?\1|https?://\S+|\]\([^)\s]*\)", re.IGNORECASE)
_MACRO = re.compile(r"\\(?:[A-Za-z]+|.)", re.DOTALL)
_BARE_MACRO_SPACE = re.compile(r"(\\[A-Za-z]+)\s+")
# LaTeX's own specials that change what follows (a comment, a table cell, a parameter).
_SPECIALS = re.compile(r"(?<!\\)[%&#]")

_SUPER = dict(
    zip(
        "0123456789+-−=()abcdefghijklmnoprstuvwxyzABDEGHIJKLMNOPRTUVWαβγδεθιφχ'′*∗⊤†‡",
        "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁻⁼⁽⁾ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻᴬᴮᴰᴱᴳᴴᴵᴶᴷᴸᴹᴺᴼᴾᴿᵀᵁⱽᵂᵅᵝᵞᵟᵋᶿᶥᵠᵡ′′**ᵀ†‡",
        strict=True,
    )
)
_SUB = dict(
    zip(
        "0123456789+-−=()aehijklmnoprstuvxβγρφχ",
        "₀₁₂₃₄₅₆₇₈₉₊₋₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓᵦᵧᵨᵩᵪ",
        strict=True,
    )
)
# Macros pylatexenc knows that are not inline math: document structure, references and
# placeholders. A span with one of them stays as written.
_NOT_MATH = frozenset(
    [
        "\\",
        "author",
        "chapter",
        "date",
        "footnote",
        "item",
        "maketitle",
        "paragraph",
        "part",
        "section",
        "subsection",
        "subsubsection",
        "subparagraph",
        "title",
        "input",
        "include",
        "today",
        "vspace",
        "hspace",
        "href",
        "url",
        "begin",
        "end",
        "label",
        "colorbox",
        "fcolorbox",
        "textcolor",
    ]
)


def to_text(text: str) -> str:
    """``text`` with each inline LaTeX math span that converts whole shown as Unicode,
    and ``\\$`` as ``$``; code spans and URLs as written."""
    if "$" not in text:
        return text
    out: list[str] = []
    pos = 0
    for match in _PROTECTED.finditer(text):
        out.append(_convert(text[pos : match.start()]))
        out.append(match.group())
        pos = match.end()
    out.append(_convert(text[pos:]))
    return "".join(out)


def _convert(text: str) -> str:
    """Math spans converted, and ``\\$`` a dollar sign in the text between them (a span
    left as written keeps its own)."""
    if "$" not in text:
        return text
    out: list[str] = []
    pos = 0
    for match in _SPAN.finditer(text):
        out.append(text[pos : match.start()].replace("\\$", "$"))
        source = match.group("display") or match.group("tex") or match.group("inline")
        out.append(_math(source) or match.group())
        pos = match.end()
    out.append(text[pos:].replace("\\$", "$"))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _math(source: str) -> str | None:
    """The text of one math span's content, or None when any of it does not convert."""
    if _SPECIALS.search(source):
        return None
    scripted = _scripts(source)
    if scripted is None:
        return None
    text = _latex(scripted)
    if text is None or not text or "\\" in text or "^" in text or "$" in text:
        return None
    for char in "_{}":
        # Only what was escaped in the source (\_, \{, \}) may be left in the result.
        if text.count(char) > source.count("\\" + char):
            return None
    return text


def _latex(source: str) -> str | None:
    """pylatexenc's text of ``source`` as math, or None when it names a macro it has no
    text for (pylatexenc would drop it silently)."""
    db = _context()
    for macro in _MACRO.findall(source):
        name = macro[1:]
        if name in _NOT_MATH or db.get_macro_spec(name) is None:
            return None
    # LaTeX (and pylatexenc) swallow the space after a bare macro; a reader of the text
    # wants it where the source has it: "x ∈ ℝ" for `x \in \mathbb{R}`, not "x ∈ℝ".
    source = _BARE_MACRO_SPACE.sub(_control_space, source)
    try:
        text = _converter().latex_to_text(f"${source}$")
    except Exception:  # pylatexenc's parse errors have no common base class
        return None
    # Thin spaces (\,) and quads are several spaces in pylatexenc's text; one is enough.
    return " ".join(text.split())


def _control_space(match: re.Match[str]) -> str:
    """A macro of no arguments and the spaces after it as the macro and a control space
    (``\\ ``), which is text; a macro with arguments as it is (its argument may follow)."""
    if _walker_context().get_macro_spec(match.group(1)[1:]) is None:
        return match.group(1) + "\\ "
    return match.group()


def _scripts(source: str) -> str | None:
    """``source`` with each ``^x``, ``^{...}``, ``_x`` and ``_{...}`` written as Unicode
    super- or subscript characters, or None when one has no such character."""
    out: list[str] = []
    pos, end = 0, len(source)
    while pos < end:
        char = source[pos]
        if char == "\\":
            macro = _MACRO.match(source, pos)
            if macro is None:  # a backslash at the very end
                return None
            out.append(macro.group())
            pos = macro.end()
        elif char in "^_":
            found = _argument(source, pos + 1)
            if found is None:
                return None
            argument, pos = found
            script = _script(argument, _SUPER if char == "^" else _SUB)
            if script is None:
                return None
            while out and out[-1].isspace():  # a script sits on what it follows
                out.pop()
            # An empty group ends a macro name before it (\nabla{}²) and adds no text.
            out.append("{}" + script)
        else:
            out.append(char)
            pos += 1
    return "".join(out)


def _argument(source: str, pos: int) -> tuple[str, int] | None:
    """The argument of a script at ``pos``: a braced group, a macro or one character,
    and where it ends."""
    while pos < len(source) and source[pos] == " ":
        pos += 1
    if pos >= len(source):
        return None
    if source[pos] == "{":
        depth, start = 0, pos
        while pos < len(source):
            char = source[pos]
            if char == "\\":
                pos += 2
                continue
            depth += {"{": 1, "}": -1}.get(char, 0)
            pos += 1
            if depth == 0:
                return source[start + 1 : pos - 1], pos
        return None
    if source[pos] == "\\":
        macro = _MACRO.match(source, pos)
        return (macro.group(), macro.end()) if macro else None
    return source[pos], pos + 1


def _script(argument: str, table: dict[str, str]) -> str | None:
    inner = _scripts(argument)
    text = None if inner is None else _latex(inner) if inner.strip() else None
    if not text or any(char not in table for char in text):
        return None
    return "".join(table[char] for char in text)


@functools.cache
def _context() -> Any:
    from pylatexenc.latex2text import MacroTextSpec, get_default_latex_context_db

    db = get_default_latex_context_db().filter_context(
        keep_categories=["latex-base", "latex-approximations", "advanced-symbols"]
    )
    # Common in titles, unknown to pylatexenc: sizing delimiters show only the delimiter.
    db.add_context_category(
        "newsletter",
        prepend=True,
        macros=[
            MacroTextSpec("texttt", "%(1)s"),
            MacroTextSpec("textsf", "%(1)s"),
            MacroTextSpec("mathtt", "%(1)s"),
            MacroTextSpec("checkmark", "✓"),
            MacroTextSpec("|", "‖"),
            *(MacroTextSpec(name, "") for name in ("left", "right", "big", "Big", "bigl", "bigr")),
        ],
    )
    return db


@functools.cache
def _walker_context() -> Any:
    """How pylatexenc's parser reads macros: which take arguments."""
    from pylatexenc.latexwalker import get_default_latex_context_db

    return get_default_latex_context_db()


@functools.cache
def _converter() -> Any:
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text(latex_context=_context(), math_mode="text")


# -- papers as shown ------------------------------------------------------------------------


def _has_math(paper: Paper) -> bool:
    return "$" in paper.title or any("$" in section.text for section in paper.sections)


def shown(paper: Paper) -> Paper:
    """``paper`` as every output shows it: title and summary points through :func:`to_text`
    (the arXiv id, media and authors as they are)."""
    if not _has_math(paper):
        return paper
    return dataclasses.replace(
        paper,
        title=to_text(paper.title),
        sections=tuple(
            Section(s.label, to_text(s.text), s.level) if "$" in s.text else s
            for s in paper.sections
        ),
    )


def shown_pick(pick: Pick) -> Pick:
    return dataclasses.replace(pick, paper=shown(pick.paper)) if _has_math(pick.paper) else pick


def shown_picks(picks: Sequence[Pick]) -> list[Pick]:
    return [shown_pick(pick) for pick in picks]


def shown_issue(issue: WeekIssue) -> WeekIssue:
    if not any(_has_math(pick.paper) for pick in issue.picks):
        return issue
    return WeekIssue(issue.week, tuple(shown_picks(issue.picks)))
