"""Load-control training: LP-controlled workplace profiles and the regression that imitates them.

:func:`train_control` repeats ``runs`` times: draw ``sessions_per_run`` workplace sessions of a
county from the cache, build their uncontrolled 96-slot load from their real intervals, solve the
smart-charging LP (:mod:`script_ec2.lp`) under a :class:`~script_ec2.rates.Rate`, and keep the
two aggregate profiles. It then fits a ridge regression from the max-normalised uncontrolled
profile to the controlled profile divided by the same maximum, the paper's model (spec §3.5);
:func:`predict_controlled` applies it. Nothing here touches the CLI, the registry or the database.

Sampling. The pool is the county's sessions with ``forecast_segment == 'Workplace'`` (POI
category Workplace, ``Max Power <= 10`` kW) that have at least one usable interval (positive
duration and Average Power), sorted by Session ID; a Session ID seen twice is kept once.
Run r draws its sessions without replacement with ``default_rng(SeedSequence(seed).spawn(runs +
1)[r])``; child ``runs`` draws the held-out split. Draws happen before any solve, so the result
is the same for every ``n_jobs``. All sessions of a run come from arbitrary dates superimposed on
one day, as upstream (spec §3.1).

Uncontrolled load (replacing upstream's slot overwriting, spec §3.2 and defect 17). Each
interval's energy, ``Average Power × seconds``, is split over the 15-minute wall-clock slots it
overlaps in proportion to the seconds in each, so slot power is the duration-weighted mean power
over the slot: a first interval of 300 s at 6 kW gives 2 kW in its slot, and energy is conserved
exactly. Times are local wall clock, so slot = 4·hour + minute // 15. Then, per session:

* arrival ("plugged" windows, the default) is the plug-in slot (``start_datetime``), or the
  first charging slot if charging starts before the plug-in time or more than 24 h after it;
  with ``window="charging"`` it is the first charging slot (upstream's inference from charging
  slots only);
* the session's first 24 h from its arrival slot are folded deliberately onto one day (slot
  (arrival + offset) mod 96); charging later than that is dropped and counted
  (``truncated_sessions``, ``truncated_energy_kwh``). A session whose intervals touch more than
  one calendar date, e.g. one charging across midnight, is counted in ``multi_day_sessions``;
  within 24 h its windows simply wrap midnight;
* departure ("plugged") is the end of the plug-in period (start + ``Session Time (secs)``),
  extended to the last charging slot if charging ends later, at most 96 slots after arrival;
  with ``window="charging"`` it is the slot after the last charging slot. So the uncontrolled
  schedule is always inside the window;
* intervals of one session that share a slot (``shared_slot_sessions``) add their energies, as
  do intervals that overlap in time (``overlapping_interval_sessions``, a data defect: the
  metered energy is trusted, so that slot's power may exceed the vehicle's rate). Nothing is
  overwritten.

Energy is the folded energy; the power cap is max(largest slot power, ``charge_rate_kw``).

Failed runs. An LP that cannot be solved (e.g. a cap below what the windows allow) skips its run;
the run index and HiGHS status are listed in ``metrics["failed_runs"]``. Fewer than
:data:`MIN_RUNS` solved runs raises :class:`~script_ec2.lp.ControlError` naming the first
failure.

Regression. ``RidgeCV`` over :data:`ALPHAS` (efficient leave-one-out, deterministic) on the
training runs; 20 % of the solved runs (at least one) are held out. The published coefficients
are those of the training fit, so the held-out metrics describe exactly that model: R² over the
96 normalised outputs weighted by their variance, and the mean absolute percentage error of the
daily peak and of the daily energy of the predicted kW profiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from script_ec2.errors import DataError, UsageError
from script_ec2.lp import TIEBREAK, ChargingSessions, ControlError, solve_schedule
from script_ec2.rates import SLOT_HOURS, SLOTS, Rate

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ALPHAS",
    "MIN_RUNS",
    "ControlError",
    "ControlTraining",
    "RegressionFit",
    "SessionProfiles",
    "build_session_profiles",
    "fit_control_regression",
    "held_out_mask",
    "load_workplace_data",
    "predict_controlled",
    "train_control",
]

Window = Literal["plugged", "charging"]
WINDOWS: tuple[str, ...] = ("plugged", "charging")

MIN_RUNS = 5
TEST_FRACTION = 0.2
DEFAULT_CHARGE_RATE_KW = 6.6
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-4, 2, 25))
WORKPLACE = "Workplace"

SESSION_COLUMNS = ("Session ID", "start_datetime", "Session Time (secs)")
INTERVAL_COLUMNS = ("Session ID", "interval_start", "Interval Duration (Secs)", "Average Power")
_FILTER_COLUMNS = ("county", "forecast_segment")

_SLOT_SECONDS = 900
_DAY_SECONDS = 86_400
_EPS_SECONDS = 1e-6


# --------------------------------------------------------------------------- loading


def canonical_county(name: str) -> str:
    """``"santa clara county"`` → ``"Santa Clara"``: the cache's bare, capitalised form."""
    text = " ".join(name.split())
    if text.casefold().endswith(" county"):
        text = text[: -len(" county")]
    return text.title()


