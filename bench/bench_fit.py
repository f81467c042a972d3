"""Fit benchmarks: the vectorised load forecast, a cache hit on the command line, and async jobs.

Models: hand-made two-component session models for every segment (weekday), as in
``tests/test_fit_cli.py``, saved to a local registry, so nothing is trained here. The county EV
file sits in a local data folder; every database is SQLite in the scratch folder.

Figures:

1. ``forecast_fit.forecast`` in-process, 1,000,000 EVs × scale at state level with every segment
   getting vehicles (``publicl2_percent`` > 0): best of :data:`FORECAST_REPEATS`, target <= 1 s.
   Baseline: the same forecast with ``per_vehicle_loop_profile`` in place of ``build_profile``,
   over the very same samples (same ``SeedSequence(seed).spawn(6)`` streams, same models, same
   clipping), checked equal to the vectorised profile; target ratio loop / vectorised >= 20.
2. A cache hit through the CLI: ``python -m script_ec2 --quiet fit load-forecast ... -f json``
   once (the miss), then :data:`HIT_REPEATS` hits, each a whole child process; best, target
   <= 0.5 s. A further hit in ``python -c`` calling ``script_ec2.cli.main`` counts which of
   scikit-learn, scipy and matplotlib it imported; target == 0. Its note also names which of
   numpy and the SQLAlchemy ORM it imported (none: a JSON hit reads the stored arrays' bytes and
   queries the results table with SQLAlchemy Core).
3. Async with RabbitMQ (127.0.0.1:5672) and two ``script-ec2 worker --concurrency 1``
   processes on a queue of this run: 100 identical ``jobs.submit_fit`` requests must create
   exactly one job (target == 1), then 50 distinct requests (seeds vary) give a throughput in
   jobs/s from the first submit to the last finished job (no target). Without a reachable broker
   only this part fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import BenchContext, BenchError, ChildRun, Figure, best, run_child

EVS_AT_SCALE_1 = 1_000_000
THROUGHPUT_EVS_AT_SCALE_1 = 100_000
FORECAST_REPEATS = 3
FORECAST_TARGET_S = 1.0
LOOP_TARGET_RATIO = 20
HIT_REPEATS = 5
HIT_TARGET_S = 0.5
HEAVY = ("sklearn", "scipy", "matplotlib")
LEAN = ("numpy", "sqlalchemy.orm")  # also left out of a JSON hit; reported, no target
IDENTICAL_REQUESTS = 100
DISTINCT_REQUESTS = 50
WORKERS = 2
BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}//"
WORKER_READY_S = 60
JOB_TIMEOUT_S = 600
EV_CSV = "County,EVs\nSanta Clara,300\nAlameda,100\nFresno,100\n"
# Every segment gets vehicles: the default parameters leave public L2 at 0.
BASE_PARAMS: dict[str, Any] = {"publicl2_percent": 0.1, "seed": 20_240_601}


def run(ctx: BenchContext) -> list[Figure]:
    evs = max(10_000, round(EVS_AT_SCALE_1 * ctx.scale))
    models_dir, data_dir = _prepare(ctx)
    figures = _forecast_figures(ctx, evs)
    figures += _cache_hit_figures(ctx, models_dir, data_dir, evs)
    try:
        figures += _async_figures(ctx, models_dir, data_dir, evs)
    except BenchError as exc:
        # The other figures stand on their own; say what could not be measured.
        ctx.log(f"async figures not measured: {exc}")
        figures.append(
            Figure(
                f"async: computations for {IDENTICAL_REQUESTS} identical requests",
                float("nan"),
                "",
                target="== 1",
                passed=False,
                note=f"not measured: {exc}",
            )
        )
    return figures


# --------------------------------------------------------------------------- models and data


def _gmm(first: tuple[float, float], second: tuple[float, float], shift: float = 0.0) -> Any:
    import numpy as np

    return {
        "weights": np.array([0.7, 0.3]),
        "means": np.array([first, second]),
        "covariances": np.array([[[4.0, 0.5], [0.5, 9.0]], [[2.0, -0.3], [-0.3, 16.0]]]),
        "shift_hours": np.array(shift),
        "energy_bounds": np.array([0.1, 80.0]),
    }


def _session_models() -> dict[str, Any]:
    return {
        "Residential L1": _gmm((20.0, 8.0), (22.5, 14.0)),
        "Residential L2": _gmm((19.0, 14.0), (21.0, 30.0)),
        "Residential MUD": _gmm((21.0, 12.0), (18.0, 20.0)),
        "Workplace": _gmm((4.5, 11.0), (6.0, 18.0), shift=4.0),
        "Public L2": _gmm((13.0, 8.0), (17.0, 12.0)),
        "DC Fast": _gmm((15.0, 25.0), (11.0, 35.0)),
    }


def _prepare(ctx: BenchContext) -> tuple[Path, Path]:
    """A registry with a weekday session model of every segment, and the county EV file."""
    from script_ec2.fitting import COUNTY_EV_FILE
    from script_ec2.forecast_fit import SEGMENT_LABELS, session_model_name
    from script_ec2.forecast_train import KIND
    from script_ec2.registry import Registry
    from script_ec2.store.local import LocalStore

    models_dir, data_dir = ctx.workdir / "models", ctx.workdir / "data"
    models_dir.mkdir()
    data_dir.mkdir()
    (data_dir / COUNTY_EV_FILE).write_text(EV_CSV)
    registry = Registry(LocalStore(models_dir, uri=str(models_dir)))
    models = _session_models()
    for label in SEGMENT_LABELS:
        registry.save(
            KIND,
            session_model_name(label, "weekday"),
            parameters={},
            metrics={},
            fingerprint="b" * 64,
            arrays=models[label],
            record={},
            licence="benchmark",
        )
    return models_dir, data_dir


def _child_env(ctx: BenchContext, models_dir: Path, data_dir: Path, db: str) -> dict[str, str]:
    """This environment without AWS or script-ec2 settings, plus the benchmark's own."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCRIPT_EC2_", "BOTO_"))
    }
    missing = str(ctx.workdir / "no-aws-config")
    env.update(
        AWS_CONFIG_FILE=missing,
        AWS_SHARED_CREDENTIALS_FILE=missing,
        AWS_EC2_METADATA_DISABLED="true",
        SCRIPT_EC2_MODELS_DIR=str(models_dir),
        SCRIPT_EC2_DATA_URI=str(data_dir),
        SCRIPT_EC2_DATA_DIR=str(ctx.workdir / "home"),
        SCRIPT_EC2_DATABASE_URL=f"sqlite:///{ctx.workdir / db}",
    )
    return env


