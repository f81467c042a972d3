"""The smart-charging linear program: the cheapest 15-minute schedule of a day's sessions.

Each session i is plugged in for a window of ``length[i]`` slots starting at slot
``arrival[i]`` (0..95; a window running past slot 95 wraps to the start of the same day), may
draw up to ``power_cap_kw[i]`` and must receive ``energy_kwh[i]``, clipped to what the window
allows (``0.25 h · cap · length``; the clipped sessions are reported). For a :class:`Rate` the
LP is

    minimise   Σ_t 0.25·price_t·S_t  +  Σ_j d_j·M_j  (+ tie-break, below)
    subject to S_t = Σ_i P[t, i],   M_j ≥ S_t for t in window j,   S_t ≤ cap (if any),
               0 ≤ P[t, i] ≤ power_cap_kw[i],   0.25·Σ_t P[t, i] = E'_i,

with energy priced per kWh (the 0.25 h factor upstream left out, spec §3.3 and defect 7) and each
demand charge counted once. There is one variable per *free* (slot, session) cell, so cells
outside a window do not exist rather than being forced to zero, plus one epigraph variable M_j per
demand charge with a non-zero price. The matrices are ``scipy.sparse`` COO built from index arrays
and the LP is solved by HiGHS (``scipy.optimize.linprog(method="highs")``).

Tie-break: most tariffs leave many schedules equally cheap (flat prices inside a period, a pure
cap, the minimum peak), and the solver would pick one by its own internal order. Every kWh
therefore also costs ``tiebreak`` $ per slot of delay after arrival (default 1e-5 $/kWh per
15 minutes, at most about 0.001 $/kWh, far below any price step), so among equally cheap
schedules the one that charges earliest wins, which is what a charger does when nothing holds it
back. :attr:`Schedule.cost` is the tariff cost alone, without the tie-break.

The aggregate cap is the rate's (``cap_kw``, or ``cap_fraction`` of the uncontrolled peak that
the caller passes) unless one is given explicitly. A failed solve (infeasible, e.g. a cap below
what the windows allow, or a numerical failure) raises :class:`ControlError` carrying the run
index and the HiGHS status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from script_ec2.errors import ScriptEc2Error
from script_ec2.rates import SLOT_HOURS, SLOTS, Rate

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

TIEBREAK = 1e-5  # $/kWh per slot of delay
_CLIP_TOLERANCE = 1e-9  # relative: energy above window capacity by less than this is not clipped

_STATUS_TEXT = {
    1: "iteration or time limit reached",
    2: "infeasible",
    3: "unbounded",
    4: "numerical difficulties",
}


class ControlError(ScriptEc2Error):
    """A load-control optimisation that could not be solved."""

    def __init__(self, message: str, *, run: int | None = None, status: int | None = None):
        super().__init__(message)
        self.run = run
        self.status = status


@dataclass(frozen=True)
class ChargingSessions:
    """The sessions of one scheduling problem, as equal-length arrays."""

    arrival: np.ndarray  # int, first slot of the window, 0..95
    length: np.ndarray  # int, slots in the window, 1..96 (wraps past midnight)
    energy_kwh: np.ndarray  # energy wanted
    power_cap_kw: np.ndarray  # the most one session may draw

    def __post_init__(self) -> None:
        arrival = np.asarray(self.arrival, dtype=np.int64)
        length = np.asarray(self.length, dtype=np.int64)
        energy = np.asarray(self.energy_kwh, dtype=float)
        cap = np.asarray(self.power_cap_kw, dtype=float)
        n = len(arrival)
        if any(a.shape != (n,) for a in (length, energy, cap)):
            raise ValueError("arrival, length, energy_kwh and power_cap_kw must be 1-d, one length")
        if ((arrival < 0) | (arrival >= SLOTS)).any():
            raise ValueError("arrival slots must be in 0..95")
        if ((length < 1) | (length > SLOTS)).any():
            raise ValueError("window lengths must be in 1..96 slots")
        if not (np.isfinite(energy).all() and (energy >= 0).all()):
            raise ValueError("energies must be finite and not negative")
        if not (np.isfinite(cap).all() and (cap > 0).all()):
            raise ValueError("power caps must be finite and positive")
        for name, value in (
            ("arrival", arrival),
            ("length", length),
            ("energy_kwh", energy),
            ("power_cap_kw", cap),
        ):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.arrival)

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot, session, delay) of every free cell, session-major, in window order."""
        n_cells = int(self.length.sum())
        session = np.repeat(np.arange(len(self)), self.length)
        first = np.cumsum(self.length) - self.length
        delay = np.arange(n_cells) - np.repeat(first, self.length)
        slot = (self.arrival[session] + delay) % SLOTS
        return slot, session, delay

    def window_mask(self) -> np.ndarray:
        """(96, n) booleans: True where session i may charge in slot t."""
        slot, session, _ = self.cells()
        mask = np.zeros((SLOTS, len(self)), dtype=bool)
        mask[slot, session] = True
        return mask

    def energy_target(self) -> tuple[np.ndarray, np.ndarray]:
        """(energy to deliver, clipped flags): energy clipped to the window's capacity."""
        capacity = SLOT_HOURS * self.power_cap_kw * self.length
        clipped = self.energy_kwh > capacity * (1.0 + _CLIP_TOLERANCE)
        return np.minimum(self.energy_kwh, capacity), clipped


