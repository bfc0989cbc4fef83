"""What ships with the package: the sample archive and the settings file, in the wheel too."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from newsletter.shipped import SAMPLE_ARCHIVE, SETTINGS_FILE, shipped

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_finds_them_at_its_top() -> None:
    assert shipped(SETTINGS_FILE) == ROOT / "config.toml"
    assert shipped(SAMPLE_ARCHIVE) == ROOT / "seeds"


def test_the_wheel_carries_them_inside_the_package(tmp_path: Path) -> None:
    """Built as `pip install .` builds it: the settings file and the samples, the same
    bytes as in the checkout, inside newsletter/ where shipped() looks."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "--no-index", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("newsletter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("newsletter/config.toml") == (ROOT / "config.toml").read_bytes()
        for sample in (ROOT / "seeds").iterdir():
            assert archive.read(f"newsletter/seeds/{sample.name}") == sample.read_bytes()
    assert "newsletter/shipped.py" in names
    assert "newsletter/templates/email/issue.html" in names
