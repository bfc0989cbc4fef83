"""Where a running web app listens, noted for the commands run beside it while base_url is
unset.

``newsletter run`` and ``serve`` write the note (their address, process id and host name)
in ``cache_dir`` once they listen, and remove it when they stop. A note is believed only
while its process is alive and something answers at its address: a process that was
killed leaves its note behind, and no link may follow it to a port where nothing listens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.config.settings import Config

__all__ = ["LISTENING_FILE", "forget_listening", "recall_listening", "remember_listening"]

# One logger for the whole package, so that its lines say logger=newsletter.config wherever
# in it they come from.
log = logging.getLogger(__name__)

# In cache_dir: where `newsletter run` or `serve` listens, while base_url is unset.
LISTENING_FILE = "listening"
# How long a command waits to learn whether the noted address answers.
CONNECT_SECONDS = 1.0


def remember_listening(cfg: Config) -> None:
    """Note where the web app of this process listens, so that a command run beside it
    (``tick``, ``send``, ``worker``, ``feed``, ``preview``) links there too while
    ``base_url`` is unset."""
    if cfg.base_url:
        return
    note = {"url": cfg.listen_url, "pid": os.getpid(), "host": socket.gethostname()}
    path = cfg.cache_path / LISTENING_FILE
    temporary = path.with_name(f".{LISTENING_FILE}.{os.getpid()}")
    try:
        cfg.cache_path.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(note) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("cannot note the listening address in %s: %s", cfg.cache_path, exc)


def forget_listening(cfg: Config) -> None:
    """Remove this process's note (another process's note is left alone)."""
    path = cfg.cache_path / LISTENING_FILE
    note = _read(path)
    if note is not None and note[1] == os.getpid() and note[2] == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()


def recall_listening(cfg: Config) -> Config:
    """``cfg`` with ``web.host`` and ``web.port`` where a running web app listens, when
    ``base_url`` is unset and a live service noted an address; else ``cfg`` as it is."""
    if cfg.base_url:
        return cfg
    note = _read(cfg.cache_path / LISTENING_FILE)
    if note is None:
        return cfg
    url, pid, host = note
    parts = urlsplit(url)
    try:
        address, port = parts.hostname, parts.port
    except ValueError:
        return cfg
    if not address or not port:
        return cfg
    if not _alive(pid, host) or not _answers(address, port):
        log.info(
            "links point to %s: the web app noted at %s (pid %s) has stopped",
            cfg.listen_url,
            url,
            pid,
        )
        return cfg
    if (address, port) == (cfg.web.host, cfg.web.port):
        return cfg
    where = f"{cfg.cache_path / LISTENING_FILE} (where the web app of pid {pid} listens)"
    recalled = cfg.replace(
        web=dataclasses.replace(cfg.web, host=address, port=port),
        origins={**cfg.origins, "web.host": where, "web.port": where},
    )
    log.info(
        "links point to %s, where the web app of pid %s listens (base_url is not set)",
        recalled.listen_url,
        pid,
    )
    return recalled


def _read(path: Path) -> tuple[str, int, str] | None:
    """(url, pid, host) of a note, or None when there is none or it cannot be read."""
    try:
        note = json.loads(path.read_text(encoding="utf-8"))
        url, pid, host = note["url"], note["pid"], note["host"]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(url, str) or not isinstance(pid, int) or not isinstance(host, str):
        return None
    return url, pid, host


def _alive(pid: int, host: str) -> bool:
    """Whether process ``pid`` still runs (on another host: cannot tell, so yes)."""
    if host != socket.gethostname():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, and another user's
    return True


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return True
    except OSError:
        return False
