"""Database fixtures: a fresh SQLite file or a fresh PostgreSQL database per test.

PostgreSQL tests use the service on 127.0.0.1:5432 (user postgres, trust auth); each gets its own
database, created and dropped here, so tests never see each other's rows. When the server is
absent they skip (or fail under SCRIPT_EC2_REQUIRE_SERVICES=1) through ``service_missing``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.conftest import port_open, service_missing

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_SERVER_URL = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The maintenance database URL of the local PostgreSQL server, once it answers."""
    if not port_open(PG_HOST, PG_PORT):
        service_missing("PostgreSQL", f"nothing listens on {PG_HOST}:{PG_PORT}")
    engine = create_engine(PG_SERVER_URL, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except OperationalError as exc:
        service_missing("PostgreSQL", str(exc.orig).strip().splitlines()[0])
    finally:
        engine.dispose()
    return PG_SERVER_URL


@contextmanager
def fresh_pg_database(server_url: str) -> Iterator[str]:
    """Create a uniquely named database, yield its URL, then drop it (even with open sessions)."""
    # CREATE/DROP DATABASE take no bound parameters: the name is built only from our own hex
    # token and quoted by the dialect's identifier preparer.
    name = f"script_ec2_test_{secrets.token_hex(8)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file (in a folder not yet created) or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'script-ec2.db'}"
        return
    server_url = request.getfixturevalue("pg_server_url")
    with fresh_pg_database(server_url) as url:
        yield url


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A URL of an empty PostgreSQL database, for PostgreSQL-only tests."""
    with fresh_pg_database(pg_server_url) as url:
        yield url
