"""Load-control training: folding intervals, sampling, LP runs, regression, determinism."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from script_ec2.control import (
    MIN_RUNS,
    ControlError,
    build_session_profiles,
    canonical_county,
    fit_control_regression,
    held_out_mask,
    load_workplace_data,
    predict_controlled,
    train_control,
)
from script_ec2.errors import DataError, UsageError
from script_ec2.ingest import ingest_file
from script_ec2.rates import Rate, load_rate
from script_ec2.synthetic import generate, load_zip_table

DATA = Path(__file__).parent / "data"
DAY = pd.Timestamp("2019-03-04")  # a Monday

Interval = tuple[str, float, float]  # (start "HH:MM[:SS]" or "+1 HH:MM", seconds, kW)


def at(text: str) -> pd.Timestamp:
    """``"08:10"`` on DAY, ``"+1 02:00"`` on the day after."""
    days = 0
    if text.startswith("+"):
        head, text = text.split(" ", 1)
        days = int(head[1:])
    return (
        DAY + pd.Timedelta(days=days) + pd.Timedelta(text + (":00" if text.count(":") == 1 else ""))
    )


def frames(
    specs: Sequence[dict[str, Any]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Session and interval tables shaped like the cache from small hand-written specs."""
    sessions, intervals = [], []
    for k, spec in enumerate(specs):
        sid = spec.get("id", 1000 + k)
        sessions.append(
            {
                "Session ID": sid,
                "start_datetime": at(spec["plug"]),
                "Session Time (secs)": spec.get("dwell_h", 1.0) * 3600.0,
                "county": spec.get("county", "Santa Clara"),
                "forecast_segment": spec.get("segment", "Workplace"),
            }
        )
        for start, seconds, kw in spec["intervals"]:
            intervals.append(
                {
                    "Session ID": sid,
                    "interval_start": at(start),
                    "Interval Duration (Secs)": float(seconds),
                    "Average Power": float(kw),
                }
            )
    return pd.DataFrame(sessions), pd.DataFrame(intervals)


def workday(k: int, start_slot: int, slots: int = 4, kw: float = 6.6) -> dict[str, Any]:
    """A session plugged in at ``start_slot`` for 8 h, charging ``slots`` full slots at ``kw``."""
    start = DAY + pd.Timedelta(minutes=15 * start_slot)
    hhmm = start.strftime("%H:%M")
    return {
        "id": 5000 + k,
        "plug": hhmm,
        "dwell_h": 8.0,
        "intervals": [
            ((start + pd.Timedelta(minutes=15 * j)).strftime("%H:%M"), 900, kw)
            for j in range(slots)
        ],
    }


# --------------------------------------------------------------------------- folding


def test_aligned_intervals_give_slot_powers_and_the_plugged_window() -> None:
    s, i = frames(
        [
            {
                "plug": "08:00",
                "dwell_h": 4,
                "intervals": [("08:00", 900, 6), ("08:15", 900, 6), ("08:30", 900, 3)],
            }
        ]
    )
    p = build_session_profiles(s, i)
    assert p.arrival.tolist() == [32] and p.length.tolist() == [16]
    assert p.uncontrolled_kw[0, 32:35].tolist() == [6, 6, 3]
    assert p.uncontrolled_kw[0].sum() == 15
    assert p.energy_kwh[0] == pytest.approx(3.75)
    assert p.max_power_kw[0] == 6
    assert not (p.multi_day[0] or p.shared_slot[0] or p.overlapping[0] or p.truncated_kwh[0])


def test_a_partial_first_slot_is_weighted_by_its_duration_share() -> None:
    s, i = frames([{"plug": "08:10", "intervals": [("08:10", 300, 6), ("08:15", 900, 6)]}])
    p = build_session_profiles(s, i)
    assert p.uncontrolled_kw[0, 32] == pytest.approx(2.0)  # 6 kW for 300 of 900 s
    assert p.uncontrolled_kw[0, 33] == pytest.approx(6.0)
    assert p.energy_kwh[0] == pytest.approx(6 * 1200 / 3600)


