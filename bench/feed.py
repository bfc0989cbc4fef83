"""Build the feeds from a year of synthetic digests: the 30-day feed, the whole archive,
and the issues feed (the latest finished weeks).

    python bench/feed.py [DAYS]

Prints the best of several timed runs for each feed, its size and the cost per entry,
so that linearity shows. Target: the 30-day feed (Atom) in under 0.1 s.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parse import best_of
from synthetic import PAPERS_PER_DAY, build

from newsletter.archive.digest import merge_digests, parse_text
from newsletter.config import Config
from newsletter.models import Archive, Digest
from newsletter.publish.feed import atom_bytes, feed_entries, json_feed_bytes
from newsletter.publish.issue_feed import issue_entries, issues_atom_bytes, issues_json_bytes


def synthetic_digests(days: int) -> list[Digest]:
    found: list[Digest] = []
    for name, text in build(days).items():
        digests, problems = parse_text(text, name)
        assert not problems, problems[:3]
        found.extend(digests)
    return merge_digests(found)


def report(label: str, digests: list[Digest], cfg: Config) -> float:
    items = feed_entries(digests, cfg)
    n = len(items)
    select = best_of(5, lambda: feed_entries(digests, cfg))
    atom = best_of(5, lambda: atom_bytes(feed_entries(digests, cfg), cfg))
    json = best_of(5, lambda: json_feed_bytes(feed_entries(digests, cfg), cfg))
    atom_size = len(atom_bytes(items, cfg))
    json_size = len(json_feed_bytes(items, cfg))
    print(f"{label}: {n} entries")
    print(f"  select (feed_entries):    {select * 1000:8.1f} ms")
    print(
        f"  Atom  (select + build):   {atom * 1000:8.1f} ms  {atom / n * 1e6:6.1f} us/entry  "
        f"{atom_size / 1e6:6.2f} MB  {atom_size / n:6.0f} B/entry"
    )
    print(
        f"  JSON  (select + build):   {json * 1000:8.1f} ms  {json / n * 1e6:6.1f} us/entry  "
        f"{json_size / 1e6:6.2f} MB  {json_size / n:6.0f} B/entry"
    )
    return atom


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 365
    digests = synthetic_digests(days)
    papers = sum(len(d.papers) for d in digests)
    print(f"archive: {len(digests)} digests, {papers} papers")
    base = Config(base_url="https://example.org/newsletter/", tag_authority="example.org")
    window = report(f"{base.feed_days}-day feed (top {base.top_n_daily})", digests, base)
    whole = base.replace(feed_days=days + 1, top_n_daily=PAPERS_PER_DAY + 1)
    full = report(f"whole archive (top {whole.top_n_daily})", digests, whole)
    n_window = len(feed_entries(digests, base))
    n_full = len(feed_entries(digests, whole))
    ratio = (full / n_full) / (window / n_window)
    print(f"per-entry cost, whole / window: {ratio:.2f} (1.00 is linear)")
    archive, today = Archive(tuple(digests)), digests[-1].date + dt.timedelta(days=7)
    issues = issue_entries(base, archive, today)
    atom = best_of(5, lambda: issues_atom_bytes(issue_entries(base, archive, today), base))
    json = best_of(5, lambda: issues_json_bytes(issue_entries(base, archive, today), base))
    print(f"issues feed: {len(issues)} issues")
    print(
        f"  Atom  (select + build):   {atom * 1000:8.1f} ms  {len(issues_atom_bytes(issues, base)) / 1e6:6.2f} MB"
    )
    print(
        f"  JSON  (select + build):   {json * 1000:8.1f} ms  {len(issues_json_bytes(issues, base)) / 1e6:6.2f} MB"
    )
    print(f"target 30-day Atom feed < 100 ms: {'met' if window < 0.1 else 'MISSED'}")


if __name__ == "__main__":
    main()
