"""The load forecast core: counts, vectorised profiles, grids, sampling, control, storage form."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from script_ec2 import forecast_fit as F
from script_ec2.errors import DataError
from script_ec2.params import ParamError


def gmm(start_hour: float, energy_kwh: float, shift_hours: float = 0.0) -> dict[str, np.ndarray]:
    """A one-component session model built by hand (start hour on the shifted axis, kWh)."""
    return {
        "weights": np.array([1.0]),
        "means": np.array([[start_hour, energy_kwh]]),
        "covariances": np.array([[[4.0, 0.5], [0.5, 9.0]]]),
        "shift_hours": np.array(shift_hours),
        "energy_bounds": np.array([0.1, 80.0]),
    }


MODELS: dict[str, dict[str, np.ndarray]] = {
    "Residential L1": gmm(20.0, 9.0),
    "Residential L2": gmm(19.0, 14.0),
    "Residential MUD": gmm(21.0, 12.0),
    "Workplace": gmm(4.5, 11.0, shift_hours=4.0),
    "Public L2": gmm(13.0, 8.0),
    "DC Fast": gmm(15.0, 25.0),
}
IDENTITY = (np.eye(96), np.zeros(96))


def loop_profile(
    start_hours: np.ndarray, energy_kwh: np.ndarray, rate_kw: float, steps: int
) -> np.ndarray:
    """Reference written independently: deliver each vehicle's energy step by step."""
    per_hour = steps // 24
    step_kwh = rate_kw / per_hour
    profile = np.zeros(steps)
    for start, energy in zip(start_hours, energy_kwh, strict=True):
        remaining = min(float(energy), rate_kw * 24)
        slot = int(start % 24 * per_hour) % steps
        while remaining > 1e-12:
            delivered = min(step_kwh, remaining)
            profile[slot % steps] += delivered * per_hour
            remaining -= delivered
            slot += 1
    return profile


def energy_of(profile: np.ndarray, steps: int) -> float:
    return float(profile.sum()) / (steps / 24)


# --------------------------------------------------------------------------- counts


def test_counts_follow_the_gen_b_formulas() -> None:
    counts = F.vehicle_counts({"num_evs": 1000})
    # N = 1000; fast 0.5·0.1·N; work 1·0.2·N; public 0.33·0·N; R = 1·(1 − 0.1 − 0 − 0.2)·N = 700,
    # split L1 0.5, L2 0.2, MUD 0.3.
    assert counts == {
        "Residential L1": 350,
        "Residential L2": 140,
        "Residential MUD": 210,
        "Workplace": 200,
        "Public L2": 0,
        "DC Fast": 50,
    }


def test_counts_use_each_daily_use() -> None:
    counts = F.vehicle_counts(
        {
            "num_evs": 10_000,
            "fast_percent": 0.1,
            "work_percent": 0.2,
            "publicl2_percent": 0.1,
            "fast_daily_use": 0.3,
            "work_daily_use": 0.5,
            "publicl2_daily_use": 0.25,
            "res_daily_use": 0.8,
        }
    )
    residential = 0.8 * 0.6 * 10_000
    assert counts["DC Fast"] == 300
    assert counts["Workplace"] == 1000
    assert counts["Public L2"] == 250
    assert counts["Residential L1"] == 0.5 * residential
    assert counts["Residential L2"] == 0.2 * residential
    assert counts["Residential MUD"] == 0.3 * residential


def test_counts_round_by_largest_remainder_not_truncation() -> None:
    counts = F.vehicle_counts({"num_evs": 1_000_003})
    # Raw: L1 350001.05, L2 140000.42, MUD 210000.63, work 200000.6, fast 50000.15; total
    # 950002.85 -> 950003. Floors give 950001; MUD and work have the largest remainders.
    assert counts == {
        "Residential L1": 350_001,
        "Residential L2": 140_000,
        "Residential MUD": 210_001,
        "Workplace": 200_001,
        "Public L2": 0,
        "DC Fast": 50_000,
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=1, max_size=8))
def test_largest_remainder_sums_to_the_rounded_total(values: list[float]) -> None:
    counts = F.largest_remainder(values)
    assert sum(counts) == round(math.fsum(values))
    for value, count in zip(values, counts, strict=True):
        assert count in (math.floor(value), math.ceil(value))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 50_000_000),
    st.integers(0, 333),
    st.integers(0, 333),
    st.integers(0, 333),
    st.integers(0, 100),
)
def test_counts_sum_to_the_rounded_total(
    num_evs: int, fast: int, work: int, public: int, daily: int
) -> None:
    params = {
        "num_evs": num_evs,
        "fast_percent": fast / 1000,
        "work_percent": work / 1000,
        "publicl2_percent": public / 1000,
        "res_daily_use": daily / 100,
    }
    p = F.validate(F.LOAD_FORECAST, params)
    raw_total = num_evs * (
        p["fast_daily_use"] * p["fast_percent"]
        + p["work_daily_use"] * p["work_percent"]
        + p["publicl2_daily_use"] * p["publicl2_percent"]
        + p["res_daily_use"] * (1 - p["fast_percent"] - p["work_percent"] - p["publicl2_percent"])
    )
    assert sum(F.vehicle_counts(params).values()) == pytest.approx(round(raw_total), abs=1)


