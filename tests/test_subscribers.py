"""Subscriber management: address validation, CSV import and export, the CLI."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from newsletter.app.subscribers import AddressError, export_csv, import_csv, normalize_address
from newsletter.cli import main
from newsletter.errors import NewsletterError
from newsletter.store import open_store


def test_addresses_are_validated_without_dns() -> None:
    assert normalize_address("  Reader@Example.ORG ") == "Reader@example.org"
    for bad in (
        "reader",
        "reader@",
        "a b@example.org",
        "reader@example.org\r\nBcc: x@y.z",
        "독자@example.org",
    ):
        with pytest.raises(AddressError):
            normalize_address(bad)


def test_import_keeps_good_rows_and_reports_bad_ones_with_their_line(tmp_path: Path) -> None:
    store = open_store("sqlite:///news.db", tmp_path)
    csv_file = tmp_path / "readers.csv"
    csv_file.write_text(
        "email,name,lang\n"
        "one@example.org,하나,ko\n"
        "not-an-address,X,ko\n"
        'two@example.org,"Two, Esq.",en\n'
        "three@example.org,,fr\n"
        "ONE@example.org,,\n"
        "four@example.org\n",
        encoding="utf-8",
    )
    report = import_csv(store, csv_file)
    assert (report.added, report.merged) == (3, 1)
    assert [(p.line, p.message.split(":")[0]) for p in report.problems] == [
        (3, "'not-an-address' is not a valid email address"),
        (5, "language must be one of ko, en, got 'fr'"),
    ]
    assert all(p.file == str(csv_file) for p in report.problems)
    out = io.StringIO()
    assert export_csv(store, out) == 3
    assert out.getvalue().splitlines() == [
        "email,name,lang,status",
        "one@example.org,하나,ko,active",
        'two@example.org,"Two, Esq.",en,active',
        "four@example.org,,ko,active",
    ]


def test_import_tells_how_far_it_is_in_lines(tmp_path: Path) -> None:
    store = open_store("sqlite:///news.db", tmp_path)
    csv_file = tmp_path / "readers.csv"
    # Five lines after the header; a quoted name spans two of them, one row is bad.
    csv_file.write_text(
        'email,name\none@example.org,One\ntwo@example.org,"Two\nLines"\nbad,X\n'
        "three@example.org,Three",  # no line break at the end
        encoding="utf-8",
    )
    told: list[tuple[int, int]] = []
    report = import_csv(store, csv_file, progress=lambda *a: told.append(a))
    assert (report.added, len(report.problems)) == (2, 2)  # "Two\nLines": a control character
    assert told == [(0, 5), (1, 5), (3, 5), (4, 5), (5, 5)]


def test_import_needs_an_email_column(tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("address,name\nx@example.org,X\n")
    with pytest.raises(
        NewsletterError, match=r"bad\.csv:1: the header row must name an 'email' column"
    ):
        import_csv(open_store("sqlite:///news.db", tmp_path), csv_file)


def test_a_csv_from_korean_excel_is_one_line_saying_how_to_save_it(tmp_path: Path) -> None:
    """Excel's plain "CSV" on a Korean system is CP949: nothing is imported, and the one
    line says to save it as CSV UTF-8."""
    (tmp_path / "config.toml").write_text('database_url = "sqlite:///news.db"\n')
    csv_file = tmp_path / "readers.csv"
    csv_file.write_bytes("email,name\none@example.org,하나\n".encode("cp949"))
    result = CliRunner().invoke(
        main, ["subscribers", "import", str(csv_file), "--config", str(tmp_path / "config.toml")]
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {csv_file}:2: not UTF-8 (byte 0xc7): it looks like Korean Excel's CP949; "
        'save it in Excel as "CSV UTF-8 (Comma delimited)" and import it again\n'
    )
    assert open_store("sqlite:///news.db", tmp_path).count_subscribers() == {}
    csv_file.write_bytes(b"email\n\xff\xfe@example.org\n")
    with pytest.raises(NewsletterError, match=r"readers\.csv:2: not UTF-8 \(byte 0xff\); save"):
        import_csv(open_store("sqlite:///news.db", tmp_path), csv_file)


def test_cli_add_list_remove_status(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(
            main,
            [*args[:2], "--config", str(config), *args[2:]]
            if args[0] == "subscribers"
            else [args[0], "--config", str(config), *args[1:]],
        )
        return result.exit_code, result.output

    assert run("subscribers", "add", "reader@example.org", "--name", "김독자") == (
        0,
        "added: reader@example.org (ko, active)\n",
    )
    code, output = run("subscribers", "add", "bad@")
    assert code == 1 and output.startswith("error: 'bad@' is not a valid email address")
    assert run("subscribers", "list")[1] == (
        "email\tname\tlang\tstatus\twhy\nreader@example.org\t김독자\tko\tactive\n"
    )
    assert run("subscribers", "remove", "READER@example.org")[0] == 0
    assert (
        run("subscribers", "list", "--status", "unsubscribed")[1]
        .splitlines()[1]
        .startswith("reader@example.org")
    )
    assert (
        run("subscribers", "list", "--status", "bounced")[1] == "email\tname\tlang\tstatus\twhy\n"
    )
    assert run("subscribers", "remove", "nobody@example.org")[0] == 1
    code, output = run("status", "--week", "2024-W05")
    assert code == 0 and "not sent yet" in output and "unsubscribed 1" in output


def test_a_row_the_csv_module_cannot_read_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    store = open_store("sqlite:///news.db", tmp_path)
    csv_file = tmp_path / "big.csv"
    csv_file.write_text(
        "email,name\nbefore@example.org,A\nhuge@example.org,"
        + "B" * 200_000
        + "\nafter@example.org,C\n"
    )
    report = import_csv(store, csv_file)
    assert report.added == 2
    assert [(p.line, p.message.split(":")[0]) for p in report.problems] == [(3, "not valid CSV")]


def test_names_with_control_characters_are_refused() -> None:
    from newsletter.app.subscribers import check_name

    for bad in ("a\x7fb", "a\x85b", "a\tb", "a\r\nBcc: x"):
        with pytest.raises(AddressError):
            check_name(bad)
    assert check_name(" 김독자 ") == "김독자"


def test_a_name_with_encoded_words_is_refused_from_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from newsletter.cli import main

    config = tmp_path / "config.toml"
    config.write_text("")
    result = CliRunner().invoke(
        main,
        [
            "subscribers",
            "add",
            "v@example.org",
            "--name",
            "=?utf-8?q?=0D=0ABcc:_x@evil.example?=",
            "--config",
            str(config),
        ],
        env={"NEWSLETTER_SECRET_KEY": "k" * 40},
    )
    assert result.exit_code == 1
    assert "=? or ?=" in result.output


# --- internationalized addresses -------------------------------------------------------------


def test_an_idn_domain_is_kept_in_its_ascii_form_and_a_korean_local_part_refused() -> None:
    from newsletter.app.subscribers import NON_ASCII_LOCAL

    assert normalize_address("reader@한국.kr") == "reader@xn--3e0b707e.kr"
    assert normalize_address("Reader@XN--3E0B707E.kr") == "Reader@xn--3e0b707e.kr"
    assert normalize_address("user@例え.jp") == "user@xn--r8jz45g.jp"
    with pytest.raises(AddressError) as refused:
        normalize_address("독자@한국.kr")
    assert str(refused.value) == f"'독자@한국.kr': {NON_ASCII_LOCAL}"
    assert refused.value.kind == "non_ascii"  # the form says it in the page's language


def test_an_imported_idn_address_is_sent_to_and_the_cli_refuses_what_import_refuses(
    tmp_path: Path, seeds_archive: Any, smtp_server: tuple[Any, int]
) -> None:
    """Import, the CLI and a send over a real SMTP server agree: the IDN domain goes out in
    IDNA form, and an address with Korean before the @ is refused with one reason."""
    from conftest import smtp_cfg

    from newsletter.app.delivery import send_week
    from newsletter.app.subscribers import NON_ASCII_LOCAL
    from newsletter.config import load_config
    from newsletter.select import IsoWeek

    handler, port = smtp_server
    config = tmp_path / "config.toml"
    config.write_text('database_url = "sqlite:///news.db"\n', encoding="utf-8")
    cfg = smtp_cfg(load_config(config, env={}), port)
    store = open_store(cfg.database_url, cfg.base_dir)
    csv_file = tmp_path / "readers.csv"
    csv_file.write_text(
        "email,name\nreader@한국.kr,김독자\n독자@한국.kr,X\nplain@example.org,\n", encoding="utf-8"
    )
    report = import_csv(store, csv_file)
    assert report.added == 2
    assert [(p.line, p.message) for p in report.problems] == [
        (3, f"'독자@한국.kr': {NON_ASCII_LOCAL}")
    ]
    sub = store.get_subscriber(email="reader@xn--3e0b707e.kr")
    assert sub is not None and sub.status == "active"
    result = CliRunner().invoke(
        main, ["subscribers", "add", "독자@한국.kr", "--config", str(config)]
    )
    assert result.exit_code == 1
    assert result.output == f"error: '독자@한국.kr': {NON_ASCII_LOCAL}\n"

    sent = send_week(
        cfg, store, lambda: seeds_archive, IsoWeek(2024, 5), b"test-secret-key-of-at-least-32-bytes"
    )
    assert sent.counts["sent"] == 2 and sent.counts["failed"] == 0
    (data,) = handler.received["reader@xn--3e0b707e.kr"]
    assert b"<reader@xn--3e0b707e.kr>" in data.split(b"\r\n\r\n", 1)[0]
    store.close()