def load_workplace_data(
    cache_objects: Sequence[Path], interval_parquets: Sequence[Path], county: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A county's workplace sessions and their intervals from cached Parquet files.

    Reads only the columns training needs, with row filters pushed into the Parquet reader
    (county and segment for sessions; county and Session ID for intervals).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from script_ec2.ingest import INTERVAL_SCHEMA, SESSION_SCHEMA

    name = canonical_county(county)
    session_cols = [*SESSION_COLUMNS, *_FILTER_COLUMNS]
    session_schema = pa.schema([SESSION_SCHEMA.field(c) for c in session_cols])
    interval_cols = [*INTERVAL_COLUMNS, "county"]
    interval_schema = pa.schema([INTERVAL_SCHEMA.field(c) for c in interval_cols])
    sessions = _read(
        cache_objects,
        session_schema,
        (ds.field("county") == name) & (ds.field("forecast_segment") == WORKPLACE),
    )
    ids = sessions.column("Session ID")
    intervals = _read(
        interval_parquets,
        interval_schema,
        (ds.field("county") == name) & ds.field("Session ID").isin(ids),
    )
    return sessions.to_pandas(), intervals.to_pandas()


def _read(paths: Sequence[Path], schema: Any, condition: Any) -> Any:
    import pyarrow.dataset as ds

    if not paths:
        return schema.empty_table()
    try:
        dataset = ds.dataset([str(p) for p in paths], schema=schema, format="parquet")
        return dataset.to_table(columns=schema.names, filter=condition)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise DataError(
            f"cannot read the cached Parquet files ({exc}); run `script-ec2 sync` to rebuild"
        ) from None


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class SessionProfiles:
    """Per-session uncontrolled load folded on one day, windows, and what folding did."""

    session_id: np.ndarray  # (n,)
    uncontrolled_kw: np.ndarray  # (n, 96)
    arrival: np.ndarray  # (n,) slot 0..95
    length: np.ndarray  # (n,) slots 1..96
    energy_kwh: np.ndarray  # (n,) folded energy
    max_power_kw: np.ndarray  # (n,) largest slot power
    multi_day: np.ndarray  # (n,) bool: intervals on more than one calendar date
    truncated_kwh: np.ndarray  # (n,) energy charged more than 24 h after arrival (dropped)
    shared_slot: np.ndarray  # (n,) bool: two intervals in one slot
    overlapping: np.ndarray  # (n,) bool: two intervals overlapping in time

    def charging_sessions(self, index: np.ndarray, charge_rate_kw: float) -> ChargingSessions:
        """The LP inputs of the sessions at ``index``."""
        return ChargingSessions(
            arrival=self.arrival[index],
            length=self.length[index],
            energy_kwh=self.energy_kwh[index],
            power_cap_kw=np.maximum(self.max_power_kw[index], charge_rate_kw),
        )


def _seconds(values: Any) -> np.ndarray:
    """Wall-clock timestamps as float seconds since 1970-01-01 00:00 (a midnight)."""
    stamps = np.asarray(values, dtype="datetime64[ns]")
    return stamps.astype(np.int64) / 1e9


def build_session_profiles(
    sessions: pd.DataFrame, intervals: pd.DataFrame, *, window: Window = "plugged"
) -> SessionProfiles:
    """Fold each session's intervals onto one day and infer its window (module docstring).

    ``sessions`` needs unique ``Session ID`` values and :data:`SESSION_COLUMNS`; ``intervals``
    needs :data:`INTERVAL_COLUMNS` and only usable rows (positive duration and power, a start
    time). Every session must have at least one interval.
    """
    if window not in WINDOWS:
        raise UsageError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    session_id = sessions["Session ID"].to_numpy(dtype=np.int64)
    n = len(session_id)
    if n == 0:
        raise ValueError("no sessions to build profiles from")
    owner_all = _owner(session_id, intervals["Session ID"].to_numpy(dtype=np.int64))
    keep = owner_all >= 0
    owner = owner_all[keep]
    if n and np.bincount(owner, minlength=n).min() == 0:
        raise ValueError("every session needs at least one interval")
    t0 = _seconds(intervals["interval_start"].to_numpy()[keep])
    t1 = t0 + intervals["Interval Duration (Secs)"].to_numpy(dtype=float)[keep]
    kw = intervals["Average Power"].to_numpy(dtype=float)[keep]

    order = np.lexsort((t0, owner))
    owner, t0, t1, kw = owner[order], t0[order], t1[order], kw[order]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    same_next = owner[1:] == owner[:-1]
    overlapping = _flag(n, owner[1:][same_next & (t0[1:] < t1[:-1] - _EPS_SECONDS)])
    day0 = np.floor(t0 / _DAY_SECONDS)
    day1 = np.floor((t1 - _EPS_SECONDS) / _DAY_SECONDS)
    multi_day = np.minimum.reduceat(day0, starts) != np.maximum.reduceat(day1, starts)

    # Split every interval over the wall-clock slots it overlaps.
    k0 = np.floor(t0 / _SLOT_SECONDS).astype(np.int64)
    k1 = np.floor((t1 - _EPS_SECONDS) / _SLOT_SECONDS).astype(np.int64)
    pieces = k1 - k0 + 1
    piece_of = np.repeat(np.arange(len(k0)), pieces)
    first_piece = np.cumsum(pieces) - pieces
    k = k0[piece_of] + np.arange(len(piece_of)) - first_piece[piece_of]
    seconds = np.minimum(t1[piece_of], (k + 1) * _SLOT_SECONDS) - np.maximum(
        t0[piece_of], k * _SLOT_SECONDS
    )
    energy = kw[piece_of] * np.clip(seconds, 0.0, None) / 3600.0
    who = owner[piece_of]
    # Two pieces of one session in one slot are neighbours once sorted by (session, slot).
    by_slot = np.lexsort((k, who))
    dup = (who[by_slot][1:] == who[by_slot][:-1]) & (k[by_slot][1:] == k[by_slot][:-1])
    shared_slot = _flag(n, who[by_slot][1:][dup])

    first_charge = np.minimum.reduceat(k0, starts)
    plug = _seconds(sessions["start_datetime"].to_numpy())
    plug_slot = np.floor(plug / _SLOT_SECONDS).astype(np.int64)
    if window == "plugged":
        usable = (plug_slot <= first_charge) & (first_charge - plug_slot < SLOTS)
        origin = np.where(usable, plug_slot, first_charge)
    else:
        origin = first_charge
    offset = k - origin[who]
    inside = offset < SLOTS
    truncated_kwh = np.bincount(who[~inside], weights=energy[~inside], minlength=n)
    folded = np.bincount(
        who[inside] * SLOTS + offset[inside], weights=energy[inside], minlength=n * SLOTS
    ).reshape(n, SLOTS)
    charging = folded > 0
    last_charge = SLOTS - 1 - np.argmax(charging[:, ::-1], axis=1)
    length = last_charge + 1
    if window == "plugged":
        dwell = np.nan_to_num(sessions["Session Time (secs)"].to_numpy(dtype=float), nan=0.0)
        plug_end = np.ceil((plug + np.clip(dwell, 0.0, None)) / _SLOT_SECONDS).astype(np.int64)
        length = np.maximum(length, plug_end - origin)
    length = np.clip(length, 1, SLOTS)

    arrival = origin % SLOTS
    columns = (arrival[:, None] + np.arange(SLOTS)[None, :]) % SLOTS
    uncontrolled = np.zeros((n, SLOTS))
    uncontrolled[np.arange(n)[:, None], columns] = folded / SLOT_HOURS
    return SessionProfiles(
        session_id=session_id,
        uncontrolled_kw=uncontrolled,
        arrival=arrival,
        length=length,
        energy_kwh=folded.sum(axis=1),
        max_power_kw=uncontrolled.max(axis=1, initial=0.0),
        multi_day=np.asarray(multi_day, dtype=bool),
        truncated_kwh=truncated_kwh,
        shared_slot=shared_slot,
        overlapping=overlapping,
    )


def _owner(session_id: np.ndarray, interval_session: np.ndarray) -> np.ndarray:
    """Row of each interval's session in ``session_id`` (unique), -1 when absent."""
    order = np.argsort(session_id, kind="stable")
    pos = np.searchsorted(session_id[order], interval_session)
    pos = np.clip(pos, 0, max(len(order) - 1, 0))
    if not len(order):
        return np.full(len(interval_session), -1, dtype=np.int64)
    found = session_id[order][pos] == interval_session
    return np.where(found, order[pos], -1).astype(np.int64)


def _flag(n: int, rows: np.ndarray) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[rows] = True
    return flags


# --------------------------------------------------------------------------- regression


@dataclass(frozen=True)
class RegressionFit:
    """A ridge map from max-normalised uncontrolled to normalised controlled profiles."""

    coef: np.ndarray  # (96, 96): output slot × input slot
    intercept: np.ndarray  # (96,)
    alpha: float
    metrics: dict[str, Any]


def predict_controlled(
    coef: np.ndarray, intercept: np.ndarray, uncontrolled_96: np.ndarray
) -> np.ndarray:
    """Controlled kW profile(s) for uncontrolled kW profile(s) (96,) or (rows, 96).

    ``m · model(x / m)`` with ``m = max(x)`` per row; an all-zero row stays zero.
    """
    x = np.asarray(uncontrolled_96, dtype=float)
    if x.shape[-1] != SLOTS or x.ndim not in (1, 2):
        raise ValueError("uncontrolled profiles must have shape (96,) or (rows, 96)")
    rows = np.atleast_2d(x)
    peak = rows.max(axis=1, keepdims=True)
    safe = np.where(peak > 0, peak, 1.0)
    out = np.where(peak > 0, peak * ((rows / safe) @ np.asarray(coef).T + intercept), 0.0)
    return out[0] if x.ndim == 1 else out


def held_out_mask(n: int, rng: np.random.Generator, fraction: float = TEST_FRACTION) -> np.ndarray:
    """A boolean mask of ``max(1, round(fraction · n))`` held-out rows of ``n``."""
    if n < 3:
        raise ValueError("at least 3 rows are needed to hold some out")
    n_test = min(n - 2, max(1, round(fraction * n)))
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:n_test]] = True
    return mask


