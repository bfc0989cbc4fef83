"""``newsletter config``: every setting in force, with where it came from, secrets masked.

One line per key, ``key = value  # source``: TOML, a table's keys dotted (which TOML reads
as keys of that table), so that a line pasted into a settings file sets that value. The
source is ``default``, ``FILE:LINE`` of the settings file, the environment variable's
name, or ``command line``. A secret (a password, token, key or webhook URL) is masked and
its line commented out, as it is read only from the environment; a password inside a URL
(``database_url``) is masked too.
"""

from __future__ import annotations

import json
import math
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from newsletter.config.environment import _SECRET_ENV, ENV_PREFIX
from newsletter.config.layers import _SECRET_NAMES
from newsletter.config.load import COMMAND_LINE
from newsletter.config.renames import RENAMED
from newsletter.config.settings import (
    _NOT_KEYS,
    _SECTIONS,
    LANGS,
    Config,
    EmailEdition,
    _hints,
)

__all__ = ["MASK", "Setting", "effective_settings", "key_lines", "render_settings"]

MASK = "********"
# The column the sources start at, where the assignment is shorter.
_COLUMN = 44


@dataclass(frozen=True)
class Setting:
    """One key in force. ``source``: ``default``, ``file``, ``environment``, ``command
    line`` or ``derived``; ``where``: ``FILE:LINE``, the variable, or what it was derived
    from; ``note``: what the value comes to (a relative path, resolved). A secret's
    ``value`` is :data:`MASK` when it is set, else empty."""

    key: str
    value: Any
    source: str
    where: str = ""
    secret: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "source": self.source,
            "where": self.where,
            "secret": self.secret,
        }


def effective_settings(cfg: Config) -> list[Setting]:
    """Every key of ``cfg``, in the order of the settings file, with its source."""
    lines = _file_lines(cfg.settings_file)
    return [_setting(cfg, key, value, lines) for key, value in _values(cfg)]


def _values(cfg: Config) -> list[tuple[str, Any]]:
    """(dotted key, value) of every key: the top level, then each table (``[email]``
    followed by its editions)."""
    found = [
        (name, getattr(cfg, name))
        for name in _hints(Config)
        if name not in _SECTIONS and name not in _NOT_KEYS
    ]
    found.append(("secret_key", cfg.secret_key))
    for section, cls in _SECTIONS.items():
        table = getattr(cfg, section)
        found += [
            (f"{section}.{name}", getattr(table, name))
            for name in _hints(cls)
            if not (section == "email" and name in LANGS)
        ]
        if section == "email":
            found += [
                (f"email.{lang}.{name}", getattr(getattr(table, lang), name))
                for lang in LANGS
                for name in _hints(EmailEdition)
            ]
    return found


def _setting(cfg: Config, key: str, value: Any, lines: dict[str, int]) -> Setting:
    if key in _SECRET_ENV or key.rpartition(".")[2] in _SECRET_NAMES:
        variable = _SECRET_ENV.get(key, "")
        if value:
            return Setting(key, MASK, "environment", variable, secret=True)
        return Setting(key, "", "default", variable, secret=True)
    shown = str(value) if isinstance(value, Path) else value
    if isinstance(shown, str):
        shown = _mask_url(shown)
    note = ""
    if isinstance(value, Path) and not value.is_absolute():
        note = str(cfg.resolve(value))
    elif key == "base_url" and not value:
        note = f"links use {cfg.site_url}"
    origin = cfg.origins.get(key)
    if origin is None:
        return Setting(key, shown, "default", note=note)
    if cfg.settings_file is not None and origin == str(cfg.settings_file):
        line = lines.get(key)
        return Setting(key, shown, "file", f"{origin}:{line}" if line else origin, note=note)
    if origin.startswith(ENV_PREFIX):
        return Setting(key, shown, "environment", origin, note=note)
    if origin == COMMAND_LINE:
        return Setting(key, shown, "command line", note=note)
    return Setting(key, shown, "derived", origin, note=note)


def _mask_url(value: str) -> str:
    """``value`` with the password of a URL masked (``postgresql://user:pw@host/db``)."""
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


# --- where each key is in the settings file ----------------------------------------------------


def _file_lines(path: Path | None) -> dict[str, int]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    lines = key_lines(text)
    for old, new in RENAMED.items():
        if old in lines:
            lines.setdefault(new, lines[old])
    return lines


def key_lines(text: str) -> dict[str, int]:
    """The line (from 1) where each key of the TOML document ``text`` is set, by dotted
    name (``smtp.host``, ``email.en.name``); a value over several lines counts from its
    first. Each statement is read by tomllib itself, so quoting, dotted keys and inline
    tables are read as TOML reads them; a line that does not end a statement (a string
    over several lines) is read together with the next."""
    found: dict[str, int] = {}
    table: tuple[str, ...] = ()
    chunk: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not chunk:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        chunk.append(line)
        try:
            data = tomllib.loads("\n".join(chunk))
        except tomllib.TOMLDecodeError:
            continue
        header = chunk[0].lstrip().startswith("[")
        chunk = []
        if header:
            table = _header(data)
            continue
        for path in _leaves(data):
            found[".".join(table + path)] = start
    return found


def _header(data: dict[str, Any]) -> tuple[str, ...]:
    """The path of a table header's document (``[email.en]``: {"email": {"en": {}}})."""
    path: list[str] = []
    node: Any = data
    while isinstance(node, dict) and len(node) == 1:
        name, node = next(iter(node.items()))
        path.append(name)
    return tuple(path)


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, value in data.items():
        if isinstance(value, dict):
            found += _leaves(value, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


# --- the text ---------------------------------------------------------------------------------


def render_settings(cfg: Config, settings: list[Setting]) -> str:
    """``settings`` as TOML, one key a line with its source, under a short header."""
    where = (
        f"settings file: {cfg.settings_file}"
        if cfg.settings_file is not None
        else "no settings file (./config.toml does not exist)"
    )
    out = [
        "# The settings in force, each with where it comes from: default, FILE:LINE of the",
        "# settings file, or the environment variable. Secrets are masked and commented out:",
        "# they are read only from the environment.",
        f"# {where}; relative paths resolve against {cfg.base_dir}",
    ]
    table = ""
    for setting in settings:
        section = setting.key.rpartition(".")[0].split(".")[0]
        if section != table:
            out.append("")
            table = section
        out.append(_line(setting))
    return "\n".join(out) + "\n"


def _line(setting: Setting) -> str:
    assignment = f"{setting.key} = {toml_value(setting.value)}"
    if setting.secret:
        assignment = f"# {assignment}"
        if setting.source == "environment":
            comment = f"{setting.where} (secret, masked)"
        else:
            comment = f"default: not set (secret: only from {setting.where})"
    else:
        comment = setting.where or setting.source
        if setting.source == "derived":
            comment = f"derived: {comment}"
    if setting.note:
        comment += f"; {setting.note}"
    pad = max(0, _COLUMN - _cells(assignment))
    return f"{assignment}{' ' * pad}  # {comment}"


def _cells(text: str) -> int:
    """Columns ``text`` takes on a terminal: Hangul and other wide characters take two,
    so that the sources line up after Korean values too."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def toml_value(value: Any) -> str:
    """``value`` written as TOML: a string, a boolean, an integer or a float."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    # JSON's string escapes are TOML's, but for DEL, which TOML wants escaped too.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
