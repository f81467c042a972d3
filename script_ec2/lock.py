"""One run at a time per data prefix.

On PostgreSQL the lock is a session-level advisory lock keyed by a hash of the prefix, so it works
across hosts and is released by the server when the holder dies (even by ``kill -9``). The holder
announces itself through its connection's ``application_name``, which a loser reads back from
``pg_stat_activity`` to say who holds it. On SQLite it is an ``flock`` on a file in the lock folder
the caller names (``<cache_dir>/locks`` for sync) and another in ``<database file>.locks/`` beside
the database, so two processes sharing either the cache or the database exclude each other; the
holder is written into the files and the kernel releases them when the process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from script_ec2.errors import LockHeld

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_APP_PREFIX = "script-ec2 lock "


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def run_lock(engine: Engine, name: str, lock_dir: Path) -> Iterator[None]:
    """Hold the lock called ``name`` for the duration of the block, or raise :class:`LockHeld`."""
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, name):
            yield
        return
    file_name = f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"
    beside_db = _sqlite_lock_dir(engine)
    with _file_lock(lock_dir / file_name, name):
        if beside_db is None or beside_db == lock_dir:
            yield
        else:
            with _file_lock(beside_db / file_name, name):
                yield


def _sqlite_lock_dir(engine: Engine) -> Path | None:
    """``<database file>.locks`` for a file database; None for an in-memory one."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).expanduser().resolve()
    return path.with_name(f"{path.name}.locks")


@contextmanager
def _pg_lock(engine: Engine, name: str) -> Iterator[None]:
    from sqlalchemy import text

    key = lock_key(name)
    holder = f"{_APP_PREFIX}{os.getpid()}@{socket.gethostname()}"[:63]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT set_config('application_name', :n, false)"), {"n": holder})
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            row = conn.execute(
                text(
                    "SELECT a.application_name, a.backend_start FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
                ),
                {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
            ).first()
            raise LockHeld(_held_message(name, *_parse_holder(row)))
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def _parse_holder(row: object) -> tuple[str, str, str]:
    if row is None:
        return ("unknown host", "unknown", "unknown time")
    app, since = row[0] or "", row[1]  # type: ignore[index]
    pid, _, host = app.removeprefix(_APP_PREFIX).partition("@")
    when = since.astimezone(UTC).isoformat(timespec="seconds") if since else "unknown time"
    return (host or "unknown host", pid or "unknown", when)


@contextmanager
def _file_lock(path: Path, name: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(_held_message(name, *_read_holder(fd))) from None
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> tuple[str, str, str]:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        info = {}
    return (
        str(info.get("host", "unknown host")),
        str(info.get("pid", "unknown")),
        str(info.get("since", "unknown time")),
    )


def _held_message(name: str, host: str, pid: str, since: str) -> str:
    """``name`` is "<what> <target>", e.g. "sync s3://bucket/prefix" or "train /srv/models"."""
    what, _, target = name.partition(" ")
    return (
        f"another {what} is running ({host}, pid {pid}, since {since}) on {target or what}; "
        "try again later"
    )
