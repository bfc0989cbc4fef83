r"""Inline LaTeX shown as text: ``$\nabla^2$DFT`` is ``∇²DFT`` in the subject, the text part,
the HTML, the feeds and the site; what does not convert whole stays as written."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import json
import shutil
from pathlib import Path

import feedparser
import pytest
from conftest import FIXTURES, make_paper

from newsletter.archive.digest import load_archive
from newsletter.archive.sources import local_catalog
from newsletter.config import Config
from newsletter.mail.message import build_message
from newsletter.models import Archive, Pick
from newsletter.publish import chat, feed, latex
from newsletter.publish.outputs import publish_weeks
from newsletter.publish.render import render_issue
from newsletter.select import IsoWeek, WeekIssue, build_issue, top_daily

DIGEST = FIXTURES / "digests" / "latex.md"
WEEK = IsoWeek.parse("2024-W30")


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        # Super- and subscripts, bare and braced, where Unicode has every character.
        (r"$\nabla^2$DFT", "∇²DFT"),
        (r"$VILA^2$: VILA Augmented VILA", "VILA²: VILA Augmented VILA"),
        (r"$x^{2}$", "x²"),
        (r"$10^{-3}$", "10⁻³"),
        (r"$x_i$", "xᵢ"),
        (r"$x_{i+1}$", "xᵢ₊₁"),
        (r"$\mathbb{R}^n$", "ℝⁿ"),
        (r"$W^\top$", "Wᵀ"),
        (r"$\sum_{i=1}^n$", "∑ᵢ₌₁ⁿ"),
        # Greek letters, operators and font macros.
        (r"up to 3$\times$ faster", "up to 3× faster"),
        (r"$\times$10", "×10"),
        (r"$\sim$10%", "∼10%"),
        (r"$\alpha$-blending", "α-blending"),
        (r"$x \leq y$", "x ≤ y"),
        (r"$A \rightarrow B$", "A → B"),
        (r"$\infty$", "∞"),
        (r"$a \cdot b$", "a · b"),
        (r"$\pm$", "±"),
        (r"$\mathcal{O}(n)$ Attention", "𝒪(n) Attention"),
        (r"$\text{softmax}(x)$", "softmax(x)"),
        (r"$\textbf{bold}$", "bold"),
        (r"$\frac{a}{b}$", "a/b"),
        (r"$\left(x\right)$", "(x)"),
        # Spaces as the source has them, not as LaTeX's spacing swallows them.
        (r"$x \in \mathbb{R}$", "x ∈ ℝ"),
        (r"$\lambda \cdot x$", "λ · x"),
        (r"$\mathcal{L} = \|F\|$", "ℒ = ‖F‖"),
        (r"$O(n \log n)$", "O(n log n)"),
        (r"$\nabla ^2$", "∇²"),
        (r"$n$-gram and $k$-NN", "n-gram and k-NN"),
        (r"$$E = mc^2$$", "E = mc²"),
        # An escaped dollar is a dollar sign.
        (r"costs \$5 in total", "costs $5 in total"),
    ],
)
def test_inline_math_reads_as_unicode(source: str, shown: str) -> None:
    assert latex.to_text(source) == shown


@pytest.mark.parametrize(
    "source",
    [
        # No Unicode superscript q: the whole span stays, not "x^q" nor "$xq$".
        r"$x^q$",
        r"$x^{2q}$",
        # A script inside a script has no Unicode form.
        r"$x^{a_b}$",
        # A macro pylatexenc has no text for would be dropped silently: kept instead.
        r"$\unknownmacro{y}$",
        r"$\cite{vaswani}$",
        # A LaTeX comment sign would swallow the rest.
        r"$50%$",
        # A dollar inside math is text that pylatexenc keeps: the span stays whole, its \$ too.
        r"$\$5 \times 2$",
        # Prices and lone dollars are not math.
        "$5 million",
        "$5 million and $10 million",
        "$5-$10",
        "US$5/$6",
        "$HOME/$USER",
        "$ x$",
        "$",
        "$$",
        # Code spans and URLs are as written.
        "`echo $x$`",
        "https://example.org/$a$b",
        "[link](https://example.org/$a$b)",
    ],
)
def test_what_does_not_convert_whole_stays_as_written(source: str) -> None:
    assert latex.to_text(source) == source


def test_a_span_left_as_written_leaves_its_neighbours_converted() -> None:
    text = r"$x^q$ and $\alpha$ for $5 million"
    assert latex.to_text(text) == r"$x^q$ and α for $5 million"


def test_escaped_dollars_are_converted_once(issue_cfg: Config) -> None:
    """Each output converts a paper once: ``\\$x\\$`` is "$x$", never read again as math."""
    paper = make_paper("2406.00002", title=r"Pay \$x\$ to $\alpha$", votes=5)
    issue = WeekIssue(WEEK, (Pick(paper, WEEK.monday, 0, 5, rank=1),))
    rendered = render_issue(issue_cfg, issue, "en")
    assert "Pay $x$ to α" in rendered.subject and "Pay $x$ to α" in rendered.preheader
    assert "Pay $x$ to α" in rendered.text


def test_a_paper_is_shown_whole_and_keeps_its_identity() -> None:
    paper = make_paper(
        "2406.14347",
        title=r"$\nabla^2$DFT: A Dataset",
        sections=(("What's New", r"$\times$10 더 많습니다."), (None, "그대로입니다.")),
    )
    shown = latex.shown(paper)
    assert shown.title == "∇²DFT: A Dataset"
    assert [s.text for s in shown.sections] == ["×10 더 많습니다.", "그대로입니다."]
    assert shown.sections[0].label == "What's New"
    assert (shown.arxiv_id, shown.url, shown.authors) == (paper.arxiv_id, paper.url, paper.authors)
    plain = make_paper("2406.00001", title="No math")
    assert latex.shown(plain) is plain


@pytest.fixture
def latex_cfg(issue_cfg: Config, tmp_path: Path) -> Config:
    """The settings of a deployed newsletter reading one digest with LaTeX in it."""
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(DIGEST, folder / DIGEST.name)
    return issue_cfg.replace(source=str(folder))


def _archive(cfg: Config) -> Archive:
    archive = load_archive(cfg.source_path)
    assert not archive.problems, archive.problems
    return archive


def test_every_output_shows_the_title_as_unicode(latex_cfg: Config) -> None:
    """``$\\nabla^2$DFT`` reaches the subject, the text part, the HTML, the feeds, the site
    and the chat as ``∇²DFT``; the ids that readers and the ledger know stay the same."""
    cfg, archive = latex_cfg, _archive(latex_cfg)
    for lang in ("ko", "en"):
        rendered = render_issue(cfg, build_issue(cfg, archive, WEEK), lang)
        message = build_message(
            cfg,
            rendered,
            to_address="reader@example.org",
            unsubscribe_token="u",
            preferences_token="p",
        ).as_bytes()
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        assert "∇²DFT" in str(parsed["Subject"]), parsed["Subject"]
        text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        page = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
        for shown in (text, html.unescape(page)):
            assert "∇²DFT" in shown and "VILA²" in shown and "×10" in shown
            assert "\\nabla" not in shown and "$VILA" not in shown
            # Not math, so as written: the price, the code span, the unconvertible spans.
            assert "$5 million" in shown and "$HOME/bin" in shown
            assert "$x^q$" in shown and "$\\unknownmacro{y}$" in shown

    items = feed.feed_entries(archive.digests, cfg)
    atom = feedparser.parse(feed.atom_bytes(items, cfg))
    titles = {e.id: e.title for e in atom.entries}
    # Entry ids are made of the arXiv id, never the title: readers see no new entry.
    assert titles["tag:news.example.org,2024:arxiv:2406.14347"].startswith("∇²DFT: A Universal")
    assert titles["tag:news.example.org,2024:arxiv:2407.17453"] == "VILA²: VILA Augmented VILA"
    assert "∇²DFT" in atom.entries[0].content[0].value
    items_json = json.loads(feed.json_feed_bytes(items, cfg))["items"]
    assert items_json[0]["title"].startswith("∇²DFT")

    publish_weeks(cfg, local_catalog(cfg), dt.date(2024, 7, 29))
    public = cfg.public_path
    for page_path in ("days/2024-07-25.html", "issues/2024-W30.en.html", "index.html"):
        page_html = html.unescape((public / page_path).read_text(encoding="utf-8"))
        assert "∇²DFT" in page_html and "\\nabla" not in page_html, page_path
    issues_feed = feedparser.parse((public / "issues.atom").read_bytes())
    assert "∇²DFT" in issues_feed.entries[0].content[0].value

    day = archive.digests[0]
    slack = chat.slack_messages(
        day.date, top_daily(day, 2), "ko", "https://x/", thread=True, webhook=False
    )
    assert "∇²DFT" in json.dumps(slack[1].payload, ensure_ascii=False)
    assert slack[1].key == "paper:2406.14347"


def test_the_digest_itself_keeps_its_latex(latex_cfg: Config) -> None:
    """The archive is the source: the conversion is for showing, never written back."""
    archive = _archive(latex_cfg)
    assert archive.digests[0].papers[0].title.startswith("$\\nabla^2$DFT")
    assert r"$\nabla^2$DFT" in DIGEST.read_text(encoding="utf-8")
