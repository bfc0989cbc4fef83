"""DKIM signing planned once per message template, so that each recipient's message costs
little more than its RSA signature.

An issue's messages differ from one recipient to the next in a few header fields (To,
Date, Message-ID, List-Unsubscribe) and in a few links near the end of each body part;
everything else is the same bytes for thousands of recipients. :class:`SigningPlan`
canonicalizes the shared header fields once, and keeps for each set of per-recipient
fields (a *shape*) the ``h=`` list and the canonical bytes between them. The body is
hashed once up to the first byte that can differ, and each message's hash continues from
a copy of that state (SHA-256 is computed front to back, so everything after the first
link is hashed per message). The result is the same :class:`SigningInput` that
:meth:`Signer.signatures` computes from the whole message, byte for byte, so the
signatures are the same; whatever the fast path cannot prove canonical as it is goes the
whole way instead.

What is left per message is the RSA signature itself, about 0.3 ms, which
:mod:`newsletter.mail.signproc` makes in processes beside the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.mail.signing import (
    Signer,
    SigningInput,
    body_hash,
    has_wsp_to_rewrite,
    header_names,
    relaxed_header,
    relaxed_lines,
    signed_order,
    split_message,
)

__all__ = ["SigningPlan", "canonical_as_is"]

_CRLF = b"\r\n"


@dataclass(frozen=True, slots=True)
class _Shape:
    """The signed headers of messages whose own fields have the same names: ``h=``, and
    what each name signs in turn, an own field (its index) or shared canonical bytes."""

    names: str
    steps: tuple[int | bytes, ...]


class SigningPlan:
    """The DKIM work shared by every message of one template, done once.

    ``head`` is the header block every message ends its headers with (fields separated by
    CRLF, without the blank line); each message's own fields come above it. ``lead`` is
    how every message's body starts. Then :meth:`signatures` signs a message given its
    own fields and the rest of its body.
    """

    def __init__(self, signer: Signer, head: bytes, lead: bytes) -> None:
        self.signer = signer
        self._fields, rest = split_message(head + _CRLF + _CRLF)
        if rest:
            raise ValueError("the shared header block holds a blank line")
        self._canonical = [relaxed_header(field) + _CRLF for field in self._fields]
        self._lead = lead
        # Hashed up to the lead's last line break: the lines before it are canonical on
        # their own, whatever follows (relaxed canonicalization is line by line, but for
        # the empty lines at the body's end, which a message's own pieces always follow).
        cut = lead.rfind(_CRLF) + 2 if _CRLF in lead else 0
        self._state = hashlib.sha256(relaxed_lines(lead[:cut]))
        self._leftover = lead[cut:]
        self._shapes: dict[tuple[bytes, ...], _Shape] = {}

    def signatures(self, own: Sequence[bytes], body: Sequence[bytes]) -> list[bytes]:
        """The DKIM-Signature fields (each ending in CRLF) of the message made of ``own``
        header fields (``Name: value``, folded with CRLF, without a final CRLF), the
        shared head, the blank line, the lead and ``body``'s pieces."""
        return self.signer.signatures_over(self.signing_input(own, body))

    def signing_input(self, own: Sequence[bytes], body: Sequence[bytes]) -> SigningInput:
        """What :meth:`Signer.signatures` would sign of that message, made from pieces."""
        shape = self._shape(tuple(field.partition(b":")[0] for field in own))
        headers = b"".join(
            step if isinstance(step, bytes) else relaxed_header(own[step]) + _CRLF
            for step in shape.steps
        )
        return SigningInput(shape.names, headers, self.body_hash(body))

    def body_hash(self, body: Sequence[bytes]) -> bytes:
        """The relaxed body hash of the lead followed by ``body``'s pieces."""
        pieces = [self._leftover, *body]
        if not canonical_as_is(pieces):
            return body_hash(b"".join((self._lead, *body)))
        digest = self._state.copy()
        for piece in pieces:
            digest.update(piece)
        return digest.digest()

    def _shape(self, names: tuple[bytes, ...]) -> _Shape:
        shape = self._shapes.get(names)
        if shape is None:
            # The same rules as for a whole message, run once on stand-ins for the own
            # fields (only their names count), so that both cannot disagree.
            fields = [name + b":" for name in names] + self._fields
            h = header_names(fields)
            steps: list[int | bytes] = []
            for index in signed_order(fields, h):
                if index < len(names):
                    steps.append(index)
                elif steps and isinstance(steps[-1], bytes):
                    steps[-1] += self._canonical[index - len(names)]
                else:
                    steps.append(self._canonical[index - len(names)])
            shape = self._shapes[names] = _Shape(":".join(h), tuple(steps))
        return shape


def canonical_as_is(pieces: Sequence[bytes]) -> bool:
    """Whether the joined ``pieces`` are a body's end already in relaxed form: no tab, no
    run of spaces, no space before a line break or at a piece's end (where the next piece
    could continue it), and a last line with something on it, ended by a line break.
    Cautious: False sends the body the whole way."""
    tail = b""  # the joined pieces' last four bytes: a line break may span two pieces
    for piece in pieces:
        if not piece:
            continue
        if piece.endswith(b" ") or has_wsp_to_rewrite(piece):
            return False
        tail = (tail + piece[-4:])[-4:]
    return len(tail) >= 3 and tail.endswith(_CRLF) and not tail.endswith(_CRLF + _CRLF)
