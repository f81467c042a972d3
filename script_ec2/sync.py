"""One sync pass: LIST the private data prefix once, fetch what is new or changed, ingest it into
the local columnar cache, record it in the ledger and bring the statistics up to date.

Crash safety comes from the order of effects. Cache files are content-addressed (``<key
hash>-<etag hash>``), so writing one never overwrites what the ledger points at. Each object's
ledger row and the "statistics dirty" marks of its counties are committed in one transaction.
Statistics of dirty counties are rewritten, and the marks cleared, in one transaction. Files no
ledger row points at are deleted last. A pass killed at any point therefore leaves a state from
which the next pass converges to what one clean pass would have produced.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from script_ec2 import faults, log
from script_ec2.errors import (
    DataError,
    EndpointUnreachable,
    ScriptEc2Error,
    StoreError,
    UsageError,
    environment_failure,
)
from script_ec2.lock import run_lock
from script_ec2.store.interface import ObjectInfo, ObjectStore
from script_ec2.store.uri import clean_key
from script_ec2.tracking import MASS_DELETE_SHARE, Plan, Tracked, make_plan, mass_delete_refused

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from script_ec2.ingest import IngestResult

TRANSIENT_ATTEMPTS = 3


class SyncObserver(Protocol):
    def planned(self, plan: Plan) -> None: ...
    def object_done(self, key: str, nbytes: int) -> None: ...


@dataclass
class SyncSummary:
    source: str
    dry_run: bool = False
    new: int = 0
    changed: int = 0
    deleted: int = 0
    unchanged: int = 0
    settling: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    still_quarantined: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    rows_ingested: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    dropped_rows: Counter[str] = field(default_factory=Counter)
    clipped_rows: Counter[str] = field(default_factory=Counter)
    counties_updated: list[str] = field(default_factory=list)
    lost_from_cache: list[str] = field(default_factory=list)
    plan: dict[str, list[str]] | None = None
    interrupted: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "new": self.new,
            "changed": self.changed,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "quarantined": len(self.quarantined),
            "rows_ingested": self.rows_ingested,
            "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3),
            "settling": self.settling,
            "still_quarantined": self.still_quarantined,
            "failed": len(self.failed),
            "quarantined_files": self.quarantined,
            "failed_files": self.failed,
            "dropped_rows": dict(sorted(self.dropped_rows.items())),
            "clipped_rows": dict(sorted(self.clipped_rows.items())),
            "counties_updated": self.counties_updated,
            "lost_from_cache": self.lost_from_cache,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "source": self.source,
        }
        if self.plan is not None:
            out["plan"] = self.plan
        return out

    @property
    def partial(self) -> bool:
        return bool(self.quarantined or self.still_quarantined or self.failed)


@dataclass(frozen=True)
class CacheLayout:
    """Where one data source lives in the local cache."""

    root: Path

    @classmethod
    def for_source(cls, cache_dir: Path, source: str) -> CacheLayout:
        return cls(cache_dir / "sources" / hashlib.sha256(source.encode()).hexdigest()[:16])

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    def raw_path(self, key: str) -> Path:
        return self.raw / key

    def has_rows(self, tracked: Tracked) -> bool:
        """False when an ingested object's cache files are not all here (fetch it again).

        Ingest renames the row file into place last, but a file can still be lost later (a
        cache emptied by hand, a disk restored from backup), so every file is checked. A
        quarantined object is not fetched again for its last good version: that is gone
        upstream (see :meth:`complete`).
        """
        if tracked.status != "ok" or tracked.cache_stem is None:
            return True
        return self.complete(tracked)

    def complete(self, tracked: Tracked) -> bool:
        """True when the rows and every partial aggregate of the ledger's version are here."""
        from script_ec2.keys import cache_file_names, detect_kind

        kind = detect_kind(tracked.key)
        if tracked.cache_stem is None or kind is None:
            return True
        return all((self.objects / n).exists() for n in cache_file_names(tracked.cache_stem, kind))

    def ensure(self) -> None:
        for path in (self.objects, self.raw):
            path.mkdir(parents=True, exist_ok=True)


