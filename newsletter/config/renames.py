"""Settings that changed name, and the renaming of an old name in a layer of settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from newsletter.config.settings import _SECTIONS
from newsletter.errors import ConfigError

__all__ = ["RENAMED"]

# One logger for the whole package, so that its lines say logger=newsletter.config wherever
# in it they come from.
log = logging.getLogger(__name__)

# Settings that changed name: old dotted key -> new dotted key. An old config.toml (or
# environment variable, or flag) keeps working, with a warning naming the new key; giving
# both is an error, as the file would say two things. Entries stay for at least a release.
RENAMED: dict[str, str] = {}


def _renamed(data: Mapping[str, Any], where: str, renames: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with every old key moved to its new name (tables included)."""
    if not renames:
        return dict(data)
    out: dict[str, Any] = {
        k: dict(v) if k in _SECTIONS and isinstance(v, Mapping) else v for k, v in data.items()
    }
    for old, new in renames.items():
        old_section, _, old_key = old.rpartition(".")
        source = out.get(old_section) if old_section else out
        if not isinstance(source, dict) or old_key not in source:
            continue
        value = source.pop(old_key)
        new_section, _, new_key = new.rpartition(".")
        target = out.setdefault(new_section, {}) if new_section else out
        if not isinstance(target, dict):
            raise ConfigError(f"{where}: [{new_section}] must be a table")
        if new_key in target:
            raise ConfigError(f"{where}: {old} is the old name of {new}; give only {new}")
        log.warning("%s: %s is now called %s; please rename it", where, old, new)
        target[new_key] = value
    return out
