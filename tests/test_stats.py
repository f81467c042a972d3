"""Statistics after ``script-ec2 sync`` equal an independent pandas computation over the raw files
(also after changes and deletions), and ``script-ec2 stats`` shows them in every format, on the
real S3 protocol with SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import delete

from script_ec2.db.models import CountyMonthStats, CountySegmentStats, CountyStats, ZipStats
from script_ec2.db.reference import load_lookup_csv
from script_ec2.segments import stats_segment
from tests.conftest import Result
from tests.sync_helpers import (
    DemoData,
    SyncEnv,
    read_csv,
    set_cell,
)

Cli = Callable[..., Result]
REL = 1e-9
MAX_POWER_KW = 50.0


# -- the independent computation -------------------------------------------------------------------


def _keep_sessions(s: pd.DataFrame) -> pd.DataFrame:
    """The documented session cleaning rules (README "Cleaning rules")."""

    def text(column: str) -> pd.Series:
        return s[column].fillna("").astype(str).str.strip()

    drop = (
        s["Session ID"].isna()
        | s["start_datetime"].isna()
        | s["Energy (kWh)"].isna()
        | s["Session Time (secs)"].isna()
        | (s["Energy (kWh)"] < 0.1)
        | (s["Session Time (secs)"] < 120)
        | text("Connector Type").str.casefold().isin(["type 2 cable", "type 2 socket"])
        | (text("Session Type").str.upper() == "FLEET")
        | ((text("Session Type").str.upper() == "OTHER") & (s["Energy (kWh)"] > 100))
        | (
            (text("Session Time Zone") != "")
            & ~text("Session Time Zone").str.upper().isin(["PDT", "PST"])
        )
        | (
            (text("Driver Country") != "")
            & (text("Driver Country").str.casefold() != "united states")
        )
        | ((text("Fee Currency") != "") & (text("Fee Currency").str.upper() != "USD"))
        | s["county"].isna()
    )
    return s[~drop]


def _keep_intervals(iv: pd.DataFrame) -> pd.DataFrame:
    """The documented interval rules: drops, then clips of power and energy."""
    iv = iv[
        iv["Session ID"].notna()
        & iv["start"].notna()
        & iv["Interval Duration (Secs)"].notna()
        & iv["Interval Energy"].notna()
        & iv["Average Power"].notna()
        & (iv["Interval Energy"] > 0)
        & (iv["Interval Duration (Secs)"] >= 1)
        & iv["county"].notna()
    ].copy()
    iv["Average Power"] = iv["Average Power"].clip(0.0, MAX_POWER_KW)
    cap = MAX_POWER_KW * iv["Interval Duration (Secs)"] / 3600.0
    iv["Interval Energy"] = np.minimum(iv["Interval Energy"], cap)
    return iv


def expected_stats(files: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    """The four statistics tables computed with pandas straight from the raw CSV bytes."""
    lookup = {r.zip: r.county for r in load_lookup_csv()}
    sessions, intervals = [], []
    for name, data in files.items():
        frame = pd.read_csv(io.BytesIO(data), dtype={"Zip Code": str, "Station ID": str})
        if name.endswith("_sessions.csv"):
            sessions.append(frame)
        else:
            frame["zip"] = name.removeprefix("evsezip")[:5]
            intervals.append(frame)
    s = pd.concat(sessions, ignore_index=True)
    s["zip"] = s["Zip Code"].astype(str).str.zfill(5)
    s["county"] = s["zip"].map(lookup)
    s = _keep_sessions(s)
    start = pd.to_datetime(s["start_datetime"])
    s = s.assign(date=start.dt.date, year=start.dt.year, month=start.dt.month)
    s["segment"] = stats_segment(s["POI Category"], s["Max Power"], s["Connector Type"])

    iv = pd.concat(intervals, ignore_index=True)
    iv["county"] = iv["zip"].map(lookup)
    iv["start"] = pd.to_datetime(iv["Interval Start Time (Local)"])
    iv = _keep_intervals(iv)
    iv["slot"] = iv["start"].dt.floor("15min")
    iv["day"] = iv["start"].dt.date
    peak_power = iv.groupby(["county", "slot"])["Average Power"].sum().groupby(level=0).max()
    peak_daily = iv.groupby(["county", "day"])["Interval Energy"].sum().groupby(level=0).max()

    county_rows = []
    for county in sorted(set(s["county"]) | set(iv["county"])):
        cs = s[s["county"] == county]
        county_rows.append(
            {
                "county": county,
                "sessions": len(cs),
                "energy_kwh": float(cs["Energy (kWh)"].sum()),
                "first_date": cs["date"].min() if len(cs) else None,
                "last_date": cs["date"].max() if len(cs) else None,
                "zips": cs["zip"].nunique(),
                "stations": cs["Station ID"].nunique(),
                "peak_power_kw": float(peak_power.get(county, 0.0)),
                "peak_daily_energy_kwh": float(peak_daily.get(county, 0.0)),
            }
        )

    def summed(keys: list[str]) -> list[dict[str, Any]]:
        grouped = s.groupby(keys, sort=True)["Energy (kWh)"].agg(["size", "sum"]).reset_index()
        return [
            {
                **{k: (int(r[k]) if k in ("year", "month") else r[k]) for k in keys},
                "sessions": int(r["size"]),
                "energy_kwh": float(r["sum"]),
            }
            for r in grouped.to_dict("records")
        ]

    zips = s.groupby("zip", sort=True).agg(
        county=("county", "first"), sessions=("zip", "size"), energy_kwh=("Energy (kWh)", "sum")
    )
    return {
        "county": county_rows,
        "month": summed(["county", "year", "month"]),
        "segment": summed(["county", "segment"]),
        "zip": [
            {"zip": z, "county": r.county, "sessions": r.sessions, "energy_kwh": r.energy_kwh}
            for z, r in zips.iterrows()
        ],
    }


def assert_same_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Equal row by row; floats within a relative 1e-9 (summation order may differ)."""
    assert [sorted(r) for r in actual] == [sorted(r) for r in expected]
    for got, want in zip(actual, expected, strict=True):
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=REL, abs=1e-12), (key, got, want)
            else:
                assert got[key] == value, (key, got, want)


