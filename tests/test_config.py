"""Settings: defaults < config.toml < environment < flags, validated with one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from newsletter.config import Config, ConfigError, duration_seconds, load_config
from newsletter.config.settings import _NOT_KEYS

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_toml_equals_the_embedded_defaults() -> None:
    shipped = load_config(ROOT / "config.toml", env={})
    for field in dataclasses.fields(Config):
        if field.name not in _NOT_KEYS:
            assert getattr(shipped, field.name) == getattr(Config(), field.name), field.name


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, 'top_n_daily = 5\ntop_n_weekly = 7\n[smtp]\nhost = "file.example"\n')
    env = {"NEWSLETTER_TOP_N_WEEKLY": "8", "NEWSLETTER_SMTP__HOST": "env.example"}
    cfg = load_config(path, env=env, overrides={"smtp.host": "flag.example"})
    assert cfg.top_n_daily == 5  # file over default
    assert cfg.top_n_weekly == 8  # env over file
    assert cfg.smtp.host == "flag.example"  # flag over env
    assert cfg.feed_days == 30  # default


def test_env_values_are_converted_to_the_key_type(tmp_path: Path) -> None:
    env = {
        "NEWSLETTER_SMTP__PORT": "2525",
        "NEWSLETTER_SMTP__VERIFY_CERTIFICATES": "false",
        "NEWSLETTER_SMTP__MAX_PER_SECOND": "12.5",
        "NEWSLETTER_PUBLIC_DIR": "/srv/www",
        "NEWSLETTER_REQUIRE_SERVICES": "1",  # not a key: belongs to the test suite
    }
    cfg = load_config(_write(tmp_path, ""), env=env)
    assert cfg.smtp.port == 2525
    assert cfg.smtp.verify_certificates is False
    assert cfg.smtp.max_per_second == 12.5
    assert cfg.public_path == Path("/srv/www")


def test_a_variable_that_sets_nothing_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A misspelt top-level variable used to be ignored without a word (a misspelt table
    key is an error, as in the file)."""
    env = {
        "NEWSLETTER_TOP_N_DAYLY": "3",
        "NEWSLETTER_SMPT__HOST": "mail.example.org",
        "NEWSLETTER_SMTP_PASWORD": "hunter2",
        "NEWSLETTER_SMTP": "mail.example.org",
        "NEWSLETTER_COLOUR": "blue",
        # The test suite's own: not settings, and not warned about.
        "NEWSLETTER_REQUIRE_SERVICES": "1",
        "NEWSLETTER_TEST_MTA_PORT": "25",
    }
    with caplog.at_level("WARNING", logger="newsletter.config"):
        cfg = load_config(_write(tmp_path, ""), env=env)
    assert (cfg.top_n_daily, cfg.smtp.host, cfg.smtp.password) == (10, "", "")
    assert sorted(r.getMessage() for r in caplog.records) == [
        "NEWSLETTER_COLOUR is not a setting and is ignored; NEWSLETTER_<KEY> sets a "
        "top-level key, NEWSLETTER_<SECTION>__<KEY> a key in a table",
        "NEWSLETTER_SMPT__HOST is not a setting and is ignored; did you mean "
        "NEWSLETTER_SMTP__HOST?",
        "NEWSLETTER_SMTP is not a setting and is ignored; [smtp] is a table: "
        "NEWSLETTER_SMTP__<KEY> sets one of its keys",
        "NEWSLETTER_SMTP_PASWORD is not a setting and is ignored; did you mean "
        "NEWSLETTER_SMTP_PASSWORD?",
        "NEWSLETTER_TOP_N_DAYLY is not a setting and is ignored; did you mean "
        "NEWSLETTER_TOP_N_DAILY?",
    ]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, 'source = "digests"\n'), env={})
    assert cfg.source_path == tmp_path / "digests"
    assert cfg.public_path == tmp_path / "public"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("colour = 1\n", {}, "config.toml: unknown key 'colour'"),
        (
            "[smtp]\nhots = 'x'\n",
            {},
            "config.toml: unknown key 'smtp.hots'; did you mean 'smtp.host'?",
        ),
        ("top_n_dialy = 3\n", {}, "unknown key 'top_n_dialy'; did you mean 'top_n_daily'?"),
        ("[smpt]\nhost = 'x'\n", {}, "unknown key 'smpt'; did you mean 'smtp'?"),
        ("port = 8001\n", {}, "unknown key 'port'; did you mean 'smtp.port' or 'web.port'?"),
        (
            "",
            {"NEWSLETTER_WEB__PROT": "8001"},
            "NEWSLETTER_WEB__PROT: unknown key 'web.prot'; did you mean 'web.port'?",
        ),
        ("top_n_daily = 'ten'\n", {}, "config.toml: top_n_daily must be an integer, got 'ten'"),
        ("[smtp]\nport = 70000\n", {}, "config.toml: smtp.port must be a TCP port, got 70000"),
        ("timezone = 'Mars/Olympus'\n", {}, "config.toml: timezone is not a known time zone"),
        ("smtp = 3\n", {}, "config.toml: [smtp] must be a table"),
        (
            "",
            {"NEWSLETTER_TOP_N_DAILY": "x"},
            "NEWSLETTER_TOP_N_DAILY: top_n_daily must be an integer",
        ),
        ("", {"NEWSLETTER_TIMEZONE": "Nowhere"}, "NEWSLETTER_TIMEZONE: timezone is not a known"),
        ("[smtp]\ntls = 'ssl'\n", {}, "smtp.tls must be none, starttls or implicit"),
        ("[schedule]\nweekly_at = '1 08:00'\n", {}, "schedule.weekly_at must be a day and time"),
        ("base_url = 'example.org'\n", {}, "base_url must be an absolute http(s) URL"),
        ('[email]\nname = "a\\r\\nBcc: x"\n', {}, "email.name must be one line"),
        ("top_n_daily =\n", {}, "config.toml: not valid TOML"),
        ("language = 'jp'\n", {}, "config.toml: language must be one of ko, en, got 'jp'"),
        ("", {"NEWSLETTER_LANGUAGE": "de"}, "NEWSLETTER_LANGUAGE: language must be one of ko, en"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env=env)
    text_of_error = str(info.value)
    assert "\n" not in text_of_error
    assert message in text_of_error.replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize("text", ['secret_key = "x"\n', '[smtp]\npassword = "x"\n'])
