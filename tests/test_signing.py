"""DKIM signing: canonicalization, keys, and signatures that dkimpy and Mail::DKIM accept,
before and after Postfix relays them, and that break when a header is added."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    DKIM_DOMAIN,
    DKIM_ED25519_SELECTOR,
    DkimVerifiers,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.mail.message import confirmation_message, message_template
from newsletter.mail.signing import (
    OVERSIGNED,
    Signer,
    alignment_problem,
    body_hash,
    relaxed_header,
    sign_message,
)
from newsletter.publish.render import RenderedIssue, render_issue
from newsletter.select import IsoWeek, build_issue

BOTH_PASS = {"mail": True, DKIM_ED25519_SELECTOR: True}
BOTH_FAIL = {"mail": False, DKIM_ED25519_SELECTOR: False}


@pytest.fixture
def rendered(issue_cfg: Config, seeds_archive) -> RenderedIssue:  # type: ignore[no-untyped-def]
    return render_issue(issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek(2024, 31)), "ko")


@pytest.fixture
def signing_cfg(
    issue_cfg: Config,
    dkim_key: tuple[bytes, bytes],
    ed25519_key: tuple[bytes, bytes],
    tmp_path: Path,
) -> Config:
    """``issue_cfg`` with both keys configured, as files."""
    (tmp_path / "dkim.pem").write_bytes(dkim_key[0])
    (tmp_path / "dkim-ed25519.pem").write_bytes(ed25519_key[0])
    return _email(
        issue_cfg,
        dkim_selector="mail",
        dkim_key_file=str(tmp_path / "dkim.pem"),
        dkim_ed25519_selector=DKIM_ED25519_SELECTOR,
        dkim_ed25519_key_file=str(tmp_path / "dkim-ed25519.pem"),
    )


def _email(cfg: Config, **changes: str) -> Config:
    return cfg.replace(email=dataclasses.replace(cfg.email, **changes))


def _issue_message(cfg: Config, rendered: RenderedIssue, to: str = "kim@example.org") -> bytes:
    template = message_template(cfg, rendered)
    return template.personalize(
        to_address=to, to_name="김철수", unsubscribe_token="tok", preferences_token="tok"
    ).data


def _tags(data: bytes, index: int = 0) -> dict[str, str]:
    fields = re.findall(rb"(?im)^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", data)
    value = re.sub(r"\s+", "", fields[index].decode("ascii"))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


# -- canonicalization (RFC 6376, section 3.4.6, and edge cases) ------------------------------


def test_relaxed_header_follows_rfc_6376() -> None:
    assert relaxed_header(b"A: X") == b"a:X"
    assert relaxed_header(b"B : Y\t\r\n\tZ  ") == b"b:Y Z"
    assert relaxed_header(b"SUBJECT:  two   spaces\t") == b"subject:two spaces"


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b" C \r\nD \t E\r\n\r\n\r\n", b" C\r\nD E\r\n"),  # the RFC's example
        (b"", b""),
        (b"\r\n\r\n", b""),
        (b"no final line break", b"no final line break\r\n"),
        (b"a\r\n  \t", b"a\r\n"),
        (b"QUJD\r\nREVG\r\n", b"QUJD\r\nREVG\r\n"),
    ],
)
def test_relaxed_body_hash(body: bytes, canonical: bytes) -> None:
    assert body_hash(body) == hashlib.sha256(canonical).digest()


def _reference_body(body: bytes) -> bytes:
    """RFC 6376 section 3.4.4, line by line."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" \t") for line in body.split(b"\r\n")[:-1]]
    while lines and not lines[-1]:
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from([b"a", b"QUJD", b" ", b"  ", b"\t", b"\r\n", b"\r", b"=?"]), max_size=40
    ),
    spaces=st.booleans(),
)
def test_relaxed_body_hash_equals_the_line_by_line_reference(
    pieces: list[bytes], spaces: bool
) -> None:
    body = b"".join(pieces) + (b"x " * 300 if spaces else b"")  # both search strategies
    assert body_hash(body) == hashlib.sha256(_reference_body(body)).digest()


