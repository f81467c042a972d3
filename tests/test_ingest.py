"""The file → cache ingest core: formats, cleaning counts, aggregates, quarantine, chunking.

Input files are written at run time into tmp_path; no data files live in the repository.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from script_ec2.errors import DataError
from script_ec2.ingest import (
    INTERVAL_CLIP_RULES,
    INTERVAL_DROP_RULES,
    INTERVAL_SCHEMA,
    SESSION_DROP_RULES,
    SESSION_SCHEMA,
    IngestResult,
    QuarantineError,
    ingest_file,
    normalize_zip,
)
from script_ec2.keys import detect_kind, zip_from_key
from script_ec2.segments import FORECAST_SEGMENTS, forecast_segment, stats_segment

# Headers of the cleaned export (upstream spec §1.2, §1.3).
SESSION_HEADER = [
    "Session ID", "Station ID", "Port ID", "Connector Type", "POI Category", "POI Subcategory",
    "Session Time Zone", "Session Time (secs)", "Charging Time (secs)", "Start SoC", "End SoC",
    "Full Charge", "Energy (kWh)", "Driver ID", "Driver Zip", "Vehicle Make", "Vehicle Model",
    "Battery Capacity", "EV Type", "$ Fee", "Fee Currency", "Zip Code", "City", "County", "State",
    "Country", "Driver City", "Driver State", "Driver Country", "Max Power", "Session Type",
    "Vehicle Model Year", "start_datetime", "start_seconds", "start_year", "start_month",
    "start_day", "start_weekday",
]  # fmt: skip
INTERVAL_HEADER = [
    "Interval ID", "Session ID", "Interval Start Time (Local)", "Interval Duration (Secs)",
    "Interval Energy", "Peak Power", "Average Power",
]  # fmt: skip

ZIP_TO_COUNTY = {"94301": "Santa Clara", "94103": "San Francisco", "02134": "Suffolk"}
SECRET_DRIVER = "DRIVER-SECRET-4242"
SECRET_SESSION = "987654321987"
SESSIONS_KEY = "clean/Reduced/By_ZipCode/evsezip94301_sessions.csv"
INTERVALS_KEY = "clean/Reduced/By_ZipCode/evsezip94301_intervals.csv"


def session_row(n: int, **overrides: Any) -> dict[str, Any]:
    """A session that passes every cleaning rule, with ``overrides`` applied."""
    row: dict[str, Any] = dict.fromkeys(SESSION_HEADER, "")
    row.update(
        {
            "Session ID": 1000 + n,
            "Station ID": 5000 + n % 3,
            "Port ID": 1,
            "Connector Type": "J1772",
            "POI Category": "Workplace",
            "POI Subcategory": "Office",
            "Session Time Zone": "PDT",
            "Session Time (secs)": 3600,
            "Charging Time (secs)": 3000,
            "Full Charge": 0,
            "Energy (kWh)": 5.5,
            "Driver ID": f"D{n}",
            "Battery Capacity": 60,
            "Fee Currency": "USD",
            "Zip Code": 94301,
            "County": "Santa Clara County",
            "Driver Country": "United States",
            "Max Power": 6.6,
            "Session Type": "PUBLIC",
            "start_datetime": "2019-03-04 08:15:30",
        }
    )
    row.update(overrides)
    return row


def interval_row(n: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Interval ID": 90_000 + n,
        "Session ID": 1000 + n // 4,
        "Interval Start Time (Local)": "2019-03-04 08:15:00",
        "Interval Duration (Secs)": 900,
        "Interval Energy": 1.5,
        "Peak Power": 6.2,
        "Average Power": 6.0,
    }
    row.update(overrides)
    return row


def csv_bytes(header: Sequence[str], rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_file(path: Path, header: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``rows`` as CSV, gzip CSV or Parquet depending on the suffix."""
    if path.suffix == ".parquet":
        frame = pd.DataFrame(rows, columns=list(header)).replace("", None)
        frame.to_parquet(path, index=False)
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(csv_bytes(header, rows)))
    else:
        path.write_bytes(csv_bytes(header, rows))
    return path


def ingest(src: Path, out: Path, kind: str | None = None, **kw: Any) -> IngestResult:
    key = kw.pop("key", INTERVALS_KEY if kind == "intervals" else SESSIONS_KEY)
    return ingest_file(
        src,
        kind=kind or "sessions",  # type: ignore[arg-type]
        key=key,
        zip_to_county=kw.pop("zip_to_county", ZIP_TO_COUNTY),
        out_dir=out,
        stem=kw.pop("stem", "obj"),
        **kw,
    )


def read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "kind", "zip_code"),
    [
        ("evsezip94301_sessions.csv", "sessions", "94301"),
        ("clean/Reduced/By_ZipCode/evsezip94301_intervals.csv", "intervals", "94301"),
        ("a/b/EVSEZIP95110_Sessions.csv.gz", "sessions", "95110"),
        ("x/evsezip94103_intervals.parquet", "intervals", "94103"),
        ("county_ev_distribution.csv", None, None),
        ("evsezip94301_sessions.csv.bak", None, "94301"),
        ("evsezip9430_sessions.csv", None, None),
        ("sessions_paired.csv", None, None),
    ],
)
def test_detect_kind_and_zip_from_key(key: str, kind: str | None, zip_code: str | None) -> None:
    assert detect_kind(key) == kind
    assert zip_from_key(key) == zip_code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("94301", "94301"),
        (94301, "94301"),
        (94301.0, "94301"),
        ("94301.0", "94301"),
        (" 94301 ", "94301"),
        ("94301-1234", "94301"),
        ("943011234", "94301"),
        (2134, "02134"),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_normalize_zip(value: object, expected: str | None) -> None:
    assert normalize_zip(value) == expected


@pytest.mark.parametrize("value", ["abc", "9430A", "94301.5", 94301.5, "123456"])
def test_normalize_zip_rejects_non_zips(value: object) -> None:
    with pytest.raises(ValueError):
        normalize_zip(value)


