"""Asynchronous jobs: submit with deduplication, state transitions, waiting and listing.

The ``jobs`` table is the source of truth, never the broker: a job is ``queued``, ``running``,
``succeeded`` or ``failed``, with its progress, error, attempts, worker and timestamps, and an id
that is either in the table or unknown (an error, never a silent "pending").

Identical in-flight requests share one job: a partial unique index allows one queued-or-running
job per cache key, so a second :func:`submit` with the same key hits it and joins that job.
:func:`execute` is the one way a job runs, in a Celery worker (:mod:`script_ec2.tasks`) or
in-process when no broker is configured (embedded mode); both keep the same records. It is
idempotent: a redelivered job that already finished does nothing.

What a job kind does is a *runner* in :data:`RUNNERS`: ``fit`` calls :mod:`script_ec2.fitting`,
``sync`` calls :func:`script_ec2.sync.run_sync`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from script_ec2 import faults, log
from script_ec2.errors import EXIT_TIMEOUT, DatabaseError, ScriptEc2Error, UsageError
from script_ec2.settings import mask_url

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from script_ec2.context import AppContext
    from script_ec2.notify import NotifyConfig

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
IN_FLIGHT = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED)
KINDS = ("fit", "sync")
EMBEDDED_PREFIX = "embedded:"
# Exit code of ``jobs wait`` when the job is still in flight at --timeout: the one used by
# coreutils ``timeout``, so scripts can tell "not yet" from "failed" (1).
EXIT_WAIT_TIMEOUT = EXIT_TIMEOUT
_SUBMIT_TRIES = 10
_PROGRESS_EVERY_S = 0.5
# A broker-mode job still without enqueued_at this long after it was created was never handed to
# the broker: publishing takes milliseconds, or fails and fails the job (see submit_job).
ENQUEUE_GRACE_S = 60.0

Progress = Callable[[float], None]
Runner = Callable[["AppContext", "Job", Progress], "str | None"]


class UnknownJob(UsageError):
    """The id names no job in the jobs table."""


class WaitTimeout(ScriptEc2Error):
    """The job was still queued or running when ``jobs wait`` gave up."""

    exit_code = EXIT_WAIT_TIMEOUT


@dataclass(frozen=True)
class Job:
    id: str
    key: str
    kind: str
    algorithm: str | None
    params: dict[str, Any]
    state: str
    progress: float
    error: str | None
    result_key: str | None
    attempts: int
    worker: str | None
    notify: dict[str, list[str]]
    notifications: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    enqueued_at: datetime | None = None
    summary: dict[str, Any] | None = None  # what the runner reported (a sync: its summary)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """Stable keys for JSON output; webhook URLs show only scheme, host and port."""
        from script_ec2.notify import redact_url

        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.progress, 4),
            "algorithm": self.algorithm,
            "key": self.key,
            "result_key": self.result_key,
            "error": self.error,
            "attempts": self.attempts,
            "worker": self.worker,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "params": self.params,
            "notify": {
                "webhooks": [redact_url(u) for u in self.notify.get("webhooks", [])],
                "emails": list(self.notify.get("emails", [])),
            },
            "notifications": self.notifications,
            "summary": self.summary,
        }

    def notification_summary(self) -> str:
        """One line per target: ``webhook http://host:port ok after 2 attempts``."""
        last: dict[tuple[str, str], dict[str, Any]] = {}
        for entry in self.notifications:
            last[(entry.get("channel", ""), entry.get("target", ""))] = entry
        parts = []
        for (channel, target), entry in last.items():
            outcome = "ok" if entry.get("ok") else f"failed ({entry.get('detail')})"
            parts.append(f"{channel} {target} {outcome} after {entry.get('attempt')} attempt(s)")
        return "; ".join(parts)


@dataclass(frozen=True)
class Submission:
    """What ``fit --async`` / ``sync --async`` get back at once.

    ``cached_result`` is set (and ``job_id`` is None) when the result was already cached.
    ``joined`` is True when an identical request was in flight and this one joined its job.
    In embedded mode (no broker) the job has already finished when this is returned.
    """

    job_id: str | None
    cached_result: Any | None
    joined: bool


# ----------------------------------------------------------------------------------- submitting


