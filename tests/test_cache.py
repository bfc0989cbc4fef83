"""The parse cache: a file is parsed again exactly when its content changed, and a
damaged cache file is rebuilt, never trusted."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from conftest import SEEDS

from newsletter.archive.cache import RACY_NS, catalog
from newsletter.archive.digest import load_archive

DAY = """## Daily Papers (2024-06-03)

### [A paper](https://arxiv.org/abs/2406.00001)
Vote: {votes}
- First point.
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "digests"
    shutil.copytree(SEEDS, target)
    return target


def _age(path: Path, seconds: float = 60) -> None:
    """Make ``path`` look written well before any scan (out of the racy window)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def _age_all(folder: Path) -> None:
    for path in folder.iterdir():
        _age(path)


def test_a_warm_scan_parses_nothing_and_loads_what_the_parser_gives(
    tmp_path: Path, folder: Path
) -> None:
    _age_all(folder)
    cache = tmp_path / "cache"
    cold = catalog(cache, [folder])
    assert cold.stats.parsed == len(list(folder.iterdir()))
    warm = catalog(cache, [folder])
    assert (warm.stats.parsed, warm.stats.hashed) == (0, 0)
    assert warm.load() == load_archive(folder)


def test_changed_removed_and_renamed_files(tmp_path: Path, folder: Path) -> None:
    cache = tmp_path / "cache"
    (folder / "extra.md").write_text(DAY.format(votes=3), encoding="utf-8")
    _age_all(folder)
    catalog(cache, [folder])

    # Changed in place (another size).
    (folder / "extra.md").write_text(DAY.format(votes=12345), encoding="utf-8")
    changed = catalog(cache, [folder])
    assert changed.stats.parsed == 1
    assert changed.load().by_date(__import__("datetime").date(2024, 6, 3)).papers[0].votes == 12345

    # Renamed: the same content under another name is not parsed again.
    (folder / "extra.md").rename(folder / "renamed.md")
    renamed = catalog(cache, [folder])
    assert (renamed.stats.parsed, renamed.stats.removed) == (0, 1)
    assert renamed.load() == load_archive(folder)
    assert any(s.endswith("renamed.md") for d in renamed.load().digests for s in d.sources)

    # Removed.
    (folder / "renamed.md").unlink()
    removed = catalog(cache, [folder])
    assert removed.stats.removed == 1
    assert removed.load() == load_archive(folder)


def test_a_file_replaced_with_the_same_size_and_mtime_is_parsed_again(
    tmp_path: Path, folder: Path
) -> None:
    cache = tmp_path / "cache"
    path = folder / "extra.md"
    path.write_text(DAY.format(votes=111), encoding="utf-8")
    _age_all(folder)
    before = path.stat()
    first = catalog(cache, [folder])
    assert first.stats.parsed == len(list(folder.iterdir()))

    replacement = folder / ".tmp"
    replacement.write_text(DAY.format(votes=999), encoding="utf-8")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = catalog(cache, [folder])
    assert again.stats.parsed == 1
    assert again.load() == load_archive(folder)


def test_a_file_touched_without_change_is_hashed_not_parsed(tmp_path: Path, folder: Path) -> None:
    cache = tmp_path / "cache"
    _age_all(folder)
    catalog(cache, [folder])
    path = next(folder.iterdir())
    os.utime(path)
    _age(path)
    touched = catalog(cache, [folder])
    assert (touched.stats.hashed, touched.stats.parsed) == (1, 0)


def test_a_file_written_just_before_a_scan_is_hashed_again(tmp_path: Path, folder: Path) -> None:
    """Same-tick rewrites could keep the whole stat: files as new as the scan are
    checked by content on the next one."""
    cache = tmp_path / "cache"
    path = folder / "extra.md"
    path.write_text(DAY.format(votes=1), encoding="utf-8")
    first = catalog(cache, [folder])
    assert first.stats.parsed >= 1
    again = catalog(cache, [folder])
    assert again.stats.hashed >= 1 and again.stats.parsed == 0
    assert RACY_NS >= 1_000_000_000


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data.replace(b'"format":1', b'"format":0', 1),
        lambda data: data[:-10] + b"0123456789",
        lambda data: b"",
        lambda data: b"\x80\x81 not json at all",
    ],
    ids=["truncated", "other-version", "edited", "empty", "garbage"],
)
def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, folder: Path, damage: object) -> None:
    cache = tmp_path / "cache"
    _age_all(folder)
    catalog(cache, [folder])
    files = [*cache.glob("index-*.json"), *(cache / "parsed").glob("*.json")]
    assert len(files) > 1
    for path in files:
        path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    rebuilt = catalog(cache, [folder])
    assert rebuilt.stats.parsed == len(list(folder.iterdir()))
    assert rebuilt.load() == load_archive(folder)
    assert catalog(cache, [folder]).stats.parsed == 0


def test_a_damaged_parsed_copy_alone_is_parsed_again_on_load(tmp_path: Path, folder: Path) -> None:
    cache = tmp_path / "cache"
    _age_all(folder)
    catalog(cache, [folder])
    for path in (cache / "parsed").glob("*.json"):
        path.write_bytes(b'{"format":1,"sha256":"0"}\n[]')
    assert catalog(cache, [folder]).load() == load_archive(folder)


def test_problems_are_kept_with_the_files(tmp_path: Path, folder: Path) -> None:
    cache = tmp_path / "cache"
    (folder / "bad.md").write_bytes(b"## Daily Papers (2024-06-03)\n\xc7\xd1\n")
    _age_all(folder)
    cold = catalog(cache, [folder])
    warm = catalog(cache, [folder])
    assert cold.problems == warm.problems == load_archive(folder).problems
    assert len(warm.problems) == 1


def test_a_cold_scan_in_worker_processes_gives_what_a_serial_one_gives(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import newsletter.archive.cache as cache_module

    (folder / "broken.md").write_bytes(b"\xff\xfe not a digest")
    _age_all(folder)
    serial = catalog(tmp_path / "serial", [folder])
    monkeypatch.setattr(cache_module, "PARALLEL_MIN", 2)
    monkeypatch.setattr(cache_module, "usable_cores", lambda: 2)
    parallel = catalog(tmp_path / "parallel", [folder])
    assert parallel.entries == serial.entries
    assert parallel.stats == serial.stats
    assert parallel.load() == load_archive(folder)
    warm = catalog(tmp_path / "parallel", [folder])
    assert (warm.stats.parsed, warm.stats.hashed) == (0, 0)
    assert warm.entries == serial.entries


def test_the_scan_walks_the_files_the_parser_would_read_in_its_order(tmp_path: Path) -> None:
    from newsletter.archive.cache import _walk
    from newsletter.archive.digest import digest_files

    root = tmp_path / "digests"
    for rel in ("b.md", "a-b.md", "a/b.md", "a/c/d.md", ".hidden.md", ".git/x.md", "a/.h/y.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(DAY.format(votes=1), encoding="utf-8")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    (root / "link.md").symlink_to(root / "b.md")
    walked = _walk(root)
    assert [path for _, path in walked] == [str(p) for p in digest_files(root)]
    assert [rel for rel, _ in walked] == [str(p.relative_to(root)) for p in digest_files(root)]
    single = root / "b.md"
    assert [path for _, path in _walk(single)] == [str(p) for p in digest_files(single)]


# --- a digest another program rewrites in place ------------------------------------------------

LAST_DAY = "2024-07-31"  # the seeds' last day: the one the feed shows


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """As a program that writes no temporary file: the same file, emptied, then written."""
    with path.open("r+b") as out:
        out.truncate(0)
        out.write(data)


def _feed(tmp_path: Path, folder: Path) -> list[tuple[str, str]]:
    """Build the feeds from ``folder``; (arXiv URL, title) of each entry of the last day."""
    import json

    from newsletter.archive.sources import local_catalog
    from newsletter.config import load_config
    from newsletter.publish.outputs import refresh_feeds

    config = tmp_path / "config.toml"
    config.write_text(f'source = "{folder}"\n', encoding="utf-8")
    cfg = load_config(config, env={})
    refresh_feeds(cfg, local_catalog(cfg))
    items = json.loads((cfg.public_path / "feed.json").read_text(encoding="utf-8"))["items"]
    return [(i["url"], i["title"]) for i in items if i["date_published"].startswith(LAST_DAY)]


def test_a_digest_rewritten_in_place_keeps_its_last_good_version_until_whole(
    tmp_path: Path, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = next(p for p in folder.iterdir() if f"({LAST_DAY})" in p.read_text(encoding="utf-8"))
    _age_all(folder)
    before = _feed(tmp_path, folder)
    assert len(before) == 10 and before[0][1].startswith("Meltemi")
    new = path.read_bytes().replace(b"[Meltemi:", b"[Meltemi 2:")
    # Half of it: cut in the middle of a line, as a reader can catch a writer.
    cut = new.index(b"\nVote: 18") + 4
    for partial in (b"", new[:cut]):
        caplog.clear()
        _rewrite_in_place(path, partial)
        assert _feed(tmp_path, folder) == before  # the last good version, not a gap
        assert f"{path} looks half-written" in caplog.text
        assert "keeping its last good version, 10 papers, until it is whole" in caplog.text
        assert catalog(tmp_path / "cache", [folder]).problems == ()  # a warning, not an error

    # The rest: read again at once, with its change.
    caplog.clear()
    with path.open("ab") as out:
        out.write(new[cut:])
    whole = _feed(tmp_path, folder)
    assert [url for url, _ in whole] == [url for url, _ in before]
    assert whole[0][1].startswith("Meltemi 2") and "half-written" not in caplog.text

    # A person's edit, whole: the top paper removed, in place. Fewer papers, but complete
    # and settled: taken as it is.
    text = new.decode("utf-8")
    top = text.index("### [Meltemi 2")
    edited = text[:top] + text[text.index("### ", top + 4) :]
    _rewrite_in_place(path, edited.encode("utf-8"))
    after = _feed(tmp_path, folder)
    assert [url for url, _ in after] == [url for url, _ in before][1:]
    assert "half-written" not in caplog.text


def test_a_digest_left_cut_off_for_long_is_read_as_it_is(tmp_path: Path, folder: Path) -> None:
    """Only a fresh half is a writer's: one left for a while is what someone made of it."""
    path = next(p for p in folder.iterdir() if f"({LAST_DAY})" in p.read_text(encoding="utf-8"))
    _age_all(folder)
    cache = tmp_path / "cache"
    assert catalog(cache, [folder]).papers_on(dt.date(2024, 7, 31)) == 10
    data = path.read_bytes()
    _rewrite_in_place(path, data[: data.index(b"\nVote: 18") + 4])
    _age(path, 3600)
    stale = catalog(cache, [folder])
    assert stale.papers_on(dt.date(2024, 7, 31)) == 5
    assert [p.message for p in stale.problems] == ["file ends mid-line (truncated?)"]


