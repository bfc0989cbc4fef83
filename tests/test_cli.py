"""The command line: thin commands over the library, one-line errors, --strict, JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import SEEDS

from newsletter.cli import main

BAD = Path(__file__).resolve().parent / "fixtures" / "bad"


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_digests_table(seeds_dir: Path) -> None:
    code, out, _ = _run("digests", "--source", str(seeds_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "date        papers  votes  top paper"
    assert lines[3] == "2024-05-20       5      6  INDUS: Effective and Efficient Language Mod" + (
        "els for Scientif…"
    )
    assert lines[-1] == "4 digests, 34 papers, 0 problems"
    code, out, _ = _run("digests", "--source", str(seeds_dir / "000_472715385765befd.txt"))
    assert out.splitlines()[-1] == "1 digest, 5 papers, 0 problems"  # counted as written


def test_digests_json_matches_the_documented_shape(seeds_dir: Path) -> None:
    code, out, _ = _run("digests", "--source", str(seeds_dir), "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"digests", "errors"}
    assert data["errors"] == []
    first = data["digests"][2]
    assert first["date"] == "2024-05-20"
    paper = first["papers"][0]
    assert {"arxiv_id", "title", "url", "hf_url", "votes", "authors", "media", "sections"} <= set(
        paper
    )
    assert paper["media"] == {
        "kind": "image",
        "url": "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.10725.png",
    }
    assert paper["sections"][0]["label"] is None
    assert "일반 영역" in paper["sections"][0]["text"]


def test_problems_are_reported_and_strict_fails(tmp_path: Path, seeds_dir: Path) -> None:
    shutil.copy(seeds_dir / "000_472715385765befd.txt", tmp_path)
    shutil.copy(BAD / "cp949.md", tmp_path)
    code, out, err = _run("digests", "--source", str(tmp_path), "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["digests"]) == 1
    assert data["errors"] == [
        {
            "file": str(tmp_path / "cp949.md"),
            "line": 5,
            "message": "not UTF-8 (byte 0xc7); save the file as UTF-8",
        }
    ]
    assert f"error: {tmp_path / 'cp949.md'}:5: not UTF-8" in err
    code, _, err = _run("digests", "--source", str(tmp_path), "--strict")
    assert code == 1
    assert "Traceback" not in err


def test_top_by_date_and_week(seeds_dir: Path) -> None:
    code, out, _ = _run("top", "--source", str(seeds_dir), "--date", "2024-07-31", "--n", "2")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0] == "rank  votes  date        arXiv id     title"
    assert lines[1].startswith("   1     53  2024-07-31  2407.20743   Meltemi")
    code, out, _ = _run("top", "--source", str(seeds_dir), "--week", "2024-W05", "--json")
    data = json.loads(out)
    assert data["week"] == "2024-W05"
    assert [p["rank"] for p in data["papers"]] == list(range(1, 11))
    assert data["papers"][0]["votes"] == 42


def test_top_errors_are_one_line(seeds_dir: Path) -> None:
    code, _, err = _run("top", "--source", str(seeds_dir), "--date", "2024-05-21")
    assert code == 1
    assert err.strip() == f"error: no digest for 2024-05-21 in {seeds_dir}"
    code, _, err = _run("top", "--source", str(seeds_dir), "--week", "2024-W99")
    assert code == 2
    assert "2024 has no ISO week 99" in err
    code, _, err = _run("top", "--source", str(seeds_dir))
    assert code == 2


def test_the_source_must_exist_and_be_digests(tmp_path: Path, seeds_dir: Path) -> None:
    missing = tmp_path / "missing"
    for command in (["digests"], ["digests", "--json"], ["top", "--date", "2024-05-20"]):
        code, out, err = _run(*command, "--source", str(missing))
        assert (code, out) == (1, "")
        assert err == (
            f"error: the source folder {missing} does not exist; --source (or source in the "
            "settings) takes a folder of digests or one digest file\n"
        )
    # One digest file is a one-file archive.
    code, out, _ = _run("digests", "--source", str(seeds_dir / "000_472715385765befd.txt"))
    assert code == 0 and "2024-05-20" in out and "2024-07-31" not in out
    # Any other file is refused in one line, whatever its size.
    settings = tmp_path / "config.toml"
    settings.write_text("site_title = 'x'\n" * 200)
    code, out, err = _run("digests", "--source", str(settings))
    assert (code, out) == (1, "")
    assert err == (
        f"error: {settings} cannot be read as a digest: no '## Daily Papers (YYYY-MM-DD)' "
        "heading; --source takes a folder of digests or one digest file\n"
    )


def test_finding_nothing_says_where_it_looked(seeds_dir: Path) -> None:
    code, _, err = _run("top", "--source", str(seeds_dir), "--week", "2025-W12")
    assert code == 1
    assert err == f"error: no digest in week 2025-W12 (2025-03-17 to 2025-03-23) in {seeds_dir}\n"
    code, _, err = _run("preview", "--source", str(seeds_dir), "--week", "2025-W12")
    assert code == 1
    assert err.endswith(f"no issue to send; looked in {seeds_dir}\n") and err.count("\n") == 1


def test_init_writes_the_shipped_settings_and_never_overwrites(tmp_path: Path) -> None:
    import stat

    site = tmp_path / "site"
    code, out, err = _run("init", str(site))
    assert code == 0, err
    shipped = Path(__file__).resolve().parent.parent / "config.toml"
    assert (site / "config.toml").read_bytes() == shipped.read_bytes()
    assert (site / "archive").is_dir() and (site / "public").is_dir()
    assert stat.S_IMODE(site.stat().st_mode) & 0o005 == 0o005  # a web server reaches public/
    assert out.splitlines() == [
        f"wrote {site / 'config.toml'}, with every setting and its default",
        f"made {site / 'archive'} (the digests `newsletter write` adds) and "
        f"{site / 'public'} (the feeds and web pages)",
        f"next: cd {site} && newsletter run; it reads the sample archive shipped with "
        "newsletter until archive/ holds a digest of your own (`newsletter write` adds "
        "them) or source names a folder of your own digests",
    ]
    # The new site reads the shipped samples until it has digests of its own.
    code, out, _ = _run("digests", "--config", str(site / "config.toml"))
    assert code == 0 and "2024-07-31" in out
    (site / "config.toml").write_text("top_n_daily = 3\n")
    code, out, err = _run("init", str(site))
    assert (code, out) == (1, "")
    assert err == f"error: {site / 'config.toml'} already exists; init leaves it as it is\n"
    assert (site / "config.toml").read_text() == "top_n_daily = 3\n"


def test_a_date_the_calendar_does_not_have_is_said_to_be_so(seeds_dir: Path) -> None:
    for value, why in (
        ("2024-02-30", "2024-02-30 does not exist: February 2024 has 29 days"),
        ("2023-02-29", "2023-02-29 does not exist: February 2023 has 28 days"),
        ("2024-13-01", "2024-13-01 does not exist: there is no month 13"),
        ("2024/02/03", "'2024/02/03' is not a date written YYYY-MM-DD, such as 2024-05-20"),
    ):
        source = ["--source", str(seeds_dir)]
        for command in (["top", *source], ["preview", *source], ["write", "--dry-run"]):
            code, _, err = _run(*command, "--date", value)
            assert code == 2
            assert f"Invalid value for '--date': {why}\n" in err, err
    code, out, _ = _run("top", "--source", str(seeds_dir), "--date", "2024-07-31", "--json")
    assert code == 0 and json.loads(out)["date"] == "2024-07-31"


def test_bad_config_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[smtp]\nhots = 'x'\n")
    code, _, err = _run("digests", "--config", str(path))
    assert code == 2
    assert err.strip() == f"error: {path}: unknown key 'smtp.hots'; did you mean 'smtp.host'?"


def test_config_from_environment_variable(tmp_path: Path, seeds_dir: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'source = "{seeds_dir}"\ntop_n_daily = 1\n')
    code, out, _ = _run("top", "--date", "2024-01-02", env={"NEWSLETTER_CONFIG": str(path)})
    assert code == 0
    assert len(out.strip().splitlines()) == 2  # the header and one paper


def test_a_corrupt_database_is_one_line_naming_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "newsletter.db").write_bytes(b"this is not a database" * 100)
    (tmp_path / "config.toml").write_text("")
    for command in (["status"], ["issues"], ["subscribers", "list"]):
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *command],
            cwd=tmp_path,
            env={**os.environ, "NEWSLETTER_SECRET_KEY": "k" * 40},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert str(tmp_path / "newsletter.db") in lines[0]


def test_verbose_before_or_after_the_command_logs_in_one_format(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('database_url = "sqlite:///news.db"\n')
    config = str(tmp_path / "config.toml")
    for args in (["-v", "migrate", "--config", config], ["migrate", "--config", config, "-v"]):
        (tmp_path / "news.db").unlink(missing_ok=True)
        code, out, err = _run(*args)
        assert code == 0, err
        assert "database is at" in out
        line = next(x for x in err.splitlines() if "applied schema revision 0001" in x)
        assert re.fullmatch(
            r"time=\S+ level=info logger=newsletter\.store\.schema "
            r'msg="applied schema revision 0001"',
            line,
        ), line
    (tmp_path / "news.db").unlink()
    code, _, err = _run("migrate", "--config", config)
    assert code == 0 and err == ""  # warnings only, without -v


def test_preview_open_without_a_browser_says_so(tmp_path: Path, seeds_dir: Path) -> None:
    """No browser to be found (no display, nothing on PATH): one line naming the file."""
    import subprocess
    import sys

    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "BROWSER"))}
    env |= {"PATH": str(empty), "DISPLAY": "", "WAYLAND_DISPLAY": ""}
    env["NEWSLETTER_SECRET_KEY"] = "k" * 40
    (tmp_path / "config.toml").write_text(f'source = "{seeds_dir}"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "newsletter", "preview", "--week", "2024-W05", "--open"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    path = tmp_path / "preview" / "2024-W05.ko.html"
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "preview/2024-W05.ko.html\n"
    assert proc.stderr == (f"warning: no web browser could be started here; open {path} in one\n")
    assert path.is_file()


def test_every_command_closes_the_database_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command's database is closed when the command ends, also when it fails."""
    from newsletter.store import Store

    opened: list[Store] = []
    closed: list[Store] = []
    real_init, real_close = Store.__init__, Store.close

    def init(self: Store, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        opened.append(self)

    def close(self: Store) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(Store, "__init__", init)
    monkeypatch.setattr(Store, "close", close)
    config = tmp_path / "config.toml"
    config.write_text(f'source = "{SEEDS}"\ndatabase_url = "sqlite:///n.db"\n', encoding="utf-8")
    runner = CliRunner()
    for args in (
        ["subscribers", "add", "a@example.org"],
        ["subscribers", "list"],
        ["subscribers", "remove", "nobody@example.org"],  # fails: not subscribed
        ["send", "--week", "2024-W05"],
        ["issues"],
        ["status"],
        ["pause", "--week", "2024-W05"],  # fails: the issue is sent
        ["cancel", "--week", "2024-W01"],  # fails: no such issue
    ):
        before = len(opened)
        result = runner.invoke(main, [*args, "--config", str(config)], catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output
        assert len(opened) > before, args
        assert set(map(id, opened)) == set(map(id, closed)), args