# --------------------------------------------------------------------------- segments


def test_stats_and_forecast_segments_follow_the_documented_table() -> None:
    cases = [
        # poi, max power, connector, stats segment, forecast segment
        ("Workplace", 6.6, "J1772", "workplace_l2", "Workplace"),
        ("Workplace", 1.4, "NEMA 5-20R", "other", "Workplace"),
        ("Workplace", 15.0, "J1772", "workplace_l2", None),
        ("Workplace", 50.0, "J1772", "dc_fast", "DC Fast"),
        ("Parking", 6.6, "CHAdeMO", "dc_fast", "DC Fast"),
        ("Retail", 7.0, "tesla supercharger", "dc_fast", "DC Fast"),
        ("Parking", 19.9, "J1772", "public_l2", "Public L2"),
        ("Government (Fed, State)", 6.6, "J1772", "public_l2", "Public L2"),
        ("Parking", 1.9, "NEMA 5-20R", "other", None),
        ("Multifamily Home Service", 6.6, "J1772", "multifamily", "Residential L2"),
        ("Multifamily Commercial", 6.6, "J1772", "multifamily", "Residential MUD"),
        ("Multifamily Commercial", 1.4, "NEMA 5-20R", "multifamily", "Residential L1"),
        ("Multifamily Commercial", 24.0, "Combo", "dc_fast", "DC Fast"),
        ("Fleet", 6.6, "J1772", "other", None),
        ("Fleet", 50.0, "CCS1", "dc_fast", "DC Fast"),
        (None, 6.6, None, "other", None),
        ("Workplace", None, "J1772", "other", None),
        (" parking ", 6.6, "J1772", "public_l2", "Public L2"),
    ]
    poi = pd.Series([c[0] for c in cases], dtype=object)
    power = np.array([np.nan if c[1] is None else c[1] for c in cases])
    connector = [c[2] for c in cases]
    assert stats_segment(poi, power, connector).tolist() == [c[3] for c in cases]
    forecast = forecast_segment(poi, power, connector).tolist()
    assert forecast == [c[4] for c in cases]
    assert {f for f in forecast if f is not None} <= set(FORECAST_SEGMENTS)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Workplace", "Parking", "Multifamily Commercial", "Fleet", "x", None]),
            st.one_of(st.floats(0, 400), st.sampled_from([2.0, 20.0, 10.0, float("nan")])),
            st.sampled_from(["J1772", "CHAdeMO", "ccs", "NEMA 5-20R", None]),
        ),
        max_size=30,
    )
)
def test_segments_are_row_wise(rows: list[tuple[str | None, float, str | None]]) -> None:
    """A vectorised call gives what one call per row gives, whatever the mix of values."""
    poi = [r[0] for r in rows]
    power = np.array([r[1] for r in rows], dtype=float)
    conn = [r[2] for r in rows]
    whole_s = stats_segment(poi, power, conn).tolist()
    whole_f = forecast_segment(poi, power, conn).tolist()
    for i, row in enumerate(rows):
        assert stats_segment([row[0]], [row[1]], [row[2]]).tolist() == [whole_s[i]]
        assert forecast_segment([row[0]], [row[1]], [row[2]]).tolist() == [whole_f[i]]


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_sessions_happy_path(tmp_path: Path, suffix: str) -> None:
    rows = [
        session_row(0),
        session_row(1, **{"start_datetime": "2019-12-29 23:59:59.250", "Zip Code": 94103}),
        session_row(2, **{"POI Category": "Multifamily Home Service", "Energy (kWh)": 12.25}),
        session_row(3, **{"Connector Type": "CHAdeMO", "Max Power": 50, "POI Category": "Parking"}),
    ]
    src = write_file(tmp_path / f"evsezip94301_sessions{suffix}", SESSION_HEADER, rows)
    out = tmp_path / "cache"
    result = ingest(src, out)

    assert (result.kind, result.rows_read, result.rows_kept) == ("sessions", 4, 4)
    assert set(result.dropped) == set(SESSION_DROP_RULES)
    assert sum(result.dropped.values()) == 0
    assert result.zips == ["94103", "94301"]
    assert result.counties == ["San Francisco", "Santa Clara"]
    assert result.unmapped_zips == 0
    assert result.parquet_path == out / "obj.parquet"
    assert set(result.aggregate_paths) == {"zip", "stations", "month", "segment"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["obj.parquet", *(f"obj.agg.{n}.parquet" for n in result.aggregate_paths)]
    )

    table = pq.read_table(result.parquet_path)
    assert table.schema.remove_metadata() == SESSION_SCHEMA
    df = table.to_pandas()
    assert df["Session ID"].tolist() == [1000, 1001, 1002, 1003]
    assert df["zip"].tolist() == ["94301", "94103", "94301", "94301"]
    assert df["county"].tolist() == ["Santa Clara", "San Francisco", "Santa Clara", "Santa Clara"]
    assert df["Station ID"].tolist() == ["5000", "5001", "5002", "5000"]
    assert df["start_datetime"][1] == pd.Timestamp("2019-12-29 23:59:59.250")
    # 2019-03-04 was a Monday, day 63 of the year; 2019-12-29 a Sunday, day 363.
    assert df["start_seconds"].tolist() == [29730, 86399, 29730, 29730]
    assert df["start_year"].tolist() == [2019] * 4
    assert df["start_month"].tolist() == [3, 12, 3, 3]
    assert df["start_day"].tolist() == [63, 363, 63, 63]
    assert df["start_weekday"].tolist() == [0, 6, 0, 0]
    assert df["stats_segment"].tolist() == [
        "workplace_l2",
        "workplace_l2",
        "multifamily",
        "dc_fast",
    ]
    assert df["forecast_segment"].tolist() == [
        "Workplace",
        "Workplace",
        "Residential L2",
        "DC Fast",
    ]

    by_zip = read(result.aggregate_paths["zip"])
    assert by_zip.to_dict("records") == [
        {
            "zip": "94103",
            "county": "San Francisco",
            "sessions": 1,
            "energy_kwh": 5.5,
            "first_date": date(2019, 12, 29),
            "last_date": date(2019, 12, 29),
        },
        {
            "zip": "94301",
            "county": "Santa Clara",
            "sessions": 3,
            "energy_kwh": 23.25,
            "first_date": date(2019, 3, 4),
            "last_date": date(2019, 3, 4),
        },
    ]
    segments = read(result.aggregate_paths["segment"])
    assert segments[["county", "segment", "sessions"]].values.tolist() == [
        ["San Francisco", "workplace_l2", 1],
        ["Santa Clara", "dc_fast", 1],
        ["Santa Clara", "multifamily", 1],
        ["Santa Clara", "workplace_l2", 1],
    ]


