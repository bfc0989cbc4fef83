"""Commands over the console's accounts: ``newsletter admin add/remove/list``."""

from __future__ import annotations

import sys

import click

from newsletter.cli.base import _configured, _Fail, _store, main
from newsletter.config import Config


@main.group("admin")
def admin_group() -> None:
    """Manage the accounts that may sign in to the console at /admin/."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line, as `docker login --password-stdin` reads it: the line break is not part.
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise _Fail("no terminal to ask the password on: pass it with --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password"))


@admin_group.command("add")
@_configured()
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
def admin_add(cfg: Config, username: str, password_stdin: bool) -> None:
    """Add an account; its password is asked on the terminal.

    \b
    Example:
      newsletter admin add editor
      printf '%s\\n' "$PASSWORD" | newsletter admin add editor --password-stdin
    """
    from newsletter.app import admins

    name = admins.check_username(username)
    password = admins.check_password(_read_password(password_stdin))
    admin = admins.add(_store(cfg), name, password)
    click.echo(f"added: {admin.username} (sign in at {cfg.site_url}admin/)")


@admin_group.command("remove")
@_configured()
@click.argument("username")
def admin_remove(cfg: Config, username: str) -> None:
    """Remove an account; its browsers are signed out at once.

    \b
    Example:
      newsletter admin remove editor
    """
    from newsletter.app import admins

    admins.remove(_store(cfg), username)
    click.echo(f"removed: {username.strip().lower()}")


@admin_group.command("list")
@_configured()
def admin_list(cfg: Config) -> None:
    """List the accounts: name, when added, live sessions (tab-separated).

    \b
    Example:
      newsletter admin list
    """
    from newsletter.app import admins

    for admin in admins.accounts(_store(cfg)):
        added = admin.created_at.strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"{admin.username}\t{added}\t{admin.sessions} session(s)")
