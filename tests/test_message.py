"""The message: MIME structure, headers, the fast path against the reference, DKIM."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import email.policy
import json
import re
import shutil
import subprocess
from email.header import decode_header, make_header
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
from conftest import need_service
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import Config
from newsletter.mail import message as message_module
from newsletter.mail.message import (
    HeaderError,
    _SlottedBase64,
    _SlottedText,
    build_message,
    confirmation_message,
    is_wire_ready,
    message_template,
    unsubscribe_url,
)
from newsletter.models import Archive
from newsletter.publish import render
from newsletter.publish.render import RenderedIssue, render_issue
from newsletter.select import IsoWeek, build_issue

SUBJECT = "[주간 HF 논문] 2024년 5주차: OLMo 외 9편"
# rspamd's normal worker, started by .ci/services.sh.
RSPAMD = "127.0.0.1:11333"


@pytest.fixture
def rendered(issue_cfg: Config, seeds_archive: Archive) -> RenderedIssue:
    return render_issue(
        issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W05")), "ko"
    )


def _parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").rstrip("\n")


def _bodies(msg: EmailMessage) -> list[tuple[str, str]]:
    return [(part.get_content_type(), part.get_content()) for part in msg.iter_parts()]


def _over_smtp(cfg: Config) -> Config:
    return cfg.replace(smtp=dataclasses.replace(cfg.smtp, host="smtp.example.org"))


def test_structure_and_headers(issue_cfg: Config, rendered: RenderedIssue) -> None:
    prepared = message_template(_over_smtp(issue_cfg), rendered).personalize(
        to_address="kim@example.org",
        to_name="김철수",
        unsubscribe_token="tok-123",
        preferences_token="tok-123",
        mailto_token="mailtok7",
    )
    data = prepared.data
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 76
    msg = _parse(data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "base64"
    url = "https://news.example.org/unsubscribe/tok-123"
    preferences = "https://news.example.org/preferences/tok-123"
    assert _lf(parts[0].get_content()) == _lf(rendered.text_for(url, preferences))
    assert _lf(parts[1].get_content()) == _lf(rendered.html_for(url, preferences))
    assert parts[1].get_content().count("\n") == parts[1].get_content().count("\r\n")
    assert msg["Subject"] == SUBJECT
    assert "=?utf-8?" in data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert msg["From"].addresses[0].display_name == "주간 HF 논문"
    assert msg["From"].addresses[0].addr_spec == "weekly@news.example.org"
    assert msg["To"].addresses[0].display_name == "김철수"
    assert msg["To"].addresses[0].addr_spec == "kim@example.org"
    assert abs(msg["Date"].datetime - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert prepared.message_id == msg["Message-ID"]
    assert re.fullmatch(r"<2024-W05\.ko\.[0-9a-f]{24}@news\.example\.org>", prepared.message_id)
    assert msg["List-Id"] == "주간 HF 논문 <newsletter.news.example.org>"
    assert msg["List-Unsubscribe"] == (
        f"<{url}>, <mailto:unsubscribe+mailtok7@news.example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["MIME-Version"] == "1.0"


def test_into_the_outbox_the_text_part_reads_as_it_is(
    issue_cfg: Config, rendered: RenderedIssue
) -> None:
    """No SMTP host: the text part is 8bit UTF-8, so `cat` shows it and its links whole;
    the HTML part stays base64 (css-inline writes long lines)."""
    prepared = message_template(issue_cfg, rendered).personalize(
        to_address="kim@example.org",
        to_name="김철수",
        unsubscribe_token="tok-123",
        preferences_token="pref-456",
    )
    url = "https://news.example.org/unsubscribe/tok-123"
    preferences = "https://news.example.org/preferences/pref-456"
    text = prepared.data.decode("utf-8")
    assert "Content-Transfer-Encoding: 8bit\r\n" in text
    assert f"{url}\r\n" in text and "2024년 1월 29일" in text
    assert prepared.wire_ready and is_wire_ready(prepared.data)
    assert max(len(line) for line in prepared.data.split(b"\r\n")) <= 998
    parts = list(_parse(prepared.data).iter_parts())
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["8bit", "base64"]
    assert _lf(parts[0].get_content()) == _lf(rendered.text_for(url, preferences))
    assert f"{preferences}\r\n" in text
    dotted = dataclasses.replace(rendered, text=rendered.text + ".a line with a dot\n")
    prepared = message_template(issue_cfg, dotted).personalize(
        to_address="kim@example.org", to_name="", unsubscribe_token="t", preferences_token="p"
    )
    assert not prepared.wire_ready and not is_wire_ready(prepared.data)  # to be dot-stuffed


def test_a_text_that_cannot_be_8bit_stays_base64(
    issue_cfg: Config, rendered: RenderedIssue
) -> None:
    long_line = dataclasses.replace(rendered, text=rendered.text + "가" * 400 + "\n")
    stray_cr = dataclasses.replace(rendered, text=rendered.text + "a\rb\n")
    for odd in (long_line, stray_cr):
        data = (
            message_template(issue_cfg, odd)
            .personalize(
                to_address="kim@example.org",
                to_name="",
                unsubscribe_token="t",
                preferences_token="p",
            )
            .data
        )
        assert data.isascii()


def test_list_unsubscribe_without_mailto(issue_cfg: Config, rendered: RenderedIssue) -> None:
    cfg = issue_cfg.replace(email=dataclasses.replace(issue_cfg.email, unsubscribe_mailto=""))
    prepared = message_template(cfg, rendered).personalize(
        to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="t"
    )
    msg = _parse(prepared.data)
    assert msg["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/t>"
    assert msg["To"] == "a@example.org"


def test_message_id_can_be_given(issue_cfg: Config, rendered: RenderedIssue) -> None:
    template = message_template(issue_cfg, rendered)
    for given_id in ("abc@news.example.org", "<abc@news.example.org>"):
        prepared = template.personalize(
            to_address="a@example.org",
            to_name="",
            unsubscribe_token="t",
            preferences_token="t",
            message_id=given_id,
        )
        assert prepared.message_id == "<abc@news.example.org>"
        assert _parse(prepared.data)["Message-ID"] == "<abc@news.example.org>"


@pytest.mark.parametrize(
    "token", ["a", "ab", "abc", "abcd", "abcde", "x" * 43, "토큰", "a/b?c=d&e"]
)
def test_fast_path_matches_the_reference(
    issue_cfg: Config, rendered: RenderedIssue, token: str
) -> None:
    fast = _parse(
        message_template(issue_cfg, rendered)
        .personalize(
            to_address="lee@example.org",
            to_name="Lee Min",
            unsubscribe_token=token,
            preferences_token=token,
        )
        .data
    )
    slow = build_message(
        issue_cfg,
        rendered,
        to_address="lee@example.org",
        to_name="Lee Min",
        unsubscribe_token=token,
        preferences_token=token,
    )
    slow = _parse(slow.as_bytes())
    assert _bodies(fast) == _bodies(slow)
    for name in ("Subject", "From", "To", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
        # Compared unfolded: the email package parses a folded line break as extra space.
        assert str(fast[name]).split() == str(slow[name]).split(), name
    assert unsubscribe_url(issue_cfg, token) in _bodies(fast)[0][1]


def test_personalizing_does_not_render_again(
    issue_cfg: Config, rendered: RenderedIssue, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = message_template(issue_cfg, rendered)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("personalize must not render, inline or build MIME")

    monkeypatch.setattr(render, "render_issue", forbidden)
    monkeypatch.setattr(render, "inline_css", forbidden)
    monkeypatch.setattr(message_module, "EmailMessage", forbidden)
    one = template.personalize(
        to_address="a@example.org", to_name="", unsubscribe_token="one", preferences_token="one"
    )
    two = template.personalize(
        to_address="b@example.org", to_name="", unsubscribe_token="two", preferences_token="two"
    )
    assert (
        _bodies(_parse(one.data))[1][1].replace("/one", "/two") == _bodies(_parse(two.data))[1][1]
    )


def test_long_korean_name_is_folded_and_decodes_exactly(
    issue_cfg: Config, rendered: RenderedIssue
) -> None:
    name = '김철수 (연구실) "테스트" 아주 긴 이름이 들어가는 경우를 시험해 봅니다'
    data = (
        message_template(issue_cfg, rendered)
        .personalize(
            to_address="kim@example.org", to_name=name, unsubscribe_token="t", preferences_token="t"
        )
        .data
    )
    raw = re.search(rb"\r\nTo: (.*?)\r\n(?! )", b"\r\n" + data, re.S)
    assert raw is not None
    value = raw.group(1).decode("ascii").replace("\r\n", "")
    assert all(len(line) <= 76 for line in raw.group(0).split(b"\r\n"))
    assert str(make_header(decode_header(value))) == f"{name} <kim@example.org>"


@pytest.mark.parametrize("name", ['Doe, "John"', "O'Brien", "Ann Lee"])
def test_ascii_names(issue_cfg: Config, rendered: RenderedIssue, name: str) -> None:
    data = (
        message_template(issue_cfg, rendered)
        .personalize(
            to_address="x@example.org", to_name=name, unsubscribe_token="t", preferences_token="t"
        )
        .data
    )
    assert _parse(data)["To"].addresses[0].display_name == name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to_name", "Eve\r\nBcc: victim@example.org"),
        ("to_name", "Eve\nBcc: victim@example.org"),
        ("to_address", "eve@example.org\r\nBcc: victim@example.org"),
        ("to_address", "not an address"),
        ("unsubscribe_token", "tok\r\nX-Evil: 1"),
        ("preferences_token", "tok\r\nX-Evil: 1"),
        ("message_id", "<id@example.org>\r\nX-Evil: 1"),
    ],
)
def test_header_injection_is_refused(
    issue_cfg: Config, rendered: RenderedIssue, field: str, value: str
) -> None:
    args = {
        "to_address": "a@example.org",
        "to_name": "A",
        "unsubscribe_token": "t",
        "preferences_token": "t",
    }
    args[field] = value
    with pytest.raises(HeaderError, match=r"line break|not a plain ASCII address"):
        message_template(issue_cfg, rendered).personalize(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key", ["from_name", "from_address", "reply_to", "list_id", "unsubscribe_mailto"]
)
def test_configured_strings_with_line_breaks_are_refused(
    issue_cfg: Config, rendered: RenderedIssue, key: str
) -> None:
    value = "x@example.org\r\nBcc: victim@example.org"
    cfg = issue_cfg.replace(email=dataclasses.replace(issue_cfg.email, **{key: value}))
    with pytest.raises(HeaderError, match=f"email.{key} contains a line break"):
        message_template(cfg, rendered).personalize(
            to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="t"
        )


def test_subject_with_line_break_is_refused(issue_cfg: Config, rendered: RenderedIssue) -> None:
    with pytest.raises(HeaderError, match="subject contains a line break"):
        message_template(issue_cfg, dataclasses.replace(rendered, subject="a\nb"))


# -- DKIM ---------------------------------------------------------------------------------------


def _dns(record: bytes) -> object:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mail._domainkey.news.example.org." else None

    return lookup


def _dkim_cfg(cfg: Config, **changes: str) -> Config:
    return cfg.replace(email=dataclasses.replace(cfg.email, dkim_selector="mail", **changes))


def test_dkim_signature_verifies(
    issue_cfg: Config, rendered: RenderedIssue, dkim_key: tuple[bytes, bytes]
) -> None:
    pem, record = dkim_key
    template = message_template(_dkim_cfg(issue_cfg), rendered, dkim_key=pem)
    prepared = template.personalize(
        to_address="kim@example.org",
        to_name="김철수",
        unsubscribe_token="tok",
        preferences_token="tok",
    )
    assert prepared.data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(prepared.data, dnsfunc=_dns(record))
    signature = _parse(prepared.data)["DKIM-Signature"].replace(" ", "")
    tags = dict(t.split("=", 1) for t in signature.split(";") if "=" in t)
    assert tags["c"] == "relaxed/relaxed"
    assert tags["d"] == "news.example.org" and tags["s"] == "mail"
    signed = tags["h"].lower().split(":")
    for header in ("from", "to", "subject", "list-unsubscribe", "list-unsubscribe-post"):
        assert header in signed
    # Any change to the signed bytes breaks it.
    tampered = prepared.data.replace(b"unsubscribe/tok", b"unsubscribe/tom", 1)
    assert not dkim.verify(tampered, dnsfunc=_dns(record))


def test_dkim_key_file_from_config(
    issue_cfg: Config, rendered: RenderedIssue, dkim_key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    pem, record = dkim_key
    (tmp_path / "dkim.pem").write_bytes(pem)
    cfg = _dkim_cfg(issue_cfg, dkim_key_file=str(tmp_path / "dkim.pem"))
    prepared = message_template(cfg, rendered).personalize(
        to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="t"
    )
    assert dkim.verify(prepared.data, dnsfunc=_dns(record))


def test_dkim_needs_a_selector_and_a_readable_key(
    issue_cfg: Config, rendered: RenderedIssue, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="dkim_selector must be set"):
        message_template(issue_cfg, rendered, dkim_key=b"key")
    cfg = _dkim_cfg(issue_cfg, dkim_key_file=str(tmp_path / "missing.pem"))
    with pytest.raises(Exception, match=r"email\.dkim_key_file: cannot read"):
        message_template(cfg, rendered)


# -- the slotted base64 encoder -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    value=st.text(max_size=30),
)
def test_slotted_base64_equals_plain_encoding(pieces: list[str], value: str) -> None:
    marker = "\x00MARK\x00"
    text = marker.join(pieces)
    encoded = _SlottedBase64(text, marker).encode(value.encode("utf-8"))
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 76 and len(line) % 4 == 0 for line in lines[:-1])
    assert base64.b64decode(b"".join(lines)) == text.replace(marker, value).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    kinds=st.lists(st.booleans(), max_size=5),
    values=st.tuples(st.text(max_size=30), st.text(max_size=30)),
)
def test_slotted_text_equals_plain_replacement(
    pieces: list[str], kinds: list[bool], values: tuple[str, str]
) -> None:
    markers = ("\x00ONE\x00", "\x00TWO\x00")
    text = pieces[0]
    for piece, second in zip(pieces[1:], kinds, strict=False):
        text += markers[second] + piece
    encoded = _SlottedText(text, *markers).encode(*(v.encode("utf-8") for v in values))
    expected = text.replace(markers[0], values[0]).replace(markers[1], values[1])
    assert encoded == expected.encode("utf-8")


def test_personalized_messages_are_wire_ready_with_and_without_dkim(
    issue_cfg: Config, rendered: RenderedIssue, dkim_key: tuple[bytes, bytes]
) -> None:
    pem, _ = dkim_key
    for template in (
        message_template(issue_cfg, rendered),
        message_template(_dkim_cfg(issue_cfg), rendered, dkim_key=pem),
    ):
        for name in ("", "김철수", "A very long name " * 6):
            prepared = template.personalize(
                to_address="kim@example.org",
                to_name=name,
                unsubscribe_token="tok",
                preferences_token="tok",
            )
            assert prepared.wire_ready and is_wire_ready(prepared.data)
    assert not is_wire_ready(b"Subject: x\r\n\r\n.leading dot\r\n")
    assert not is_wire_ready(b"Subject: x\n\nbare line feeds\n")
    assert not is_wire_ready(b"Subject: x\r\n\r\nno final line break")


# -- identity per language, and headers as readers decode them -------------------------------


def test_each_edition_is_a_list_of_its_own(issue_cfg: Config, seeds_archive: Archive) -> None:
    issue = build_issue(issue_cfg, seeds_archive, IsoWeek.parse("2024-W31"))
    headers = {}
    for lang in ("ko", "en"):
        rendered = render_issue(issue_cfg, issue, lang)
        msg = _parse(
            message_template(issue_cfg, rendered)
            .personalize(
                to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="t"
            )
            .data
        )
        headers[lang] = (msg["From"].addresses[0].display_name, msg["List-Id"])
    assert headers["ko"] == ("주간 HF 논문", "주간 HF 논문 <newsletter.news.example.org>")
    assert headers["en"] == (
        "HF Papers weekly",
        "HF Papers weekly <en.newsletter.news.example.org>",
    )
    # A configured list_id names the default language's list; [email.en] can name its own.
    email_cfg = dataclasses.replace(issue_cfg.email, list_id="Papers <papers.example.org>")
    rendered = render_issue(issue_cfg, issue, "en")
    cfg = issue_cfg.replace(email=email_cfg)
    assert message_module._list_id(cfg, "ko") == "Papers <papers.example.org>"
    assert message_module._list_id(cfg, "en") == "Papers <en.papers.example.org>"
    cfg = issue_cfg.replace(
        email=dataclasses.replace(
            email_cfg, en=dataclasses.replace(email_cfg.en, list_id="english.example.org")
        )
    )
    assert message_module._list_id(cfg, "en") == "<english.example.org>"
    assert rendered.lang == "en"


@pytest.mark.parametrize(
    "subject",
    [
        "HF Papers weekly, 2024-W01: Improving Text Embeddings with Large… and 7 more",
        "HF Papers weekly, 2024-W21: An English title long enough to be folded over two lines"
        " of the header, and then some more words",
        "[주간 HF 논문] 2024년 1주차: Improving Text Embeddings with Large… 외 7편",
        "short",
    ],
)
def test_subject_decodes_exactly(issue_cfg: Config, rendered: RenderedIssue, subject: str) -> None:
    data = (
        message_template(issue_cfg, dataclasses.replace(rendered, subject=subject))
        .personalize(
            to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="t"
        )
        .data
    )
    head = data.split(b"\r\n\r\n", 1)[0]  # the outbox's 8bit text part has longer lines
    assert max(len(line) for line in head.split(b"\r\n")) <= 76
    # Not one space more or less than was written, in any reader that unfolds and decodes.
    assert _parse(data)["Subject"] == subject
    raw = data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0]
    assert raw.isascii()
    assert str(make_header(decode_header(_unfold(data, b"Subject")))) == subject


def _unfold(data: bytes, name: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0]
    value = head.split(b"\r\n" + name + b": ", 1)[1]
    lines = [value.split(b"\r\n")[0]]
    for line in value.split(b"\r\n")[1:]:
        if not line[:1].isspace():
            break
        lines.append(line)
    return b"".join(lines).decode("ascii")


# -- spam filters --------------------------------------------------------------------------------

# A deployed newsletter's settings: an https site on a real-looking domain of its own.
PRODUCTION = {
    "base_url": "https://papers.hfkorea.org/",
    "from_address": "weekly@hfkorea.org",
    "contact": "문의: weekly@hfkorea.org",
}
# What the template once drew, each named in the issue that fixed it: low-contrast hidden
# preheader, labels running into text, a subject of capitals only.
TEMPLATE_RULES = ("HTML_FONT_LOW_CONTRAST", "HTML_OBFUSCATE", "SUBJ_ALL_CAPS", "HIDDEN")


def _production_message(cfg: Config, archive: Archive, week: str, lang: str) -> bytes:
    cfg = cfg.replace(
        base_url=PRODUCTION["base_url"],
        email=dataclasses.replace(
            cfg.email,
            from_address=PRODUCTION["from_address"],
            contact=PRODUCTION["contact"],
            unsubscribe_mailto="",
        ),
    )
    rendered = render_issue(cfg, build_issue(cfg, archive, IsoWeek.parse(week)), lang)
    return (
        message_template(cfg, rendered)
        .personalize(
            to_address="reader@example.com",
            to_name="",
            unsubscribe_token="t" * 40,
            preferences_token="t" * 40,
        )
        .data
    )


def _production_confirmation(cfg: Config, lang: str) -> bytes:
    """The confirmation mail of a deployed newsletter, as it goes out over SMTP."""
    cfg = cfg.replace(
        base_url=PRODUCTION["base_url"],
        email=dataclasses.replace(
            cfg.email, from_address=PRODUCTION["from_address"], contact=PRODUCTION["contact"]
        ),
    )
    return confirmation_message(
        _over_smtp(cfg),
        lang=lang,
        to_address="reader@example.com",
        to_name="",
        confirm_url=f"{cfg.site_url}confirm/{'t' * 40}",
        valid_days=7,
    ).data


def _spamassassin(data: bytes) -> tuple[float, str, str]:
    """SpamAssassin's score, the rules that fired and its whole X-Spam-Status."""
    binary = shutil.which("spamassassin")
    if binary is None:
        need_service("spamassassin", "not installed")
    # -L: local tests only (no network lookups), with the default rules.
    run = subprocess.run(
        [str(binary), "-L", "-t"], input=data, capture_output=True, timeout=180, check=False
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    status = _parse(run.stdout)["X-Spam-Status"]
    assert status is not None, run.stdout[-2000:]
    match = re.search(r"score=(-?\d+(?:\.\d+)?)\s.*tests=(.*?)(?:\s+autolearn|$)", status, re.S)
    assert match is not None, status
    rules = match.group(2).replace("\n", "").replace("\t", "")
    return float(match.group(1)), rules, str(status)


def _rspamd(data: bytes) -> tuple[str, float, dict[str, float]]:
    """rspamd's action, score and the symbols that scored."""
    binary = shutil.which("rspamc")
    if binary is None:
        need_service("rspamd", "rspamc is not installed")
    # As handed over by the sender's own relay on the same host.
    run = subprocess.run(
        [
            *(str(binary), "-h", RSPAMD, "-j", "--ip", "127.0.0.1", "--helo", "localhost"),
            *("--hostname", "localhost", "-F", PRODUCTION["from_address"]),
            *("-r", "reader@example.com"),
        ],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    try:
        result = json.loads(run.stdout)
    except ValueError:
        need_service("rspamd", f"{RSPAMD} did not answer: {run.stdout[:200]!r}")
    if "error" in result or "action" not in result:
        need_service("rspamd", f"{RSPAMD} answered {result}")
    fired = {name: s["score"] for name, s in result["symbols"].items() if s["score"]}
    return result["action"], result["score"], fired


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("week", ["2024-W05", "2024-W21", "2024-W31"])
def test_spamassassin_scores_the_issue_at_most_half_a_point(
    cfg: Config, seeds_archive: Archive, week: str, lang: str
) -> None:
    score, rules, status = _spamassassin(_production_message(cfg, seeds_archive, week, lang))
    assert score <= 0.5, status
    assert not [rule for rule in TEMPLATE_RULES if rule in rules], status


@pytest.mark.parametrize("lang", ["ko", "en"])
@pytest.mark.parametrize("week", ["2024-W05", "2024-W21", "2024-W31"])
def test_rspamd_takes_no_action_on_the_issue(
    cfg: Config, seeds_archive: Archive, week: str, lang: str
) -> None:
    action, score, fired = _rspamd(_production_message(cfg, seeds_archive, week, lang))
    assert action == "no action", fired
    assert score < 1.0, fired
    assert not [rule for rule in TEMPLATE_RULES if any(rule in name for name in fired)], fired


# What the confirmation once drew: a Korean subject whose only Latin letters were the
# name's capitals, and ASCII text in base64.
CONFIRMATION_RULES = ("SUBJ_ALL_CAPS", "MIME_BASE64_TEXT_BOGUS")


@pytest.mark.parametrize(
    ("lang", "subject", "cte"),
    [
        ("ko", "구독을 확인해 주세요: 주간 HF 논문 (papers.hfkorea.org)", "base64"),
        ("en", "Confirm your subscription: HF Papers weekly (papers.hfkorea.org)", "7bit"),
    ],
)
def test_the_confirmation_names_the_site_and_sends_ascii_as_it_is(
    cfg: Config, lang: str, subject: str, cte: str
) -> None:
    data = _production_confirmation(cfg, lang)
    mail = _parse(data)
    assert mail["Subject"] == subject
    assert mail["Content-Transfer-Encoding"] == cte
    assert f"https://papers.hfkorea.org/confirm/{'t' * 40}" in mail.get_content().splitlines()
    if cte == "7bit":
        assert b"\r\nhttps://papers.hfkorea.org/confirm/" in data  # unencoded, whole


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_spamassassin_scores_the_confirmation_like_the_issue(cfg: Config, lang: str) -> None:
    score, rules, status = _spamassassin(_production_confirmation(cfg, lang))
    assert score <= 0.5, status
    assert not [rule for rule in CONFIRMATION_RULES if rule in rules], status


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_rspamd_takes_no_action_on_the_confirmation(cfg: Config, lang: str) -> None:
    action, score, fired = _rspamd(_production_confirmation(cfg, lang))
    assert action == "no action", fired
    assert score < 1.0, fired
    assert not [rule for rule in CONFIRMATION_RULES if rule in fired], fired


def test_an_encoded_word_in_a_title_is_not_decoded_by_readers(
    issue_cfg: Config, rendered: RenderedIssue
) -> None:
    subject = "HF Papers weekly, 2024-W05: =?utf-8?b?7J2867Cp?= and 9 more"
    data = (
        message_template(issue_cfg, dataclasses.replace(rendered, subject=subject))
        .personalize(
            to_address="a@example.org", to_name="", unsubscribe_token="t", preferences_token="p"
        )
        .data
    )
    assert _parse(data)["Subject"] == subject  # shown as written, not as 일방


def test_brackets_in_an_edition_name_do_not_break_the_list_id(issue_cfg: Config) -> None:
    email_cfg = issue_cfg.email
    cfg = issue_cfg.replace(
        email=dataclasses.replace(
            email_cfg, en=dataclasses.replace(email_cfg.en, name='Papers <weekly> "HF"')
        )
    )
    assert message_module._list_id(cfg, "en") == "Papers weekly HF <en.newsletter.news.example.org>"
