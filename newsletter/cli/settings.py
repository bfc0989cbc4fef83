"""``newsletter config``: the settings in force, and where each came from."""

from __future__ import annotations

import click

from newsletter.cli.base import _configured, _dump, _json, main
from newsletter.config import Config


@main.command("config")
# The settings as the service reads them: not where another command would link to.
@_configured(recall=False)
@_json
def show_config(cfg: Config, as_json: bool) -> None:
    """Print every setting in force with where it comes from: the default, FILE:LINE of
    the settings file, or the environment variable. Secrets are masked and their lines
    commented out. The output is TOML: a line pasted into config.toml sets that value.

    \b
    Examples:
      newsletter config
      newsletter config --json
      newsletter config | grep -v '# default'
    """
    from newsletter.config.explain import effective_settings, render_settings

    settings = effective_settings(cfg)
    if as_json:
        _dump([setting.to_json() for setting in settings])
        return
    click.echo(render_settings(cfg, settings), nl=False)