# -- statistics ------------------------------------------------------------------------------------


def planted_rule_breakers(demo: DemoData) -> dict[str, bytes]:
    """Every data file, with a few rows that the cleaning rules drop or clip."""
    files = {name: demo.read(name) for name in demo.data_files}
    sessions0, intervals0 = demo.zip_files(0)
    sessions1, intervals1 = demo.zip_files(1)
    data = set_cell(files[sessions0], 1, "Energy (kWh)", "0.05")  # dropped: below 0.1 kWh
    data = set_cell(data, 2, "Session Type", "FLEET")  # dropped: fleet
    files[sessions0] = set_cell(data, 3, "Session Time (secs)", "60")  # dropped: too short
    files[sessions1] = set_cell(files[sessions1], 2, "Driver Country", "Canada")  # dropped
    # two sessions' intervals start in one 15-minute slot: their powers add up there
    header, rows = read_csv(files[intervals0])
    first_session = rows[0][header.index("Session ID")]
    other = next(i for i, r in enumerate(rows, 1) if r[header.index("Session ID")] != first_session)
    data = set_cell(files[intervals0], 1, "Interval Start Time (Local)", "2019-06-03 12:01:00")
    data = set_cell(data, other, "Interval Start Time (Local)", "2019-06-03 12:14:59")
    data = set_cell(data, 1, "Average Power", "75")  # clipped to 50 kW
    data = set_cell(data, 2, "Average Power", "-3")  # clipped to 0
    data = set_cell(data, 3, "Interval Energy", "0")  # dropped: not positive
    files[intervals0] = set_cell(data, 4, "Interval Energy", "40")  # clipped to 50 kW x duration
    files[intervals1] = set_cell(files[intervals1], 1, "Interval Duration (Secs)", "0.5")
    return files


