"""The database layer on real SQLite and PostgreSQL: migrations, reference data, errors, CLI."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError

from script_ec2.db import engine as engine_module
from script_ec2.db import migrate
from script_ec2.db.engine import connect
from script_ec2.db.models import Base, County, ZipCode
from script_ec2.db.reference import county_names, load_lookup_csv, zip_to_county
from script_ec2.errors import DatabaseUnavailable, SchemaOutOfDate, UsageError
from tests.conftest import Result, free_port

HEAD = "0005"
RUN_UPGRADE = f"database schema at none, code expects {HEAD}: run script-ec2 db upgrade"
Cli = Callable[..., Result]


@pytest.fixture
def open_db() -> Iterator[Callable[..., Engine]]:
    """``connect`` that disposes every engine it made, so PostgreSQL databases can be dropped."""
    engines: list[Engine] = []

    def open_(url: str, **kwargs: Any) -> Engine:
        engine = connect(url, **kwargs)
        engines.append(engine)
        return engine

    yield open_
    for engine in engines:
        engine.dispose()


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        zips = conn.execute(select(func.count()).select_from(ZipCode)).scalar_one()
        counties = conn.execute(select(func.count()).select_from(County)).scalar_one()
    return zips, counties


# -- the packaged lookup ---------------------------------------------------------------------


def test_lookup_csv_has_one_row_per_zip_and_58_counties() -> None:
    rows = load_lookup_csv()
    assert len(rows) == 2657
    assert len({r.zip for r in rows}) == 2657
    assert all(len(r.zip) == 5 and r.zip.isdigit() for r in rows)
    assert min(r.zip for r in rows) == "90001" and max(r.zip for r in rows) == "96162"
    number_of = {r.county: r.number for r in rows}
    assert len(number_of) == 58
    assert sorted(number_of.values()) == list(range(58))
    assert all(number_of[r.county] == r.number for r in rows)
    assert ("95014", "Santa Clara") in {(r.zip, r.county) for r in rows}


# -- migrations on both backends -------------------------------------------------------------


def test_upgrade_from_empty_creates_tables_and_loads_lookup(
    db_url: str, open_db: Callable[..., Engine]
) -> None:
    engine = open_db(db_url, check_schema=False)
    assert set(inspect(engine).get_table_names()) == set()

    assert migrate.upgrade(engine) == (None, HEAD)

    assert {"counties", "zip_codes", "alembic_version"} <= set(inspect(engine).get_table_names())
    assert _counts(engine) == (2657, 58)
    with engine.connect() as conn:
        mapping = zip_to_county(conn)
        names = county_names(conn)
        cities = {code: city for code, city in conn.execute(select(ZipCode.code, ZipCode.city))}
    rows = load_lookup_csv()
    assert mapping == {r.zip: r.county for r in rows}
    assert cities == {r.zip: r.city for r in rows}
    assert mapping["95014"] == "Santa Clara"
    assert all(isinstance(code, str) and len(code) == 5 for code in mapping)
    assert names == sorted({r.county for r in rows}) and len(names) == 58


def test_upgrade_twice_is_idempotent(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    assert migrate.upgrade(engine) == (None, HEAD)
    assert migrate.upgrade(engine) == (HEAD, HEAD)
    assert _counts(engine) == (2657, 58)


def test_status_before_and_after_upgrade(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    before = migrate.status(engine)
    assert before["current"] is None
    assert before["head"] == HEAD == migrate.head_revision()
    assert before["up_to_date"] is False
    assert before["advice"] == RUN_UPGRADE
    assert before["dialect"] == make_url(db_url).get_backend_name()

    migrate.upgrade(engine)
    after = migrate.status(engine)
    assert (after["current"], after["up_to_date"], after["advice"]) == (HEAD, True, "")


def test_models_match_the_migrated_schema(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_to_base_then_upgrade_again(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert migrate.upgrade(engine) == (None, HEAD)
    assert _counts(engine) == (2657, 58)


def test_constraints_are_enforced(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    migrate.upgrade(engine)
    bad_rows = [
        {"code": "00001", "city": "Nowhere", "county_id": 999_999},  # no such county
        {"code": "9501", "city": "Short", "county_id": 1},  # not 5 characters
        {"code": "95014", "city": "Again", "county_id": 1},  # duplicate zip
    ]
    for row in bad_rows:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(ZipCode), row)
    assert _counts(engine) == (2657, 58)


def test_concurrent_upgrades_migrate_once(db_url: str, open_db: Callable[..., Engine]) -> None:
    engines = [open_db(db_url, check_schema=False) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[tuple[str | None, str | None]] = []
    failures: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            barrier.wait()
            results.append(migrate.upgrade(engine))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(e,), daemon=True) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert sorted(results, key=str) == [(HEAD, HEAD)] * 3 + [(None, HEAD)]
    assert _counts(engines[0]) == (2657, 58)


def test_database_ahead_of_code_is_refused(db_url: str, open_db: Callable[..., Engine]) -> None:
    engine = open_db(db_url, check_schema=False)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :rev"), {"rev": "9999"})

    needle = "database schema at 9999, which this script-ec2 does not know"
    with pytest.raises(SchemaOutOfDate, match=needle):
        open_db(db_url)
    with pytest.raises(SchemaOutOfDate, match=needle):
        migrate.upgrade(engine)
    status = migrate.status(engine)
    assert status["up_to_date"] is False and needle in status["advice"]


def test_upgrade_to_an_unknown_revision_is_a_usage_error(
    db_url: str, open_db: Callable[..., Engine]
) -> None:
    engine = open_db(db_url, check_schema=False)
    with pytest.raises(UsageError, match="cannot upgrade the database to 'nope'"):
        migrate.upgrade(engine, "nope")
    assert migrate.status(engine)["current"] is None


# -- SQLite specifics ------------------------------------------------------------------------


def test_sqlite_upgrades_itself_on_first_use(
    tmp_path: Path, open_db: Callable[..., Engine]
) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    engine = open_db(f"sqlite:///{path}")
    assert path.is_file()
    assert migrate.status(engine)["up_to_date"] is True
    assert _counts(engine) == (2657, 58)
    # A second connect finds the schema at head and leaves it alone.
    assert migrate.status(open_db(f"sqlite:///{path}"))["current"] == HEAD


def test_sqlite_connection_settings(tmp_path: Path, open_db: Callable[..., Engine]) -> None:
    engine = open_db(f"sqlite:///{tmp_path / 'x.db'}", check_schema=False)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000


def test_sqlite_ddl_rolls_back_with_its_transaction(
    tmp_path: Path, open_db: Callable[..., Engine]
) -> None:
    # Without this, a migration failing half-way would leave tables behind and block a retry.
    engine = open_db(f"sqlite:///{tmp_path / 'x.db'}", check_schema=False)
    with pytest.raises(RuntimeError, match="abort"), engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
        raise RuntimeError("abort")
    assert "scratch" not in inspect(engine).get_table_names()


@pytest.mark.parametrize("round_", range(5))
def test_sqlite_concurrent_first_use(tmp_path: Path, round_: int) -> None:
    # Repeated because the race (several connections switching a new file to WAL) is narrow.
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    barrier = threading.Barrier(8)
    engines: list[Engine] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            engines.append(connect(url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert failures == []
        assert len(engines) == 8
        assert _counts(engines[0]) == (2657, 58)
    finally:
        for engine in engines:
            engine.dispose()


class _LockedCursor:
    """A cursor whose first ``locked`` WAL switches fail the way SQLite fails them in a race."""

    def __init__(self, locked: int, message: str = "database is locked") -> None:
        self.locked = locked
        self.message = message
        self.calls = 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.calls += 1
        if self.calls <= self.locked:
            raise sqlite3.OperationalError(self.message)


def test_sqlite_wal_switch_retries_a_locked_file() -> None:
    # SQLite may answer "database is locked" here without calling its busy handler.
    cursor = _LockedCursor(locked=3)
    engine_module._use_wal(cursor)
    assert cursor.calls == 4


def test_sqlite_wal_switch_gives_up_at_the_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    cursor = _LockedCursor(locked=10**9)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        engine_module._use_wal(cursor)
    assert 2 <= cursor.calls < 1000


def test_sqlite_wal_switch_does_not_retry_other_errors() -> None:
    cursor = _LockedCursor(locked=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        engine_module._use_wal(cursor)
    assert cursor.calls == 1


def test_sqlite_in_memory(open_db: Callable[..., Engine]) -> None:
    engine = open_db("sqlite://")
    with engine.connect() as conn:
        assert zip_to_county(conn)["95014"] == "Santa Clara"


def test_sqlite_without_auto_upgrade_reports_the_schema(
    tmp_path: Path, open_db: Callable[..., Engine]
) -> None:
    with pytest.raises(SchemaOutOfDate, match=RUN_UPGRADE):
        open_db(f"sqlite:///{tmp_path / 'x.db'}", auto_upgrade_sqlite=False)


def test_sqlite_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(DatabaseUnavailable, match=r"taken is a file, not a folder \(check"):
        connect(f"sqlite:///{tmp_path / 'taken' / 'x.db'}")


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a database\n" * 200)
    with pytest.raises(DatabaseUnavailable, match="file is not a database"):
        connect(f"sqlite:///{path}")


# -- PostgreSQL specifics --------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_without_upgrade_says_run_db_upgrade(
    pg_url: str, open_db: Callable[..., Engine]
) -> None:
    with pytest.raises(SchemaOutOfDate) as excinfo:
        open_db(pg_url)
    assert str(excinfo.value) == RUN_UPGRADE
    # Nothing was created behind the operator's back.
    assert inspect(open_db(pg_url, check_schema=False)).get_table_names() == []
    migrate.upgrade(open_db(pg_url, check_schema=False))
    assert migrate.status(open_db(pg_url))["up_to_date"] is True


@pytest.mark.postgres
def test_postgres_unknown_database(pg_server_url: str) -> None:
    name = f"script_ec2_test_missing_{secrets.token_hex(4)}"
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    with pytest.raises(DatabaseUnavailable, match=f'database "{name}" does not exist'):
        connect(url)


@pytest.mark.postgres
def test_plain_postgresql_scheme_uses_psycopg2(pg_url: str, open_db: Callable[..., Engine]) -> None:
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    engine = open_db(plain, check_schema=False)
    assert engine.dialect.driver == "psycopg2"


# -- unreachable and malformed URLs ----------------------------------------------------------


def _closed_port_url() -> str:
    return f"postgresql://u:secret@127.0.0.1:{free_port()}/x"


def test_unreachable_database_is_one_masked_line() -> None:
    url = _closed_port_url()
    with pytest.raises(DatabaseUnavailable) as excinfo:
        connect(url, check_schema=False)
    message = str(excinfo.value)
    assert message.startswith(f"cannot connect to database {url.replace('secret', '***')}: ")
    assert "Connection refused" in message
    assert message.endswith("(check --database-url / SCRIPT_EC2_DATABASE_URL)")
    assert "\n" not in message and "secret" not in message


def test_password_in_query_string_is_masked() -> None:
    url = f"postgresql://u@127.0.0.1:{free_port()}/x?password=secret"
    with pytest.raises(DatabaseUnavailable) as excinfo:
        connect(url)
    assert "secret" not in str(excinfo.value)
    assert "password=***" in str(excinfo.value)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql+nosuchdriver://u:secret@127.0.0.1/x", "unknown database driver"),
        ("postgres://u:secret@127.0.0.1/x", "SQLAlchemy spells it postgresql://"),
    ],
)
def test_unknown_driver_is_unavailable(url: str, needle: str) -> None:
    with pytest.raises(DatabaseUnavailable, match=needle) as excinfo:
        connect(url)
    assert "secret" not in str(excinfo.value)


@pytest.mark.parametrize("url", ["not a url", "", "postgresql://u:secret@127.0.0.1:notaport/x"])
def test_malformed_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="invalid database URL") as excinfo:
        connect(url)
    assert "secret" not in str(excinfo.value)


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_db_upgrade_then_again(cli: Cli, db_url: str) -> None:
    first = cli("--database-url", db_url, "db", "upgrade")
    assert first.exit_code == 0, first.stderr
    assert f"database schema none -> {HEAD}" in first.stderr
    assert first.stdout == ""

    again = cli("--database-url", db_url, "db", "upgrade")
    assert again.exit_code == 0, again.stderr
    assert f"database schema already at {HEAD}" in again.stderr


def test_cli_db_status_json_before_and_after(cli: Cli, db_url: str) -> None:
    before = cli("--database-url", db_url, "db", "status", "--format", "json")
    assert before.exit_code == 0, before.stderr
    info = json.loads(before.stdout)
    assert set(info) == {"current", "head", "up_to_date", "advice", "dialect", "url"}
    assert (info["current"], info["head"], info["up_to_date"]) == (None, HEAD, False)
    assert RUN_UPGRADE in before.stderr

    assert cli("--database-url", db_url, "db", "upgrade").exit_code == 0
    after = cli("--database-url", db_url, "db", "status", "--format", "json")
    assert after.exit_code == 0, after.stderr
    assert json.loads(after.stdout)["up_to_date"] is True
    assert "run script-ec2 db upgrade" not in after.stderr


def test_cli_db_status_table(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert cli("--database-url", url, "db", "upgrade").exit_code == 0
    result = cli("--database-url", url, "db", "status")
    assert result.exit_code == 0, result.stderr
    assert "up_to_date" in result.stdout and "True" in result.stdout and HEAD in result.stdout


def test_cli_unreachable_database_exits_1_without_password(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _closed_port_url()
    by_flag = cli("--database-url", url, "db", "status")
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", url)
    by_env = cli("db", "upgrade")
    for result in (by_flag, by_env):
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: cannot connect to database postgresql://u:***@")
        assert result.stderr.count("\n") == 1
        assert "secret" not in result.stderr + result.stdout


def test_cli_unknown_driver_exits_1(cli: Cli) -> None:
    result = cli("--database-url", "postgresql+nosuchdriver://u:secret@127.0.0.1/x", "db", "status")
    assert result.exit_code == 1
    assert "Error: cannot connect to database" in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.parametrize("url", ["not a url", "postgresql://u:secret@127.0.0.1:notaport/x"])
def test_cli_malformed_url_exits_2(cli: Cli, url: str) -> None:
    result = cli("--database-url", url, "db", "status")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: invalid database URL")
    assert result.stderr.count("\n") == 1
    assert "secret" not in result.stderr


def test_the_quick_head_matches_alembic() -> None:
    from script_ec2.db.revision import script_head

    assert script_head() == migrate.head_revision()


def test_a_database_at_head_is_checked_without_importing_alembic(
    tmp_path: Path, open_db: Callable[..., Engine]
) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    migrate.upgrade(open_db(url, check_schema=False))
    code = (
        "import sys\n"
        "from script_ec2.db.engine import connect\n"
        f"connect({url!r})\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