def fit_control_regression(
    uncontrolled: np.ndarray, controlled: np.ndarray, *, test_mask: np.ndarray
) -> RegressionFit:
    """Fit ``RidgeCV`` on the rows outside ``test_mask``; score it on the rows inside."""
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    u = np.asarray(uncontrolled, dtype=float)
    c = np.asarray(controlled, dtype=float)
    if u.shape != c.shape or u.ndim != 2 or u.shape[1] != SLOTS:
        raise ValueError("uncontrolled and controlled must both be (runs, 96)")
    peak = u.max(axis=1, keepdims=True)
    if (peak <= 0).any():
        raise ValueError("every uncontrolled profile needs some load")
    train = ~test_mask
    model = RidgeCV(alphas=ALPHAS).fit(u[train] / peak[train], c[train] / peak[train])
    coef = np.ascontiguousarray(model.coef_, dtype=float)
    intercept = np.ascontiguousarray(model.intercept_, dtype=float)
    predicted = predict_controlled(coef, intercept, u[test_mask])
    actual = c[test_mask]
    r2: float | None = None
    # R² needs held-out targets that vary; identical normalised profiles have no variance.
    if test_mask.sum() >= 2 and (actual / peak[test_mask]).var(axis=0).sum() > 1e-12:
        r2 = float(
            r2_score(
                actual / peak[test_mask],
                predicted / peak[test_mask],
                multioutput="variance_weighted",
            )
        )
    peak_err = np.abs(predicted.max(axis=1) - actual.max(axis=1)) / actual.max(axis=1)
    energy_err = np.abs(predicted.sum(axis=1) - actual.sum(axis=1)) / actual.sum(axis=1)
    return RegressionFit(
        coef=coef,
        intercept=intercept,
        alpha=float(model.alpha_),
        metrics={
            "alpha": float(model.alpha_),
            "train_runs": int(train.sum()),
            "test_runs": int(test_mask.sum()),
            "r2": r2,
            "peak_mape_pct": float(100.0 * peak_err.mean()),
            "energy_mape_pct": float(100.0 * energy_err.mean()),
        },
    )


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ControlTraining:
    """What :func:`train_control` produced: arrays, the parameters and the metrics.

    ``arrays``: ``coef`` (96, 96), ``intercept`` (96,), ``alpha`` (0-d), ``uncontrolled`` and
    ``controlled`` (solved runs, 96) kW aggregates of ``sessions_per_run`` sessions each,
    ``run_index`` (solved runs,) and ``held_out`` (solved runs,) bool. No session rows.
    """

    arrays: dict[str, np.ndarray]
    params: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def predict(self, uncontrolled_96: np.ndarray) -> np.ndarray:
        return predict_controlled(self.arrays["coef"], self.arrays["intercept"], uncontrolled_96)


