"""Shared plumbing for the sync and stats tests: one data source on the moto S3 server, one database
(SQLite or PostgreSQL) and one cache folder, driven through the real CLI, plus snapshots of
everything a pass leaves behind (ledger, cache files, statistics) for comparisons.

Also a pytest plugin (registered in conftest): the ``demo`` data, generated once per session, and
the ``env`` of one test. A test module with its own ``env`` fixture (test_fit_cli) overrides it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from script_ec2.db.models import (
    CountyMonthStats,
    CountySegmentStats,
    CountyStats,
    LedgerEntry,
    StatsDirty,
    ZipStats,
)
from script_ec2.sync import CacheLayout
from script_ec2.synthetic import GenerationSummary, generate
from tests.conftest import Result
from tests.fixtures_s3 import S3Bucket

Cli = Callable[..., Result]

DEMO_SESSIONS = 400
DEMO_SEED = 20240611
STATS_TABLES: dict[str, Any] = {
    "county": CountyStats,
    "month": CountyMonthStats,
    "segment": CountySegmentStats,
    "zip": ZipStats,
}
# What a ledger row must agree on between two runs; timestamps are left out on purpose.
LEDGER_FIELDS = ("etag", "size", "sha256", "kind", "status", "rows", "counties", "cache_stem")
SUBPROCESS_TIMEOUT_S = 120


@dataclass(frozen=True)
class DemoData:
    """Synthetic files generated once per test session; tests upload the ones they need."""

    folder: Path
    summary: GenerationSummary

    @property
    def data_files(self) -> list[str]:
        """Names of every session and interval file, in zip order."""
        return [f.name for f in self.summary.files if f.kind in ("sessions", "intervals")]

    def zip_files(self, index: int) -> list[str]:
        """The session and interval file names of the ``index``-th zip."""
        z = self.summary.zips[index]
        return [f"evsezip{z}_sessions.csv", f"evsezip{z}_intervals.csv"]

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def rows(self, name: str) -> int:
        return next(f.rows for f in self.summary.files if f.name == name)


def make_demo_data(folder: Path) -> DemoData:
    summary = generate(folder, sessions=DEMO_SESSIONS, seed=DEMO_SEED, zips_per_county=1)
    return DemoData(folder, summary)


@dataclass
class Snapshot:
    """Everything a pass leaves behind, minus timestamps and the source name."""

    ledger: dict[str, dict[str, Any]]
    cache_files: set[str]
    stats: dict[str, list[dict[str, Any]]]
    dirty: list[str] = field(default_factory=list)


@dataclass
class SyncEnv:
    """One data source (a bucket prefix), one database and one cache folder."""

    bucket: S3Bucket
    db_url: str
    cache_dir: Path
    cli: Cli
    _engine: Engine | None = None

    @property
    def source(self) -> str:
        return self.bucket.uri

    @property
    def prefix(self) -> str:
        return self.bucket.uri.split("/", 3)[3]

    @property
    def layout(self) -> CacheLayout:
        return CacheLayout.for_source(self.cache_dir, self.source)

    # -- the bucket ------------------------------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        """Upload ``data`` as ``name`` under the prefix."""
        self.bucket.client.put_object(
            Bucket=self.bucket.bucket, Key=f"{self.prefix}/{name}", Body=data
        )

    def upload(self, demo: DemoData, names: list[str] | None = None) -> None:
        for name in demo.data_files if names is None else names:
            self.put(name, demo.read(name))

    def delete(self, name: str) -> None:
        self.bucket.client.delete_object(Bucket=self.bucket.bucket, Key=f"{self.prefix}/{name}")

    # -- running the tool ------------------------------------------------------------------------

    def sync(self, *args: str) -> Result:
        return self.cli("sync", *args)

    def sync_json(self, *args: str, expect: int = 0) -> dict[str, Any]:
        """``sync --format json ARGS``, checked to exit with ``expect``; the parsed summary."""
        result = self.cli("sync", "--format", "json", *args)
        assert result.exit_code == expect, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def subprocess_env(self, **extra: str) -> dict[str, str]:
        """The test's environment (settings, dummy AWS credentials) for a child process."""
        env = os.environ.copy()
        env.pop("SCRIPT_EC2_CRASH_AT", None)
        env.update(extra)
        return env

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "script_ec2", *args],
            env=self.subprocess_env(**extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "script_ec2", *args],
            env=self.subprocess_env(**extra_env),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )

    # -- looking at the results ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, poolclass=NullPool)
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def ledger(self) -> dict[str, Any]:
        """Ledger rows of this source by key (rows with one attribute per column)."""
        table = LedgerEntry.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.source == self.source))
            return {r.key: r for r in rows}

    def ledger_rows(self) -> list[dict[str, Any]]:
        """Every ledger column of every row of this source, as plain dicts sorted by key."""
        table = LedgerEntry.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.source == self.source).order_by(table.c.key)
            )
            return [dict(r._mapping) for r in rows]

    def stats(self, by: str) -> list[dict[str, Any]]:
        """Rows of one statistics table (``county``, ``month``, ``segment``, ``zip``)."""
        with self.engine.connect() as conn:
            return stats_rows(conn, self.source, by)

    def county_stats(self) -> dict[str, dict[str, Any]]:
        return {r["county"]: r for r in self.stats("county")}

    def cache_files(self) -> set[str]:
        return files_under(self.layout.root)

    def parquet_rows(self, key: str) -> int:
        """Rows in the row file the ledger points at for ``key``."""
        import pyarrow.parquet as pq

        stem = self.ledger()[key].cache_stem
        assert stem is not None, f"{key} has no cached rows"
        return int(pq.read_metadata(self.layout.objects / f"{stem}.parquet").num_rows)

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.engine, self.source, self.cache_dir)


