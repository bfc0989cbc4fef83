"""A synthetic archive built from the seeds: a year of daily digests with every format variant.

Shared by the benchmarks. ``python bench/synthetic.py DIR [DAYS]`` writes one to DIR.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
START = dt.date(2023, 6, 1)
PAPERS_PER_DAY = 16
_ID_RE = re.compile(r"https://arxiv\.org/abs/[0-9.]+")
_IMAGE_RE = re.compile(r"^!\[\]\((.*)\)$", re.M)


def seed_blocks() -> list[str]:
    """Every paper block of the seeds (from its ``###`` line to the next)."""
    blocks: list[str] = []
    for path in sorted(SEEDS.iterdir()):
        text = path.read_text(encoding="utf-8")
        blocks.extend("### " + b.strip() + "\n" for b in text.split("\n### ")[1:])
    return blocks


def _variant(block: str, kind: int) -> str:
    """Rewrite one paper block into one of the format variants of the real archive."""
    lines = block.split("\n")
    media = next((i for i, line in enumerate(lines) if line.startswith("![](")), None)
    if kind == 1 and media is not None:
        lines[media] = "![](/avatars/5f1158120c833276f61f1a84.svg)"
    elif kind == 2 and media is not None:
        lines[media] = "[Watch Video]https://cdn-uploads.huggingface.co/production/uploads/x/v.mp4"
    elif kind == 3 and media is not None:
        lines[media] = (
            "[Watch Video](https://cdn-uploads.huggingface.co/production/uploads/x/v.mp4)\n"
            "<div><video controls src='https://cdn-uploads.huggingface.co/production/uploads/x/v.mp4'"
            ' muted="false"></video></div>'
        )
    elif kind == 4:
        lines = ["Vote: -" if line.startswith("Vote:") else line for line in lines]
    elif kind == 5:
        lines = [line for line in lines if not line.startswith(("Vote:", "Authors:", "![]("))]
    elif kind == 6:
        lines = [
            "Authors: " + repr([a.strip() for a in line[9:].split(",") if a.strip() != "+"])
            if line.startswith("Authors:")
            else line
            for line in lines
        ]
    elif kind == 7:
        bullets = 0
        for i, line in enumerate(lines):
            if line.startswith("- "):
                bullets += 1
                if bullets % 2 == 0:
                    lines[i] = "  " + line
    elif kind == 8:
        n = 0
        for i, line in enumerate(lines):
            if line.startswith("- "):
                n += 1
                lines[i] = f"{n}{'.' if n % 2 else ')'} {line[2:]}"
    elif kind == 9:
        labels = ["***What's New***:", "***Technical Details**:", "**Performance Highlights**:"]
        n = 0
        for i, line in enumerate(lines):
            if line.startswith("- ") and not line.startswith("- *") and n < 3:
                lines[i] = f"- {labels[n]} {line[2:]}"
                n += 1
    elif kind == 10:
        lines[0] = lines[0].replace("[", "[Q&A <b>\t", 1)
    return "\n".join(lines)


def build(days: int = 365, per_day: int = PAPERS_PER_DAY, start: dt.date = START) -> dict[str, str]:
    """File name -> digest text for ``days`` consecutive days from ``start``."""
    blocks = seed_blocks()
    files: dict[str, str] = {}
    serial = 0
    for d in range(days):
        date = start + dt.timedelta(days=d)
        ids: list[str] = []
        body: list[str] = []
        for k in range(per_day):
            serial += 1
            arxiv_id = f"{date:%y%m}.{serial:05d}"
            ids.append(arxiv_id)
            block = blocks[(d * per_day + k) % len(blocks)]
            block = _ID_RE.sub(f"https://arxiv.org/abs/{arxiv_id}", block, count=1)
            body.append(_variant(block, (d + k) % 11))
        text = f"## Daily Papers ({date})\n\n" + "\n".join(body)
        if d % 20 == 0:
            # A later run appended to the same file: two repeats and one new paper.
            again = [b for b in body[:2]]
            serial += 1
            extra = _ID_RE.sub(
                f"https://arxiv.org/abs/{date:%y%m}.{serial:05d}", blocks[0], count=1
            )
            text += f"\n## Daily Papers ({date})\n\n" + "\n".join([*again, extra])
        files[f"{date:%Y-%m-%d}.md"] = text
    return files


def write(folder: Path, days: int = 365) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in build(days).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


if __name__ == "__main__":
    target = write(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 365)
    print(target)
