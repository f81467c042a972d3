"""The results cache: the ``results`` table, one row per computed fit, found by its cache key.

The key is the sha256 of a computation's canonical parameters (:func:`script_ec2.params.cache_key`),
so a row answers every later request for the same computation. A row holds the canonical document
(column ``params``), the models it used (``model_versions``, ``{name: "name@version hash"}``), small
JSON ``meta``, the arrays as deterministic ``.npz`` bytes (:func:`script_ec2.registry.npz_bytes`:
binary float64, not JSON lists of numbers), when it was computed and in how many seconds, and how
often it was served since (``hits``, ``last_hit_at``).

:func:`save` is idempotent across processes: when another worker stored the same key first, the
insert hits the unique constraint and the row already there is returned, so two workers finishing
one computation both succeed. ``replace=True`` (``fit --no-cache``) overwrites the row instead.
Times are stored and returned in UTC. A key may be given by a unique prefix of at least
:data:`MIN_PREFIX` hex digits, as ``git`` allows for commits.

The table is queried through a lightweight SQLAlchemy Core construct (:func:`_table`), not the ORM
class :class:`script_ec2.db.models.ResultRecord`, and a row's arrays are decoded only when read
(:class:`script_ec2.registry.NpzArrays`): a cache hit printed as JSON imports neither the ORM
nor numpy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from script_ec2.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection, Engine

MIN_PREFIX = 6
_KEY_RE = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},64}}$")


class ResultNotFound(UsageError):
    """No stored result has the key (or key prefix) that was asked for."""


@dataclass(frozen=True)
class StoredResult:
    """One cached result: what was computed, from which models, its metadata and arrays."""

    key: str
    algorithm: str
    params: dict[str, Any]  # the validated parameters, defaults filled
    model_versions: dict[str, dict[str, Any]]  # name -> {"version": int, "content_hash": str}
    meta: dict[str, Any]
    arrays: Mapping[str, np.ndarray]  # from the database: a NpzArrays, decoded when first read
    created_at: datetime
    compute_seconds: float
    hits: int = 0
    last_hit_at: datetime | None = None
    canonical: str = field(default="", repr=False)  # the document whose sha256 is ``key``


@dataclass(frozen=True)
class ResultSummary:
    """A row of ``results list``: everything but the parameters, meta and arrays."""

    key: str
    algorithm: str
    created_at: datetime
    compute_seconds: float
    hits: int
    last_hit_at: datetime | None
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "algorithm": self.algorithm,
            "created_at": _show_time(self.created_at),
            "compute_seconds": round(self.compute_seconds, 3),
            "hits": self.hits,
            "last_hit_at": _show_time(self.last_hit_at) if self.last_hit_at else None,
            "size_bytes": self.size_bytes,
        }


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _show_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- model versions


def encode_model_versions(versions: Mapping[str, Mapping[str, Any]]) -> str:
    """``{name: "name@version content_hash"}`` as JSON (the column's documented form)."""
    return json.dumps(
        {name: f"{name}@{int(v['version'])} {v['content_hash']}" for name, v in versions.items()},
        sort_keys=True,
    )


def decode_model_versions(text: str) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`encode_model_versions`."""
    result: dict[str, dict[str, Any]] = {}
    for name, value in json.loads(text).items():
        ref, _, digest = str(value).partition(" ")
        _, _, version = ref.rpartition("@")
        result[name] = {"version": int(version), "content_hash": digest}
    return result


# --------------------------------------------------------------------------- reading rows


@functools.cache
def _table() -> Any:
    """The ``results`` table as a lightweight Core ``table()``, without the ORM.

    Its columns and their types are those of :class:`script_ec2.db.models.ResultRecord` (the types
    convert values: DateTime on SQLite, LargeBinary on PostgreSQL); a test holds the two equal.
    """
    from sqlalchemy import DateTime, Float, Integer, LargeBinary, String, Text, column, table

    return table(
        "results",
        column("id", Integer),
        column("key", String(64)),
        column("algorithm", String(64)),
        column("params", Text),
        column("model_versions", Text),
        column("meta", Text),
        column("arrays", LargeBinary),
        column("created_at", DateTime(timezone=True)),
        column("compute_seconds", Float),
        column("hits", Integer),
        column("last_hit_at", DateTime(timezone=True)),
    )


def _stored(row: Any) -> StoredResult:
    """A StoredResult from a results row (SQLAlchemy's, or :class:`_DirectRow`)."""
    from script_ec2.registry import NpzArrays

    document = json.loads(row.params)
    created = _utc(row.created_at)
    assert created is not None
    return StoredResult(
        key=row.key,
        algorithm=row.algorithm,
        params=dict(document.get("params", {})),
        model_versions=decode_model_versions(row.model_versions),
        meta=json.loads(row.meta),
        arrays=NpzArrays(bytes(row.arrays)),
        created_at=created,
        compute_seconds=float(row.compute_seconds),
        hits=int(row.hits),
        last_hit_at=_utc(row.last_hit_at),
        canonical=row.params,
    )


def _fetch(conn: Connection, key: str) -> StoredResult | None:
    from sqlalchemy import select

    table = _table()
    row = conn.execute(select(table).where(table.c.key == key)).first()
    return _stored(row) if row is not None else None


def _resolve_key(conn: Connection, key_or_prefix: str) -> str:
    """The full key of the one row whose key starts with ``key_or_prefix``."""
    from sqlalchemy import select

    text = key_or_prefix.strip().lower()
    if not _KEY_RE.match(text):
        raise UsageError(
            f"invalid result key {key_or_prefix!r}: give the 64 hex digits of a key or a unique "
            f"prefix of at least {MIN_PREFIX} (see script-ec2 results list)"
        )
    table = _table()
    # The prefix is validated hex, so it holds no LIKE wildcard; autoescape guards it anyway.
    found = (
        conn.execute(
            select(table.c.key).where(table.c.key.startswith(text, autoescape=True)).limit(2)
        )
        .scalars()
        .all()
    )
    if not found:
        raise ResultNotFound(f"no stored result with key {text!r} (see script-ec2 results list)")
    if len(found) > 1:
        raise UsageError(f"result key prefix {text!r} is ambiguous: give more digits")
    return str(found[0])


# --------------------------------------------------------------------------- the API


def save(
    engine: Engine,
    *,
    key: str,
    algorithm: str,
    canonical: str,
    model_versions: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    compute_seconds: float,
    replace: bool = False,
) -> StoredResult:
    """Store a computed result under ``key``; the stored row is returned (see module docstring)."""
    from sqlalchemy import insert, update
    from sqlalchemy.exc import IntegrityError

    from script_ec2.registry import npz_bytes

    table = _table()
    values = {
        "algorithm": algorithm,
        "params": canonical,
        "model_versions": encode_model_versions(model_versions),
        "meta": json.dumps(meta, sort_keys=True, allow_nan=False),
        "arrays": npz_bytes(arrays),
        "created_at": now(),
        "compute_seconds": float(compute_seconds),
        "hits": 0,
        "last_hit_at": None,
    }
    if replace:
        with engine.begin() as conn:
            changed = conn.execute(update(table).where(table.c.key == key).values(**values))
            if changed.rowcount:
                stored = _fetch(conn, key)
                assert stored is not None
                return stored
    try:
        with engine.begin() as conn:
            conn.execute(insert(table).values(key=key, **values))
    except IntegrityError:
        # Another process stored this key first: its row is the same computation.
        pass
    with engine.connect() as conn:
        stored = _fetch(conn, key)
    if stored is None:
        raise AssertionError(f"result {key} was neither inserted nor found")
    return stored


def lookup(engine: Engine, key: str, *, count_hit: bool = True) -> StoredResult | None:
    """The result stored under exactly ``key``, counting the hit; None if there is none."""
    from sqlalchemy import update

    table = _table()
    with engine.begin() as conn:
        if count_hit:
            changed = conn.execute(
                update(table)
                .where(table.c.key == key)
                .values(hits=table.c.hits + 1, last_hit_at=now())
            )
            if not changed.rowcount:
                return None
        return _fetch(conn, key)


# (count the hit, read the row): constant statements, values always bound. The columns read are
# :class:`_DirectRow`'s fields, in order.
_DIRECT_COUNT_HIT = "UPDATE results SET hits = hits + 1, last_hit_at = ? WHERE key = ?"
_DIRECT_READ_ROW = (
    "SELECT key, algorithm, params, model_versions, meta, arrays, created_at, "
    "compute_seconds, hits, last_hit_at FROM results WHERE key = ?"
)
# sqlite3 takes ? placeholders, psycopg2 %s.
_DIRECT_SQL = {
    "sqlite": (_DIRECT_COUNT_HIT, _DIRECT_READ_ROW),
    "postgresql": (_DIRECT_COUNT_HIT.replace("?", "%s"), _DIRECT_READ_ROW.replace("?", "%s")),
}


def lookup_direct(database_url: str, key: str) -> StoredResult | None:
    """:func:`lookup` through the database driver alone, for a cache hit on the command line.

    SQLAlchemy costs a ``fit`` that is answered from the cache a third of its run time (~0.13 s
    to import). This reads the row, and counts the hit, with ``sqlite3`` or ``psycopg2`` directly,
    after checking that the schema is at this code's head revision. It returns None, and the
    caller takes the ordinary path (which reports any problem properly), for a miss and for
    anything it does not handle: another dialect, URL options, an in-memory database, a schema
    at another revision, any driver error.
    """
    from script_ec2.db.revision import script_head

    head = script_head()
    if head is None:
        return None
    try:
        connection = _direct_connection(database_url)
    except _Unreachable as exc:
        # Reported here: the ordinary path would only wait for the same timeout again.
        from script_ec2.db.engine import unavailable

        raise unavailable(database_url, exc.reason) from None
    except Exception:  # the ordinary path reports a bad URL properly
        return None
    if connection is None:
        return None
    connection_type, conn = connection
    count_hit, read_row = _DIRECT_SQL[connection_type]
    try:
        with conn:  # one transaction: commit on success, roll back on error
            cursor = conn.cursor()
            cursor.execute("SELECT version_num FROM alembic_version")
            if [r[0] for r in cursor.fetchall()] != [head]:
                return None
            hit_at: Any = now()
            if connection_type == "sqlite":  # as SQLAlchemy's DateTime stores it there
                hit_at = hit_at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
            cursor.execute(count_hit, (hit_at, key))
            if cursor.rowcount != 1:
                return None
            cursor.execute(read_row, (key,))
            row = cursor.fetchone()
    except Exception:
        return None
    finally:
        conn.close()
    if row is None:
        return None
    read = _DirectRow(*row)
    # SQLite hands DateTime columns back as the text SQLAlchemy stored.
    return _stored(
        dataclasses.replace(
            read,
            created_at=_parsed_time(read.created_at),
            last_hit_at=_parsed_time(read.last_hit_at),
        )
    )


def _parsed_time(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class _DirectRow:
    """A results row read by :func:`lookup_direct`, shaped like SQLAlchemy's for :func:`_stored`."""

    key: str
    algorithm: str
    params: str
    model_versions: str
    meta: str
    arrays: Any  # bytes (SQLite) or memoryview (PostgreSQL)
    created_at: datetime
    compute_seconds: float
    hits: int
    last_hit_at: datetime | None


def _direct_connection(database_url: str) -> tuple[str, Any] | None:
    """("sqlite" | "postgresql", an open DB-API connection), or None for anything else."""
    if database_url.startswith("sqlite:///") and "?" not in database_url:
        import sqlite3

        path = database_url.removeprefix("sqlite:///")
        if not path or path == ":memory:":
            return None
        # The file must exist: sqlite3 would create an empty one where SQLAlchemy's path
        # creates and migrates it.
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=15)
        return "sqlite", conn
    for scheme in ("postgresql://", "postgresql+psycopg2://", "postgres://"):
        if database_url.startswith(scheme):
            import psycopg2

            dsn = "postgresql://" + database_url.removeprefix(scheme)
            try:
                return "postgresql", psycopg2.connect(dsn, connect_timeout=5)
            except psycopg2.OperationalError as exc:
                raise _Unreachable(str(exc)) from None
    return None


class _Unreachable(Exception):
    """The database server did not accept a connection (reason: the driver's message)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def list_results(
    engine: Engine, *, algorithm: str | None = None, limit: int | None = None
) -> list[ResultSummary]:
    """Stored results, newest first (optionally one algorithm's, at most ``limit``)."""
    from sqlalchemy import func, select

    table = _table()
    query = select(
        table.c.key,
        table.c.algorithm,
        table.c.created_at,
        table.c.compute_seconds,
        table.c.hits,
        table.c.last_hit_at,
        func.length(table.c.arrays).label("size_bytes"),
    ).order_by(table.c.created_at.desc(), table.c.id.desc())
    if algorithm is not None:
        query = query.where(table.c.algorithm == algorithm)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ResultSummary(
            key=row.key,
            algorithm=row.algorithm,
            created_at=_utc(row.created_at) or now(),
            compute_seconds=float(row.compute_seconds),
            hits=int(row.hits),
            last_hit_at=_utc(row.last_hit_at),
            size_bytes=int(row.size_bytes or 0),
        )
        for row in rows
    ]


def get(engine: Engine, key_or_prefix: str) -> StoredResult:
    """The stored result with this key or unique key prefix (not counted as a hit)."""
    with engine.connect() as conn:
        stored = _fetch(conn, _resolve_key(conn, key_or_prefix))
    if stored is None:
        raise ResultNotFound(f"no stored result with key {key_or_prefix!r}")
    return stored


def remove(engine: Engine, key_or_prefix: str) -> str:
    """Delete the result with this key or unique key prefix; returns its full key."""
    from sqlalchemy import delete

    table = _table()
    with engine.begin() as conn:
        key = _resolve_key(conn, key_or_prefix)
        conn.execute(delete(table).where(table.c.key == key))
    return key


def prune(engine: Engine, older_than: timedelta, *, at: datetime | None = None) -> int:
    """Delete results created more than ``older_than`` before ``at`` (default now); the count."""
    from sqlalchemy import delete

    table = _table()
    cutoff = (at or now()) - older_than
    with engine.begin() as conn:
        deleted = conn.execute(delete(table).where(table.c.created_at < cutoff))
    return int(deleted.rowcount or 0)


def describe(stored: StoredResult) -> dict[str, Any]:
    """What ``results show`` prints: identity, timing, parameters, models, meta, array summary."""
    return {
        "key": stored.key,
        "algorithm": stored.algorithm,
        "created_at": _show_time(stored.created_at),
        "compute_seconds": round(stored.compute_seconds, 3),
        "hits": stored.hits,
        "last_hit_at": _show_time(stored.last_hit_at) if stored.last_hit_at else None,
        "params": stored.params,
        "model_versions": stored.model_versions,
        "meta": stored.meta,
        "arrays": {
            name: {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "min": float(array.min()) if array.size else None,
                "max": float(array.max()) if array.size else None,
                "sum": float(array.sum()),
            }
            for name, array in sorted(stored.arrays.items())
        },
    }