@dataclass(frozen=True)
class LpProblem:
    """``linprog`` inputs: minimise c·x s.t. a_ub·x ≤ b_ub, a_eq·x = b_eq, bounds."""

    c: np.ndarray
    a_ub: csr_matrix | None
    b_ub: np.ndarray | None
    a_eq: csr_matrix
    b_eq: np.ndarray
    bounds: np.ndarray  # (variables, 2); +inf for no upper bound
    cell_slot: np.ndarray
    cell_session: np.ndarray
    demand_names: tuple[str, ...]  # one epigraph variable each, after the cells
    energy_target: np.ndarray
    clipped: np.ndarray
    aggregate_cap_kw: float | None

    @property
    def n_cells(self) -> int:
        return len(self.cell_slot)


@dataclass(frozen=True)
class Schedule:
    """An optimal schedule and what it costs."""

    power_kw: np.ndarray  # (96, n) kW per slot and session
    aggregate_kw: np.ndarray  # (96,)
    delivered_kwh: np.ndarray  # (n,)
    target_kwh: np.ndarray  # (n,) energy after clipping
    clipped: np.ndarray  # (n,) bool
    cost: float  # $ under the rate, tie-break excluded
    objective: float  # the solver's objective, tie-break included
    iterations: int

    @property
    def clipped_sessions(self) -> int:
        return int(self.clipped.sum())