def test_sessions_from_a_raw_export_use_station_start_time(tmp_path: Path) -> None:
    header = [h for h in SESSION_HEADER if not h.startswith("start_")] + [
        "Station Start Time (Local)"
    ]
    rows = [
        {k: v for k, v in session_row(0).items() if k in header}
        | {"Station Start Time (Local)": "2020-02-29 18:00:00.000"}
    ]
    result = ingest(write_file(tmp_path / "s.csv", header, rows), tmp_path / "out")
    df = read(result.parquet_path)
    assert df["start_datetime"].tolist() == [pd.Timestamp("2020-02-29 18:00:00")]
    assert df["start_day"].tolist() == [60]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_intervals_happy_path(tmp_path: Path, suffix: str) -> None:
    rows = [
        interval_row(0, **{"Interval Start Time (Local)": "2019-03-04 08:07:11"}),
        interval_row(1, **{"Interval Start Time (Local)": "2019-03-04 08:15:00"}),
        interval_row(2, **{"Interval Start Time (Local)": "2019-03-04 08:29:59.5"}),
        interval_row(3, **{"Interval Start Time (Local)": "2019-03-05 00:00:00"}),
    ]
    src = write_file(tmp_path / f"evsezip94301_intervals{suffix}", INTERVAL_HEADER, rows)
    result = ingest(src, tmp_path / "out", kind="intervals")
    assert (result.rows_read, result.rows_kept) == (4, 4)
    assert result.zips == ["94301"]
    assert result.counties == ["Santa Clara"]
    assert set(result.dropped) == set(INTERVAL_DROP_RULES)
    assert set(result.clipped) == set(INTERVAL_CLIP_RULES)
    table = pq.read_table(result.parquet_path)
    assert table.schema.remove_metadata() == INTERVAL_SCHEMA
    df = table.to_pandas()
    assert df["interval_start"][2] == pd.Timestamp("2019-03-04 08:29:59.5")
    assert set(df["zip"]) == {"94301"}
    assert set(df["county"]) == {"Santa Clara"}

    slots = read(result.aggregate_paths["slots"])
    assert slots[["slot", "intervals", "average_power_kw"]].values.tolist() == [
        [pd.Timestamp("2019-03-04 08:00:00"), 1, 6.0],
        [pd.Timestamp("2019-03-04 08:15:00"), 2, 12.0],
        [pd.Timestamp("2019-03-05 00:00:00"), 1, 6.0],
    ]
    days = read(result.aggregate_paths["days"])
    assert days[["date", "intervals", "energy_kwh"]].values.tolist() == [
        [date(2019, 3, 4), 3, 4.5],
        [date(2019, 3, 5), 1, 1.5],
    ]


def test_header_only_file_gives_empty_outputs(tmp_path: Path) -> None:
    src = write_file(tmp_path / "s.csv", SESSION_HEADER, [])
    result = ingest(src, tmp_path / "out")
    assert (result.rows_read, result.rows_kept, result.zips) == (0, 0, [])
    assert pq.read_table(result.parquet_path).num_rows == 0
    for path in result.aggregate_paths.values():
        assert pq.read_table(path).num_rows == 0


# --------------------------------------------------------------------------- cleaning rules


def test_every_session_rule_is_counted(tmp_path: Path) -> None:
    planted: dict[str, list[dict[str, Any]]] = {
        "missing_session_id": [{"Session ID": ""}],
        "missing_start_time": [{"start_datetime": ""}],
        "missing_energy": [{"Energy (kWh)": ""}],
        "missing_session_time": [{"Session Time (secs)": ""}],
        "energy_below_0.1kwh": [{"Energy (kWh)": 0.05}, {"Energy (kWh)": -3}],
        "session_shorter_than_120s": [{"Session Time (secs)": 119}],
        "type2_connector": [
            {"Connector Type": "Type 2 Cable"},
            {"Connector Type": "Type 2 Socket"},
        ],
        "fleet_split_off": [{"Session Type": "FLEET"}] * 3,
        "other_above_100kwh": [{"Session Type": "OTHER", "Energy (kWh)": 100.5}],
        "time_zone_not_pacific": [{"Session Time Zone": "EST"}],
        "driver_country_not_us": [{"Driver Country": "Canada"}],
        "fee_currency_not_usd": [{"Fee Currency": "CAD"}],
        "missing_zip": [{"Zip Code": ""}],
        "unknown_zip": [{"Zip Code": 10001}, {"Zip Code": 10002}, {"Zip Code": "10001-0001"}],
    }
    assert set(planted) == set(SESSION_DROP_RULES)
    kept: list[dict[str, Any]] = [
        {},
        {"Session Type": "OTHER", "Energy (kWh)": 100.0},  # not above 100
        {"Session Type": "PUBLIC", "Energy (kWh)": 150.0},  # only OTHER is capped
        {"Session Time Zone": "", "Driver Country": "", "Fee Currency": ""},  # blank allowed
        {"Session Time Zone": "pst", "Fee Currency": " usd "},
        {"Energy (kWh)": 0.1, "Session Time (secs)": 120},  # the thresholds themselves pass
    ]
    # A row breaking two rules is counted once, under the first in rule order.
    two_rules = {"Energy (kWh)": 0.0, "Session Type": "FLEET"}
    overrides = [o for group in planted.values() for o in group] + kept + [two_rules]
    rows = [session_row(i, **o) for i, o in enumerate(overrides)]
    random.Random(4).shuffle(rows)
    result = ingest(write_file(tmp_path / "s.csv", SESSION_HEADER, rows), tmp_path / "out")
    expected = {rule: len(group) for rule, group in planted.items()}
    expected["energy_below_0.1kwh"] += 1
    assert result.dropped == expected
    assert result.rows_read == len(rows)
    assert result.rows_kept == len(kept) == pq.read_table(result.parquet_path).num_rows
    assert result.unmapped_zips == 2  # 10001 and 10002


