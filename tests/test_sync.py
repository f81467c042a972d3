"""``script-ec2 sync`` on the real S3 protocol (moto server) with SQLite and PostgreSQL: change
detection, quarantine, deletion, the settle window, dry runs, the lock, watching, error exits and
privacy of raw values.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import queue
import random
import re
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, select

from script_ec2.keys import cache_file_names
from tests.conftest import Result, free_port
from tests.fixtures_s3 import S3Bucket
from tests.sync_helpers import (
    DemoData,
    SyncEnv,
    drop_column,
    set_cell,
)

Cli = Callable[..., Result]
# README "Summary": these keys, plus the documented extras below.
SUMMARY_KEYS = {
    "new",
    "changed",
    "deleted",
    "unchanged",
    "quarantined",
    "rows_ingested",
    "bytes_downloaded",
    "seconds",
}
DOCUMENTED_EXTRAS = {
    "settling",
    "still_quarantined",
    "failed",
    "quarantined_files",
    "failed_files",
    "dropped_rows",
    "clipped_rows",
    "counties_updated",
    "lost_from_cache",
    "dry_run",
    "interrupted",
    "source",
}


def county_of(demo: DemoData, index: int) -> str:
    z = demo.summary.zips[index]
    return next(f.county for f in demo.summary.files if f.zip_code == z and f.county)


def expected_cache_files(env: SyncEnv) -> set[str]:
    """The cache files the ledger accounts for: rows + partial aggregates + the raw download."""
    files: set[str] = set()
    for key, row in env.ledger().items():
        files.add(f"raw/{key}")
        if row.cache_stem:
            files.update(f"objects/{n}" for n in cache_file_names(row.cache_stem, row.kind))
    return files


# -- new, changed, deleted, unchanged --------------------------------------------------------------


def test_new_changed_deleted_unchanged(env: SyncEnv, demo: DemoData) -> None:
    first = demo.zip_files(0) + demo.zip_files(1) + demo.zip_files(2)
    env.upload(demo, first)
    env.put("county_ev_distribution.csv", demo.read("county_ev_distribution.csv"))

    s1 = env.sync_json()
    assert set(s1) == SUMMARY_KEYS | DOCUMENTED_EXTRAS
    assert (s1["new"], s1["changed"], s1["deleted"], s1["unchanged"]) == (6, 0, 0, 0)
    assert s1["quarantined"] == 0 and s1["failed"] == 0 and not s1["dry_run"]
    assert s1["rows_ingested"] == sum(demo.rows(n) for n in first)
    assert s1["bytes_downloaded"] == sum(len(demo.read(n)) for n in first)
    assert s1["counties_updated"] == sorted({county_of(demo, i) for i in range(3)})
    ledger = env.ledger()
    assert sorted(ledger) == sorted(first)  # the EV distribution file is ignored
    for name in first:
        data, row = demo.read(name), ledger[name]
        assert row.status == "ok" and row.error is None
        assert row.size == len(data)
        assert row.etag == hashlib.md5(data).hexdigest()  # S3 ETag of a single-part upload
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert row.rows == demo.rows(name)
        zip_index = next(i for i in range(3) if name in demo.zip_files(i))
        assert json.loads(row.counties) == [county_of(demo, zip_index)]
    assert env.cache_files() == expected_cache_files(env)
    before = env.county_stats()

    # zip 0's sessions lose their last row (a new size), zip 1's intervals go, zip 3 arrives
    sessions0, intervals1 = demo.zip_files(0)[0], demo.zip_files(1)[1]
    lines = demo.read(sessions0).splitlines(keepends=True)
    env.put(sessions0, b"".join(lines[:-1]))
    env.delete(intervals1)
    env.upload(demo, demo.zip_files(3))

    s2 = env.sync_json()
    assert (s2["new"], s2["changed"], s2["deleted"], s2["unchanged"]) == (2, 1, 1, 4)
    assert s2["rows_ingested"] == demo.rows(sessions0) - 1 + sum(
        demo.rows(n) for n in demo.zip_files(3)
    )
    ledger = env.ledger()
    assert intervals1 not in ledger
    assert ledger[sessions0].rows == demo.rows(sessions0) - 1
    assert env.parquet_rows(sessions0) == demo.rows(sessions0) - 1
    after = env.county_stats()
    last_energy = float(lines[-1].decode().split(",")[12])
    c0, c1, c3 = county_of(demo, 0), county_of(demo, 1), county_of(demo, 3)
    assert after[c0]["sessions"] == before[c0]["sessions"] - 1
    assert after[c0]["energy_kwh"] == pytest.approx(before[c0]["energy_kwh"] - last_energy)
    assert after[c1]["sessions"] == before[c1]["sessions"]
    assert after[c1]["peak_power_kw"] == 0.0 and after[c1]["peak_daily_energy_kwh"] == 0.0
    assert after[c3]["sessions"] == demo.rows(demo.zip_files(3)[0])
    assert env.cache_files() == expected_cache_files(env)

    s3 = env.sync_json()
    assert (s3["new"], s3["changed"], s3["deleted"], s3["unchanged"]) == (0, 0, 0, 7)
    assert s3["rows_ingested"] == 0 and s3["bytes_downloaded"] == 0
    assert s3["counties_updated"] == []
    assert env.county_stats() == after


def test_same_size_rewrite_is_a_change_and_replaces_rows(env: SyncEnv, demo: DemoData) -> None:
    sessions, intervals = demo.zip_files(0)
    env.upload(demo, [sessions, intervals])
    env.sync_json()
    county = county_of(demo, 0)
    before = env.county_stats()[county]
    old = env.ledger()[sessions]

    original = demo.read(sessions)
    energy = re.search(rb"\n[^\n]*?,(\d+\.\d*[0-8]),", original)
    assert energy is not None
    old_value = energy.group(1)
    new_value = old_value[:-1] + bytes([old_value[-1] + 1])  # last digit + 1: same length
    rewritten = original[: energy.start(1)] + new_value + original[energy.end(1) :]
    assert len(rewritten) == len(original) and rewritten != original
    env.put(sessions, rewritten)

    summary = env.sync_json()
    assert (summary["new"], summary["changed"], summary["unchanged"]) == (0, 1, 1)
    row = env.ledger()[sessions]
    assert row.size == old.size and row.etag != old.etag
    assert row.sha256 == hashlib.sha256(rewritten).hexdigest()
    assert row.cache_stem != old.cache_stem
    after = env.county_stats()[county]
    assert after["sessions"] == before["sessions"] == demo.rows(sessions)
    delta = float(new_value) - float(old_value)
    assert after["energy_kwh"] == pytest.approx(before["energy_kwh"] + delta, rel=1e-12)
    assert env.parquet_rows(sessions) == demo.rows(sessions)
    assert [z["sessions"] for z in env.stats("zip")] == [demo.rows(sessions)]
    # the old version's rows are gone from the cache, not kept beside the new ones
    assert env.cache_files() == expected_cache_files(env)
    assert not any(f.startswith(f"objects/{old.cache_stem}") for f in env.cache_files())


def test_unchanged_objects_cost_no_get_and_no_parse(
    env: SyncEnv, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.client

    import script_ec2.ingest

    names = demo.zip_files(0) + demo.zip_files(1)
    env.upload(demo, names)
    bad = demo.zip_files(2)[0]
    env.put(bad, drop_column(demo.read(bad), "Zip Code"))
    assert env.sync().exit_code == 3

    calls: Counter[str] = Counter()
    real_call = botocore.client.BaseClient._make_api_call
    real_ingest = script_ec2.ingest.ingest_file

    def counting_call(self: Any, operation: str, params: Any) -> Any:
        calls[operation] += 1
        return real_call(self, operation, params)

    def counting_ingest(*args: Any, **kwargs: Any) -> Any:
        calls["ingest"] += 1
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counting_call)
    monkeypatch.setattr(script_ec2.ingest, "ingest_file", counting_ingest)
    processed = {k: r.processed_at for k, r in env.ledger().items()}

    summary = env.sync_json(expect=3)  # the quarantined file is still there
    assert calls == Counter({"ListObjectsV2": 1})
    assert summary["unchanged"] == 5 and summary["still_quarantined"] == 1
    assert summary["quarantined"] == 0 and summary["bytes_downloaded"] == 0
    assert {k: r.processed_at for k, r in env.ledger().items()} == processed

    # the spy does see a changed object: one GET, one parse
    env.put(names[0], demo.read(names[0]) + b"\n")
    calls.clear()
    summary = env.sync_json(expect=3)
    assert summary["changed"] == 1
    assert calls == Counter({"ListObjectsV2": 1, "GetObject": 1, "ingest": 1})


# -- quarantine ------------------------------------------------------------------------------------


LATIN1_E_ACUTE = "é".encode("latin-1")
BAD_CASES = (
    "missing_column",
    "unparseable_value",
    "unparseable_interval_time",
    "utf16",
    "latin1",
    "truncated_csv",
    "truncated_gzip",
    "binary_garbage",
)


def truncate_mid_line(data: bytes, fields: int = 10) -> tuple[bytes, int]:
    """Cut inside the last data row, after ``fields`` fields; return the bytes and that row."""
    lines = data.rstrip(b"\n").split(b"\n")
    last = lines[-1]
    cut = [i for i, ch in enumerate(last) if ch == ord(",")][fields - 1]
    return b"\n".join([*lines[:-1], last[:cut]]), len(lines) - 1


def bad_file(case: str, demo: DemoData, index: int) -> tuple[str, bytes, bytes, str]:
    """For zip ``index``: (key, bad bytes, corrected bytes, regex the reason must match)."""
    sessions, intervals = demo.zip_files(index)
    good = demo.read(sessions)
    if case == "missing_column":
        return sessions, drop_column(good, "Energy (kWh)"), good, r"missing column\(s\) 'Energy"
    if case == "unparseable_value":
        bad = set_cell(good, 3, "Max Power", "fast")
        return sessions, bad, good, r"^column 'Max Power' row 3: the value is not a number$"
    if case == "unparseable_interval_time":
        bad = set_cell(demo.read(intervals), 5, "Interval Start Time (Local)", "yesterday")
        reason = r"^column 'Interval Start Time \(Local\)' row 5: the value is not a timestamp"
        return intervals, bad, demo.read(intervals), reason
    if case == "utf16":
        return sessions, good.decode().encode("utf-16"), good, r"^not UTF-8 text \(byte offset 0"
    if case == "latin1":
        bad = set_cell(good, 2, "City", "San José").replace("é".encode(), LATIN1_E_ACUTE)
        offset = bad.index(LATIN1_E_ACUTE)
        return sessions, bad, good, rf"^not UTF-8 text \(byte offset {offset}\)$"
    if case == "truncated_csv":
        bad, row = truncate_mid_line(good)
        reason = rf"^row {row} \(line {row + 1}\) has 10 fields, the header has 38 \(truncated"
        return sessions, bad, good, reason
    if case == "truncated_gzip":
        packed = gzip.compress(good)
        return sessions + ".gz", packed[: len(packed) // 2], packed, r"^truncated gzip data"
    if case == "binary_garbage":
        garbage = b"\x00\xff" + random.Random(7).randbytes(3000)
        return sessions, garbage, good, r"^not UTF-8 text"
    raise AssertionError(case)


def test_bad_files_are_quarantined_until_corrected(env: SyncEnv, demo: DemoData) -> None:
    """One bad file of each kind, each in its own zip, beside good files, in one pass."""
    cases = {case: bad_file(case, demo, i) for i, case in enumerate(BAD_CASES)}
    good_names: list[str] = []
    for i, (key, bad, _, _) in enumerate(cases.values()):
        env.put(key, bad)
        good_names += [n for n in demo.zip_files(i) if not key.startswith(n)]
    good_names += demo.zip_files(len(BAD_CASES))
    env.upload(demo, good_names)

    result = env.sync()
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "files not ingested" in result.stdout
    ledger = env.ledger()
    for case, (key, _, _, reason) in cases.items():
        row = ledger[key]
        assert key in result.stdout, case
        assert re.search(rf"object quarantined key={re.escape(key)} reason=", result.stderr), case
        assert row.status == "quarantined", case
        assert re.search(reason, row.error), f"{case}: {row.error}"
        assert "\n" not in row.error, case
        assert row.cache_stem is None and row.rows == 0, case
    for name in good_names:  # the rest of the pass went on
        assert ledger[name].status == "ok" and ledger[name].rows == demo.rows(name), name
    good_county = county_of(demo, len(BAD_CASES))
    sessions = demo.zip_files(len(BAD_CASES))[0]
    assert env.county_stats()[good_county]["sessions"] == demo.rows(sessions)

    for key, _, fixed, _ in cases.values():
        env.put(key, fixed)
    summary = env.sync_json()
    assert summary["changed"] == len(BAD_CASES) and summary["quarantined"] == 0
    ledger = env.ledger()
    assert {r.status for r in ledger.values()} == {"ok"}
    assert {r.error for r in ledger.values()} == {None}
    stats = env.county_stats()
    for i in range(len(BAD_CASES)):
        sessions = demo.zip_files(i)[0]
        assert stats[county_of(demo, i)]["sessions"] == demo.rows(sessions)
    assert env.cache_files() == expected_cache_files(env)


def test_quarantined_change_keeps_the_last_good_version(env: SyncEnv, demo: DemoData) -> None:
    sessions, intervals = demo.zip_files(0)
    env.upload(demo, [sessions, intervals])
    env.sync_json()
    before, good = env.county_stats(), env.ledger()[sessions]

    env.put(sessions, set_cell(demo.read(sessions), 4, "Session Time (secs)", "long"))
    summary = env.sync_json(expect=3)
    assert summary["changed"] == 1 and summary["quarantined"] == 1
    assert summary["quarantined_files"] == [
        {"key": sessions, "reason": "column 'Session Time (secs)' row 4: the value is not a number"}
    ]
    row = env.ledger()[sessions]
    assert row.status == "quarantined" and row.cache_stem == good.cache_stem
    assert env.county_stats() == before
    assert env.parquet_rows(sessions) == demo.rows(sessions)

    again = env.sync_json(expect=3)
    assert again["still_quarantined"] == 1 and again["quarantined"] == 0

    env.put(sessions, demo.read(sessions) + b"\n")  # a new ETag, the same rows
    assert env.sync_json()["changed"] == 1
    assert env.ledger()[sessions].status == "ok"
    assert env.county_stats() == before
    assert env.cache_files() == expected_cache_files(env)


# -- deletion --------------------------------------------------------------------------------------


def test_deleted_object_takes_its_rows_and_statistics_with_it(env: SyncEnv, demo: DemoData) -> None:
    names = demo.zip_files(0) + demo.zip_files(1) + demo.zip_files(2)
    env.upload(demo, names)
    env.sync_json()
    stats_before = env.county_stats()
    gone = demo.zip_files(0)
    stems = {env.ledger()[n].cache_stem for n in gone}
    for name in gone:
        env.delete(name)

    summary = env.sync_json()
    assert summary["deleted"] == 2 and summary["unchanged"] == 4
    assert summary["counties_updated"] == [county_of(demo, 0)]
    ledger = env.ledger()
    assert set(ledger) == set(names) - set(gone)
    county0 = county_of(demo, 0)
    after = env.county_stats()
    assert county0 not in after
    assert after == {c: s for c, s in stats_before.items() if c != county0}
    assert str(demo.summary.zips[0]) not in {z["zip"] for z in env.stats("zip")}
    assert county0 not in {m["county"] for m in env.stats("month")}
    assert county0 not in {s["county"] for s in env.stats("segment")}
    files = env.cache_files()
    assert files == expected_cache_files(env)
    assert not any(stem and stem in f for f in files for stem in stems)
    assert not any(name in f for f in files for name in gone)


def test_mass_delete_is_refused_unless_allowed(env: SyncEnv, demo: DemoData) -> None:
    names = demo.zip_files(0) + demo.zip_files(1) + demo.zip_files(2)
    env.upload(demo, names)
    env.sync_json()
    before_rows, before_stats = env.ledger_rows(), env.county_stats()
    for name in names[:4]:
        env.delete(name)

    refused = env.sync()
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        f"Error: refusing to delete 4 of 6 tracked objects under {env.source} (more than 50%): "
        "check --data-uri, or pass --allow-mass-delete"
    )
    assert env.ledger_rows() == before_rows  # not even last_seen moved
    assert env.county_stats() == before_stats

    env.put(names[0], demo.read(names[0]))  # the same bytes again: exactly half now missing
    summary = env.sync_json()
    assert (summary["deleted"], summary["unchanged"], summary["new"]) == (3, 3, 0)

    env.delete(names[0])
    env.delete(names[4])
    assert env.sync().exit_code == 1  # 2 of 3
    allowed = env.sync_json("--allow-mass-delete")
    assert allowed["deleted"] == 2
    assert set(env.ledger()) == {names[5]}
    assert set(env.county_stats()) == {county_of(demo, 2)}


# -- objects that cannot be fetched ---------------------------------------------------------------


def test_object_vanishing_or_growing_after_the_listing_fails_alone(
    env: SyncEnv, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import script_ec2.faults

    sessions0, intervals0 = demo.zip_files(0)
    sessions1, intervals1 = demo.zip_files(1)
    env.upload(demo, [sessions0, intervals0, sessions1, intervals1])
    real_checkpoint = script_ec2.faults.checkpoint

    def race(name: str) -> None:
        if name == "after_list":  # another writer acts between our LIST and our GETs
            env.delete(sessions0)
            env.put(intervals0, demo.read(intervals0) + b"\n")
        real_checkpoint(name)

    monkeypatch.setattr(script_ec2.faults, "checkpoint", race)
    summary = env.sync_json(expect=3)
    monkeypatch.setattr(script_ec2.faults, "checkpoint", real_checkpoint)
    failed = {f["key"]: f["reason"] for f in summary["failed_files"]}
    assert set(failed) == {sessions0, intervals0} and summary["failed"] == 2
    assert "not found" in failed[sessions0]
    assert "will retry next pass" in failed[intervals0]
    assert set(env.ledger()) == {sessions1, intervals1}
    assert env.cache_files() == expected_cache_files(env)

    summary = env.sync_json()
    assert (summary["new"], summary["failed"], summary["deleted"]) == (1, 0, 0)
    assert env.ledger()[intervals0].rows == demo.rows(intervals0)


def test_a_full_disk_while_ingesting_fails_the_object_and_loses_nothing(
    env: SyncEnv, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import pyarrow.parquet as pq

    sessions, intervals = demo.zip_files(0)
    env.upload(demo, [sessions, intervals])
    real_write = pq.ParquetWriter.write_table

    def full(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    result = env.sync("--format", "json")
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    failed = {f["key"]: f["reason"] for f in summary["failed_files"]}
    assert set(failed) == {sessions, intervals}
    assert all("No space left on device" in reason for reason in failed.values())
    assert env.ledger() == {}
    assert not [p for p in env.cache_files() if p.endswith(".tmp")]

    monkeypatch.setattr(pq.ParquetWriter, "write_table", real_write)
    summary = env.sync_json()
    assert (summary["new"], summary["failed"]) == (2, 0)
    assert env.cache_files() == expected_cache_files(env)


def test_a_database_failing_mid_pass_is_one_line_and_keeps_what_was_committed(
    env: SyncEnv, demo: DemoData, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import script_ec2.stats

    env.upload(demo, demo.zip_files(0))
    real_recompute = script_ec2.stats.recompute_dirty

    def dead(*args: Any, **kwargs: Any) -> None:
        raise OperationalError(
            "UPDATE county_stats SET x=? WHERE y=?",
            ("hidden-param",),
            sqlite3.OperationalError("disk I/O error"),
        )

    monkeypatch.setattr(script_ec2.stats, "recompute_dirty", dead)
    result = env.sync()
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: database failed: disk I/O error")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "hidden-param" not in result.stderr and "UPDATE" not in result.stderr
    assert len(env.ledger()) == 2  # the objects' own commits stand

    monkeypatch.setattr(script_ec2.stats, "recompute_dirty", real_recompute)
    summary = env.sync_json()
    assert (summary["new"], summary["unchanged"]) == (0, 2)
    assert env.county_stats()[county_of(demo, 0)]["sessions"] == demo.rows(demo.zip_files(0)[0])


def test_object_key_that_cannot_be_a_path_fails_alone(
    env: SyncEnv, demo: DemoData, tmp_path: Path
) -> None:
    sessions, intervals = demo.zip_files(0)
    env.put(sessions, demo.read(sessions))
    odd = [f"odd//{intervals}", f"a/../../../../../escaped/{intervals}"]
    for key in odd:
        env.put(key, demo.read(intervals))

    summary = env.sync_json(expect=3)
    failed = {f["key"]: f["reason"] for f in summary["failed_files"]}
    assert set(failed) == set(odd)
    assert all("invalid object key" in reason for reason in failed.values())
    assert set(env.ledger()) == {sessions}
    assert not list(tmp_path.rglob("escaped"))  # nothing was created outside the cache
    assert env.county_stats()[county_of(demo, 0)]["sessions"] == demo.rows(sessions)


def test_lost_cache_is_refilled_by_the_next_pass(env: SyncEnv, demo: DemoData) -> None:
    """A cache emptied (or a new host sharing the PostgreSQL ledger) must not break a pass."""
    import shutil

    names = demo.zip_files(0) + demo.zip_files(1)
    env.upload(demo, names)
    env.sync_json()
    before = env.snapshot()
    shutil.rmtree(env.cache_dir)

    env.put(names[0], demo.read(names[0]) + b"\n")  # one county's statistics must be rebuilt
    summary = env.sync_json()
    assert summary["changed"] == 4 and summary["unchanged"] == 0
    after = env.snapshot()
    assert after.stats == before.stats
    assert after.cache_files == expected_cache_files(env)
    assert env.cli("stats", "--refresh").exit_code == 0
    assert env.snapshot().stats == before.stats


def test_a_lost_aggregate_file_is_refetched_and_refresh_names_it(
    env: SyncEnv, demo: DemoData
) -> None:
    """Only one partial gone (not the row file): stats --refresh says which object, sync heals."""
    names = demo.zip_files(0)
    env.upload(demo, names)
    env.sync_json()
    before = env.snapshot()
    intervals = env.ledger()[names[1]]
    lost = env.layout.objects / f"{intervals.cache_stem}.agg.slots.parquet"
    lost.unlink()

    refreshed = env.cli("stats", "--refresh")
    assert refreshed.exit_code == 1
    message = refreshed.stderr.strip()
    assert "Traceback" not in refreshed.stderr and "\n" not in message
    assert f"the cached 'slots' aggregate of {names[1]} is missing: {lost}" in message
    assert "run script-ec2 sync" in message
    assert env.snapshot().stats == before.stats  # nothing was half-rewritten

    summary = env.sync_json()
    assert (summary["changed"], summary["unchanged"]) == (1, 1)
    assert lost.exists() and env.snapshot() == before

    lost.write_bytes(b"PAR1" + bytes(64))  # as a power cut can leave it
    damaged = env.cli("stats", "--refresh")
    assert damaged.exit_code == 1 and "Traceback" not in damaged.stderr
    assert f"aggregate of {names[1]} cannot be read (delete it): {lost}" in damaged.stderr
    lost.unlink()
    assert env.sync_json()["changed"] == 1 and env.snapshot() == before


def test_a_quarantined_objects_lost_last_good_version_stops_counting(
    env: SyncEnv, demo: DemoData
) -> None:
    sessions, intervals = demo.zip_files(0)
    other = demo.zip_files(1)
    env.upload(demo, [sessions, intervals, *other])
    env.sync_json()
    county, other_county = county_of(demo, 0), county_of(demo, 1)
    before = env.county_stats()
    env.put(sessions, set_cell(demo.read(sessions), 4, "Session Time (secs)", "long"))
    assert env.sync_json(expect=3)["quarantined"] == 1
    good = env.ledger()[sessions]
    assert good.status == "quarantined" and good.cache_stem
    for path in env.layout.objects.glob(f"{good.cache_stem}*"):
        path.unlink()  # the last good version is gone, and the bucket holds only the bad one

    summary = env.sync_json(expect=3)
    assert summary["lost_from_cache"] == [sessions] and summary["still_quarantined"] == 1
    row = env.ledger()[sessions]
    assert (row.status, row.cache_stem, row.rows) == ("quarantined", None, 0)
    after = env.county_stats()
    assert after[county]["sessions"] == 0  # its intervals still count, its sessions no longer
    assert after[county]["peak_power_kw"] == before[county]["peak_power_kw"]
    assert after[other_county] == before[other_county]
    assert env.sync_json(expect=3)["lost_from_cache"] == []  # said once, then stable
    assert env.cli("stats", "--refresh").exit_code == 0

    env.put(sessions, demo.read(sessions) + b"\n")  # corrected
    assert env.sync_json()["changed"] == 1
    assert env.county_stats() == before
    assert env.cache_files() == expected_cache_files(env)


# -- settle, dry run -------------------------------------------------------------------------------


def test_settle_leaves_recently_modified_objects_for_a_later_pass(
    env: SyncEnv, demo: DemoData
) -> None:
    sessions, intervals = demo.zip_files(0)
    env.upload(demo, [sessions, intervals])
    summary = env.sync_json("--settle", "10")
    assert summary["settling"] == 2 and summary["new"] == 0 and summary["rows_ingested"] == 0
    assert env.ledger() == {} and env.cache_files() == set() and env.stats("county") == []

    assert env.sync_json()["new"] == 2
    old = env.ledger()[sessions]
    env.put(sessions, demo.read(sessions) + b"\n")
    summary = env.sync_json("--settle", "10")
    assert (summary["settling"], summary["changed"], summary["unchanged"]) == (1, 0, 1)
    assert env.ledger()[sessions].etag == old.etag  # the previous version keeps counting

    time.sleep(0.8)  # older than a 0.6 s window now (S3 times are whole seconds, rounded down)
    summary = env.sync_json("--settle", "0.01")
    assert (summary["settling"], summary["changed"]) == (0, 1)
    assert env.ledger()[sessions].etag != old.etag


def test_dry_run_prints_the_plan_and_writes_nothing(env: SyncEnv, demo: DemoData) -> None:
    names = demo.zip_files(0) + demo.zip_files(1)
    env.upload(demo, names)
    env.put("county_ev_distribution.csv", demo.read("county_ev_distribution.csv"))

    table = env.sync("--dry-run")
    assert table.exit_code == 0, table.stderr
    assert "sync plan (dry run)" in table.stdout
    for name in names:
        assert re.search(rf"new\s.*{re.escape(name)}", table.stdout), name
    assert re.search(r"ignored\s.*county_ev_distribution\.csv", table.stdout)
    plan = env.sync_json("--dry-run")
    assert plan["dry_run"] is True and plan["new"] == 4
    assert plan["rows_ingested"] == 0 and plan["bytes_downloaded"] == 0
    assert plan["plan"] == {
        "new": sorted(names),
        "changed": [],
        "deleted": [],
        "unchanged": [],
        "settling": [],
        "ignored": ["county_ev_distribution.csv"],
    }
    empty = env.snapshot()
    assert empty.ledger == {} and empty.cache_files == set() and empty.dirty == []
    assert all(rows == [] for rows in empty.stats.values())
    assert not (env.cache_dir / "sources").exists()

    env.sync_json()
    rows, before = env.ledger_rows(), env.snapshot()
    sessions0, intervals0 = demo.zip_files(0)
    sessions1, intervals1 = demo.zip_files(1)
    env.put(sessions0, demo.read(sessions0) + b"\n")
    env.delete(intervals1)
    env.upload(demo, demo.zip_files(2)[:1])
    plan = env.sync_json("--dry-run")
    assert plan["plan"] == {
        "new": demo.zip_files(2)[:1],
        "changed": [sessions0],
        "deleted": [intervals1],
        "unchanged": sorted([intervals0, sessions1]),
        "settling": [],
        "ignored": ["county_ev_distribution.csv"],
    }
    assert (plan["new"], plan["changed"], plan["deleted"], plan["unchanged"]) == (1, 1, 1, 2)
    assert env.ledger_rows() == rows  # not even last_seen
    assert env.snapshot() == before


# -- the lock --------------------------------------------------------------------------------------

HELD = re.compile(
    r"Error: another sync is running \((?P<host>[^,]+), pid (?P<pid>\d+), "
    r"since (?P<since>[0-9T:+-]+)\) on (?P<source>\S+); try again later\n"
)


def test_two_caches_on_one_sqlite_database_exclude_each_other(tmp_path: Path) -> None:
    """The ledger is shared through the database: a lock on the cache folder alone is not enough."""
    from script_ec2.db.engine import connect
    from script_ec2.errors import LockHeld
    from script_ec2.lock import run_lock

    engine = connect(f"sqlite:///{tmp_path / 'shared.db'}")
    try:
        with (
            run_lock(engine, "sync s3://b/p", tmp_path / "cache-a" / "locks"),
            pytest.raises(LockHeld, match="another sync is running"),
            run_lock(engine, "sync s3://b/p", tmp_path / "cache-b" / "locks"),
        ):
            pass
        other = connect(f"sqlite:///{tmp_path / 'other.db'}")
        try:  # the same cache with another database is excluded too (its GC would clash)
            with (
                run_lock(engine, "sync s3://b/p", tmp_path / "cache-a" / "locks"),
                pytest.raises(LockHeld),
                run_lock(other, "sync s3://b/p", tmp_path / "cache-a" / "locks"),
            ):
                pass
        finally:
            other.dispose()
        with run_lock(engine, "sync s3://b/p", tmp_path / "cache-b" / "locks"):
            pass  # released
        assert (tmp_path / "shared.db.locks").is_dir()
    finally:
        engine.dispose()


def test_second_sync_exits_75_and_changes_nothing_while_the_lock_is_held(
    env: SyncEnv, demo: DemoData
) -> None:
    from script_ec2.db.engine import connect
    from script_ec2.lock import run_lock

    env.upload(demo, demo.zip_files(0))
    env.sync_json()
    env.upload(demo, demo.zip_files(1))
    env.put(demo.zip_files(0)[0], demo.read(demo.zip_files(0)[0]) + b"\n")
    rows, before = env.ledger_rows(), env.snapshot()

    engine = connect(env.db_url)
    try:
        with run_lock(engine, f"sync {env.source}", env.cache_dir / "locks"):
            started = datetime.now(UTC)
            contender = env.run("sync")
            refresh = env.cli("stats", "--refresh")  # the same lock, from another connection/fd
    finally:
        engine.dispose()

    assert contender.returncode == 75, contender.stderr
    assert contender.stdout == ""
    held = HELD.fullmatch(contender.stderr)
    assert held, contender.stderr
    assert held["host"] == socket.gethostname() and int(held["pid"]) == os.getpid()
    assert held["source"] == env.source
    since = datetime.fromisoformat(held["since"])
    assert started - timedelta(minutes=5) <= since <= datetime.now(UTC)
    assert refresh.exit_code == 75 and HELD.fullmatch(refresh.stderr), refresh.stderr
    assert env.ledger_rows() == rows and env.snapshot() == before

    summary = env.sync_json()  # released: the next pass does the work
    assert (summary["new"], summary["changed"]) == (2, 1)


# -- watch -----------------------------------------------------------------------------------------


def test_watch_survives_a_database_failure_and_stops_on_a_bug() -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from script_ec2.errors import ScriptEc2Error
    from script_ec2.sync import SyncSummary, watch

    stop = threading.Event()
    outcomes: list[BaseException | None] = [
        OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")),
        None,
        ValueError("a bug"),
    ]
    summaries: list[SyncSummary] = []
    errors: list[str] = []

    def run_pass() -> SyncSummary:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return SyncSummary(source="s3://b/p")

    def on_error(exc: ScriptEc2Error) -> None:
        errors.append(str(exc))

    with pytest.raises(ValueError, match="a bug"):
        watch(
            run_pass,
            interval=timedelta(0),
            stop=stop,
            on_summary=summaries.append,
            on_error=on_error,
        )
    assert len(summaries) == 1 and outcomes == []
    assert len(errors) == 1 and errors[0].startswith("database failed: database is locked")


def test_watch_runs_passes_until_sigterm(env: SyncEnv, demo: DemoData) -> None:
    env.upload(demo, demo.zip_files(0))
    proc = env.start("sync", "--watch", "--interval", "1s")
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def next_pass() -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(seen)
                continue
            seen.append(line)
            if line.startswith("sync finished"):
                return line
        raise AssertionError("no pass finished within 60 s:\n" + "".join(seen))

    try:
        assert "new=2 " in next_pass()
        env.upload(demo, demo.zip_files(1))
        while "new=2 " not in next_pass():  # later passes pick up what arrives meanwhile
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in "".join(seen)
    assert {r.status for r in env.ledger().values()} == {"ok"} and len(env.ledger()) == 4


# -- errors a user can reach -----------------------------------------------------------------------


def test_missing_bucket_fails_with_one_line(env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", "s3://script-ec2-no-such-bucket/prefix")
    result = env.sync()
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: bucket 'script-ec2-no-such-bucket' not found at endpoint http://127.0.0.1:"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_unreachable_database_fails_with_one_line(
    backend: str,
    s3_bucket: S3Bucket,
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend == "sqlite":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        url, reason = f"sqlite:///{blocker}/script-ec2.db", "is a file, not a folder"
    else:
        port = free_port()
        url, reason = f"postgresql://postgres:s3cr3t@127.0.0.1:{port}/script_ec2", f"{port}"
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", url)
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", s3_bucket.uri)
    monkeypatch.setenv("SCRIPT_EC2_CACHE_DIR", str(tmp_path / "cache"))
    for args in (["sync"], ["stats"]):
        result = cli(*args)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.startswith("Error: cannot connect to database ")
        assert reason in result.stderr and "s3cr3t" not in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xml"], "--format must be table or json, got 'xml'"),
        (["--concurrency", "0"], "--concurrency must be between 1 and 64, got 0"),
        (["--settle", "-1"], "--settle must be zero or more minutes, got -1.0"),
        (["--watch", "--interval", "0s"], "--watch needs an --interval of at least 1s"),
        (["--watch", "--dry-run"], "cannot be combined with --dry-run"),
    ],
)
def test_bad_sync_options_exit_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli("sync", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and message in result.stderr


# -- privacy ---------------------------------------------------------------------------------------

PLANTED_DRIVER = "DRV-PLANTED-7Q4XZ"
PLANTED_SESSION = "918273645546372"


def _plant(data: bytes, row: int, *cells: tuple[str, str]) -> bytes:
    for column, value in cells:
        data = set_cell(data, row, column, value)
    return data


def test_planted_identifiers_reach_no_log_error_or_table(env: SyncEnv, demo: DemoData) -> None:
    ids = (("Driver ID", PLANTED_DRIVER), ("Session ID", PLANTED_SESSION))
    s0, s1, i2, s3 = (
        demo.zip_files(0)[0],
        demo.zip_files(1)[0],
        demo.zip_files(2)[1],
        demo.zip_files(3)[0],
    )
    # a bad value in the row that carries the identifiers
    env.put(s0, _plant(demo.read(s0), 3, *ids, ("Energy (kWh)", "lots")))
    # a file cut inside the row that carries them, after both identifiers
    last = demo.rows(s1)
    env.put(s1, truncate_mid_line(_plant(demo.read(s1), last, *ids), fields=16)[0])
    # an interval row with a planted session and a bad energy
    bad_interval = (("Session ID", PLANTED_SESSION), ("Interval Energy", "zero"))
    env.put(i2, _plant(demo.read(i2), 2, *bad_interval))
    # a good file carrying a Driver ID, a column the cache does not keep
    env.put(s3, _plant(demo.read(s3), 1, ("Driver ID", PLANTED_DRIVER)))
    env.upload(demo, [demo.zip_files(0)[1], demo.zip_files(1)[1], demo.zip_files(2)[0]])

    outputs = [
        env.cli("--log-format", "json", "sync"),
        env.cli("sync", "--format", "json"),
        env.cli("--log-format", "json", "stats", "--by", "zip", "--format", "csv"),
    ]
    assert [r.exit_code for r in outputs] == [3, 3, 0]
    errors = {k: r.error for k, r in env.ledger().items() if r.status == "quarantined"}
    assert set(errors) == {s0, s1, i2}
    assert errors[s0] == "column 'Energy (kWh)' row 3: the value is not a number"
    assert "column 'Interval Energy'" in errors[i2] and "truncated" in errors[s1]
    assert not any("lots" in e or "zero" in e for e in errors.values())
    assert env.ledger()[s3].status == "ok"
    for result in outputs:
        for text in (result.stdout, result.stderr):
            assert PLANTED_DRIVER not in text and PLANTED_SESSION not in text

    metadata = MetaData()
    metadata.reflect(env.engine)
    scanned = 0
    with env.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    scanned += 1
                    assert PLANTED_DRIVER not in str(value), table.name
                    assert PLANTED_SESSION not in str(value), table.name
    assert scanned > 5_000  # every table, the reference data included
