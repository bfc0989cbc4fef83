"""Signing keys: length, the key file written safely, rotation; and the tokens they sign."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import SEEDS, legacy_delivery_token

from newsletter.config import Config
from newsletter.mail.tokens import (
    APPROVE,
    CONFIRM,
    KEY_FILE,
    PREFERENCES,
    UNSUBSCRIBE,
    SigningKeyError,
    TokenError,
    make_delivery_token,
    make_mailed_token,
    make_token,
    read_delivery_token,
    read_mailed_token,
    read_token,
    secret_key,
    signing_keys,
)

OLD = "old-key-that-signed-last-years-links-0001"
NEW = "new-key-after-the-rotation-of-this-year-02"


def test_a_generated_key_is_private_and_kept(cfg: Config) -> None:
    key = secret_key(cfg)
    path = cfg.resolve(Path(KEY_FILE))
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key(cfg) == key  # read back, not made again
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".newsletter-key-")]


def test_an_empty_key_file_stops_instead_of_signing_with_nothing(cfg: Config) -> None:
    cfg.resolve(Path(KEY_FILE)).write_bytes(b"")
    with pytest.raises(SigningKeyError, match="holds no key"):
        secret_key(cfg)


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_short_key_stops_every_command(tmp_path: Path, where: str) -> None:
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text(f'source = "{SEEDS}"\n')
    env = {k: v for k, v in os.environ.items() if k != "NEWSLETTER_SECRET_KEY"}
    env["NEWSLETTER_CONFIG"] = str(config)
    if where == "env":
        env["NEWSLETTER_SECRET_KEY"] = "short"
    else:
        (tmp_path / KEY_FILE).write_text("too-short\n")
    for command in (["digests"], ["status"], ["feed"]):
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *command],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, (command, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "at least 32 bytes" in lines[0], proc.stderr


def test_rotation_signs_with_the_new_key_and_still_accepts_the_old(cfg: Config) -> None:
    before = cfg.replace(secret_key=OLD)
    old_link = make_token(secret_key(before), "unsubscribe", 42)
    after = cfg.replace(secret_key=f"{NEW} {OLD}")
    assert signing_keys(after) == [NEW.encode(), OLD.encode()]
    assert secret_key(after) == NEW.encode()
    assert read_token(signing_keys(after), "unsubscribe", old_link) == 42
    new_link = make_token(secret_key(after), "unsubscribe", 42)
    assert new_link != old_link
    assert read_token(signing_keys(after), "unsubscribe", new_link) == 42
    # Once the old key is dropped, its links stop working.
    with pytest.raises(TokenError):
        read_token(signing_keys(cfg.replace(secret_key=NEW)), "unsubscribe", old_link)


def test_keys_may_be_separated_by_commas(cfg: Config) -> None:
    assert signing_keys(cfg.replace(secret_key=f"{NEW},{OLD}")) == [NEW.encode(), OLD.encode()]


def test_a_full_disk_when_the_key_is_made_is_one_line_and_leaves_no_file(
    full_disk: Path, tmp_path: Path
) -> None:
    """A new key is needed (no NEWSLETTER_SECRET_KEY, no key file) beside a config file
    where nothing more can be written: the command says so in one line, and no key file or
    temporary file is left to sign with later."""
    from conftest import newsletter_in

    # The database lies elsewhere: only the key is written beside the config file.
    database = f"sqlite:///{tmp_path / 'news.db'}"
    result = newsletter_in(full_disk, "worker", "--once", NEWSLETTER_DATABASE_URL=database)
    key_file = full_disk / KEY_FILE
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"error: {key_file}: cannot write a new signing key: No space left on device; free "
        "some disk space or fix the folder, or set NEWSLETTER_SECRET_KEY"
    )
    assert sorted(p.name for p in full_disk.iterdir()) == ["config.toml", "filler"]


# --- one token, one form -------------------------------------------------------------------

KEY = b"test-secret-key-of-at-least-32-bytes"
URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def _spare_bit_set(token: str, alphabet: str) -> str:
    """The token with the lowest (spare) bit of its last character set: other text for the
    same bytes, which a lax decoder reads as the token."""
    last = alphabet.index(token[-1])
    assert last % 2 == 0, "the spare bits of a token as made are zero"
    return token[:-1] + alphabet[last | 1]


@pytest.mark.parametrize(
    ("purpose", "expires"),
    [(UNSUBSCRIBE, None), (PREFERENCES, None), (CONFIRM, 4_102_444_800), (APPROVE, 4_102_444_800)],
)
def test_a_link_token_is_accepted_only_as_made(purpose: str, expires: int | None) -> None:
    token = make_token(KEY, purpose, 42, expires=expires)
    assert read_token(KEY, purpose, token) == 42
    signature = token.rpartition(".")[2]
    other_bits = _spare_bit_set(token, URLSAFE)
    # The same signature bytes, written otherwise: each was accepted before.
    assert base64.urlsafe_b64decode(other_bits.rpartition(".")[2] + "==") == (
        base64.urlsafe_b64decode(signature + "==")
    )
    malleated = [
        token + "=",
        token + "==",
        unquote(token + "%3D%3D"),  # what the web layer hands over for a %-encoded "=="
        other_bits,
        "0" + token,  # a leading zero on the id
        f" {token}",
        token + "\n",
    ]
    if expires is not None:
        subject, _, sig = token.rpartition(".")
        number, _, stamp = subject.partition(".")
        malleated.append(f"{number}.0{stamp}.{sig}")
    for variant in malleated:
        with pytest.raises(TokenError):
            read_token(KEY, purpose, variant)


def test_delivery_and_mailto_tokens_are_accepted_only_as_made() -> None:
    for token, read in (
        (make_delivery_token(KEY, 42), lambda t: read_delivery_token(KEY, t)),
        (
            make_mailed_token(KEY, "news.example.org", 42),
            lambda t: read_mailed_token(KEY, "news.example.org", t),
        ),
        (legacy_delivery_token(KEY, 42), lambda t: read_delivery_token(KEY, t)),
    ):
        assert read(token) == 42
        other_bits = _spare_bit_set(token, BASE32)
        for variant in (
            token.upper(),
            token + "=",
            token + "======",
            f" {token}",
            other_bits,
            "0" + token,
        ):
            with pytest.raises(TokenError):
                read(variant)


def test_a_mailto_token_is_good_for_one_subscriber_of_one_list_only() -> None:
    token = make_mailed_token(KEY, "news.example.org", 7)
    assert read_mailed_token([b"x" * 32, KEY], "news.example.org", token) == 7
    with pytest.raises(TokenError):
        read_mailed_token(KEY, "other-list.example.org", token)
    with pytest.raises(TokenError):
        read_delivery_token(KEY, token)  # not a delivery's
    with pytest.raises(TokenError):
        read_mailed_token(KEY, "news.example.org", make_delivery_token(KEY, 7))


def test_delivery_tokens_show_no_count_or_order() -> None:
    numbers = (1, 2, 41, 42, 1_000_041, 1_000_042, 10**12)
    tokens = {n: make_delivery_token(KEY, n) for n in numbers}
    assert len(set(tokens.values())) == len(tokens)
    for number, token in tokens.items():
        # Every token alike: 26 lower-case letters and digits, whatever the number.
        assert len(token) == 26 and token.isalnum() and token.islower()
        # Neither the decimal id nor the base 36 one that tokens used to begin with.
        base36 = legacy_delivery_token(KEY, number).partition("-")[0]
        for written in (str(number), base36):
            assert len(written) < 3 or written not in token, (number, token)
        assert read_delivery_token(KEY, token) == number
    for a, b in ((1, 2), (41, 42), (1_000_041, 1_000_042)):
        # Consecutive deliveries: no shared beginning or end where a counter would show,
        # and no more characters in the same places than chance gives (26/32 on average).
        first, second = tokens[a], tokens[b]
        same = sum(x == y for x, y in zip(first, second, strict=True))
        assert first[:2] != second[:2] and first[-2:] != second[-2:], (first, second)
        assert same <= 5, (first, second)
    # The same delivery always has the same token: a message sent again after a crash is
    # reported under the name of its first sending.
    assert make_delivery_token(KEY, 42) == tokens[42]


def test_delivery_tokens_of_messages_sent_before_the_upgrade_still_read() -> None:
    old = legacy_delivery_token(KEY, 1234)
    assert old.startswith("ya-")  # 1234 in base 36
    assert read_delivery_token(KEY, old) == 1234
    with pytest.raises(TokenError):
        read_delivery_token(KEY, legacy_delivery_token(b"another-key-of-at-least-32-bytes", 1234))
    with pytest.raises(TokenError):
        read_delivery_token(KEY, "yb" + old[2:])  # another id under the same signature
