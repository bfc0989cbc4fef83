"""Settings: the hand-written layer (``newsletter.config``) against pydantic-settings on the
same settings, measured side by side in one run, with what each says about the same
mistakes.

The pydantic variant validates into the very same dataclasses (pydantic reads standard
dataclasses), from the same layers: a ``BaseSettings`` whose fields are the top-level keys
and the tables, reading ``NEWSLETTER_*`` variables (``__`` before a table's key) over the
TOML file. Both then run the same checks of values (``newsletter.config.validate``), so the
figures compare the layer pydantic-settings would replace: reading the layers, unknown
keys, types, and building the object.

Measured:
- cold: a fresh interpreter importing what the variant needs and building the settings from
  config.toml, as every command and the service do before anything else (median of runs);
- warm: building them again in one process (the per-call cost);
- errors: what each says for a wrong type in the file, a misspelt key in a table or at the
  top level, and a misspelt table in the environment.

Needs pydantic-settings, which newsletter does not depend on:

    .venv/bin/pip install pydantic-settings
    .venv/bin/python bench/settings.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.toml"
ENV = {"NEWSLETTER_TOP_N_DAILY": "5", "NEWSLETTER_SMTP__HOST": "mail.example.org"}

# The pydantic variant, as a program of its own so that a fresh interpreter can run it.
PYDANTIC = r"""
import sys, tomllib
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model
from pydantic_settings import (
    BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource,
)

from newsletter.config.settings import _NOT_KEYS, Config, _hints
from newsletter.config.validate import _validate
from newsletter.errors import ConfigError

# Every dataclass of the settings forbids keys it does not know, as the file must.
for cls in {type(v) for v in vars(Config()).values() if hasattr(v, "__dataclass_fields__")}:
    cls.__pydantic_config__ = ConfigDict(extra="forbid")


class Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEWSLETTER_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (init_settings, env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=cls.toml_file))


FIELDS = {name: (hint, getattr(Config(), name))
          for name, hint in _hints(Config).items() if name not in _NOT_KEYS}
Settings = create_model("Settings", __base__=Base, **FIELDS)


def load(path: Path) -> Config:
    Settings.toml_file = path
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    cfg = Config(**{name: getattr(settings, name) for name in FIELDS},
                 base_dir=path.parent)
    _validate(cfg, {})
    return cfg
"""

OURS = r"""
from newsletter.config import load_config

def load(path):
    return load_config(path)
"""

MISTAKES = {
    "a wrong type in the file": ("[smtp]\nport = 'twenty-five'\n", {}),
    "a misspelt key in a table": ("[smtp]\nhots = 'mail.example.org'\n", {}),
    "a misspelt table in the environment": ("", {"NEWSLETTER_SMPT__HOST": "mail.example.org"}),
    "a misspelt top-level key in the file": ("top_n_dialy = 5\n", {}),
}


def program(variant: str, body: str) -> str:
    code = PYDANTIC if variant == "pydantic-settings" else OURS
    return code + body


def cold(variant: str, runs: int) -> float:
    """Median milliseconds of a fresh interpreter importing and loading once."""
    code = program(variant, f"\nload(__import__('pathlib').Path({str(CONFIG)!r}))\n")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code], check=True, env=_env(ENV), cwd=ROOT, timeout=60
        )
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def warm(variant: str, runs: int) -> float:
    """Median microseconds of one load in a process that has loaded before."""
    code = program(
        variant,
        "\nimport time, statistics, pathlib\n"
        f"path = pathlib.Path({str(CONFIG)!r}); load(path)\n"
        "t = []\n"
        f"for _ in range({runs * 20}):\n"
        "    s = time.perf_counter(); load(path); t.append(time.perf_counter() - s)\n"
        "print(statistics.median(t) * 1e6)\n",
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env=_env(ENV),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


def error(variant: str, toml: str, env: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(toml, encoding="utf-8")
        code = program(
            variant,
            "\nimport pathlib\nfrom newsletter.errors import ConfigError\n"
            f"try:\n    load(pathlib.Path({str(path)!r}))\n    print('(accepted)')\n"
            "except ConfigError as exc:\n    print(exc)\n",
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=_env(env),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )
    return (out.stdout or out.stderr).strip()


def _env(extra: dict[str, str]) -> dict[str, str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return {**base, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    try:
        import pydantic_settings  # noqa: F401
    except ImportError:
        raise SystemExit(
            "needs pydantic-settings: .venv/bin/pip install pydantic-settings"
        ) from None
    variants = ("newsletter.config", "pydantic-settings")
    figures: dict[str, tuple[float, float]] = {}
    for variant in variants:
        figures[variant] = (cold(variant, args.runs), warm(variant, args.runs))
    print(f"config.toml plus {len(ENV)} environment variables; median of {args.runs} runs\n")
    print(f"{'':20} {'cold start':>12} {'one load, warm':>16}")
    for variant, (cold_ms, warm_us) in figures.items():
        print(f"{variant:20} {cold_ms:9.0f} ms {warm_us:13.0f} µs")
    ours, theirs = figures["newsletter.config"], figures["pydantic-settings"]
    print(f"{'pydantic / ours':20} {theirs[0] / ours[0]:11.2f}x {theirs[1] / ours[1]:15.2f}x\n")
    for what, (toml, env) in MISTAKES.items():
        print(f"{what}:")
        for variant in variants:
            message: Any = error(variant, toml, env)
            lines = message.splitlines()
            shown = "\n      ".join(lines[:6]) + ("\n      ..." if len(lines) > 6 else "")
            print(f"  {variant}: ({len(lines)} lines)\n      {shown}")
        print()


if __name__ == "__main__":
    main()
