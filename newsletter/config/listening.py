"""Where the web app listens, noted for the commands run beside it while base_url is unset."""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import urlsplit

from newsletter.config.settings import Config

__all__ = ["LISTENING_FILE", "recall_listening", "remember_listening"]

# One logger for the whole package, so that its lines say logger=newsletter.config wherever
# in it they come from.
log = logging.getLogger(__name__)

# In cache_dir: the address `newsletter run` or `serve` listens on, while base_url is unset.
LISTENING_FILE = "listening"


def remember_listening(cfg: Config) -> None:
    """Note where the web app listens, so that a command run beside it (``tick``, ``send``,
    ``worker``, ``preview``) links there too while ``base_url`` is unset."""
    if cfg.base_url:
        return
    try:
        cfg.cache_path.mkdir(parents=True, exist_ok=True)
        (cfg.cache_path / LISTENING_FILE).write_text(cfg.listen_url + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("cannot note the listening address in %s: %s", cfg.cache_path, exc)


def recall_listening(cfg: Config) -> Config:
    """``cfg`` with ``web.host`` and ``web.port`` where the web app last listened, when
    ``base_url`` is unset and the service noted an address; else ``cfg`` as it is."""
    if cfg.base_url:
        return cfg
    try:
        noted = (cfg.cache_path / LISTENING_FILE).read_text(encoding="utf-8").strip()
        parts = urlsplit(noted)
        host, port = parts.hostname, parts.port
    except (OSError, UnicodeDecodeError, ValueError):
        return cfg
    if not host or not port or (host, port) == (cfg.web.host, cfg.web.port):
        return cfg
    note = f"{cfg.cache_path / LISTENING_FILE} (where the web app last listened)"
    recalled = cfg.replace(
        web=dataclasses.replace(cfg.web, host=host, port=port),
        origins={**cfg.origins, "web.host": note, "web.port": note},
    )
    log.info(
        "links point to %s, where the web app last listened (base_url is not set)",
        recalled.listen_url,
    )
    return recalled