def build_lp(
    sessions: ChargingSessions,
    rate: Rate,
    *,
    aggregate_cap_kw: float | None = None,
    tiebreak: float = TIEBREAK,
) -> LpProblem:
    """The sparse LP of ``sessions`` under ``rate`` (see the module docstring)."""
    from scipy.sparse import coo_matrix

    if tiebreak < 0:
        raise ValueError("tiebreak must not be negative")
    slot, session, delay = sessions.cells()
    n, n_cells = len(sessions), len(slot)
    charges = [d for d in rate.demand_charges if d.price > 0]
    n_vars = n_cells + len(charges)
    cell_ids = np.arange(n_cells)

    c = np.zeros(n_vars)
    c[:n_cells] = SLOT_HOURS * (rate.energy_price[slot] + tiebreak * delay)
    c[n_cells:] = [d.price for d in charges]

    target, clipped = sessions.energy_target()
    # Σ_t P = E'/0.25: unit coefficients keep the rows well scaled for HiGHS.
    a_eq = coo_matrix((np.ones(n_cells), (session, cell_ids)), shape=(n, n_vars)).tocsr()
    b_eq = target / SLOT_HOURS

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    n_rows = 0
    used = np.zeros(SLOTS, dtype=bool)
    used[slot] = True
    for j, charge in enumerate(charges):
        # S_t - M_j ≤ 0 for the window's slots (slots no session can use need no row).
        window = charge.mask & used
        row_of_slot = np.cumsum(window) - 1 + n_rows
        in_window = window[slot]
        window_slots = np.flatnonzero(window)
        rows += [row_of_slot[slot[in_window]], row_of_slot[window_slots]]
        cols += [cell_ids[in_window], np.full(len(window_slots), n_cells + j)]
        vals += [np.ones(int(in_window.sum())), -np.ones(len(window_slots))]
        rhs.append(np.zeros(len(window_slots)))
        n_rows += len(window_slots)
    if aggregate_cap_kw is not None:
        if not (np.isfinite(aggregate_cap_kw) and aggregate_cap_kw >= 0):
            raise ValueError("aggregate_cap_kw must be finite and not negative")
        rows.append(slot + n_rows)
        cols.append(cell_ids)
        vals.append(np.ones(n_cells))
        rhs.append(np.full(SLOTS, float(aggregate_cap_kw)))
        n_rows += SLOTS
    a_ub = b_ub = None
    if n_rows:
        a_ub = coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_rows, n_vars),
        ).tocsr()
        b_ub = np.concatenate(rhs)

    bounds = np.zeros((n_vars, 2))
    bounds[:n_cells, 1] = sessions.power_cap_kw[session]
    bounds[n_cells:, 1] = np.inf
    return LpProblem(
        c=c,
        a_ub=a_ub,
        b_ub=b_ub,
        a_eq=a_eq,
        b_eq=b_eq,
        bounds=bounds,
        cell_slot=slot,
        cell_session=session,
        demand_names=tuple(d.name for d in charges),
        energy_target=target,
        clipped=clipped,
        aggregate_cap_kw=aggregate_cap_kw,
    )


def solve_schedule(
    sessions: ChargingSessions,
    rate: Rate,
    *,
    uncontrolled_peak_kw: float | None = None,
    aggregate_cap_kw: float | None = None,
    tiebreak: float = TIEBREAK,
    run: int | None = None,
) -> Schedule:
    """Solve the LP with HiGHS; raise :class:`ControlError` (with ``run``) when it fails.

    The aggregate cap is ``aggregate_cap_kw`` when given, else the rate's own: ``cap_kw``, or
    ``cap_fraction × uncontrolled_peak_kw`` (then ``uncontrolled_peak_kw`` is required).
    """
    from scipy.optimize import linprog

    cap = aggregate_cap_kw
    if cap is None and rate.cap_fraction is not None and uncontrolled_peak_kw is None:
        raise ValueError(f"rate {rate.name!r} caps a fraction of the uncontrolled peak: give it")
    if cap is None:
        cap = rate.cap_level(uncontrolled_peak_kw or 0.0)
    problem = build_lp(sessions, rate, aggregate_cap_kw=cap, tiebreak=tiebreak)
    result = linprog(
        problem.c,
        A_ub=problem.a_ub,
        b_ub=problem.b_ub,
        A_eq=problem.a_eq,
        b_eq=problem.b_eq,
        bounds=problem.bounds,
        method="highs",
    )
    if result.status != 0 or result.x is None:
        raise ControlError(_failure_message(result, problem, run), run=run, status=result.status)
    x = np.clip(result.x[: problem.n_cells], 0.0, None)  # HiGHS may return -1e-12
    n = len(sessions)
    power = np.zeros((SLOTS, n))
    power[problem.cell_slot, problem.cell_session] = x
    aggregate = np.bincount(problem.cell_slot, weights=x, minlength=SLOTS)
    delivered = SLOT_HOURS * np.bincount(problem.cell_session, weights=x, minlength=n)
    return Schedule(
        power_kw=power,
        aggregate_kw=aggregate,
        delivered_kwh=delivered,
        target_kwh=problem.energy_target,
        clipped=problem.clipped,
        cost=float(rate.cost(aggregate)),
        objective=float(result.fun),
        iterations=int(getattr(result, "nit", 0)),
    )


