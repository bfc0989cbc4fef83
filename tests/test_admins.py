"""The console's accounts: `newsletter admin add/remove/list`, argon2id, and sessions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.app import admins
from newsletter.cli import main
from newsletter.config import Config
from newsletter.store import Store, open_store

PASSWORD = "correct horse battery staple"


@pytest.fixture
def store(cfg: Config) -> Store:
    store = open_store(cfg.database_url, cfg.base_dir)
    yield store  # type: ignore[misc]
    store.close()


def _cli(cfg: Config, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    config = cfg.base_dir / "config.toml"
    result = CliRunner().invoke(
        main, [*args, "--config", str(config)], input=stdin, catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def test_add_list_and_remove_from_the_command_line(cfg: Config, store: Store) -> None:
    code, out, _ = _cli(cfg, "admin", "add", "Editor", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, out
    assert out.startswith("added: editor (sign in at http://")
    stored = store.get_admin("editor")
    assert stored is not None
    # argon2id, never the password itself
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    code, out, _ = _cli(cfg, "admin", "list")
    assert code == 0 and out.startswith("editor\t") and out.rstrip().endswith("0 session(s)")
    code, out, _ = _cli(cfg, "admin", "remove", "editor")
    assert (code, out) == (0, "removed: editor\n")
    assert store.get_admin("editor") is None
    assert _cli(cfg, "admin", "list")[1] == ""


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (("add", "editor", "--password-stdin"), "short\n", "password: at least 12 characters"),
        (("add", "bad name", "--password-stdin"), PASSWORD + "\n", "username 'bad name'"),
        (("add", "editor"), "", "no terminal to ask the password on"),
        (("remove", "nobody"), None, "no admin named 'nobody'"),
    ],
)
def test_mistakes_are_one_line(
    cfg: Config, store: Store, args: tuple[str, ...], stdin: str | None, error: str
) -> None:
    code, _, err = _cli(cfg, "admin", *args, stdin=stdin)
    assert code == 1
    assert error in err and err.count("\n") == 1
    assert admins.accounts(store) == []


def test_an_account_is_added_once(cfg: Config, store: Store) -> None:
    admins.add(store, "editor", PASSWORD)
    code, _, err = _cli(cfg, "admin", "add", "EDITOR", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 1 and "admin 'editor' exists already" in err


def test_verify_takes_only_the_right_password(store: Store) -> None:
    admins.add(store, "editor", PASSWORD)
    assert admins.verify(store, "editor", PASSWORD) is not None
    assert admins.verify(store, " Editor ", PASSWORD) is not None
    assert admins.verify(store, "editor", PASSWORD + "!") is None
    assert admins.verify(store, "nobody", PASSWORD) is None
    assert admins.verify(store, "../x", PASSWORD) is None


def test_sessions_end_at_sign_out_expiry_idleness_and_removal(store: Store) -> None:
    admin = admins.add(store, "editor", PASSWORD)
    now = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    made = admins.sign_in(store, admin, now)
    assert admins.session(store, made.token, now) is not None
    assert admins.session(store, made.token + "x", now) is None
    # idle too long
    assert admins.session(store, made.token, now + admins.IDLE_TIMEOUT) is None
    # past its lifetime although used all along
    made = admins.sign_in(store, admin, now)
    at = now
    while at < now + admins.SESSION_LIFETIME - dt.timedelta(hours=1):
        at += dt.timedelta(hours=1)
        assert admins.session(store, made.token, at) is not None
    assert admins.session(store, made.token, now + admins.SESSION_LIFETIME) is None
    # signed out
    made = admins.sign_in(store, admin, now)
    admins.sign_out(store, made.token)
    assert admins.session(store, made.token, now) is None
    # with its account
    made = admins.sign_in(store, admin, now)
    admins.remove(store, "editor")
    assert admins.session(store, made.token, now) is None


def test_the_database_holds_no_session_cookie(store: Store, cfg: Config) -> None:
    admin = admins.add(store, "editor", PASSWORD)
    made = admins.sign_in(store, admin)
    assert made.token not in Path(cfg.base_dir / "newsletter.db").read_bytes().decode("latin-1")
    assert made.session.token_hash != made.token


def test_polling_does_not_keep_a_session_alive(store: Store) -> None:
    admin = admins.add(store, "editor", PASSWORD)
    now = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    made = admins.sign_in(store, admin, now)
    at = now
    while at < now + admins.IDLE_TIMEOUT - dt.timedelta(minutes=10):
        at += dt.timedelta(minutes=10)
        assert admins.session(store, made.token, at, touch=False) is not None
    assert admins.session(store, made.token, now + admins.IDLE_TIMEOUT, touch=False) is None
