"""What the W3C Feed Validation Service would report about an Atom feed, for the tests.

The validator runs from source only (w3c/feedvalidator, with html5lib) and cannot be
fetched in CI, so its rules that matter for these feeds are restated here: RFC 4287's
RELAX NG schema (tests/atom.rnc) for the structure, then each error and warning the
validator gives beyond it, under the validator's own message. Where restating a rule
exactly would take its HTML parser, the check here is stricter than the validator (any
end tag, any C1 character), never looser. README ("Checking the feeds") says how to run
the real validator by hand.
"""

from __future__ import annotations

import functools
import re
from html.entities import name2codepoint
from pathlib import Path

import rnc2rng
from lxml import etree, html

HERE = Path(__file__).resolve().parent
ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

# The validator's HTMLValidator.acceptable_elements: anything else in HTML content is a
# "SecurityRisk" (script, style, iframe, object, embed, ...) or "Non-html tag".
# fmt: off
SAFE_ELEMENTS = frozenset((
    "a", "abbr", "acronym", "address", "area", "article", "aside", "audio", "b", "bdi", "big",
    "blockquote", "br", "button", "canvas", "caption", "center", "cite", "code", "col",
    "colgroup", "command", "data", "datagrid", "datalist", "dd", "del", "details", "dfn",
    "dialog", "dir", "div", "dl", "dt", "em", "eventsource", "fieldset", "figcaption",
    "figure", "footer", "font", "form", "header", "h1", "h2", "h3", "h4", "h5", "h6", "hgroup",
    "hr", "i", "img", "input", "ins", "keygen", "kbd", "label", "legend", "li", "m", "main",
    "map", "mark", "menu", "meter", "multicol", "nav", "nextid", "ol", "output", "optgroup",
    "option", "p", "picture", "pre", "progress", "q", "rp", "rt", "ruby", "s", "samp",
    "section", "select", "small", "sound", "source", "spacer", "span", "strike", "strong",
    "sub", "summary", "sup", "table", "tbody", "td", "template", "textarea", "time", "tfoot",
    "th", "thead", "tr", "track", "tt", "u", "ul", "var", "video", "noscript", "wbr",
))
# fmt: on
_DATE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_ABSOLUTE_RE = re.compile(r"(https?://[^/\s]+|tag:[^\s,]+,\d{4}(-\d\d){0,2}:\S+)")
_END_TAG_RE = re.compile(r"</\w+>")
_ENTITY_RE = re.compile(r"&(#?\w+)")
_EMAIL_RE = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
# Windows-1252 read as Latin-1 (C1 controls), the replacement character, and UTF-8 read as
# Latin-1 ("CafÃ©"): the validator's "BadCharacters".
_BAD_CHARACTERS_RE = re.compile("[\x80-\x9f\ufffd]|[\xc2\xc3][\x80-\xbf]")
_TEXT_CONSTRUCTS = ("title", "subtitle", "summary", "rights", "content")


@functools.cache
def _schema() -> etree.RelaxNG:
    rng = rnc2rng.dumps(rnc2rng.loads((HERE / "atom.rnc").read_text(encoding="utf-8")))
    # libxml2 rejects the empty-namespace declaration (``namespace local = ""``) that the
    # converter copies onto the grammar element; the nsName it stands for stays as ns="".
    rng = rng.replace(' xmlns:local=""', "")
    return etree.RelaxNG(etree.fromstring(rng.encode("utf-8")))


def schema_valid(data: bytes) -> bool:
    return bool(_schema().validate(etree.fromstring(data)))


def markup_like(text: str) -> str | None:
    """What the validator reads as HTML in a plain-text element ("ContainsUndeclaredHTML"):
    an end tag, or a character reference it knows (``&amp;``, ``&#39;``); None if nothing."""
    tag = _END_TAG_RE.search(text)
    if tag:
        return tag.group()
    for word in _ENTITY_RE.findall(text):
        if word in name2codepoint or word == "apos" or not word.isalpha():
            return "&" + word
    return None


def _where(element: etree._Element) -> str:
    entry = next((e for e in element.iterancestors(f"{ATOM}entry")), None)
    owner = entry.findtext(f"{ATOM}id") if entry is not None else "feed"
    return f"{owner}: {etree.QName(element).localname}"