# -- the signature header ------------------------------------------------------------------


def test_signature_header_is_folded_crlf_and_over_signs(
    signing_cfg: Config, rendered: RenderedIssue
) -> None:
    data = _issue_message(_email(signing_cfg, reply_to="editor@news.example.org"), rendered)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n")[:12])
    assert data.count(b"\n") == data.count(b"\r\n")
    rsa_tags, ed_tags = _tags(data, 0), _tags(data, 1)
    assert (rsa_tags["a"], rsa_tags["s"]) == ("rsa-sha256", "mail")
    assert (ed_tags["a"], ed_tags["s"]) == ("ed25519-sha256", DKIM_ED25519_SELECTOR)
    assert rsa_tags["c"] == "relaxed/relaxed" and rsa_tags["d"] == DKIM_DOMAIN
    assert rsa_tags["bh"] == ed_tags["bh"]
    signed = [name.lower() for name in rsa_tags["h"].split(":")]
    present = [line.split(b":")[0].decode().lower() for line in head.split(b"\r\n")[1:]]
    for name in OVERSIGNED:  # once more than the message has it (absent: once)
        assert signed.count(name.lower()) == present.count(name.lower()) + 1, name
    for name in ("reply-to", "mime-version", "content-type", "list-archive", "precedence"):
        assert signed.count(name) == 2, name
    assert signed.count("x-auto-response-suppress") == 1
    assert "dkim-signature" not in signed


def test_headers_added_before_signing_are_signed(issue_cfg: Config, dkim_key) -> None:  # type: ignore[no-untyped-def]
    signer = Signer.from_config(_email(issue_cfg, dkim_selector="mail"), rsa_pem=dkim_key[0])
    assert signer is not None
    message = (
        b"From: a@news.example.org\r\nTo: b@example.org\r\nSubject: s\r\n"
        b"Precedence: bulk\r\nX-Auto-Response-Suppress: OOF, AutoReply\r\n"
        b"List-Archive: <https://news.example.org/>\r\nReceived: from x\r\n\r\nbody\r\n"
    )
    signed = [n.lower() for n in _tags(signer.sign(message))["h"].split(":")]
    assert signed.count("x-auto-response-suppress") == 1
    assert signed.count("precedence") == signed.count("list-archive") == 2  # over-signed
    assert "received" not in signed


def test_bare_line_feeds_are_signed_as_crlf(issue_cfg: Config, dkim_key) -> None:  # type: ignore[no-untyped-def]
    signer = Signer.from_config(_email(issue_cfg, dkim_selector="mail"), rsa_pem=dkim_key[0])
    assert signer is not None
    data = signer.sign(b"From: a@news.example.org\nSubject: s\n\nbody\n")
    assert data.count(b"\n") == data.count(b"\r\n")
    assert data.endswith(b"\r\n\r\nbody\r\n")


def test_signing_twice_adds_nothing(signing_cfg: Config, rendered: RenderedIssue) -> None:
    data = _issue_message(signing_cfg, rendered)
    assert sign_message(signing_cfg, data) == data


# -- keys --------------------------------------------------------------------------------------


