"""The environment's part: ``NEWSLETTER_*`` variables over the file, and the secrets, which
only the environment may hold."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Mapping
from typing import Any

from newsletter.config.renames import RENAMED
from newsletter.config.settings import _NOT_KEYS, _SECTIONS, LANGS, Config, _hints
from newsletter.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "BOUNCES_PASSWORD_ENV",
    "CONFIG_ENV",
    "DISCORD_WEBHOOK_ENV",
    "ENV_PREFIX",
    "METRICS_TOKEN_ENV",
    "SECRET_KEYS",
    "SECRET_KEY_ENV",
    "SLACK_TOKEN_ENV",
    "SLACK_WEBHOOK_ENV",
    "SMTP_PASSWORD_ENV",
    "WEBHOOK_TOKEN_ENV",
    "WRITER_API_KEY_ENV",
]

ENV_PREFIX = "NEWSLETTER_"
CONFIG_ENV = "NEWSLETTER_CONFIG"
SECRET_KEY_ENV = "NEWSLETTER_SECRET_KEY"
SMTP_PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
BOUNCES_PASSWORD_ENV = "NEWSLETTER_BOUNCES_PASSWORD"
WEBHOOK_TOKEN_ENV = "NEWSLETTER_WEBHOOK_TOKEN"
WRITER_API_KEY_ENV = "NEWSLETTER_WRITER_API_KEY"
SLACK_TOKEN_ENV = "NEWSLETTER_SLACK_TOKEN"
SLACK_WEBHOOK_ENV = "NEWSLETTER_SLACK_WEBHOOK_URL"
DISCORD_WEBHOOK_ENV = "NEWSLETTER_DISCORD_WEBHOOK_URL"
METRICS_TOKEN_ENV = "NEWSLETTER_METRICS_TOKEN"
SECRET_KEYS = {"secret_key", "smtp.password", "password", "webhook_token"}
# Variables that are not settings: the settings file's, the secrets', and those of the
# project's own test suite and CI (NEWSLETTER_TEST_* too), which must not be warned about.
_NOT_SETTINGS = {
    CONFIG_ENV,
    SECRET_KEY_ENV,
    SMTP_PASSWORD_ENV,
    BOUNCES_PASSWORD_ENV,
    WEBHOOK_TOKEN_ENV,
    WRITER_API_KEY_ENV,
    SLACK_TOKEN_ENV,
    SLACK_WEBHOOK_ENV,
    DISCORD_WEBHOOK_ENV,
    METRICS_TOKEN_ENV,
}
_TOOL_VARIABLES = {"NEWSLETTER_REQUIRE_SERVICES", "NEWSLETTER_REGEN_GOLDEN"}
_TOOL_PREFIX = "NEWSLETTER_TEST_"
# Where each secret comes from, for the error that says so.
_SECRET_ENV = {
    "secret_key": SECRET_KEY_ENV,
    "smtp.password": SMTP_PASSWORD_ENV,
    "bounces.password": BOUNCES_PASSWORD_ENV,
    "bounces.webhook_token": WEBHOOK_TOKEN_ENV,
    "webhook_token": WEBHOOK_TOKEN_ENV,
    "writer.api_key": WRITER_API_KEY_ENV,
    "slack.token": SLACK_TOKEN_ENV,
    "slack.webhook_url": SLACK_WEBHOOK_ENV,
    "discord.webhook_url": DISCORD_WEBHOOK_ENV,
    "web.metrics_token": METRICS_TOKEN_ENV,
}


def _env_overrides(
    env: Mapping[str, str], renames: Mapping[str, str] = RENAMED
) -> list[tuple[str, dict[str, Any]]]:
    """The settings the ``NEWSLETTER_*`` variables of ``env`` give, as layers named by
    their variable. A variable that names no setting is warned about (with the one it is
    spelled like), and a key a table does not have is an error, as in the file."""
    found: list[tuple[str, dict[str, Any]]] = []
    top_hints = _hints(Config)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section == "email" and key.split("__")[0] in LANGS and "__" in key:
                lang, key = key.split("__", 1)
                found.append((name, {section: {lang: {key: env[name]}}}))
            elif section in _SECTIONS:
                found.append((name, {section: {key: env[name]}}))
            elif section in top_hints and section not in _NOT_KEYS:
                raise ConfigError(f"{name}: {section} is not a table")
            else:
                _warn_unknown(name, renames)
        elif (rest in top_hints or rest in renames) and rest not in _NOT_KEYS | _SECTIONS.keys():
            found.append((name, {rest: env[name]}))
        else:
            _warn_unknown(name, renames)
    return found


def _warn_unknown(name: str, renames: Mapping[str, str]) -> None:
    """Say that ``name`` sets nothing, unless it belongs to the project's own tools: a
    misspelt variable must not pass for a setting in force."""
    if name in _TOOL_VARIABLES or name.startswith(_TOOL_PREFIX):
        return
    known = _setting_variables(renames)
    rest = name[len(ENV_PREFIX) :]
    match = difflib.get_close_matches(rest, [v[len(ENV_PREFIX) :] for v in known], 1, 0.75)
    if match:
        hint = f"did you mean {ENV_PREFIX}{match[0]}?"
    elif rest.lower() in _SECTIONS:
        hint = f"[{rest.lower()}] is a table: {name}__<KEY> sets one of its keys"
    else:
        hint = (
            f"{ENV_PREFIX}<KEY> sets a top-level key, {ENV_PREFIX}<SECTION>__<KEY> a key in a table"
        )
    log.warning("%s is not a setting and is ignored; %s", name, hint)


def _setting_variables(renames: Mapping[str, str]) -> list[str]:
    """Every variable newsletter reads, as it is spelled."""
    top = [k for k in _hints(Config) if k not in _NOT_KEYS | _SECTIONS.keys()]
    tables = [f"{s}__{k}" for s, cls in _SECTIONS.items() for k in _hints(cls)]
    keys = [*top, *tables, *(old.replace(".", "__") for old in renames)]
    names = [ENV_PREFIX + key.upper() for key in keys]
    return [*names, *sorted(_NOT_SETTINGS), *sorted(_TOOL_VARIABLES)]


def _with_secrets(sections: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """``sections`` (the tables by name) with the secrets that ``env`` holds."""
    out = dict(sections)
    smtp_password = env.get(SMTP_PASSWORD_ENV, "")
    if smtp_password:
        out["smtp"] = dataclasses.replace(out["smtp"], password=smtp_password)
    bounces_secrets = {
        name: env[variable]
        for name, variable in (
            ("password", BOUNCES_PASSWORD_ENV),
            ("webhook_token", WEBHOOK_TOKEN_ENV),
        )
        if env.get(variable)
    }
    if bounces_secrets:
        out["bounces"] = dataclasses.replace(out["bounces"], **bounces_secrets)
    if env.get(WRITER_API_KEY_ENV):
        out["writer"] = dataclasses.replace(out["writer"], api_key=env[WRITER_API_KEY_ENV].strip())
    slack = {
        name: env[variable].strip()
        for name, variable in (("token", SLACK_TOKEN_ENV), ("webhook_url", SLACK_WEBHOOK_ENV))
        if env.get(variable, "").strip()
    }
    if slack:
        out["slack"] = dataclasses.replace(out["slack"], **slack)
    if env.get(DISCORD_WEBHOOK_ENV, "").strip():
        out["discord"] = dataclasses.replace(
            out["discord"], webhook_url=env[DISCORD_WEBHOOK_ENV].strip()
        )
    if env.get(METRICS_TOKEN_ENV, "").strip():
        out["web"] = dataclasses.replace(out["web"], metrics_token=env[METRICS_TOKEN_ENV].strip())
    return out
