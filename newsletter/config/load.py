"""Building the settings object from its layers: defaults, the file, the environment, flags."""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from newsletter.config.environment import (
    CONFIG_ENV,
    SECRET_KEY_ENV,
    _env_overrides,
    _with_secrets,
)
from newsletter.config.layers import _apply
from newsletter.config.renames import RENAMED
from newsletter.config.settings import _SECTIONS, LANGS, Config
from newsletter.config.validate import _validate
from newsletter.errors import ConfigError
from newsletter.shipped import SAMPLE_ARCHIVE, shipped

__all__ = ["COMMAND_LINE", "SAMPLES", "load_config"]

# Where a key was set, besides a file's path and a variable's name (Config.origins).
COMMAND_LINE = "command line"
SAMPLES = (
    "no seeds folder here: the sample archive shipped with newsletter, read until "
    "archive_dir holds a digest of its own"
)

# One logger for the whole package, so that its lines say logger=newsletter.config wherever
# in it they come from.
log = logging.getLogger(__name__)


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    renames: Mapping[str, str] = RENAMED,
) -> Config:
    """Build the settings object: defaults, then ``path`` (or ``$NEWSLETTER_CONFIG``, or
    ``./config.toml`` when present), then environment variables, then ``overrides``
    (dotted keys such as ``"smtp.host"``, from command-line flags). Old names in
    ``renames`` (:data:`RENAMED`) are accepted with a warning."""
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    if path is None:
        path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else Path("config.toml")
    values = _empty_values()
    origins: dict[str, str] = {}
    base_dir = Path.cwd()
    settings_file = None
    # A link whose target is gone is a file meant to be read, not "no file": never run on
    # the defaults because of it.
    if path.exists() or path.is_symlink() or explicit:
        _apply(values, _read_file(path), str(path), False, origins, renames)
        base_dir = path.resolve().parent
        settings_file = path
    for name, data in _env_overrides(env, renames):
        _apply(values, data, name, True, origins, renames)
    if overrides:
        _apply(values, _nested(overrides), COMMAND_LINE, True, origins, renames)
    cfg = _build(values, env, base_dir)
    _validate(cfg, origins)
    cfg = _with_samples(cfg, origins)
    return cfg.replace(settings_file=settings_file, origins=origins)


def _empty_values() -> dict[str, dict[str, Any]]:
    """Where the layers put their values: ``""`` for the top level, then one per table."""
    return {
        "": {},
        **{s: {} for s in _SECTIONS},
        **{f"email.{lang}": {} for lang in LANGS},
    }


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise ConfigError(
                f"{path}: the config file is a link to {target}, which does not exist"
            ) from None
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8; save the settings file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (``"smtp.host"``) as tables, as the file would give them; a ``None``
    value is a flag not given."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, sub = key.rpartition(".")
        if section:
            nested.setdefault(section, {})[sub] = value
        else:
            nested[sub] = value
    return nested


def _build(values: Mapping[str, dict[str, Any]], env: Mapping[str, str], base_dir: Path) -> Config:
    """The settings object of the layers' ``values`` and the secrets in ``env``."""
    sections: dict[str, Any] = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    sections["email"] = dataclasses.replace(
        sections["email"],
        **{
            lang: dataclasses.replace(getattr(sections["email"], lang), **values[f"email.{lang}"])
            for lang in LANGS
        },
    )
    return Config(
        **values[""],
        **_with_secrets(sections, env),
        base_dir=base_dir,
        secret_key=env.get(SECRET_KEY_ENV, ""),
    )


def _with_samples(cfg: Config, origins: dict[str, str]) -> Config:
    """The default source where there is no seeds/ folder (outside a clone, a site made
    by ``newsletter init``): the sample archive shipped in the package, said in the log
    and in ``origins``; it is read only until archive_dir holds a digest of the site's own
    (see :func:`newsletter.archive.sources.local_catalog`). A --source flag always means
    the folder it names."""
    if (
        cfg.source != SAMPLE_ARCHIVE
        or origins.get("source") == COMMAND_LINE
        or cfg.source_path.exists()
    ):
        return cfg
    samples = shipped(SAMPLE_ARCHIVE)
    if not samples.is_dir():
        return cfg
    log.info(
        "there is no %s folder: the sample archive shipped with newsletter, %s, stands in "
        "until %s holds a digest of the site's own (or source names a folder of digests)",
        cfg.source_path,
        samples,
        cfg.archive_path,
    )
    origins["source"] = SAMPLES
    return cfg.replace(source=str(samples))