def _pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, fmt: serialization.PrivateFormat
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def test_rsa_key_in_pkcs8_signs_like_pkcs1(issue_cfg: Config, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "k.pem").write_bytes(_pem(key, serialization.PrivateFormat.PKCS8))
    cfg = _email(issue_cfg, dkim_selector="mail", dkim_key_file=str(tmp_path / "k.pem"))
    signer = Signer.from_config(cfg)
    assert signer is not None and signer.keys[0].algorithm == "rsa-sha256"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, r"email\.dkim_key_file: cannot read .*missing\.pem"),
        (b"not a key", r"email\.dkim_key_file .*k\.pem: not a PEM private key"),
        ("ed25519", r"email\.dkim_key_file .*k\.pem: an RSA key is needed"),
        ("ec", r"email\.dkim_key_file .*k\.pem: an RSA key is needed"),
        ("short", r"email\.dkim_key_file .*k\.pem: a 768-bit RSA key is too short"),
        ("encrypted", r"email\.dkim_key_file .*k\.pem: the key is encrypted"),
    ],
)
def test_bad_rsa_key_is_one_line_error_naming_setting_and_file(
    issue_cfg: Config,
    tmp_path: Path,
    ed25519_key: tuple[bytes, bytes],
    content: bytes | str | None,
    error: str,
) -> None:
    path = tmp_path / ("missing.pem" if content is None else "k.pem")
    if content == "ed25519":
        path.write_bytes(ed25519_key[0])
    elif content == "ec":
        path.write_bytes(
            _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)
        )
    elif content == "short":  # cryptography will not make one: ask OpenSSL's command
        if shutil.which("openssl") is None:
            pytest.skip("no openssl command to make a short RSA key")
        subprocess.run(
            ["openssl", "genrsa", "-out", str(path), "768"], check=True, capture_output=True
        )
    elif content == "encrypted":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    elif isinstance(content, bytes):
        path.write_bytes(content)
    cfg = _email(issue_cfg, dkim_selector="mail", dkim_key_file=str(path))
    with pytest.raises(NewsletterError, match=error) as caught:
        Signer.from_config(cfg)
    assert "\n" not in str(caught.value)


def test_ed25519_settings_are_checked(
    issue_cfg: Config, dkim_key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    (tmp_path / "rsa.pem").write_bytes(dkim_key[0])
    cfg = _email(issue_cfg, dkim_ed25519_key_file=str(tmp_path / "rsa.pem"))
    with pytest.raises(NewsletterError, match=r"email\.dkim_ed25519_selector must be set"):
        Signer.from_config(cfg)
    cfg = _email(cfg, dkim_ed25519_selector="ed")
    with pytest.raises(
        NewsletterError, match=r"email\.dkim_ed25519_key_file .*rsa\.pem: an Ed25519 key is needed"
    ):
        Signer.from_config(cfg)
    cfg = _email(cfg, dkim_selector="ed", dkim_key_file=str(tmp_path / "rsa.pem"))
    with pytest.raises(NewsletterError, match=r"must differ from email\.dkim_selector"):
        Signer.from_config(cfg)


def test_no_key_configured_signs_nothing(issue_cfg: Config) -> None:
    assert Signer.from_config(issue_cfg) is None
    assert sign_message(issue_cfg, b"Subject: x\r\n\r\nbody\r\n") == b"Subject: x\r\n\r\nbody\r\n"


# -- DMARC alignment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "domain", "aligned"),
    [
        ("news.example.org", "", True),  # d= is the From domain
        ("news.example.org", "example.org", True),  # its parent
        ("example.org", "news.example.org", True),  # its subdomain
        ("news.example.org", "mail.example.org", True),  # same registered domain
        ("News.Example.ORG", "example.org.", True),
        ("news.example.co.kr", "example.co.kr", True),
        ("news.example.org", "example.net", False),
        ("news.example.co.kr", "co.kr", False),  # a public suffix: anyone's parent
        ("alice.github.io", "bob.github.io", False),  # two sites under a shared suffix
    ],
)
def test_signing_domain_aligned_with_the_from_domain(
    signing_cfg: Config, sender: str, domain: str, aligned: bool
) -> None:
    cfg = _email(signing_cfg, from_address=f"weekly@{sender}", dkim_domain=domain)
    problem = alignment_problem(cfg)
    assert (problem == "") == aligned, problem
    if not aligned:
        assert problem.startswith(
            f"email.dkim_domain {domain} is not aligned with the domain of "
            f"email.from_address {sender.lower()}: "
        )
        assert "\n" not in problem