# --------------------------------------------------------------------------- in-process forecast


def _forecast_figures(ctx: BenchContext, evs: int) -> list[Figure]:
    from script_ec2.forecast_fit import forecast, vehicle_counts
    from script_ec2.params import validate

    params = validate("load-forecast", {**BASE_PARAMS, "num_evs": evs})
    counts = vehicle_counts(params)
    if not all(counts.values()):
        raise BenchError(f"some segment gets no vehicles: {counts}")
    models = _session_models()
    forecast(params, models)  # warm-up: lazy imports, not timed
    times = []
    for i in range(FORECAST_REPEATS):
        started = time.perf_counter()
        result = forecast(params, models)
        times.append(time.perf_counter() - started)
        ctx.log(f"forecast {i + 1}/{FORECAST_REPEATS}: {times[-1]:.3f} s")
    ctx.log(f"per-vehicle loop over {sum(counts.values()):,} vehicles (slow)")
    loop_seconds, loop_profile, sample_seconds = _loop_forecast(params, models, counts)
    ctx.log(f"per-vehicle loop: {loop_seconds:.1f} s")
    import numpy as np

    worst = float(np.max(np.abs(loop_profile - result.uncontrolled[:, : loop_profile.shape[1]])))
    if not np.allclose(loop_profile, result.uncontrolled[:, : loop_profile.shape[1]], atol=1e-6):
        raise BenchError(f"the per-vehicle loop disagrees with forecast() by {worst:g} kW")
    vectorised = best(times)
    vehicles = sum(counts.values())
    return [
        Figure.measure(
            f"fit load-forecast {evs:,} EVs (in-process)",
            vectorised,
            "s",
            target=f"<= {FORECAST_TARGET_S:g}",
            note=(
                f"forecast_fit.forecast at state level, num_evs {evs:,}, publicl2_percent 0.1, "
                f"other parameters default (1440 steps): {vehicles:,} charging vehicles, "
                f"by segment {counts}; best of {FORECAST_REPEATS} after one warm-up: "
                f"{_list(times)} s."
            ),
        ),
        Figure(
            f"fit load-forecast {evs:,} EVs, per-vehicle loop / vectorised",
            loop_seconds / vectorised,
            "x",
            baseline=loop_seconds,
            ratio=loop_seconds / vectorised,
            target=f">= {LOOP_TARGET_RATIO}",
            passed=loop_seconds / vectorised >= LOOP_TARGET_RATIO,
            note=(
                f"Baseline {loop_seconds:.1f} s: the same forecast with "
                "forecast_fit.per_vehicle_loop_profile (one vehicle and one step at a time) "
                "instead of build_profile, over exactly the samples forecast() draws (same "
                f"SeedSequence({params['seed']}).spawn(6) streams, models and clipping; "
                f"sampling {sample_seconds:.2f} s of it, timed in both). Its profiles equal "
                f"the vectorised ones (largest difference {worst:.1e} kW). One run of the loop."
            ),
        ),
    ]


