"""Asynchronous jobs end to end: the real RabbitMQ broker and ``script-ec2 worker`` subprocesses.

Each test has its own queue on the broker and its own database, and kills every worker it
started. Covered: a fit submitted with a job id at once and followed to its result (SQLite and
PostgreSQL), 100 identical requests making one computation, a job redelivered after its worker
(or only its pool process) is killed with SIGKILL and finishing once, a webhook sent by the
worker, and the throughput of two workers on 50 distinct fits.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from script_ec2 import jobs
from script_ec2.context import AppContext
from script_ec2.db.models import JobRecord, ResultRecord
from script_ec2.settings import resolve
from tests.conftest import Result

if TYPE_CHECKING:
    from tests.fixtures_broker import ComputeEvent, Webhook, Workers

pytest_plugins = ["tests.fixtures_broker"]
pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

Cli = Callable[..., Result]
KEY = "c" * 64


@dataclass(frozen=True)
class BrokerSetup:
    url: str
    queue: str
    models: Path
    compute_log: Path

    def context(self) -> AppContext:
        """A client context from the current (test) environment, like the CLI would build."""
        return AppContext(resolve())


@pytest.fixture
def broker(
    isolated_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rabbitmq_url: str,
    broker_queue: str,
) -> Iterator[BrokerSetup]:
    """Settings (in the environment, which workers inherit) for a broker queue of this test."""
    from tests.fixtures_broker import ensure_job_commands

    ensure_job_commands()
    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", rabbitmq_url)
    monkeypatch.setenv("SCRIPT_EC2_BROKER_QUEUE", broker_queue)
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", f"sqlite:///{tmp_path / 'db' / 'jobs.db'}")
    models = tmp_path / "models"
    monkeypatch.setenv("SCRIPT_EC2_MODELS_DIR", str(models))
    yield BrokerSetup(rabbitmq_url, broker_queue, models, tmp_path / "compute.log")


def use_standin(broker: BrokerSetup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started from now on run the countable stand-in instead of the real fit."""
    from tests.fixtures_broker import COMPUTE_LOG_ENV

    monkeypatch.setenv(COMPUTE_LOG_ENV, str(broker.compute_log))


def compute_events(broker: BrokerSetup) -> list[ComputeEvent]:
    from tests.fixtures_broker import read_compute_log

    return read_compute_log(broker.compute_log)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def count(ctx: AppContext, table: type[JobRecord] | type[ResultRecord]) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --------------------------------------------------------------------------- end to end