def test_county_share_of_owners() -> None:
    county = {"aggregation_level": "county", "county": "Alameda", "num_evs": 4000}
    evs = {"Alameda": 300, "Marin": 100}
    assert F.owners(county, evs) == 3000
    assert F.owners(county, {"alameda ": 300, "MARIN": 100}) == 3000
    assert F.owners(county, {"Alameda": np.int64(300), "Marin": np.float64(100)}) == 3000
    assert F.vehicle_counts(county, evs)["Workplace"] == 600
    assert F.owners({"num_evs": 4000}, None) == 4000


def test_county_missing_from_the_distribution_is_named() -> None:
    params = {"aggregation_level": "county", "county": "Modoc"}
    with pytest.raises(DataError, match="county 'Modoc' has no row in the county EV distribution"):
        F.vehicle_counts(params, {"Alameda": 10})
    with pytest.raises(DataError, match="needs the county EV distribution"):
        F.vehicle_counts(params, None)
    with pytest.raises(DataError, match="adds up to 0"):
        F.vehicle_counts(params, {"Modoc": 0})
    for bad in (-3, "12", float("nan")):
        with pytest.raises(DataError, match="must be a number >= 0"):
            F.vehicle_counts(params, {"Modoc": bad})


def test_unknown_county_parameter_is_a_param_error() -> None:
    with pytest.raises(ParamError, match="county: unknown county 'Gotham'"):
        F.vehicle_counts({"aggregation_level": "county", "county": "Gotham"}, {"Gotham": 1})


# --------------------------------------------------------------------------- profiles


def test_block_wraps_past_midnight_with_partial_last_step() -> None:
    # 96 steps: start 23:30 -> slot 94; 10 kWh at 6.6 kW = 6 full slots of 1.65 kWh + 0.1 kWh.
    profile = F.build_profile(np.array([23.5]), np.array([10.0]), 6.6, 96)
    expected = np.zeros(96)
    expected[[94, 95, 0, 1, 2, 3]] = 6.6
    expected[4] = 0.1 * 4
    np.testing.assert_allclose(profile, expected, rtol=0, atol=1e-12)
    assert energy_of(profile, 96) == pytest.approx(10.0, rel=1e-12)


def test_leftover_step_at_the_end_of_the_day_goes_to_step_0() -> None:
    # 1440 steps: start 23:58 -> step 1438; 0.25 kWh at 6.6 kW = 2 full minutes (0.22) + 0.03.
    profile = F.build_profile(np.array([23 + 58 / 60]), np.array([0.25]), 6.6, 1440)
    assert profile[1438] == profile[1439] == pytest.approx(6.6)
    assert profile[0] == pytest.approx(0.03 * 60)
    assert np.count_nonzero(profile) == 3


def test_whole_step_energy_has_no_leftover_and_start_hours_wrap() -> None:
    # 3.3 kWh at 6.6 kW on 96 steps is exactly 2 slots; a start of 24.25 h is 00:15.
    profile = F.build_profile(np.array([24.25, -0.25]), np.array([3.3, 1.65]), 6.6, 96)
    assert profile[1] == profile[2] == pytest.approx(6.6)
    assert profile[95] == pytest.approx(6.6)
    assert energy_of(profile, 96) == pytest.approx(4.95, rel=1e-12)