def test_secrets_are_refused_in_the_file_and_not_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    assert "read only from the environment" in str(info.value)
    assert '"x"' not in str(info.value)


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    env = {"NEWSLETTER_SECRET_KEY": "k" * 32, "NEWSLETTER_SMTP_PASSWORD": "hunter2"}
    cfg = load_config(_write(tmp_path, ""), env=env)
    assert cfg.secret_key == "k" * 32
    assert cfg.smtp.password == "hunter2"
    assert "hunter2" not in repr(cfg) and "k" * 32 not in repr(cfg)


def test_the_metrics_token_is_a_secret_of_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NEWSLETTER_METRICS_TOKEN: read from the environment only, never shown, checked as a
    bearer token, and a misspelling of it is warned about."""
    from click.testing import CliRunner

    from newsletter.cli import main

    token = "metrics-0123456789-abcdef"
    path = _write(tmp_path, "")
    cfg = load_config(path, env={"NEWSLETTER_METRICS_TOKEN": f" {token}\n"})
    assert cfg.web.metrics_token == token and token not in repr(cfg)
    in_file = tmp_path / "in-file.toml"
    in_file.write_text('[web]\nmetrics_token = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="NEWSLETTER_METRICS_TOKEN") as info:
        load_config(in_file, env={})
    assert "read only from the environment" in str(info.value)
    for bad, why in [("short", "at least 16 bytes"), ("has spaces in it, sixteen", "letters")]:
        with pytest.raises(ConfigError, match=why) as info:
            load_config(path, env={"NEWSLETTER_METRICS_TOKEN": bad})
        assert bad not in str(info.value)
    with caplog.at_level("WARNING", logger="newsletter.config"):
        load_config(path, env={"NEWSLETTER_METRIC_TOKEN": token})
    assert [r.getMessage() for r in caplog.records] == [
        "NEWSLETTER_METRIC_TOKEN is not a setting and is ignored; did you mean "
        "NEWSLETTER_METRICS_TOKEN?"
    ]
    shown = CliRunner().invoke(
        main, ["config", "--config", str(path)], env={"NEWSLETTER_METRICS_TOKEN": token}
    )
    assert shown.exit_code == 0, shown.output
    assert token not in shown.output
    assert '# web.metrics_token = "********"' in shown.stdout


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "feed_days = 3\n")
    assert load_config(None, env={"NEWSLETTER_CONFIG": str(path)}).feed_days == 3
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(None, env={"NEWSLETTER_CONFIG": str(tmp_path / "missing.toml")})


def test_derived_values(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, 'base_url = "https://papers.example.org/hf"\n'), env={})
    assert cfg.site_url == "https://papers.example.org/hf/"
    assert cfg.tag_domain == "papers.example.org"
    assert duration_seconds("30m") == 1800
    assert duration_seconds("2h") == 7200


def test_an_unset_base_url_follows_the_listening_address(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    assert load_config(path, env={}).site_url == "http://127.0.0.1:8000/"
    flags = {"web.host": "0.0.0.0", "web.port": 18400}
    cfg = load_config(path, env={}, overrides=flags)
    assert cfg.site_url == "http://127.0.0.1:18400/"  # reached on loopback
    cfg = load_config(path, env={"NEWSLETTER_WEB__HOST": "::1"}, overrides={"web.port": 9})
    assert cfg.site_url == "http://[::1]:9/"
    # The entry ids' authority does not move with the address: ids stay the same.
    assert cfg.tag_domain == "127.0.0.1"
    # An explicit base_url, from the file or the environment, wins over any flag.
    cfg = load_config(_write(tmp_path, 'base_url = "https://news.example.org"\n'), env={})
    assert cfg.replace(web=dataclasses.replace(cfg.web, port=18400)).site_url == (
        "https://news.example.org/"
    )
    env = {"NEWSLETTER_BASE_URL": "https://env.example.org/"}
    assert load_config(path, env=env, overrides=flags).site_url == "https://env.example.org/"


def test_without_a_seeds_folder_the_shipped_samples_are_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from newsletter.shipped import shipped

    caplog.set_level("INFO", logger="newsletter.config")
    path = _write(tmp_path, 'source = "seeds"\n')  # the default, written or not
    assert load_config(path, env={}).source_path == shipped("seeds")
    assert caplog.messages == [
        f"there is no {tmp_path / 'seeds'} folder: the sample archive shipped with "
        f"newsletter, {shipped('seeds')}, stands in until {tmp_path / 'archive'} holds a "
        "digest of the site's own (or source names a folder of digests)"
    ]
    # A flag means the folder it names; a seeds folder of one's own is read.
    assert load_config(path, env={}, overrides={"source": "seeds"}).source == "seeds"
    (tmp_path / "seeds").mkdir()
    assert load_config(path, env={}).source_path == tmp_path / "seeds"
    other = _write(tmp_path, 'source = "digests"\n')
    assert load_config(other, env={}).source_path == tmp_path / "digests"


def test_a_settings_file_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes("site_title = '주간'\n".encode("cp949"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})


# A rename table as a release would ship it: one top-level key and one in a table.
RENAMES = {"feed_window_days": "feed_days", "schedule.retry_interval": "schedule.retry_every"}


def test_an_old_key_is_accepted_with_a_warning_naming_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, 'feed_window_days = 7\n[schedule]\nretry_interval = "10m"\n')
    with caplog.at_level("WARNING", logger="newsletter.config"):
        cfg = load_config(path, env={}, renames=RENAMES)
    assert cfg.feed_days == 7
    assert cfg.schedule.retry_every == "10m"
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{path}: feed_window_days is now called feed_days; please rename it" in warnings
    assert any("schedule.retry_interval is now called schedule.retry_every" in w for w in warnings)


def test_an_old_key_from_the_environment_and_the_command_line(tmp_path: Path) -> None:
    env = {"NEWSLETTER_FEED_WINDOW_DAYS": "9", "NEWSLETTER_SCHEDULE__RETRY_INTERVAL": "5m"}
    cfg = load_config(_write(tmp_path, ""), env=env, renames=RENAMES)
    assert (cfg.feed_days, cfg.schedule.retry_every) == (9, "5m")
    cfg = load_config(
        _write(tmp_path, ""), env={}, overrides={"feed_window_days": 3}, renames=RENAMES
    )
    assert cfg.feed_days == 3


def test_an_old_key_beside_its_new_name_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "feed_window_days = 7\nfeed_days = 8\n")
    with pytest.raises(ConfigError, match="feed_window_days is the old name of feed_days"):
        load_config(path, env={}, renames=RENAMES)


def test_without_a_rename_an_unknown_key_still_fails(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'feed_window_days'"):
        load_config(_write(tmp_path, "feed_window_days = 7\n"), env={})


def test_editions_override_email_per_language(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[email]\nname = "주간 논문"\nfrom_address = "w@papers.example"\n'
        '[email.en]\nname = "Papers weekly"\n'
        '[email.ko]\nsubject_template = "{name} {week_id}"\n',
    )
    cfg = load_config(path, env={"NEWSLETTER_EMAIL__EN__FROM_NAME": "Papers"})
    en, ko = cfg.email.edition("en"), cfg.email.edition("ko")
    assert (en.name, en.from_name) == ("Papers weekly", "Papers")
    # What [email.en] leaves out: the shipped English default, not the Korean [email] value.
    assert en.subject_template == "{name}, {week_id}: {lead}"
    assert en.contact == "Contact: w@papers.example"
    assert (ko.name, ko.subject_template) == ("주간 논문", "{name} {week_id}")
    assert ko.contact == "문의: w@papers.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[email.en]\nnmae = "x"\n',
            "config.toml: unknown key 'email.en.nmae'; an edition sets name, from_name",
        ),
        ("[email]\nen = 3\n", "config.toml: [email.en] must be a table"),
        (
            '[email.en]\nsubject_template = "{nope}"\n',
            "email.en.subject_template has an unknown placeholder: 'nope'; it may use {year}",
        ),
        (
            '[email.ko]\nfrom_name = "a\\nb"\n',
            "email.ko.from_name must be one line",
        ),
    ],
)
def test_bad_edition_settings_say_which_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), env={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_commands_link_where_a_live_service_listens(tmp_path: Path) -> None:
    """The note is believed only while its process lives and its address answers; a
    service's clean exit removes it, and never another's."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from newsletter.config import (
        LISTENING_FILE,
        forget_listening,
        recall_listening,
        remember_listening,
    )

    cfg = load_config(_write(tmp_path, ""), env={})
    assert recall_listening(cfg) == cfg  # nothing noted yet
    note = cfg.cache_path / LISTENING_FILE
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        remember_listening(cfg.replace(web=dataclasses.replace(cfg.web, port=port)))
        assert recall_listening(cfg).site_url == f"http://127.0.0.1:{port}/"
        # A set base_url wins.
        public = cfg.replace(base_url="https://papers.example.org/")
        assert recall_listening(public).site_url == "https://papers.example.org/"
        # The address answers, but the process that noted it is gone (killed: no clean exit).
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        body = json.loads(note.read_text(encoding="utf-8"))
        note.write_text(json.dumps({**body, "pid": int(gone.stdout)}), encoding="utf-8")
        assert recall_listening(cfg) == cfg
        # Another live process's note is not this process's to remove.
        note.write_text(json.dumps({**body, "pid": os.getppid()}), encoding="utf-8")
        forget_listening(cfg)
        assert note.exists()
        # A damaged note, or one of an older version (a bare address), is ignored.
        for damaged in ("http://[::1:x/\n", f"http://127.0.0.1:{port}/\n", "{}"):
            note.write_text(damaged, encoding="utf-8")
            assert recall_listening(cfg) == cfg
        note.write_text(json.dumps(body), encoding="utf-8")
        assert recall_listening(cfg).site_url == f"http://127.0.0.1:{port}/"
    # The process lives but nothing listens there any more.
    assert recall_listening(cfg) == cfg
    forget_listening(cfg)
    assert not note.exists()


