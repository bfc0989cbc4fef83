"""One layer of settings (the file, the environment, the command line) laid over the ones
below it: every key checked against the known ones, every value against its type."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from newsletter.config.durations import _SPAN_RE
from newsletter.config.environment import _SECRET_ENV, SECRET_KEYS, SMTP_PASSWORD_ENV
from newsletter.config.renames import RENAMED, _renamed
from newsletter.config.settings import (
    _NOT_KEYS,
    _SECTIONS,
    LANGS,
    Config,
    EmailEdition,
    Span,
    _hints,
)
from newsletter.errors import ConfigError

# Keys that are secrets in whichever table they appear.
_SECRET_NAMES = ("password", "webhook_token", "api_key", "token", "webhook_url")


def _coerce(key: str, value: Any, kind: Any, from_env: bool) -> Any:
    """Check (from TOML) or convert (from the environment) one value to the field's type."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise ConfigError(f"{key} must be a path (a non-empty string), got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if kind is Span:
        text = str(value).strip() if isinstance(value, int | float | str) else ""
        if isinstance(value, bool) or not _SPAN_RE.match(text):
            raise ConfigError(
                f"{key} must be seconds or a duration such as '5m' or '24h', got {value!r}"
            )
        return Span(text)
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover


def _apply(
    values: dict[str, dict[str, Any]],
    data: Mapping[str, Any],
    where: str,
    from_env: bool,
    origins: dict[str, str],
    renames: Mapping[str, str] = RENAMED,
) -> None:
    top_hints = _hints(Config)
    for key, value in _renamed(data, where, renames).items():
        if key in SECRET_KEYS:
            raise ConfigError(
                f"{where}: {key} is a secret and is read only from the environment "
                f"({_SECRET_ENV.get(key, SMTP_PASSWORD_ENV)})"
            )
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: [{key}] must be a table")
            hints = _hints(_SECTIONS[key])
            for sub, subvalue in value.items():
                name = f"{key}.{sub}"
                if name in SECRET_KEYS or name in _SECRET_ENV or sub in _SECRET_NAMES:
                    raise ConfigError(
                        f"{where}: {name} is a secret and is read only from the environment "
                        f"({_SECRET_ENV.get(name, SMTP_PASSWORD_ENV)})"
                    )
                if key == "email" and sub in LANGS:
                    _apply_edition(values, sub, subvalue, where, from_env, origins)
                    continue
                if sub not in hints:
                    raise ConfigError(f"{where}: unknown key {name!r}{_did_you_mean(name)}")
                try:
                    values[key][sub] = _coerce(name, subvalue, hints[sub], from_env)
                    origins[name] = where
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            continue
        if key not in top_hints or key in _NOT_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{_did_you_mean(key)}")
        try:
            values[""][key] = _coerce(key, value, top_hints[key], from_env)
            origins[key] = where
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _apply_edition(
    values: dict[str, dict[str, Any]],
    lang: str,
    data: Any,
    where: str,
    from_env: bool,
    origins: dict[str, str],
) -> None:
    """``[email.ko]`` / ``[email.en]``: an edition's own values."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: [email.{lang}] must be a table")
    hints = _hints(EmailEdition)
    for key, value in data.items():
        name = f"email.{lang}.{key}"
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {name!r}; an edition sets {', '.join(hints)}")
        try:
            values[f"email.{lang}"][key] = _coerce(name, value, hints[key], from_env)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        origins[name] = where


def _known_keys() -> list[str]:
    """Every key as it is spelled in a message: ``top_n_daily``, ``smtp``, ``smtp.host``."""
    top = [key for key in _hints(Config) if key not in _NOT_KEYS | _SECTIONS.keys()]
    tables = [f"{section}.{key}" for section, cls in _SECTIONS.items() for key in _hints(cls)]
    return top + list(_SECTIONS) + tables


def _did_you_mean(name: str) -> str:
    """``; did you mean 'smtp.host'?`` for a key spelled like a known one, else nothing.
    A key in the wrong table (``[smtp] lang``) is matched by its own name too."""
    known = _known_keys()
    section, _, key = name.rpartition(".")
    same_table = [k for k in known if k.startswith(f"{section}.")] if section else known
    for candidates, word in ((same_table, name), (known, name), (known, key)):
        match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
        if match:
            return f"; did you mean {match[0]!r}?"
    exact = [repr(k) for k in known if k.rpartition(".")[2] == key and k != name]
    return f"; did you mean {' or '.join(exact)}?" if exact else ""