def test_every_interval_rule_is_counted_and_values_are_clipped(tmp_path: Path) -> None:
    rows = [
        interval_row(0, **{"Session ID": ""}),
        interval_row(1, **{"Interval Start Time (Local)": ""}),
        interval_row(2, **{"Interval Duration (Secs)": ""}),
        interval_row(3, **{"Interval Energy": ""}),
        interval_row(4, **{"Average Power": ""}),
        interval_row(5, **{"Interval Energy": 0}),
        interval_row(6, **{"Interval Energy": -1}),
        interval_row(7, **{"Interval Duration (Secs)": 0.5}),
        interval_row(8, **{"Peak Power": -2, "Average Power": -1}),
        interval_row(9, **{"Peak Power": 75, "Average Power": 60}),
        interval_row(10, **{"Interval Energy": 13.0}),  # cap: 50 kW x 900 s = 12.5 kWh
        interval_row(11, **{"Interval Duration (Secs)": 60, "Interval Energy": 1.0}),
        interval_row(12, **{"Peak Power": ""}),  # optional: kept, stays missing
        interval_row(13),
    ]
    result = ingest(
        write_file(tmp_path / "i.csv", INTERVAL_HEADER, rows), tmp_path / "o", "intervals"
    )
    assert result.dropped == {
        "missing_session_id": 1,
        "missing_interval_start": 1,
        "missing_duration": 1,
        "missing_energy": 1,
        "missing_average_power": 1,
        "energy_not_positive": 2,
        "duration_below_1s": 1,
        "unknown_zip": 0,
    }
    assert result.clipped == {
        "negative_peak_power": 1,
        "negative_average_power": 1,
        "peak_power_above_50kw": 1,
        "average_power_above_50kw": 1,
        "energy_above_50kw_x_duration": 2,
    }
    df = read(result.parquet_path).set_index("Interval ID")
    assert (df.at[90_008, "Peak Power"], df.at[90_008, "Average Power"]) == (0.0, 0.0)
    assert (df.at[90_009, "Peak Power"], df.at[90_009, "Average Power"]) == (50.0, 50.0)
    assert df.at[90_010, "Interval Energy"] == 12.5
    assert df.at[90_011, "Interval Energy"] == pytest.approx(50 * 60 / 3600)
    assert df["Peak Power"].isna().tolist() == [i == 90_012 for i in df.index]
    assert len(df) == 6


def test_interval_file_of_an_unknown_zip_drops_every_row(tmp_path: Path) -> None:
    src = write_file(tmp_path / "i.csv", INTERVAL_HEADER, [interval_row(i) for i in range(3)])
    result = ingest(src, tmp_path / "o", "intervals", key="evsezip10001_intervals.csv")
    assert result.dropped["unknown_zip"] == 3
    assert (result.rows_kept, result.unmapped_zips, result.counties) == (0, 1, [])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_zip_codes_in_every_shape_normalise_to_five_digits(tmp_path: Path, suffix: str) -> None:
    shapes: list[Any] = ["94301.0", "94301", "94301-1234", " 94301 ", "2134"]
    if suffix == ".parquet":
        shapes = ["94301.0", "94301-1234", "94301", "2134"]  # one text column
    rows = [session_row(i, **{"Zip Code": z}) for i, z in enumerate(shapes)]
    result = ingest(write_file(tmp_path / f"s{suffix}", SESSION_HEADER, rows), tmp_path / "o")
    assert result.rows_kept == len(shapes)
    assert read(result.parquet_path)["zip"].tolist() == ["94301"] * (len(shapes) - 1) + ["02134"]


@pytest.mark.parametrize("zips", [[94301, 94301], [94301.0, 2134.0]])
def test_numeric_parquet_zip_columns(tmp_path: Path, zips: list[Any]) -> None:
    rows = [session_row(i, **{"Zip Code": z}) for i, z in enumerate(zips)]
    src = write_file(tmp_path / "s.parquet", SESSION_HEADER, rows)
    assert pq.read_schema(src).field("Zip Code").type in (pa.int64(), pa.float64())
    result = ingest(src, tmp_path / "o")
    assert read(result.parquet_path)["zip"].tolist() == [normalize_zip(z) for z in zips]


# --------------------------------------------------------------------------- quarantine


def _gzip_truncated(data: bytes) -> bytes:
    return gzip.compress(data)[:-30]


def _bad_rows(**overrides: Any) -> bytes:
    rows = [session_row(0), session_row(1), session_row(2, **overrides)]
    return csv_bytes(SESSION_HEADER, rows)


def _without(column: str) -> bytes:
    header = [h for h in SESSION_HEADER if h != column]
    return csv_bytes(header, [{k: v for k, v in session_row(0).items() if k in header}])


def _cut_last_line() -> bytes:
    data = _bad_rows()
    return data[: data.rindex(b"5.5,") + 4]


def _latin1() -> bytes:
    return _bad_rows(**{"POI Category": "Caf\u00e9"}).decode().encode("latin-1")