@pytest.mark.parametrize(("rate", "steps"), [(6.6, 96), (6.6, 1440), (1.4, 96), (1.4, 1440)])
def test_energy_just_below_whole_steps_never_gives_negative_power(rate: float, steps: int) -> None:
    # E/step can round up to a whole number k while E < k·step: floor() then overshoots by one.
    step_kwh = rate / (steps / 24)
    for k in range(1, min(steps, 300) + 1):
        energy = np.nextafter(k * step_kwh, 0)
        profile = F.build_profile(np.array([6.0]), np.array([energy]), rate, steps)
        assert profile.min() >= 0, k
        assert energy_of(profile, steps) == pytest.approx(energy, rel=1e-12)


def test_more_than_a_day_of_charging_is_capped_at_24_hours() -> None:
    profile = F.build_profile(np.array([7.2, 3.0]), np.array([100.0, 1.4 * 24]), 1.4, 96)
    np.testing.assert_allclose(profile, np.full(96, 2.8), rtol=1e-12)


@pytest.mark.parametrize("steps", [96, 1440])
def test_profile_energy_equals_sampled_energy(steps: int) -> None:
    rng = np.random.default_rng(5)
    starts = rng.uniform(0, 24, 50_000)
    starts[:1000] = rng.uniform(23.5, 24, 1000)  # many wrap past midnight
    energy = rng.uniform(0, 75, 50_000)
    profile = F.build_profile(starts, energy, 6.6, steps)
    assert energy_of(profile, steps) == pytest.approx(energy.sum(), rel=1e-9)
    assert profile.min() >= 0


def test_1440_to_96_averaging_conserves_energy() -> None:
    rng = np.random.default_rng(6)
    fine = F.build_profile(rng.uniform(0, 24, 5000), rng.uniform(0, 40, 5000), 1.4, 1440)
    coarse = F.to_96(fine)
    assert coarse.shape == (96,)
    assert energy_of(coarse, 96) == pytest.approx(energy_of(fine, 1440), rel=1e-12)
    assert coarse[0] == pytest.approx(fine[:15].mean())
    table = F.to_96(np.column_stack([fine, 2 * fine]))
    np.testing.assert_allclose(table[:, 1], 2 * coarse)
    with pytest.raises(ValueError, match="expected 1440 steps"):
        F.to_96(coarse)