def test_a_digest_still_being_written_is_read_again_once_it_stops_changing(
    tmp_path: Path, folder: Path
) -> None:
    """Cut between two papers, a half reads like a file with fewer papers: only its stat
    still moving tells it from a person's edit."""
    from newsletter.archive.cache import FileEntry, _parse_path
    from newsletter.archive.settle import cut_short, settle

    path = next(p for p in folder.iterdir() if f"({LAST_DAY})" in p.read_text(encoding="utf-8"))
    _age_all(folder)
    cache = tmp_path / "cache"
    (old,) = [e for e in catalog(cache, [folder]).entries if e.path == str(path)]
    data = path.read_bytes()
    cut = data.index(b"\n### ", len(data) // 2) + 1

    def read_again(name: str) -> FileEntry:
        return _parse_path(cache, name)

    _rewrite_in_place(path, data[:cut])
    half = _parse_path(cache, str(path))
    assert cut_short(half, old) == ("5 papers where it had 10", False)
    with path.open("ab") as out:  # the writer goes on before the file is looked at again
        out.write(data[cut:])
    (whole,) = settle([(half, old)], read_again, lambda _: True)
    assert whole.sha256 == old.sha256 and sum(len(p) for _, p in whole.days) == 10

    # The same half, left as it is: taken as it is, as a person's edit would be.
    _rewrite_in_place(path, data[:cut])
    half = _parse_path(cache, str(path))
    assert settle([(half, old)], read_again, lambda _: True) == [half]
