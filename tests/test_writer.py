"""Writing the day's digest against local servers that answer like Hugging Face Daily Papers
and an OpenAI-compatible chat-completions API, failures included: every written file must
read back as the same papers, votes, authors, media and sections."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from conftest import free_port

from newsletter.archive.digest import parse_file
from newsletter.archive.writer import KEYS, WriterError, parse_summary, write_day, writer_policy
from newsletter.cli import main
from newsletter.config import Config, ConfigError, load_config
from newsletter.http import RetryPolicy
from newsletter.models import Media
from newsletter.service.scheduler import JobContext, run_job
from newsletter.store import open_store

DAY = dt.date(2025, 5, 12)
SEOUL = dt.timezone(dt.timedelta(hours=9))
FAST = RetryPolicy(attempts=3, backoff=0.01, max_wait=5.0, timeout=1.0, connect_timeout=1.0)


def item(arxiv_id: str, title: str, votes: int, authors: list[str], thumb: str) -> dict[str, Any]:
    return {
        "paper": {
            "id": arxiv_id,
            "title": title,
            "summary": f"Abstract of {arxiv_id}.\nWe   show things.",
            "upvotes": votes,
            "authors": [{"name": n, "hidden": False} for n in authors],
            "publishedAt": "2025-05-11T10:00:00.000Z",
        },
        "publishedAt": "2025-05-12T01:00:00.000Z",
        "title": title,
        "thumbnail": thumb,
    }


PAPERS = [
    item(
        "2505.00001",
        "Small\n  Models,   Big\nResults",
        12,
        ["Ana Kim", "Bo Lee"],
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2505.00001.png",
    ),
    item(
        "2505.00002",
        "Video Diffusion at Scale",
        40,
        ["Chen Wu", "Dana Park", "Eli Cho"],
        "https://cdn-uploads.huggingface.co/production/uploads/x/demo.mp4",
    ),
    item("2505.00003", "A Third Paper", 7, ["Fay O'Neil"], "/static/thumb 3.png"),
]


def answer_for(title: str) -> dict[str, str]:
    return {
        "What's New": f"{title}의 새로운 점입니다.\n대규모 언어 모델(Large Language Model)을 씁니다.",
        "Technical Details": f"{title}의 기술 세부 사항입니다.",
        "Performance Highlights": f"{title}의 성능입니다.",
    }


@dataclass
class Api:
    """What the servers answer. ``chat_script`` is consumed one entry per chat request
    before the default (a good answer); an entry is (status, body, delay, headers)."""

    papers: dict[str, list[Any]] = field(default_factory=dict)
    papers_script: list[tuple[int, bytes, float, dict[str, str]]] = field(default_factory=list)
    chat_script: list[tuple[int, bytes, float, dict[str, str]]] = field(default_factory=list)
    chat_calls: list[dict[str, Any]] = field(default_factory=list)
    failing_titles: set[str] = field(default_factory=set)
    hang_titles: set[str] = field(default_factory=set)
    html: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def chat_body(content: str, tokens: tuple[int, int] = (100, 50)) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1]},
        }
    ).encode()


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    """Both APIs on one ``http.server`` on a free loopback port: (api, base URL)."""
    state = Api()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, delay: float, headers: dict[str, str]) -> None:
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a timeout test)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/api/daily_papers":
                with state.lock:
                    scripted = state.papers_script.pop(0) if state.papers_script else None
                if scripted:
                    self._send(*scripted)
                    return
                day = parse_qs(parts.query).get("date", [""])[0]
                body = json.dumps(state.papers.get(day, [])).encode()
                self._send(200, body, 0, {"Content-Type": "application/json"})
            elif parts.path.startswith("/html/"):
                text = state.html.get(parts.path[len("/html/") :])
                if text is None:
                    self._send(404, b"", 0, {})
                else:
                    self._send(200, text.encode(), 0, {"Content-Type": "text/html"})
            else:
                self._send(404, b"", 0, {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))
            request["authorization"] = self.headers.get("Authorization")
            with state.lock:
                state.chat_calls.append(request)
                scripted = state.chat_script.pop(0) if state.chat_script else None
            if scripted:
                self._send(*scripted)
                return
            user = request["messages"][1]["content"]
            title = user.split("Title: ", 1)[1].split("\n", 1)[0]
            if title in state.hang_titles:
                time.sleep(30)
            if title in state.failing_titles:
                self._send(500, b'{"error": {"message": "overloaded"}}', 0, {})
                return
            body = chat_body(json.dumps(answer_for(title), ensure_ascii=False))
            self._send(200, body, 0, {"Content-Type": "application/json"})

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.papers[DAY.isoformat()] = list(PAPERS)
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def settings(tmp_path: Path, base: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    (tmp_path / "source").mkdir(exist_ok=True)
    path.write_text(
        f"""source = "source"