# --- newsletter config: the settings in force and where each came from ------------------------


def _shown(output: str) -> dict[str, tuple[str, str]]:
    """``newsletter config``'s lines by key: (the assignment, the source comment); a
    secret's commented-out line under its key too."""
    found = {}
    for line in output.splitlines():
        body = line.removeprefix("# ")
        if " = " not in body or body.startswith(("The ", "settings ")):
            continue
        assignment, _, comment = body.partition("  # ")
        found[assignment.split(" = ", 1)[0]] = (assignment.rstrip(), comment)
    return found


def test_config_shows_every_setting_with_its_source(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    path = _write(
        tmp_path,
        "# my site\n"
        "top_n_daily = 5\n"
        'source = "digests"\n'
        "\n"
        "[smtp]\n"
        'host = "mail.example.org"   # the relay\n'
        "[email.en]\n"
        'name = "Papers weekly"\n',
    )
    env = {
        "NEWSLETTER_TOP_N_WEEKLY": "8",
        "NEWSLETTER_SMTP_PASSWORD": "hunter2-very-secret",
        "NEWSLETTER_WRITER_API_KEY": "sk-also-secret",
        "NEWSLETTER_DATABASE_URL": "postgresql+psycopg://news:db-pass-secret@db.example/news",
    }
    result = CliRunner().invoke(main, ["config", "--config", str(path)], env=env)
    assert result.exit_code == 0, result.output
    for secret in ("hunter2-very-secret", "sk-also-secret", "db-pass-secret"):
        assert secret not in result.output
    shown = _shown(result.stdout)
    assert shown["top_n_daily"] == ("top_n_daily = 5", f"{path}:2")
    assert shown["source"] == ('source = "digests"', f"{path}:3")
    assert shown["smtp.host"] == ('smtp.host = "mail.example.org"', f"{path}:6")
    assert shown["email.en.name"] == ('email.en.name = "Papers weekly"', f"{path}:8")
    assert shown["top_n_weekly"] == ("top_n_weekly = 8", "NEWSLETTER_TOP_N_WEEKLY")
    assert shown["feed_days"] == ("feed_days = 30", "default")
    assert shown["archive_dir"] == ('archive_dir = "archive"', f"default; {tmp_path / 'archive'}")
    assert shown["database_url"] == (
        'database_url = "postgresql+psycopg://news:********@db.example/news"',
        "NEWSLETTER_DATABASE_URL",
    )
    # Secrets: masked, set or not, and commented out (only the environment holds them).
    assert '# smtp.password = "********"' in result.stdout
    assert shown["smtp.password"][1] == "NEWSLETTER_SMTP_PASSWORD (secret, masked)"
    assert shown["writer.api_key"][0] == 'writer.api_key = "********"'
    assert shown["bounces.password"] == (
        'bounces.password = ""',
        "default: not set (secret: only from NEWSLETTER_BOUNCES_PASSWORD)",
    )
    as_json = CliRunner().invoke(main, ["config", "--config", str(path), "--json"], env=env)
    assert "hunter2-very-secret" not in as_json.output
    rows = {row["key"]: row for row in json.loads(as_json.stdout)}
    assert rows["smtp.host"] == {
        "key": "smtp.host",
        "value": "mail.example.org",
        "source": "file",
        "where": f"{path}:6",
        "secret": False,
    }
    assert rows["smtp.password"]["value"] == "********" and rows["smtp.password"]["secret"]
    # The sources line up on a terminal after Korean values too (Hangul takes two columns).
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines()}
    columns = {
        _columns(lines[key].split("  # ")[0]) for key in ("site_title", "email.name", "feed_days")
    }
    assert len(columns) == 1, [lines[key] for key in ("site_title", "email.name", "feed_days")]


