"""The smart-charging LP: hand-checkable optima, constraints, wrapping, clipping, failures."""

from __future__ import annotations

import numpy as np
import pytest

from script_ec2.errors import EXIT_FAILED
from script_ec2.lp import (
    TIEBREAK,
    ChargingSessions,
    ControlError,
    Schedule,
    asap_profile,
    bench_lp_instances,
    build_lp,
    schedule_violations,
    solve_schedule,
)
from script_ec2.rates import RATE_NAMES, DemandCharge, Rate, load_rate

ALL_DAY = np.ones(96, dtype=bool)


def flat_rate(price: float = 0.2, *demand: DemandCharge, cap_kw: float | None = None) -> Rate:
    return Rate("flat", np.full(96, price), tuple(demand), cap_kw=cap_kw)


def sessions(
    arrival: list[int], length: list[int], energy: list[float], cap: list[float] | None = None
) -> ChargingSessions:
    return ChargingSessions(
        np.array(arrival), np.array(length), np.array(energy), np.array(cap or [6.6] * len(arrival))
    )


def assert_valid(problem: ChargingSessions, schedule: Schedule, tol: float = 1e-6) -> None:
    """Every constraint, checked cell by cell without the library's own helpers."""
    target = np.minimum(problem.energy_kwh, 0.25 * problem.power_cap_kw * problem.length)
    for i in range(len(problem)):
        window = {(problem.arrival[i] + k) % 96 for k in range(problem.length[i])}
        for t in range(96):
            p = schedule.power_kw[t, i]
            assert p >= -tol
            assert p <= problem.power_cap_kw[i] + tol
            if t not in window:
                assert p == 0.0
        assert abs(0.25 * schedule.power_kw[:, i].sum() - target[i]) <= tol
    assert np.allclose(schedule.aggregate_kw, schedule.power_kw.sum(axis=1), atol=1e-9)


def test_flat_price_without_demand_charge_costs_price_times_energy() -> None:
    problem = sessions([30, 34, 80, 90], [20, 8, 30, 12], [20.0, 5.0, 30.0, 11.0])
    schedule = solve_schedule(problem, flat_rate(0.2))
    assert schedule.cost == pytest.approx(0.2 * 66.0, abs=1e-9)
    assert schedule.objective >= schedule.cost  # the tie-break only adds
    assert_valid(problem, schedule)


def test_a_demand_charge_flattens_two_full_day_sessions() -> None:
    problem = sessions([0, 40], [96, 96], [20.0, 30.0])
    rate = Rate("peak", np.zeros(96), (DemandCharge("overall", ALL_DAY, 10.0),))
    schedule = solve_schedule(problem, rate)
    assert schedule.aggregate_kw.max() == pytest.approx(50.0 / 24.0, abs=1e-7)
    assert np.allclose(schedule.aggregate_kw, 50.0 / 24.0, atol=1e-7)
    assert schedule.cost == pytest.approx(10.0 * 50.0 / 24.0, abs=1e-6)
    assert_valid(problem, schedule)


def test_each_demand_charge_counts_once() -> None:
    # One session, 2 h window at 1 kWh/slot possible; energy 2 kWh: the cheapest spreads it.
    problem = sessions([48], [8], [2.0])
    charge = DemandCharge("overall", ALL_DAY, 19.10)
    schedule = solve_schedule(problem, Rate("d", np.zeros(96), (charge,)))
    assert schedule.aggregate_kw.max() == pytest.approx(1.0)
    assert schedule.cost == pytest.approx(19.10)  # not 2 × 19.10 as upstream's Gen A had


