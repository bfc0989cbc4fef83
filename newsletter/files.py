"""File modes: what the service writes is private, except the public folder's output.

Processes run with umask 077 (see :func:`newsletter.cli.main`), so the database and its
WAL and SHM files, the signing key, the outbox and the archive are readable by the
service's user alone. The public folder (feeds, web copies) is served, possibly by a web
server running as another user, so its folders and files are made readable explicitly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_FILE = 0o600
PUBLIC_FILE = 0o644
PUBLIC_FOLDER = 0o755


def write_file(
    path: Path,
    data: bytes,
    *,
    mode: int,
    if_changed: bool = False,
    sync_folder: bool = False,
) -> bool:
    """All of ``data`` at ``path`` with exactly ``mode`` (whatever the umask), or the
    previous file untouched: a hidden temporary file in the same folder (never read as a
    digest or served), fsync, rename; with ``sync_folder`` the rename is made durable too.

    With ``if_changed`` a file already holding exactly these bytes is left alone, so it
    keeps its mtime and so its ETag. Returns whether the file was written."""
    if if_changed:
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_folder:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return True


def public_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable and searchable by everyone."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(PUBLIC_FOLDER)
    return path