def _loop_forecast(
    params: Mapping[str, Any], models: Mapping[str, Any], counts: Mapping[str, int]
) -> tuple[float, Any, float]:
    """forecast()'s sampling, then the slow loop per segment: (seconds, profiles, sampling s)."""
    import numpy as np

    from script_ec2.forecast_fit import (
        COLUMNS,
        FINE_STEPS,
        SEGMENTS,
        per_vehicle_loop_profile,
    )
    from script_ec2.gmm import SessionGmm

    started = time.perf_counter()
    sampling = 0.0
    profiles = np.zeros((FINE_STEPS, len(COLUMNS) - 1))
    streams = np.random.SeedSequence(params["seed"]).spawn(len(SEGMENTS))
    for segment, stream in zip(SEGMENTS, streams, strict=True):
        # As forecast_fit._model_source: smoothed home L2 samples the home L1 model.
        source = segment.label
        if source == "Residential L2" and params["res_l2_smooth"]:
            source = "Residential L1"
        drawn = time.perf_counter()
        gmm = SessionGmm.from_arrays(models[source])
        starts, energy = gmm.sample(counts[segment.label], np.random.default_rng(stream))
        energy = np.clip(energy, 0.0, segment.energy_cap_kwh)
        sampling += time.perf_counter() - drawn
        column = COLUMNS.index(segment.column)
        profiles[:, column] = per_vehicle_loop_profile(starts, energy, segment.rate_kw, FINE_STEPS)
    return time.perf_counter() - started, profiles, sampling


# --------------------------------------------------------------------------- CLI cache hit


