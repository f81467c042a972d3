"""The load forecast's pure core: vehicle counts, sampled sessions and the daily kW profile.

No CLI, database or store here: :func:`forecast` takes validated parameters (see
:mod:`script_ec2.params`), the session models' arrays, the county EV distribution and an optional
control model, and returns arrays. :func:`session_model_names` and :func:`control_model_name` say
which registry models a forecast needs. numpy is imported by the functions that compute, not by
this module, so planning a request (counts, model names), all a cache hit needs, stays light.

**Vehicle counts** (upstream Gen B, spec 2.3): owners N = ``num_evs`` (state) or ``num_evs ·
EVs_c / Σ EVs`` (county). Fast = ``fast_daily_use·fast_percent·N``, workplace =
``work_daily_use·work_percent·N``, public L2 = ``publicl2_daily_use·publicl2_percent·N``,
residential R = ``res_daily_use·(1 − fast_percent − publicl2_percent − work_percent)·N``, then
MUD = ``rent_percent·R``, home L1 = ``l1_percent·R``, home L2 = ``res_percent·R``. The six real
numbers are rounded by the largest-remainder (Hamilton) method: the total is rounded to the nearest
integer (half to even), each count starts at its floor, and the units still missing go to the
largest fractional parts (ties: the order of :data:`SEGMENTS`). So the counts always add up to the
rounded total, and no count is off by a whole vehicle as with upstream's ``int()`` (spec 7 item 18).

**Segments** (:data:`SEGMENTS`, spec 2.4): charging rate and energy cap per segment, and the output
column each feeds. Sampled energies are clipped to the segment's cap, as upstream; the session
model's own bounds already apply inside :func:`script_ec2.gmm.sample`.

**Sampling** is deterministic: ``SeedSequence(seed).spawn(6)`` gives one child per segment in
:data:`SEGMENTS` order, each driving its own generator, so a segment's sessions depend only on the
seed and its own count. With ``res_l2_smooth`` home L2 samples the Residential L1 model (as
upstream), from its own child stream.

**Profiles** (spec 2.6, vectorised, :func:`build_profile`): a vehicle plugs in at its start step
and charges at the segment rate r until its energy E is delivered: L = floor(h·E/r) full steps,
then the leftover x = E − L·r/h in the next step at power x·h (h = steps per hour). A block that
passes midnight continues at step 0 (a steady-state day). The profile is built with a difference
array over integer counts of charging vehicles plus one weighted ``bincount`` for the leftover
steps, with no per-vehicle loop; its energy, Σ profile / h, equals Σ E to float rounding. A
vehicle that would need more than 24 h (E > 24·r, possible for Residential L1: 40 kWh cap at
1.4 kW) is capped at 24·r: it charges all day, and the result counts such vehicles and the energy
left out (``capped``, ``sampled_kwh`` − ``delivered_kwh``).

**Grids.** Every segment is built on the 1-minute grid (1440 steps), so a start time keeps its
minute even when 15-minute output is asked for; the 96-step profile is the mean of each 15
minutes (energy-preserving, unlike upstream's point sample every 15th minute, spec 7 item 18).
``time_steps`` chooses the grid of the main result; the 96-step profile is always returned too.

**Control** (spec 2.7): with ``work_control`` set, the control model (ridge coefficients, see
:func:`script_ec2.control.predict_controlled`) maps the 96-step Work profile to a controlled one,
``m · model(work / m)`` with m its peak; the controlled 1440-step Work column repeats each
15-minute value 15 times (a step function that keeps the energy of the 96-step prediction; no
splines). Total is re-summed. The model's output is used as is. At state level the control model
of :data:`DEFAULT_CONTROL_COUNTY` is used: it maps load shapes normalised by their peak, and the
state has none of its own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from script_ec2.errors import DataError
from script_ec2.params import ALGORITHM_VERSIONS, LOAD_FORECAST, validate
from script_ec2.registry import slug

if TYPE_CHECKING:
    import numpy as np

FINE_STEPS = 1440
COARSE_STEPS = 96
HOURS_PER_DAY = 24
DEFAULT_CONTROL_COUNTY = "Santa Clara"  # upstream's frontend default county


@dataclass(frozen=True)
class Segment:
    """One forecast segment: its label (as in model names), output column, rate and energy cap."""

    label: str
    column: str
    rate_kw: float
    energy_cap_kwh: float


SEGMENTS: tuple[Segment, ...] = (
    Segment("Residential L1", "Residential L1", 1.4, 40.0),
    Segment("Residential L2", "Residential L2", 6.6, 75.0),
    Segment("Residential MUD", "Residential MUD", 6.6, 75.0),
    Segment("Workplace", "Work", 6.6, 75.0),
    Segment("Public L2", "Public L2", 6.6, 75.0),
    Segment("DC Fast", "Fast", 150.0, 75.0),
)
SEGMENT_LABELS = tuple(s.label for s in SEGMENTS)
# Upstream's output order: Work before Fast before Public L2 (spec 2.4).
COLUMNS = (
    "Residential L1",
    "Residential L2",
    "Residential MUD",
    "Work",
    "Fast",
    "Public L2",
    "Total",
)
_BY_LABEL = {s.label: s for s in SEGMENTS}
_WORK = COLUMNS.index("Work")
_TOTAL = COLUMNS.index("Total")


# --------------------------------------------------------------------------- model names


def _model_source(label: str, params: Mapping[str, Any]) -> str:
    """The segment whose session model ``label`` samples (home L2 may use home L1's)."""
    if label == "Residential L2" and params["res_l2_smooth"]:
        return "Residential L1"
    return label


def session_model_name(label: str, day_type: str) -> str:
    """``sessions-<segment-slug>-<weekday|weekend>``, e.g. ``sessions-dc-fast-weekday``."""
    return f"sessions-{slug(label)}-{day_type}"


def session_model_names(params: Mapping[str, Any]) -> dict[str, str]:
    """Segment label -> registry model name, for every session model ``params`` needs."""
    p = validate(LOAD_FORECAST, params)
    sources = dict.fromkeys(_model_source(label, p) for label in SEGMENT_LABELS)
    return {label: session_model_name(label, p["day_type"]) for label in sources}


def control_model_name(params: Mapping[str, Any]) -> str | None:
    """``control-<county-slug>-<rate>`` for ``work_control``, or None when it is 'none'."""
    p = validate(LOAD_FORECAST, params)
    if p["work_control"] == "none":
        return None
    county = p["county"] if p["aggregation_level"] == "county" else DEFAULT_CONTROL_COUNTY
    return f"control-{slug(county)}-{slug(p['work_control'])}"


# --------------------------------------------------------------------------- counts


def largest_remainder(values: Sequence[float]) -> list[int]:
    """One integer per value, each its floor or ceiling, adding up to round(Σ values)."""
    total = round(math.fsum(values))
    counts = [math.floor(v) for v in values]
    missing = total - sum(counts)
    order = sorted(range(len(values)), key=lambda i: (counts[i] - values[i], i))
    for i in order[:missing]:
        counts[i] += 1
    return counts


def owners(params: Mapping[str, Any], county_evs: Mapping[str, float] | None) -> float:
    """N: EV owners in the forecast area (real, not rounded)."""
    p = validate(LOAD_FORECAST, params)
    if p["aggregation_level"] == "state":
        return float(p["num_evs"])
    if county_evs is None:
        raise DataError("a county forecast needs the county EV distribution (County, EVs)")
    by_name = {str(name).strip().casefold(): value for name, value in county_evs.items()}
    values = list(by_name.values())
    # numbers.Real also admits numpy scalars, as read from the CSV by pandas.
    if any(not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 for v in values):
        raise DataError("county EV distribution: every EVs value must be a number >= 0")
    total = math.fsum(values)
    if total <= 0:
        raise DataError("county EV distribution: the EVs column adds up to 0")
    county = p["county"]
    if county.casefold() not in by_name:
        raise DataError(
            f"county {county!r} has no row in the county EV distribution "
            f"({len(by_name)} counties); add it or choose another county"
        )
    return float(p["num_evs"] * by_name[county.casefold()] / total)


def vehicle_counts(
    params: Mapping[str, Any], county_evs: Mapping[str, float] | None = None
) -> dict[str, int]:
    """Charging vehicles per segment label on the day (Gen B formulas, Hamilton rounding)."""
    p = validate(LOAD_FORECAST, params)
    n = owners(p, county_evs)
    fast = p["fast_daily_use"] * p["fast_percent"] * n
    work = p["work_daily_use"] * p["work_percent"] * n
    public = p["publicl2_daily_use"] * p["publicl2_percent"] * n
    # max(): the shares may exceed 1 by the validation tolerance; a residential share of -1e-10
    # would make a negative count.
    resident_share = max(0.0, 1.0 - p["fast_percent"] - p["publicl2_percent"] - p["work_percent"])
    residential = p["res_daily_use"] * resident_share * n
    raw = {
        "Residential L1": p["l1_percent"] * residential,
        "Residential L2": p["res_percent"] * residential,
        "Residential MUD": p["rent_percent"] * residential,
        "Workplace": work,
        "Public L2": public,
        "DC Fast": fast,
    }
    rounded = largest_remainder([raw[label] for label in SEGMENT_LABELS])
    return dict(zip(SEGMENT_LABELS, rounded, strict=True))


# --------------------------------------------------------------------------- profiles


def _check_grid(time_steps: int) -> None:
    if time_steps <= 0 or time_steps % HOURS_PER_DAY:
        raise ValueError(f"time_steps must be a positive multiple of 24, got {time_steps}")


def build_profile(
    start_hours: np.ndarray, energy_kwh: np.ndarray, rate_kw: float, time_steps: int
) -> np.ndarray:
    """Uncontrolled charging load in kW per step (see the module docstring), vectorised.

    ``start_hours`` are clock hours (taken modulo 24); energies above 24·``rate_kw`` are capped.
    """
    import numpy as np

    _check_grid(time_steps)
    if rate_kw <= 0:
        raise ValueError(f"rate_kw must be positive, got {rate_kw}")
    starts = np.asarray(start_hours, dtype=np.float64)
    energy = np.asarray(energy_kwh, dtype=np.float64)
    if starts.shape != energy.shape or starts.ndim != 1:
        raise ValueError("start_hours and energy_kwh must be vectors of one length")
    if not (np.all(np.isfinite(starts)) and np.all(np.isfinite(energy)) and np.all(energy >= 0)):
        raise ValueError("start_hours must be finite and energy_kwh finite and >= 0")
    t = time_steps
    per_hour = t // HOURS_PER_DAY
    step_kwh = rate_kw / per_hour
    first = np.floor(np.mod(starts, HOURS_PER_DAY) * per_hour).astype(np.int64)
    # A start a hair below 24 h can round up to step t, which on a clock is midnight: step 0.
    first %= t
    energy = np.minimum(energy, rate_kw * HOURS_PER_DAY)
    full = np.minimum(np.floor(energy / step_kwh).astype(np.int64), t)
    leftover = energy - full * step_kwh
    # floor() of a quotient that rounded up leaves a leftover of -1 ulp: take one step back.
    short = leftover < 0
    full[short] -= 1
    leftover[short] = energy[short] - full[short] * step_kwh
    end = first + full
    wraps = end > t
    # Difference array of charging-vehicle counts on t + 1 cells: +1 where a block starts, -1
    # after it ends; a wrapping block is cut into [first, t) and [0, end - t).
    diff = np.bincount(first, minlength=t + 1)
    diff -= np.bincount(np.where(wraps, t, end), minlength=t + 1)
    diff[0] += int(wraps.sum())
    diff -= np.bincount(end[wraps] - t, minlength=t + 1)
    charging = np.cumsum(diff[:t])
    tail = np.bincount(end % t, weights=leftover * per_hour, minlength=t)
    return charging * rate_kw + tail


def per_vehicle_loop_profile(
    start_hours: np.ndarray, energy_kwh: np.ndarray, rate_kw: float, time_steps: int
) -> np.ndarray:
    """The same profile as :func:`build_profile`, one vehicle and one step at a time.

    The slow, obvious reference (upstream's loop) for tests and benchmarks; never used in a fit.
    """
    import numpy as np

    _check_grid(time_steps)
    per_hour = time_steps // HOURS_PER_DAY
    step_kwh = rate_kw / per_hour
    profile = [0.0] * time_steps
    for start, raw_energy in zip(start_hours.tolist(), energy_kwh.tolist(), strict=True):
        energy = min(raw_energy, rate_kw * HOURS_PER_DAY)
        first = math.floor((start % HOURS_PER_DAY) * per_hour) % time_steps
        full = min(math.floor(energy / step_kwh), time_steps)
        if energy - full * step_kwh < 0:
            full -= 1
        for k in range(full):
            profile[(first + k) % time_steps] += rate_kw
        profile[(first + full) % time_steps] += (energy - full * step_kwh) * per_hour
    return np.array(profile)


def to_96(profile: np.ndarray) -> np.ndarray:
    """A 1440-step profile (or table, steps first) as the mean of each 15 minutes."""
    if profile.shape[0] != FINE_STEPS:
        raise ValueError(f"expected {FINE_STEPS} steps, got {profile.shape[0]}")
    return profile.reshape(COARSE_STEPS, FINE_STEPS // COARSE_STEPS, *profile.shape[1:]).mean(
        axis=1
    )


# --------------------------------------------------------------------------- forecast


@dataclass(frozen=True)
class ForecastResult:
    """A forecast: kW tables (steps × :data:`COLUMNS`) and per-segment bookkeeping."""

    time_steps: int
    uncontrolled: np.ndarray  # (time_steps, 7)
    uncontrolled_96: np.ndarray  # (96, 7)
    controlled: np.ndarray | None  # (time_steps, 7) when work_control is set
    controlled_96: np.ndarray | None
    vehicles: dict[str, int]  # by segment label
    sampled_kwh: dict[str, float]  # energy drawn, after the segment cap
    delivered_kwh: dict[str, float]  # energy in the profile, after the 24 h cap
    capped: dict[str, int]  # vehicles cut to 24 h of charging
    seed: int
    control_model: str | None = None
    work_peak_kw: float | None = None  # m, the normaliser given to the control model


def forecast(
    params: Mapping[str, Any],
    models: Mapping[str, Mapping[str, np.ndarray]],
    county_evs: Mapping[str, float] | None = None,
    control: tuple[np.ndarray, np.ndarray] | None = None,
) -> ForecastResult:
    """Uncontrolled (and, with ``work_control``, controlled) load of one day.

    ``models`` maps a segment label to its session model's arrays (registry ``LoadedModel.arrays``)
    for every label of :func:`session_model_names`; ``control`` is the control model's
    ``(coef, intercept)`` when ``work_control`` is not 'none'.
    """
    import numpy as np

    p = validate(LOAD_FORECAST, params)
    wants_control = p["work_control"] != "none"
    if wants_control != (control is not None):
        raise ValueError(
            "pass the control model's (coef, intercept) exactly when work_control is set"
        )
    counts = vehicle_counts(p, county_evs)
    streams = np.random.SeedSequence(p["seed"]).spawn(len(SEGMENTS))
    fine = np.zeros((FINE_STEPS, len(COLUMNS)))
    sampled: dict[str, float] = {}
    delivered: dict[str, float] = {}
    capped: dict[str, int] = {}
    for segment, stream in zip(SEGMENTS, streams, strict=True):
        n = counts[segment.label]
        starts, energy = _sample(segment, n, p, models, np.random.default_rng(stream))
        energy = np.clip(energy, 0.0, segment.energy_cap_kwh)
        day_cap = segment.rate_kw * HOURS_PER_DAY
        capped[segment.label] = int(np.count_nonzero(energy > day_cap))
        sampled[segment.label] = float(energy.sum())
        delivered[segment.label] = float(np.minimum(energy, day_cap).sum())
        column = COLUMNS.index(segment.column)
        fine[:, column] = build_profile(starts, energy, segment.rate_kw, FINE_STEPS)
    fine[:, _TOTAL] = fine[:, :_TOTAL].sum(axis=1)
    coarse = to_96(fine)

    controlled_fine = controlled_coarse = None
    peak = None
    if control is not None:
        from script_ec2.control import predict_controlled

        peak = float(coarse[:, _WORK].max())
        work = np.asarray(predict_controlled(control[0], control[1], coarse[:, _WORK]))
        controlled_coarse = _with_work(coarse, work)
        repeat = FINE_STEPS // COARSE_STEPS
        controlled_fine = _with_work(fine, np.repeat(work, repeat))

    main_grid = p["time_steps"] == FINE_STEPS
    return ForecastResult(
        time_steps=p["time_steps"],
        uncontrolled=fine if main_grid else coarse,
        uncontrolled_96=coarse,
        controlled=controlled_fine if main_grid else controlled_coarse,
        controlled_96=controlled_coarse,
        vehicles=counts,
        sampled_kwh=sampled,
        delivered_kwh=delivered,
        capped=capped,
        seed=p["seed"],
        control_model=control_model_name(p),
        work_peak_kw=peak,
    )


def _sample(
    segment: Segment,
    n: int,
    params: Mapping[str, Any],
    models: Mapping[str, Mapping[str, np.ndarray]],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (start hour, energy) draws for ``segment``; no model is needed when n is 0."""
    import numpy as np

    from script_ec2.gmm import SessionGmm

    if n == 0:
        return np.zeros(0), np.zeros(0)
    source = _model_source(segment.label, params)
    if source not in models:
        raise ValueError(
            f"no session model for {source!r} ({session_model_name(source, params['day_type'])})"
        )
    return SessionGmm.from_arrays(models[source]).sample(n, rng)


def _with_work(table: np.ndarray, work: np.ndarray) -> np.ndarray:
    out = table.copy()
    out[:, _WORK] = work
    out[:, _TOTAL] = out[:, :_TOTAL].sum(axis=1)
    return out


# --------------------------------------------------------------------------- storage form


def result_arrays(result: ForecastResult) -> dict[str, np.ndarray]:
    """The kW tables by name (``uncontrolled_96``, ``uncontrolled_1440``, ``controlled_…``).

    Each is float64, steps × :data:`COLUMNS`; 1440-step tables only when ``time_steps`` is 1440.
    """
    import numpy as np

    out = {"uncontrolled_96": result.uncontrolled_96}
    if result.time_steps == FINE_STEPS:
        out["uncontrolled_1440"] = result.uncontrolled
    if result.controlled_96 is not None and result.controlled is not None:
        out["controlled_96"] = result.controlled_96
        if result.time_steps == FINE_STEPS:
            out["controlled_1440"] = result.controlled
    return {name: np.ascontiguousarray(a, dtype=np.float64) for name, a in out.items()}


def result_meta(result: ForecastResult) -> dict[str, Any]:
    """Everything about a result except its arrays, as plain JSON-ready values."""
    total = _TOTAL
    meta: dict[str, Any] = {
        "algorithm": LOAD_FORECAST,
        "algorithm_version": ALGORITHM_VERSIONS[LOAD_FORECAST],
        "columns": list(COLUMNS),
        "unit": "kW",
        "time_steps": result.time_steps,
        "step_minutes": HOURS_PER_DAY * 60 // result.time_steps,
        "arrays": {name: list(array.shape) for name, array in result_arrays(result).items()},
        "seed": result.seed,
        "control_model": result.control_model,
        "work_peak_kw": result.work_peak_kw,
        "peak_kw": {"uncontrolled": float(result.uncontrolled[:, total].max())},
        "segments": [
            {
                "segment": s.label,
                "column": s.column,
                "rate_kw": s.rate_kw,
                "energy_cap_kwh": s.energy_cap_kwh,
                "vehicles": result.vehicles[s.label],
                "sampled_kwh": result.sampled_kwh[s.label],
                "delivered_kwh": result.delivered_kwh[s.label],
                "capped_vehicles": result.capped[s.label],
            }
            for s in SEGMENTS
        ],
        "vehicles": sum(result.vehicles.values()),
        "energy_kwh": math.fsum(result.delivered_kwh.values()),
    }
    if result.controlled is not None:
        meta["peak_kw"]["controlled"] = float(result.controlled[:, total].max())
    return meta
