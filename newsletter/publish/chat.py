"""The day's papers as chat messages: Slack Block Kit and Discord embeds, within each
service's documented limits. Pure: a day's picks in, JSON-ready messages out.

As the digests' original daily job did, a day is one message ("2024-01-29 Daily Papers"
with the Hugging Face link) and each paper (linked title, votes, authors, the summary) a
reply in its thread; with threads off, or by an incoming webhook (which cannot thread),
the same parts go to the channel itself. Discord has no threads for a webhook: a day is
the head message and the papers' embeds, ten to a message.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from newsletter.models import HF_BASE, Pick
from newsletter.publish import inline, latex
from newsletter.publish.feed_content import Words, words

__all__ = [
    "DISCORD_LIMITS",
    "SLACK_LIMITS",
    "ChatMessage",
    "discord_messages",
    "escape_discord",
    "escape_mrkdwn",
    "slack_messages",
]

# Slack: blocks a message, characters a section's text, characters of `text`, and the
# characters of all a message's blocks together (Slack refuses more, msg_blocks_too_long,
# at about 13,000; the figure is not documented).
SLACK_LIMITS = {
    "blocks": 50,
    "section": 3000,
    "text": 40000,
    "blocks_text": 12000,
}
# Discord: embeds and characters a message (all embeds' text together), a description,
# `content`, a title; and what this project gives a field's value and a footer (well under
# Discord's 1,024 and 2,048), so that beside a full title and description an embed stays
# within a message's 6,000.
DISCORD_LIMITS = {
    "embeds": 10,
    "total": 6000,
    "description": 4096,
    "content": 2000,
    "title": 256,
    "field": 512,
    "footer": 512,
}

# Authors named before "and N more": some papers have hundreds.
AUTHORS_SHOWN = 10
# Characters of a title shown: titles run to about 200.
TITLE_SHOWN = 250


@dataclass(frozen=True)
class ChatMessage:
    """One message to post. ``key`` names it within its day and channel (``day``,
    ``paper:2401.12345``, ``paper:2401.12345:2`` for the second part of a long one);
    ``thread``: the key of the message whose thread it replies in, if any."""

    key: str
    payload: dict[str, Any]
    thread: str | None = None


# --- escaping --------------------------------------------------------------------------

_ZWSP = "\u200b"
_MRKDWN_MARKS = re.compile(r"([*_~`])")
_DISCORD_MARKS = re.compile(r"([\\*_~`|>#\[\]()-])")


def escape_mrkdwn(text: str) -> str:
    """``text`` shown as written in Slack's mrkdwn: ``&``, ``<`` and ``>`` as the entities
    Slack asks for, and a zero-width space after each formatting mark, which keeps a pair
    of them from turning what lies between into bold, italics, strike or code."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MRKDWN_MARKS.sub(lambda m: m.group(1) + _ZWSP, text)


def escape_discord(text: str) -> str:
    """``text`` shown as written in Discord's Markdown: each mark behind a backslash."""
    return _DISCORD_MARKS.sub(r"\\\1", text)


def _safe_end(text: str, end: int) -> int:
    """``end`` moved back, if need be, so that a piece ending there keeps every escape
    whole: an entity (``&amp;``), a backslash and its mark, a mark and its zero-width space."""
    amp = text.rfind("&", max(0, end - 5), end)
    if amp != -1 and ";" not in text[amp:end]:
        end = amp
    while end > 0 and (text[end - 1] == "\\" or (end < len(text) and text[end] == _ZWSP)):
        end -= 1
    return end


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: _safe_end(text, limit - 1)].rstrip() + "…"


