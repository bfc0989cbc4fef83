"""The circuit breaker: an issue's send stops when its failures stop being about the
recipients.

A bad address is one subscriber's problem; a policy block or a rejected message (the
server refusing the content, the sender's reputation, a DKIM failure) would fail every
subscriber alike, and sending on would only hurt the sender's reputation further.
"""

from __future__ import annotations

from collections import Counter, deque

from newsletter.mail.transport import DeliveryError, MessageError, PolicyError


class Breaker:
    """Trips when most of the last ``window`` recipients failed for the same reason that
    says nothing about their address (a policy block, a rejected message)."""

    def __init__(self, window: int, share: float = 0.8) -> None:
        self.window = window
        self.needed = max(1, int(window * share + 0.999))
        self.recent: deque[tuple[int, str | None]] = deque(maxlen=window)

    def record(self, delivery_id: int, failure: DeliveryError | None) -> tuple[str, list[int]]:
        """Add one outcome; returns (reason, the deliveries it failed) once tripped, else
        ("", [])."""
        shared = isinstance(failure, PolicyError | MessageError)
        self.recent.append((delivery_id, failure.reason if shared and failure else None))
        if len(self.recent) < self.window:
            return "", []
        reasons = Counter(reason for _, reason in self.recent if reason)
        if not reasons:
            return "", []
        reason, count = reasons.most_common(1)[0]
        if count < self.needed:
            return "", []
        ids = [i for i, r in self.recent if r == reason]
        self.recent.clear()
        return reason, ids
