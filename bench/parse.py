"""Parse a year of synthetic digests, and tokenize the same text with markdown-it-py.

    python bench/parse.py [DAYS]

Prints the archive's size, the best of several timed runs for each, and the ratio.
Targets: the whole archive in under 0.3 s, at least 10x faster than the tokenizer; and the
whole process ``newsletter digests --json`` (interpreter start-up, imports, the parse cache,
the JSON written out) in at most 0.15x the tokenizer's time on the same files, with the
cache warm (the cold run, which parses everything and fills the cache, is printed too).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthetic import write

from newsletter.archive.digest import load_archive, parse_text

NEWSLETTER = Path(sys.executable).parent / "newsletter"


def best_of(runs: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 365
    from markdown_it import MarkdownIt

    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp) / "archive", days)
        texts = [p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())]
        size = sum(len(t.encode()) for t in texts)
        archive = load_archive(folder)
        assert not archive.problems, archive.problems[:3]
        print(
            f"archive: {len(texts)} files, {size / 1e6:.1f} MB, "
            f"{len(archive.digests)} digests, {archive.paper_count} papers"
        )
        load = best_of(5, lambda: load_archive(folder))
        parse = best_of(5, lambda: [parse_text(t) for t in texts])
        md = MarkdownIt("commonmark")
        tokenize = best_of(3, lambda: [md.parse(t) for t in texts])
        cache = Path(tmp) / "cache"
        command = [str(NEWSLETTER), "digests", "--source", str(folder), "--json"]
        env = {**os.environ, "NEWSLETTER_CACHE_DIR": str(cache), "NEWSLETTER_CONFIG": os.devnull}

        def export() -> None:
            with open(os.devnull, "wb") as sink:
                subprocess.run(command, stdout=sink, env=env, check=True, cwd=tmp)

        def cold() -> None:
            shutil.rmtree(cache, ignore_errors=True)
            export()

        export_cold = best_of(3, cold)
        export_warm = best_of(5, export)
    print(f"load_archive (read + parse + merge): {load * 1000:8.1f} ms")
    print(f"parse_text only (in memory):         {parse * 1000:8.1f} ms")
    print(f"markdown-it-py tokenize only:        {tokenize * 1000:8.1f} ms")
    print(f"ratio tokenize / load_archive:       {tokenize / load:8.1f}x")
    print(f"ratio tokenize / parse_text:         {tokenize / parse:8.1f}x")
    print(f"`newsletter digests --json`, cold cache: {export_cold * 1000:8.1f} ms")
    print(f"`newsletter digests --json`, warm cache: {export_warm * 1000:8.1f} ms")
    print(f"ratio export (cold) / tokenize:      {export_cold / tokenize:8.2f}x")
    print(f"ratio export (warm) / tokenize:      {export_warm / tokenize:8.2f}x")
    print(
        f"target load_archive < 300 ms: {'met' if load < 0.3 else 'MISSED'}; "
        f">= 10x: {'met' if tokenize / load >= 10 else 'MISSED'}; "
        f"export <= 0.15x tokenize: {'met' if export_warm / tokenize <= 0.15 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