def _chunks(lines: Iterable[str], limit: int) -> list[str]:
    """Lines joined into pieces of at most ``limit`` characters, a line too long for one
    piece split at a space where one is near the limit."""
    pieces: list[str] = []
    current = ""
    for line in lines:
        while len(line) > limit:
            cut = line.rfind(" ", limit // 2, limit)
            cut = cut if cut > 0 else _safe_end(line, limit)
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    if current:
        pieces.append(current)
    return pieces


# --- what each paper says ------------------------------------------------------------------


def hf_day_url(day: dt.date) -> str:
    return f"{HF_BASE}/papers?date={day.isoformat()}"


def _points(pick: Pick, w: Words, escape: Any) -> list[str]:
    """The summary as lines: ``• Label: text``, nested points indented."""
    lines = []
    for section in pick.paper.sections:
        text = escape(inline.to_text(section.text))
        indent = "    " * section.level
        if section.label:
            lines.append(f"{indent}• {escape(w.gettext(section.label))}: {text}")
        else:
            lines.append(f"{indent}• {text}")
    return lines


def _authors(pick: Pick, w: Words) -> str:
    names = list(pick.paper.authors)
    if not names:
        return ""
    shown = ", ".join(names[:AUTHORS_SHOWN])
    if len(names) > AUTHORS_SHOWN:
        shown = f"{shown} {w.more(len(names) - AUTHORS_SHOWN)}"
    return w.authors % {"names": shown}


def _byline(pick: Pick, w: Words) -> str:
    parts = [w.votes(pick.votes)] if pick.votes is not None else []
    authors = _authors(pick, w)
    if authors:
        parts.append(authors)
    return " · ".join(parts)


# --- Slack ---------------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _slack_day(day: dt.date, day_page: str, w: Words) -> ChatMessage:
    title = f"{day.isoformat()} Daily Papers"
    hf = hf_day_url(day)
    page = escape_mrkdwn(w.papers_of % {"date": w.date(day)})
    link_line = f"<{hf}|Hugging Face> · <{day_page}|{page}>"
    return ChatMessage(
        "day",
        {
            "text": f"{title}: {hf}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                _context(link_line),
            ],
            "unfurl_links": False,
        },
    )


def _slack_paper(pick: Pick, w: Words, thread: str | None) -> list[ChatMessage]:
    """One paper, split over several messages only when its summary outgrows one."""
    paper = pick.paper
    title = escape_mrkdwn(_cut(paper.title, TITLE_SHOWN))
    head = f"*{pick.rank}. <{paper.url}|{title}>*"
    links = f"<{paper.url}|arXiv {paper.arxiv_id}> · <{paper.hf_url}|{escape_mrkdwn(w.hf_page)}>"
    byline = escape_mrkdwn(_byline(pick, w))
    fixed = [_section(head), _context(links)] + ([_context(_cut(byline, 3000))] if byline else [])
    parts = _parts(_chunks(_points(pick, w, escape_mrkdwn), SLACK_LIMITS["section"]), fixed)
    messages = []
    for number, part in enumerate(parts, 1):
        blocks = (fixed if number == 1 else [_context(head)]) + [_section(s) for s in part]
        fallback = "\n".join([f"{pick.rank}. {title} {paper.url}", byline, *part])
        key = f"paper:{paper.arxiv_id}" + (f":{number}" if number > 1 else "")
        payload = {"text": _cut(fallback, SLACK_LIMITS["text"]), "blocks": blocks}
        messages.append(ChatMessage(key, payload | {"unfurl_links": False}, thread))
    return messages


def _blocks_text(blocks: Iterable[dict[str, Any]]) -> int:
    """The characters of a message's blocks, as Slack counts them toward its total."""
    size = 0
    for block in blocks:
        size += len(block.get("text", {}).get("text", ""))
        size += sum(len(e.get("text", "")) for e in block.get("elements", ()))
    return size


def _parts(sections: list[str], fixed: list[dict[str, Any]]) -> list[list[str]]:
    """Sections grouped into messages: each within the blocks a message may hold and the
    characters Slack takes in a message's blocks, the first beside the ``fixed`` blocks."""
    parts: list[list[str]] = [[]]
    used, count = _blocks_text(fixed), len(fixed)
    for section in sections:
        if parts[-1] and (
            count + 1 > SLACK_LIMITS["blocks"] or used + len(section) > SLACK_LIMITS["blocks_text"]
        ):
            parts.append([])
            used, count = _blocks_text(fixed[:1]), 1
        parts[-1].append(section)
        used, count = used + len(section), count + 1
    return parts


def slack_messages(
    day: dt.date, picks: Sequence[Pick], lang: str, day_page: str, *, thread: bool, webhook: bool
) -> list[ChatMessage]:
    """A day for Slack: its message, then each paper (in its thread when ``thread``).
    By an incoming ``webhook`` the whole day is one message, as many as the limits need."""
    w = words(lang)
    picks = latex.shown_picks(picks)
    head = _slack_day(day, day_page, w)
    if not webhook:
        papers = [m for p in picks for m in _slack_paper(p, w, "day" if thread else None)]
        return [head, *papers]
    # One message, each paper in as few sections as its text needs; another message only
    # when the limits of one are reached.
    blocks = list(head.payload["blocks"])
    texts = [head.payload["text"]]
    out: list[ChatMessage] = []
    for pick in picks:
        lines = _paper_lines(pick, w)
        more = [
            {"type": "divider"},
            *(_section(s) for s in _chunks(lines, SLACK_LIMITS["section"])),
        ]
        text = "\n".join(lines)
        size = sum(map(len, texts)) + len(text)
        full = _blocks_text(blocks) + _blocks_text(more) > SLACK_LIMITS["blocks_text"]
        if full or len(blocks) + len(more) > SLACK_LIMITS["blocks"] or size > SLACK_LIMITS["text"]:
            out.append(_webhook_part(len(out), blocks, texts))
            blocks, texts = [], []
        blocks += more
        texts.append(text)
    out.append(_webhook_part(len(out), blocks, texts))
    return out


