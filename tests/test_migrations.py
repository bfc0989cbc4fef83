"""Schema migrations: a release 0.1 database upgrades with its data, a fresh one matches the
live tables, and migrating is safe to repeat and to start twice at once."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from conftest import FIXTURES

from newsletter import store as store_module
from newsletter.cli import main
from newsletter.migrations import same_server_default
from newsletter.store import Store, StoreError, _alembic_config, head_revision, open_store

HEAD = head_revision()


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    from alembic.script import ScriptDirectory

    from newsletter.store import _alembic_config

    script = ScriptDirectory.from_config(_alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


ALL = _revisions()
AFTER_RELEASE = ALL[1:]  # what a release 0.1 database (stamped 0001) still needs

DUMPS = FIXTURES / "db"
# The tables of release 0.1 and their columns then: what must survive the upgrade.
RELEASE_TABLES = {
    "subscribers": (
        "id email email_key name lang status bounces created_at updated_at confirmed_at "
        "unsubscribed_at"
    ),
    "issues": "id week subject status recipients created_at updated_at finished_at",
    "deliveries": (
        "id issue_id subscriber_id status attempts last_error next_attempt_at message_id "
        "sent_at lease_owner lease_until updated_at"
    ),
    "job_runs": ("id job fire_time status owner attempts next_try_at detail started_at updated_at"),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, or the PostgreSQL test database with a
    fresh ``public`` schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'news.db'}"
    return str(request.getfixturevalue("postgres_url"))


def load_release_0_1(url: str) -> None:
    """Load the dump of a database made by release 0.1 into the empty database at ``url``."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    if engine.dialect.name == "sqlite":
        conn = sqlite3.connect(engine.url.database or "")
        try:
            conn.executescript((DUMPS / "release-0.1.sqlite.sql").read_text(encoding="utf-8"))
        finally:
            conn.close()
    else:
        # One connection, thrown away after: the dump empties its search_path.
        with engine.begin() as conn:
            conn.exec_driver_sql((DUMPS / "release-0.1.postgres.sql").read_text(encoding="utf-8"))
    engine.dispose()