def _columns(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_config_output_loads_back_as_the_same_settings(tmp_path: Path) -> None:
    from newsletter.config.explain import effective_settings, render_settings

    env = {"NEWSLETTER_SECRET_KEY": "k" * 32, "NEWSLETTER_SMTP__PORT": "2525"}
    path = _write(
        tmp_path,
        'source = "digests"\nsite_title = "Tab\\there \\"quoted\\" \\u007f"\n'
        '[email.ko]\nsubject_template = "{name} {week_id}"\n[smtp]\nmax_per_second = 12.5\n',
    )
    cfg = load_config(path, env=env)
    (tmp_path / "again").mkdir()
    again = _write(tmp_path / "again", render_settings(cfg, effective_settings(cfg)))
    # The secret's line is commented out: it still comes from the environment alone.
    assert load_config(again, env={"NEWSLETTER_SECRET_KEY": "k" * 32}) == cfg
    assert load_config(again, env={}) == cfg.replace(secret_key="")


def test_key_lines_reads_statements_as_toml_does() -> None:
    from newsletter.config.explain import key_lines

    text = (
        "# a comment with x = 1\n"  # 1
        "top = 1\n"  # 2
        'doc = """\n'  # 3
        "[fake]\n"  # 4
        'inside = 2"""\n'  # 5
        "after = 'x' # = not a key\n"  # 6
        "  [ smtp ]  # table\n"  # 7
        '"host" = "h"\n'  # 8
        "tls.mode = 'x'\n"  # 9
        "[email.en]\n"  # 10
        "literal = '''\n"  # 11
        "name = no\n"  # 12
        "'''\n"  # 13
        "inline = { a = 1, b = { c = 2 } }\n"  # 14
    )
    assert key_lines(text) == {
        "top": 2,
        "doc": 3,
        "after": 6,
        "smtp.host": 8,
        "smtp.tls.mode": 9,
        "email.en.literal": 11,
        "email.en.inline.a": 14,
        "email.en.inline.b.c": 14,
    }


def test_a_dangling_config_link_is_one_line_naming_it_not_the_defaults(tmp_path: Path) -> None:
    """./config.toml is a link whose target is gone (a moved /etc file, an unmounted
    volume): the command stops, in one line naming the link and its target, rather than
    run on the defaults."""
    from conftest import newsletter_in

    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "etc" / "newsletter.toml")
    with pytest.raises(ConfigError) as refused:
        load_config(link, env={})
    assert str(refused.value) == (
        f"{link}: the config file is a link to {tmp_path}/etc/newsletter.toml, which does not exist"
    )
    result = newsletter_in(tmp_path, "config")
    assert result.returncode == 2 and result.stdout == ""  # a settings mistake
    assert result.stderr.splitlines() == [
        f"error: config.toml: the config file is a link to {tmp_path}/etc/newsletter.toml, "
        "which does not exist"
    ]