[writer]
papers_url = "{base}/api/daily_papers"
base_url = "{base}/v1"
model = "test-model"
requests_per_minute = 0
full_text_url = "{base}/html/{{id}}"
{extra}
""",
        encoding="utf-8",
    )
    return path


def writer_cfg(tmp_path: Path, base: str, extra: str = "") -> Config:
    env = {"NEWSLETTER_WRITER_API_KEY": "sk-test-123"}
    return load_config(settings(tmp_path, base, extra), env=env)


def write(cfg: Config, policy: RetryPolicy = FAST, day: dt.date = DAY) -> Any:
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        return asyncio.run(write_day(cfg, store, day, policy=policy))
    finally:
        store.close()


def read_back(cfg: Config, day: dt.date = DAY) -> list[Any]:
    """The written file as the parser reads it; it must have no problem but papers
    written without a summary."""
    digests, problems = parse_file(cfg.archive_path / f"{day}.md")
    assert [d.date for d in digests] == [day]
    assert all("no summary" in p.message for p in problems), problems
    return list(digests[0].papers)


def assert_written_as_listed(papers: list[Any], listed: list[dict[str, Any]]) -> None:
    """Same papers (upvote order), votes, authors, media and sections as the API gave."""
    ordered = sorted(listed, key=lambda i: -i["paper"]["upvotes"])
    assert [p.arxiv_id for p in papers] == [i["paper"]["id"] for i in ordered]
    for paper, entry in zip(papers, ordered, strict=True):
        title = " ".join(entry["paper"]["title"].split())
        assert paper.title == title
        assert paper.votes == entry["paper"]["upvotes"]
        assert list(paper.authors) == [a["name"] for a in entry["paper"]["authors"]]
        if paper.sections:
            want = answer_for(title)
            assert [(s.label, s.text, s.level) for s in paper.sections] == [
                (key, " ".join(want[key].split()), 0) for key in KEYS
            ]


def test_the_written_digest_reads_back_as_the_list(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    result = write(cfg)
    assert result.status == "written" and result.papers == 3 and result.pending == 0
    papers = read_back(cfg)
    assert_written_as_listed(papers, PAPERS)
    media = {p.arxiv_id: p.media for p in papers}
    assert media["2505.00002"] == Media(
        "video", "https://cdn-uploads.huggingface.co/production/uploads/x/demo.mp4"
    )
    assert media["2505.00001"] == Media(
        "image", "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2505.00001.png"
    )
    # A site-relative thumbnail with a space: absolute, and still one URL on its line.
    assert media["2505.00003"] == Media("image", "https://huggingface.co/static/thumb%203.png")
    text = (cfg.archive_path / f"{DAY}.md").read_text(encoding="utf-8")
    assert text.startswith(f"## Daily Papers ({DAY})\n\n### [Video Diffusion at Scale]")
    assert "[Watch Video](https://cdn-uploads" in text
    assert "Vote: 40\n\nAuthors: Chen Wu, Dana Park, Eli Cho\n\n- **What's New**: " in text
    # The key goes only into the Authorization header; the JSON answer was asked for.
    call = state.chat_calls[0]
    assert call["authorization"] == "Bearer sk-test-123"
    assert call["model"] == "test-model"
    assert call["response_format"] == {"type": "json_object"}
    assert "Abstract of" in call["messages"][1]["content"]
    store = open_store(cfg.database_url, cfg.base_dir)
    row = store.writer_day(DAY)
    store.close()
    assert (row.requests, row.tokens_in, row.tokens_out, row.papers, row.pending) == (
        3,
        300,
        150,
        3,
        0,
    )


def test_the_cache_prevents_a_second_model_call_and_votes_are_updated(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    write(cfg)
    assert len(state.chat_calls) == 3
    again = write(cfg)
    assert len(state.chat_calls) == 3  # every summary from the cache
    assert again.status == "unchanged" and again.cached == 3
    # Later that day: votes moved and a late paper arrived.
    later = [json.loads(json.dumps(i)) for i in PAPERS]
    later[2]["paper"]["upvotes"] = 90
    later.append(item("2505.00004", "Late Paper", 3, ["Gil Han"], ""))
    state.papers[DAY.isoformat()] = later
    result = write(cfg)
    assert len(state.chat_calls) == 4  # the late paper only
    assert (result.summarized, result.cached) == (1, 3)
    papers = read_back(cfg)
    assert_written_as_listed(papers, later)
    assert papers[0].arxiv_id == "2505.00003" and papers[0].votes == 90
    assert papers[-1].media is None


def test_a_paper_summarized_on_an_earlier_day_is_skipped(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    write(cfg)
    next_day = DAY + dt.timedelta(days=1)
    state.papers[next_day.isoformat()] = [
        PAPERS[0],
        item("2505.00009", "New Today", 5, ["Han Yu"], ""),
    ]
    result = write(cfg, day=next_day)
    assert result.earlier == 1
    assert [p.arxiv_id for p in read_back(cfg, next_day)] == ["2505.00009"]


def test_failures_are_retried_until_a_good_answer(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base, "concurrency = 1\nmax_papers = 1\n")
    good = chat_body(json.dumps(answer_for("Video Diffusion at Scale"), ensure_ascii=False))
    missing_key = {k: v for k, v in answer_for("x").items() if k != "Technical Details"}
    state.papers_script = [
        (500, b"", 0, {}),
        (200, b'[{"paper": ', 0, {}),  # cut off: retried
    ]
    state.chat_script = [
        (429, b'{"error": {"message": "rate limited"}}', 0, {"Retry-After": "1"}),
        (500, b"", 0, {}),
        (200, good, 3.0, {}),  # slower than the client's timeout
        (200, b"{not json", 0, {}),
        (200, chat_body(json.dumps(missing_key)), 0, {}),
        (200, chat_body("Sure! Here is the summary."), 0, {}),
        (200, good, 0, {}),
    ]
    policy = RetryPolicy(attempts=7, backoff=0.01, max_wait=5.0, timeout=1.0, connect_timeout=1.0)
    started = time.monotonic()
    result = write(cfg, policy)
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert result.pending == 0 and result.summarized == 1
    assert len(state.chat_calls) == 7
    assert result.requests == 7 and result.failures == 6
    papers = read_back(cfg)
    assert [p.arxiv_id for p in papers] == ["2505.00002"]
    assert [s.label for s in papers[0].sections] == list(KEYS)


def test_a_failed_summary_is_written_without_one_and_retried_next_run(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    state.failing_titles = {"A Third Paper"}
    result = write(cfg, RetryPolicy(attempts=2, backoff=0.01, timeout=1.0))
    assert result.status == "written" and result.pending == 1
    papers = read_back(cfg)
    assert_written_as_listed(papers, PAPERS)
    assert [p.arxiv_id for p in papers if not p.sections] == ["2505.00003"]
    calls = len(state.chat_calls)
    state.failing_titles = set()
    result = write(cfg)
    assert result.pending == 0 and result.summarized == 1
    assert len(state.chat_calls) == calls + 1
    assert all(p.sections for p in read_back(cfg))


def test_write_tells_how_far_the_summaries_are(api: tuple[Api, str], tmp_path: Path) -> None:
    """Papers summarized and papers given up on both count; papers from the cache do not."""
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    state.failing_titles = {"A Third Paper"}
    told: list[tuple[int, int]] = []
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        policy = RetryPolicy(attempts=2, backoff=0.01, timeout=1.0)

        def progress(done: int, total: int) -> None:
            told.append((done, total))

        result = asyncio.run(write_day(cfg, store, DAY, policy=policy, progress=progress))
        assert result.summarized == 2 and result.pending == 1
        assert told == [(0, 3), (1, 3), (2, 3), (3, 3)]
        told.clear()
        state.failing_titles = set()
        result = asyncio.run(write_day(cfg, store, DAY, policy=policy, progress=progress))
        assert (result.summarized, result.cached) == (1, 2)
        assert told == [(0, 1), (1, 1)]
    finally:
        store.close()


def test_an_unavailable_list_writes_nothing(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    state.papers_script = [(503, b"", 0, {})] * 3
    with pytest.raises(WriterError, match="HTTP 503"):
        write(cfg)
    assert not (cfg.archive_path / f"{DAY}.md").exists()


def test_a_refused_key_writes_nothing(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    state.chat_script = [(401, b'{"error": {"message": "Incorrect API key"}}', 0, {})] * 3
    with pytest.raises(WriterError, match="HTTP 401 \\(Incorrect API key\\)"):
        write(cfg)
    assert not (cfg.archive_path / f"{DAY}.md").exists()


def _write_cli(cfg_path: Path, *args: str, key: str = "sk-test-123") -> Any:
    return CliRunner().invoke(
        main,
        ["write", "--config", str(cfg_path), "--date", DAY.isoformat(), *args],
        env={"NEWSLETTER_WRITER_API_KEY": key},
    )


def _one_error_line(result: Any) -> str:
    """The command failed with exactly one line on standard error, and nothing written."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("api_name", ["papers_url", "base_url"])
