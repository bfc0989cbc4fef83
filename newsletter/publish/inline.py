"""The inline Markdown of a summary: links, bare URLs, bold, emphasis and code; nothing else.

Summaries are written by people and models, and some carry Markdown of their own
(``코드는 [GitHub 링크](https://github.com/...)에서``). Those few inline constructs are
rendered; everything else a digest holds stays literal text, so nothing from a digest
ever becomes markup beyond ``<a href="http(s)://...">``, ``<strong>``, ``<em>`` and
``<code>``. Links to anything but http and https are left as the text they were written as.

markdown-it-py parses (CommonMark's rules for brackets, nesting and unclosed markers),
with every block rule, raw HTML, entities and backslash escapes off; bare URLs are found
by :func:`_bare_urls`, which stops at the first non-ASCII character, since Korean text
follows a URL without a space (``https://github.com/x/y에서``).
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.common.utils import isMdAsciiPunct, isPunctChar, isWhiteSpace
from markdown_it.parser_inline import ParserInline
from markdown_it.rules_core import StateCore
from markdown_it.rules_inline import StateInline
from markdown_it.rules_inline.state_inline import Scanned
from markdown_it.token import Token
from markdown_it.utils import EnvType
from markupsafe import Markup, escape

__all__ = ["to_html", "to_text"]

# Characters that may start one of the rendered constructs; text without any of them is
# plain, and skips the parser (most summary points).
_TRIGGERS = re.compile(r"[*`\[<]|https?://", re.IGNORECASE)
# A bare URL: ASCII only, ended by whitespace, a non-ASCII letter or an angle bracket.
_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", re.IGNORECASE)
# Punctuation that ends a sentence rather than a URL.
_TRAILING = ".,;:!?'\"*"


def _allowed(url: str) -> bool:
    return url.lower().startswith(("http://", "https://")) and len(url) > len("https://")


def _trim(url: str) -> str:
    """``https://x.org/a).`` in ``(see https://x.org/a).`` is ``https://x.org/a``."""
    while url:
        unbalanced = url[-1] == ")" and url.count("(") < url.count(")")
        if url[-1] in _TRAILING or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def _bare_urls(state: StateCore) -> None:
    """Turn bare http(s) URLs in text outside links into links."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        depth = 0
        for token in block.children:
            if token.type == "link_open":
                depth += 1
            elif token.type == "link_close":
                depth -= 1
            if token.type != "text" or depth or not _URL.search(token.content):
                children.append(token)
                continue
            children.extend(_split_urls(token.content, state.md))
        block.children = children


def _split_urls(text: str, md: MarkdownIt) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    for match in _URL.finditer(text):
        url = _trim(match.group())
        if not _allowed(url):
            continue
        if match.start() > pos:
            tokens.append(_text(text[pos : match.start()]))
        link = Token("link_open", "a", 1)
        link.attrs = {"href": md.normalizeLink(url)}
        link.markup = "linkify"
        tokens += [link, _text(url), Token("link_close", "a", -1)]
        pos = match.start() + len(url)
    if pos < len(text):
        tokens.append(_text(text[pos:]))
    return tokens


def _literal_marks(state: StateInline, silent: bool) -> bool:
    """Keep ``_`` and a lone ``*`` between Latin letters or digits as text: ``__init__``,
    ``snake_case`` and ``2*3*4`` are not emphasis (only ``*em*`` and ``**bold**`` are).
    Korean particles follow a closing ``*`` directly (``*강조*는``), so only ASCII counts."""
    src, pos = state.src, state.pos
    char = src[pos]
    if char == "_":
        end = pos
        while end < state.posMax and src[end] == "_":
            end += 1
    elif (
        char == "*"
        and 0 < pos < state.posMax - 1
        and _ascii_alnum(src[pos - 1])
        and _ascii_alnum(src[pos + 1])
    ):
        end = pos + 1
    else:
        return False
    if not silent:
        state.pending += src[pos:end]
    state.pos = end
    return True


def _ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _cjk(char: str) -> bool:
    """Hangul, and the CJK ideographs and kana Korean text borrows."""
    code = ord(char)
    return (
        0xAC00 <= code <= 0xD7A3  # Hangul syllables
        or 0x1100 <= code <= 0x11FF  # Hangul jamo
        or 0x3130 <= code <= 0x318F  # Hangul compatibility jamo
        or 0x3040 <= code <= 0x30FF  # kana
        or 0x4E00 <= code <= 0x9FFF  # CJK ideographs
    )


class _KoreanState(StateInline):
    """CommonMark's flanking rules, with a Korean particle after a closing ``**`` (or a
    syllable before an opening one) counted as punctuation.

    Plain CommonMark leaves ``**"인용"**는`` and ``**모델(LLM)**은`` unrendered: a delimiter
    between punctuation and a letter only opens or closes with whitespace on the letter's
    side, and Korean writes particles with no space. (The CJK-friendly amendment to
    CommonMark proposes the same.)"""

    def scanDelims(self, start: int, canSplitWord: bool) -> Scanned:
        pos, maximum, marker = start, self.posMax, self.src[start]
        last = self.src[start - 1] if start > 0 else " "
        while pos < maximum and self.src[pos] == marker:
            pos += 1
        following = self.src[pos] if pos < maximum else " "
        last_punct = isMdAsciiPunct(ord(last)) or isPunctChar(last) or _cjk(last)
        next_punct = isMdAsciiPunct(ord(following)) or isPunctChar(following) or _cjk(following)
        last_space, next_space = isWhiteSpace(ord(last)), isWhiteSpace(ord(following))
        left = not (next_space or (next_punct and not (last_space or last_punct)))
        right = not (last_space or (last_punct and not (next_space or next_punct)))
        can_open = left and (canSplitWord or not right or last_punct)
        can_close = right and (canSplitWord or not left or next_punct)
        return Scanned(can_open, can_close, pos - start)


def _parse_korean(
    self: ParserInline, src: str, md: MarkdownIt, env: EnvType, tokens: list[Token]
) -> list[Token]:
    state = _KoreanState(src, md, env, tokens)
    self.tokenize(state)
    for rule in self.ruler2.getRules(""):
        rule(state)
    return state.tokens


@functools.cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("zero", {"html": False, "typographer": False})
    md.enable(["emphasis", "link", "backticks", "autolink"])
    md.validateLink = _allowed  # type: ignore[method-assign]
    md.inline.parse = types.MethodType(_parse_korean, md.inline)  # type: ignore[method-assign]
    md.inline.ruler.before("emphasis", "literal_marks", _literal_marks)
    md.core.ruler.after("inline", "bare_urls", _bare_urls)
    return md


def _children(text: str) -> Sequence[Token]:
    tokens = _parser().parseInline(text)
    return tokens[0].children or () if tokens else ()


def _plain(text: str) -> bool:
    """Whether ``text`` holds none of the constructs. Every construct contains one of these
    substrings (a bare URL "://"): scanning for them rules out most summary points several
    times faster than :data:`_TRIGGERS` alone, which matters in a feed of hundreds."""
    if "://" in text or "*" in text or "`" in text or "[" in text or "<" in text:
        return not _TRIGGERS.search(text)
    return True


def to_html(text: str) -> Markup:
    """``text`` as safe HTML: the inline constructs rendered, all else escaped."""
    if _plain(text):
        return escape(text)
    md = _parser()
    return Markup(md.renderer.render(list(_children(text)), md.options, {}))


def to_text(text: str) -> str:
    """``text`` for a plain-text part: ``[label](url)`` becomes ``label (url)``, a bare URL
    stays as written, and bold, emphasis and code marks are dropped."""
    if _plain(text):
        return text
    out: list[str] = []
    links: list[tuple[str, int]] = []
    for token in _children(text):
        if token.type == "link_open":
            links.append((str(token.attrs.get("href", "")), len(out)))
        elif token.type == "link_close" and links:
            href, start = links.pop()
            label = "".join(out[start:])
            if label not in (href, _display(href)):
                out.append(f" ({_display(href)})")
        elif token.type in ("text", "code_inline"):
            out.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            out.append("\n")
    return "".join(out)


def _display(href: str) -> str:
    # The href is percent-encoded by the parser (non-ASCII paths); a person reads the URL
    # as it was written.
    return str(_parser().normalizeLinkText(href))
