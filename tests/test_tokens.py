"""Signing keys: length, the key file written safely, rotation; and the tokens they sign."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import SEEDS

from newsletter.config import Config
from newsletter.mail.tokens import (
    KEY_FILE,
    SigningKeyError,
    TokenError,
    make_token,
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