def test_fit_async_returns_a_job_id_at_once_and_a_worker_computes_it(
    broker: BrokerSetup,
    db_url: str,
    workers: Workers,
    webhook: Webhook,
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from script_ec2 import fitting
    from tests.fixtures_broker import WORKPLACE_FIT, save_workplace_model

    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", db_url)
    if db_url.startswith("postgresql"):
        upgraded = cli("db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.stderr
    save_workplace_model(broker.models)
    ctx = broker.context()
    request.addfinalizer(ctx.engine.dispose)
    key = fitting.prepare(
        ctx.engine, ctx.registry, ctx.data_store, "load-forecast", WORKPLACE_FIT
    ).key

    # No worker yet: the submission must come back at once with a queued job.
    submitted = jobs.submit_fit(ctx, "load-forecast", WORKPLACE_FIT, {"webhook": webhook.url})
    assert submitted.job_id is not None and not submitted.joined
    job_id = submitted.job_id
    assert jobs.get(ctx.engine, job_id).state == jobs.QUEUED
    queued = json.loads(cli("jobs", "status", job_id, "--format", "json").stdout)
    assert (queued["state"], queued["attempts"], queued["result_key"]) == ("queued", 0, None)

    worker = workers.start()
    waited = cli("jobs", "wait", job_id, "--timeout", "60", "--format", "json")
    assert waited.exit_code == 0, waited.stderr + worker.output()[-3000:]
    done = json.loads(waited.stdout)
    assert (done["state"], done["result_key"], done["attempts"], done["progress"]) == (
        "succeeded",
        key,
        1,
        1.0,
    )
    assert done["worker"].startswith("script-ec2-")

    [body] = webhook.wait_for(1)
    assert (body["job_id"], body["status"], body["result_key"]) == (job_id, "succeeded", key)
    wait_until(lambda: bool(jobs.get(ctx.engine, job_id).notifications), 10, "the delivery record")
    assert jobs.get(ctx.engine, job_id).notifications[0]["ok"] is True

    again = jobs.submit_fit(ctx, "load-forecast", WORKPLACE_FIT, None)
    assert again.job_id is None and again.cached_result is not None
    assert again.cached_result.key == key
    assert (count(ctx, JobRecord), count(ctx, ResultRecord)) == (1, 1)
    unknown = cli("jobs", "status", str(uuid.uuid4()))
    assert unknown.exit_code == 2 and "unknown job id" in unknown.stderr


def test_a_hundred_identical_requests_make_one_computation(
    broker: BrokerSetup, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures_broker import queue_depth

    use_standin(broker, monkeypatch)
    ctx = broker.context()

    def submit(_: int) -> jobs.Submission:
        return jobs.submit_job(ctx, kind="fit", key=KEY, params={"seconds": 1.5})

    with ThreadPoolExecutor(8) as pool:
        early = list(pool.map(submit, range(50)))  # while the job waits in the queue
        worker = workers.start()
        wait_until(
            lambda: jobs.get(ctx.engine, str(early[0].job_id)).state == jobs.RUNNING,
            30,
            f"the job to start; worker output:\n{worker.output()[-2000:]}",
        )
        late = list(pool.map(submit, range(50)))  # while it runs
    submissions = early + late

    assert len({s.job_id for s in submissions}) == 1
    assert sum(not s.joined for s in submissions) == 1
    done = jobs.wait(ctx.engine, str(submissions[0].job_id), timeout=30)
    assert done.state == jobs.SUCCEEDED and done.attempts == 1
    assert [e.event for e in compute_events(broker)] == ["start", "done"]
    assert count(ctx, JobRecord) == 1
    assert queue_depth(broker.url, broker.queue) == 0
    ctx.engine.dispose()


def test_a_submitter_killed_before_publishing_leaves_no_blocked_key(broker: BrokerSetup) -> None:
    """kill -9 between the job insert and the publish: the job is recognised and replaced."""
    import subprocess
    import sys
    from datetime import timedelta

    from sqlalchemy import update

    def submit_sync(**env: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "script_ec2", "sync", "--async", "--format", "json"]
        return subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
        )

    ctx = broker.context()
    killed = submit_sync(SCRIPT_EC2_CRASH_AT="before_enqueue")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [orphan] = jobs.list_jobs(ctx.engine)
    assert (orphan.state, orphan.enqueued_at) == (jobs.QUEUED, None)

    with ctx.engine.begin() as conn:  # as if the grace period had passed
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == orphan.id)
            .values(created_at=orphan.created_at - timedelta(seconds=2 * jobs.ENQUEUE_GRACE_S))
        )
    resubmitted = submit_sync()
    assert resubmitted.returncode == 0, resubmitted.stderr
    fresh = json.loads(resubmitted.stdout)
    assert fresh["job_id"] != orphan.id and fresh["joined"] is False
    stale = jobs.get(ctx.engine, orphan.id)
    assert stale.state == jobs.FAILED and "never reached the broker" in (stale.error or "")
    assert jobs.get(ctx.engine, fresh["job_id"]).enqueued_at is not None
    ctx.engine.dispose()


# --------------------------------------------------------------------------- redelivery