def submit(
    engine: Engine,
    *,
    kind: str,
    key: str,
    params: Mapping[str, Any],
    algorithm: str | None = None,
    notify: Mapping[str, list[str]] | None = None,
    worker: str | None = None,
) -> tuple[Job, bool]:
    """A queued job for ``key``, or the one already in flight for it; returns (job, joined).

    A joining request adds its notification targets to the job it joins. ``worker`` pre-assigns
    the job (embedded mode names the process that will run it, so a dead one can be detected).
    """
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from script_ec2.db.models import JobRecord

    if kind not in KINDS and kind not in RUNNERS:
        raise UsageError(f"unknown job kind {kind!r} (known: {', '.join(sorted(RUNNERS))})")
    targets: dict[str, list[str]] = {"webhooks": [], "emails": []} | dict(notify or {})
    for _ in range(_SUBMIT_TRIES):
        job_id = str(uuid.uuid4())
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(JobRecord).values(
                        id=job_id,
                        key=key,
                        kind=kind,
                        algorithm=algorithm,
                        params=json.dumps(dict(params), sort_keys=True, default=str),
                        state=QUEUED,
                        progress=0.0,
                        attempts=0,
                        worker=worker,
                        notify=json.dumps(targets, sort_keys=True),
                        notifications="[]",
                        created_at=_now(),
                    )
                )
        except IntegrityError:
            pass  # another job with this key is in flight: join it (below)
        else:
            log.event("job queued", job_id=job_id, kind=kind, key=key[:16])
            return get(engine, job_id), False
        existing = _in_flight(engine, key)
        if existing is None:
            continue  # it finished between our insert and this read: a new job is due
        if _embedded_process_dead(existing):
            _fail_dead_embedded(engine, existing)
            continue
        if never_enqueued(existing):
            _fail_never_enqueued(engine, existing)
            continue
        if not _join(engine, existing, targets):
            continue  # it finished while we joined: a new job is due
        log.event("job joined", job_id=existing.id, kind=kind, key=key[:16])
        return get(engine, existing.id), True
    raise DatabaseError(
        f"could not queue or join a {kind} job for key {key[:16]}… after {_SUBMIT_TRIES} tries "
        "(identical jobs keep finishing in between); try again"
    )


def sync_key(source: str) -> str:
    """The dedupe key of a sync of ``source``: one refresh of a data prefix at a time."""
    return hashlib.sha256(f"sync\n{source}".encode()).hexdigest()


def submit_fit(
    app_ctx: AppContext,
    algorithm: str,
    raw_params: Mapping[str, Any],
    notify: Mapping[str, Any] | None = None,
) -> Submission:
    """Validate a fit, answer from the cache if possible, else queue it (or join its twin).

    Parameters are checked before any job exists, so a bad request never becomes a job.
    Without a broker the job runs here before this returns.
    """
    import script_ec2.fitting as fitting

    request = fitting.prepare(
        app_ctx.engine, app_ctx.registry, app_ctx.data_store, algorithm, dict(raw_params)
    )
    cached = fitting.lookup(app_ctx.engine, request.key)
    if cached is not None:
        return Submission(job_id=None, cached_result=cached, joined=False)
    return submit_job(
        app_ctx,
        kind="fit",
        key=request.key,
        params=raw_params,
        algorithm=algorithm,
        notify=notify,
    )


def submit_sync(app_ctx: AppContext, notify: Mapping[str, Any] | None = None) -> Submission:
    """Queue a refresh of the ``data_uri`` source (or join the one in flight)."""
    source = app_ctx.settings.data_uri
    return submit_job(
        app_ctx, kind="sync", key=sync_key(source), params={"source": source}, notify=notify
    )


def submit_job(
    app_ctx: AppContext,
    *,
    kind: str,
    key: str,
    params: Mapping[str, Any],
    algorithm: str | None = None,
    notify: Mapping[str, Any] | None = None,
) -> Submission:
    """Queue a job and hand it to the broker, or run it here when no broker is configured."""
    from script_ec2 import notify as notify_mod

    targets = notify_mod.targets(notify_mod.config_from_settings(app_ctx.settings), notify)
    embedded = not app_ctx.settings.broker_url
    worker = embedded_worker_name() if embedded else None
    job, joined = submit(
        app_ctx.engine,
        kind=kind,
        key=key,
        params=params,
        algorithm=algorithm,
        notify=targets,
        worker=worker,
    )
    if joined:
        return Submission(job_id=job.id, cached_result=None, joined=True)
    if embedded:
        execute(app_ctx, job.id, worker=embedded_worker_name())
        return Submission(job_id=job.id, cached_result=None, joined=False)
    from script_ec2.tasks import BrokerUnavailable, enqueue

    faults.checkpoint("before_enqueue")
    try:
        enqueue(app_ctx.settings, job)
    except BrokerUnavailable as exc:
        # A queued job no message will ever start would block its key for good.
        finish(app_ctx.engine, job.id, error=f"could not be queued: {exc}")
        raise
    faults.checkpoint("after_enqueue")
    _mark_enqueued(app_ctx.engine, job.id)
    return Submission(job_id=job.id, cached_result=None, joined=False)