def test_window_wrapping_midnight_uses_only_its_slots_and_the_cheap_ones() -> None:
    # 22:00 → 02:00; cheap 00:00-02:00 holds 8 slots × 6.6 kW × 0.25 h = 13.2 kWh.
    price = np.full(96, 0.30)
    price[0:8] = 0.05
    problem = sessions([88], [16], [10.0])
    schedule = solve_schedule(problem, Rate("night", price))
    power = schedule.power_kw[:, 0]
    assert power[8:88].sum() == 0.0
    assert 0.25 * power[0:8].sum() == pytest.approx(10.0)
    assert power[88:96].sum() == pytest.approx(0.0, abs=1e-9)
    assert schedule.cost == pytest.approx(0.5)
    assert_valid(problem, schedule)


def test_charging_is_as_soon_as_possible_among_equal_costs() -> None:
    problem = sessions([88], [16], [3.3])
    schedule = solve_schedule(problem, flat_rate(0.1))
    power = schedule.power_kw[:, 0]
    assert power[88] == pytest.approx(6.6) and power[89] == pytest.approx(6.6)
    assert power[[*range(90, 96), *range(0, 8)]].sum() == pytest.approx(0.0, abs=1e-9)


def test_the_tie_break_never_outweighs_a_price_step() -> None:
    # Waiting 23 h for a price 0.001 $/kWh lower still pays: the tie-break is below that.
    price = np.full(96, 0.101)
    price[95] = 0.100
    assert TIEBREAK * 95 < 0.001
    problem = sessions([0], [96], [1.0])
    schedule = solve_schedule(problem, Rate("step", price))
    assert schedule.power_kw[95, 0] == pytest.approx(4.0)


def test_power_caps_follow_the_session() -> None:
    # 11 kWh in 1 h needs 11 kW: the session's own cap of 11 kW allows it.
    problem = sessions([40], [4], [11.0], cap=[11.0])
    schedule = solve_schedule(problem, flat_rate())
    assert np.allclose(schedule.power_kw[40:44, 0], 11.0)
    assert schedule.clipped_sessions == 0


def test_energy_beyond_the_window_is_clipped_and_counted() -> None:
    problem = sessions([10, 20, 30], [4, 4, 4], [10.0, 6.6, 1.0])
    schedule = solve_schedule(problem, flat_rate())
    assert schedule.clipped.tolist() == [True, False, False]
    assert schedule.clipped_sessions == 1
    assert schedule.delivered_kwh == pytest.approx([6.6, 6.6, 1.0])
    assert schedule.target_kwh == pytest.approx([6.6, 6.6, 1.0])
    assert_valid(problem, schedule)


def test_an_impossible_cap_raises_control_error_with_run_and_status() -> None:
    problem = sessions([0, 0], [4, 4], [6.6, 6.6])  # both need 6.6 kW in every slot
    with pytest.raises(ControlError) as info:
        solve_schedule(problem, flat_rate(cap_kw=10.0), run=7)
    assert info.value.run == 7 and info.value.status == 2
    assert info.value.exit_code == EXIT_FAILED
    message = str(info.value)
    assert message.startswith("the load-control LP of run 7 failed: infeasible (HiGHS status 2)")
    assert "aggregate cap of 10.0 kW" in message and "\n" not in message
    # An explicit cap overrides the rate's; a fraction cap needs the uncontrolled peak.
    with pytest.raises(ControlError):
        solve_schedule(problem, flat_rate(), aggregate_cap_kw=10.0)
    fraction = Rate("f", np.full(96, 0.1), cap_fraction=0.5)
    with pytest.raises(ValueError, match="uncontrolled peak"):
        solve_schedule(problem, fraction)
    with pytest.raises(ControlError):
        solve_schedule(problem, fraction, uncontrolled_peak_kw=13.2)
    # The same problem is feasible at 13.2 kW.
    ok = solve_schedule(problem, flat_rate(), aggregate_cap_kw=13.2)
    assert ok.aggregate_kw.max() <= 13.2 + 1e-7


def test_a_cap_holds_and_moves_load() -> None:
    problem = sessions([32, 32, 32], [32, 32, 32], [6.6, 6.6, 6.6])
    schedule = solve_schedule(problem, flat_rate(), aggregate_cap_kw=8.0)
    assert schedule.aggregate_kw.max() <= 8.0 + 1e-7
    assert_valid(problem, schedule)