QUARANTINE_CASES: dict[str, tuple[str, bytes, str]] = {
    # case: (file name, bytes, expected message fragment)
    "missing column": ("s.csv", _without("Energy (kWh)"), "missing column(s) 'Energy (kWh)'"),
    "missing start": (
        "s.csv",
        _without("start_datetime"),
        "missing column(s) 'start_datetime' (or 'Station Start Time (Local)')",
    ),
    "bad number": (
        "s.csv",
        _bad_rows(**{"Energy (kWh)": "abc"}),
        "column 'Energy (kWh)' row 3: the value is not a number",
    ),
    "bad integer": (
        "s.csv",
        _bad_rows(**{"Session ID": "12x"}),
        "column 'Session ID' row 3: the value is not an integer",
    ),
    "bad timestamp": (
        "s.csv",
        _bad_rows(**{"start_datetime": "2019-13-45 99:00"}),
        "column 'start_datetime' row 3: the value is not a timestamp",
    ),
    "long bad value is cut": (
        "s.csv",
        _bad_rows(**{"Max Power": "x" * 200}),
        "column 'Max Power' row 3: the value is not a number",
    ),
    "bad zip": (
        "s.csv",
        _bad_rows(**{"Zip Code": "ABCDE"}),
        "column 'Zip Code' row 3: the value is not a zip code",
    ),
    "utf-16": ("s.csv", _bad_rows().decode().encode("utf-16"), "not UTF-8 text (byte offset 0)"),
    "utf-16 without bom": (
        "s.csv",
        _bad_rows().decode().encode("utf-16-le"),
        "not UTF-8 text (byte offset 1: a NUL byte",
    ),
    "latin-1": ("s.csv", _latin1(), f"not UTF-8 text (byte offset {_latin1().index(0xE9)})"),
    "truncated last line": (
        "s.csv",
        _cut_last_line(),
        "row 3 (line 4) has 14 fields, the header has 38 (truncated file?)",
    ),
    "truncated gzip": ("s.csv.gz", _gzip_truncated(_bad_rows()), "truncated gzip data"),
    "corrupt gzip": ("s.csv.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 64, "corrupt gzip data"),
    "binary garbage": (
        "s.csv",
        b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(3000),
        "not UTF-8 text (byte offset 0)",
    ),
    "empty file": ("s.csv", b"", "empty file (no header line)"),
    "blank first line": ("s.csv", b"\n\n", "the first line is blank"),
    "corrupt parquet": ("s.parquet", b"PAR1" + b"\x00" * 100, "not a readable Parquet file"),
    "parquet without magic": ("s.parquet", _bad_rows(), "not a Parquet file"),
}


@pytest.mark.parametrize("case", sorted(QUARANTINE_CASES))
def test_bad_files_are_quarantined_with_a_one_line_reason(tmp_path: Path, case: str) -> None:
    name, data, expected = QUARANTINE_CASES[case]
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out"
    with pytest.raises(QuarantineError) as caught:
        ingest(src, out, chunk_rows=1)
    message = str(caught.value)
    assert isinstance(caught.value, DataError)
    assert expected in message
    assert "\n" not in message and len(message) < 200
    assert not any(out.iterdir()), "no final or temporary file may be left"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    column=st.sampled_from(["Energy (kWh)", "Session ID", "start_datetime"]),
    value=st.text(alphabet="0123456789.eE+- \tinfaNT:", min_size=1, max_size=22),
)
def test_the_first_value_arrow_refuses_is_the_one_reported(
    tmp_path: Path, column: str, value: str
) -> None:
    """Row 1 holds an odd value; row 2 one nobody accepts. Blame row 1 exactly when Arrow does."""
    if column == "start_datetime":
        value = "2019-01-01" + value
    rows = [session_row(0, **{column: value}), session_row(1, **{column: "bad!"})]
    src = tmp_path / f"prop-{abs(hash((column, value)))}.csv"
    src.write_bytes(csv_bytes(SESSION_HEADER, rows))
    arrow_type = {"Energy (kWh)": pa.float64(), "Session ID": pa.int64()}.get(
        column, pa.timestamp("ns")
    )
    try:
        pacsv.read_csv(
            io.BytesIO(csv_bytes([column], [{column: value}])),
            convert_options=pacsv.ConvertOptions(
                column_types={column: arrow_type}, null_values=["", "NaN", "nan", "NA"]
            ),
        )
        row = 2
    except pa.ArrowInvalid:
        row = 1
    with pytest.raises(QuarantineError) as caught:
        ingest(src, tmp_path / "out")
    assert caught.value.row == row, str(caught.value)
    assert caught.value.column == column


def test_quoted_line_breaks_are_values_not_rows(tmp_path: Path) -> None:
    rows = [session_row(i, **{"Driver City": "Palo\nAlto"}) for i in range(3)]
    src = write_file(tmp_path / "s.csv", SESSION_HEADER, rows)
    assert ingest(src, tmp_path / "ok").rows_kept == 3
    rows[2]["Energy (kWh)"] = "many"
    src = write_file(tmp_path / "s.csv", SESSION_HEADER, rows)
    # Row 3 of the data starts on line 6 of the file; the message counts data rows.
    with pytest.raises(QuarantineError, match=r"column 'Energy \(kWh\)' row 3: the value"):
        ingest(src, tmp_path / "bad")


def test_bad_value_in_a_parquet_text_column_names_the_row(tmp_path: Path) -> None:
    rows = [session_row(i) for i in range(5)]
    rows[3]["Energy (kWh)"] = "n/a kWh"
    frame = pd.DataFrame(rows).astype({"Energy (kWh)": str})
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    with pytest.raises(QuarantineError, match=r"column 'Energy \(kWh\)' row 4: the value is not"):
        ingest(tmp_path / "s.parquet", tmp_path / "out", chunk_rows=2)
    assert not any((tmp_path / "out").iterdir())


