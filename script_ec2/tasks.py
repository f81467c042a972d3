"""The task-queue adapter: a Celery app built from settings, its two tasks, and the worker.

Delivery is at-least-once and the tasks are idempotent:

* ``task_acks_late``: a message is acknowledged only after its task returns, so a worker that
  dies mid-task (``kill -9``, OOM, lost host) never loses the job; RabbitMQ hands the unacked
  message to another consumer when the connection drops.
* ``task_reject_on_worker_lost``: when only a pool process dies, the worker requeues the message
  instead of acknowledging it as failed.
* ``worker_prefetch_multiplier=1``: a busy worker holds no second message hostage.
* No result backend: the ``jobs`` table is the truth (:mod:`script_ec2.jobs`). A redelivered
  task for a finished job does nothing, and one whose result is cached finishes at once.

RabbitMQ's ``consumer_timeout`` (30 minutes by default since 3.8.15) closes the channel of a
consumer that holds an unacknowledged message longer than that, and the message is delivered
again, so with late acks a job longer than the timeout runs twice, forever. Set it above the
longest job in ``rabbitmq.conf`` (``consumer_timeout = 14400000`` for 4 h, in milliseconds), or
from RabbitMQ 3.12 on with a policy on this queue only: ``rabbitmqctl set_policy script-ec2-timeout
'^script-ec2$' '{"consumer-timeout": 14400000}' --apply-to queues``. The redis and SQS
transports have the same trap under another name: ``broker_transport_options`` must set a
``visibility_timeout`` above the longest job.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from script_ec2 import log
from script_ec2.errors import ScriptEc2Error, UsageError
from script_ec2.settings import Settings, mask_url

if TYPE_CHECKING:
    from celery import Celery

    from script_ec2.context import AppContext
    from script_ec2.jobs import Job

DEFAULT_QUEUE = "script-ec2"
TASK_NAMES = {"fit": "script_ec2.fit", "sync": "script_ec2.sync"}
BROKER_HINT = "(check --broker-url / SCRIPT_EC2_BROKER_URL)"
# Publishing gives up after about a second against a broker that is down: the job is then marked
# failed and the command exits 1, rather than hanging a `fit --async` call.
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1}
# A job whose database is down is retried for about an hour and a half (1, 2, 4 ... 60 s apart).
_DB_RETRIES = 100
_DB_RETRY_MAX_S = 60
_BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss", "sqs")


class BrokerUnavailable(ScriptEc2Error):
    """The broker could not be reached or refused the message."""


def queue_name(settings: Settings, env: dict[str, str] | None = None) -> str:
    """The queue jobs are sent to and workers consume by default.

    Read from the ``broker_queue`` setting, or else ``SCRIPT_EC2_BROKER_QUEUE``, else
    ``script-ec2``. Separate queues keep deployments (or parallel test runs) on one broker apart.
    """
    found = getattr(settings, "broker_queue", None)
    if not found:
        found = (os.environ if env is None else env).get("SCRIPT_EC2_BROKER_QUEUE", "")
    name = str(found).strip() or DEFAULT_QUEUE
    if not all(c.isalnum() or c in "-_.:" for c in name) or len(name) > 200:
        raise UsageError(
            f"broker queue name {name!r} may hold only letters, digits and -_.: "
            "(check SCRIPT_EC2_BROKER_QUEUE)"
        )
    return name


def check_broker_url(url: str) -> str:
    """``url`` if it names a broker Celery can use; a usage error otherwise."""
    if not url:
        raise UsageError(
            "no broker configured: set --broker-url / SCRIPT_EC2_BROKER_URL "
            "(e.g. amqp://user:password@127.0.0.1:5672//); without one, --async jobs run in-process"
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _BROKER_SCHEMES:
        raise UsageError(
            f"broker URL {mask_url(url)!r} must start with one of "
            f"{', '.join(s + '://' for s in _BROKER_SCHEMES)} {BROKER_HINT}"
        )
    return url


def make_celery(settings: Settings, *, queue: str | None = None) -> Celery:
    """A Celery app for the broker in ``settings``, with the ``script_ec2.*`` tasks registered.

    The tasks build their clients from ``settings`` once per worker process (pool processes are
    forked, and a database connection must not cross a fork).
    """
    from celery import Celery

    broker_url = check_broker_url(settings.broker_url)
    queue = queue or queue_name(settings)
    app = Celery("script_ec2", broker=broker_url, set_as_current=False)
    app.conf.update(_config(queue))
    contexts = _ProcessContext(settings)

    def run(task: Any, job_id: str, kind: str) -> None:
        from sqlalchemy.exc import OperationalError

        from script_ec2 import jobs
        from script_ec2.errors import DatabaseError

        worker = f"{task.request.hostname or socket.gethostname()}/{os.getpid()}"
        try:
            jobs.execute(contexts.get(), job_id, worker=worker, kind=kind)
        except jobs.UnknownJob as exc:
            # Nothing can ever run it: acknowledge and drop it rather than redeliver forever.
            log.event("message for an unknown job dropped", error=str(exc))
        except (DatabaseError, OperationalError) as exc:
            # The jobs table is out of reach, so the outcome cannot be recorded: send the message
            # again later instead of acknowledging a job that would then stay queued for good.
            retries = int(task.request.retries or 0)
            log.event(
                "database unavailable; job retried later",
                job_id=job_id,
                retry=retries + 1,
                error=mask_url(str(exc).splitlines()[0]),
            )
            raise task.retry(
                exc=exc, countdown=min(2**retries, _DB_RETRY_MAX_S), max_retries=_DB_RETRIES
            ) from None

    @app.task(name=TASK_NAMES["fit"], bind=True)
    def fit(self: Any, job_id: str) -> None:
        run(self, job_id, "fit")

    @app.task(name=TASK_NAMES["sync"], bind=True)
    def sync(self: Any, job_id: str) -> None:
        run(self, job_id, "sync")

    return app


def _config(queue: str) -> dict[str, Any]:
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": queue,
        "task_default_exchange": queue,
        "task_default_routing_key": queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        # The broker confirms each message is stored before send_task returns.
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_retry_on_startup": True,
        # With late acks the broker redelivers a task whose connection dropped; running it on
        # here as well would compute it twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "worker_redirect_stdouts": False,
    }


class _ProcessContext:
    """One AppContext per process, built on first use from the worker's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid: int | None = None
        self._ctx: AppContext | None = None

    def get(self) -> AppContext:
        from script_ec2.context import AppContext

        if self._ctx is None or self._pid != os.getpid():
            self._ctx, self._pid = AppContext(self.settings), os.getpid()
        return self._ctx


