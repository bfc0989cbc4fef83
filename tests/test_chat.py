"""``newsletter post``: the day's papers in Slack (a thread per day) and Discord, against a
loopback server keeping both services' contracts and limits (conftest.ChatServer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SEEDS, SLACK_TOKEN, ChatServer

from newsletter.app import chat
from newsletter.archive.digest import load_archive
from newsletter.config import Config, load_config
from newsletter.publish.chat import escape_discord, escape_mrkdwn
from newsletter.store import open_store

KEY = "test-secret-key-of-at-least-32-bytes"
DAY = dt.date(2024, 7, 31)
# The seeds' 2024-07-31 in vote order (53, 23, 20, ...): the first three.
TOP = ["2407.20743", "2407.20729", "2407.21018"]


def _config(folder: Path, server: ChatServer, text: str = "", **env: str) -> Config:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        f'source = "{SEEDS}"\nbase_url = "https://news.example.org/"\n'
        f'[slack]\napi_url = "{server.url}/api"\n{text}',
        encoding="utf-8",
    )
    return load_config(path, env={"NEWSLETTER_SECRET_KEY": KEY, **env})


def _slack(folder: Path, server: ChatServer, text: str = 'channel = "C0PAPERS"\n') -> Config:
    return _config(folder, server, text, NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN)


def _post(cfg: Config, day: dt.date = DAY) -> chat.PostReport:
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        return chat.post_day(cfg, store, load_archive(SEEDS), KEY.encode(), day)
    finally:
        store.close()


def _arxiv(post: dict[str, object]) -> str:
    text = str(post.get("text", ""))
    return text.split("https://arxiv.org/abs/", 1)[1].split()[0] if "arxiv.org/abs/" in text else ""


def test_a_day_is_a_message_with_its_papers_in_its_thread_in_vote_order(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    report = _post(_slack(tmp_path, chat_server))
    day, *papers = chat_server.posts
    assert "thread_ts" not in day and day["text"].startswith("2024-07-31 Daily Papers")
    assert "https://huggingface.co/papers?date=2024-07-31" in day["text"]
    assert "https://news.example.org/days/2024-07-31.html" in json.dumps(day["blocks"])
    assert len(papers) == 10 and {p["thread_ts"] for p in papers} == {day["ts"]}
    assert [_arxiv(p) for p in papers][:3] == TOP
    assert papers[0]["text"].startswith("1. Meltemi") and "추천\u00a053" in papers[0]["text"]
    assert chat_server.problems == []
    assert report.posts == {"slack C0PAPERS": 11} and report.queued == {"slack C0PAPERS": 11}


def test_a_second_run_posts_nothing(tmp_path: Path, chat_server: ChatServer) -> None:
    cfg = _slack(tmp_path, chat_server)
    _post(cfg)
    again = _post(cfg)
    assert len(chat_server.posts) == 11
    assert again.queued == {"slack C0PAPERS": 0} and again.posts == {"slack C0PAPERS": 11}


def test_a_429_and_a_500_are_survived(tmp_path: Path, chat_server: ChatServer) -> None:
    chat_server.fail = [429, 500]
    report = _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 3\n'))
    assert [_arxiv(p) for p in chat_server.posts[1:]] == TOP
    assert chat_server.requests == 4 + 2 and report.tally["sent"] == 4


def test_threads_off_posts_every_paper_in_the_channel(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\nthread = false\npapers = 2\n'))
    assert len(chat_server.posts) == 3
    assert all("thread_ts" not in p for p in chat_server.posts)


def test_a_webhook_posts_the_day_as_one_message(tmp_path: Path, chat_server: ChatServer) -> None:
    cfg = _config(
        tmp_path,
        chat_server,
        'channel = "#papers"\n',
        NEWSLETTER_SLACK_WEBHOOK_URL=f"{chat_server.url}/slack-webhook/good",
    )
    report = _post(cfg)
    (message,) = chat_server.posts
    assert message["service"] == "slack-webhook" and "thread_ts" not in message
    assert [a for a in TOP if a in message["text"]] == TOP
    assert chat_server.problems == [] and report.tally["sent"] == 1


def test_discord_posts_ten_embeds_a_message_and_survives_a_429(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    chat_server.fail = [429]
    cfg = _config(
        tmp_path,
        chat_server,
        "[discord]\npapers = 12\nlang = 'en'\n",
        NEWSLETTER_DISCORD_WEBHOOK_URL=f"{chat_server.url}/discord/good",
    )
    _post(cfg, dt.date(2024, 2, 2))  # 11 papers that day
    first, *rest = chat_server.posts
    assert first["content"].startswith("**2024-02-02 Daily Papers**")
    assert rest and all("content" not in m for m in rest)
    # Ten embeds or 6,000 characters a message, whichever comes first (the server checks).
    titles = [e["title"] for m in chat_server.posts for e in m["embeds"]]
    assert [t.split(".")[0] for t in titles] == [str(n) for n in range(1, 12)]
    embed = first["embeds"][0]
    assert embed["url"].startswith("https://arxiv.org/abs/") and embed["title"].startswith("1. ")
    assert "42\u00a0votes" in embed["footer"]["text"] and "Authors:" in embed["footer"]["text"]
    assert embed["thumbnail"]["url"].startswith("https://")
    assert chat_server.problems == [] and first["allowed_mentions"] == {"parse": []}


def test_korean_and_english(tmp_path: Path, chat_server: ChatServer) -> None:
    _post(_slack(tmp_path / "ko", chat_server, 'channel = "C0PAPERS"\npapers = 1\n'))
    _post(_slack(tmp_path / "en", chat_server, 'channel = "C0PAPERS"\npapers = 1\nlang = "en"\n'))
    ko, en = chat_server.posts[1]["text"], chat_server.posts[3]["text"]
    assert "추천\u00a053" in ko and "저자:" in ko and "새로운 점:" in ko
    assert "53\u00a0votes" in en and "Authors:" in en and "What's New:" in en
    assert "2024년 7월 31일" in json.dumps(chat_server.posts[0], ensure_ascii=False)
    assert "July 31, 2024" in json.dumps(chat_server.posts[2])


def _digest(folder: Path, title: str, summary: str, papers: int = 1) -> Path:
    """A digest of ``papers`` papers, each titled ``title`` and summarized ``summary``."""
    source = folder / "digests"
    source.mkdir(parents=True)
    parts = ["## Daily Papers (2024-03-04)\n"]
    for i in range(papers):
        parts.append(
            f"### [{title} {i}](https://arxiv.org/abs/2403.{i:05d})\n\nVote: {100 - i}\n\n"
            f"Authors: Kim Minji, Lee Jun\n\n- **What's New**: {summary}\n"
        )
    (source / "2024-03-04.md").write_text("\n".join(parts), encoding="utf-8")
    return source


def test_markup_in_a_title_arrives_as_written(tmp_path: Path, chat_server: ChatServer) -> None:
    title = "A <b>bold</b> & *starred* model"
    cfg = _config(
        tmp_path,
        chat_server,
        'channel = "C0PAPERS"\n',
        NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN,
        NEWSLETTER_DISCORD_WEBHOOK_URL=f"{chat_server.url}/discord/good",
    )
    source = _digest(tmp_path, title, "요약 <script>alert(1)</script> & 끝")
    cfg = cfg.replace(source=str(source))
    store = open_store(cfg.database_url, cfg.base_dir)
    chat.post_day(cfg, store, load_archive(source), KEY.encode(), dt.date(2024, 3, 4))
    store.close()
    by = {p["service"]: p for p in chat_server.posts if p.get("thread_ts") or "embeds" in p}
    slack = json.dumps(by["slack"], ensure_ascii=False)
    assert "<b>" not in slack and "<script>" not in slack and " & " not in slack
    assert escape_mrkdwn(title) in slack and "&lt;b&gt;bold&lt;/b&gt; &amp; *\u200b" in slack
    discord = by["discord"]["embeds"][0]
    assert discord["title"] == "1. " + escape_discord(title + " 0")
    assert "\\*starred\\*" in discord["title"] and chat_server.problems == []


def test_long_summaries_and_many_papers_keep_to_every_limit(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    summary = ("대규모 언어 모델의 추론 능력을 높이는 새로운 방법을 제안합니다. " * 300).strip()
    source = _digest(tmp_path, "Long", summary, papers=12)
    cfg = _config(
        tmp_path,
        chat_server,
        'channel = "C0PAPERS"\npapers = 12\n[discord]\npapers = 12\n',
        NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN,
        NEWSLETTER_DISCORD_WEBHOOK_URL=f"{chat_server.url}/discord/good",
    ).replace(source=str(source))
    store = open_store(cfg.database_url, cfg.base_dir)
    report = chat.post_day(cfg, store, load_archive(source), KEY.encode(), dt.date(2024, 3, 4))
    store.close()
    assert chat_server.problems == []
    slack = [p for p in chat_server.posts if p["service"] == "slack"]
    discord = [p for p in chat_server.posts if p["service"] == "discord"]
    # Each summary (about 10,000 characters) is split over sections; no text is lost.
    sent = " ".join(b["text"]["text"] for p in slack for b in p["blocks"] if b["type"] == "section")
    assert sent.count("새로운 방법을 제안합니다") == 12 * 300
    assert sum(len(p["embeds"]) for p in discord) >= 12 and len(discord) >= 6
    assert report.tally["failed"] == 0


def _cli(config: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "newsletter", "post", "--config", str(config), *args],
        env={**base, "NEWSLETTER_SECRET_KEY": KEY, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_refused_token_stops_at_once_with_one_line(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _config(tmp_path, chat_server, 'channel = "C0PAPERS"\n')
    proc = _cli(tmp_path / "config.toml", NEWSLETTER_SLACK_TOKEN="xoxb-wrong")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert err.strip().splitlines() == [
        "error: Slack: NEWSLETTER_SLACK_TOKEN was refused (invalid_auth; slack.channel = 'C0PAPERS')"
    ]
    assert chat_server.requests == 1 and chat_server.posts == []


def test_a_gone_discord_webhook_stops_at_once_with_one_line(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _config(tmp_path, chat_server)
    hook = f"{chat_server.url}/discord/bad"
    proc = _cli(tmp_path / "config.toml", "-v", NEWSLETTER_DISCORD_WEBHOOK_URL=hook)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    # -v: information is logged too, and still no line shows the webhook's URL (its secret).
    assert err.strip().splitlines()[-1] == (
        "error: Discord webhook: HTTP 401 (Invalid Webhook Token): "
        "check NEWSLETTER_DISCORD_WEBHOOK_URL"
    )
    assert chat_server.requests == 1 and "discord/bad" not in err


def test_dry_run_prints_the_messages_and_sends_nothing(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _config(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 2\n')
    proc = _cli(tmp_path / "config.toml", "--dry-run", NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = json.loads(out)
    assert [r["key"] for r in records] == [
        "2024-07-31/day",
        "2024-07-31/paper:2407.20743",
        "2024-07-31/paper:2407.20729",
    ]
    assert records[1]["thread"] == "2024-07-31/day" and records[1]["channel"] == "C0PAPERS"
    assert chat_server.requests == 0 and not (tmp_path / "newsletter.db").exists()


def test_sigkill_mid_post_then_a_rerun_leaves_no_paper_missing(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _config(tmp_path, chat_server, 'channel = "C0PAPERS"\n')
    # The fifth post is on the wire (taken by the server, not yet answered) at the kill.
    chat_server.hold_after = 4
    proc = _cli(tmp_path / "config.toml", NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN)
    assert chat_server.holding.wait(60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    chat_server.hold_after = None
    chat_server.release.set()
    deadline = time.monotonic() + 10
    while len(chat_server.posts) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(chat_server.posts) == 5
    again = _cli(tmp_path / "config.toml", NEWSLETTER_SLACK_TOKEN=SLACK_TOKEN)
    _out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    days = [p for p in chat_server.posts if "thread_ts" not in p]
    papers = [_arxiv(p) for p in chat_server.posts if "thread_ts" in p]
    # Every paper arrived, and only the one on the wire at the kill arrived twice.
    assert set(papers) == {
        p.arxiv_id
        for p in load_archive(SEEDS).by_date(DAY).papers  # type: ignore[union-attr]
    }
    assert len(days) == 1 and len(papers) - len(set(papers)) == 1
    assert {p["thread_ts"] for p in chat_server.posts if "thread_ts" in p} <= {
        d["ts"] for d in days
    }


def test_the_daily_job_posts_once_the_digest_is_in(
    tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.service.processes import tick
    from newsletter.service.scheduler import DAILY

    cfg = _slack(tmp_path, chat_server)
    seoul = dt.timezone(dt.timedelta(hours=9))
    morning = dt.datetime(2024, 7, 31, 9, 30, tzinfo=seoul)
    outcome = asyncio.run(tick(cfg, morning))[DAILY]
    assert outcome is not None and outcome.status == "done"
    assert len(chat_server.posts) == 11
    asyncio.run(tick(cfg, morning + dt.timedelta(minutes=30)))
    assert len(chat_server.posts) == 11


def test_a_refused_token_holds_no_mail_back_in_a_running_sender(
    tmp_path: Path, chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """In `run` and `worker` the chat lane's refusal is logged in one line and the rest of
    the outbox still goes; the post waits, due again, and the chat is left alone a while."""
    from newsletter.mail.sender import Outbox

    cfg = _config(
        tmp_path, chat_server, 'channel = "C0PAPERS"\n', NEWSLETTER_SLACK_TOKEN="xoxb-wrong"
    )
    store = open_store(cfg.database_url, cfg.base_dir)
    chat.queue_day(cfg, store, load_archive(SEEDS), DAY)
    mail = store.enqueue_mail("test", "editor@example.org", "<copy@x>", b"Subject: x\r\n\r\nx\r\n")
    outbox = Outbox(cfg, store, KEY.encode())
    mails, _reports = asyncio.run(outbox.drain())
    assert mails["sent"] == 1 and store.mail(mail) is not None
    assert "chat posts: Slack: NEWSLETTER_SLACK_TOKEN was refused" in caplog.text
    posts = store.post_counts("slack", "C0PAPERS", f"{DAY}/")
    assert set(posts) == {"queued"} and chat_server.requests == 1
    # Held: the sender neither tries the chat again nor wakes up for it.
    assert asyncio.run(outbox.next_due()) is None
    asyncio.run(outbox.drain())
    assert chat_server.requests == 1
    store.close()


def test_a_post_that_must_wait_keeps_the_thread_in_order(
    tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack down for one reply: the replies after it wait behind it, even when they are
    due before it, and once it goes the rest follow in vote order."""
    import sqlalchemy as sa

    from newsletter.http import RetryPolicy
    from newsletter.mail import chat as transport

    monkeypatch.setattr(transport, "POLICY", RetryPolicy(attempts=2, backoff=0.01))
    cfg = _slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 3\n')
    # The day's message goes through; the first reply meets a 500 on both tries.
    chat_server.fail = [0, 500, 500]
    first = _post(cfg)
    assert first.tally["deferred"] == 1 and len(chat_server.posts) == 1
    # Its retry is minutes away; the next two replies are due now, and still wait.
    second = _post(cfg)
    assert len(chat_server.posts) == 1 and second.tally["sent"] == 0
    store = open_store(cfg.database_url, cfg.base_dir)
    with store.engine.begin() as conn:
        conn.execute(sa.text("update deliveries set next_attempt_at = '2000-01-01'"))
    store.close()
    _post(cfg)
    assert [_arxiv(p) for p in chat_server.posts[1:]] == TOP