@pytest.mark.parametrize("steps", [96, 1440])
@pytest.mark.parametrize("rate", [1.4, 6.6, 150.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_equals_per_vehicle_loops(steps: int, rate: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    starts = rng.uniform(0, 24, n)
    energy = rng.uniform(0, 80, n)
    energy[:5] = [0.0, rate / (steps / 24), 2 * rate / (steps / 24), rate * 24, rate * 30]
    starts[:3] = [0.0, 23.999999999, 12.0]
    fast = F.build_profile(starts, energy, rate, steps)
    np.testing.assert_allclose(fast, loop_profile(starts, energy, rate, steps), atol=1e-8)
    np.testing.assert_allclose(
        fast, F.per_vehicle_loop_profile(starts, energy, rate, steps), atol=1e-8
    )


def test_vectorised_is_much_faster_than_the_loop() -> None:
    rng = np.random.default_rng(7)
    starts, energy = rng.uniform(0, 24, 3000), rng.uniform(0, 75, 3000)
    t0 = time.perf_counter()
    F.per_vehicle_loop_profile(starts, energy, 6.6, 1440)
    loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(10):
        F.build_profile(starts, energy, 6.6, 1440)
    vectorised = (time.perf_counter() - t0) / 10
    assert loop / vectorised >= 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros(2), np.zeros(3), 6.6, 96), "vectors of one length"),
        ((np.zeros(2), np.array([1.0, -1.0]), 6.6, 96), "energy_kwh finite and >= 0"),
        ((np.array([np.nan]), np.ones(1), 6.6, 96), "start_hours must be finite"),
        ((np.zeros(1), np.ones(1), 0.0, 96), "rate_kw must be positive"),
        ((np.zeros(1), np.ones(1), 6.6, 100), "positive multiple of 24"),
    ],
)
def test_build_profile_rejects_bad_input(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        F.build_profile(*args)


# --------------------------------------------------------------------------- forecast


def run(**params: Any) -> F.ForecastResult:
    control = IDENTITY if params.get("work_control", "none") != "none" else None
    return F.forecast({"num_evs": 20_000, **params}, MODELS, None, control)


def test_forecast_columns_and_totals() -> None:
    result = run()
    assert F.COLUMNS == (
        "Residential L1",
        "Residential L2",
        "Residential MUD",
        "Work",
        "Fast",
        "Public L2",
        "Total",
    )
    assert result.uncontrolled.shape == (1440, 7)
    assert result.uncontrolled_96.shape == (96, 7)
    np.testing.assert_allclose(result.uncontrolled[:, 6], result.uncontrolled[:, :6].sum(axis=1))
    np.testing.assert_allclose(result.uncontrolled_96, F.to_96(result.uncontrolled))
    assert result.controlled is None
    assert result.controlled_96 is None
    assert result.vehicles == F.vehicle_counts({"num_evs": 20_000})


def test_forecast_energy_is_conserved_per_segment() -> None:
    result = run(publicl2_percent=0.05)
    for segment in F.SEGMENTS:
        column = F.COLUMNS.index(segment.column)
        delivered = result.delivered_kwh[segment.label]
        assert energy_of(result.uncontrolled[:, column], 1440) == pytest.approx(delivered, rel=1e-9)
        assert energy_of(result.uncontrolled_96[:, column], 96) == pytest.approx(
            delivered, rel=1e-9
        )
        assert result.sampled_kwh[segment.label] >= delivered
        assert result.vehicles[segment.label] > 0
    # Home L1 at 1.4 kW with energies up to 40 kWh: some need more than 24 h and are capped.
    assert result.capped["Residential L1"] == 0
    heavy = dict(MODELS, **{"Residential L1": gmm(20.0, 36.0)})
    capped = F.forecast({"num_evs": 20_000}, heavy)
    assert capped.capped["Residential L1"] > 0
    assert capped.sampled_kwh["Residential L1"] > capped.delivered_kwh["Residential L1"]
    assert capped.uncontrolled[:, 0].max() <= 1.4 * capped.vehicles["Residential L1"] + 1e-6


def test_energy_clip_per_segment() -> None:
    big = {label: gmm(12.0, 200.0) for label in F.SEGMENT_LABELS}
    result = F.forecast({"num_evs": 2000, "publicl2_percent": 0.05}, big)
    for segment in F.SEGMENTS:
        n = result.vehicles[segment.label]
        assert result.sampled_kwh[segment.label] == pytest.approx(n * segment.energy_cap_kwh)


def test_forecast_is_deterministic_for_a_seed() -> None:
    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    np.testing.assert_array_equal(a.uncontrolled, b.uncontrolled)
    assert a.sampled_kwh == b.sampled_kwh
    assert not np.array_equal(a.uncontrolled, c.uncontrolled)


def test_each_segment_has_its_own_random_stream() -> None:
    base = run(publicl2_percent=0.05)
    other = run(publicl2_percent=0.05, publicl2_daily_use=0.9)
    public = F.COLUMNS.index("Public L2")
    assert base.vehicles["Public L2"] != other.vehicles["Public L2"]
    np.testing.assert_array_equal(
        np.delete(base.uncontrolled, [public, 6], axis=1),
        np.delete(other.uncontrolled, [public, 6], axis=1),
    )


def test_96_step_forecast_is_the_average_of_the_1440_step_one() -> None:
    fine, coarse = run(seed=1), run(seed=1, time_steps=96)
    assert coarse.time_steps == 96
    assert coarse.uncontrolled.shape == (96, 7)
    np.testing.assert_allclose(coarse.uncontrolled, F.to_96(fine.uncontrolled))


def test_res_l2_smooth_samples_the_l1_model() -> None:
    without_l2 = {k: v for k, v in MODELS.items() if k != "Residential L2"}
    smooth = F.forecast({"num_evs": 20_000}, without_l2)
    l2 = F.COLUMNS.index("Residential L2")
    changed_l1 = dict(without_l2, **{"Residential L1": gmm(8.0, 9.0)})
    assert not np.array_equal(
        F.forecast({"num_evs": 20_000}, changed_l1).uncontrolled[:, l2], smooth.uncontrolled[:, l2]
    )
    with pytest.raises(ValueError, match="sessions-residential-l2-weekday"):
        F.forecast({"num_evs": 20_000, "res_l2_smooth": False}, without_l2)
    rough = F.forecast({"num_evs": 20_000, "res_l2_smooth": False}, MODELS)
    assert not np.array_equal(rough.uncontrolled[:, l2], smooth.uncontrolled[:, l2])


def test_segments_without_vehicles_need_no_model() -> None:
    models = {k: v for k, v in MODELS.items() if k != "Public L2"}
    assert F.forecast({"num_evs": 1000}, models).vehicles["Public L2"] == 0


def test_model_names() -> None:
    assert F.session_model_names({"day_type": "weekend"}) == {
        "Residential L1": "sessions-residential-l1-weekend",
        "Residential MUD": "sessions-residential-mud-weekend",
        "Workplace": "sessions-workplace-weekend",
        "Public L2": "sessions-public-l2-weekend",
        "DC Fast": "sessions-dc-fast-weekend",
    }
    assert "Residential L2" in F.session_model_names({"res_l2_smooth": False})
    assert F.control_model_name({}) is None
    assert F.control_model_name({"work_control": "E19"}) == "control-santa-clara-e19"
    county = {"aggregation_level": "county", "county": "san luis obispo", "work_control": "pge-cev"}
    assert F.control_model_name(county) == "control-san-luis-obispo-pge-cev"


# --------------------------------------------------------------------------- control


@pytest.mark.parametrize("steps", [96, 1440])
def test_identity_control_gives_back_the_uncontrolled_work_column(steps: int) -> None:
    result = run(work_control="e19", time_steps=steps)
    assert result.controlled is not None
    assert result.controlled_96 is not None
    np.testing.assert_allclose(result.controlled_96, result.uncontrolled_96, rtol=1e-12, atol=1e-9)
    work = F.COLUMNS.index("Work")
    assert result.work_peak_kw == pytest.approx(result.uncontrolled_96[:, work].max())
    assert result.control_model == "control-santa-clara-e19"
    if steps == 1440:
        expected = np.repeat(result.uncontrolled_96[:, work], 15)
        np.testing.assert_allclose(result.controlled[:, work], expected, atol=1e-9)
        others = [i for i in range(6) if i != work]
        np.testing.assert_array_equal(result.controlled[:, others], result.uncontrolled[:, others])
        np.testing.assert_allclose(result.controlled[:, 6], result.controlled[:, :6].sum(axis=1))


def test_control_model_reshapes_work_and_resums_total() -> None:
    half = (0.5 * np.eye(96), np.zeros(96))
    result = F.forecast({"num_evs": 20_000, "work_control": "e19"}, MODELS, None, half)
    assert result.controlled_96 is not None
    work = F.COLUMNS.index("Work")
    np.testing.assert_allclose(
        result.controlled_96[:, work], 0.5 * result.uncontrolled_96[:, work], atol=1e-9
    )
    np.testing.assert_allclose(
        result.controlled_96[:, 6], result.controlled_96[:, :6].sum(axis=1), atol=1e-9
    )


def test_control_model_must_match_work_control() -> None:
    with pytest.raises(ValueError, match="exactly when work_control is set"):
        F.forecast({"num_evs": 100}, MODELS, None, IDENTITY)
    with pytest.raises(ValueError, match="exactly when work_control is set"):
        F.forecast({"num_evs": 100, "work_control": "e19"}, MODELS, None, None)


# --------------------------------------------------------------------------- storage form


def test_result_arrays_and_meta() -> None:
    result = run(work_control="e19", publicl2_percent=0.05)
    arrays = F.result_arrays(result)
    assert {name: a.shape for name, a in arrays.items()} == {
        "uncontrolled_96": (96, 7),
        "uncontrolled_1440": (1440, 7),
        "controlled_96": (96, 7),
        "controlled_1440": (1440, 7),
    }
    assert all(a.dtype == np.float64 for a in arrays.values())
    meta = json.loads(json.dumps(F.result_meta(result)))
    assert meta["columns"] == list(F.COLUMNS)
    assert meta["unit"] == "kW"
    assert meta["step_minutes"] == 1
    assert meta["arrays"]["controlled_1440"] == [1440, 7]
    assert meta["control_model"] == "control-santa-clara-e19"
    assert [s["segment"] for s in meta["segments"]] == list(F.SEGMENT_LABELS)
    assert meta["vehicles"] == sum(result.vehicles.values())
    assert meta["energy_kwh"] == pytest.approx(energy_of(result.uncontrolled[:, 6], 1440))
    assert meta["peak_kw"]["uncontrolled"] == pytest.approx(result.uncontrolled[:, 6].max())
    assert "controlled" in meta["peak_kw"]
    coarse = F.result_arrays(run(time_steps=96))
    assert set(coarse) == {"uncontrolled_96"}
    assert F.result_meta(run(time_steps=96))["step_minutes"] == 15
