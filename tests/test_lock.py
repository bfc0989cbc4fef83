"""The locks in requirements/ pin every dependency that pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIN = re.compile(r"(?m)^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    return {canonicalize_name(package): version for package, version in PIN.findall(text)}


def _declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    lines += PYPROJECT["build-system"]["requires"]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("run.txt", ("postgres",)), ("test.txt", ("test", "postgres"))],
)
def test_lock_pins_every_declared_dependency_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    pins = _pins(lock)
    for requirement in _declared(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements/{lock}: run bash scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name]}, outside {requirement}: "
            "run bash scripts/lock.sh"
        )


def test_every_pin_carries_hashes() -> None:
    for lock in ("run.txt", "test.txt"):
        text = (ROOT / "requirements" / lock).read_text(encoding="utf-8")
        blocks = re.split(r"(?m)^(?=[A-Za-z0-9._-]+==)", text)[1:]
        assert blocks
        for block in blocks:
            assert "--hash=sha256:" in block, f"requirements/{lock}: {block.splitlines()[0]}"