def test_replies_to_a_day_message_that_failed_go_to_the_channel(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    chat_server.refuse = "Daily Papers"
    report = _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 2\n'))
    assert report.tally["failed"] == 1
    assert [_arxiv(p) for p in chat_server.posts] == TOP[:2]
    assert all("thread_ts" not in p for p in chat_server.posts)


def test_a_day_is_posted_once_even_when_its_papers_change(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 2\n'))
    again = _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 5\n'))
    assert len(chat_server.posts) == 3 and again.queued == {"slack C0PAPERS": 0}


def test_a_post_left_unanswered_is_not_sent_again_at_once(
    tmp_path: Path, chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat post is not idempotent: one the service may have taken without answering in
    time waits for the outbox's next try instead of being sent again on the spot."""
    from newsletter.http import RetryPolicy
    from newsletter.mail import chat as transport

    policy = RetryPolicy(attempts=4, backoff=0.01, timeout=0.3, repeat_unanswered=False)
    monkeypatch.setattr(transport, "POLICY", policy)
    chat_server.delay = 0.6
    report = _post(_slack(tmp_path, chat_server, 'channel = "C0PAPERS"\npapers = 1\n'))
    assert chat_server.requests == 1 and report.tally["deferred"] == 1


def test_a_post_goes_only_through_an_open_gate(tmp_path: Path, chat_server: ChatServer) -> None:
    """A post waits for its row's mark like a mail (the transport's gate): closed, nothing
    reaches the service."""
    from newsletter.mail.chat import SLACK_API, ChatTransport, post_data

    cfg = _slack(tmp_path, chat_server)
    store = open_store(cfg.database_url, cfg.base_dir)
    data = post_data(SLACK_API, "day", {"text": "papers"}, None)

    async def send(answer: bool) -> str | None:
        async def gate() -> bool:
            return answer

        transport = ChatTransport(cfg, store)
        try:
            return await transport.send("", "C0PAPERS", data, gate=gate)
        finally:
            await transport.close()

    assert asyncio.run(send(False)) is None
    assert chat_server.requests == 0
    assert asyncio.run(send(True))
    assert [post["text"] for post in chat_server.posts] == ["papers"]
    store.close()