def test_an_unaligned_interval_is_split_over_the_slots_it_overlaps() -> None:
    s, i = frames([{"plug": "08:10", "intervals": [("08:10", 900, 4)]}])
    p = build_session_profiles(s, i)
    assert p.uncontrolled_kw[0, 32] == pytest.approx(4 * 300 / 900)
    assert p.uncontrolled_kw[0, 33] == pytest.approx(4 * 600 / 900)
    assert p.energy_kwh[0] == pytest.approx(1.0)
    assert not p.shared_slot[0]


def test_a_session_across_midnight_wraps_and_is_counted_as_multi_day() -> None:
    charging = [
        (f"{'+1 ' if h >= 24 else ''}{h % 24:02d}:{m:02d}", 900, 6.0)
        for h in range(22, 26)
        for m in (0, 15, 30, 45)
    ]
    s, i = frames([{"plug": "22:00", "dwell_h": 9, "intervals": charging}])
    p = build_session_profiles(s, i)
    assert p.multi_day.tolist() == [True]
    assert p.arrival.tolist() == [88] and p.length.tolist() == [36]
    assert np.flatnonzero(p.uncontrolled_kw[0]).tolist() == [*range(0, 8), *range(88, 96)]
    assert p.truncated_kwh[0] == 0


def test_charging_more_than_24_h_after_arrival_is_dropped_and_counted() -> None:
    s, i = frames(
        [{"plug": "08:00", "dwell_h": 30, "intervals": [("08:00", 900, 6), ("+1 09:00", 900, 6)]}]
    )
    p = build_session_profiles(s, i)
    assert p.multi_day[0]
    assert p.truncated_kwh[0] == pytest.approx(1.5)
    assert p.energy_kwh[0] == pytest.approx(1.5)
    assert p.length[0] == 96  # the plug-in period is longer than a day
    assert np.flatnonzero(p.uncontrolled_kw[0]).tolist() == [32]


def test_intervals_sharing_a_slot_add_their_energy() -> None:
    s, i = frames([{"plug": "08:00", "intervals": [("08:00", 300, 3), ("08:05", 600, 6)]}])
    p = build_session_profiles(s, i)
    assert p.shared_slot.tolist() == [True] and not p.overlapping[0]
    assert p.uncontrolled_kw[0, 32] == pytest.approx((3 * 300 + 6 * 600) / 900)


def test_intervals_overlapping_in_time_are_flagged_and_their_energy_kept() -> None:
    s, i = frames([{"plug": "08:00", "intervals": [("08:00", 900, 6), ("08:10", 900, 6)]}])
    p = build_session_profiles(s, i)
    assert p.overlapping.tolist() == [True] and p.shared_slot[0]
    assert p.energy_kwh[0] == pytest.approx(3.0)  # both meters' energy, nothing overwritten
    assert p.uncontrolled_kw[0, 32] == pytest.approx(6 + 6 * 300 / 900)


def test_window_modes_plugged_and_charging() -> None:
    spec = {"plug": "07:00", "dwell_h": 10, "intervals": [("08:00", 900, 6), ("08:45", 900, 6)]}
    s, i = frames([spec])
    plugged = build_session_profiles(s, i, window="plugged")
    assert (plugged.arrival[0], plugged.length[0]) == (28, 40)
    charging = build_session_profiles(s, i, window="charging")
    assert (charging.arrival[0], charging.length[0]) == (32, 4)  # 08:00 to 09:00, gap included
    assert np.array_equal(plugged.uncontrolled_kw, charging.uncontrolled_kw)
    with pytest.raises(UsageError, match="window must be one of plugged, charging"):
        build_session_profiles(s, i, window="dwell")  # type: ignore[arg-type]


def test_charging_before_the_plug_in_time_starts_the_window_at_the_charging() -> None:
    s, i = frames([{"plug": "09:00", "dwell_h": 1, "intervals": [("08:30", 900, 6)]}])
    p = build_session_profiles(s, i)
    assert p.arrival[0] == 34
    assert p.length[0] == 6  # to the end of the plug-in period at 10:00


