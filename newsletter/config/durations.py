"""Lengths of time as the settings spell them: ``"30m"``, ``"24h"``, or plain seconds."""

from __future__ import annotations

import re

__all__ = ["duration_seconds", "span_seconds"]

_DURATION_RE = re.compile(r"(\d+)\s*(s|m|h)$")
_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")


def span_seconds(text: str) -> float:
    """``'5m'`` -> 300.0; ``'90'`` -> 90.0 (see :data:`~newsletter.config.settings.Span`)."""
    match = _SPAN_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return float(match.group(1)) * unit


def duration_seconds(text: str) -> int:
    """``'30m'`` -> 1800."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
