"""The MIME pieces of a message written by hand, where the email package is too slow to run
per recipient or folds headers wrongly.

Header values are checked before they are written (:class:`HeaderError`); the Subject, a
mailbox and a list of URLs are folded to 76 columns; bodies with slots are encoded once
and joined around each recipient's values (:class:`SlottedBase64`, :class:`SlottedText`).
"""

from __future__ import annotations

import base64
import binascii
import re

from newsletter.errors import NewsletterError

__all__ = [
    "CRLF",
    "HeaderError",
    "SlottedBase64",
    "SlottedText",
    "canonical",
    "fits_8bit",
    "fold_list",
    "mailbox_header",
    "one_line",
    "plain_address",
    "subject_header",
]

CRLF = b"\r\n"
_B64_LINE = 57  # input bytes per 76-character base64 line
# RFC 5322: a line is at most 998 octets; an 8bit body must keep to it.
_MAX_LINE = 998
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESS_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
)
_ATOM_PHRASE_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)


class HeaderError(NewsletterError):
    """A value that cannot go into a mail header as given (a line break, a bad address)."""


# -- header values -------------------------------------------------------------------------


def one_line(what: str, value: str) -> str:
    """``value`` when it can be written into a header as it is: no line break, which would
    inject headers, and no control character."""
    if "\r" in value or "\n" in value:
        raise HeaderError(
            f"{what} contains a line break, which would inject mail headers: {value!r}"
        )
    if _CONTROL_RE.search(value):
        raise HeaderError(f"{what} contains a control character: {value!r}")
    return value


def plain_address(what: str, value: str) -> str:
    """``value`` when it is a plain ASCII address such as ``name@example.org``."""
    one_line(what, value)
    if not _ADDRESS_RE.fullmatch(value):
        raise HeaderError(
            f"{what} is not a plain ASCII address such as name@example.org: {value!r}"
        )
    return value