def cache_stem(key: str, etag: str) -> str:
    return f"{_h(key)[:16]}-{_h(etag)[:12]}"


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_sync(
    engine: Engine,
    store: ObjectStore,
    *,
    source: str,
    cache_dir: Path,
    settle: timedelta = timedelta(0),
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    concurrency: int = 4,
    observer: SyncObserver | None = None,
    stop: threading.Event | None = None,
    lock_dir: Path | None = None,
) -> SyncSummary:
    """Run one pass under the per-source lock and return its summary."""
    from script_ec2.keys import detect_kind

    started = time.perf_counter()
    summary = SyncSummary(source=source, dry_run=dry_run)
    layout = CacheLayout.for_source(cache_dir, source)
    with run_lock(engine, f"sync {source}", lock_dir or cache_dir / "locks"):
        listing = list(store.list())
        faults.checkpoint("after_list")
        ledger = _load_ledger(engine, source)
        now = datetime.now(UTC)
        plan = make_plan(
            listing,
            ledger,
            now=now,
            settle=settle,
            wanted=lambda k: detect_kind(k) is not None,
            cached=layout.has_rows,
        )
        summary.new, summary.changed = len(plan.new), len(plan.changed)
        summary.deleted, summary.unchanged = len(plan.deleted), len(plan.unchanged)
        summary.settling = len(plan.settling)
        summary.still_quarantined = sum(
            1 for o in plan.unchanged if ledger[o.key].status == "quarantined"
        )
        if observer:
            observer.planned(plan)
        if dry_run:
            summary.plan = plan.as_dict()
            summary.seconds = time.perf_counter() - started
            return summary
        if mass_delete_refused(plan, len(ledger)) and not allow_mass_delete:
            raise ScriptEc2Error(
                f"refusing to delete {len(plan.deleted)} of {len(ledger)} tracked objects "
                f"under {source} (more than {MASS_DELETE_SHARE:.0%}): check --data-uri, "
                "or pass --allow-mass-delete"
            )
        layout.ensure()
        _touch_unchanged(engine, source, plan.unchanged, now)
        summary.lost_from_cache = _drop_lost_versions(engine, source, ledger, plan, layout)
        zip_to_county = _zip_to_county(engine)
        _fetch_all(
            engine, store, plan, ledger, layout, zip_to_county, summary, concurrency, observer, stop
        )
        for key in plan.deleted:
            _forget(engine, source, ledger[key], key)
        faults.checkpoint("before_stats")
        from script_ec2.stats import recompute_dirty

        summary.counties_updated = recompute_dirty(engine, source, layout)
        faults.checkpoint("before_gc")
        collect_garbage(engine, source, layout)
    summary.seconds = time.perf_counter() - started
    log.event(
        "sync finished",
        new=summary.new,
        changed=summary.changed,
        deleted=summary.deleted,
        unchanged=summary.unchanged,
        quarantined=len(summary.quarantined),
        failed=len(summary.failed),
        rows_ingested=summary.rows_ingested,
        bytes_downloaded=summary.bytes_downloaded,
        seconds=round(summary.seconds, 3),
    )
    return summary