def test_profiles_feed_the_lp_with_the_charge_rate_as_minimum_cap() -> None:
    s, i = frames(
        [
            {"plug": "08:00", "intervals": [("08:00", 900, 3.3)]},
            {"plug": "08:00", "intervals": [("08:00", 900, 9.0)]},
        ]
    )
    sessions = build_session_profiles(s, i).charging_sessions(np.array([0, 1]), 6.6)
    assert sessions.power_cap_kw.tolist() == [6.6, 9.0]


# --------------------------------------------------------------------------- regression


def test_predict_controlled_is_vectorised_and_scale_equivariant() -> None:
    rng = np.random.default_rng(1)
    coef, intercept = rng.normal(size=(96, 96)) / 96, rng.normal(size=96) / 10
    x = rng.uniform(0, 100, size=(5, 96))
    rows = predict_controlled(coef, intercept, x)
    assert rows.shape == (5, 96)
    for k in range(5):
        assert np.allclose(rows[k], predict_controlled(coef, intercept, x[k]))
        m = x[k].max()
        assert np.allclose(rows[k], m * (coef @ (x[k] / m) + intercept))
    assert np.allclose(predict_controlled(coef, intercept, 3 * x), 3 * rows)
    assert not predict_controlled(coef, intercept, np.zeros(96)).any()
    with pytest.raises(ValueError):
        predict_controlled(coef, intercept, np.zeros(95))


def test_held_out_mask_sizes() -> None:
    rng = np.random.default_rng(0)
    assert held_out_mask(50, rng).sum() == 10
    assert held_out_mask(5, rng).sum() == 1
    assert held_out_mask(3, rng).sum() == 1
    with pytest.raises(ValueError):
        held_out_mask(2, rng)


def test_regression_on_the_santa_clara_profiles_learns_peak_shaving() -> None:
    # The four upstream (uncontrolled, controlled) E-19 pairs, 200 sessions each (spec §3.1).
    u = np.load(DATA / "santa_clara_uncontrolled_profiles.npy").T
    c = np.load(DATA / "santa_clara_controlled_profiles.npy").T
    assert u.shape == c.shape == (4, 96)
    for k in range(4):  # leave one out: fit on three, predict the fourth
        test = np.arange(4) == k
        fit = fit_control_regression(u, c, test_mask=test)
        assert fit.coef.shape == (96, 96) and fit.intercept.shape == (96,)
        predicted = predict_controlled(fit.coef, fit.intercept, u[k])
        assert predicted.max() < 0.8 * u[k].max()  # the peak is shaved...
        # ...to near the LP's controlled peak, far nearer than the uncontrolled peak is.
        assert abs(predicted.max() - c[k].max()) < 0.35 * abs(u[k].max() - c[k].max())
        assert fit.metrics["peak_mape_pct"] < 25
        assert fit.metrics["energy_mape_pct"] < 30
        assert fit.metrics["r2"] is None  # one held-out profile has no R²
    everything = fit_control_regression(
        np.vstack([u, u * 1.1, u * 0.9]),
        np.vstack([c, c * 1.1, c * 0.9]),
        test_mask=np.isin(np.arange(12), [0, 5, 10]),
    )
    # Each held-out profile is a scaled copy of a training one: max-normalisation sees through.
    assert everything.metrics["r2"] > 0.99
    assert everything.metrics["peak_mape_pct"] < 1


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """A small synthetic cache: one zip per county, one month (≈1,400 Santa Clara sessions)."""
    root = tmp_path_factory.mktemp("control")
    summary = generate(
        root / "raw",
        sessions=6000,
        seed=3,
        start_date=date(2019, 3, 1),
        end_date=date(2019, 4, 1),
        zips_per_county=1,
    )
    zip_to_county = {f"{z.zip_code:05d}": z.county for z in load_zip_table()}
    for f in summary.files:
        if f.kind in ("sessions", "intervals"):
            ingest_file(
                root / "raw" / f.name,
                kind=f.kind,  # type: ignore[arg-type]
                key=f.name,
                zip_to_county=zip_to_county,
                out_dir=root / "cache",
                stem=f.name.removesuffix(".csv"),
            )
    objects = root / "cache"
    return sorted(objects.glob("*_sessions.parquet")), sorted(objects.glob("*_intervals.parquet"))