def _cache_hit_figures(
    ctx: BenchContext, models_dir: Path, data_dir: Path, evs: int
) -> list[Figure]:
    env = _child_env(ctx, models_dir, data_dir, "hit.db")
    args = ["fit", "load-forecast", *_param_args({**BASE_PARAMS, "num_evs": evs}), "-f", "json"]
    command = [ctx.python, "-m", "script_ec2", "--quiet", *args]
    miss = run_child(command, env=env)
    miss_doc = _fit_json(miss)
    if miss_doc["cached"]:
        raise BenchError("the first fit into an empty database answered from the cache")
    ctx.log(f"cache miss: {miss.seconds:.2f} s")
    hits: list[ChildRun] = []
    for i in range(HIT_REPEATS):
        hit = run_child(command, env=env)
        doc = _fit_json(hit)
        if not doc["cached"] or doc["key"] != miss_doc["key"]:
            raise BenchError(f"fit {i + 1} was not a cache hit of key {miss_doc['key'][:16]}")
        hits.append(hit)
        ctx.log(f"cache hit {i + 1}/{HIT_REPEATS}: {hit.seconds:.3f} s")
    wall = [h.seconds for h in hits]

    code = (
        "import json, sys\n"
        "from script_ec2.cli import main\n"
        f"rc = main({['--quiet', *args]!r})\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})\n"
        f"lean = sorted(set(sys.modules) & {set(LEAN)!r})\n"
        "print(json.dumps({'rc': rc, 'heavy': heavy, 'lean': lean}), file=sys.stderr)\n"
    )
    checked = run_child([ctx.python, "-c", code], env=env)
    if not _fit_json(checked)["cached"]:
        raise BenchError("the import check's fit was not a cache hit")
    report = json.loads(checked.stderr.strip().splitlines()[-1])
    if report["rc"] not in (0, None):
        raise BenchError(f"script_ec2.cli.main returned {report['rc']} on a cache hit")
    heavy, lean = report["heavy"], report["lean"]
    return [
        Figure.measure(
            "fit cache hit, whole CLI process",
            best(wall),
            "s",
            target=f"<= {HIT_TARGET_S:g}",
            note=(
                f"python -m script_ec2 --quiet fit load-forecast -p num_evs={evs} ... -f json "
                f"(1440 steps) on SQLite: miss {miss.seconds:.2f} s (computed in "
                f"{miss_doc['seconds']:.2f} s), then {HIT_REPEATS} hits, each its own process: "
                f"{_list(wall, 3)} s, median {median(wall):.3f} s; CPU "
                f"{_list([h.cpu_seconds for h in hits], 3)} s; peak RSS "
                f"{max(h.max_rss_mib for h in hits):.0f} MiB. Every hit's JSON says cached, "
                "same key."
            ),
        ),
        Figure.measure(
            "heavy modules imported on a cache hit",
            float(len(heavy)),
            "",
            target="== 0",
            note=(
                "A cache hit run via python -c calling script_ec2.cli.main, then the top-level "
                f"names in sys.modules among {', '.join(HEAVY)}: "
                f"{', '.join(heavy) if heavy else 'none'}; of {', '.join(LEAN)}: "
                f"{', '.join(lean) if lean else 'none'}."
            ),
        ),
    ]


def _param_args(params: Mapping[str, Any]) -> list[str]:
    return [arg for key, value in params.items() for arg in ("-p", f"{key}={value}")]


def _fit_json(child: ChildRun) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(child.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"script-ec2 fit printed no JSON: {exc}") from None
    return doc


# --------------------------------------------------------------------------- async jobs


