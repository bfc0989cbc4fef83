"""The README stays true: its Quick start is two commands, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_quick_start_is_exactly_two_commands() -> None:
    blocks = _quick_start()
    assert len(blocks) == 2
    assert all("\n" not in block for block in blocks)


def test_ci_runs_the_readme_test_command() -> None:
    test_command = _quick_start()[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_every_command_is_documented() -> None:
    for name in main.commands:  # type: ignore[attr-defined]
        assert f"`newsletter {name}" in README, name


def test_quick_start_installs_the_locked_versions() -> None:
    run, test = _quick_start()
    assert "--require-hashes -r requirements/run.txt" in run
    assert "--require-hashes -r requirements/test.txt" in test