def _encoded_words(text: str, max_bytes: int = 45) -> list[str]:
    """RFC 2047 base64 encoded words of at most 72 characters (``max_bytes`` of UTF-8 each),
    split between characters."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > max_bytes:
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def subject_header(subject: str) -> bytes:
    """The Subject's value, folded to 76 columns.

    Written here rather than by the email package, which folds text mixing ASCII words and
    encoded words with a space on both sides of the line break: readers then show two spaces
    (``with  Large…``). ASCII is folded at its own spaces; anything else is all encoded
    words, the whitespace between which readers drop."""
    one_line("subject", subject)
    # A title holding "=?...?=" written as it is would be decoded by readers into whatever
    # it says: such a subject is encoded too, as a display name is (mailbox_header).
    if not subject.isascii() or "=?" in subject or "?=" in subject:
        # 39 bytes make words of 64 characters, which fit after "Subject: ".
        return "\r\n ".join(_encoded_words(subject, 39)).encode("ascii")
    lines = [""]
    width = 76 - len("Subject: ")
    for index, word in enumerate(subject.split(" ")):
        if index and len(lines[-1]) + 1 + len(word) > width and lines[-1].strip():
            lines.append(" " + word)  # the break goes before the space, which stays
            width = 76
        else:
            lines[-1] += (" " if index else "") + word
    return "\r\n".join(lines).encode("ascii")


def mailbox_header(name: str, address: str, prefix_len: int) -> bytes:
    """``name <address>`` folded to 76 columns, the name RFC 2047-encoded when needed."""
    one_line("recipient name", name)
    plain_address("recipient address", address)
    name = name.strip()
    if not name:
        return address.encode("ascii")
    # A name that looks like an encoded word is itself encoded, never written as it is:
    # a reader would decode it into whatever it says.
    marked = "=?" in name or "?=" in name
    if len(name) <= 40 and not marked and _ATOM_PHRASE_RE.fullmatch(name):
        phrase = [name]
    elif len(name) <= 40 and not marked and name.isascii() and name.isprintable():
        phrase = ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    else:
        phrase = _encoded_words(name)
    lines = list(phrase)  # each encoded word on its own folded line
    tail = f"<{address}>"
    width = prefix_len + len(lines[-1]) if len(lines) == 1 else 1 + len(lines[-1])
    if width + 1 + len(tail) <= 76:
        lines[-1] += " " + tail
    else:
        lines.append(tail)
    return "\r\n ".join(lines).encode("ascii")


def fold_list(prefix_len: int, items: list[str]) -> bytes:
    """``items`` as one comma-separated value, one item a line when they do not fit in 76
    columns after a ``prefix_len``-character header name."""
    text = ", ".join(items)
    if prefix_len + len(text) <= 76:
        return text.encode("ascii")
    return ",\r\n ".join(items).encode("ascii")


# -- bodies ----------------------------------------------------------------------------------


def canonical(text: str) -> str:
    """Text in MIME canonical form (RFC 2046): CRLF line breaks, ending with one."""
    text = "\r\n".join(text.replace("\r\n", "\n").split("\n"))
    return text if text.endswith("\r\n") else text + "\r\n"


def fits_8bit(text: str, markers: tuple[str, ...] = (), value_bytes: int = 0) -> bool:
    """Whether canonical ``text`` can go out as 8bit, each of its ``markers`` taking up to
    ``value_bytes`` bytes: no line over 998 octets, no NUL and no CR or LF outside a
    line break."""
    data = text.encode("utf-8")
    breaks = data.count(b"\r\n")
    if b"\0" in data or data.count(b"\r") != breaks or data.count(b"\n") != breaks:
        return False
    slots = [m.encode("utf-8") for m in markers if m]
    return all(
        len(line) + sum(line.count(slot) * (value_bytes - len(slot)) for slot in slots) <= _MAX_LINE
        for line in data.split(b"\r\n")
    )


def _b64_lines(data: bytes) -> bytes:
    """Base64 in lines of at most 76 characters, each ending in CRLF."""
    if not data:
        return b""
    return b"".join(
        binascii.b2a_base64(data[i : i + _B64_LINE], newline=False) + CRLF
        for i in range(0, len(data), _B64_LINE)
    )


def _split_slots(text: str, markers: tuple[str, ...]) -> tuple[list[bytes], list[int]]:
    """``text`` cut at its markers: the UTF-8 pieces, and which marker (by its place in
    ``markers``) stood between piece i and piece i + 1. An empty marker has no slot."""
    kind = {marker: index for index, marker in enumerate(markers) if marker}
    pieces = re.split("(" + "|".join(map(re.escape, kind)) + ")", text) if kind else [text]
    return [p.encode("utf-8") for p in pieces[0::2]], [kind[m] for m in pieces[1::2]]


class SlottedBase64:
    """A body with slots, base64-encoded once in pieces that can be joined around values.

    Base64 of a concatenation equals the concatenation of the parts' base64 when every
    part but the last is a multiple of 3 bytes long. Each static piece is encoded once for
    each of the three ways it can be entered (0, 1 or 2 of its bytes taken by the joint
    before it); per recipient only the joints (the value plus at most 4 static bytes) are
    encoded. Every line stays a multiple of 4 characters and at most 76 long.

    Each marker names a slot kind: :meth:`encode` takes one value per marker, in order
    (an empty marker has no slot).
    """

    __slots__ = ("_kinds", "_parts", "_variants")

    def __init__(self, text: str, *markers: str) -> None:
        self._parts, self._kinds = _split_slots(text, markers)
        # _variants[i][h] = (encoded middle of part i after its first h bytes, leftover tail)
        self._variants: list[list[tuple[bytes, bytes] | None]] = []
        for part in self._parts:
            variants: list[tuple[bytes, bytes] | None] = []
            for head in range(3):
                if head > len(part):
                    variants.append(None)
                    continue
                body = part[head:]
                cut = len(body) - len(body) % 3
                variants.append((_b64_lines(body[:cut]), body[cut:]))
            self._variants.append(variants)

    def has_slot(self, kind: int) -> bool:
        return kind in self._kinds

    @property
    def lead(self) -> bytes:
        """The first of :meth:`pieces`, the same for any values."""
        variant = self._variants[0][0]
        assert variant is not None  # no bytes taken by a joint: always there
        return variant[0]

    def encode(self, *values: bytes) -> bytes:
        return b"".join(self.pieces(*values))

    def shared(self) -> list[bytes]:
        """The pieces :meth:`pieces` returns as they are, whatever the values (the
        same objects each time)."""
        return [variant[0] for variants in self._variants for variant in variants if variant]

    def pieces(self, *values: bytes) -> list[bytes]:
        """The encoding around ``values`` in pieces, to be joined once with the rest of
        the message; the first is :attr:`lead`."""
        out: list[bytes] = []
        carry = b""
        for index, part in enumerate(self._parts):
            if index:
                carry += values[self._kinds[index - 1]]
            need = -len(carry) % 3
            variant = self._variants[index][need]
            if variant is None:  # a piece shorter than the joint needs: it joins the carry
                carry += part
                continue
            carry += part[:need]
            if carry:
                out.append(_b64_lines(carry))
            middle, carry = variant
            out.append(middle)
        if carry:
            out.append(_b64_lines(carry))
        return out


class SlottedText:
    """An 8bit body with slots: its UTF-8 bytes, joined around one value per marker."""

    __slots__ = ("_kinds", "_parts")

    def __init__(self, text: str, *markers: str) -> None:
        self._parts, self._kinds = _split_slots(text, markers)

    def has_slot(self, kind: int) -> bool:
        return kind in self._kinds

    @property
    def lead(self) -> bytes:
        """The first of :meth:`pieces`, the same for any values."""
        return self._parts[0]

    def encode(self, *values: bytes) -> bytes:
        return b"".join(self.pieces(*values))

    def shared(self) -> list[bytes]:
        """The pieces :meth:`pieces` returns as they are, whatever the values."""
        return list(self._parts)

    def pieces(self, *values: bytes) -> list[bytes]:
        """The text around ``values`` in pieces; the first is :attr:`lead`."""
        out = [self._parts[0]]
        for kind, part in zip(self._kinds, self._parts[1:], strict=True):
            out += (values[kind], part)
        return out