def test_a_killed_workers_job_is_redelivered_and_finishes_once(
    broker: BrokerSetup, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_standin(broker, monkeypatch)
    ctx = broker.context()
    first = workers.start()
    submitted = jobs.submit_job(
        ctx, kind="fit", key=KEY, params={"first_attempt_seconds": 120, "seconds": 0.2}
    )
    job_id = str(submitted.job_id)
    wait_until(lambda: bool(compute_events(broker)), 30, "the first attempt to start")

    first.kill(signal.SIGKILL)  # the worker and its pool process, mid-job, no goodbye
    first.process.wait(10)
    killed = jobs.get(ctx.engine, job_id)
    assert (killed.state, killed.attempts) == (jobs.RUNNING, 1)

    second = workers.start()
    done = jobs.wait(ctx.engine, job_id, timeout=30)
    assert (done.state, done.attempts, done.result_key) == (jobs.SUCCEEDED, 2, KEY), (
        second.output()[-3000:]
    )
    assert done.worker is not None and killed.worker is not None
    assert done.worker.split("/")[0] != killed.worker.split("/")[0]
    events = compute_events(broker)
    assert [(e.event, e.attempt) for e in events] == [("start", 1), ("start", 2), ("done", 2)]
    assert count(ctx, JobRecord) == 1
    ctx.engine.dispose()


def test_a_killed_pool_process_has_its_job_requeued(
    broker: BrokerSetup, workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_standin(broker, monkeypatch)
    ctx = broker.context()
    worker = workers.start()
    submitted = jobs.submit_job(
        ctx, kind="fit", key=KEY, params={"first_attempt_seconds": 120, "seconds": 0.2}
    )
    wait_until(lambda: bool(compute_events(broker)), 30, "the first attempt to start")
    [started] = compute_events(broker)
    assert started.pid != worker.process.pid

    os.kill(started.pid, signal.SIGKILL)  # only the pool process: reject_on_worker_lost
    done = jobs.wait(ctx.engine, str(submitted.job_id), timeout=30)
    assert (done.state, done.attempts) == (jobs.SUCCEEDED, 2), worker.output()[-3000:]
    events = compute_events(broker)
    assert [(e.event, e.attempt) for e in events] == [("start", 1), ("start", 2), ("done", 2)]
    assert events[1].pid != started.pid
    assert worker.process.poll() is None  # the worker itself lived on
    assert worker.stop(grace=20) == 0  # SIGTERM: a warm shutdown, exit 0
    ctx.engine.dispose()


# --------------------------------------------------------------------------- throughput


def test_two_workers_share_fifty_distinct_fits(
    broker: BrokerSetup, workers: Workers, record_property: Callable[[str, object], None]
) -> None:
    from tests.fixtures_broker import WORKPLACE_FIT, save_workplace_model

    save_workplace_model(broker.models)
    ctx = broker.context()
    pair = [workers.start(), workers.start()]
    for worker in pair:
        worker.wait_ready()

    started = time.perf_counter()
    submissions = [
        jobs.submit_fit(ctx, "load-forecast", {**WORKPLACE_FIT, "num_evs": 2000, "seed": n}, None)
        for n in range(50)
    ]
    submit_seconds = time.perf_counter() - started
    finished = [jobs.wait(ctx.engine, str(s.job_id), timeout=60) for s in submissions]
    seconds = time.perf_counter() - started

    assert all(job.state == jobs.SUCCEEDED for job in finished)
    assert len({job.result_key for job in finished}) == 50
    assert count(ctx, ResultRecord) == 50
    hosts = {str(job.worker).split("/")[0] for job in finished}
    assert len(hosts) == 2, f"both workers should have taken jobs, got {hosts}"
    throughput = 50 / seconds
    first_start = min(job.started_at for job in finished if job.started_at is not None)
    last_end = max(job.finished_at for job in finished if job.finished_at is not None)
    worker_seconds = (last_end - first_start).total_seconds()
    record_property("jobs_per_second", round(throughput, 2))
    print(
        f"\n50 distinct fits, 2 workers x concurrency 1: {seconds:.2f} s from first submit to "
        f"last result, {throughput:.1f} jobs/s (submitting took {submit_seconds:.2f} s; workers "
        f"busy {worker_seconds:.2f} s)"
    )
    ctx.engine.dispose()
