"""The pages a build in progress is about to write, so that the web app answers them with
503 and Retry-After (come back in a moment) rather than 404 (there is no such page).

A service that starts with pages missing (a first start) or linking to another address
(``base_url`` unset and a new ``--port``) listens before its pages are written. From
:meth:`PendingPages.start` until the build has planned its pages, any missing page of the
site's kinds is taken as coming (and, when the links changed, every one of them); from
:meth:`PendingPages.plan` on, exactly the pages the build will write; after
:meth:`PendingPages.finish`, none.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

__all__ = ["PAGE_NAME", "PendingPages"]

# The addresses of what a build writes after listening: the front page, the weeks' web
# copies, the days' pages and the search page, in each language, the search page's script
# and index, and the issues feeds, which link to them.
PAGE_NAME = re.compile(
    r"(?:index|search|issues/\d{4}-W\d{2}|days/\d{4}-\d{2}-\d{2})(?:\.[a-z]{2})?\.html"
    r"|issues\.(?:atom|json)|search\.js|search/index\.json",
    re.ASCII,
)


class PendingPages:
    """Shared by the web app (which asks) and the build (which tells), in any threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._building = False
        self._stale = False
        self._names: set[str] | None = None

    def start(self, *, stale: bool) -> None:
        """A build is coming; ``stale``: the pages there link to another address."""
        with self._lock:
            self._building, self._stale, self._names = True, stale, None

    def plan(self, names: Iterable[str], exists: Callable[[str], bool]) -> None:
        """The build writes ``names``: those missing (all of them when stale) are pending."""
        with self._lock:
            if not self._building:
                return
            stale = self._stale
        pending = {name for name in names if stale or not exists(name)}
        with self._lock:
            if self._building:
                self._names = pending

    def done(self, name: str) -> None:
        """``name`` is written (or found current)."""
        with self._lock:
            if self._names is not None:
                self._names.discard(name)

    def finish(self) -> None:
        """The build ended (done, stopped or failed): nothing is pending any more."""
        with self._lock:
            self._building, self._stale, self._names = False, False, None

    @property
    def building(self) -> bool:
        with self._lock:
            return self._building

    def holds(self, name: str, *, exists: bool) -> bool:
        """Whether the page ``name`` (relative to the public folder) is still to be written."""
        with self._lock:
            if not self._building:
                return False
            if self._names is not None:
                return name in self._names
            return (self._stale or not exists) and PAGE_NAME.fullmatch(name) is not None