def test_nothing_signed_nothing_to_align(issue_cfg: Config) -> None:
    assert alignment_problem(_email(issue_cfg, dkim_domain="example.net")) == ""


# -- both verifiers, through a real DNS server ---------------------------------------------------


@pytest.mark.parametrize("smtp_host", ["", "smtp.example.org"])
def test_both_signatures_verify_in_both_verifiers(
    signing_cfg: Config, rendered: RenderedIssue, dkim_verifiers: DkimVerifiers, smtp_host: str
) -> None:
    """Into the outbox the text part is 8bit, over SMTP base64: both verify."""
    cfg = signing_cfg.replace(smtp=dataclasses.replace(signing_cfg.smtp, host=smtp_host))
    data = _issue_message(cfg, rendered)
    assert (b"Content-Transfer-Encoding: 8bit" in data) == (not smtp_host)
    assert dkim_verifiers.verdicts(data) == BOTH_PASS


# One more of each of these, put on top of a signed message by whoever replays it, must
# break both signatures: what it claims to be from and for, where replies and threads go,
# how its body is read, the list's links, and its bulk marking.
REPLAYED = (
    b"From: ceo@news.example.org",
    b"Sender: ceo@news.example.org",
    b"Reply-To: evil@example.org",
    b"To: victim@example.org",
    b"Cc: victim@example.org",
    b"Subject: =?utf-8?b?7ZWc6rWt7Ja0?= urgent",
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000",
    b"Message-ID: <replay@evil.example>",
    b"In-Reply-To: <thread@evil.example>",
    b"References: <thread@evil.example>",
    b"MIME-Version: 1.0",
    b"Content-Type: text/plain; charset=us-ascii",
    b"Content-Transfer-Encoding: 7bit",
    b"List-Id: <other.evil.example>",
    b"List-Archive: <https://evil.example/>",
    b"List-Unsubscribe: <https://evil.example/>",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    b"List-Help: <https://evil.example/>",
    b"List-Subscribe: <https://evil.example/>",
    b"List-Post: <mailto:all@evil.example>",
    b"List-Owner: <mailto:owner@evil.example>",
    b"Precedence: list",
)
# What relays add on top: it must leave the signatures intact.
TRACE = (b"Received: from relay.example.org by mx.example.org", b"X-Spam-Score: 0.0")


def _replays_of(data: bytes, verifiers: DkimVerifiers) -> dict[str, object]:
    """Header name -> dkimpy's verdicts on both signatures and Mail::DKIM's result for the
    RSA one, once that header is put on top of ``data``; for each of REPLAYED and TRACE."""
    out: dict[str, object] = {}
    for field in REPLAYED + TRACE:
        copy = field + b"\r\n" + data
        name = field.split(b":")[0].decode()
        out[name] = (verifiers.dkimpy(copy), verifiers.mail_dkim(copy)["mail"][0])
    return out


def _expected_replays() -> dict[str, object]:
    expected: dict[str, object] = {}
    for fields, verdicts, result in ((REPLAYED, BOTH_FAIL, "fail"), (TRACE, BOTH_PASS, "pass")):
        expected.update({f.split(b":")[0].decode(): (verdicts, result) for f in fields})
    return expected