@dataclass(frozen=True)
class _RunResult:
    run: int
    uncontrolled: np.ndarray
    controlled: np.ndarray | None
    cost: float
    uncontrolled_cost: float
    clipped: int
    error: str | None = None
    status: int | None = None


def _solve_run(
    run: int,
    sessions: ChargingSessions,
    uncontrolled: np.ndarray,
    rate: Rate,
    tiebreak: float,
) -> _RunResult:
    """One run's LP (a top-level function so joblib can send it to a worker process)."""
    base_cost = float(rate.cost(uncontrolled))
    try:
        schedule = solve_schedule(
            sessions,
            rate,
            uncontrolled_peak_kw=float(uncontrolled.max()),
            tiebreak=tiebreak,
            run=run,
        )
    except ControlError as exc:
        return _RunResult(run, uncontrolled, None, np.nan, base_cost, 0, str(exc), exc.status)
    return _RunResult(
        run,
        uncontrolled,
        schedule.aggregate_kw,
        schedule.cost,
        base_cost,
        schedule.clipped_sessions,
    )


def _pool(
    sessions: pd.DataFrame, intervals: pd.DataFrame, county: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The county's workplace sessions with usable intervals (sorted, unique) and theirs."""
    import pandas as pd

    _require(sessions, (*SESSION_COLUMNS, *_FILTER_COLUMNS), "sessions")
    _require(intervals, INTERVAL_COLUMNS, "intervals")
    wanted = canonical_county(county).casefold()
    counties = sessions["county"].astype("string").str.casefold()
    workplace = sessions["forecast_segment"].astype("string") == WORKPLACE
    chosen = sessions.loc[(counties == wanted).fillna(False) & workplace.fillna(False)]
    if chosen.empty:
        known = sorted(set(sessions.loc[workplace.fillna(False), "county"].dropna().astype(str)))
        listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise UsageError(
            f"no workplace sessions for county {county!r} in the cache; "
            + (f"counties with workplace sessions: {listed}" if known else "run `script-ec2 sync`")
        )
    chosen = chosen.loc[chosen["start_datetime"].notna(), list(SESSION_COLUMNS)]
    chosen = chosen.sort_values("Session ID", kind="stable")
    unique = chosen.drop_duplicates("Session ID", keep="first")
    duration = pd.to_numeric(intervals["Interval Duration (Secs)"], errors="coerce")
    power = pd.to_numeric(intervals["Average Power"], errors="coerce")
    usable = (
        intervals["Session ID"].isin(unique["Session ID"])
        & intervals["interval_start"].notna()
        & (duration > 0).fillna(False)
        & (power > 0).fillna(False)
    )
    rows = intervals.loc[usable, list(INTERVAL_COLUMNS)]
    deduped = rows.drop_duplicates()
    pool = unique.loc[unique["Session ID"].isin(deduped["Session ID"])]
    counts = {
        "workplace_sessions": len(chosen),
        "duplicate_sessions": len(chosen) - len(unique),
        "sessions_without_intervals": len(unique) - len(pool),
        "duplicate_interval_rows": len(rows) - len(deduped),
        "pool_sessions": len(pool),
    }
    return pool.reset_index(drop=True), deduped.reset_index(drop=True), counts


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"the {what} table lacks column(s) {', '.join(map(repr, missing))}; "
            "run `script-ec2 sync` to rebuild the cache"
        )


