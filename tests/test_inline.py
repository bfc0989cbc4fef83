from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.publish.inline import to_html, to_text


@pytest.mark.parametrize(
    ("source", "html", "text"),
    [
        (
            "코드는 [GitHub 링크](https://github.com/a/b)에서 확인할 수 있습니다",
            '코드는 <a href="https://github.com/a/b">GitHub 링크</a>에서 확인할 수 있습니다',
            "코드는 GitHub 링크 (https://github.com/a/b)에서 확인할 수 있습니다",
        ),
        # A bare URL ends where the Korean text begins, and before a sentence's full stop.
        (
            "코드: https://github.com/x/y에서, 페이지: https://x.github.io/p/.",
            '코드: <a href="https://github.com/x/y">https://github.com/x/y</a>에서, '
            '페이지: <a href="https://x.github.io/p/">https://x.github.io/p/</a>.',
            "코드: https://github.com/x/y에서, 페이지: https://x.github.io/p/.",
        ),
        (
            "(https://en.wikipedia.org/wiki/A_(b)).",
            '(<a href="https://en.wikipedia.org/wiki/A_(b)">'
            "https://en.wikipedia.org/wiki/A_(b)</a>).",
            "(https://en.wikipedia.org/wiki/A_(b)).",
        ),
        (
            "**굵게**와 *기울임*이다, `x<y>`",
            "<strong>굵게</strong>와 <em>기울임</em>이다, <code>x&lt;y&gt;</code>",
            "굵게와 기울임이다, x<y>",
        ),
        # Korean particles follow a closing marker with no space, after punctuation too.
        (
            '**"인용"**는 **모델(LLM)**은 이것은**"강조"**다',
            "<strong>&quot;인용&quot;</strong>는 <strong>모델(LLM)</strong>은 "
            "이것은<strong>&quot;강조&quot;</strong>다",
            '"인용"는 모델(LLM)은 이것은"강조"다',
        ),
        ("[a [b] c](http://x.org)", '<a href="http://x.org">a [b] c</a>', "a [b] c (http://x.org)"),
        (
            "<https://auto.org/>",
            '<a href="https://auto.org/">https://auto.org/</a>',
            "https://auto.org/",
        ),
        # Non-ASCII in a link: encoded in the href, shown as written in the text part.
        (
            "[위키](https://ko.wikipedia.org/wiki/논문)",
            '<a href="https://ko.wikipedia.org/wiki/%EB%85%BC%EB%AC%B8">위키</a>',
            "위키 (https://ko.wikipedia.org/wiki/논문)",
        ),
    ],
)
def test_rendered_constructs(source: str, html: str, text: str) -> None:
    assert to_html(source) == html
    assert to_text(source) == text


@pytest.mark.parametrize(
    "source",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](jav&#x61;script:alert(1))",
        "[x](data:text/html,<script>alert(1)</script>)",
        "[x](vbscript:msgbox)",
        "[x](file:///etc/passwd)",
        "[x](//evil.example/)",
        "[x](/relative)",
        "<javascript:alert(1)>",
        "[unclosed](http://a",
        "[unclosed link text(http://a)",
        "**unclosed bold",
        "`unclosed code",
    ],
)
def test_hostile_or_unfinished_markup_stays_text(source: str) -> None:
    html = str(to_html(source))
    assert "<a" not in html
    assert "href" not in html
    assert "<script" not in html
    assert to_text(source) == source


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "&lt;b&gt; &amp; &#60;",
        "snake_case_word, __init__, _x_, 2*3*4, a*b",
        r"\(x\) \* \[",
        "# not a heading",
        "> not a quote",
        "1. not a list",
        "![image](https://x.org/a.png) stays an exclamation mark and a link",
    ],
)
def test_everything_else_is_literal(source: str) -> None:
    html = str(to_html(source))
    # Only the link of the last case is markup; everything else is the escaped source.
    expected = source.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    expected = expected.replace('"', "&quot;").replace("'", "&#39;")
    if "](" in source:
        assert (
            html == '!<a href="https://x.org/a.png">image</a> stays an exclamation mark and a link'
        )
    else:
        assert html == expected
        assert to_text(source) == source


def test_a_quote_injected_through_a_link_is_escaped() -> None:
    html = str(to_html('[x](https://x.org/"onmouseover="alert(1))'))
    assert "onmouseover=" not in html.replace("%22onmouseover=%22", "")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


_pieces = st.sampled_from(
    [
        "[",
        "]",
        "(",
        ")",
        "*",
        "**",
        "_",
        "`",
        "<",
        ">",
        "&",
        '"',
        "'",
        "!",
        ":",
        " ",
        "\\",
        "javascript:",
        "http://",
        "https://x.org/",
        "data:",
        "a",
        "한글",
        "에서",
        "#",
        "\n",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_pieces, st.text(max_size=4)), max_size=30).map("".join))
def test_only_safe_markup_comes_out_of_any_text(source: str) -> None:
    parser = _Tags()
    parser.feed(str(to_html(source)))
    parser.close()
    for tag, attrs in parser.tags:
        assert tag in {"a", "strong", "em", "code"}, (source, tag)
        if tag == "a":
            assert [name for name, _ in attrs] == ["href"], (source, attrs)
            href = attrs[0][1] or ""
            assert href.lower().startswith(("http://", "https://")), (source, href)
        else:
            assert attrs == [], (source, attrs)
    assert "<" not in to_text(source) or "<" in source