def test_an_address_nothing_listens_at_is_said_at_once(
    api: tuple[Api, str], tmp_path: Path, api_name: str
) -> None:
    """No backoff for a connection that cannot be made: one line naming the setting and
    its URL, without a second try."""
    state, base = api
    dead = f"http://127.0.0.1:{free_port()}"
    cfg_path = settings(tmp_path, base)
    text = cfg_path.read_text(encoding="utf-8")
    if api_name == "papers_url":
        url = f"{dead}/api/daily_papers"
        cfg_path.write_text(text.replace(f"{base}/api/daily_papers", url), encoding="utf-8")
    else:
        url = f"{dead}/v1"
        cfg_path.write_text(text.replace(f"{base}/v1", url), encoding="utf-8")
    line = _one_error_line(_write_cli(cfg_path))
    assert line.startswith(f"error: cannot connect to writer.{api_name} ({url}): ")
    assert "connection refused" in line
    verbose = _write_cli(cfg_path, "-v")
    assert verbose.exit_code == 1 and "try 2 of" not in verbose.stderr, verbose.stderr
    assert state.chat_calls == []
    assert not (tmp_path / "archive" / f"{DAY}.md").exists()
    # A host that answers no connection at all is given up on well within 10 s.
    cfg = load_config(cfg_path, env={"NEWSLETTER_WRITER_API_KEY": "k"})
    assert writer_policy(cfg).connect_timeout < 10 and not writer_policy(cfg).retry_unreachable