def embedded_worker_name() -> str:
    return f"{EMBEDDED_PREFIX}{socket.gethostname()}/{os.getpid()}"


# ------------------------------------------------------------------------------------- reading


def get(engine: Engine, job_id: str) -> Job:
    """The job with this id, or :class:`UnknownJob`."""
    from sqlalchemy import select

    from script_ec2.db.models import JobRecord

    with engine.connect() as conn:
        row = conn.execute(select(JobRecord.__table__).where(JobRecord.id == job_id)).first()
    if row is None:
        from script_ec2.db.engine import display_url

        raise UnknownJob(
            f"unknown job id {job_id!r}: no such job in the jobs table of "
            f"{display_url(engine.url)} (see `script-ec2 jobs list`)"
        )
    return _job(row)


def list_jobs(engine: Engine, *, state: str | None = None, limit: int = 50) -> list[Job]:
    """The newest ``limit`` jobs, optionally only those in ``state``."""
    from sqlalchemy import select

    from script_ec2.db.models import JobRecord

    if state is not None and state not in STATES:
        raise UsageError(f"--state must be one of {', '.join(STATES)}, got {state!r}")
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    query = select(JobRecord.__table__).order_by(JobRecord.created_at.desc(), JobRecord.id.desc())
    if state is not None:
        query = query.where(JobRecord.state == state)
    with engine.connect() as conn:
        return [_job(row) for row in conn.execute(query.limit(limit))]


def wait(
    engine: Engine,
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 0.1,
    max_poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Job:
    """Poll until the job has finished and return it; :class:`WaitTimeout` after ``timeout``."""
    deadline = None if timeout is None else clock() + timeout
    interval = poll
    while True:
        job = get(engine, job_id)
        if not job.finished and _embedded_process_dead(job):
            _fail_dead_embedded(engine, job)
            continue
        if never_enqueued(job):
            _fail_never_enqueued(engine, job)
            continue
        if job.finished:
            return job
        if deadline is not None and clock() >= deadline:
            raise WaitTimeout(
                f"job {job_id} is still {job.state} ({job.progress:.0%} done) after "
                f"{timeout:g}s; run `script-ec2 jobs wait {job_id}` again to keep waiting"
            )
        pause = interval if deadline is None else max(0.0, min(interval, deadline - clock()))
        sleep(pause)
        interval = min(interval * 1.5, max_poll)


# --------------------------------------------------------------------------- state transitions


def start(engine: Engine, job_id: str, worker: str) -> Job | None:
    """Mark the job running (one more attempt, this worker); None if it has already finished.

    A job already ``running`` is started again: that is a redelivery after its worker died.
    """
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord

    with engine.begin() as conn:
        changed = conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.state.in_(IN_FLIGHT))
            .values(
                state=RUNNING,
                attempts=JobRecord.attempts + 1,
                worker=worker[:200],
                started_at=_now(),
                error=None,
            )
        ).rowcount
    job = get(engine, job_id)
    return job if changed else None


def set_progress(engine: Engine, job_id: str, fraction: float) -> None:
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord

    with engine.begin() as conn:
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.state == RUNNING)
            .values(progress=min(max(float(fraction), 0.0), 1.0))
        )


def finish(
    engine: Engine, job_id: str, *, result_key: str | None = None, error: str | None = None
) -> Job | None:
    """Mark the job succeeded (no ``error``) or failed; None if it had already finished."""
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord

    values: dict[str, Any] = {"finished_at": _now(), "error": None if error is None else error}
    if error is None:
        values |= {"state": SUCCEEDED, "progress": 1.0, "result_key": result_key}
    else:
        values |= {"state": FAILED}
    with engine.begin() as conn:
        changed = conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.state.in_(IN_FLIGHT))
            .values(**values)
        ).rowcount
    if not changed:
        return None
    job = get(engine, job_id)
    fields: dict[str, Any] = {"job_id": job_id, "kind": job.kind, "attempts": job.attempts}
    if error is not None:
        fields["error"] = error
    log.event(f"job {job.state}", logging.INFO if error is None else logging.WARNING, **fields)
    return job


def set_summary(engine: Engine, job_id: str, summary: Mapping[str, Any]) -> None:
    """Leave a JSON summary of what the job did on its row (shown by ``jobs status``)."""
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord

    with engine.begin() as conn:
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id)
            .values(summary=json.dumps(dict(summary), sort_keys=True, default=str))
        )


