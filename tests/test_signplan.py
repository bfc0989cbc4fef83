"""DKIM signing planned per template: the same canonical bytes, the same signatures as
signing each whole message, for any recipient; verified by dkimpy and Mail::DKIM."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator

import pytest
from conftest import DKIM_DOMAIN, DKIM_ED25519_SELECTOR, DkimVerifiers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from newsletter.config import Config
from newsletter.mail.message import MessageTemplate
from newsletter.mail.signing import (
    DkimKey,
    Signer,
    SigningInput,
    body_hash,
    header_names,
    signed_order,
    split_message,
)
from newsletter.mail.signplan import SigningPlan, canonical_as_is
from newsletter.publish.render import RenderedIssue, render_issue
from newsletter.select import IsoWeek, build_issue

CLOCK = 1_700_000_000.0
# Names and addresses that exercise every way a To field is written: plain, quoted,
# encoded (Korean, emoji, an encoded word's look-alike), folded when long, runs of spaces
# that relaxed canonicalization folds into one, and every character an address may hold.
NAMES = (
    "",
    "김철수",
    "Kim",
    "O'Brien",
    'Dr. "Quoted" Reader',
    "back\\slash",
    "=?utf-8?q?=0D=0AReply-To:_x?=",
    "  spaced   out  name ",
    "📧 Reader",
    "Ünïcödé Ñame",
    "a" * 120,
    "아주 긴 한국어 이름 " * 8,
)
ADDRESSES = (
    "kim@example.org",
    "first.last+tag@sub.example.co.kr",
    "x!#$%&'*+/=?^_`{|}~-y@example.org",
    "UPPER@EXAMPLE.ORG",
    "l" * 64 + "@example.org",
)


@pytest.fixture
def rendered(issue_cfg: Config, seeds_archive) -> RenderedIssue:  # type: ignore[no-untyped-def]
    return render_issue(issue_cfg, build_issue(issue_cfg, seeds_archive, IsoWeek(2024, 31)), "ko")


@pytest.fixture
def signer(dkim_key: tuple[bytes, bytes], ed25519_key: tuple[bytes, bytes]) -> Signer:
    """Both keys, and a clock that stands still, so that a signature is made twice alike."""
    keys = [
        DkimKey("mail", _private(dkim_key[0], rsa.RSAPrivateKey)),
        DkimKey(DKIM_ED25519_SELECTOR, _private(ed25519_key[0], ed25519.Ed25519PrivateKey)),
    ]
    return Signer(DKIM_DOMAIN, keys, clock=lambda: CLOCK)


def _private(pem: bytes, kind: type) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, kind)
    return key  # type: ignore[return-value]


def _smtp(cfg: Config, host: str) -> Config:
    return cfg.replace(smtp=dataclasses.replace(cfg.smtp, host=host))


def _recipients(count: int) -> Iterator[dict[str, str | None]]:
    for i in range(count):
        yield {
            "to_name": NAMES[i % len(NAMES)],
            "to_address": ADDRESSES[i % len(ADDRESSES)],
            "unsubscribe_token": f"u{i}x" * (1 + i % 7),
            "preferences_token": f"p{i}",
            "mailto_token": f"m{i}" if i % 3 else None,
            "delivery_token": f"d-{i}" if i % 2 else None,
            "message_id": f"<r{i}.{'x' * (i % 50)}@news.example.org>" if i % 4 else None,
        }


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every b= input signed, in order (the signatures themselves are unchanged)."""
    inputs: list[bytes] = []
    sign = DkimKey.sign

    def recording(self: DkimKey, data: bytes) -> bytes:
        inputs.append(data)
        return sign(self, data)

    monkeypatch.setattr(DkimKey, "sign", recording)
    return inputs


@pytest.mark.parametrize("host", ["smtp.example.org", ""])
def test_each_message_signs_as_the_whole_message_would(
    issue_cfg: Config,
    rendered: RenderedIssue,
    signer: Signer,
    recorded: list[bytes],
    host: str,
) -> None:
    """Over SMTP (base64, the fast path) and into the outbox (8bit text, whose body is
    canonicalized the whole way): the same b= input and the same bytes as signing the
    finished message, for recipients of every kind."""
    template = MessageTemplate(_smtp(issue_cfg, host), rendered, signer=signer)
    for recipient in _recipients(120):
        data = template.personalize(**recipient).data  # type: ignore[arg-type]
        fast = recorded[:]
        recorded.clear()
        unsigned = data[data.index(b"\r\nTo: ") + 2 :]
        assert signer.sign(unsigned) == data, recipient
        assert recorded == fast and len(fast) == 2
        recorded.clear()


