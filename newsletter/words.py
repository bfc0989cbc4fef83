"""Counts in messages, written as a person writes them: "1 paper", "2 papers"."""

from __future__ import annotations

__all__ = ["count"]


def count(number: int, noun: str, plural: str = "") -> str:
    """``count(1, "paper")`` -> ``1 paper``; ``count(2, "delivery", "deliveries")`` ->
    ``2 deliveries`` (without ``plural``, the noun and an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"