def _check_options(runs: int, sessions_per_run: int, charge_rate_kw: float, n_jobs: int) -> None:
    if runs < MIN_RUNS:
        raise UsageError(f"runs must be at least {MIN_RUNS} (to hold some out), got {runs}")
    if sessions_per_run < 1:
        raise UsageError(f"sessions per run must be at least 1, got {sessions_per_run}")
    if not (np.isfinite(charge_rate_kw) and charge_rate_kw > 0):
        raise UsageError(f"charge rate must be a positive number of kW, got {charge_rate_kw}")
    if n_jobs == 0:
        raise UsageError("n_jobs must not be 0 (1 = serial, -1 = all cores)")


def train_control(
    sessions: pd.DataFrame,
    intervals: pd.DataFrame,
    *,
    county: str,
    rate: Rate,
    runs: int = 50,
    sessions_per_run: int = 200,
    seed: int = 0,
    n_jobs: int = 1,
    charge_rate_kw: float = DEFAULT_CHARGE_RATE_KW,
    window: Window = "plugged",
    tiebreak: float = TIEBREAK,
    progress: Callable[[int, int], None] | None = None,
) -> ControlTraining:
    """Solve ``runs`` LPs on sampled workplace sessions of ``county`` and fit the regression.

    ``sessions``/``intervals`` are cache rows (e.g. from :func:`load_workplace_data`; other
    counties and segments are filtered out). ``progress(done, runs)`` is called as runs finish.
    Raises :class:`UsageError` for bad options or too few sessions, :class:`ControlError` when
    fewer than :data:`MIN_RUNS` runs solve. The result is identical for every ``n_jobs``.
    """
    from joblib import Parallel, delayed

    _check_options(runs, sessions_per_run, charge_rate_kw, n_jobs)
    if window not in WINDOWS:
        raise UsageError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    pool, pool_intervals, counts = _pool(sessions, intervals, county)
    n_pool = len(pool)
    if n_pool < sessions_per_run:
        raise UsageError(
            f"county {canonical_county(county)!r} has {n_pool} workplace sessions with intervals "
            f"in the cache, fewer than the {sessions_per_run} sessions per run; lower the "
            "sessions per run or sync more data"
        )

    children = np.random.SeedSequence(seed).spawn(runs + 1)
    draws = [
        np.sort(np.random.default_rng(children[r]).choice(n_pool, sessions_per_run, replace=False))
        for r in range(runs)
    ]
    used = np.unique(np.concatenate(draws))
    used_ids = pool["Session ID"].to_numpy()[used]
    profiles = build_session_profiles(
        pool.iloc[used],
        pool_intervals.loc[pool_intervals["Session ID"].isin(used_ids)],
        window=window,
    )
    positions = [np.searchsorted(used, d) for d in draws]

    def tasks() -> Any:
        for r, pos in enumerate(positions):
            yield delayed(_solve_run)(
                r,
                profiles.charging_sessions(pos, charge_rate_kw),
                profiles.uncontrolled_kw[pos].sum(axis=0),
                rate,
                tiebreak,
            )

    results: list[_RunResult] = []
    for result in Parallel(n_jobs=n_jobs, return_as="generator")(tasks()):
        results.append(result)
        if progress is not None:
            progress(len(results), runs)

    solved = [r for r in results if r.controlled is not None]
    failed = [r for r in results if r.controlled is None]
    if len(solved) < MIN_RUNS:
        first = failed[0]
        raise ControlError(
            f"only {len(solved)} of {runs} load-control runs solved (at least {MIN_RUNS} needed);"
            f" first failure: {first.error}",
            run=first.run,
            status=first.status,
        )
    uncontrolled = np.array([r.uncontrolled for r in solved])
    controlled = np.array([r.controlled for r in solved])
    test_mask = held_out_mask(len(solved), np.random.default_rng(children[runs]))
    fit = fit_control_regression(uncontrolled, controlled, test_mask=test_mask)

    costs = np.array([r.cost for r in solved])
    base_costs = np.array([r.uncontrolled_cost for r in solved])
    run_sum = _per_run_totals(profiles, positions)
    metrics: dict[str, Any] = {
        **fit.metrics,
        "runs_solved": len(solved),
        "failed_runs": [{"run": r.run, "status": r.status, "message": r.error} for r in failed],
        "lp_cost_min": float(costs.min()),
        "lp_cost_mean": float(costs.mean()),
        "lp_cost_max": float(costs.max()),
        "uncontrolled_cost_mean": float(base_costs.mean()),
        "uncontrolled_peak_kw_mean": float(uncontrolled.max(axis=1).mean()),
        "controlled_peak_kw_mean": float(controlled.max(axis=1).mean()),
        "daily_energy_kwh_mean": float(SLOT_HOURS * uncontrolled.sum(axis=1).mean()),
        "clipped_sessions": int(sum(r.clipped for r in solved)),
        **run_sum,
        **counts,
    }
    params: dict[str, Any] = {
        "county": canonical_county(county),
        "rate": rate.to_json(),
        "runs": runs,
        "sessions_per_run": sessions_per_run,
        "charge_rate_kw": float(charge_rate_kw),
        "seed": seed,
        "window": window,
        "tiebreak": float(tiebreak),
        "alphas": list(ALPHAS),
        "test_fraction": TEST_FRACTION,
        "normalisation": "max",
        "segment": WORKPLACE,
    }
    arrays = {
        "coef": fit.coef,
        "intercept": fit.intercept,
        "alpha": np.array(fit.alpha),
        "uncontrolled": uncontrolled,
        "controlled": controlled,
        "run_index": np.array([r.run for r in solved], dtype=np.int64),
        "held_out": test_mask,
    }
    return ControlTraining(arrays=arrays, params=params, metrics=metrics)


def _per_run_totals(profiles: SessionProfiles, positions: list[np.ndarray]) -> dict[str, Any]:
    """Folding counts summed over runs (a session drawn by two runs counts twice)."""
    every = np.concatenate(positions)
    return {
        "multi_day_sessions": int(profiles.multi_day[every].sum()),
        "truncated_sessions": int((profiles.truncated_kwh[every] > 0).sum()),
        "truncated_energy_kwh": float(profiles.truncated_kwh[every].sum()),
        "shared_slot_sessions": int(profiles.shared_slot[every].sum()),
        "overlapping_interval_sessions": int(profiles.overlapping[every].sum()),
    }