def _failure_message(result: Any, problem: LpProblem, run: int | None) -> str:
    what = f"the load-control LP of run {run}" if run is not None else "the load-control LP"
    status = _STATUS_TEXT.get(result.status, f"status {result.status}")
    hint = "check the session windows, energies and power caps"
    if result.status == 2 and problem.aggregate_cap_kw is not None:
        hint = (
            f"the aggregate cap of {problem.aggregate_cap_kw:.1f} kW cannot be met within the "
            "windows; raise cap_kw or cap_fraction"
        )
    return f"{what} failed: {status} (HiGHS status {result.status}); {hint}"


def schedule_violations(sessions: ChargingSessions, schedule: Schedule) -> dict[str, float]:
    """The largest violation of each constraint by ``schedule`` (all 0 for a valid one)."""
    mask = sessions.window_mask()
    power = schedule.power_kw
    return {
        "outside_window_kw": float(np.abs(power[~mask]).max(initial=0.0)),
        "negative_kw": float(max(0.0, -power.min(initial=0.0))),
        "above_cap_kw": float(
            np.clip(power - sessions.power_cap_kw[None, :], 0.0, None).max(initial=0.0)
        ),
        "energy_kwh": float(
            np.abs(SLOT_HOURS * power.sum(axis=0) - schedule.target_kwh).max(initial=0.0)
        ),
    }


@dataclass(frozen=True)
class BenchInstance:
    """A random scheduling problem and its charge-on-arrival (uncontrolled) aggregate."""

    sessions: ChargingSessions
    uncontrolled_kw: np.ndarray  # (96,)


def asap_profile(sessions: ChargingSessions) -> np.ndarray:
    """(96, n) kW when every session charges at its cap from arrival until it has its energy."""
    target, _ = sessions.energy_target()
    slot, session, delay = sessions.cells()
    full_slots = target / (SLOT_HOURS * sessions.power_cap_kw)
    # Slot k of the window gets the cap while k < full_slots, then the remainder once.
    share = np.clip(full_slots[session] - delay, 0.0, 1.0)
    power = np.zeros((SLOTS, len(sessions)))
    power[slot, session] = share * sessions.power_cap_kw[session]
    return power


def bench_lp_instances(n: int, *, sessions: int = 200, seed: int = 0) -> list[BenchInstance]:
    """``n`` random workplace-like problems for benchmarks and solver cross-checks.

    Arrivals around 08:30 (some in the evening, wrapping midnight), windows of 2-12 h, caps of
    6.6 or 7.2 kW, energies of 20-100 % of what the window allows. Deterministic in ``seed``.
    """
    if n < 0 or sessions < 1:
        raise ValueError("n must be >= 0 and sessions >= 1")
    out: list[BenchInstance] = []
    for child in np.random.SeedSequence(seed).spawn(n):
        rng = np.random.default_rng(child)
        evening = rng.random(sessions) < 0.1
        arrival = np.where(
            evening, rng.integers(68, 92, sessions), np.clip(rng.normal(34, 5, sessions), 20, 60)
        ).astype(np.int64)
        length = rng.integers(8, 49, sessions)
        cap = rng.choice([6.6, 7.2], sessions)
        energy = rng.uniform(0.2, 1.0, sessions) * SLOT_HOURS * cap * length
        instance = ChargingSessions(arrival, length, energy, cap)
        out.append(BenchInstance(instance, asap_profile(instance).sum(axis=1)))
    return out
