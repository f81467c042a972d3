"""The synthetic data generator and ``script-ec2 demo``: shape, determinism, behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from script_ec2.errors import UsageError
from script_ec2.synthetic import (
    BAY_AREA_COUNTIES,
    EV_DISTRIBUTION_FILE,
    INTERVAL_COLUMNS,
    SESSION_COLUMNS,
    generate,
    load_zip_table,
)

SPEC_SESSION_HEADER = [
    "Session ID",
    "Station ID",
    "Port ID",
    "Connector Type",
    "POI Category",
    "POI Subcategory",
    "Session Time Zone",
    "Session Time (secs)",
    "Charging Time (secs)",
    "Start SoC",
    "End SoC",
    "Full Charge",
    "Energy (kWh)",
    "Driver ID",
    "Driver Zip",
    "Vehicle Make",
    "Vehicle Model",
    "Battery Capacity",
    "EV Type",
    "$ Fee",
    "Fee Currency",
    "Zip Code",
    "City",
    "County",
    "State",
    "Country",
    "Driver City",
    "Driver State",
    "Driver Country",
    "Max Power",
    "Session Type",
    "Vehicle Model Year",
    "start_datetime",
    "start_seconds",
    "start_year",
    "start_month",
    "start_day",
    "start_weekday",
]
SPEC_INTERVAL_HEADER = [
    "Interval ID",
    "Session ID",
    "Interval Start Time (Local)",
    "Interval Duration (Secs)",
    "Interval Energy",
    "Peak Power",
    "Average Power",
]
BAY_AREA = {
    "Alameda",
    "Contra Costa",
    "Marin",
    "Napa",
    "San Francisco",
    "San Mateo",
    "Santa Clara",
    "Solano",
    "Sonoma",
}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _read(folder: Path, suffix: str) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(folder.glob(f"evsezip*_{suffix}.csv"))])


def _invariant_problems(sessions: pd.DataFrame, intervals: pd.DataFrame) -> list[str]:
    """Every session/interval agreement rule; an empty list when the data are consistent."""
    problems = []
    per = intervals.groupby("Session ID").agg(
        energy=("Interval Energy", "sum"),
        n=("Interval Energy", "size"),
        seconds=("Interval Duration (Secs)", "sum"),
    )
    s = sessions.set_index("Session ID").join(per)
    if s["n"].isna().any():
        problems.append("a session has no interval")
    if not (abs(s["energy"] - s["Energy (kWh)"]) <= 0.0001 * s["n"] + 1e-9).all():
        problems.append("interval energy does not sum to session energy")
    if not (s["seconds"] == s["Charging Time (secs)"]).all():
        problems.append("interval durations do not sum to the charging time")
    j = intervals.merge(sessions[["Session ID", "Max Power"]], on="Session ID")
    computed = j["Interval Energy"] / j["Interval Duration (Secs)"] * 3600
    if not (computed <= j["Max Power"] + 1e-9).all():
        problems.append("interval energy / duration exceeds Max Power")
    if not (j["Average Power"] <= j["Max Power"]).all():
        problems.append("Average Power exceeds Max Power")
    if not ((j["Peak Power"] >= j["Average Power"]) & (j["Peak Power"] <= j["Max Power"])).all():
        problems.append("Peak Power outside [Average Power, Max Power]")
    if not ((j["Interval Energy"] > 0) & (j["Interval Duration (Secs)"] >= 1)).all():
        problems.append("an interval the cleaning would drop")
    if not (sessions["Energy (kWh)"] <= sessions["Battery Capacity"]).all():
        problems.append("energy above battery capacity")
    if not ((sessions["Energy (kWh)"] >= 0.1) & (sessions["Session Time (secs)"] >= 120)).all():
        problems.append("a session the cleaning would drop")
    if not (sessions["Charging Time (secs)"] <= sessions["Session Time (secs)"]).all():
        problems.append("charging longer than the session")
    return problems


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("synthetic")
    summary = generate(folder, sessions=20_000, seed=7)
    return folder, summary


@pytest.fixture(scope="module")
def sessions(dataset: tuple[Path, Any]) -> pd.DataFrame:
    return _read(dataset[0], "sessions")


@pytest.fixture(scope="module")
def intervals(dataset: tuple[Path, Any]) -> pd.DataFrame:
    return _read(dataset[0], "intervals")


def _segment(df: pd.DataFrame) -> pd.Series:
    cat = df["POI Category"]
    power = df["Max Power"]
    return pd.Series(
        np.select(
            [
                power >= 20,
                cat.str.startswith("Multifamily") & (power > 2),
                (cat == "Workplace") & (power > 2),
            ],
            ["dc", "multifamily", "workplace"],
            "other",
        ),
        index=df.index,
    )


# --- shape -------------------------------------------------------------------------------------


def test_headers_are_exactly_the_cleaned_export_headers(dataset: tuple[Path, Any]) -> None:
    folder, summary = dataset
    assert list(SESSION_COLUMNS) == SPEC_SESSION_HEADER
    assert list(INTERVAL_COLUMNS) == SPEC_INTERVAL_HEADER
    session_files = sorted(folder.glob("evsezip*_sessions.csv"))
    assert len(session_files) == len(summary.zips) == 54
    for path in session_files:
        interval_path = path.with_name(path.name.replace("_sessions", "_intervals"))
        assert path.open().readline().rstrip("\n").split(",") == SPEC_SESSION_HEADER
        assert interval_path.open().readline().rstrip("\n").split(",") == SPEC_INTERVAL_HEADER


def test_summary_matches_the_files(dataset: tuple[Path, Any], sessions: pd.DataFrame) -> None:
    folder, summary = dataset
    assert summary.sessions == len(sessions) == 20_000
    assert {f.name for f in summary.files} == {p.name for p in folder.iterdir()}
    for f in summary.files:
        assert (folder / f.name).stat().st_size == f.size
    counts = sessions["County"].str.removesuffix(" County").value_counts().to_dict()
    assert {k: v for k, v in summary.county_sessions.items() if v} == counts
    assert sum(r["sessions"] for r in summary.county_rows()) == 20_000
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")]


def test_fixed_values_and_derived_start_columns(sessions: pd.DataFrame) -> None:
    assert set(sessions["Fee Currency"]) == {"USD"}
    assert set(sessions["Driver Country"]) == {"United States"}
    assert set(sessions["Country"]) == {"United States"}
    start = pd.to_datetime(sessions["start_datetime"], format="%Y-%m-%d %H:%M:%S")
    assert (
        sessions["start_seconds"] == start.dt.hour * 3600 + start.dt.minute * 60 + start.dt.second
    ).all()
    assert (sessions["start_year"] == start.dt.year).all()
    assert (sessions["start_month"] == start.dt.month).all()
    assert (sessions["start_day"] == start.dt.day_of_year).all()
    assert (sessions["start_weekday"] == start.dt.day_of_week).all()
    assert start.min() >= pd.Timestamp("2017-01-01") and start.max() < pd.Timestamp("2020-01-01")
    summer = sessions[start.dt.month == 7]
    winter = sessions[start.dt.month == 1]
    assert set(summer["Session Time Zone"]) == {"PDT"} and set(winter["Session Time Zone"]) == {
        "PST"
    }
    by_year = sessions["start_year"].value_counts()
    assert by_year[2017] < by_year[2018] < by_year[2019]


def test_zips_are_in_the_nine_bay_area_counties(sessions: pd.DataFrame) -> None:
    assert set(BAY_AREA_COUNTIES) == BAY_AREA
    county_of = {z.zip_code: z.county for z in load_zip_table()}
    assert len(county_of) == 2657
    for zip_code, county in sessions.groupby("Zip Code")["County"].first().items():
        assert county_of[int(zip_code)] in BAY_AREA
        assert county == f"{county_of[int(zip_code)]} County"
    assert set(sessions["County"].str.removesuffix(" County")) == BAY_AREA
    assert sessions["Driver Zip"].map(county_of).isin(BAY_AREA).all()


def test_stations_are_stable(sessions: pd.DataFrame) -> None:
    per_station = sessions.groupby("Station ID")[
        ["Zip Code", "POI Category", "POI Subcategory", "Max Power", "Connector Type"]
    ].nunique()
    assert (per_station == 1).all().all()
    assert (sessions.groupby("Zip Code")["Station ID"].nunique() >= 3).all()


def test_ids_are_unique(sessions: pd.DataFrame, intervals: pd.DataFrame) -> None:
    assert sessions["Session ID"].is_unique
    assert intervals["Interval ID"].is_unique
    assert set(intervals["Session ID"]) == set(sessions["Session ID"])


def test_ev_distribution_lists_every_california_county(dataset: tuple[Path, Any]) -> None:
    folder, _ = dataset
    df = pd.read_csv(folder / EV_DISTRIBUTION_FILE)
    assert list(df.columns) == ["County", "EVs"]
    assert len(df) == 58 and df["County"].is_unique
    assert set(df["County"]) == {z.county for z in load_zip_table()}
    assert df["EVs"].dtype.kind == "i" and (df["EVs"] > 0).all()
    bay = df[df["County"].isin(BAY_AREA)]["EVs"]
    assert bay.min() > df[~df["County"].isin(BAY_AREA)]["EVs"].median()


# --- sessions and intervals agree ---------------------------------------------------------------


def test_intervals_agree_with_their_sessions(
    sessions: pd.DataFrame, intervals: pd.DataFrame
) -> None:
    assert _invariant_problems(sessions, intervals) == []


def test_intervals_are_clock_aligned_quarter_hours(
    sessions: pd.DataFrame, intervals: pd.DataFrame
) -> None:
    iv = intervals.sort_values(["Session ID", "Interval ID"]).reset_index(drop=True)
    start = pd.to_datetime(iv["Interval Start Time (Local)"], format="%Y-%m-%d %H:%M:%S")
    duration = iv["Interval Duration (Secs)"]
    first = ~iv["Session ID"].duplicated()
    last = ~iv["Session ID"].duplicated(keep="last")
    by_id = sessions.set_index("Session ID")
    session_start = pd.to_datetime(iv["Session ID"].map(by_id["start_datetime"]))
    charging = iv["Session ID"].map(by_id["Charging Time (secs)"])

    # The first interval starts with the session and is partial: it ends at the next quarter hour
    # (or earlier, when charging stops first).
    assert (start[first] == session_start[first]).all()
    to_quarter = 900 - (start.dt.minute * 60 + start.dt.second) % 900
    assert (duration[first] == np.minimum(to_quarter, charging)[first]).all()
    assert (duration[first] < 900).mean() > 0.99
    # Each later interval starts on the quarter hour that follows the previous one's start.
    previous_quarter = start.shift(1).dt.floor("15min")
    assert (start[~first] == previous_quarter[~first] + pd.Timedelta(minutes=15)).all()
    # Whole slots in the middle; the last is partial where charging ends.
    assert (duration[~first & ~last] == 900).all()
    assert (duration[last & ~first] <= 900).all() and (duration[last & ~first] < 900).any()
    # Charging that runs past midnight puts intervals on the next day.
    assert (start.dt.normalize() > session_start.dt.normalize()).any()


def test_energy_never_exceeds_battery_or_power(sessions: pd.DataFrame) -> None:
    assert (sessions["Energy (kWh)"] <= sessions["Battery Capacity"]).all()
    hours = sessions["Charging Time (secs)"] / 3600
    assert (sessions["Energy (kWh)"] <= sessions["Max Power"] * hours + 1e-9).all()
    dc = sessions["Max Power"] >= 20
    assert (
        sessions.loc[dc, "Start SoC"].notna().all() and sessions.loc[~dc, "Start SoC"].isna().all()
    )
    assert (sessions.loc[dc, "End SoC"] <= 100).all()
    assert (sessions.loc[dc, "End SoC"] > sessions.loc[dc, "Start SoC"]).all()


# --- behaviour -----------------------------------------------------------------------------------


def test_workplace_sessions_arrive_on_weekday_mornings_and_stay_long(
    sessions: pd.DataFrame,
) -> None:
    seg = _segment(sessions)
    weekday = sessions["start_weekday"] < 5
    wp = sessions[(seg == "workplace") & weekday]
    assert 7 <= (wp["start_seconds"] / 3600).mean() <= 10
    assert (wp["Session Time (secs)"] / 3600).mean() > 6
    assert (seg == "workplace").mean() > 0.6


def test_multifamily_sessions_arrive_in_the_evening_and_stay_overnight(
    sessions: pd.DataFrame,
) -> None:
    seg = _segment(sessions)
    mf = sessions[(seg == "multifamily") & (sessions["start_weekday"] < 5)]
    assert 17 <= (mf["start_seconds"] / 3600).mean() <= 21
    ends = mf["start_seconds"] + mf["Session Time (secs)"]
    assert (ends > 86400).mean() > 0.8


def test_dc_fast_sessions_are_short_and_powerful(sessions: pd.DataFrame) -> None:
    dc = sessions[_segment(sessions) == "dc"]
    assert len(dc) > 100
    assert set(dc["Connector Type"]) == {"CHAdeMO", "Combo"}
    assert (dc["Session Time (secs)"] < 3600).all()
    power = dc["Energy (kWh)"] / (dc["Charging Time (secs)"] / 3600)
    assert (power > 20).all()


def test_public_sessions_sit_around_midday(sessions: pd.DataFrame) -> None:
    public = sessions[(_segment(sessions) == "other") & (sessions["Max Power"] > 2)]
    assert 10 <= (public["start_seconds"] / 3600).mean() <= 15
    assert 1 <= (public["Session Time (secs)"] / 3600).mean() <= 3
    l1 = sessions["Max Power"] < 2
    assert 0 < l1.mean() < 0.1


def test_weekends_have_a_smaller_workplace_share(sessions: pd.DataFrame) -> None:
    seg = _segment(sessions)
    weekend = sessions["start_weekday"] >= 5
    weekday_share = (seg[~weekend] == "workplace").mean()
    weekend_share = (seg[weekend] == "workplace").mean()
    assert weekend_share < weekday_share - 0.3
    per_day = sessions.groupby(weekend)["start_day"].size() / np.array([5, 2])
    assert per_day[True] < per_day[False]


# --- determinism and chunking -------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate(tmp_path / name, sessions=1500, seed=seed, zips_per_county=2)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.startswith("evsezip"))


def test_chunk_size_does_not_change_the_bytes(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path / "small",
        sessions=3000,
        seed=5,
        zips_per_county=2,
        chunk_sessions=17,
        progress=lambda done, total: calls.append((done, total)),
    )
    generate(tmp_path / "large", sessions=3000, seed=5, zips_per_county=2, chunk_sessions=10**6)
    assert _files(tmp_path / "small") == _files(tmp_path / "large")
    # Many chunks really were written, and progress rose to the total.
    assert len(calls) > 100
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (3000, 3000)


def test_fewer_sessions_than_zips_still_writes_every_file(tmp_path: Path) -> None:
    summary = generate(tmp_path, sessions=3, seed=1, zips_per_county=1)
    assert len(summary.zips) == 9
    sessions = _read(tmp_path, "sessions")
    assert len(sessions) == 3
    assert _invariant_problems(sessions, _read(tmp_path, "intervals")) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sessions": 0}, "at least 1"),
        ({"sessions": 5, "start_date": date(2019, 1, 1), "end_date": date(2019, 1, 1)}, "before"),
    ],
)
def test_generate_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        generate(tmp_path, seed=1, **kwargs)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    start=st.dates(date(2015, 1, 1), date(2024, 12, 1)),
    days=st.integers(1, 400),
)
def test_every_generation_is_consistent(
    tmp_path_factory: pytest.TempPathFactory, seed: int, n: int, start: date, days: int
) -> None:
    folder = tmp_path_factory.mktemp("prop")
    end = date.fromordinal(start.toordinal() + days)
    generate(folder, sessions=n, seed=seed, start_date=start, end_date=end, zips_per_county=1)
    sessions = _read(folder, "sessions")
    assert len(sessions) == n
    assert _invariant_problems(sessions, _read(folder, "intervals")) == []
    starts = pd.to_datetime(sessions["start_datetime"])
    assert (starts >= pd.Timestamp(start)).all() and (starts < pd.Timestamp(end)).all()


# --- the demo commands --------------------------------------------------------------------------


def test_demo_data_writes_a_local_folder(cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli("demo", "data", "--out", str(out), "--sessions", "500", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    assert len(list(out.glob("evsezip*_sessions.csv"))) == 54
    assert len(list(out.glob("evsezip*_intervals.csv"))) == 54
    assert (out / EV_DISTRIBUTION_FILE).exists()
    assert "Santa Clara" in r.stdout and "Total" in r.stdout and "500" in r.stdout


def test_demo_data_json_report(cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli(
        "demo",
        "data",
        "--out",
        f"file://{out}",
        "--sessions",
        "200",
        "--start-date",
        "2018-06-01",
        "--end-date",
        "2018-07-01",
        "--zips-per-county",
        "2",
        "-f",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["sessions"] == 200 and report["start_date"] == "2018-06-01"
    assert len(report["files"]) == 2 * 18 + 1
    assert sum(c["sessions"] for c in report["counties"]) == 200
    assert {f["name"] for f in report["files"]} == {p.name for p in out.iterdir()}


def test_demo_data_defaults_to_the_data_uri_setting(
    cli: Callable[..., Any], isolated_env: Path
) -> None:
    r = cli("demo", "data", "--sessions", "100", "--zips-per-county", "1", "-f", "csv")
    assert r.exit_code == 0, r.stderr
    folder = isolated_env / "buckets" / "private"
    assert len(list(folder.glob("evsezip*_sessions.csv"))) == 9
    assert r.stdout.splitlines()[0] == "county,zips,sessions,intervals,bytes"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--sessions", "0"], "--sessions"),
        (["--sessions", "-5"], "--sessions"),
        (["--start-date", "2017/01/01"], "--start-date"),
        (["--end-date", "2019-02-30"], "--end-date"),
        (["--start-date", "2019-01-01", "--end-date", "2018-01-01"], "--end-date"),
        (["--zips-per-county", "0"], "--zips-per-county"),
        (["--format", "xml"], "--format"),
    ],
)
def test_demo_data_rejects_bad_options(
    cli: Callable[..., Any], tmp_path: Path, args: list[str], option: str
) -> None:
    out = tmp_path / "out"
    r = cli("demo", "data", "--out", str(out), *args)
    assert r.exit_code == 2
    assert option in r.stderr
    assert r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_demo_data_rejects_an_unsupported_location(cli: Callable[..., Any]) -> None:
    r = cli("demo", "data", "--out", "gs://bucket/prefix", "--sessions", "10")
    assert r.exit_code == 2
    assert "gs://bucket/prefix" in r.stderr


def test_demo_run_writes_the_default_data_location(
    cli: Callable[..., Any], isolated_env: Path
) -> None:
    """The whole tour behind `make demo`: data, sync, stats, train, fit twice, publish, pull."""
    r = cli("demo", "run", "-f", "json")
    assert r.exit_code == 0, r.stderr
    report, _ = json.JSONDecoder().raw_decode(r.stdout)  # the data report; the steps follow
    assert report["sessions"] == 20_000 and report["seed"] == 42
    folder = isolated_env / "buckets" / "private"
    assert report["uri"] == str(folder)
    assert len(list(folder.glob("evsezip*_sessions.csv"))) == 54
    for step in ("sync", "train load-forecast", "publish --all", "models pull"):
        assert f"$ script-ec2 {step}" in r.stdout or f" {step} " in r.stdout, step
    assert "from cache in" in r.stderr  # the repeated fit
    assert (isolated_env / "demo-forecast.png").stat().st_size > 10_000
    assert list((isolated_env / "pulled-models").glob("sessions-workplace-weekday/*/SHA256SUMS"))


@pytest.mark.s3
def test_demo_data_uploads_to_s3(cli: Callable[..., Any], s3_bucket: Any) -> None:
    r = cli(
        "demo",
        "data",
        "--out",
        s3_bucket.uri,
        "--sessions",
        "300",
        "--zips-per-county",
        "1",
        "-f",
        "json",
    )
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    listed = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.bucket, Prefix="prefix/")
    keys = {o["Key"]: o["Size"] for o in listed.get("Contents", [])}
    assert keys == {f"prefix/{f['name']}": f["bytes"] for f in report["files"]}
    assert len(keys) == 2 * 9 + 1