def test_parquet_columns_of_other_types_are_converted(tmp_path: Path) -> None:
    frame = pd.DataFrame([session_row(i) for i in range(4)])
    frame["Session ID"] = [1.0, np.nan, 3.0, 4.0]  # float with NaN, as pandas makes it
    frame["Energy (kWh)"] = ["5.5", "", "NaN", "7"]  # text, with missing spellings
    frame["Station ID"] = [11, 12, 13, 14]
    frame["start_datetime"] = pd.to_datetime(["2019-03-04 08:00"] * 4).tz_localize(
        "America/Los_Angeles"
    )
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    result = ingest(tmp_path / "s.parquet", tmp_path / "out")
    assert result.dropped["missing_session_id"] == 1
    assert result.dropped["missing_energy"] == 1
    df = read(result.parquet_path)
    assert df["Session ID"].tolist() == [1, 4]
    assert df["Energy (kWh)"].tolist() == [5.5, 7.0]
    assert df["Station ID"].tolist() == ["11", "14"]
    # A zone-aware time is taken as the local wall clock it shows.
    assert df["start_seconds"].tolist() == [8 * 3600] * 2

    frame["Session ID"] = [1.0, 2.5, 3.0, 4.0]
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(
        QuarantineError, match=r"column 'Session ID' row 2: the value is not an integer"
    ):
        ingest(tmp_path / "t.parquet", tmp_path / "out2")


def test_wrong_parquet_type_is_reported(tmp_path: Path) -> None:
    frame = pd.DataFrame([session_row(0)])
    frame["Energy (kWh)"] = [True]
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    with pytest.raises(QuarantineError, match=r"column 'Energy \(kWh\)' has type bool"):
        ingest(tmp_path / "s.parquet", tmp_path / "out")


def test_interval_key_without_a_zip_is_rejected(tmp_path: Path) -> None:
    src = write_file(tmp_path / "i.csv", INTERVAL_HEADER, [interval_row(0)])
    with pytest.raises(QuarantineError, match="cannot tell the zip"):
        ingest(src, tmp_path / "o", "intervals", key="intervals_paired.csv")


def test_an_error_deep_in_the_file_leaves_nothing_behind(tmp_path: Path) -> None:
    """The first chunks were already written to the temp file when row 950 fails."""
    rows = [session_row(i) for i in range(1000)]
    rows[949]["Max Power"] = "fast"
    src = write_file(tmp_path / "s.csv", SESSION_HEADER, rows)
    out = tmp_path / "out"
    with pytest.raises(
        QuarantineError, match="column 'Max Power' row 950: the value is not a number"
    ):
        ingest(src, out, chunk_rows=100)
    assert not any(out.iterdir())


def test_a_failed_reingest_keeps_no_partial_file_under_the_final_name(tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = write_file(tmp_path / "good.csv", SESSION_HEADER, [session_row(0)])
    ingest(good, out, stem="a")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_bad_rows(**{"Energy (kWh)": "abc"}))
    with pytest.raises(QuarantineError):
        ingest(bad, out, stem="b")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("b")) == []
    assert not any(p.name.startswith(".") for p in out.iterdir())


PRIVACY_CASES = {
    "bad number": {"Energy (kWh)": "abc"},
    "bad zip": {"Zip Code": "X-SECRET"},
    "bad timestamp": {"start_datetime": "soon"},
    "bad power": {"Max Power": "?"},
}


@pytest.mark.parametrize("case", [*PRIVACY_CASES, "truncated", "latin-1", "parquet"])
def test_planted_ids_never_reach_an_error_message(tmp_path: Path, case: str) -> None:
    planted = {"Driver ID": SECRET_DRIVER, "Session ID": SECRET_SESSION, "Driver Zip": "99999"}
    rows = [session_row(0), session_row(1, **planted)]
    src = tmp_path / ("s.parquet" if case == "parquet" else "s.csv")
    if case in PRIVACY_CASES:
        rows[1].update(PRIVACY_CASES[case])
        data = csv_bytes(SESSION_HEADER, rows)
    elif case == "truncated":
        data = csv_bytes(SESSION_HEADER, rows)
        data = data[: data.index(SECRET_DRIVER.encode()) + len(SECRET_DRIVER)]
    elif case == "latin-1":
        rows[1]["Driver City"] = "San Jos\u00e9"
        data = csv_bytes(SESSION_HEADER, rows).decode().encode("latin-1")
    else:
        rows[1]["Energy (kWh)"] = "lots"
        pd.DataFrame(rows).astype(str).to_parquet(src, index=False)
        data = src.read_bytes()
    src.write_bytes(data)
    with pytest.raises(QuarantineError) as caught:
        ingest(src, tmp_path / "out")
    seen = []
    exc: BaseException | None = caught.value
    while exc is not None:  # the message and anything chained to it
        seen.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    text = " | ".join(seen)
    assert SECRET_DRIVER not in text
    assert SECRET_SESSION not in text
    assert "99999" not in text
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- chunking, aggregates