def _fetch_all(
    engine: Engine,
    store: ObjectStore,
    plan: Plan,
    ledger: dict[str, Tracked],
    layout: CacheLayout,
    zip_to_county: dict[str, str],
    summary: SyncSummary,
    concurrency: int,
    observer: SyncObserver | None,
    stop: threading.Event | None,
) -> None:
    """Download and ingest with bounded concurrency; record each result as it completes.

    ``concurrency`` objects are in flight at once, but at most one ingest per CPU core runs at a
    time: Arrow does most of an ingest without the GIL, yet each of its many calls takes the GIL
    back. Ingesting the 108 benchmark files with four threads on two cores made 114,721 futex
    calls against 17,223 with two, and cost 5-10 % more CPU for the same wall time. The other
    workers download meanwhile.
    """
    # Largest first: the pass ends with small objects instead of one big ingest on one core.
    todo: Iterator[ObjectInfo] = iter(sorted(plan.to_fetch, key=lambda o: (-o.size, o.key)))
    running: dict[Future[_Fetched], ObjectInfo] = {}
    ingest_slots = threading.BoundedSemaphore(max(1, min(concurrency, os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="sync") as pool:

        def submit_next() -> bool:
            if stop is not None and stop.is_set():
                summary.interrupted = True
                return False
            obj = next(todo, None)
            if obj is None:
                return False
            running[
                pool.submit(
                    _fetch_one, store, obj, ledger.get(obj.key), layout, zip_to_county, ingest_slots
                )
            ] = obj
            return True

        for _ in range(max(1, concurrency)):
            if not submit_next():
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                obj = running.pop(fut)
                _record(engine, summary, layout, obj, ledger.get(obj.key), fut.result())
                if observer:
                    observer.object_done(obj.key, obj.size)
                submit_next()


@dataclass
class _Fetched:
    sha256: str | None = None
    result: IngestResult | None = None
    reused: bool = False
    quarantine: str | None = None
    failure: str | None = None
    nbytes: int = 0


def _fetch_one(
    store: ObjectStore,
    obj: ObjectInfo,
    previous: Tracked | None,
    layout: CacheLayout,
    zip_to_county: dict[str, str],
    ingest_slots: threading.BoundedSemaphore,
) -> _Fetched:
    """Download one object (retrying transient errors) and ingest it; never raises for bad data."""
    from script_ec2.ingest import ingest_file
    from script_ec2.keys import detect_kind

    try:
        clean_key(obj.key)
    except UsageError as exc:
        # A key with empty, "." or ".." segments could name a path outside the cache; it fails
        # alone instead of ending the pass.
        return _Fetched(failure=f"{exc}; rename the object")
    dest = layout.raw_path(obj.key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        hasher = hashlib.sha256()
        try:
            # Hashed as it streams in, so the file is not read twice. Not fsynced: a cache copy
            # that survives kill -9 (atomic rename) and can be fetched again after a power cut.
            store.download(obj.key, dest, durable=False, observe=hasher.update)
            break
        except EndpointUnreachable as exc:
            if attempt == TRANSIENT_ATTEMPTS:
                return _Fetched(failure=str(exc))
            time.sleep(0.5 * 2**attempt)
        except StoreError as exc:
            return _Fetched(failure=str(exc))
    faults.checkpoint("after_download")
    size = dest.stat().st_size
    if size != obj.size:
        return _Fetched(
            failure=f"{obj.key}: downloaded {size} bytes, listing said {obj.size}; "
            "will retry next pass"
        )
    digest = hasher.hexdigest()
    stem = cache_stem(obj.key, obj.etag)
    kind = detect_kind(obj.key)
    assert kind is not None
    try:
        with ingest_slots:
            result = ingest_file(
                dest,
                kind=kind,
                key=obj.key,
                zip_to_county=zip_to_county,
                out_dir=layout.objects,
                stem=stem,
            )
    except DataError as exc:
        return _Fetched(sha256=digest, quarantine=str(exc), nbytes=size)
    except OSError as exc:
        # The cache's disk (full, read-only, gone), not the file: fail it alone, retry next pass.
        reason = environment_failure(exc) or str(exc)
        return _Fetched(
            failure=f"cannot ingest into the local cache: {reason}; will retry next pass"
        )
    faults.checkpoint("after_ingest")
    return _Fetched(sha256=digest, result=result, nbytes=size)


def _record(
    engine: Engine,
    summary: SyncSummary,
    layout: CacheLayout,
    obj: ObjectInfo,
    previous: Tracked | None,
    fetched: _Fetched,
) -> None:
    """Commit one object's outcome: its ledger row and its counties' dirty marks, atomically."""
    from sqlalchemy import insert, select, update

    from script_ec2.db.models import LedgerEntry

    if fetched.failure is not None:
        summary.failed.append({"key": obj.key, "reason": fetched.failure})
        log.event("object failed", key=obj.key, reason=fetched.failure, level=30)
        return
    summary.bytes_downloaded += fetched.nbytes
    now = datetime.now(UTC)
    with engine.begin() as conn:
        old = conn.execute(
            select(LedgerEntry.id, LedgerEntry.counties).where(
                LedgerEntry.source == summary.source, LedgerEntry.key == obj.key
            )
        ).first()
        old_counties = json.loads(old.counties) if old else []
        values: dict[str, Any] = {
            "etag": obj.etag,
            "size": obj.size,
            "last_modified": obj.last_modified,
            "sha256": fetched.sha256,
            "last_seen": now,
            "processed_at": now,
        }
        if fetched.quarantine is not None:
            summary.quarantined.append({"key": obj.key, "reason": fetched.quarantine})
            log.event("object quarantined", key=obj.key, reason=fetched.quarantine, level=30)
            values.update(status="quarantined", error=fetched.quarantine)
            dirty: set[str] = set()
        else:
            res = fetched.result
            assert res is not None
            summary.rows_ingested += res.rows_kept
            summary.dropped_rows.update(res.dropped)
            summary.clipped_rows.update(res.clipped)
            counties = sorted(res.counties)
            values.update(
                status="ok",
                error=None,
                kind=res.kind,
                rows=res.rows_kept,
                counties=json.dumps(counties),
                cache_stem=cache_stem(obj.key, obj.etag),
            )
            dirty = set(counties) | set(old_counties)
        if old is None:
            values.setdefault("kind", "")
            values.setdefault("rows", 0)
            values.setdefault("counties", "[]")
            values.setdefault("cache_stem", None)
            conn.execute(
                insert(LedgerEntry).values(
                    source=summary.source, key=obj.key, first_seen=now, **values
                )
            )
        else:
            conn.execute(update(LedgerEntry).where(LedgerEntry.id == old.id).values(**values))
        _mark_dirty(conn, summary.source, dirty)
    faults.checkpoint("after_record")


def _forget(engine: Engine, source: str, tracked: Tracked, key: str) -> None:
    """Remove a deleted object's ledger row and mark its counties dirty, atomically."""
    from sqlalchemy import delete, select

    from script_ec2.db.models import LedgerEntry

    with engine.begin() as conn:
        row = conn.execute(
            select(LedgerEntry.counties).where(LedgerEntry.source == source, LedgerEntry.key == key)
        ).first()
        counties = set(json.loads(row.counties)) if row else set()
        conn.execute(
            delete(LedgerEntry).where(LedgerEntry.source == source, LedgerEntry.key == key)
        )
        _mark_dirty(conn, source, counties)
    log.event("object deleted", key=key)


def _drop_lost_versions(
    engine: Engine,
    source: str,
    ledger: dict[str, Tracked],
    plan: Plan,
    layout: CacheLayout,
) -> list[str]:
    """Stop counting quarantined objects whose last good version is gone from the cache.

    Such an object keeps counting with its last good version while the bad one sits in the
    bucket; if that version's cache files are lost, it cannot be fetched again (the bucket holds
    only the bad one). Its rows then leave the statistics, loudly, until a corrected file is
    synced, instead of every later statistics rebuild failing on the missing files.
    """
    from sqlalchemy import select, update

    from script_ec2.db.models import LedgerEntry

    lost = [
        o.key
        for o in plan.unchanged
        if ledger[o.key].status == "quarantined" and not layout.complete(ledger[o.key])
    ]
    for key in lost:
        with engine.begin() as conn:
            row = conn.execute(
                select(LedgerEntry.id, LedgerEntry.counties).where(
                    LedgerEntry.source == source, LedgerEntry.key == key
                )
            ).one()
            counties = sorted(json.loads(row.counties))
            conn.execute(
                update(LedgerEntry)
                .where(LedgerEntry.id == row.id)
                .values(cache_stem=None, rows=0, counties="[]")
            )
            _mark_dirty(conn, source, counties)
        log.event(
            "last good version lost from the cache; its rows no longer count until a corrected "
            "file is synced",
            key=key,
            level=30,
        )
    return lost


def _mark_dirty(conn: Connection, source: str, counties: Iterable[str]) -> None:
    """Mark ``counties`` for a statistics rebuild (in the caller's transaction)."""
    from sqlalchemy import delete, insert

    from script_ec2.db.models import StatsDirty

    marked = sorted(set(counties))
    if not marked:
        return
    conn.execute(
        delete(StatsDirty).where(StatsDirty.source == source, StatsDirty.county.in_(marked))
    )
    conn.execute(insert(StatsDirty), [{"source": source, "county": c} for c in marked])


def _load_ledger(engine: Engine, source: str) -> dict[str, Tracked]:
    from sqlalchemy import select

    from script_ec2.db.models import LedgerEntry

    with engine.connect() as conn:
        rows = conn.execute(
            select(
                LedgerEntry.key,
                LedgerEntry.etag,
                LedgerEntry.size,
                LedgerEntry.status,
                LedgerEntry.cache_stem,
            ).where(LedgerEntry.source == source)
        )
        return {r.key: Tracked(r.key, r.etag, r.size, r.status, r.cache_stem) for r in rows}


def _touch_unchanged(
    engine: Engine, source: str, unchanged: list[ObjectInfo], now: datetime
) -> None:
    """Bump last_seen of every unchanged object in one executemany."""
    from sqlalchemy import bindparam, update

    from script_ec2.db.models import LedgerEntry

    if not unchanged:
        return
    stmt = (
        update(LedgerEntry)
        .where(LedgerEntry.source == source, LedgerEntry.key == bindparam("k"))
        .values(last_seen=now)
    )
    with engine.begin() as conn:
        conn.execute(stmt, [{"k": o.key} for o in unchanged])


def _zip_to_county(engine: Engine) -> dict[str, str]:
    from script_ec2.db.reference import zip_to_county

    with engine.connect() as conn:
        return zip_to_county(conn)


def collect_garbage(engine: Engine, source: str, layout: CacheLayout) -> int:
    """Delete cache files that no ledger row points at, and stray temp files; return the count."""
    from sqlalchemy import select

    from script_ec2.db.models import LedgerEntry

    with engine.connect() as conn:
        rows = conn.execute(
            select(LedgerEntry.key, LedgerEntry.cache_stem).where(LedgerEntry.source == source)
        ).all()
    stems = {r.cache_stem for r in rows if r.cache_stem}
    keys = {r.key for r in rows}
    removed = 0
    if layout.objects.exists():
        for path in layout.objects.iterdir():
            if path.name.split(".", 1)[0] not in stems:
                path.unlink(missing_ok=True)
                removed += 1
    if layout.raw.exists():
        for path in sorted(layout.raw.rglob("*"), reverse=True):
            if path.is_dir():
                if not any(path.iterdir()):
                    path.rmdir()
                continue
            if path.relative_to(layout.raw).as_posix() not in keys:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def watch(
    run_pass: Callable[[], SyncSummary],
    *,
    interval: timedelta,
    stop: threading.Event,
    on_summary: Callable[[SyncSummary], None],
    on_error: Callable[[ScriptEc2Error], None],
) -> None:
    """Run passes every ``interval`` until ``stop`` is set; a failed pass is reported, not fatal.

    A database or disk that fails during a pass is a failed pass too (the next one retries);
    any other exception is a bug and ends the loop.
    """
    while not stop.is_set():
        try:
            on_summary(run_pass())
        except ScriptEc2Error as exc:
            on_error(exc)
        except Exception as exc:
            message = environment_failure(exc)
            if message is None:
                raise
            on_error(ScriptEc2Error(message))
        stop.wait(interval.total_seconds())
