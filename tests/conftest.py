"""Shared fixtures: the seeds archive, a settings object for a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Config, load_config
from newsletter.digest import load_archive
from newsletter.models import Archive

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return SEEDS


@pytest.fixture(scope="session")
def seeds_archive() -> Archive:
    return load_archive(SEEDS)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Embedded defaults, with every relative path under a temporary folder."""
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return load_config(path, env={}, overrides={"source": str(SEEDS)})
