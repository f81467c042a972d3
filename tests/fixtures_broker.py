"""Fixtures for asynchronous jobs: the RabbitMQ broker, worker subprocesses, a local webhook.

``rabbitmq_url`` is the broker on 127.0.0.1:5672 (guest/guest, or ``SCRIPT_EC2_TEST_BROKER_URL``);
when it does not answer, tests skip (or fail under SCRIPT_EC2_REQUIRE_SERVICES=1) through
``service_missing``. Each test gets its own queue (``broker_queue``), deleted afterwards, so
parallel runs on one broker never take each other's messages.

``workers`` starts real ``script-ec2 worker`` processes and always kills them at teardown. They
run this module (``python -m tests.fixtures_broker worker ...``), which calls the real CLI entry
point; when ``SCRIPT_EC2_TEST_COMPUTE_LOG`` is set it first swaps the ``fit`` runner for
:func:`standin_fit`, a slow, countable stand-in, so tests can count computations and kill a
worker mid-job. Without that variable the worker runs the real fit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import port_open, service_missing

BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
DEFAULT_BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}//"
COMPUTE_LOG_ENV = "SCRIPT_EC2_TEST_COMPUTE_LOG"
ROOT = Path(__file__).resolve().parent.parent
WORKER_READY_TIMEOUT_S = 30
# A load forecast that needs only the workplace model that save_workplace_model writes.
WORKPLACE_FIT: dict[str, Any] = {"num_evs": 200, "fast_percent": 0, "work_percent": 1}


# ----------------------------------------------------------------------------------- broker


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of the local RabbitMQ broker, once it accepts a login."""
    url = os.environ.get("SCRIPT_EC2_TEST_BROKER_URL") or DEFAULT_BROKER_URL
    if not port_open(BROKER_HOST, BROKER_PORT):
        service_missing("RabbitMQ", f"nothing listens on {BROKER_HOST}:{BROKER_PORT}")
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        service_missing("RabbitMQ", f"cannot log in at {BROKER_HOST}:{BROKER_PORT}: {exc}")
    return url


@pytest.fixture
def broker_queue(rabbitmq_url: str) -> Iterator[str]:
    """A queue name no other test or run uses; the queue and its exchange are deleted after."""
    name = f"script-ec2-test-{secrets.token_hex(6)}"
    yield name
    from kombu import Connection

    with Connection(rabbitmq_url, connect_timeout=5) as conn:
        channel = conn.channel()
        for delete in (channel.queue_delete, channel.exchange_delete):
            try:
                delete(name)
            except Exception:
                channel = conn.channel()  # the broker closes a channel on a failed delete


def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (0 when it does not exist yet)."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except Exception:
            return 0


