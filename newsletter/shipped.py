"""Files that ship with the package: the sample archive and the commented settings file.

A wheel carries them inside the package (``newsletter/seeds``, ``newsletter/config.toml``,
see ``[tool.hatch.build.targets.wheel.force-include]`` in pyproject.toml); a checkout, or an
editable install of one, has them at the top of the repository. Either way they are the same
files, so the settings ``newsletter init`` writes cannot drift from the documented ones.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SAMPLE_ARCHIVE", "SETTINGS_FILE", "shipped"]

SAMPLE_ARCHIVE = "seeds"
SETTINGS_FILE = "config.toml"

_PACKAGE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """Where the shipped file or folder ``name`` is: inside the installed package, else at
    the top of the checkout the package runs from."""
    inside = _PACKAGE / name
    return inside if inside.exists() else _PACKAGE.parent / name
