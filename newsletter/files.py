"""File modes: what the service writes is private, except the public folder's output.

Processes run with umask 077 (see :func:`newsletter.cli.main`), so the database and its
WAL and SHM files, the signing key, the outbox and the archive are readable by the
service's user alone. The public folder (feeds, web copies) is served, possibly by a web
server running as another user, so its folders and files are made readable explicitly.
"""

from __future__ import annotations

from pathlib import Path

PRIVATE_UMASK = 0o077
PUBLIC_FILE = 0o644
PUBLIC_FOLDER = 0o755


def public_folder(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable and searchable by everyone."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for folder in missing:
        folder.chmod(PUBLIC_FOLDER)
    return path