def _random_sessions(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    pois = ["Workplace", "Parking", "Multifamily Commercial", "Fleet", "Retail"]
    rows = []
    for i in range(n):
        start = datetime(2019, 1, 1) + timedelta(seconds=rng.randrange(0, 3 * 365 * 86400))
        rows.append(
            session_row(
                i,
                **{
                    "Station ID": 7000 + rng.randrange(12),
                    "POI Category": rng.choice(pois),
                    "Max Power": rng.choice([1.4, 6.6, 7.2, 50.0]),
                    "Connector Type": rng.choice(["J1772", "J1772", "CHAdeMO", "Type 2 Cable"]),
                    "Energy (kWh)": round(rng.uniform(-0.5, 60), 3),
                    "Session Time (secs)": rng.randrange(0, 40_000),
                    "Session Type": rng.choice(["PUBLIC", "OTHER", "FLEET"]),
                    "Zip Code": rng.choice([94301, 94103, "94103-0001", 10001]),
                    "start_datetime": start.strftime("%Y-%m-%d %H:%M:%S"),
                },
            )
        )
    return rows


def _random_intervals(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        start = datetime(2019, 6, 1) + timedelta(seconds=rng.randrange(0, 5 * 86400))
        rows.append(
            interval_row(
                i,
                **{
                    "Interval Start Time (Local)": start.strftime("%Y-%m-%d %H:%M:%S"),
                    "Interval Duration (Secs)": rng.choice([900, 858, 0, 120]),
                    "Interval Energy": round(rng.uniform(-0.2, 14), 4),
                    "Peak Power": round(rng.uniform(-1, 70), 3),
                    "Average Power": round(rng.uniform(-1, 60), 3),
                },
            )
        )
    return rows


def _assert_same_outputs(a: IngestResult, b: IngestResult) -> None:
    assert (a.rows_read, a.rows_kept, a.dropped, a.clipped) == (
        b.rows_read,
        b.rows_kept,
        b.dropped,
        b.clipped,
    )
    assert (a.zips, a.counties, a.unmapped_zips) == (b.zips, b.counties, b.unmapped_zips)
    assert pq.read_table(a.parquet_path).equals(pq.read_table(b.parquet_path))
    for name, path in a.aggregate_paths.items():
        # Float sums may differ in the last bit with the order of addition.
        pd.testing.assert_frame_equal(read(path), read(b.aggregate_paths[name]), rtol=1e-12)


@pytest.mark.parametrize("kind", ["sessions", "intervals"])
def test_small_chunks_give_the_same_outputs_as_one_chunk(tmp_path: Path, kind: str) -> None:
    if kind == "sessions":
        src = write_file(tmp_path / "s.csv.gz", SESSION_HEADER, _random_sessions(600, seed=1))
    else:
        src = write_file(tmp_path / "i.parquet", INTERVAL_HEADER, _random_intervals(900, seed=2))
    one = ingest(src, tmp_path / "one", kind)
    seen: list[int] = []
    small = ingest(src, tmp_path / "small", kind, chunk_rows=7, on_chunk=seen.append)
    assert seen == [min(7 * (i + 1), one.rows_read) for i in range(len(seen))]
    assert seen[-1] == one.rows_read
    _assert_same_outputs(one, small)
    assert 0 < one.rows_kept < one.rows_read


def test_session_aggregates_match_pandas(tmp_path: Path) -> None:
    rows = _random_sessions(400, seed=3)
    src = write_file(tmp_path / "s.csv", SESSION_HEADER, rows)
    result = ingest(src, tmp_path / "out", chunk_rows=50)

    df = pd.read_csv(src, dtype={"Zip Code": str})
    df["zip"] = df["Zip Code"].str[:5]
    df["county"] = df["zip"].map(ZIP_TO_COUNTY)
    df = df[
        (df["Energy (kWh)"] >= 0.1)
        & (df["Session Time (secs)"] >= 120)
        & (df["Connector Type"] != "Type 2 Cable")
        & (df["Session Type"] != "FLEET")
        & ~((df["Session Type"] == "OTHER") & (df["Energy (kWh)"] > 100))
        & df["county"].notna()
    ].copy()
    start = pd.to_datetime(df["start_datetime"])
    df["date"] = start.dt.date
    df["year"], df["month"] = start.dt.year, start.dt.month
    df["segment"] = stats_segment(df["POI Category"], df["Max Power"], df["Connector Type"])
    assert result.rows_kept == len(df)

    by_zip = df.groupby(["zip", "county"]).agg(
        sessions=("Session ID", "size"),
        energy_kwh=("Energy (kWh)", "sum"),
        first_date=("date", "min"),
        last_date=("date", "max"),
    )
    got = read(result.aggregate_paths["zip"]).set_index(["zip", "county"])
    pd.testing.assert_frame_equal(got, by_zip, check_dtype=False)

    for name, keys in [
        ("month", ["county", "year", "month"]),
        ("segment", ["county", "segment"]),
        ("stations", ["zip", "county", "Station ID"]),
    ]:
        expected = df.groupby(keys).agg(
            sessions=("Session ID", "size"), energy_kwh=("Energy (kWh)", "sum")
        )
        got = read(result.aggregate_paths[name])
        got = got.rename(columns={"station_id": "Station ID"})
        if name == "stations":
            got["Station ID"] = got["Station ID"].astype(int)
        pd.testing.assert_frame_equal(
            got.set_index(keys), expected, check_dtype=False, check_index_type=False
        )


def test_interval_aggregates_match_pandas(tmp_path: Path) -> None:
    src = write_file(tmp_path / "i.csv", INTERVAL_HEADER, _random_intervals(500, seed=4))
    result = ingest(src, tmp_path / "out", "intervals", chunk_rows=64)

    df = pd.read_csv(src)
    df = df[(df["Interval Energy"] > 0) & (df["Interval Duration (Secs)"] >= 1)].copy()
    df["Average Power"] = df["Average Power"].clip(0, 50)
    cap = 50 * df["Interval Duration (Secs)"] / 3600
    df["Interval Energy"] = df["Interval Energy"].where(df["Interval Energy"] <= cap, cap)
    start = pd.to_datetime(df["Interval Start Time (Local)"])
    df["slot"] = start.dt.floor("15min")
    df["date"] = start.dt.date

    slots = df.groupby("slot").agg(
        intervals=("Interval ID", "size"), average_power_kw=("Average Power", "sum")
    )
    got = read(result.aggregate_paths["slots"]).set_index("slot")
    assert set(got["zip"]) == {"94301"} and set(got["county"]) == {"Santa Clara"}
    got.index = got.index.astype("datetime64[ns]")
    pd.testing.assert_frame_equal(
        got[["intervals", "average_power_kw"]], slots, check_dtype=False, check_index_type=False
    )
    days = df.groupby("date").agg(
        intervals=("Interval ID", "size"), energy_kwh=("Interval Energy", "sum")
    )
    got_days = read(result.aggregate_paths["days"]).set_index("date")
    pd.testing.assert_frame_equal(got_days[["intervals", "energy_kwh"]], days, check_dtype=False)


def test_synthetic_export_round_trips(tmp_path: Path) -> None:
    """The project's synthetic data pass every cleaning rule and land in their counties."""
    synthetic = pytest.importorskip("script_ec2.synthetic")
    summary = synthetic.generate(
        tmp_path / "raw",
        sessions=400,
        seed=7,
        start_date=date(2019, 1, 1),
        end_date=date(2019, 3, 1),
        zips_per_county=1,
    )
    zip_to_county = {
        f.zip_code if isinstance(f.zip_code, str) else f"{f.zip_code:05d}": f.county
        for f in summary.files
        if f.kind == "sessions"
    }
    county_sessions: dict[str, int] = {}
    intervals = 0
    for f in summary.files:
        kind = detect_kind(f.name)
        if kind is None:
            continue
        result = ingest_file(
            tmp_path / "raw" / f.name,
            kind=kind,
            key=f.name,
            zip_to_county=zip_to_county,
            out_dir=tmp_path / "cache",
            stem=f.name.split(".")[0],
        )
        assert result.rows_kept == result.rows_read == f.rows
        for county in result.counties:
            if kind == "sessions":
                county_sessions[county] = county_sessions.get(county, 0) + result.rows_kept
        intervals += result.rows_kept if kind == "intervals" else 0
    assert county_sessions == {c: n for c, n in summary.county_sessions.items() if n}
    assert intervals == summary.intervals


def test_a_bad_identifier_value_is_never_quoted(tmp_path: Path) -> None:
    """A malformed Session ID (a trailing letter) is named by its column and row only."""
    planted = "914725836041x"
    rows = [session_row(1), session_row(2, **{"Session ID": planted})]
    src = write_file(tmp_path / "evsezip94301_sessions.csv", SESSION_HEADER, rows)
    with pytest.raises(DataError) as info:
        ingest(src, tmp_path / "out")
    assert planted not in str(info.value)
    assert "column 'Session ID' row 2" in str(info.value)


def test_the_cache_parts_sync_checks_are_the_aggregates_ingest_writes() -> None:
    from script_ec2.ingest import INTERVAL_AGGREGATES, SESSION_AGGREGATES
    from script_ec2.keys import CACHE_PARTS

    assert {
        "sessions": tuple(SESSION_AGGREGATES),
        "intervals": tuple(INTERVAL_AGGREGATES),
    } == CACHE_PARTS


def _expected_text_problem(data: bytes) -> str | None:
    """What the UTF-8 check must say about ``data`` as a whole (None: it is clean text)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        nul = data.find(b"\x00", 0, exc.start)
        return f"byte offset {exc.start})" if nul < 0 else f"byte offset {nul}: a NUL byte"
    nul = data.find(b"\x00")
    return None if nul < 0 else f"byte offset {nul}: a NUL byte"


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(
            st.text(alphabet="aé€😀,\n0", max_size=6).map(str.encode),
            st.sampled_from([b"\x00", b"\xff", b"\xe2\x82", b"\xc3"]),
        ),
        max_size=12,
    ),
    read_sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5),
)
def test_the_utf8_check_finds_the_first_problem_whatever_the_read_sizes(
    pieces: list[bytes], read_sizes: list[int]
) -> None:
    """Characters split across reads are joined; the offset is of the whole stream."""
    from script_ec2.ingest import _CheckedStream

    data = b"".join(pieces)
    stream = _CheckedStream(io.BytesIO(data))
    problem: str | None = None
    turn = 0
    try:
        while True:
            buffer = bytearray(read_sizes[turn % len(read_sizes)])
            turn += 1
            if not stream.readinto(buffer):
                break
    except QuarantineError as exc:
        problem = str(exc)
    expected = _expected_text_problem(data)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith("not UTF-8 text (")
        assert expected in problem, (problem, expected)


_MEASURE_ARROW_PEAK = """
import json, sys
from pathlib import Path
import pyarrow as pa
from script_ec2.ingest import ingest_file
src, out = Path(sys.argv[1]), Path(sys.argv[2])
result = ingest_file(src, kind="intervals", key=src.name, zip_to_county={"94301": "Santa Clara"},
                     out_dir=out, stem="x")
print(json.dumps({"rows": result.rows_kept, "peak": pa.default_memory_pool().max_memory()}))
"""


def test_arrow_memory_of_an_ingest_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """Each ingest holds a chunk and the CSV reader's read-ahead, not the file (spec: chunked).

    Arrow's reader reads up to 32 blocks ahead; with 4 MiB blocks that held whole files of over
    100 MB. Measured in fresh processes, as the pool's peak is per process: ~55 MiB for a 53 MB
    and for a 107 MB file here.
    """
    body = csv_bytes(INTERVAL_HEADER, [interval_row(i) for i in range(5_000)])
    header, rows = body.split(b"\n", 1)
    peaks = {}
    for copies in (240, 480):  # 1.2 and 2.4 million rows, ~53 and ~107 MB
        src = tmp_path / f"evsezip94301_intervals_{copies}.csv"
        src.write_bytes(header + b"\n" + rows * copies)
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE_ARROW_PEAK, str(src), str(tmp_path / f"out{copies}")],
            capture_output=True,
            text=True,
            check=True,
        )
        src.unlink()
        report = json.loads(out.stdout)
        assert report["rows"] == 5_000 * copies
        peaks[copies] = report["peak"]
    assert peaks[480] - peaks[240] < 16 * 2**20, peaks  # twice the file, about the same memory
    assert peaks[480] < 80 * 2**20, peaks
