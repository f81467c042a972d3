"""Training benchmarks: load-control and session-model training on the command line, and every
smart-charging LP against an independent cvxpy formulation solved by CLARABEL.

Data: ``script_ec2.synthetic.generate(sessions=200,000 × scale, seed=20240601)`` (all nine Bay
Area counties, six zips each) written to a local folder that plays the private bucket, then
``python -m script_ec2 sync`` into a SQLite database and cache. Every measured training is
``python -m script_ec2 --quiet train ... -f json`` in its own child process with a fresh, empty
registry, so wall times include interpreter start, imports, the database check and reading the
cache, and the command's JSON output is checked so that a broken run never passes as a fast one.

Figures:

1. ``train load-control --county "Santa Clara" --runs 50 --sessions-per-run 200 --jobs 2``:
   wall seconds, best of :data:`CONTROL_REPEATS`; target <= 10 s. The LP count does not scale.
2. ``train load-forecast`` (all six segments × weekday and weekend) on every generated session:
   wall seconds, best of :data:`FORECAST_REPEATS`; target <= 60 s at 200,000 sessions.
3. LP cross-check on :data:`LP_INSTANCES` random instances of 200 sessions
   (``lp.bench_lp_instances``), each under one of the built-in rates in turn: ``solve_schedule``
   (sparse LP, HiGHS) against the same problem written independently in cvxpy (dense (96, n)
   power matrix, windows from ``(slot - arrival) mod 96 < length``, the rate's prices, demand
   charges as ``max`` over their windows, the cap, and the same earliest-charging tie-break)
   solved by CLARABEL. The largest relative difference of the objectives has target <= 1e-6 (and
   both solvers must agree on which instances are infeasible); the mean wall time per instance
   of each, building included, is reported as a ratio without a target.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from bench.common import BenchContext, BenchError, ChildRun, Figure, best, run_child

if TYPE_CHECKING:
    from script_ec2.lp import BenchInstance
    from script_ec2.rates import Rate

SESSIONS_AT_SCALE_1 = 200_000
SEED = 20_240_601
CONTROL_COUNTY = "Santa Clara"
CONTROL_RUNS = 50
CONTROL_SESSIONS_PER_RUN = 200
CONTROL_JOBS = 2
CONTROL_REPEATS = 3
CONTROL_TARGET_S = 10
FORECAST_REPEATS = 2
FORECAST_TARGET_S = 60
FORECAST_MODELS = 12  # six segments × two day types
LP_INSTANCES = 24
LP_SESSIONS = 200
LP_RATES = ("e19", "pge-cev", "pge-cev-demand", "sce-tou-ev8", "cap", "minpeak")
LP_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Home:
    """A synced data set: the folder bucket and the data dir holding its database and cache."""

    bucket: Path
    home: Path
    sessions: int
    intervals: int
    env: dict[str, str]


def run(ctx: BenchContext) -> list[Figure]:
    sessions = max(5_000, round(SESSIONS_AT_SCALE_1 * ctx.scale))
    data = _prepare(ctx, sessions)
    figures = _control_figures(ctx, data)
    figures += _forecast_figures(ctx, data)
    shutil.rmtree(data.home)
    shutil.rmtree(data.bucket)
    figures += _lp_figures(ctx)
    return figures


# --------------------------------------------------------------------------- data


def _prepare(ctx: BenchContext, sessions: int) -> Home:
    from script_ec2.synthetic import generate

    bucket, home = ctx.workdir / "bucket", ctx.workdir / "home"
    started = time.perf_counter()
    generated = generate(bucket, sessions=sessions, seed=SEED)
    ctx.log(
        f"generated {generated.sessions:,} sessions and {generated.intervals:,} intervals "
        f"in {time.perf_counter() - started:.1f} s"
    )
    env = _child_env(ctx.workdir)
    env.update(SCRIPT_EC2_DATA_DIR=str(home), SCRIPT_EC2_DATA_URI=str(bucket))
    sync = run_child([ctx.python, "-m", "script_ec2", "--quiet", "sync", "-f", "json"], env=env)
    summary = json.loads(sync.stdout)
    expected = sum(1 for f in generated.files if f.kind in ("sessions", "intervals"))
    if summary["new"] != expected or summary["failed"] or summary["quarantined"]:
        raise BenchError(f"the sync of {bucket} did not ingest all {expected} objects: {summary}")
    ctx.log(f"synced {expected} objects in {sync.seconds:.1f} s")
    return Home(bucket, home, generated.sessions, generated.intervals, env)


def _child_env(workdir: Path) -> dict[str, str]:
    """This environment without AWS or script-ec2 settings; no credentials, no metadata calls."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SCRIPT_EC2_", "BOTO_"))
    }
    missing = str(workdir / "no-aws-config")
    env.update(
        AWS_CONFIG_FILE=missing,
        AWS_SHARED_CREDENTIALS_FILE=missing,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _train(ctx: BenchContext, data: Home, models_dir: Path, *args: str) -> tuple[ChildRun, Any]:
    command = [ctx.python, "-m", "script_ec2", "--quiet", "--models-dir", str(models_dir)]
    child = run_child([*command, "train", *args, "-f", "json"], env=data.env)
    try:
        return child, json.loads(child.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(f"script-ec2 train {args[0]} printed no JSON rows: {exc}") from None


# --------------------------------------------------------------------------- load control


def _control_figures(ctx: BenchContext, data: Home) -> list[Figure]:
    options = (
        "load-control",
        "--county",
        CONTROL_COUNTY,
        "--runs",
        str(CONTROL_RUNS),
        "--sessions-per-run",
        str(CONTROL_SESSIONS_PER_RUN),
        "--jobs",
        str(CONTROL_JOBS),
    )
    runs: list[ChildRun] = []
    row: dict[str, Any] = {}
    for i in range(CONTROL_REPEATS):
        child, rows = _train(ctx, data, ctx.workdir / f"models-control-{i}", *options)
        [row] = rows
        if not row["new"] or row["runs"] != CONTROL_RUNS:
            raise BenchError(f"train load-control did not train {CONTROL_RUNS} new runs: {row}")
        runs.append(child)
        ctx.log(
            f"load-control {i + 1}/{CONTROL_REPEATS}: {child.seconds:.2f} s wall, "
            f"{child.cpu_seconds:.2f} s CPU (main process), {child.max_rss_mib:.0f} MiB"
        )
    wall = [r.seconds for r in runs]
    return [
        Figure.measure(
            f"load-control training, {CONTROL_RUNS} runs x {CONTROL_SESSIONS_PER_RUN} sessions",
            best(wall),
            "s",
            target=f"<= {CONTROL_TARGET_S}",
            note=(
                f"python -m script_ec2 train load-control --county '{CONTROL_COUNTY}' --runs "
                f"{CONTROL_RUNS} --sessions-per-run {CONTROL_SESSIONS_PER_RUN} --jobs "
                f"{CONTROL_JOBS} on {data.sessions:,} synced sessions; best of "
                f"{CONTROL_REPEATS}, each into an empty registry: {_list(wall)} s wall; CPU of "
                f"the main process {_list([r.cpu_seconds for r in runs])} s (LP workers not "
                f"counted); peak RSS {max(r.max_rss_mib for r in runs):.0f} MiB. Model: "
                f"{row['model']}, held-out R2 {_num(row['r2'])}, peak MAPE "
                f"{_num(row['peak_mape_pct'])} %, energy MAPE {_num(row['energy_mape_pct'])} %."
            ),
        )
    ]


# --------------------------------------------------------------------------- session models


def _forecast_figures(ctx: BenchContext, data: Home) -> list[Figure]:
    runs: list[ChildRun] = []
    rows: list[dict[str, Any]] = []
    for i in range(FORECAST_REPEATS):
        child, rows = _train(ctx, data, ctx.workdir / f"models-forecast-{i}", "load-forecast")
        if not rows or not all(r["new"] for r in rows):
            raise BenchError(f"train load-forecast did not save new models: {rows}")
        runs.append(child)
        ctx.log(
            f"load-forecast {i + 1}/{FORECAST_REPEATS}: {len(rows)} models, "
            f"{child.seconds:.2f} s wall, {child.cpu_seconds:.2f} s CPU, "
            f"{child.max_rss_mib:.0f} MiB"
        )
    wall = [r.seconds for r in runs]
    trained = len(rows)
    largest = max(rows, key=lambda r: r["sessions"])
    skipped = ""
    if trained < FORECAST_MODELS:
        skipped = " (the others have too few sessions at this scale)"
    return [
        Figure.measure(
            f"GMM training, all segments and day types, {data.sessions:,} sessions",
            best(wall),
            "s",
            target=f"<= {FORECAST_TARGET_S}",
            note=(
                f"python -m script_ec2 train load-forecast: {trained} of {FORECAST_MODELS} "
                f"models trained{skipped}; best of {FORECAST_REPEATS}, "
                f"each into an empty registry: {_list(wall)} s wall, CPU "
                f"{_list([r.cpu_seconds for r in runs])} s, peak RSS "
                f"{max(r.max_rss_mib for r in runs):.0f} MiB. Largest model "
                f"{largest['model']}: {largest['sessions']:,} training sessions (above 50,000 "
                f"matching sessions a seeded subsample is used), {largest['components']} "
                "components by BIC."
            ),
        )
    ]


# --------------------------------------------------------------------------- LP vs cvxpy


@dataclass(frozen=True)
class LpComparison:
    rate: str
    ours: float | None  # objective, None when HiGHS found the problem infeasible
    theirs: float | None
    status: str  # cvxpy's
    ours_seconds: float
    theirs_seconds: float
    clarabel_seconds: float

    @property
    def relative_difference(self) -> float | None:
        if self.ours is None or self.theirs is None:
            return None
        return abs(self.ours - self.theirs) / max(abs(self.ours), abs(self.theirs), 1e-12)

    @property
    def agree_on_feasibility(self) -> bool:
        return (self.ours is None) == (self.theirs is None)


def _lp_figures(ctx: BenchContext) -> list[Figure]:
    try:
        import cvxpy as cp
    except ImportError:
        raise BenchError("cvxpy is not installed: pip install -e '.[bench]'") from None
    if "CLARABEL" not in cp.installed_solvers():
        raise BenchError("cvxpy has no CLARABEL solver: pip install clarabel")
    from script_ec2.lp import bench_lp_instances
    from script_ec2.rates import load_rate

    instances = bench_lp_instances(LP_INSTANCES, sessions=LP_SESSIONS, seed=SEED)
    rates = [load_rate(name) for name in LP_RATES]
    _compare(instances[0], rates[0])  # warm-up: lazy imports and first-call set-up, not timed
    results = []
    for i, instance in enumerate(instances):
        rate = rates[i % len(rates)]
        result = _compare(instance, rate)
        results.append(result)
        ctx.log(
            f"LP {i + 1}/{len(instances)} ({rate.name}): HiGHS {result.ours_seconds:.3f} s, "
            f"cvxpy {result.theirs_seconds:.3f} s ({result.status}), relative difference "
            f"{_num(result.relative_difference)}"
        )
    disagreements = [r for r in results if not r.agree_on_feasibility]
    differences = [d for r in results if (d := r.relative_difference) is not None]
    worst = max(differences, default=float("nan"))
    inaccurate = sum(r.status == "optimal_inaccurate" for r in results)
    ours = [r.ours_seconds for r in results]
    theirs = [r.theirs_seconds for r in results]
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    per_rate = ", ".join(f"{name} {_worst(results, name):.1e}" for name in LP_RATES)
    return [
        Figure(
            "LP objective vs cvxpy+CLARABEL, largest relative difference",
            worst,
            "",
            target=f"<= {LP_TOLERANCE:g}",
            passed=not disagreements and len(differences) > 0 and worst <= LP_TOLERANCE,
            note=(
                f"{len(results)} random instances of {LP_SESSIONS} sessions "
                f"(lp.bench_lp_instances, seed {SEED}), rates in turn: {', '.join(LP_RATES)}. "
                f"Both solved: {len(differences)}; infeasible for both: "
                f"{len(results) - len(differences) - len(disagreements)}; solvers disagreeing "
                f"on feasibility: {len(disagreements)}; CLARABEL 'optimal_inaccurate': "
                f"{inaccurate}. Largest relative difference per rate: {per_rate}."
            ),
        ),
        Figure.measure(
            "LP wall time per instance, HiGHS vs cvxpy+CLARABEL",
            mean_ours,
            "s",
            baseline=mean_theirs,
            note=(
                "Mean per instance, building included: solve_schedule (sparse LP, "
                f"scipy HiGHS) median {median(ours):.3f} s; cvxpy (dense formulation, "
                f"canonicalisation and CLARABEL) median {median(theirs):.3f} s, of which "
                "CLARABEL's own solve time averaged "
                f"{sum(r.clarabel_seconds for r in results) / len(results):.3f} s. "
                "Interleaved, one after the other on each instance."
            ),
        ),
    ]


def _worst(results: list[LpComparison], rate: str) -> float:
    found = [d for r in results if r.rate == rate and (d := r.relative_difference) is not None]
    return max(found, default=float("nan"))


def _compare(instance: BenchInstance, rate: Rate) -> LpComparison:
    from script_ec2.lp import ControlError, solve_schedule

    peak = float(instance.uncontrolled_kw.max())
    started = time.perf_counter()
    try:
        ours: float | None = solve_schedule(
            instance.sessions, rate, uncontrolled_peak_kw=peak
        ).objective
    except ControlError:
        ours = None
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs, status, clarabel_seconds = _cvxpy_objective(instance, rate, peak)
    return LpComparison(
        rate=rate.name,
        ours=ours,
        theirs=theirs,
        status=status,
        ours_seconds=ours_seconds,
        theirs_seconds=time.perf_counter() - started,
        clarabel_seconds=clarabel_seconds,
    )


def _cvxpy_objective(
    instance: BenchInstance, rate: Rate, uncontrolled_peak_kw: float
) -> tuple[float | None, str, float]:
    """The same scheduling problem, written from the module docstring of script_ec2.lp alone.

    Nothing of ``build_lp`` is reused: the windows, the clipped energy targets, the delays of the
    tie-break and the demand-charge epigraphs are derived here again, on a dense (96, n) matrix.
    """
    import cvxpy as cp
    import numpy as np

    from script_ec2.lp import TIEBREAK

    slots, slot_hours = 96, 0.25
    s = instance.sessions
    arrival = np.asarray(s.arrival, dtype=np.int64)
    length = np.asarray(s.length, dtype=np.int64)
    cap = np.asarray(s.power_cap_kw, dtype=float)
    energy = np.asarray(s.energy_kwh, dtype=float)
    delay = (np.arange(slots)[:, None] - arrival[None, :]) % slots
    window = delay < length[None, :]
    target = np.minimum(energy, slot_hours * cap * length)

    power = cp.Variable((slots, len(arrival)), nonneg=True)
    aggregate = cp.sum(power, axis=1)
    constraints = [
        power <= np.where(window, cap[None, :], 0.0),
        slot_hours * cp.sum(power, axis=0) == target,
    ]
    level = rate.cap_level(uncontrolled_peak_kw)
    if level is not None:
        constraints.append(aggregate <= level)
    cost = slot_hours * (rate.energy_price @ aggregate)
    cost += slot_hours * TIEBREAK * cp.sum(cp.multiply(np.where(window, delay, 0), power))
    for charge in rate.demand_charges:
        if charge.price > 0:
            cost += charge.price * cp.max(aggregate[np.flatnonzero(charge.mask)])
    problem = cp.Problem(cp.Minimize(cost), constraints)
    try:
        with warnings.catch_warnings():
            # "Solution may be inaccurate": counted from the status and reported in the note.
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        raise BenchError(f"CLARABEL failed on a {rate.name} instance: {exc}") from None
    status = str(problem.status)
    solve_time = float(getattr(problem.solver_stats, "solve_time", None) or 0.0)
    if status in ("infeasible", "infeasible_inaccurate"):
        return None, status, solve_time
    if problem.value is None or status not in ("optimal", "optimal_inaccurate"):
        raise BenchError(f"CLARABEL ended with status {status} on a {rate.name} instance")
    return float(problem.value), status, solve_time


# --------------------------------------------------------------------------- formatting


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