def test_a_host_that_answers_no_connection_is_given_up_at_once(
    api: tuple[Api, str], tmp_path: Path, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A connect timeout is not retried either: the run ends after one connect timeout."""
    _, base = api
    url = f"http://127.0.0.1:{silent_port}/api/daily_papers"
    cfg = writer_cfg(tmp_path, base)
    cfg = cfg.replace(writer=dataclasses.replace(cfg.writer, papers_url=url))
    policy = RetryPolicy(attempts=4, backoff=0.01, timeout=5.0, connect_timeout=0.5)
    with caplog.at_level("INFO"), pytest.raises(WriterError) as caught:
        write(cfg, policy)
    assert str(caught.value) == (
        f"cannot connect to writer.papers_url ({url}): ConnectTimeout: no connection within 0.5 s"
    )
    assert not any("try 2 of" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_the_run_at_the_first_request(
    api: tuple[Api, str], tmp_path: Path, status: int
) -> None:
    state, base = api
    cfg_path = settings(tmp_path, base, "concurrency = 4\n")
    refusal = (status, b'{"error": {"message": "Incorrect API key"}}', 0, {})
    state.chat_script = [refusal] * 10
    line = _one_error_line(_write_cli(cfg_path))
    assert len(state.chat_calls) == 1  # not one a paper
    assert f"HTTP {status} (Incorrect API key) from writer.base_url ({base}/v1)" in line
    assert "NEWSLETTER_WRITER_API_KEY" in line and "sk-test-123" not in line
    assert not (tmp_path / "archive" / f"{DAY}.md").exists()


def test_an_unknown_model_names_writer_model(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg_path = settings(tmp_path, base, "concurrency = 4\n")
    missing = b'{"error": {"message": "The model `test-model` does not exist"}}'
    state.chat_script = [(404, missing, 0, {})] * 10
    line = _one_error_line(_write_cli(cfg_path))
    assert len(state.chat_calls) == 1
    assert 'no model writer.model = "test-model"' in line and "writer.base_url" in line


def test_full_text_is_fetched_and_capped(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base, "full_text = true\nfull_text_budget = 10\nmax_papers = 2\n")
    state.html["2505.00002"] = (
        "<html><head><script>x()</script></head><body><p>Full text of the paper. "
        + "More words. " * 50
        + "</p></body></html>"
    )
    write(cfg)
    users = {
        c["messages"][1]["content"].split("\n")[0]: c["messages"][1]["content"]
        for c in state.chat_calls
    }
    video = users["Title: Video Diffusion at Scale"]
    assert (
        "Paper text:\nFull text of the paper." in video
        and len(video.split("Paper text:\n")[1]) == 40
    )
    # No HTML version on arXiv: the abstract.
    assert "Abstract:\nAbstract of 2505.00001." in users["Title: Small Models, Big Results"]


def _kill_mid_run(cfg_path: Path, state: Api) -> None:
    env = {**os.environ, "NEWSLETTER_WRITER_API_KEY": "sk-test", "NEWSLETTER_CONFIG": str(cfg_path)}
    calls = len(state.chat_calls)
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "write", "--date", DAY.isoformat()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not any("Hang" in c["messages"][1]["content"] for c in state.chat_calls[calls:]):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)  # the other summaries are cached by now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_crash_mid_run_leaves_no_file_or_the_previous_one(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, base = api
    cfg_path = settings(tmp_path, base, "concurrency = 4\n")
    cfg = load_config(cfg_path, env={"NEWSLETTER_WRITER_API_KEY": "sk-test"})
    path = cfg.archive_path / f"{DAY}.md"
    hang = item("2505.00005", "Hang Forever", 1, ["Ian Seo"], "")
    state.hang_titles = {"Hang Forever"}
    state.papers[DAY.isoformat()] = [*PAPERS, hang]
    _kill_mid_run(cfg_path, state)
    assert not path.exists()
    # What was paid for before the crash is kept: the next run asks only for the rest.
    state.hang_titles = set()
    calls = len(state.chat_calls)
    result = write(cfg)
    assert result.cached == 3 and len(state.chat_calls) == calls + 1
    before = path.read_bytes()
    # A later run, killed while a late paper hangs: the complete previous file stays.
    state.hang_titles = {"Hang Again"}
    state.papers[DAY.isoformat()] = [*PAPERS, hang, item("2505.00006", "Hang Again", 2, [], "")]
    _kill_mid_run(cfg_path, state)
    assert path.read_bytes() == before
    assert sorted(p.name for p in cfg.archive_path.iterdir() if not p.name.startswith(".")) == [
        f"{DAY}.md"
    ]


def test_write_dry_run_writes_nothing(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg_path = settings(tmp_path, base)
    result = CliRunner().invoke(
        main,
        ["write", "--config", str(cfg_path), "--date", DAY.isoformat(), "--dry-run"],
        env={"NEWSLETTER_WRITER_API_KEY": ""},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    # The plan is shown, and what would stop the real run is said.
    assert result.stderr == (
        "warning: no API key for the model: set NEWSLETTER_WRITER_API_KEY (it is never read "
        "from the settings file); without it a run stops before the first summary\n"
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2505.00002    40  summarize  Video Diffusion at Scale")
    assert "would write: 3 papers (3 to summarize" in lines[-1]
    assert "nothing written" in lines[-1]
    assert state.chat_calls == []
    assert not (tmp_path / "archive").exists()
    assert not (tmp_path / "newsletter.db").exists()


def test_write_without_a_key_is_a_one_line_error(api: tuple[Api, str], tmp_path: Path) -> None:
    _, base = api
    result = CliRunner().invoke(
        main,
        ["write", "--config", str(settings(tmp_path, base)), "--date", DAY.isoformat()],
        env={"NEWSLETTER_WRITER_API_KEY": ""},
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: no API key for the model: set NEWSLETTER_WRITER_API_KEY"
    )
    assert len(result.stderr.splitlines()) == 1


def test_write_and_status_from_the_command_line(api: tuple[Api, str], tmp_path: Path) -> None:
    _, base = api
    cfg_path = settings(tmp_path, base)
    env = {"NEWSLETTER_WRITER_API_KEY": "sk-secret-key"}
    runner = CliRunner()
    result = runner.invoke(
        main, ["write", "--config", str(cfg_path), "--date", DAY.isoformat(), "-v"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "written to" in result.stdout and "tokens in 300, out 150" in result.stdout
    assert "sk-secret-key" not in result.output
    status = runner.invoke(main, ["status", "--config", str(cfg_path)], env=env)
    assert status.exit_code == 0, status.output
    assert f"  {DAY}: 3 requests (0 failed), tokens in 300, out 150; 3 papers written" in (
        status.stdout
    )


def test_the_daily_job_writes_then_finds_the_digest(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base, "enabled = true\n")
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        ctx = JobContext(cfg, store, b"key", asyncio.Event())
        now = dt.datetime(DAY.year, DAY.month, DAY.day, 9, 0, tzinfo=SEOUL)
        outcome = asyncio.run(run_job(ctx, "daily", now))
    finally:
        store.close()
    assert outcome is not None and outcome.status == "done", outcome
    assert "3 papers" in outcome.detail
    assert len(state.chat_calls) == 3
    assert (cfg.public_path / "feed.atom").exists()


def test_the_key_comes_only_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[writer]\napi_key = "sk-file"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "NEWSLETTER_WRITER_API_KEY" in str(caught.value) and "sk-file" not in str(caught.value)
    path.write_text("", encoding="utf-8")
    cfg = load_config(path, env={"NEWSLETTER_WRITER_API_KEY": "sk-env"})
    assert cfg.writer.api_key == "sk-env" and "sk-env" not in repr(cfg)
    path.write_text('[writer]\nbase_url = "ftp://x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"writer\.base_url must be an absolute http"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON list"),
        ('{"What\'s New": "a", "Technical Details": "b"}', "Performance Highlights"),
        (
            '{"What\'s New": "a", "Technical Details": " ", "Performance Highlights": "c"}',
            "Technical",
        ),
    ],
)
def test_unusable_answers_are_named(content: str, why: str) -> None:
    parsed = parse_summary(content)
    assert isinstance(parsed, str) and why in parsed


def test_a_fenced_answer_is_read() -> None:
    body = json.dumps(answer_for("T"), ensure_ascii=False)
    parsed = parse_summary(f"```json\n{body}\n```")
    assert isinstance(parsed, dict) and parsed["Performance Highlights"] == "T의 성능입니다."


def test_a_paper_left_without_a_summary_makes_the_daily_job_try_again(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base, "enabled = true\nmax_attempts = 1\n")
    state.failing_titles = {"A Third Paper"}
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        ctx = JobContext(cfg, store, b"key", asyncio.Event())
        now = dt.datetime(DAY.year, DAY.month, DAY.day, 9, 0, tzinfo=SEOUL)
        first = asyncio.run(run_job(ctx, "daily", now))
        assert first is not None and first.status == "waiting", first
        assert "1 without a summary" in first.detail
        assert first.retry_at == now + dt.timedelta(minutes=30)
        state.failing_titles = set()
        second = asyncio.run(run_job(ctx, "daily", first.retry_at))
    finally:
        store.close()
    assert second is not None and second.status == "done", second
    assert all(p.sections for p in read_back(cfg))


def test_a_day_another_source_has_is_left_alone(api: tuple[Api, str], tmp_path: Path) -> None:
    state, base = api
    cfg = writer_cfg(tmp_path, base)
    theirs = cfg.source_path / "theirs.md"
    theirs.write_text(
        f"## Daily Papers ({DAY})\n\n### [T](https://arxiv.org/abs/2505.00001)\n\n- 요약\n",
        encoding="utf-8",
    )
    result = write(cfg)
    assert result.status == "present" and str(theirs) in result.detail
    assert state.chat_calls == [] and not (cfg.archive_path / f"{DAY}.md").exists()


def test_a_site_made_by_init_publishes_no_sample_once_write_adds_its_digest(
    api: tuple[Api, str], tmp_path: Path, seeds_archive: Any
) -> None:
    """The shipped samples stand in on a new site, and are gone from every page and feed
    (their pages removed) once `newsletter write` has written the site's own digest."""
    _, base = api
    site = tmp_path / "site"
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(site)]).exit_code == 0
    config = str(site / "config.toml")
    env = _site_env(base)
    public = site / "public"
    first = runner.invoke(main, ["feed", "--config", config], env=env)
    assert first.exit_code == 0, first.output
    assert (public / "issues" / "2024-W31.html").is_file()  # the samples, as published

    written = runner.invoke(main, ["write", "--config", config, "--date", DAY.isoformat()], env=env)
    assert written.exit_code == 0, written.output
    again = runner.invoke(main, ["feed", "--config", config, "-v"], env=env)
    assert again.exit_code == 0, again.output
    assert f"reading digests from {site / 'archive'};" in again.stderr

    samples = {p.arxiv_id for d in seeds_archive.digests for p in d.papers}
    ours = {entry["paper"]["id"] for entry in PAPERS}
    assert samples and not samples & ours
    for name in ("index.html", "index.en.html", "feed.atom", "feed.json", "issues.atom"):
        text = (public / name).read_text(encoding="utf-8")
        assert not [arxiv_id for arxiv_id in samples if arxiv_id in text], name
        assert "2505.00002" in text, name
    week = f"{DAY.isocalendar()[0]}-W{DAY.isocalendar()[1]:02d}"
    assert sorted(p.name for p in (public / "issues").iterdir()) == [
        f"{week}.en.html",
        f"{week}.html",
    ]
    assert sorted(p.name for p in (public / "days").iterdir()) == [f"{DAY}.en.html", f"{DAY}.html"]
    listed = runner.invoke(main, ["digests", "--config", config], env=env)
    assert DAY.isoformat() in listed.stdout and "2024-" not in listed.stdout


