"""Draws templates/site/favicon.ico (16 and 32 px) from the shapes of favicon.svg.

    python3 scripts/favicon.py

For browsers and tools that ask for /favicon.ico; every page links the SVG. Plain Python,
no imaging library: each pixel is sampled 4x4 times and the shapes painted in SVG order.
Run again after changing favicon.svg, with the same shapes here.
"""

from __future__ import annotations

import struct
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "templates" / "site" / "favicon.ico"
ACCENT = (0x9A, 0x4F, 0x08)
WHITE = (0xFF, 0xFF, 0xFF)
FOLD = (0xF3, 0xC9, 0x9B)
Shape = tuple[str, tuple[float, ...] | list[tuple[float, float]], tuple[int, int, int]]
# favicon.svg's shapes, in its 32x32 view box.
SHAPES: list[Shape] = [
    ("rrect", (0, 0, 32, 32, 7), ACCENT),
    ("poly", [(9, 6), (19, 6), (24, 11), (24, 26), (9, 26)], WHITE),
    ("poly", [(19, 6), (19, 11), (24, 11)], FOLD),
    ("poly", [(16.5, 13), (21, 19), (12, 19)], ACCENT),
    ("rrect", (12, 21, 9, 2, 1), ACCENT),
]


def _in_rrect(x: float, y: float, box: tuple[float, ...]) -> bool:
    left, top, width, height, r = box
    if not (left <= x <= left + width and top <= y <= top + height):
        return False
    cx = min(max(x, left + r), left + width - r)
    cy = min(max(y, top + r), top + height - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _in_poly(x: float, y: float, points: list[tuple[float, float]]) -> bool:
    inside = False
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _colour(x: float, y: float) -> tuple[int, int, int, int] | None:
    found = None
    for kind, geometry, rgb in SHAPES:
        inside = _in_rrect if kind == "rrect" else _in_poly
        if inside(x, y, geometry):  # type: ignore[operator]
            found = rgb
    return None if found is None else (*found, 255)


def _bitmap(size: int) -> bytes:
    scale, n = 32 / size, 4
    rows = []
    for row in range(size - 1, -1, -1):  # BMP rows run bottom-up
        line = bytearray()
        for col in range(size):
            r = g = b = a = 0
            for i in range(n):
                for j in range(n):
                    hit = _colour((col + (j + 0.5) / n) * scale, (row + (i + 0.5) / n) * scale)
                    if hit is not None:
                        r, g, b, a = r + hit[0], g + hit[1], b + hit[2], a + 255
            covered = a // 255
            if covered:
                line += bytes((b // covered, g // covered, r // covered, a // (n * n)))
            else:
                line += bytes(4)
        rows.append(bytes(line))
    mask = bytes(((size + 31) // 32) * 4 * size)  # transparency comes from the alpha channel
    header = struct.pack("<IiiHHIIiiII", 40, size, size * 2, 1, 32, 0, 0, 0, 0, 0, 0)
    return header + b"".join(rows) + mask


def main() -> None:
    images = [(size, _bitmap(size)) for size in (16, 32)]
    data = struct.pack("<HHH", 0, 1, len(images))
    offset = 6 + 16 * len(images)
    for size, image in images:
        data += struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(image), offset)
        offset += len(image)
    OUT.write_bytes(data + b"".join(image for _, image in images))
    print(OUT)


if __name__ == "__main__":
    main()