@pytest.mark.parametrize("reply_to", ["", "editor@news.example.org"])
def test_a_header_added_on_top_of_an_issue_breaks_both_signatures(
    signing_cfg: Config, rendered: RenderedIssue, dkim_verifiers: DkimVerifiers, reply_to: str
) -> None:
    """Over-signing: each header of REPLAYED is signed once more than the message has it
    (absent ones as absent), so one more of it is a change."""
    data = _issue_message(_email(signing_cfg, reply_to=reply_to), rendered)
    assert (b"\r\nReply-To: " in data) == bool(reply_to)
    assert dkim_verifiers.verdicts(data) == BOTH_PASS
    assert _replays_of(data, dkim_verifiers) == _expected_replays()


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_a_header_added_on_top_of_a_confirmation_breaks_both_signatures(
    signing_cfg: Config, dkim_verifiers: DkimVerifiers, lang: str
) -> None:
    """The confirmation mail as it goes out over SMTP: Korean in base64, English 7bit."""
    cfg = signing_cfg.replace(smtp=dataclasses.replace(signing_cfg.smtp, host="smtp.example.org"))
    message = confirmation_message(
        cfg,
        lang=lang,
        to_address="kim@example.org",
        to_name="",
        confirm_url="https://news.example.org/confirm/abc",
        valid_days=7,
    )
    data = sign_message(cfg, message.data)
    cte = b"7bit" if lang == "en" else b"base64"
    assert b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n" in data
    assert dkim_verifiers.verdicts(data) == BOTH_PASS
    assert _replays_of(data, dkim_verifiers) == _expected_replays()


def test_a_changed_body_breaks_both_signatures(
    signing_cfg: Config, rendered: RenderedIssue, dkim_verifiers: DkimVerifiers
) -> None:
    data = _issue_message(signing_cfg, rendered)
    head, _, body = data.partition(b"\r\n\r\n")
    tampered = (
        head
        + b"\r\n\r\n"
        + body.replace(b"Content-Type: text/html", b"Content-Type: text/plain", 1)
    )
    assert dkim_verifiers.verdicts(tampered) == BOTH_FAIL


def test_confirmation_mail_is_signed_as_it_goes_out(
    signing_cfg: Config, dkim_verifiers: DkimVerifiers
) -> None:
    """Queued unsigned, signed by the sender: what reaches the outbox verifies."""
    from newsletter.app import delivery
    from newsletter.store import open_store

    message = confirmation_message(
        signing_cfg,
        lang="ko",
        to_address="kim@example.org",
        to_name="김철수",
        confirm_url="https://news.example.org/confirm/abc",
        valid_days=7,
    )
    assert b"DKIM-Signature" not in message.data
    store = open_store(signing_cfg.database_url, signing_cfg.base_dir)
    mail_id = delivery.queue_mail(store, "confirm", "kim@example.org", message)
    assert delivery.send_queued_mail(signing_cfg, store, mail_id).status == "sent"
    store.close()
    (written,) = (signing_cfg.outbox_path / "new").iterdir()
    data = written.read_bytes().replace(b"\n", b"\r\n")
    assert data.count(b"a=rsa-sha256") == 1  # signed once (and once with Ed25519)
    assert dkim_verifiers.verdicts(data) == BOTH_PASS


def test_signatures_survive_postfix(
    signing_cfg: Config,
    rendered: RenderedIssue,
    dkim_verifiers: DkimVerifiers,
    mta: tuple[int, Path],
) -> None:
    port, maildir = mta
    recipient = "newsletter-test@localhost"
    data = _issue_message(signing_cfg, rendered, to=recipient)
    message_id = re.search(rb"(?m)^Message-ID: (<[^>]+>)", data).group(1)  # type: ignore[union-attr]
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("weekly@news.example.org", [recipient], data)
    delivered = _delivered(maildir, message_id)
    assert delivered.startswith(b"Return-Path:") and b"Received: " in delivered
    assert dkim_verifiers.verdicts(delivered) == BOTH_PASS


def _delivered(maildir: Path, message_id: bytes, timeout: float = 30.0) -> bytes:
    """The copy of ``message_id`` Postfix delivered into ``maildir/new`` (asynchronously),
    with CRLF line endings as SMTP carried it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted((maildir / "new").glob("*")):
            data = path.read_bytes()
            if b"\nMessage-ID: " + message_id in data:
                return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        time.sleep(0.2)
    raise AssertionError(f"{message_id!r} was not delivered to {maildir} within {timeout}s")