def test_a_new_site_writes_a_day_the_shipped_samples_hold(
    api: tuple[Api, str], tmp_path: Path, seeds_archive: Any
) -> None:
    """A sample day is no other source's: the site's own digest of it is written, from
    every paper listed (a sample paper was never sent)."""
    state, base = api
    day = seeds_archive.digests[-1].date
    state.papers[day.isoformat()] = list(PAPERS)
    site = tmp_path / "site"
    runner = CliRunner()
    assert runner.invoke(main, ["init", str(site)]).exit_code == 0
    env = _site_env(base)
    config = str(site / "config.toml")
    result = runner.invoke(main, ["write", "--config", config, "--date", str(day)], env=env)
    assert result.exit_code == 0, result.output
    written = (site / "archive" / f"{day}.md").read_text(encoding="utf-8")
    assert all(entry["paper"]["id"] in written for entry in PAPERS)


def _site_env(base: str) -> dict[str, str]:
    """The environment of a site made by `newsletter init` that writes from ``base``."""
    return {
        "NEWSLETTER_SECRET_KEY": "test-secret-key-of-at-least-32-bytes",
        "NEWSLETTER_WRITER_API_KEY": "sk-test-123",
        "NEWSLETTER_WRITER__PAPERS_URL": f"{base}/api/daily_papers",
        "NEWSLETTER_WRITER__BASE_URL": f"{base}/v1",
        "NEWSLETTER_WRITER__REQUESTS_PER_MINUTE": "0",
    }