def record_notification(engine: Engine, job_id: str, entry: Mapping[str, Any]) -> None:
    """Append one delivery attempt to the job's notification log."""
    from sqlalchemy import select, update

    from script_ec2.db.models import JobRecord

    with engine.begin() as conn:
        current = conn.execute(
            select(JobRecord.notifications).where(JobRecord.id == job_id).with_for_update()
        ).scalar_one()
        entries = json.loads(current or "[]")
        entries.append(dict(entry))
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id)
            .values(notifications=json.dumps(entries, sort_keys=True))
        )


# ------------------------------------------------------------------------------------- running


def execute(
    app_ctx: AppContext,
    job_id: str,
    *,
    worker: str,
    kind: str | None = None,
    notify_config: NotifyConfig | None = None,
) -> Job | None:
    """Run a job once: mark it running, call its runner, record the outcome, then notify.

    Returns the finished job, or None when there was nothing to do (it had already finished,
    so a redelivered message changes nothing). The runner's expected failures become the job's
    error; unexpected ones too, with the traceback logged. ``kind``, when given, must match.
    """
    from script_ec2 import notify

    engine = app_ctx.engine
    job = start(engine, job_id, worker)
    if job is None:
        log.event("job already finished; nothing to do", job_id=job_id)
        return None
    log.event("job started", job_id=job_id, kind=job.kind, attempt=job.attempts, worker=worker)
    try:
        if kind is not None and job.kind != kind:
            raise ScriptEc2Error(f"job {job_id} is a {job.kind} job, delivered as {kind}")
        runner = RUNNERS.get(job.kind)
        if runner is None:
            raise ScriptEc2Error(f"no runner for job kind {job.kind!r} in this process")
        result_key = runner(app_ctx, job, _progress_writer(engine, job_id))
    except ScriptEc2Error as exc:
        done = finish(engine, job_id, error=mask_url(str(exc)))
    except Exception as exc:
        logging.getLogger(log.LOGGER_NAME).exception("job %s: unexpected error", job_id)
        done = finish(engine, job_id, error=mask_url(f"unexpected {type(exc).__name__}: {exc}"))
    else:
        done = finish(engine, job_id, result_key=result_key)
    if done is None:
        return None  # a twin delivery finished it first: it has notified
    if done.notify.get("webhooks") or done.notify.get("emails"):
        config = notify_config or notify.config_from_settings(app_ctx.settings)
        notify.deliver(
            done.notify,
            notify.payload(
                done.id, done.kind, done.state, done.result_key, done.error, done.finished_at
            ),
            config,
            lambda entry: record_notification(engine, job_id, entry),
        )
        done = get(engine, job_id)
    return done


def _run_fit(app_ctx: AppContext, job: Job, progress: Progress) -> str | None:
    """Prepare the fit again (the models it resolves are this worker's), then use the cache."""
    import script_ec2.fitting as fitting

    if job.algorithm is None:
        raise ScriptEc2Error(f"fit job {job.id} names no algorithm")
    request = fitting.prepare(
        app_ctx.engine, app_ctx.registry, app_ctx.data_store, job.algorithm, dict(job.params)
    )
    cached = fitting.lookup(app_ctx.engine, request.key)
    if cached is not None:
        return str(cached.key)
    result = fitting.compute(app_ctx.engine, app_ctx.registry, app_ctx.data_store, request)
    return str(result.key)


def _run_sync(app_ctx: AppContext, job: Job, progress: Progress) -> str | None:
    """One sync pass over the source the submitter named, reporting bytes fetched as progress."""
    from script_ec2.sync import run_sync

    source = str(job.params.get("source") or app_ctx.settings.data_uri)
    summary = run_sync(
        app_ctx.engine,
        app_ctx.store(source),
        source=source,
        cache_dir=app_ctx.settings.cache_dir,
        observer=_SyncProgress(progress),
    )
    # Quarantined or failed objects do not fail the job (the pass did its work, as the CLI's
    # exit 3 says); the summary on the job lists them.
    set_summary(app_ctx.engine, job.id, summary.as_json())
    return None


class _SyncProgress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0

    def planned(self, plan: Any) -> None:
        self.total = sum(o.size for o in plan.to_fetch)

    def object_done(self, key: str, nbytes: int) -> None:
        self.done += nbytes
        if self.total:
            self.progress(self.done / self.total)


RUNNERS: dict[str, Runner] = {"fit": _run_fit, "sync": _run_sync}


