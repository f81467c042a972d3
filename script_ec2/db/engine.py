"""The one place a SQLAlchemy engine is built from a database URL.

:func:`connect` checks the URL, opens one connection straight away so an unreachable database
fails here with one readable line, and makes sure the schema is at the newest migration: a
SQLite file upgrades itself on first use, PostgreSQL must be upgraded by ``script-ec2 db
upgrade``. Driver exceptions become :mod:`script_ec2.errors` types with the password masked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from script_ec2.db.revision import script_head
from script_ec2.errors import DatabaseUnavailable, SchemaOutOfDate, UsageError
from script_ec2.settings import mask_url

URL_HINT = "(check --database-url / SCRIPT_EC2_DATABASE_URL)"
URL_EXAMPLES = "expected e.g. sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"
PG_CONNECT_TIMEOUT_S = 5
# Execution option read by the SQLite "begin" hook: take the write lock when the transaction
# starts, so concurrent migrators queue instead of failing on a stale snapshot.
SQLITE_BEGIN_IMMEDIATE = "script_ec2_sqlite_begin_immediate"
# How long a SQLite connection waits for another writer, in ms (PRAGMA busy_timeout).
SQLITE_BUSY_TIMEOUT_MS = 15000


def connect(url: str, *, auto_upgrade_sqlite: bool = True, check_schema: bool = True) -> Engine:
    """An engine for ``url`` that connects and, with ``check_schema``, whose schema is at head.

    Raises UsageError for a URL that cannot be parsed, DatabaseUnavailable when the database
    cannot be reached, and SchemaOutOfDate when the schema is behind (or ahead of) this code and
    may not be upgraded here.
    """
    sa_url = _parse(url)
    engine = _create_engine(sa_url)
    try:
        with connection_errors(sa_url):
            engine.connect().close()
        if check_schema:
            auto_upgrade = auto_upgrade_sqlite and engine.dialect.name == "sqlite"
            _ensure_schema(engine, auto_upgrade=auto_upgrade)
    except BaseException:
        engine.dispose()
        raise
    return engine


def display_url(url: URL | str) -> str:
    """The URL with any password, in the userinfo or the query string, replaced by ``***``."""
    if isinstance(url, str):
        return mask_url(url)
    hidden = {key: "***" for key in url.query if key.lower() in ("password", "passwd")}
    if hidden:
        url = url.update_query_dict(hidden)
    # render_as_string percent-escapes the query's "***"; show it as written.
    return mask_url(url.render_as_string(hide_password=True).replace("%2A%2A%2A", "***"))


@contextmanager
def connection_errors(url: URL) -> Iterator[None]:
    """Turn a failure to open a connection into DatabaseUnavailable naming the masked URL."""
    try:
        yield
    except DBAPIError as exc:
        raise unavailable(url, str(exc.orig) if exc.orig is not None else str(exc)) from exc


def unavailable(url: URL | str, reason: str) -> DatabaseUnavailable:
    """The one-line error for a database that cannot be reached, password masked."""
    first_line = next(
        (line.strip() for line in reason.splitlines() if line.strip()), "unknown error"
    )
    return DatabaseUnavailable(
        f"cannot connect to database {display_url(url)}: {mask_url(first_line)} {URL_HINT}"
    )


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # The parser's own message may quote part of the URL, password included: leave it out.
        raise UsageError(
            f"invalid database URL {mask_url(url)!r}: cannot parse it ({URL_EXAMPLES}) {URL_HINT}"
        ) from None


def _create_engine(url: URL) -> Engine:
    backend = url.get_backend_name()
    engine_url = url
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        _make_sqlite_folder(url)
    elif backend == "postgresql":
        if url.drivername == "postgresql":
            # SQLAlchemy 2.1 defaults plain postgresql:// to psycopg 3; the project ships psycopg2.
            engine_url = url.set(drivername="postgresql+psycopg2")
        if engine_url.get_driver_name() == "psycopg2":
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(engine_url, pool_pre_ping=True, connect_args=connect_args)
    except NoSuchModuleError as exc:
        hint = "; SQLAlchemy spells it postgresql://" if backend == "postgres" else ""
        raise unavailable(url, f"unknown database driver ({exc}{hint})") from exc
    except ImportError as exc:
        raise unavailable(url, f"database driver not installed ({exc})") from exc
    except ArgumentError as exc:
        raise unavailable(url, str(exc)) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory or URI-style database."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri") == "true":
        return None
    return Path(database)


def _make_sqlite_folder(url: URL) -> None:
    path = _sqlite_file(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise unavailable(url, f"{path.parent} is a file, not a folder") from exc
    except OSError as exc:
        raise unavailable(url, f"cannot create folder {path.parent}: {exc.strerror}") from exc


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys, WAL, a busy timeout and real transactions (DDL included) on each connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's legacy mode never BEGINs before DDL, so a failed migration would leave
        # half a schema; take over BEGIN ourselves (the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            # Wait for another writer (a cron job, a concurrent migration) instead of failing.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            # In WAL mode NORMAL still survives a killed process (only a power cut can lose the
            # last commits), and makes each small ledger commit ~30x cheaper than FULL.
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL, retrying while another connection is switching it too.

    SQLite can refuse the switch with "database is locked" without calling the busy handler
    when several connections open a new file at once, so the busy timeout is applied here.
    """
    import sqlite3  # only SQLite engines get here

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _at_head_quickly(engine: Engine) -> bool:
    """True when ``alembic_version`` already names the head: the common case costs one SELECT."""
    head = script_head()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:
        return False  # no table yet: let alembic look
    return found == [head]


def _ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    if _at_head_quickly(engine):
        return
    # Imported here because migrate imports this module (and alembic is slow to import).
    from script_ec2.db import migrate

    with engine.connect() as conn:
        current = migrate.current_revision(conn)
    head = migrate.head_revision()
    if current == head:
        return
    if current is not None and not migrate.is_known(current):
        raise migrate.unknown_revision_error(current)
    if auto_upgrade:
        migrate.upgrade(engine)
        return
    raise SchemaOutOfDate(migrate.behind_message(current, head))