def _async_figures(ctx: BenchContext, models_dir: Path, data_dir: Path, evs: int) -> list[Figure]:
    _check_broker()
    from script_ec2 import jobs
    from script_ec2.context import AppContext
    from script_ec2.settings import resolve

    queue = f"script-ec2-bench-{secrets.token_hex(6)}"
    env = _child_env(ctx, models_dir, data_dir, "jobs.db")
    env.update(SCRIPT_EC2_BROKER_URL=BROKER_URL, SCRIPT_EC2_BROKER_QUEUE=queue)
    app = AppContext(resolve(env=env))
    app.engine  # noqa: B018 - creates the SQLite schema before the workers race to do it
    try:
        with _workers(ctx, env):
            same = {**BASE_PARAMS, "num_evs": evs}
            submissions = [
                jobs.submit_fit(app, "load-forecast", same) for _ in range(IDENTICAL_REQUESTS)
            ]
            ids = {s.job_id for s in submissions if s.job_id is not None}
            for job_id in ids:
                jobs.wait(app.engine, job_id, timeout=JOB_TIMEOUT_S, poll=0.05, max_poll=0.2)
            key = _key(app, same)
            created = [j for j in jobs.list_jobs(app.engine, limit=1000) if j.key == key]
            joined = sum(s.joined for s in submissions)
            cached = sum(s.cached_result is not None for s in submissions)
            ctx.log(f"{IDENTICAL_REQUESTS} identical requests: {len(created)} job(s)")

            small = max(10_000, round(THROUGHPUT_EVS_AT_SCALE_1 * ctx.scale))
            started = time.perf_counter()
            distinct = [
                jobs.submit_fit(
                    app, "load-forecast", {**BASE_PARAMS, "num_evs": small, "seed": seed}
                )
                for seed in range(1, DISTINCT_REQUESTS + 1)
            ]
            submitted = time.perf_counter() - started
            finished = [
                jobs.wait(app.engine, s.job_id, timeout=JOB_TIMEOUT_S, poll=0.02, max_poll=0.1)
                for s in distinct
                if s.job_id is not None
            ]
            elapsed = time.perf_counter() - started
    finally:
        app.engine.dispose()
        _delete_queue(queue)
    failed = [j for j in [*created, *finished] if j.state != jobs.SUCCEEDED]
    if failed:
        raise BenchError(f"{len(failed)} job(s) failed, e.g. {failed[0].error}")
    if len(finished) != DISTINCT_REQUESTS:
        raise BenchError(f"only {len(finished)} of {DISTINCT_REQUESTS} distinct requests queued")
    ctx.log(f"{DISTINCT_REQUESTS} distinct jobs in {elapsed:.1f} s")
    by_worker: dict[str, int] = {}
    for job in finished:
        by_worker[job.worker or "?"] = by_worker.get(job.worker or "?", 0) + 1
    return [
        Figure.measure(
            f"async: computations for {IDENTICAL_REQUESTS} identical requests",
            float(len(created)),
            "",
            target="== 1",
            note=(
                f"{IDENTICAL_REQUESTS} jobs.submit_fit calls in a row from this process "
                f"(load-forecast, num_evs {evs:,}), {WORKERS} workers (python -m script_ec2 "
                f"worker --concurrency 1, RabbitMQ on 127.0.0.1, a queue of this run, SQLite): "
                f"{len(ids)} distinct job id(s) handed out, {joined} joined the job in flight, "
                f"{cached} answered from the cache; jobs in the table for the key: "
                f"{len(created)}, attempts {sum(j.attempts for j in created)}."
            ),
        ),
        Figure.measure(
            f"async: throughput, {DISTINCT_REQUESTS} distinct requests, {WORKERS} workers",
            DISTINCT_REQUESTS / elapsed,
            "jobs/s",
            note=(
                f"{DISTINCT_REQUESTS} load forecasts (num_evs {small:,}, seeds 1-"
                f"{DISTINCT_REQUESTS}), submitted in {submitted:.2f} s, the last finished "
                f"{elapsed:.1f} s after the first submit (polling every 0.02-0.1 s); jobs per "
                f"worker: {sorted(by_worker.values())}."
            ),
        ),
    ]


def _key(app: Any, params: Mapping[str, Any]) -> str:
    from script_ec2 import fitting

    return str(
        fitting.prepare(app.engine, app.registry, app.data_store, "load-forecast", dict(params)).key
    )


def _check_broker() -> None:
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2):
            pass
    except OSError:
        raise BenchError("RabbitMQ not reachable") from None
    from kombu import Connection

    try:
        with Connection(BROKER_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        raise BenchError(f"RabbitMQ not reachable: {exc}") from None


@contextlib.contextmanager
def _workers(ctx: BenchContext, env: dict[str, str]) -> Iterator[None]:
    """Two ready workers on this run's queue; terminated, then killed, however the block ends."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(WORKERS):
            log = ctx.workdir / f"worker-{i + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [ctx.python, "-m", "script_ec2", "worker", "--concurrency", "1"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: the pool goes with it
                )
            started.append((process, log))
        deadline = time.monotonic() + WORKER_READY_S
        for process, log in started:
            while " ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-800:]
                    raise BenchError(f"a worker did not become ready: {tail}")
                time.sleep(0.05)
        ctx.log(f"{WORKERS} workers ready")
        yield
    finally:
        for process, _ in started:
            _signal_group(process, signal.SIGTERM)
        for process, _ in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
            _signal_group(process, signal.SIGKILL)  # any pool process left behind


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _delete_queue(queue: str) -> None:
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(BROKER_URL, connect_timeout=5) as conn:
        channel = conn.channel()
        for delete in (channel.queue_delete, channel.exchange_delete):
            try:
                delete(queue)
            except Exception:
                channel = conn.channel()  # the broker closes a channel on a failed delete


# --------------------------------------------------------------------------- formatting


def _list(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)