# ------------------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timezone-aware columns back naive; every stored time is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _job(row: Row[Any]) -> Job:
    m = row._mapping
    created = _aware(m["created_at"])
    assert created is not None
    return Job(
        id=m["id"],
        key=m["key"],
        kind=m["kind"],
        algorithm=m["algorithm"],
        params=json.loads(m["params"] or "{}"),
        state=m["state"],
        progress=float(m["progress"] or 0.0),
        error=m["error"],
        result_key=m["result_key"],
        attempts=int(m["attempts"] or 0),
        worker=m["worker"],
        notify=json.loads(m["notify"] or "{}"),
        notifications=json.loads(m["notifications"] or "[]"),
        created_at=created,
        started_at=_aware(m["started_at"]),
        finished_at=_aware(m["finished_at"]),
        enqueued_at=_aware(m["enqueued_at"]),
        summary=json.loads(m["summary"]) if m["summary"] else None,
    )


def _in_flight(engine: Engine, key: str) -> Job | None:
    from sqlalchemy import select

    from script_ec2.db.models import JobRecord

    with engine.connect() as conn:
        row = conn.execute(
            select(JobRecord.__table__).where(JobRecord.key == key, JobRecord.state.in_(IN_FLIGHT))
        ).first()
    return None if row is None else _job(row)


def _join(engine: Engine, job: Job, targets: Mapping[str, list[str]]) -> bool:
    """Add the joiner's targets to an in-flight job; False if it finished meanwhile."""
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord
    from script_ec2.notify import merge_targets

    if not (targets.get("webhooks") or targets.get("emails")):
        return _still_in_flight(engine, job.id)
    with engine.begin() as conn:
        current = _locked_notify(conn, job.id)
        if current is None:
            return False
        merged = merge_targets(json.loads(current or "{}"), targets)
        changed = conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job.id, JobRecord.state.in_(IN_FLIGHT))
            .values(notify=json.dumps(merged, sort_keys=True))
        ).rowcount
    return bool(changed)


def _locked_notify(conn: Connection, job_id: str) -> str | None:
    from sqlalchemy import select

    from script_ec2.db.models import JobRecord

    value: str | None = conn.execute(
        select(JobRecord.notify)
        .where(JobRecord.id == job_id, JobRecord.state.in_(IN_FLIGHT))
        .with_for_update()
    ).scalar_one_or_none()
    return value


def _still_in_flight(engine: Engine, job_id: str) -> bool:
    return get(engine, job_id).state in IN_FLIGHT


def _embedded_process_dead(job: Job) -> bool:
    """True when an in-flight job belongs to an embedded run whose process is gone.

    Nothing redelivers an embedded job, so without this check a run killed mid-way would leave
    its key blocked for good and every identical request would join a job that never ends.
    """
    if job.state not in IN_FLIGHT or not (job.worker or "").startswith(EMBEDDED_PREFIX):
        return False
    host, _, pid_text = (job.worker or "")[len(EMBEDDED_PREFIX) :].rpartition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def never_enqueued(job: Job, *, now: datetime | None = None) -> bool:
    """True for a queued broker-mode job whose message never reached the broker.

    That happens when the submitting process dies between inserting the job and publishing it.
    No worker will ever start it, so waiting for it, or joining it, would wait for ever. A job
    younger than :data:`ENQUEUE_GRACE_S` may still be being published and is left alone.
    """
    if job.state != QUEUED or job.enqueued_at is not None:
        return False
    if (job.worker or "").startswith(EMBEDDED_PREFIX):
        return False  # embedded jobs never go through the broker
    return ((now or _now()) - job.created_at).total_seconds() > ENQUEUE_GRACE_S


def _fail_never_enqueued(engine: Engine, job: Job) -> None:
    finish(
        engine,
        job.id,
        error="never reached the broker: the process that queued it stopped before handing it "
        "over; submit again",
    )


def _mark_enqueued(engine: Engine, job_id: str) -> None:
    from sqlalchemy import update

    from script_ec2.db.models import JobRecord

    with engine.begin() as conn:
        conn.execute(
            update(JobRecord)
            .where(JobRecord.id == job_id, JobRecord.enqueued_at.is_(None))
            .values(enqueued_at=_now())
        )


def _fail_dead_embedded(engine: Engine, job: Job) -> None:
    finish(
        engine,
        job.id,
        error=f"the process that ran it ({job.worker}) exited before it finished; submit again",
    )


def _progress_writer(engine: Engine, job_id: str) -> Progress:
    """A progress callback that writes at most every half second (and always the last step)."""
    last = [0.0]

    def report(fraction: float) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last[0] >= _PROGRESS_EVERY_S:
            last[0] = now
            set_progress(engine, job_id, fraction)

    return report