def test_many_recipients_verify_in_both_verifiers(
    issue_cfg: Config,
    rendered: RenderedIssue,
    dkim_key: tuple[bytes, bytes],
    ed25519_key: tuple[bytes, bytes],
    dkim_verifiers: DkimVerifiers,
) -> None:
    keys = [
        DkimKey("mail", _private(dkim_key[0], rsa.RSAPrivateKey)),
        DkimKey(DKIM_ED25519_SELECTOR, _private(ed25519_key[0], ed25519.Ed25519PrivateKey)),
    ]
    template = MessageTemplate(
        _smtp(issue_cfg, "smtp.example.org"), rendered, signer=Signer(DKIM_DOMAIN, keys)
    )
    for index, recipient in enumerate(_recipients(60)):
        data = template.personalize(**recipient).data  # type: ignore[arg-type]
        if index < len(NAMES) + 2:  # every name, through the Perl verifier as well
            assert dkim_verifiers.verdicts(data) == {"mail": True, DKIM_ED25519_SELECTOR: True}
        else:
            assert dkim_verifiers.dkimpy(data) == {"mail": True, DKIM_ED25519_SELECTOR: True}


# -- the plan on any message ---------------------------------------------------------------

_BYTES = st.sampled_from([b"a", b"QUJD", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n", b"=?"])
_PIECE = st.lists(_BYTES, max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(lead=_PIECE, pieces=st.lists(_PIECE, max_size=6))
@example(lead=b"a\r\nb ", pieces=[b"\r\nQUJD\r\n"])  # a space ends the lead's last line
@example(lead=b"a\r\n", pieces=[b"b ", b" c\r\n"])  # a run of spaces across pieces
@example(lead=b"a\r\n\r\n", pieces=[b"\r\n"])  # nothing but empty lines after the lead
@example(lead=b"a\r\n\r", pieces=[b"\n"])  # an empty last line, its CRLF split
def test_body_hash_from_the_lead_equals_the_whole_body(lead: bytes, pieces: list[bytes]) -> None:
    plan = SigningPlan(Signer(DKIM_DOMAIN, [_ed_key()]), b"Subject: s", lead)
    assert plan.body_hash(pieces) == body_hash(lead + b"".join(pieces))


@pytest.mark.parametrize(
    ("pieces", "as_is"),
    [
        ([b"QUJD\r\n", b"", b"REVG\r\n"], True),
        ([b"Content-Type: text/html\r\n", b"QUJD\r\n"], True),
        ([b"x\r\n"], True),
        ([b"a ", b"\r\nb\r\n"], False),  # a space before a line break, across pieces
        ([b"a ", b" b\r\n"], False),  # two spaces, across pieces
        ([b"a\tb\r\n"], False),
        ([b"a\r\n", b"\r\n"], False),  # an empty line at the end
        ([b"a\r\n\r", b"\n"], False),  # the same, its line break across two pieces
        ([b"\r", b"\n\r\n"], False),
        ([b"abc\r", b"\n"], True),
        ([b"ab"], False),  # no line break at the end
        ([b"\r\n"], False),
        ([], False),
    ],
)
def test_canonical_as_is(pieces: list[bytes], as_is: bool) -> None:
    assert canonical_as_is(pieces) == as_is


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_PIECE, max_size=6))
def test_canonical_as_is_only_when_relaxed_form_changes_nothing(pieces: list[bytes]) -> None:
    if canonical_as_is(pieces):
        joined = b"".join(pieces)
        assert body_hash(joined) == hashlib.sha256(joined).digest()


_NAME = st.sampled_from(["To", "to", "Subject", "From", "X-A", "Received", "DKIM-Signature"])
_VALUE = st.lists(
    st.sampled_from([b"v", b" ", b"  ", b"\t", b"\r\n ", b"\r\n\t", b":"]), max_size=8
)
_FIELD = st.tuples(_NAME, _VALUE.map(b"".join)).map(lambda f: f[0].encode() + b":" + f[1])


@settings(max_examples=300, deadline=None)
@given(own=st.lists(_FIELD, max_size=5), shared=st.lists(_FIELD, min_size=1, max_size=5))
def test_header_input_equals_the_whole_messages(own: list[bytes], shared: list[bytes]) -> None:
    """Own fields with any names, the shared ones' names among them, signed bottom-up and
    over-signed as in a whole message."""
    body = [b"QUJD\r\n"]
    plan = SigningPlan(Signer(DKIM_DOMAIN, [_ed_key()]), b"\r\n".join(shared), b"lead\r\n")
    data = b"\r\n".join(own + shared) + b"\r\n\r\nlead\r\nQUJD\r\n"
    fields, rest = split_message(data)
    names = header_names(fields)
    slow = SigningInput(
        ":".join(names),
        b"".join(_relaxed(fields[i]) for i in signed_order(fields, names)),
        body_hash(rest),
    )
    assert plan.signing_input(own, body) == slow


def _relaxed(field: bytes) -> bytes:
    from newsletter.mail.signing import relaxed_header

    return relaxed_header(field) + b"\r\n"


_ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _ed_key() -> DkimKey:
    return DkimKey("mail-ed", _ED_KEY)
