"""Log output: one format for every command and for the libraries under it.

Every record, ours, uvicorn's (its access log included) and any library's, is one
``key=value`` line on standard error (:class:`LogfmtFormatter`). The command line chooses
the level once, before a command runs (:func:`configure`): warnings by default, ``-v``
for information, ``-vv`` for debugging; the long-lived service logs at least information,
as its log is its record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

__all__ = ["LogfmtFormatter", "configure"]

# Libraries whose own loggers are noise at INFO: one line per scheduler decision and per
# schema revision applied is ours to log, and flufl.bounce logs every detector it tries on
# every message.
# httpx logs every request's whole URL at INFO, and a webhook's URL is its secret.
_QUIET = ("alembic", "apscheduler", "flufl.bounce", "httpx", "httpcore")
# uvicorn installs handlers and formats of its own unless told otherwise; its records go
# through ours instead.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")


class LogfmtFormatter(logging.Formatter):
    """``time=... level=info logger=... msg="..."``: one line per record, easy to grep and to
    parse (journald, Loki)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
        line = (
            f"time={stamp} level={record.levelname.lower()} logger={record.name} "
            f"msg={json.dumps(record.getMessage(), ensure_ascii=False)}"
        )
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info), ensure_ascii=False)}"
        return line


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes, not when it was made (a
    test runner swaps it for each command it invokes)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure(verbose: int = 0, *, service: bool = False) -> None:
    """Send every log record to standard error as one ``key=value`` line: warnings and
    errors, information with ``verbose`` (or ``service``), everything with ``verbose > 1``.
    Calling it again replaces what an earlier call set up."""
    if verbose > 1:
        level = logging.DEBUG
    elif verbose or service:
        level = logging.INFO
    else:
        level = logging.WARNING
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
