"""Crash safety of ``script-ec2 sync``: a real ``kill -9`` at each checkpoint of a pass, then a
re-run, must leave the ledger, the cache and the statistics exactly as one clean pass leaves them,
on SQLite and PostgreSQL alike (and the lock must die with the killed process).
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from script_ec2.db.engine import connect
from script_ec2.settings import resolve
from script_ec2.store import open_store
from script_ec2.sync import run_sync
from tests.conftest import Result
from tests.sync_helpers import (
    DemoData,
    Snapshot,
    SyncEnv,
    set_cell,
    take_snapshot,
)

Cli = Callable[..., Result]
Put = Callable[[str, bytes], object]
Delete = Callable[[str], object]

# The N-th arrival at a per-object checkpoint, so that some objects are done and some are not.
CHECKPOINTS = (
    "after_list",
    "after_download#2",
    "after_ingest#2",
    "after_record#2",
    "before_stats",
    "before_gc",
)


def first_state(demo: DemoData, put: Put) -> None:
    for i in range(3):
        for name in demo.zip_files(i):
            put(name, demo.read(name))


def second_state(demo: DemoData, put: Put, delete: Delete) -> None:
    """One change, one deletion, three new objects (one of them bad) after the first pass."""
    sessions0 = demo.zip_files(0)[0]
    put(sessions0, b"".join(demo.read(sessions0).splitlines(keepends=True)[:-2]))
    delete(demo.zip_files(1)[1])
    for name in demo.zip_files(3):
        put(name, demo.read(name))
    sessions4, intervals4 = demo.zip_files(4)
    put(sessions4, demo.read(sessions4))
    put(intervals4, set_cell(demo.read(intervals4), 2, "Average Power", "high"))


@pytest.fixture(scope="module")
def reference(
    demo: DemoData, moto_server: str, moto_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Snapshot]:
    """What one clean pass per state leaves, in its own bucket, SQLite database and cache."""
    root = tmp_path_factory.mktemp("reference")
    bucket = f"script-ec2-ref-{secrets.token_hex(6)}"
    moto_client.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/prefix"

    def put(name: str, data: bytes) -> None:
        moto_client.put_object(Bucket=bucket, Key=f"prefix/{name}", Body=data)

    def delete(name: str) -> None:
        moto_client.delete_object(Bucket=bucket, Key=f"prefix/{name}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        settings = resolve(env={"SCRIPT_EC2_S3_ENDPOINT_URL": moto_server})
        store = open_store(uri, settings)
        engine = connect(f"sqlite:///{root / 'reference.db'}")
        try:
            first_state(demo, put)
            run_sync(engine, store, source=uri, cache_dir=root / "cache")
            second_state(demo, put, delete)
            summary = run_sync(engine, store, source=uri, cache_dir=root / "cache")
            assert summary.quarantined and not summary.failed
            yield take_snapshot(engine, uri, root / "cache")
        finally:
            engine.dispose()
            for name in {*demo.data_files}:
                delete(name)
            moto_client.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("crash_at", CHECKPOINTS)
def test_kill_9_then_rerun_equals_one_clean_pass(
    env: SyncEnv, demo: DemoData, reference: Snapshot, crash_at: str
) -> None:
    first_state(demo, env.put)
    assert env.sync().exit_code == 0
    second_state(demo, env.put, env.delete)

    killed = env.run("sync", SCRIPT_EC2_CRASH_AT=crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "sync finished" not in killed.stderr
    crashed = env.snapshot()
    assert crashed != reference  # the kill left work undone

    rerun = env.sync_json(expect=3)  # the lock died with the killed process
    assert rerun["quarantined"] + rerun["still_quarantined"] == 1 and rerun["failed"] == 0
    after = env.snapshot()
    assert after.ledger == reference.ledger
    assert after.cache_files == reference.cache_files
    assert after.stats == reference.stats
    assert after.dirty == [] == reference.dirty
    leftovers = [f for f in after.cache_files if f.rsplit("/", 1)[-1].startswith(".")]
    assert leftovers == []
    assert not any(f.endswith((".tmp", ".part")) for f in after.cache_files)
