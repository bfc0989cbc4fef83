"""The site's search index: built with the site, read as the client reads it (same
ranking as ``newsletter search``), and rebuilt only where the archive changed."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import SEEDS

from newsletter.app.search import find
from newsletter.archive.sources import local_catalog
from newsletter.config import Config, load_config
from newsletter.publish import outputs
from newsletter.publish.search_text import query_words, rank, shard_of

TODAY = dt.date(2024, 8, 5)


def _cfg(tmp_path: Path) -> Config:
    source = tmp_path / "digests"
    shutil.copytree(SEEDS, source)
    path = tmp_path / "config.toml"
    path.write_text(f'source = "{source}"\n', encoding="utf-8")
    return load_config(path, env={})


def client_rank(public: Path, query: str, n: int | None = None) -> list[str]:
    """What the search page does: read index.json, each segment's docs and the shards of
    the query's terms, decode the postings, rank, and look the winners up by day (the
    first ``n`` papers, each once; all of them without ``n``)."""
    index = json.loads((public / "search/index.json").read_text())
    postings: dict[str, dict[int, bool]] = {}
    votes: list[int] = []
    days: list[str] = []
    where: list[tuple[str, int]] = []
    for year, count, _version in index["segments"]:
        docs = json.loads((public / f"search/{year}/docs.json").read_text())
        offset = len(votes)
        votes += docs["votes"]
        for day, papers in docs["days"]:
            days += [day] * papers
            where += [(day, k) for k in range(papers)]
        assert len(votes) - offset == count
        for _, word_terms in query_words(query):
            for term in word_terms:
                shard = public / f"search/{year}/{shard_of(term, index['shards'])}.json"
                encoded = json.loads(shard.read_text()).get(term, []) if shard.exists() else []
                doc = 0
                for value in encoded:
                    doc += value >> 1
                    postings.setdefault(term, {})[offset + doc] = bool(value & 1)
    ids: dict[str, None] = {}
    rows: dict[str, list[list[str]]] = {}
    for doc, _score in rank(query, postings, len(votes), votes, days):
        day, k = where[doc]
        if day not in rows:
            rows[day] = json.loads((public / f"search/days/{day}.json").read_text())
        ids[rows[day][k][0]] = None
        if len(ids) == n:
            break
    return list(ids)


def test_the_index_ranks_as_the_command_line_does(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    for query in ("가지치기", "언어 모델", "KV 캐시", "kv cache", "2405.10725", "Trivedi", "모델"):
        expected = [hit.entry.arxiv_id for hit in find(cfg, query, 1000)]
        assert expected, query
        assert client_rank(cfg.public_path, query) == expected, query
    assert client_rank(cfg.public_path, "없는말zzqx") == []


def test_a_new_day_rebuilds_its_year_only(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    day = (SEEDS / sorted(p.name for p in SEEDS.iterdir())[0]).read_text(encoding="utf-8")
    (cfg.source_path / "2023.md").write_text(day.replace("2024-05-20", "2023-05-20"), "utf-8")
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    public = cfg.public_path / "search"
    before = {p: p.stat().st_mtime_ns for p in public.rglob("*.json")}
    assert public / "2023/docs.json" in before and public / "2024/docs.json" in before
    later = day.replace("2024-05-20", "2024-08-01").replace("2405.10725", "2408.00001")
    (cfg.source_path / "2024-08-01.md").write_text(later, "utf-8")
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    after = {p: p.stat().st_mtime_ns for p in public.rglob("*.json")}
    changed = {str(p.relative_to(public)) for p in after if before.get(p) != after[p]}
    assert "days/2024-08-01.json" in changed and "2024/docs.json" in changed
    assert not [name for name in changed if name.startswith(("2023/", "days/2023"))]
    assert [h.entry.arxiv_id for h in find(cfg, "2408.00001")] == ["2408.00001"]
    assert client_rank(cfg.public_path, "2408.00001") == ["2408.00001"]
    # Nothing changed: nothing is written.
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    assert {p: p.stat().st_mtime_ns for p in public.rglob("*.json")} == after
    # A day removed from the archive takes its files with it.
    (cfg.source_path / "2023.md").unlink()
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    assert not (public / "2023").exists() and not (public / "days/2023-05-20.json").exists()


def test_a_day_after_the_last_is_appended_as_a_whole_build_makes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = (SEEDS / sorted(p.name for p in SEEDS.iterdir())[0]).read_text(encoding="utf-8")
    # Enough distinct words to fill every shard of 2024: a segment is appended to only
    # with all its shard files in place.
    words = " ".join(f"w{k}" for k in range(4000))
    filled = first.replace("- 일반 영역", f"- {words} 일반 영역", 1)
    # A later day listing the same papers again (``same`` pairs) and a new one.
    later = first.replace("2024-05-20", "2024-08-01").replace("Vote: 6", "Vote: 7", 1)
    later += later.split("\n\n", 1)[1].replace("2405.10725", "2408.00001")

    def site(name: str, days: dict[str, str]) -> Config:
        cfg = _cfg(tmp_path / name)
        for file, text in days.items():
            (cfg.source_path / file).write_text(text, "utf-8")
        return cfg

    cfg = site("appended", {"000_472715385765befd.txt": filled})
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    assert len(list((cfg.public_path / "search/2024").glob("*.json"))) == 256 + 1
    (cfg.source_path / "2024-08-01.md").write_text(later, "utf-8")
    with caplog.at_level(logging.INFO, logger="newsletter.publish.search_index"):
        outputs.build_site(cfg, local_catalog(cfg), TODAY)
    assert "search: added 1 days to 2024" in caplog.text
    whole = site("whole", {"000_472715385765befd.txt": filled, "2024-08-01.md": later})
    outputs.build_site(whole, local_catalog(whole), TODAY)
    # Every file alike but index.json, whose versions hash the digests' paths too.
    appended = cfg.public_path / "search"
    made = {str(p.relative_to(appended)): p.read_bytes() for p in appended.rglob("*.json")}
    expected = whole.public_path / "search"
    wanted = {str(p.relative_to(expected)): p.read_bytes() for p in expected.rglob("*.json")}
    assert len(made) > 256 and made.keys() == wanted.keys()
    assert [n for n in made if made[n] != wanted[n]] == ["index.json"]
    for data in made.values():  # shards are written by orjson: as json writes them
        assert (
            data == json.dumps(json.loads(data), ensure_ascii=False, separators=(",", ":")).encode()
        )
    assert json.loads(made["2024/docs.json"])["same"]
    assert client_rank(cfg.public_path, "2408.00001") == ["2408.00001"]


def test_a_damaged_segment_is_made_whole_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    day = (SEEDS / sorted(p.name for p in SEEDS.iterdir())[0]).read_text(encoding="utf-8")
    shard = sorted((cfg.public_path / "search/2024").glob("[0-9]*.json"))[0]
    shard.write_text("{damaged", encoding="utf-8")
    later = day.replace("2024-05-20", "2024-08-01").replace("2405.10725", "2408.00001")
    (cfg.source_path / "2024-08-01.md").write_text(later, "utf-8")
    outputs.build_site(cfg, local_catalog(cfg), TODAY)
    json.loads(shard.read_text(encoding="utf-8"))
    assert client_rank(cfg.public_path, "2408.00001") == ["2408.00001"]