@functools.lru_cache(maxsize=4)
def _producer(broker_url: str, queue: str) -> Celery:
    # One app (and so one pooled broker connection) per broker and queue for this process, so
    # many submissions do not each open a connection.
    from celery import Celery

    app = Celery("script_ec2", broker=broker_url, set_as_current=False)
    app.conf.update(_config(queue))
    return app


def enqueue(settings: Settings, job: Job) -> None:
    """Publish the message that makes a worker run ``job``; :class:`BrokerUnavailable` if not."""
    from kombu.exceptions import KombuError

    broker_url = check_broker_url(settings.broker_url)
    queue = queue_name(settings)
    task = TASK_NAMES.get(job.kind)
    if task is None:
        raise UsageError(
            f"a {job.kind} job cannot be sent to a worker (only {', '.join(TASK_NAMES)})"
        )
    try:
        _producer(broker_url, queue).send_task(
            task,
            args=[job.id],
            task_id=job.id,
            queue=queue,
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )
    except (KombuError, OSError) as exc:
        _producer.cache_clear()
        reason = mask_url(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        raise BrokerUnavailable(
            f"cannot send job {job.id} to the broker at {mask_url(broker_url)}: {reason} "
            f"{BROKER_HINT}"
        ) from exc
    except Exception as exc:
        # py-amqp raises its own errors (access refused, channel closed) outside kombu's tree.
        from amqp.exceptions import AMQPError

        if not isinstance(exc, AMQPError):
            raise
        _producer.cache_clear()
        raise BrokerUnavailable(
            f"the broker at {mask_url(broker_url)} refused job {job.id}: {exc} {BROKER_HINT}"
        ) from exc
    log.event("job sent to broker", job_id=job.id, task=task, queue=queue)


def run_worker(
    app_ctx: AppContext,
    *,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
) -> int:
    """Run a Celery worker in this process until it is stopped; return its exit code.

    SIGTERM is a warm shutdown (running jobs finish; with late acks, unstarted ones stay queued),
    a second SIGTERM or SIGQUIT a cold one (running jobs are redelivered to another worker).
    """
    settings = app_ctx.settings
    check_broker_url(settings.broker_url)
    if concurrency is not None and not 1 <= concurrency <= 256:
        raise UsageError(f"--concurrency must be between 1 and 256, got {concurrency}")
    names = [q.strip() for q in (queues or []) if q.strip()] or [queue_name(settings)]
    for name in names:
        queue_name(settings, {"SCRIPT_EC2_BROKER_QUEUE": name})
    # Fail now, with one line, if the database is unreachable or behind; the pool processes
    # then open their own connections (none is shared across the fork).
    app_ctx.engine.dispose()
    app = make_celery(settings, queue=names[0])
    hostname = f"script-ec2-{os.getpid()}@{socket.gethostname()}"
    log.event(
        "worker starting",
        hostname=hostname,
        broker=mask_url(settings.broker_url),
        queues=",".join(names),
        concurrency=concurrency or os.cpu_count(),
    )
    worker = app.Worker(
        hostname=hostname,
        concurrency=concurrency,
        queues=names,
        loglevel="WARNING" if settings.quiet else "INFO",
        quiet=True,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