def _paper_lines(pick: Pick, w: Words) -> list[str]:
    """A paper as mrkdwn lines: linked title, links, votes and authors, the summary."""
    paper = pick.paper
    lines = [
        f"*{pick.rank}. <{paper.url}|{escape_mrkdwn(_cut(paper.title, TITLE_SHOWN))}>*",
        f"<{paper.url}|arXiv {paper.arxiv_id}> · <{paper.hf_url}|{escape_mrkdwn(w.hf_page)}>",
    ]
    byline = _byline(pick, w)
    if byline:
        lines.append(escape_mrkdwn(byline))
    return lines + _points(pick, w, escape_mrkdwn)


def _webhook_part(index: int, blocks: list[dict[str, Any]], texts: list[str]) -> ChatMessage:
    key = "day" if index == 0 else f"day:{index + 1}"
    payload = {"text": _cut("\n\n".join(texts), SLACK_LIMITS["text"]), "blocks": blocks}
    return ChatMessage(key, payload | {"unfurl_links": False})


# --- Discord -------------------------------------------------------------------------------


def _embed_size(embed: dict[str, Any]) -> int:
    """Characters Discord counts toward a message's 6,000: title, description, fields'
    names and values, footer text and author name."""
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    size += sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", ()))
    size += len(embed.get("footer", {}).get("text", ""))
    return size + len(embed.get("author", {}).get("name", ""))


def _discord_embeds(pick: Pick, w: Words) -> list[dict[str, Any]]:
    """A paper's embed; a summary longer than a description continues in more embeds."""
    paper = pick.paper
    body = _chunks(_points(pick, w, escape_discord), DISCORD_LIMITS["description"])
    title = _cut(
        f"{pick.rank}. {escape_discord(_cut(paper.title, TITLE_SHOWN))}", DISCORD_LIMITS["title"]
    )
    embeds: list[dict[str, Any]] = []
    for number, description in enumerate(body or [""], 1):
        embed: dict[str, Any] = {"title": title, "url": paper.url}
        if description:
            embed["description"] = description
        if number == 1:
            byline = _byline(pick, w)
            links = f"[arXiv {paper.arxiv_id}]({paper.url}) · [{escape_discord(w.hf_page)}]({paper.hf_url})"
            embed["fields"] = [{"name": "🔗", "value": _cut(links, DISCORD_LIMITS["field"])}]
            if byline:
                embed["footer"] = {"text": _cut(byline, DISCORD_LIMITS["footer"])}
            if paper.media is not None and paper.media.kind == "image":
                embed["thumbnail"] = {"url": paper.media.url}
        embeds.append(embed)
    return embeds


def discord_messages(
    day: dt.date, picks: Sequence[Pick], lang: str, day_page: str
) -> list[ChatMessage]:
    """A day for a Discord webhook: the day's line with the papers' embeds, ten embeds
    and 6,000 characters to a message, more messages as needed."""
    w = words(lang)
    page = escape_discord(w.papers_of % {"date": w.date(day)})
    content = _cut(
        f"**{day.isoformat()} Daily Papers** · <{hf_day_url(day)}> · [{page}]({day_page})",
        DISCORD_LIMITS["content"],
    )
    out: list[ChatMessage] = []
    embeds: list[dict[str, Any]] = []
    for embed in (e for p in latex.shown_picks(picks) for e in _discord_embeds(p, w)):
        total = sum(map(_embed_size, embeds)) + _embed_size(embed)
        if embeds and (len(embeds) == DISCORD_LIMITS["embeds"] or total > DISCORD_LIMITS["total"]):
            out.append(_discord_part(len(out), content, embeds))
            embeds = []
        embeds.append(embed)
    out.append(_discord_part(len(out), content, embeds))
    return out


def _discord_part(index: int, content: str, embeds: list[dict[str, Any]]) -> ChatMessage:
    key = "day" if index == 0 else f"day:{index + 1}"
    payload: dict[str, Any] = {"embeds": embeds, "allowed_mentions": {"parse": []}}
    if index == 0:
        payload["content"] = content
    return ChatMessage(key, payload)