# ----------------------------------------------------------------------------------- workers


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = WORKER_READY_TIMEOUT_S) -> None:
        """Block until Celery logs "ready" (the worker is consuming), or fail with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"worker did not become ready; its output:\n{self.output()[-4000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the worker and its pool processes (its own process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole group after ``grace`` seconds."""
        if self.process.poll() is None and grace > 0:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        self.kill()
        try:
            return self.process.wait(5)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class Workers:
    folder: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str] | None = None, concurrency: int = 1) -> Worker:
        """Start ``script-ec2 worker --concurrency N ARGS`` with the current environment."""
        log = self.folder / f"worker-{len(self.started) + 1}.log"
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fixtures_broker",
                    "worker",
                    "--concurrency",
                    str(concurrency),
                    *args,
                ],
                cwd=ROOT,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process, log)
        self.started.append(worker)
        return worker

    def stop_all(self, grace: float = 0.0) -> None:
        """SIGKILL to every worker's process group, after a warm shutdown of ``grace`` seconds.

        Teardown uses no grace: the test has its answers, and Celery's warm shutdown takes
        seconds. The queue is deleted afterwards, so no message outlives the test.
        """
        for worker in self.started:
            if grace > 0 and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(0.0, deadline - time.monotonic()))
        for worker in self.started:
            worker.stop(grace=0.0)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Starts worker subprocesses; every one is stopped (and its group killed) afterwards."""
    folder = tmp_path / "workers"
    folder.mkdir()
    started = Workers(folder)
    try:
        yield started
    finally:
        started.stop_all()


# ------------------------------------------------------------------------- stand-in runner


def standin_fit(app_ctx: Any, job: Any, progress: Callable[[float], None]) -> str:
    """A countable stand-in for a fit: logs its start and end, sleeps, returns the job's key.

    Params: ``seconds`` (default 0), ``first_attempt_seconds`` (the first attempt's duration,
    so a test can kill it mid-way and have the redelivery finish fast) and ``fail`` (a message
    to fail with).
    """
    from script_ec2.errors import ScriptEc2Error

    log = Path(os.environ[COMPUTE_LOG_ENV])
    seconds = float(job.params.get("seconds", 0))
    if job.attempts == 1:
        seconds = float(job.params.get("first_attempt_seconds", seconds))
    _append(log, f"start {job.id} {os.getpid()} {job.attempts}")
    steps = max(1, int(seconds / 0.05))
    for step in range(steps):
        time.sleep(seconds / steps)
        progress((step + 1) / steps)
    if job.params.get("fail"):
        raise ScriptEc2Error(str(job.params["fail"]))
    _append(log, f"done {job.id} {os.getpid()} {job.attempts}")
    return str(job.key)


def _append(path: Path, line: str) -> None:
    # One short O_APPEND write per line, so lines from several processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ComputeEvent:
    event: str  # start or done
    job_id: str
    pid: int
    attempt: int


def read_compute_log(path: Path) -> list[ComputeEvent]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        event, job_id, pid, attempt = line.split()
        events.append(ComputeEvent(event, job_id, int(pid), int(attempt)))
    return events


def ensure_job_commands() -> None:
    """Register ``jobs`` and ``worker`` on the CLI if script_ec2.cli does not (yet) do it."""
    from script_ec2.cli import app
    from script_ec2.commands import jobs as jobs_cmd
    from script_ec2.commands import worker as worker_cmd

    groups = {info.name for info in app.registered_groups}
    commands = {info.name for info in app.registered_commands}
    if "jobs" not in groups:
        app.add_typer(jobs_cmd.app, name="jobs")
    if "worker" not in commands:
        app.command("worker")(worker_cmd.worker)


# ---------------------------------------------------------------------------------- models


def save_workplace_model(models_dir: Path) -> None:
    """One hand-made workplace session model: enough for a workplace-only load forecast."""
    import numpy as np

    from script_ec2.registry import Registry
    from script_ec2.store.local import LocalStore

    models_dir.mkdir(parents=True, exist_ok=True)
    Registry(LocalStore(models_dir, uri=str(models_dir))).save(
        "session-gmm",
        "sessions-workplace-weekday",
        parameters={},
        metrics={},
        fingerprint="f" * 64,
        arrays={
            "weights": np.array([1.0]),
            "means": np.array([[4.5, 11.0]]),
            "covariances": np.array([[[4.0, 0.5], [0.5, 9.0]]]),
            "shift_hours": np.array(4.0),
            "energy_bounds": np.array([0.1, 80.0]),
        },
        record={},
        licence="test",
    )


# ---------------------------------------------------------------------------------- webhook


@dataclass
class Webhook:
    """A local HTTP server that records each POST and answers with scripted status codes."""

    url: str
    statuses: list[int]
    received: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.arrived.wait(0.05)
            self.arrived.clear()
        return list(self.received)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    """A webhook on a free loopback port; set ``statuses`` to script its answers (default 200)."""
    hook = Webhook(url="", statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = hook.statuses.pop(0) if hook.statuses else 200
            hook.received.append(json.loads(body))
            hook.paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            hook.arrived.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str]) -> int:
    """``python -m tests.fixtures_broker worker ...``: the real CLI, maybe with the stand-in."""
    from script_ec2 import jobs
    from script_ec2.cli import main as cli_main

    ensure_job_commands()
    if os.environ.get(COMPUTE_LOG_ENV):
        jobs.RUNNERS["fit"] = standin_fit
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