def _html_problems(element: etree._Element) -> list[str]:
    """The validator parses type="html" text as HTML and reports unsafe or unknown tags and
    event-handler or style attributes ("SecurityRisk", "NotHtml")."""
    problems = []
    fragment = html.fragment_fromstring(element.text or "", create_parent="div")
    for node in fragment.iter():
        if not isinstance(node.tag, str) or node is fragment:
            continue
        if node.tag.lower() not in SAFE_ELEMENTS:
            problems.append(f"{_where(element)} contains potentially dangerous <{node.tag}>")
        for name in node.attrib:
            if name.lower().startswith("on") or name.lower() == "style":
                problems.append(f"{_where(element)} has a {name} attribute on <{node.tag}>")
    return problems


def atom_problems(data: bytes, self_url: str | None = None) -> list[str]:
    """Everything the validator would report, as one line each: the schema, then the rules
    RELAX NG misses. ``self_url``: where the feed is served (its rel="self" must say so)."""
    root = etree.fromstring(data)
    schema = _schema()
    problems = [str(e) for e in (schema.error_log if not schema.validate(root) else [])]
    entries = list(root.iter(f"{ATOM}entry"))
    ids = [e.findtext(f"{ATOM}id") for e in entries]
    problems += [f"duplicate entry id {i}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    updated = [e.findtext(f"{ATOM}updated") for e in entries]
    problems += [
        f"Two entries with the same value for atom:updated: {u}"
        for u in sorted({u for u in updated if updated.count(u) > 1 and u})
    ]
    for tag in ("updated", "published"):
        for date in root.iter(f"{ATOM}{tag}"):
            if not _DATE_RE.match(date.text or ""):
                problems.append(f"{tag} without a time zone: {date.text}")
    if root.get(XML_LANG) is None:
        problems.append("Missing feed element: xml:lang")
    selves = [link for link in root.findall(f"{ATOM}link") if link.get("rel") == "self"]
    if not selves:
        problems.append('Missing atom:link with rel="self"')
    elif self_url is not None and selves[0].get("href") != self_url:
        problems.append(f"Self reference doesn't match document location: {selves[0].get('href')}")
    for owner in [root, *entries]:
        seen: set[tuple[str | None, str | None]] = set()
        for link in owner.findall(f"{ATOM}link"):
            if link.get("rel", "alternate") == "alternate":
                key = (link.get("type"), link.get("hreflang"))
                if key in seen:
                    problems.append(f"two alternate links of type {key}: {link.get('href')}")
                seen.add(key)
            title = link.get("title")
            if title and markup_like(title):
                problems.append(f"link title contains HTML: {markup_like(title)}")
    for name in root.iter(f"{ATOM}name"):
        found = markup_like(name.text or "")
        if found:
            problems.append(f"{_where(name)} contains HTML: {found}")
        if _EMAIL_RE.search(name.text or ""):
            problems.append(f"{_where(name)} should not contain email address")
    for tag in _TEXT_CONSTRUCTS:
        for element in root.iter(f"{ATOM}{tag}"):
            kind = element.get("type", "text")
            if kind == "html":
                problems += _html_problems(element)
            elif kind == "text" and markup_like(element.text or ""):
                found = markup_like(element.text or "")
                problems.append(f"{_where(element)} may contain HTML (type=text): {found}")
    for element in root.iter():
        values = [element.text or "", *element.attrib.values()]
        if any(_BAD_CHARACTERS_RE.search(value) for value in values):
            problems.append(f"{_where(element)} contains bad characters")
    urls = [link.get("href") for link in root.iter(f"{ATOM}link")]
    urls += [e.text for e in root.iter(f"{ATOM}id")]
    urls += [t.get("url") for t in root.iter(f"{MEDIA}thumbnail")]
    for content in root.iter(f"{ATOM}content"):
        if content.text:
            fragment = html.fragment_fromstring(content.text, create_parent="div")
            urls += fragment.xpath("//@href | //@src")
    problems += [f"not an absolute URL: {u!r}" for u in urls if not _ABSOLUTE_RE.match(u or "")]
    if root.find(f"{ATOM}author") is None:
        problems += [
            f"entry without an author: {e.findtext(f'{ATOM}id')}"
            for e in entries
            if e.find(f"{ATOM}author") is None
        ]
    return problems
