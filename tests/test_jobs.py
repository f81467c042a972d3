"""Jobs without a broker: records, deduplication, idempotent runs, waiting, listing, the CLI.

Embedded mode (no broker_url) runs ``--async`` work in-process through the same job records a
worker keeps. Runners are swapped for counting stand-ins where a test counts computations; the
real ``fit`` runner (:mod:`script_ec2.fitting`) runs against a registry with one hand-made model.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from script_ec2 import jobs
from script_ec2.context import AppContext
from script_ec2.db.models import JobRecord, ResultRecord
from script_ec2.errors import ScriptEc2Error, UsageError
from script_ec2.settings import resolve
from tests.conftest import Result, free_port

pytest_plugins = ["tests.fixtures_broker"]

Cli = Callable[..., Result]
KEY = "a" * 64


@pytest.fixture(autouse=True)
def _job_commands() -> None:
    from tests.fixtures_broker import ensure_job_commands

    ensure_job_commands()


def save_workplace_model(models_dir: Path) -> None:
    from tests.fixtures_broker import save_workplace_model as save

    save(models_dir)


def _context(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AppContext:
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", db_url)
    if db_url.startswith("postgresql"):
        from script_ec2.db import migrate
        from script_ec2.db.engine import connect

        engine = connect(db_url, check_schema=False)
        migrate.upgrade(engine)
        engine.dispose()
    return AppContext(resolve())


@pytest.fixture
def app_ctx(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    """An embedded-mode context (no broker) on a fresh SQLite database."""
    ctx = _context(f"sqlite:///{tmp_path / 'db' / 'jobs.db'}", monkeypatch)
    yield ctx
    ctx.engine.dispose()


@pytest.fixture
def any_db_ctx(
    isolated_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    """The same on SQLite and on PostgreSQL, for the paths whose SQL differs between them."""
    ctx = _context(db_url, monkeypatch)
    yield ctx
    ctx.engine.dispose()


class Counting:
    """A stand-in runner that counts its calls and can fail or sleep."""

    def __init__(self, fail: BaseException | None = None, seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.seconds = seconds

    def __call__(
        self, app_ctx: AppContext, job: jobs.Job, progress: Callable[[float], None]
    ) -> str:
        self.calls.append(job.id)
        time.sleep(self.seconds)
        progress(0.5)
        if self.fail is not None:
            raise self.fail
        return job.key


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Counting:
    runner = Counting()
    monkeypatch.setitem(jobs.RUNNERS, "fit", runner)
    return runner


def job_rows(ctx: AppContext) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(JobRecord)).scalar_one())


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# --------------------------------------------------------------------------- embedded mode


def test_embedded_submission_runs_in_process_and_keeps_the_job_record(
    any_db_ctx: AppContext, counting: Counting, cli: Cli
) -> None:
    submission = jobs.submit_job(any_db_ctx, kind="fit", key=KEY, params={"n": 1}, algorithm="x")

    assert submission.job_id is not None and not submission.joined
    assert submission.cached_result is None
    job = jobs.get(any_db_ctx.engine, submission.job_id)
    assert job.state == jobs.SUCCEEDED
    assert (job.result_key, job.attempts, job.progress, job.error) == (KEY, 1, 1.0, None)
    assert job.worker is not None and job.worker.startswith("embedded:")
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at
    assert job.params == {"n": 1} and job.algorithm == "x"
    assert counting.calls == [job.id]

    shown = cli("jobs", "status", job.id, "--format", "json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["state"], data["result_key"], data["attempts"]) == (
        job.id,
        "succeeded",
        KEY,
        1,
    )
    waited = cli("jobs", "wait", job.id)
    assert waited.exit_code == 0, waited.stderr
    assert job.id in waited.stdout and "succeeded" in waited.stdout


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ScriptEc2Error("row 3 of zips.csv has no county"), "row 3 of zips.csv has no county"),
        (ValueError("math domain error"), "unexpected ValueError: math domain error"),
    ],
)
def test_a_failing_job_is_recorded_failed_and_wait_exits_1(
    app_ctx: AppContext,
    monkeypatch: pytest.MonkeyPatch,
    cli: Cli,
    error: BaseException,
    expected: str,
) -> None:
    monkeypatch.setitem(jobs.RUNNERS, "fit", Counting(fail=error))
    submission = jobs.submit_job(app_ctx, kind="fit", key=KEY, params={})
    assert submission.job_id is not None
    job = jobs.get(app_ctx.engine, submission.job_id)
    assert (job.state, job.error, job.result_key) == ("failed", expected, None)

    waited = cli("jobs", "wait", job.id)
    assert waited.exit_code == 1
    assert f"job {job.id} failed: {expected}" in waited.stderr
    status = cli("jobs", "status", job.id)
    assert status.exit_code == 0 and "failed" in status.stdout
    # A failed job no longer blocks its key: the same request runs again.
    monkeypatch.setitem(jobs.RUNNERS, "fit", Counting())
    again = jobs.submit_job(app_ctx, kind="fit", key=KEY, params={})
    assert again.job_id != job.id and not again.joined


@pytest.mark.parametrize("verb", ["status", "wait"])
def test_an_unknown_id_is_an_error_not_pending(app_ctx: AppContext, cli: Cli, verb: str) -> None:
    missing = str(uuid.uuid4())
    result = cli("jobs", verb, missing)
    assert result.exit_code == 2
    assert f"Error: unknown job id '{missing}'" in result.stderr
    assert "pending" not in (result.stdout + result.stderr).lower()
    with pytest.raises(jobs.UnknownJob):
        jobs.get(app_ctx.engine, "not-a-uuid")


# --------------------------------------------------------------------------- deduplication


def test_identical_in_flight_requests_join_one_job(any_db_ctx: AppContext) -> None:
    ids: list[tuple[str, bool]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def submit_ten() -> None:
        barrier.wait()
        for _ in range(10):
            job, joined = jobs.submit(any_db_ctx.engine, kind="fit", key=KEY, params={"p": 1})
            with lock:
                ids.append((job.id, joined))

    threads = [threading.Thread(target=submit_ten) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 100
    assert len({job_id for job_id, _ in ids}) == 1
    assert sum(1 for _, joined in ids if not joined) == 1
    assert job_rows(any_db_ctx) == 1
    only = ids[0][0]
    # Once it has finished, the same key gets a new job.
    assert jobs.finish(any_db_ctx.engine, only, result_key=KEY) is not None
    job, joined = jobs.submit(any_db_ctx.engine, kind="fit", key=KEY, params={"p": 1})
    assert job.id != only and not joined and job.state == jobs.QUEUED


def test_a_joining_request_adds_its_notification_targets(any_db_ctx: AppContext) -> None:
    first, _ = jobs.submit(
        any_db_ctx.engine,
        kind="fit",
        key=KEY,
        params={},
        notify={"webhooks": ["http://127.0.0.1:9/a"], "emails": []},
    )
    second, joined = jobs.submit(
        any_db_ctx.engine,
        kind="fit",
        key=KEY,
        params={},
        notify={"webhooks": ["http://127.0.0.1:9/a"], "emails": ["ops@example.org"]},
    )
    assert joined and second.id == first.id
    assert second.notify == {"webhooks": ["http://127.0.0.1:9/a"], "emails": ["ops@example.org"]}


def test_a_dead_embedded_run_does_not_block_its_key(
    app_ctx: AppContext, counting: Counting, cli: Cli
) -> None:
    host = jobs.embedded_worker_name().split(":", 1)[1].rpartition("/")[0]
    stale, _ = jobs.submit(
        app_ctx.engine, kind="fit", key=KEY, params={}, worker=f"embedded:{host}/{dead_pid()}"
    )
    waited = cli("jobs", "wait", stale.id, "--timeout", "5")
    assert waited.exit_code == 1
    assert "exited before it finished" in waited.stderr

    stale2, _ = jobs.submit(
        app_ctx.engine, kind="fit", key=KEY, params={}, worker=f"embedded:{host}/{dead_pid()}"
    )
    fresh = jobs.submit_job(app_ctx, kind="fit", key=KEY, params={})
    assert fresh.job_id not in (stale.id, stale2.id) and not fresh.joined
    assert jobs.get(app_ctx.engine, stale2.id).state == jobs.FAILED
    assert jobs.get(app_ctx.engine, str(fresh.job_id)).state == jobs.SUCCEEDED
    assert counting.calls == [fresh.job_id]


def backdate(ctx: AppContext, job_id: str, seconds: float) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    job = jobs.get(ctx.engine, job_id)
    with ctx.engine.begin() as conn:
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id)
            .values(created_at=job.created_at - timedelta(seconds=seconds))
        )


def test_a_job_that_never_reached_the_broker_does_not_block_its_key(
    any_db_ctx: AppContext,
) -> None:
    """The submitter died between inserting the job and publishing it: nothing will start it."""
    engine = any_db_ctx.engine
    orphan, _ = jobs.submit(engine, kind="fit", key=KEY, params={})
    assert orphan.enqueued_at is None and not jobs.never_enqueued(orphan)
    # Within the grace period it may still be being published: identical requests join it.
    joined, was_joined = jobs.submit(engine, kind="fit", key=KEY, params={})
    assert was_joined and joined.id == orphan.id

    backdate(any_db_ctx, orphan.id, jobs.ENQUEUE_GRACE_S + 5)
    assert jobs.never_enqueued(jobs.get(engine, orphan.id))
    waited = jobs.wait(engine, orphan.id, timeout=5)
    assert waited.state == jobs.FAILED
    assert "never reached the broker" in (waited.error or "")

    second, _ = jobs.submit(engine, kind="fit", key=KEY, params={})
    backdate(any_db_ctx, second.id, jobs.ENQUEUE_GRACE_S + 5)
    fresh, was_joined = jobs.submit(engine, kind="fit", key=KEY, params={})
    assert not was_joined and fresh.id not in (orphan.id, second.id)
    assert jobs.get(engine, second.id).state == jobs.FAILED


def test_an_old_job_the_broker_has_is_still_joined(any_db_ctx: AppContext) -> None:
    """Waiting long in the queue (busy workers) is not the same as never being queued."""
    engine = any_db_ctx.engine
    queued, _ = jobs.submit(engine, kind="fit", key=KEY, params={})
    jobs._mark_enqueued(engine, queued.id)
    backdate(any_db_ctx, queued.id, 10 * jobs.ENQUEUE_GRACE_S)
    job = jobs.get(engine, queued.id)
    assert job.enqueued_at is not None and not jobs.never_enqueued(job)
    joined, was_joined = jobs.submit(engine, kind="fit", key=KEY, params={})
    assert was_joined and joined.id == queued.id and joined.state == jobs.QUEUED


# --------------------------------------------------------------------------- idempotent runs


def test_a_redelivered_finished_job_does_nothing(app_ctx: AppContext, counting: Counting) -> None:
    job, _ = jobs.submit(app_ctx.engine, kind="fit", key=KEY, params={})
    done = jobs.execute(app_ctx, job.id, worker="w1")
    assert done is not None and done.state == jobs.SUCCEEDED
    assert jobs.execute(app_ctx, job.id, worker="w2") is None
    after = jobs.get(app_ctx.engine, job.id)
    assert (after.attempts, after.worker, after.finished_at) == (1, "w1", done.finished_at)
    assert counting.calls == [job.id]


def test_a_redelivered_running_job_runs_again_as_a_new_attempt(
    any_db_ctx: AppContext, counting: Counting
) -> None:
    job, _ = jobs.submit(any_db_ctx.engine, kind="fit", key=KEY, params={})
    started = jobs.start(any_db_ctx.engine, job.id, "worker-that-dies")
    assert started is not None and started.state == jobs.RUNNING and started.attempts == 1
    done = jobs.execute(any_db_ctx, job.id, worker="worker-2")
    assert done is not None
    assert (done.state, done.attempts, done.worker) == ("succeeded", 2, "worker-2")
    # The first attempt's late finish changes nothing.
    assert jobs.finish(any_db_ctx.engine, job.id, error="late") is None
    assert jobs.get(any_db_ctx.engine, job.id).state == jobs.SUCCEEDED


def test_a_job_delivered_as_another_kind_fails(app_ctx: AppContext, counting: Counting) -> None:
    job, _ = jobs.submit(app_ctx.engine, kind="fit", key=KEY, params={})
    done = jobs.execute(app_ctx, job.id, worker="w", kind="sync")
    assert done is not None and done.state == jobs.FAILED
    assert done.error == f"job {job.id} is a fit job, delivered as sync"
    assert counting.calls == []


# --------------------------------------------------------------------------- waiting, listing


def test_wait_times_out_with_exit_124(app_ctx: AppContext, cli: Cli) -> None:
    job, _ = jobs.submit(app_ctx.engine, kind="fit", key=KEY, params={})
    started = time.monotonic()
    result = cli("jobs", "wait", job.id, "--timeout", "0.3")
    assert result.exit_code == jobs.EXIT_WAIT_TIMEOUT == 124
    assert time.monotonic() - started < 5
    assert f"job {job.id} is still queued (0% done) after 0.3s" in result.stderr
    bad = cli("jobs", "wait", job.id, "--timeout", "-1")
    assert bad.exit_code == 2 and "--timeout must be zero or more" in bad.stderr


def test_wait_returns_when_another_process_finishes_the_job(app_ctx: AppContext) -> None:
    job, _ = jobs.submit(app_ctx.engine, kind="fit", key=KEY, params={})
    timer = threading.Timer(0.3, lambda: jobs.finish(app_ctx.engine, job.id, result_key=KEY))
    timer.start()
    try:
        done = jobs.wait(app_ctx.engine, job.id, timeout=10)
    finally:
        timer.cancel()
    assert done.state == jobs.SUCCEEDED and done.result_key == KEY


def test_list_filters_limits_and_validates(app_ctx: AppContext, cli: Cli) -> None:
    made = []
    for n in range(3):
        job, _ = jobs.submit(app_ctx.engine, kind="fit", key=f"{n}" * 64, params={"n": n})
        made.append(job.id)
    jobs.finish(app_ctx.engine, made[0], error="boom")

    listed = cli("jobs", "list", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    assert [row["id"] for row in json.loads(listed.stdout)] == made[::-1]
    failed = json.loads(cli("jobs", "list", "--state", "failed", "--format", "json").stdout)
    assert [(row["id"], row["error"]) for row in failed] == [(made[0], "boom")]
    assert len(json.loads(cli("jobs", "list", "--limit", "2", "--format", "json").stdout)) == 2
    table = cli("jobs", "list")
    assert table.exit_code == 0 and made[1] in table.stdout and "queued" in table.stdout

    for args, message in [
        (("--state", "pending"), "--state must be one of queued, running, succeeded, failed"),
        (("--limit", "0"), "--limit must be at least 1"),
        (("--format", "xml"), "--format must be one of table, json"),
    ]:
        result = cli("jobs", "list", *args)
        assert result.exit_code == 2 and message in result.stderr


# --------------------------------------------------------------------------- real fit and sync


def test_submit_fit_runs_the_real_fit_and_then_answers_from_the_cache(
    app_ctx: AppContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from script_ec2 import fitting
    from tests.fixtures_broker import WORKPLACE_FIT

    models = tmp_path / "models"
    save_workplace_model(models)
    monkeypatch.setenv("SCRIPT_EC2_MODELS_DIR", str(models))
    ctx = AppContext(resolve())
    key = fitting.prepare(
        ctx.engine, ctx.registry, ctx.data_store, "load-forecast", WORKPLACE_FIT
    ).key

    first = jobs.submit_fit(ctx, "load-forecast", WORKPLACE_FIT, None)
    assert first.job_id is not None and first.cached_result is None and not first.joined
    job = jobs.get(ctx.engine, first.job_id)
    assert (job.state, job.result_key, job.kind, job.algorithm) == (
        "succeeded",
        key,
        "fit",
        "load-forecast",
    )
    again = jobs.submit_fit(ctx, "load-forecast", dict(reversed(WORKPLACE_FIT.items())), None)
    assert again.job_id is None and again.cached_result is not None
    assert again.cached_result.key == key
    with ctx.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ResultRecord)).scalar_one() == 1
    # Bad parameters are refused before any job exists.
    with pytest.raises(UsageError):
        jobs.submit_fit(ctx, "load-forecast", {"num_evs": -5}, None)
    assert job_rows(ctx) == 1
    # A job whose result is cached by the time it runs finishes at once, without computing.
    queued, _ = jobs.submit(
        ctx.engine, kind="fit", key=key, params=WORKPLACE_FIT, algorithm="load-forecast"
    )
    done = jobs.execute(ctx, queued.id, worker="w")
    assert done is not None and done.state == jobs.SUCCEEDED and done.result_key == key
    ctx.engine.dispose()


def test_submit_sync_runs_a_sync_pass_as_a_job(
    app_ctx: AppContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    from script_ec2.synthetic import generate

    source = tmp_path / "bucket"
    generated = generate(source, sessions=400, seed=3, zips_per_county=1)
    data_files = [f for f in generated.files if f.kind in ("sessions", "intervals")]
    (source / data_files[0].name).write_bytes(b"\x00\xff not a csv")  # one bad file
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(source))
    ctx = AppContext(resolve())
    submission = jobs.submit_sync(ctx)
    assert submission.job_id is not None
    job = jobs.get(ctx.engine, submission.job_id)
    assert (job.kind, job.state, job.params, job.error) == (
        "sync",
        "succeeded",
        {"source": str(source)},
        None,
    )
    assert job.key == jobs.sync_key(str(source))
    summary = job.summary or {}
    assert (summary["new"], summary["quarantined"]) == (len(data_files), 1)
    assert summary["quarantined_files"][0]["key"] == data_files[0].name
    assert summary["rows_ingested"] > 0 and summary["source"] == str(source)
    assert jobs.get(ctx.engine, submission.job_id).as_dict()["summary"] == summary
    shown = cli("jobs", "status", submission.job_id)
    assert shown.exit_code == 0
    assert f"new {len(data_files)}, quarantined 1" in " ".join(shown.stdout.split())
    ctx.engine.dispose()


# --------------------------------------------------------------------------- broker errors


def test_worker_refuses_to_start_without_a_broker(cli: Cli) -> None:
    result = cli("worker")
    assert result.exit_code == 2
    assert "Error: no broker configured: set --broker-url / SCRIPT_EC2_BROKER_URL" in result.stderr


def test_worker_refuses_an_unusable_broker_url(cli: Cli) -> None:
    result = cli("--broker-url", "http://user:hunter2@127.0.0.1:1/", "worker")
    assert result.exit_code == 2
    assert "broker URL 'http://user:***@127.0.0.1:1/' must start with" in result.stderr
    assert "hunter2" not in result.stderr


def test_an_unreachable_broker_fails_the_job_and_frees_its_key(
    app_ctx: AppContext, counting: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    from script_ec2.tasks import BrokerUnavailable

    port = free_port()
    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", f"amqp://guest:s3cret@127.0.0.1:{port}//")
    ctx = AppContext(resolve())
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        jobs.submit_job(ctx, kind="fit", key=KEY, params={})
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert f"to the broker at amqp://guest:***@127.0.0.1:{port}//" in message
    assert "s3cret" not in message and caught.value.exit_code == 1
    [job] = jobs.list_jobs(ctx.engine)
    assert job.state == jobs.FAILED and (job.error or "").startswith("could not be queued")
    with pytest.raises(BrokerUnavailable):
        jobs.submit_job(ctx, kind="fit", key=KEY, params={})
    assert len(jobs.list_jobs(ctx.engine, state="failed")) == 2
    assert counting.calls == []
    ctx.engine.dispose()


def test_job_commands_help_imports_no_heavy_library() -> None:
    import sys

    code = (
        "import sys\n"
        "from tests.fixtures_broker import ensure_job_commands\n"
        "ensure_job_commands()\n"
        "from script_ec2.cli import main\n"
        "for args in (['jobs', '--help'], ['worker', '--help'], ['jobs', 'wait', '--help']):\n"
        "    main(args)\n"
        "heavy = ('sqlalchemy', 'celery', 'kombu', 'numpy', 'pandas')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--timeout" in out.stdout and "--concurrency" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_worker_exits_1_when_its_database_is_unreachable(cli: Cli) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/jobs"
    result = cli(
        "--broker-url", "amqp://guest:guest@127.0.0.1:1//", "--database-url", url, "worker"
    )
    assert result.exit_code == 1
    assert "Error: cannot connect to database postgresql://postgres:***@127.0.0.1" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_task_whose_database_is_down_is_retried_not_dropped(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from script_ec2 import tasks
    from script_ec2.errors import DatabaseUnavailable

    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//")
    monkeypatch.setenv(
        "SCRIPT_EC2_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/jobs"
    )
    monkeypatch.setattr(tasks, "_DB_RETRIES", 2)
    events: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(record.getMessage())

    handler = Collect()
    logging.getLogger("script_ec2").addHandler(handler)
    try:
        # Eager apply runs the retries in-process: the first run and two retries, then it fails.
        outcome = tasks.make_celery(resolve()).tasks["script_ec2.fit"].apply(args=["job-1"])
    finally:
        logging.getLogger("script_ec2").removeHandler(handler)
    assert outcome.failed() and isinstance(outcome.result, DatabaseUnavailable)
    assert events.count("database unavailable; job retried later") == 3