@pytest.fixture(scope="module")
def santa_clara(cache: tuple[list[Path], list[Path]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_workplace_data(*cache, "santa clara county")


def test_load_workplace_data_reads_one_county_and_segment(
    cache: tuple[list[Path], list[Path]], santa_clara: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    sessions, intervals = santa_clara
    assert len(sessions) > 1000
    assert set(sessions["county"]) == {"Santa Clara"}
    assert set(sessions["forecast_segment"]) == {"Workplace"}
    assert list(sessions.columns) == [
        "Session ID",
        "start_datetime",
        "Session Time (secs)",
        "county",
        "forecast_segment",
    ]
    assert list(intervals.columns) == [
        "Session ID",
        "interval_start",
        "Interval Duration (Secs)",
        "Average Power",
        "county",
    ]
    assert set(intervals["Session ID"]) <= set(sessions["Session ID"])
    assert intervals["Session ID"].nunique() == len(sessions)
    other, _ = load_workplace_data(*cache, "Marin")
    assert set(other["county"]) == {"Marin"} and not set(other["Session ID"]) & set(
        sessions["Session ID"]
    )
    empty_s, empty_i = load_workplace_data([], [], "Santa Clara")
    assert empty_s.empty and empty_i.empty


def test_canonical_county() -> None:
    assert canonical_county("  santa   CLARA county ") == "Santa Clara"
    assert canonical_county("Contra Costa") == "Contra Costa"


def small_run(santa_clara: tuple[pd.DataFrame, pd.DataFrame], **options: Any) -> Any:
    settings: dict[str, Any] = {
        "county": "Santa Clara",
        "rate": load_rate("e19"),
        "runs": 8,
        "sessions_per_run": 40,
        "seed": 0,
    }
    return train_control(*santa_clara, **(settings | options))


def test_train_control_produces_profiles_model_and_metrics(
    santa_clara: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    seen: list[tuple[int, int]] = []
    result = small_run(santa_clara, progress=lambda done, total: seen.append((done, total)))
    a = result.arrays
    assert a["coef"].shape == (96, 96) and a["intercept"].shape == (96,)
    assert a["alpha"].shape == () and float(a["alpha"]) == result.metrics["alpha"]
    assert a["uncontrolled"].shape == a["controlled"].shape == (8, 96)
    assert a["run_index"].tolist() == list(range(8))
    assert a["held_out"].sum() == 2
    assert seen == [(k, 8) for k in range(1, 9)]
    # The LP moves energy, never creates or loses it (no session is clipped here).
    assert result.metrics["clipped_sessions"] == 0
    assert np.allclose(a["controlled"].sum(axis=1), a["uncontrolled"].sum(axis=1), atol=1e-5)
    assert (a["controlled"].max(axis=1) < a["uncontrolled"].max(axis=1)).all()
    m = result.metrics
    assert m["lp_cost_min"] <= m["lp_cost_mean"] <= m["lp_cost_max"] < m["uncontrolled_cost_mean"]
    assert m["runs_solved"] == 8 and m["failed_runs"] == []
    assert m["pool_sessions"] == len(santa_clara[0])
    for key in (
        "r2",
        "peak_mape_pct",
        "energy_mape_pct",
        "multi_day_sessions",
        "truncated_sessions",
        "shared_slot_sessions",
        "overlapping_interval_sessions",
    ):
        assert key in m
    assert m["peak_mape_pct"] < 25
    # The registry stores both as JSON.
    assert json.loads(json.dumps(m)) == m
    p = result.params
    assert json.loads(json.dumps(p)) == p
    assert p["rate"] == load_rate("e19").to_json()
    assert (p["runs"], p["sessions_per_run"], p["seed"], p["charge_rate_kw"]) == (8, 40, 0, 6.6)
    assert p["county"] == "Santa Clara" and p["window"] == "plugged"
    assert np.allclose(
        result.predict(a["uncontrolled"][0]),
        predict_controlled(a["coef"], a["intercept"], a["uncontrolled"][0]),
    )


def test_same_seed_gives_byte_identical_models_for_any_n_jobs(
    santa_clara: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    serial = small_run(santa_clara, n_jobs=1)
    again = small_run(santa_clara, n_jobs=1)
    parallel = small_run(santa_clara, n_jobs=2)
    for name, array in serial.arrays.items():
        assert array.tobytes() == again.arrays[name].tobytes(), name
        assert array.tobytes() == parallel.arrays[name].tobytes(), name
    assert serial.metrics == parallel.metrics
    other = small_run(santa_clara, seed=1)
    assert other.arrays["coef"].tobytes() != serial.arrays["coef"].tobytes()


def test_sessions_are_drawn_without_replacement_within_a_run() -> None:
    # Exactly as many sessions as one run needs: every run holds each of them once.
    specs = [workday(k, 30 + k % 8) for k in range(12)]
    sessions, intervals = frames(specs)
    result = train_control(
        sessions,
        intervals,
        county="Santa Clara",
        rate=load_rate("minpeak"),
        runs=5,
        sessions_per_run=12,
    )
    expected = 0.25 * sum(4 * 6.6 for _ in specs)
    assert np.allclose(0.25 * result.arrays["uncontrolled"].sum(axis=1), expected)
    assert np.allclose(result.arrays["uncontrolled"], result.arrays["uncontrolled"][0])


def test_folding_counts_reach_the_run_statistics() -> None:
    specs = [workday(k, 32) for k in range(8)]
    midnight = [(f"{'+1 ' if h >= 24 else ''}{h % 24:02d}:00", 900, 6.6) for h in (23, 24)]
    specs.append({"id": 9001, "plug": "23:00", "dwell_h": 3, "intervals": midnight})
    specs.append(
        {
            "id": 9002,
            "plug": "08:00",
            "dwell_h": 30,
            "intervals": [("08:00", 900, 6.6), ("+1 09:00", 900, 6.6)],
        }
    )
    specs.append(
        {
            "id": 9003,
            "plug": "08:00",
            "dwell_h": 2,
            "intervals": [("08:00", 900, 6.6), ("08:05", 600, 3.0)],
        }
    )
    specs.append({"id": 9004, "plug": "08:00", "segment": None, "intervals": [("08:00", 900, 6)]})
    specs.append({"id": 9005, "plug": "08:00", "county": "Marin", "intervals": [("08:00", 900, 6)]})
    sessions, intervals = frames(specs)
    result = train_control(
        sessions,
        intervals,
        county="Santa Clara",
        rate=load_rate("e19"),
        runs=5,
        sessions_per_run=11,
    )
    m = result.metrics
    assert m["pool_sessions"] == 11  # not the unsegmented one, not Marin's
    assert m["multi_day_sessions"] == 5 * 2
    assert m["truncated_sessions"] == 5 and m["truncated_energy_kwh"] == pytest.approx(5 * 1.65)
    assert m["shared_slot_sessions"] == 5 and m["overlapping_interval_sessions"] == 5


def test_failed_runs_are_skipped_and_counted(
    santa_clara: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    # The lowest peak each run can reach, then a cap between the 6th and 7th of those.
    lowest = small_run(santa_clara, rate=load_rate("minpeak"), runs=12)
    peaks = np.sort(lowest.arrays["controlled"].max(axis=1))
    cap = float(peaks[5] + peaks[6]) / 2
    capped = Rate("cap-test", np.zeros(96), cap_kw=cap)
    result = small_run(santa_clara, rate=capped, runs=12)
    feasible = lowest.arrays["run_index"][lowest.arrays["controlled"].max(axis=1) <= cap]
    assert result.arrays["run_index"].tolist() == sorted(feasible.tolist())
    assert result.metrics["runs_solved"] == 6
    failed = result.metrics["failed_runs"]
    assert sorted(f["run"] for f in failed) == sorted(set(range(12)) - set(feasible.tolist()))
    assert {f["status"] for f in failed} == {2}
    assert all(f"run {f['run']} failed: infeasible" in f["message"] for f in failed)
    assert (result.arrays["controlled"].max(axis=1) <= cap + 1e-6).all()


def test_too_few_solved_runs_raise_control_error(
    santa_clara: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.raises(ControlError) as info:
        small_run(santa_clara, rate=Rate("tiny", np.zeros(96), cap_kw=1.0))
    assert info.value.run == 0 and info.value.status == 2
    assert str(info.value).startswith(f"only 0 of 8 load-control runs solved (at least {MIN_RUNS}")


def test_bad_requests_are_usage_errors(santa_clara: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    with pytest.raises(
        UsageError, match=r"no workplace sessions for county 'Atlantis'.*Santa Clara"
    ):
        small_run(santa_clara, county="Atlantis")
    with pytest.raises(
        UsageError,
        match=r"has \d+ workplace sessions with intervals in the cache, "
        r"fewer than the 100000 sessions per run",
    ):
        small_run(santa_clara, sessions_per_run=100_000)
    with pytest.raises(UsageError, match="runs must be at least 5"):
        small_run(santa_clara, runs=4)
    with pytest.raises(UsageError, match="sessions per run must be at least 1"):
        small_run(santa_clara, sessions_per_run=0)
    with pytest.raises(UsageError, match="charge rate"):
        small_run(santa_clara, charge_rate_kw=0.0)
    with pytest.raises(UsageError, match="n_jobs"):
        small_run(santa_clara, n_jobs=0)
    for error in (UsageError("x"),):
        assert error.exit_code == 2


def test_missing_columns_are_data_errors(santa_clara: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    sessions, intervals = santa_clara
    with pytest.raises(DataError, match="the sessions table lacks column\\(s\\) 'start_datetime'"):
        train_control(
            sessions.drop(columns="start_datetime"),
            intervals,
            county="Santa Clara",
            rate=load_rate(),
        )
    with pytest.raises(DataError, match="the intervals table lacks column\\(s\\) 'Average Power'"):
        train_control(
            sessions,
            intervals.drop(columns="Average Power"),
            county="Santa Clara",
            rate=load_rate(),
        )


def test_duplicates_and_sessions_without_intervals_are_counted_not_used() -> None:
    specs = [workday(k, 32) for k in range(6)]
    specs.append({"id": 7777, "plug": "08:00", "intervals": []})  # no intervals at all
    sessions, intervals = frames(specs)
    sessions = pd.concat([sessions, sessions.iloc[[0]]], ignore_index=True)  # a repeated session
    intervals = pd.concat([intervals, intervals.iloc[[0, 1]]], ignore_index=True)
    result = train_control(
        sessions,
        intervals,
        county="Santa Clara",
        rate=load_rate("e19"),
        runs=5,
        sessions_per_run=6,
    )
    m = result.metrics
    assert (m["workplace_sessions"], m["duplicate_sessions"]) == (8, 1)
    assert m["sessions_without_intervals"] == 1 and m["duplicate_interval_rows"] == 2
    assert m["pool_sessions"] == 6
    # Each of the six sessions charges 4 slots at 6.6 kW once, duplicates notwithstanding.
    assert np.allclose(0.25 * result.arrays["uncontrolled"].sum(axis=1), 6 * 4 * 0.25 * 6.6)


def test_charging_windows_leave_less_room_than_plugged_ones(
    santa_clara: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    plugged = small_run(santa_clara, rate=load_rate("minpeak"))
    charging = small_run(santa_clara, rate=load_rate("minpeak"), window="charging")
    assert charging.params["window"] == "charging"
    assert np.array_equal(plugged.arrays["uncontrolled"], charging.arrays["uncontrolled"])
    # A longer window can only lower the lowest reachable peak.
    assert (
        plugged.arrays["controlled"].max(axis=1) <= charging.arrays["controlled"].max(axis=1) + 1e-6
    ).all()
