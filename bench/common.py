"""What every benchmark shares: the :class:`Figure` it reports, the :class:`BenchContext` it runs
in, :func:`run_child` to time a child process and read its own peak RSS, and :class:`MotoServer`,
a moto S3 server in a separate process whose request log tells which S3 calls a client made.

A benchmark measures the real command line (``python -m script_ec2 ...``) in a child process, so
its figures include what an operator's cron job pays: interpreter start, imports and set-up.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

MiB = 1024 * 1024
_TARGET = re.compile(r"^\s*(<=|>=|==|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


class BenchError(Exception):
    """A benchmark could not measure what it set out to: a child failed, a server did not start."""


@dataclass(frozen=True)
class Figure:
    """One measured number and how it compares with its baseline and target.

    ``target`` is text such as ``'<= 2.0'``; it applies to ``ratio`` when there is a baseline and
    to ``value`` otherwise. ``passed`` is None for figures reported without a target.
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    passed: bool | None = None
    note: str = ""

    @classmethod
    def measure(
        cls,
        name: str,
        value: float,
        unit: str,
        *,
        baseline: float | None = None,
        target: str | None = None,
        note: str = "",
    ) -> Figure:
        """A figure whose ratio is ``value / baseline`` and whose target is checked here."""
        ratio = value / baseline if baseline else None
        checked = ratio if ratio is not None else value
        passed = meets(checked, target) if target is not None else None
        return cls(name, value, unit, baseline, ratio, target, passed, note)


def meets(value: float, target: str) -> bool:
    """Whether ``value`` satisfies ``target`` (``'<= 2.0'``, ``'== 0'``, ``'> 1e3'`` ...)."""
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"target {target!r} is not '<op> <number>' with op one of <= >= == < >")
    op, bound = match[1], float(match[2])
    return {
        "<=": value <= bound,
        ">=": value >= bound,
        "==": value == bound,
        "<": value < bound,
        ">": value > bound,
    }[op]


@dataclass(frozen=True)
class BenchContext:
    """What the runner gives a benchmark: the data scale, a fresh scratch folder, an interpreter.

    ``scale`` multiplies the benchmark's data sizes (1.0 is the size its targets are defined
    for); ``workdir`` is empty at the start and deleted afterwards; ``python`` is the interpreter
    that children (``python -m script_ec2``) run with.
    """

    scale: float
    workdir: Path
    python: str = sys.executable

    def log(self, message: str) -> None:
        """A progress line on stderr (stdout is for the results table)."""
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: exit code, wall and CPU time, own peak RSS, output."""

    args: tuple[str, ...]
    returncode: int
    seconds: float
    cpu_seconds: float
    max_rss_bytes: int
    stdout: str
    stderr: str

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_bytes / MiB


def run_child(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    check: bool = True,
) -> ChildRun:
    """Run ``args`` to completion; time it and read its peak RSS from its own rusage.

    ``os.wait4`` gives the rusage of exactly this child, whereas ``RUSAGE_CHILDREN`` would be the
    largest peak of every child reaped so far. Output goes to temporary files so a chatty child
    cannot block on a full pipe while it is being timed.
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=dict(env), cwd=cwd
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - started
        # Popen did not reap the child itself; tell it, or its destructor would wait again.
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    cpu = usage.ru_utime + usage.ru_stime
    run = ChildRun(tuple(args), proc.returncode, seconds, cpu, rss, stdout, stderr)
    if check and run.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-5:])
        raise BenchError(f"{' '.join(args[:6])} ... exited {run.returncode}: {tail}")
    return run


def best(values: Sequence[float]) -> float:
    """The least disturbed of repeated timings: on a shared machine noise only ever adds time."""
    return float(min(values))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# werkzeug's request log line: 127.0.0.1 - - [date] "GET /bucket/key?x=1 HTTP/1.1" 200 -
_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


def s3_operation(method: str, target: str) -> str:
    """The S3 operation of a path-style request, e.g. ``GetObject`` or ``ListObjectsV2``."""
    split = urlsplit(target)
    bucket, _, key = split.path.lstrip("/").partition("/")
    query = parse_qs(split.query, keep_blank_values=True)
    if not bucket:
        return f"{method} service"
    if key:
        if "uploadId" in query or "uploads" in query:
            return f"{method} multipart"
        return {
            "GET": "GetObject",
            "HEAD": "HeadObject",
            "PUT": "PutObject",
            "DELETE": "DeleteObject",
        }.get(method, f"{method} object")
    if method == "GET" and query.get("list-type") == ["2"]:
        return "ListObjectsV2"
    if method == "GET" and not query:
        return "ListObjects"
    return {"HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(method, f"{method} bucket")


class MotoServer:
    """``python -m moto.server`` on a free loopback port, in its own process, logging requests.

    Use as a context manager; :meth:`mark` and :meth:`operations_since` count the S3 operations
    that arrived between two points, read from the server's request log.
    """

    def __init__(self, workdir: Path, env: Mapping[str, str], python: str = sys.executable):
        self.workdir = workdir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "moto-requests.log"
        spool = workdir / "moto-spool"
        spool.mkdir(parents=True, exist_ok=True)
        # moto spools object bodies above a few MB to temporary files: keep them in the workdir.
        self._env = {**env, "TMPDIR": str(spool)}
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BenchError(
                    f"moto server exited with {self._proc.returncode} at start: "
                    f"{self.log_path.read_text(errors='replace')[-500:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BenchError(f"moto server did not listen on 127.0.0.1:{self.port} within 30 s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def mark(self) -> int:
        """A point in the request log; werkzeug writes a request's line before its response."""
        return self.log_path.stat().st_size

    def operations_since(self, mark: int) -> Counter[str]:
        """S3 operations logged after ``mark``, counted by name."""
        with self.log_path.open("rb") as fh:
            fh.seek(mark)
            text = fh.read().decode(errors="replace")
        ops: Counter[str] = Counter()
        for line in text.splitlines():
            match = _REQUEST_LINE.search(line)
            if match:
                ops[s3_operation(match["method"], match["target"])] += 1
        return ops
