"""The command line: thin commands over the library, one-line errors, --strict, JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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


# --- how far long work is: a bar on a terminal, a line every few seconds elsewhere ---------------

# A bar's marks: escape codes and the bar itself. Neither may reach a pipe or a file.
ESCAPE = "\x1b"
BAR = "━"


def _newsletter(folder: Path, *args: str, terminal: bool) -> tuple[int, str]:
    """``newsletter ARGS`` in ``folder`` with standard input, output and error all on a
    pseudo-terminal (``terminal``) or all on pipes; its exit code and all it wrote."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios
    import time

    from conftest import service_env

    command = [sys.executable, "-m", "newsletter", *args]
    env = service_env(TERM="xterm-256color", COLUMNS="120")
    if not terminal:
        proc = subprocess.run(
            command, cwd=folder, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )
        return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(
        command, cwd=folder, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if not select.select([leader], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child's end of the terminal is closed
                break
            if not data:
                break
            chunks.append(data)
        return child.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")
    finally:
        child.kill()
        os.close(leader)


def _many_days(folder: Path, days: int) -> None:
    """A digest a day for ``days`` days of 2024, one paper each: two web pages a day."""
    import datetime as dt

    folder.mkdir()
    for i in range(days):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=i)
        (folder / f"{day}.md").write_text(
            f"## Daily Papers ({day})\n\n### [Paper {i}](https://arxiv.org/abs/2401.{i:05d})\n"
            f"Vote: {i}\n- What it does.\n",
            encoding="utf-8",
        )


def test_feed_shows_a_bar_with_counts_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    _many_days(tmp_path / "digests", 120)
    (tmp_path / "config.toml").write_text('source = "digests"\n', encoding="utf-8")
    code, out = _newsletter(tmp_path, "feed", terminal=True)
    assert code == 0, out
    rendered = re.search(r"public: (\d+) web pages rendered", out)
    assert rendered is not None, out
    pages = int(rendered.group(1))
    assert pages >= 240  # over the few hundred that earn a bar
    assert ESCAPE in out and BAR in out
    assert "rendering web pages" in out and f"{pages}/{pages}" in out

    shutil.rmtree(tmp_path / "public")
    code, out = _newsletter(tmp_path, "feed", terminal=False)
    assert code == 0, out
    assert f"public: {pages} web pages rendered" in out
    assert ESCAPE not in out and BAR not in out and f"/{pages}" not in out
    # A slow machine may take a progress line (every few seconds): a line, never a bar.
    assert all(x.startswith("progress: ") for x in out.splitlines() if "rendering" in x)

    # Nothing to render: no bar either, on a terminal.
    code, out = _newsletter(tmp_path, "feed", terminal=True)
    assert code == 0 and "0 web pages rendered" in out and ESCAPE not in out, out


def test_a_small_feed_build_shows_no_bar(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'source = "{SEEDS}"\n', encoding="utf-8")
    code, out = _newsletter(tmp_path, "feed", terminal=True)
    assert code == 0, out
    assert "web pages rendered" in out and ESCAPE not in out and "rendering" not in out


def _readers(path: Path, count: int) -> None:
    lines = ["email,name,lang", *(f"reader{i}@example.org,Reader {i},ko" for i in range(count))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_subscribers_import_shows_a_bar_on_a_terminal_and_nothing_in_a_pipe(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.toml").write_text("", encoding="utf-8")
    _readers(tmp_path / "readers.csv", 600)
    code, out = _newsletter(tmp_path, "subscribers", "import", "readers.csv", terminal=True)
    assert code == 0, out
    assert "600 added, 0 already known, 0 skipped" in out
    assert ESCAPE in out and BAR in out and "importing lines" in out and "600/600" in out

    code, out = _newsletter(tmp_path, "subscribers", "import", "readers.csv", terminal=False)
    assert code == 0, out
    assert "0 added, 600 already known, 0 skipped" in out
    assert ESCAPE not in out and BAR not in out and "/600" not in out


def test_send_shows_a_bar_with_its_tally_on_a_terminal_and_nothing_in_a_pipe(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.toml").write_text(f'source = "{SEEDS}"\n', encoding="utf-8")
    _readers(tmp_path / "readers.csv", 30)
    code, out = _newsletter(tmp_path, "subscribers", "import", "readers.csv", terminal=True)
    assert code == 0 and ESCAPE not in out, out  # 30 lines: no bar
    code, out = _newsletter(tmp_path, "send", "--week", "2024-W31", terminal=True)
    assert code == 0, out
    assert "2024-W31: 30 written to" in out
    assert ESCAPE in out and BAR in out and "30/30" in out
    assert "sending: sent 30 · failed 0 · retrying 0" in out

    code, out = _newsletter(tmp_path, "send", "--week", "2024-W21", terminal=False)
    assert code == 0, out
    assert "2024-W21: 30 written to" in out
    assert ESCAPE not in out and BAR not in out and "/30" not in out


def test_without_a_terminal_progress_is_a_line_every_few_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from newsletter.cli.progress import Meter

    now = [1000.0]
    meter = Meter(every=5.0, clock=lambda: now[0])
    small = meter.track("rendering web pages", at_least=200)
    for done in range(0, 150, 10):
        now[0] += 10
        small(done, 150)  # under the threshold: not a word, however long
    rows = meter.track("importing lines", at_least=100)
    for done, seconds in ((0, 0.0), (100, 2.0), (200, 3.0), (400, 4.0), (500, 1.0)):
        now[0] += seconds
        rows(done, 1000)
    out, err = capsys.readouterr()
    assert out == ""
    # At 5 s: 200 done, 40 a second, 800 left; at 10 s (5 s later, not 4): 500, 50 a second.
    assert err == (
        "progress: importing lines: 200 of 1000 (40.0/s, 20s left)\n"
        "progress: importing lines: 500 of 1000 (50.0/s, 10s left)\n"
    )

    # Timed from its first report, not from when it was set up.
    sending = meter.track("sending")
    now[0] += 60
    sending(1, 21, "sent 1 · failed 0 · retrying 0")
    now[0] += 5
    sending(21, 21, "sent 20 · failed 1 · retrying 0")
    assert capsys.readouterr().err == (
        "progress: sending: sent 20 · failed 1 · retrying 0: 21 of 21 (4.2/s, 0s left)\n"
    )


def test_search_finds_papers_in_korean_english_and_by_id(seeds_dir: Path) -> None:
    code, out, _ = _run("search", "가지치기", "--source", str(seeds_dir))
    assert code == 0
    assert "2407.21018  ThinK" in out and out.strip().endswith("1 paper found for '가지치기'")
    code, out, _ = _run("search", "KV cache", "--source", str(seeds_dir), "--json", "--n", "5")
    found = json.loads(out)
    assert "2407.21018" in [hit["arxiv_id"] for hit in found]
    assert all({"date", "title", "votes", "snippet", "url", "hf_url"} <= set(h) for h in found)
    code, out, _ = _run("search", "Trivedi", "--source", str(seeds_dir), "--json")
    assert [hit["arxiv_id"] for hit in json.loads(out)] == ["2405.10725"]
    code, out, _ = _run("search", "<script>zzqx</script>", "--source", str(seeds_dir))
    assert code == 0 and "0 papers found" in out


def test_the_program_exits_without_searching_the_heap_for_cycles() -> None:
    """The ``newsletter`` console script runs ``cli.entry`` (as ``python -m newsletter``
    does), which runs the command, then freezes the heap: the interpreter's exit then
    skips its search for reference cycles, 0.10-0.15 s after every send."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="newsletter")
    assert script.value == "newsletter.cli:entry"
    code = (
        "import gc, sys\n"
        "from newsletter.cli import entry\n"
        "sys.argv = ['newsletter', '--version']\n"
        "try:\n"
        "    entry()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "0 True"