def test_statistics_equal_an_independent_pandas_computation(env: SyncEnv, demo: DemoData) -> None:
    files = planted_rule_breakers(demo)
    for name, data in files.items():
        env.put(name, data)
    summary = env.sync_json()
    dropped, clipped = summary["dropped_rows"], summary["clipped_rows"]
    assert dropped["energy_below_0.1kwh"] == 1 and dropped["fleet_split_off"] == 1
    assert dropped["session_shorter_than_120s"] == 1 and dropped["driver_country_not_us"] == 1
    assert dropped["energy_not_positive"] == 1 and dropped["duration_below_1s"] == 1
    assert clipped["average_power_above_50kw"] == 1 and clipped["negative_average_power"] == 1
    assert clipped["energy_above_50kw_x_duration"] >= 1
    expected = expected_stats(files)
    assert len(expected["county"]) == 9
    for by in ("county", "month", "segment", "zip"):
        assert_same_rows(env.stats(by), expected[by])

    # a changed and a deleted file of each kind: the statistics follow the files exactly
    sessions2, intervals2 = demo.zip_files(2)
    files[sessions2] = b"".join(files[sessions2].splitlines(keepends=True)[:-5])
    files[intervals2] = set_cell(files[intervals2], 3, "Average Power", "49.5")
    for name in (sessions2, intervals2):
        env.put(name, files[name])
    for name in (demo.zip_files(3)[0], demo.zip_files(4)[1]):
        env.delete(name)
        del files[name]
    summary = env.sync_json()
    assert (summary["changed"], summary["deleted"]) == (2, 2)
    expected = expected_stats(files)
    for by in ("county", "month", "segment", "zip"):
        assert_same_rows(env.stats(by), expected[by])


# -- the stats command -----------------------------------------------------------------------------


def _as_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in r.items()} for r in rows
    ]


def test_stats_command_formats_filters_and_refresh(env: SyncEnv, demo: DemoData) -> None:
    for i in range(4):
        env.upload(demo, demo.zip_files(i))
    env.sync_json()
    cli = env.cli
    counties = sorted(env.county_stats())
    assert len(counties) == 4

    table = cli("stats")
    assert table.exit_code == 0, table.stderr
    assert all(c in table.stdout for c in counties) and "peak_power_kw" in table.stdout
    for by in ("county", "month", "segment", "zip"):
        rows = env.stats(by)
        assert rows, by
        shown = cli("stats", "--by", by, "--format", "json")
        assert shown.exit_code == 0, shown.stderr
        assert json.loads(shown.stdout) == _as_json(rows)
        as_csv = cli("stats", "--by", by, "--format", "csv")
        parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
        assert [list(r) for r in parsed] == [list(r) for r in rows]
        for got, want in zip(parsed, _as_json(rows), strict=True):
            for key, value in want.items():
                if isinstance(value, float):  # the CSV shows six significant digits
                    assert float(got[key]) == pytest.approx(value, rel=1e-5), key
                else:
                    assert got[key] == ("" if value is None else str(value)), key
        county = counties[1]
        only = cli("stats", "--by", by, "--county", county, "--format", "json")
        assert json.loads(only.stdout) == _as_json([r for r in rows if r["county"] == county])

    out = env.cache_dir.parent / "exports" / "by-zip.csv"
    written = cli("stats", "--by", "zip", "--format", "csv", "--output", str(out))
    assert written.exit_code == 0 and written.stdout == ""
    assert out.read_text() == cli("stats", "--by", "zip", "--format", "csv").stdout

    elsewhere = cli("stats", "--county", "Fresno", "--format", "json")  # known, no data
    assert elsewhere.exit_code == 0 and json.loads(elsewhere.stdout) == []
    for bad in ("Atlantis", "Santa Clara County"):
        unknown = cli("stats", "--county", bad)
        assert unknown.exit_code == 2
        assert unknown.stderr == (
            f"Error: --county {bad!r} is not a California county name "
            "(use the bare name, e.g. 'Santa Clara')\n"
        )
    assert cli("stats", "--by", "week").exit_code == 2
    assert cli("stats", "--format", "xml").exit_code == 2

    before = {by: env.stats(by) for by in ("county", "month", "segment", "zip")}
    refreshed = cli("stats", "--refresh", "--format", "json")
    assert refreshed.exit_code == 0 and json.loads(refreshed.stdout) == _as_json(before["county"])
    with env.engine.begin() as conn:  # statistics lost: --refresh rebuilds them from the cache
        for table in (CountyStats, CountyMonthStats, CountySegmentStats, ZipStats):
            conn.execute(delete(table))
    assert env.stats("county") == []
    assert cli("stats", "--refresh", "--format", "json").exit_code == 0
    after = {by: env.stats(by) for by in before}
    for by in before:
        assert_same_rows(after[by], before[by])