def stats_rows(conn: Connection, source: str, by: str) -> list[dict[str, Any]]:
    """One statistics table of ``source`` in key order, without source and updated_at."""
    table = STATS_TABLES[by].__table__
    cols = [c for c in table.columns if c.name not in ("source", "updated_at")]
    stmt = select(*cols).where(table.c.source == source)
    stmt = stmt.order_by(*[c for c in cols if c.primary_key])
    return [dict(r._mapping) for r in conn.execute(stmt)]


def files_under(root: Path) -> set[str]:
    """Every file below ``root``, relative to it (a source's cache: objects/..., raw/...)."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def take_snapshot(engine: Engine, source: str, cache_dir: Path) -> Snapshot:
    """The ledger, cache files, statistics and dirty marks of ``source``, without timestamps."""
    ledger = LedgerEntry.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(ledger).where(ledger.c.source == source))
        by_key = {r.key: {f: getattr(r, f) for f in LEDGER_FIELDS} for r in rows}
        stats = {by: stats_rows(conn, source, by) for by in STATS_TABLES}
        dirty = sorted(
            conn.execute(select(StatsDirty.county).where(StatsDirty.source == source)).scalars()
        )
    files = files_under(CacheLayout.for_source(cache_dir, source).root)
    return Snapshot(ledger=by_key, cache_files=files, stats=stats, dirty=dirty)


_s3_clients: dict[tuple[Any, ...], Any] = {}


def share_s3_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let in-process CLI runs reuse one boto3 S3 client per set of S3 settings.

    Every run builds a new client, which costs about half a second of botocore model loading;
    a test runs the CLI many times against the same moto endpoint with the same dummy
    credentials, so the clients (thread-safe, stateless between calls) are shared.
    """
    import script_ec2.store.s3 as s3_module

    make_client = s3_module._make_client

    def shared_client(settings: Any) -> Any:
        key = (
            settings.s3_endpoint_url,
            settings.aws_region,
            settings.s3_max_attempts,
            *(os.environ.get(v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        )
        if key not in _s3_clients:
            _s3_clients[key] = make_client(settings)
        return _s3_clients[key]

    monkeypatch.setattr(s3_module, "_make_client", shared_client)


def open_sync_env(
    db_url: str,
    bucket: S3Bucket,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SyncEnv]:
    """Point every setting at this test's bucket, database and cache; PostgreSQL at head."""
    cache_dir = tmp_path / "cache"
    share_s3_clients(monkeypatch)
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", db_url)
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", bucket.uri)
    monkeypatch.setenv("SCRIPT_EC2_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("SCRIPT_EC2_S3_ENDPOINT_URL", bucket.endpoint)
    if db_url.startswith("postgresql"):  # SQLite upgrades itself on first use
        upgraded = cli("db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.stderr
    env = SyncEnv(bucket=bucket, db_url=db_url, cache_dir=cache_dir, cli=cli)
    try:
        yield env
    finally:
        env.dispose()


# -- editing CSV bytes -----------------------------------------------------------------------------


def read_csv(data: bytes) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    return rows[0], rows[1:]


def write_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def set_cell(data: bytes, row: int, column: str, value: str) -> bytes:
    """``data`` with the ``row``-th (1-based) data row's ``column`` replaced by ``value``."""
    header, rows = read_csv(data)
    rows[row - 1][header.index(column)] = value
    return write_csv(header, rows)


def drop_column(data: bytes, column: str) -> bytes:
    header, rows = read_csv(data)
    i = header.index(column)
    return write_csv(header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in rows])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """Generated once per session; tests only read it."""
    return make_demo_data(tmp_path_factory.mktemp("demo-sync"))


@pytest.fixture
def env(
    db_url: str,
    s3_bucket: S3Bucket,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SyncEnv]:
    yield from open_sync_env(db_url, s3_bucket, cli, tmp_path, monkeypatch)