def test_variables_exist_only_inside_windows() -> None:
    problem = sessions([90, 0, 50], [10, 96, 1], [1.0, 2.0, 0.5])
    e19 = load_rate("e19")
    lp = build_lp(problem, e19)
    assert lp.n_cells == 107
    assert len(lp.c) == 107 + 3  # one epigraph variable per demand charge
    assert lp.demand_names == ("overall", "peak", "part-peak")
    assert set(zip(lp.cell_slot[:10].tolist(), lp.cell_session[:10].tolist(), strict=True)) == {
        (t % 96, 0) for t in range(90, 100)
    }
    assert lp.a_eq.shape == (3, 110) and lp.a_ub is not None
    # A zero-price demand charge gets no variable, no rows.
    free = Rate("z", np.ones(96), (DemandCharge("free", ALL_DAY, 0.0),))
    bare = build_lp(problem, free)
    assert len(bare.c) == 107 and bare.a_ub is None


@pytest.mark.parametrize("name", RATE_NAMES)
def test_every_builtin_rate_gives_valid_schedules_no_dearer_than_uncontrolled(name: str) -> None:
    rate = load_rate(name)
    for instance in bench_lp_instances(3, sessions=60, seed=11):
        peak = float(instance.uncontrolled_kw.max())
        cap = rate.cap_level(peak)
        schedule = solve_schedule(instance.sessions, rate, uncontrolled_peak_kw=peak)
        assert max(schedule_violations(instance.sessions, schedule).values()) <= 1e-6
        assert_valid(instance.sessions, schedule)
        # Charging on arrival is feasible, so the optimum is never dearer.
        assert schedule.cost <= float(rate.cost(instance.uncontrolled_kw)) + 1e-6
        if cap is not None:
            assert schedule.aggregate_kw.max() <= cap + 1e-6


def test_schedule_violations_reports_a_broken_schedule() -> None:
    problem = sessions([10], [4], [2.0])
    good = solve_schedule(problem, flat_rate())
    power = good.power_kw.copy()
    power[50, 0] = 1.0
    bad = Schedule(
        power, power.sum(axis=1), good.delivered_kwh, good.target_kwh, good.clipped, 0.0, 0.0, 0
    )
    found = schedule_violations(problem, bad)
    assert found["outside_window_kw"] == 1.0
    assert found["energy_kwh"] == pytest.approx(0.25)


def test_asap_profile_charges_from_arrival() -> None:
    problem = sessions([94], [6], [3.0])  # 6.6 kW: 1.65 kWh per slot → 1 full slot + 0.818
    power = asap_profile(problem)[:, 0]
    assert power[94] == pytest.approx(6.6)
    assert power[95] == pytest.approx(1.35 / 0.25)
    assert power[[0, 1, 2, 3]].sum() == 0.0


def test_bench_instances_are_deterministic() -> None:
    a = bench_lp_instances(2, sessions=30, seed=5)
    b = bench_lp_instances(2, sessions=30, seed=5)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.sessions.energy_kwh, y.sessions.energy_kwh)
        assert np.array_equal(x.uncontrolled_kw, y.uncontrolled_kw)
    assert not np.array_equal(a[0].sessions.energy_kwh, a[1].sessions.energy_kwh)


@pytest.mark.parametrize(
    ("arrival", "length", "energy", "cap", "message"),
    [
        ([96], [4], [1.0], [6.6], "arrival slots"),
        ([0], [0], [1.0], [6.6], "window lengths"),
        ([0], [97], [1.0], [6.6], "window lengths"),
        ([0], [4], [-1.0], [6.6], "energies"),
        ([0], [4], [1.0], [0.0], "power caps"),
        ([0, 1], [4], [1.0], [6.6], "one length"),
    ],
)
def test_charging_sessions_reject_bad_arrays(
    arrival: list[int], length: list[int], energy: list[float], cap: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sessions(arrival, length, energy, cap)
