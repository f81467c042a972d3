"""Run and inspect the Alembic migrations shipped in ``script_ec2/db/migrations``.

Alembic is configured in code (no alembic.ini): :func:`alembic_config` points it at the packaged
migrations folder and hands it an open connection. One linear history serves SQLite and
PostgreSQL. Upgrades hold a lock for their whole transaction (SQLite ``BEGIN IMMEDIATE``, a
PostgreSQL advisory lock) so two processes starting at once migrate once, not twice.
"""

from __future__ import annotations

import zlib
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from script_ec2.db.engine import SQLITE_BEGIN_IMMEDIATE, display_url
from script_ec2.errors import SchemaOutOfDate, UsageError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit key works; deriving it from a name keeps it recognisable in pg_locks.
_PG_LOCK_KEY = zlib.crc32(b"script_ec2.db.migrate")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations, running on ``connection`` if given."""
    config = Config()
    # set_main_option interpolates '%', so a folder name containing one must be escaped.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this version of script-ec2 knows."""
    head = _scripts().get_current_head()
    if head is None:
        raise AssertionError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    heads = MigrationContext.configure(conn).get_current_heads()
    return ",".join(heads) if heads else None


def is_known(revision: str) -> bool:
    """Whether ``revision`` belongs to this code's migration history."""
    try:
        return all(_scripts().get_revision(rev) is not None for rev in revision.split(","))
    except CommandError:
        return False


def behind_message(current: str | None, head: str) -> str:
    return f"database schema at {current or 'none'}, code expects {head}: run script-ec2 db upgrade"


def unknown_revision_error(revision: str) -> SchemaOutOfDate:
    return SchemaOutOfDate(
        f"database schema at {revision}, which this script-ec2 does not know "
        f"(code expects {head_revision()}): install the script-ec2 version that migrated it"
    )


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database up to ``revision``; return the revisions (before, after).

    Running it again at head changes nothing and returns (head, head).
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            before = current_revision(conn)
            if before is not None and not is_known(before):
                raise unknown_revision_error(before)
            try:
                command.upgrade(alembic_config(conn), revision)
            except CommandError as exc:
                raise UsageError(f"cannot upgrade the database to {revision!r}: {exc}") from None
            after = current_revision(conn)
    return before, after


def status(engine: Engine) -> dict[str, Any]:
    """Where the schema stands: current and head revisions, whether they match, and what to do."""
    with engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current == head:
        advice = ""
    elif current is not None and not is_known(current):
        advice = str(unknown_revision_error(current))
    else:
        advice = behind_message(current, head)
    return {
        "current": current,
        "head": head,
        "up_to_date": current == head,
        "advice": advice,
        "dialect": engine.dialect.name,
        "url": display_url(engine.url),
    }