def old_rows(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of release 0.1's tables, as the columns it had."""
    with engine.connect() as conn:
        return {
            table: [
                dict(row._mapping)
                for row in conn.execute(
                    sa.text(f"SELECT {', '.join(columns.split())} FROM {table} ORDER BY id")
                )
            ]
            for table, columns in RELEASE_TABLES.items()
        }


def schema_diff(store: Store) -> list[Any]:
    """What differs between the database and the live tables (empty when they match)."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": same_server_default}
        )
        return list(compare_metadata(context, store_module.metadata)) + partial_diff(conn)


def partial_diff(conn: sa.Connection) -> list[tuple[str, str, bool]]:
    """The indexes that are partial in the live tables and not in the database, or the
    other way round (Alembic's comparison does not look at an index's WHERE)."""
    option = f"{conn.dialect.name}_where"
    inspector = sa.inspect(conn)
    found = {
        ix["name"]: ix.get("dialect_options", {}).get(option) is not None
        for table in store_module.metadata.tables
        for ix in inspector.get_indexes(table)
    }
    return [
        ("partial_index", str(ix.name), partial)
        for table in store_module.metadata.tables.values()
        for ix in table.indexes
        if (partial := ix.dialect_options[conn.dialect.name].get("where") is not None)
        != found.get(str(ix.name), partial)
    ]


@pytest.fixture
def release_db(empty_db: str) -> Iterator[str]:
    load_release_0_1(empty_db)
    yield empty_db


def test_a_release_0_1_database_upgrades_with_its_data(release_db: str, tmp_path: Path) -> None:
    old = open_store(release_db, tmp_path, migrate=False)
    assert old.schema_version() == "0001"
    before = old_rows(old.engine)
    assert [len(before[table]) for table in RELEASE_TABLES] == [6, 1, 5, 2]
    old.close()

    store = open_store(release_db, tmp_path)
    assert store.schema_version() == head_revision() == HEAD
    assert old_rows(store.engine) == before
    assert schema_diff(store) == []
    with store.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("schema_migrations")

    # The data reads back through today's queries.
    kim = store.get_subscriber(email="kim.minji@example.org")
    assert kim is not None and kim.name == "김민지" and kim.email == "Kim.Minji@Example.org"
    assert store.count_subscribers() == {"active": 4, "unsubscribed": 1, "pending": 1}
    issue = store.get_issue("2024-W31")
    assert issue.subject == "[주간 HF 논문] 2024년 31주차" and issue.status == "sending"
    assert store.counts(issue.id) == {
        "queued": 2,
        "sending": 0,
        "sent": 1,
        "failed": 1,
        "skipped": 1,
    }
    assert [(run.job, run.status) for run in store.list_job_runs()] == [
        ("weekly", "done"),
        ("daily", "waiting"),
    ]

    # The new columns are there, empty.
    new_issue_columns = [
        "content_hash",
        "frozen_settings",
        "frozen_at",
        "approved_at",
        "paused_at",
        "paused_reason",
        "resume_at",
        "cancelled_at",
    ]
    assert all(getattr(issue, name) is None for name in new_issue_columns)
    with store.engine.connect() as conn:
        kinds = conn.execute(
            sa.select(
                store_module.deliveries.c.error_kind,
                store_module.deliveries.c.smtp_code,
                store_module.deliveries.c.enhanced_code,
            )
        ).all()
    assert kinds == [(None, None, None)] * 5

    # And new rows go in beside the old ones.
    assert_new_tables_work(store, issue.id)
    sub, created = store.add_subscriber("new@example.org", "새 독자")
    assert created and sub.id == 7
    store.close()


def assert_new_tables_work(store: Store, issue_id: int) -> None:
    """Insert a row into each new table, leaving out what has a default, and read it back."""
    now = store_module.utcnow()
    contents, outbox = store_module.issue_contents, store_module.deliveries
    with store.engine.begin() as conn:
        conn.execute(
            contents.insert().values(
                issue_id=issue_id,
                lang="ko",
                subject="[주간 HF 논문] 2024년 31주차",
                html="<p>안녕하세요</p>",
                text="안녕하세요",
                marker="2024-W31",
            )
        )
        conn.execute(
            outbox.insert().values(
                kind="confirm",
                recipient="new@example.org",
                message_id="<confirm.1@news.example.org>",
                data=b"Subject: =?utf-8?b?7ZmV7J24?=\r\n\r\n\xed\x99\x95\xec\x9d\xb8\r\n",
                created_at=now,
                updated_at=now,
            )
        )
    with store.engine.connect() as conn:
        content = conn.execute(sa.select(contents)).one()
        mail = conn.execute(sa.select(outbox).where(outbox.c.kind == "confirm")).one()
    assert (content.issue_id, content.lang, content.html) == (issue_id, "ko", "<p>안녕하세요</p>")
    assert (content.preheader, content.web_url) == ("", "")
    assert mail.data.endswith(b"\xed\x99\x95\xec\x9d\xb8\r\n")
    assert (mail.status, mail.attempts, mail.next_attempt_at, mail.sent_at) == (
        "queued",
        0,
        None,
        None,
    )
    assert (mail.issue_id, mail.subscriber_id) == (None, None)


def test_a_fresh_database_matches_the_live_tables(empty_db: str, tmp_path: Path) -> None:
    """The test that fails when a table definition changes without a revision."""
    fresh = open_store(empty_db, tmp_path, migrate=False)
    assert fresh.schema_version() is None
    assert fresh.migrate() == ALL
    assert fresh.schema_version() == head_revision()
    assert schema_diff(fresh) == []
    issue = fresh.ensure_issue("2024-W31", "subject")
    assert_new_tables_work(fresh, issue.id)
    fresh.close()


def test_the_check_sees_a_column_without_a_revision(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'news.db'}", tmp_path)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE deliveries DROP COLUMN bounced_at")
    assert [diff[0] for diff in schema_diff(store)] == ["add_column"]
    store.close()


def test_migrating_again_does_nothing(release_db: str, tmp_path: Path) -> None:
    store = open_store(release_db, tmp_path)
    assert store.migrate() == []
    again = open_store(release_db, tmp_path)
    assert again.migrate() == []
    again.close()
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    store.close()


def test_two_processes_starting_at_once_migrate_once(empty_db: str, tmp_path: Path) -> None:
    start = threading.Barrier(2)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        store = open_store(empty_db, tmp_path, migrate=False)
        try:
            start.wait()
            applied.append(store.migrate())
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(applied) == [[], ALL]
    store = open_store(empty_db, tmp_path)
    assert store.schema_version() == head_revision()
    store.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    store = open_store("sqlite:///news.db", tmp_path)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError, match="revision 0099, which this version"):
        open_store("sqlite:///news.db", tmp_path)
    store.close()


def test_the_migrate_command_reports_revisions(tmp_path: Path) -> None:
    load_release_0_1(f"sqlite:///{tmp_path / 'news.db'}")
    config = tmp_path / "config.toml"
    config.write_text('database_url = "sqlite:///news.db"\n', encoding="utf-8")

    def migrate() -> str:
        result = CliRunner().invoke(main, ["migrate", "--config", str(config)])
        assert result.exit_code == 0, result.output
        return result.stdout

    applied = ", ".join(AFTER_RELEASE)
    assert migrate() == f"applied {applied}\ndatabase is at {HEAD} (head)\n"
    assert migrate() == f"database is at {HEAD} (head)\n"


# --- 0007 and 0008: who paused an issue; one outbox -------------------------------------


def test_the_migration_names_who_paused_each_paused_issue(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}", poolclass=sa.NullPool)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0006")
        now = dt.datetime(2024, 8, 5, tzinfo=dt.UTC)
        for week, status, reason, resume_at in (
            ("2024-W01", "paused", "server: cannot connect", now),
            ("2024-W02", "paused", "circuit breaker: 9 of the last 10 recipients", None),
            ("2024-W03", "paused", "paused by the operator", None),
            ("2024-W04", "sending", None, None),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO issues (week, subject, status, paused_reason, resume_at, "
                    "created_at, updated_at) VALUES (:w, 's', :s, :r, :at, :now, :now)"
                ),
                {"w": week, "s": status, "r": reason, "at": resume_at, "now": now},
            )
    engine.dispose()
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        found = {row.week: row.paused_by for row in store.list_issues()}
    finally:
        store.close()
    assert found == {
        "2024-W01": "outage",
        "2024-W02": "breaker",
        "2024-W03": "operator",
        "2024-W04": None,
    }


def test_single_mails_queued_before_the_one_outbox_move_into_it_and_go_out(
    tmp_path: Path,
) -> None:
    """A confirmation queued by the release before the outbox (in the outbound table) is a
    row of the outbox after the migration, and the sender sends it."""
    import asyncio

    from newsletter.config import load_config
    from newsletter.mail.sender import Outbox

    db = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{db}", poolclass=sa.NullPool)
    now = dt.datetime(2024, 8, 5, tzinfo=dt.UTC)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
        for kind, status in (("confirm", "queued"), ("test", "sent")):
            conn.execute(
                sa.text(
                    "INSERT INTO outbound (kind, recipient, message_id, data, status, attempts, "
                    "next_attempt_at, created_at, updated_at) VALUES "
                    "(:k, 'new@example.org', :mid, :data, :s, 0, :now, :now, :now)"
                ),
                {
                    "k": kind,
                    "mid": f"<{kind}.1@news.example.org>",
                    "data": b"To: new@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
                    "s": status,
                    "now": now,
                },
            )
    engine.dispose()
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "sqlite:///{db}"\n', encoding="utf-8")
    cfg = load_config(config, env={})
    store = open_store(cfg.database_url, cfg.base_dir)
    try:
        mails = {m.kind: m for m in store.mails()}
        assert (mails["confirm"].status, mails["test"].status) == ("queued", "sent")
        assert mails["confirm"].recipient == "new@example.org"
        assert mails["confirm"].created_at == now
        tally = asyncio.run(Outbox(cfg, store, b"k" * 32).send_mails())
        assert tally["sent"] == 1
        assert {m.kind: m.status for m in store.mails()} == {"confirm": "sent", "test": "sent"}
        (written,) = (tmp_path / "outbox" / "new").iterdir()
        assert b"Subject: hi" in written.read_bytes()
        with store.engine.connect() as conn:
            assert not sa.inspect(conn).has_table("outbound")
    finally:
        store.close()


# --- 0011: addresses with an internationalized domain -----------------------------------------


def test_idn_domains_stored_by_an_older_import_take_their_ascii_form(tmp_path: Path) -> None:
    """Rows an older import stored with a Unicode domain (which every send then failed)
    take the IDNA form new rows are stored in; one whose new form is taken stays as it is."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}", poolclass=sa.NullPool)
    now = dt.datetime(2024, 8, 5, tzinfo=dt.UTC)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0010")
        for email in ("Reader@한국.kr", "twin@例え.jp", "twin@xn--r8jz45g.jp", "a@example.org"):
            conn.execute(
                sa.text(
                    "INSERT INTO subscribers (email, email_key, name, lang, status, "
                    "created_at, updated_at) VALUES (:e, :k, '', 'ko', 'active', :now, :now)"
                ),
                {"e": email, "k": email.lower(), "now": now},
            )
    engine.dispose()
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        stored = [(s.email, s.status) for s in store.iter_subscribers()]
        assert store.get_subscriber(email="reader@xn--3e0b707e.kr") is not None
    finally:
        store.close()
    assert stored == [
        ("Reader@xn--3e0b707e.kr", "active"),
        ("twin@例え.jp", "active"),
        ("twin@xn--r8jz45g.jp", "active"),
        ("a@example.org", "active"),
    ]


def test_a_database_at_the_newest_revision_is_known_without_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revision files' numbers give the newest revision as Alembic does; a database
    there starts without loading Alembic, one behind still migrates."""
    from newsletter.store.schema import numbered_head

    assert numbered_head() == HEAD
    store = open_store("sqlite:///fast.db", tmp_path)
    assert store._at_head()
    monkeypatch.setattr(command, "upgrade", lambda *a, **k: pytest.fail("Alembic ran"))
    assert store.migrate() == []
    monkeypatch.undo()
    with store.engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "-1")
    assert not store._at_head()
    assert store.migrate() == [HEAD]
    store.close()
