"""Basic statistics per county, county and month, county and segment, and zip.

They are combined from the small per-object partial aggregates that ingest writes beside each
cached object (``<stem>.agg.*.parquet``), so a county's statistics are rebuilt from its objects'
partials without re-reading any raw row. Definitions (also in the README):

- sessions, energy_kwh: count of kept sessions and the sum of their ``Energy (kWh)``;
- first_date, last_date: local start dates of the first and last session;
- zips, stations: distinct station zips and ``Station ID`` values with at least one session;
- peak_power_kw: the largest, over 15-minute local wall-clock slots, of the summed ``Average
  Power`` of the county's intervals that start in that slot;
- peak_daily_energy_kwh: the largest, over local dates, of the summed ``Interval Energy`` of the
  county's intervals that start on that date (energy actually delivered that day);
- month: by the session's local start year and month; segment: see :mod:`script_ec2.segments`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2.errors import DataError
from script_ec2.keys import CACHE_PARTS, aggregate_file_name

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection, Engine

    from script_ec2.sync import CacheLayout

SESSION_PARTS = CACHE_PARTS["sessions"]


def recompute_dirty(engine: Engine, source: str, layout: CacheLayout) -> list[str]:
    """Rebuild the statistics of every county marked dirty and clear the marks; return them."""
    from sqlalchemy import select

    from script_ec2.db.models import StatsDirty

    with engine.connect() as conn:
        dirty = sorted(
            r.county
            for r in conn.execute(select(StatsDirty.county).where(StatsDirty.source == source))
        )
    if dirty:
        rebuild(engine, source, layout, dirty, clear_marks=True)
    return dirty


def rebuild(
    engine: Engine,
    source: str,
    layout: CacheLayout,
    counties: Iterable[str] | None,
    *,
    clear_marks: bool,
) -> list[str]:
    """Rewrite the statistics of ``counties`` (all tracked counties if None) in one transaction."""
    from sqlalchemy import delete, insert

    from script_ec2.db.models import (
        CountyMonthStats,
        CountySegmentStats,
        CountyStats,
        StatsDirty,
        ZipStats,
    )

    with engine.connect() as conn:
        objects = _contributing_objects(conn, source)
    wanted = set(counties) if counties is not None else {c for o in objects for c in o.counties}
    parts = _load_parts(layout, objects, wanted)
    peak_power, peak_daily = _interval_peaks(layout, objects, wanted)
    rows = compute(parts, wanted, peak_power=peak_power, peak_daily=peak_daily)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for table in (CountyStats, CountyMonthStats, CountySegmentStats, ZipStats):
            stmt = delete(table).where(table.source == source)
            if counties is not None:
                stmt = stmt.where(table.county.in_(wanted))
            conn.execute(stmt)
        for table, name in (
            (CountyStats, "county"),
            (CountyMonthStats, "month"),
            (CountySegmentStats, "segment"),
            (ZipStats, "zip"),
        ):
            if rows[name]:
                conn.execute(
                    insert(table),
                    [{**r, "source": source, "updated_at": now} for r in rows[name]],
                )
        if clear_marks:
            mark = delete(StatsDirty).where(StatsDirty.source == source)
            if counties is not None:
                mark = mark.where(StatsDirty.county.in_(wanted))
            conn.execute(mark)
    return sorted(wanted)


@dataclass(frozen=True)
class _Object:
    """A ledger entry whose cached rows count: its key, kind, cache stem and counties."""

    key: str
    kind: str
    stem: str
    counties: list[str]


def _contributing_objects(conn: Connection, source: str) -> list[_Object]:
    from sqlalchemy import select

    from script_ec2.db.models import LedgerEntry

    rows = conn.execute(
        select(
            LedgerEntry.key, LedgerEntry.kind, LedgerEntry.cache_stem, LedgerEntry.counties
        ).where(LedgerEntry.source == source, LedgerEntry.cache_stem.is_not(None))
    )
    return [_Object(r.key, r.kind, r.cache_stem, json.loads(r.counties)) for r in rows]


def _load_parts(
    layout: CacheLayout, objects: list[_Object], counties: set[str]
) -> dict[str, pa.Table | None]:
    """The session objects' partials of ``counties``, one Arrow table per part (small: one row
    per zip, station, month or segment of each object)."""
    import pyarrow as pa

    found: dict[str, list[pa.Table]] = {p: [] for p in SESSION_PARTS}
    for obj in objects:
        if obj.kind != "sessions" or not counties.intersection(obj.counties):
            continue
        for part in SESSION_PARTS:
            found[part].append(_read_part(layout, obj, part, counties))
    return {
        p: pa.concat_tables(ts, promote_options="default") if ts else None
        for p, ts in found.items()
    }


def _read_part(
    layout: CacheLayout,
    obj: _Object,
    part: str,
    counties: set[str],
    columns: list[str] | None = None,
) -> pa.Table:
    """One object's partial ``part``, only its rows of ``counties`` (and only ``columns``).

    A missing or unreadable file is a :class:`DataError` naming the object: ``sync`` fetches
    such an object again (see :meth:`script_ec2.sync.CacheLayout.has_rows`).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path: Path = layout.objects / aggregate_file_name(obj.stem, part)
    everything = counties.issuperset(obj.counties)
    wanted = None if columns is None or everything else sorted({*columns, "county"})
    failure: str | None = None
    try:
        # ParquetFile.read is ~2x faster per small file than read_table with filters.
        table = pq.ParquetFile(path).read(columns=columns if everything else wanted)
    except FileNotFoundError:
        failure = "is missing"
    except (OSError, pa.ArrowException):
        failure = "cannot be read (delete it)"
    if failure is not None:
        raise DataError(
            f"the cached {part!r} aggregate of {obj.key} {failure}: {path}; then run "
            "script-ec2 sync to fetch the object again"
        )
    if everything:
        return table
    table = table.filter(pc.is_in(table["county"], value_set=pa.array(sorted(counties))))
    return table if columns is None else table.select(columns)


def _interval_peaks(
    layout: CacheLayout, objects: list[_Object], counties: set[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per county, (peak aggregate power, peak daily energy), one county at a time.

    The slot partials are the only large input (one row per 15-minute slot of each interval
    object: about 1.1 million rows for the 1x benchmark data); reading one county's at a time,
    without the text columns, keeps the rebuild's memory at that of its largest county.
    """
    by_county: dict[str, list[_Object]] = {}
    for obj in objects:
        if obj.kind != "intervals":
            continue
        for county in counties.intersection(obj.counties):
            by_county.setdefault(county, []).append(obj)
    peak_power: dict[str, float] = {}
    peak_daily: dict[str, float] = {}
    for county, members in sorted(by_county.items()):
        for peaks, part, by, value in (
            (peak_power, "slots", "slot", "average_power_kw"),
            (peak_daily, "days", "date", "energy_kwh"),
        ):
            tables = [_read_part(layout, obj, part, {county}, [by, value]) for obj in members]
            peak = _largest_total(tables, by, value)
            if peak is not None:
                peaks[county] = peak
    return peak_power, peak_daily


def _largest_total(tables: list[pa.Table], by: str, value: str) -> float | None:
    """The largest sum of ``value`` over the groups of ``by``; None when there are no rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    combined = pa.concat_tables(tables)
    if not combined.num_rows:
        return None
    totals = combined.group_by(by, use_threads=False).aggregate([(value, "sum")])
    return float(pc.max(totals[f"{value}_sum"]).as_py())


def compute(
    parts: dict[str, pa.Table | None],
    counties: set[str],
    *,
    peak_power: dict[str, float],
    peak_daily: dict[str, float],
) -> dict[str, list[dict[str, Any]]]:
    """Combine the session partials and the interval peaks into statistics rows (pure).

    All grouping runs in Arrow: sync should not pay pandas' import for a few group-bys.
    """
    import pyarrow.compute as pc

    out: dict[str, list[dict[str, Any]]] = {"county": [], "month": [], "segment": [], "zip": []}
    zips, stations = _rows(parts["zip"]), _rows(parts["stations"])
    per_zip: dict[str, dict[str, Any]] = {}
    if zips is not None:
        grouped = _sum_by(zips, ["zip", "county"], ["sessions", "energy_kwh"])
        out["zip"] = [
            {
                "zip": r["zip"],
                "county": r["county"],
                "sessions": int(r["sessions"]),
                "energy_kwh": float(r["energy_kwh"]),
            }
            for r in grouped.sort_by("zip").to_pylist()
        ]
        per_county = (
            zips.group_by("county", use_threads=False)
            .aggregate(
                [
                    ("sessions", "sum"),
                    ("energy_kwh", "sum"),
                    ("first_date", "min"),
                    ("last_date", "max"),
                ]
            )
            .to_pylist()
        )
        active = zips.filter(pc.greater(zips["sessions"], 0))
        zip_counts = _distinct_count(active, "zip")
        per_zip = {r["county"]: {**r, "zips": zip_counts.get(r["county"], 0)} for r in per_county}
    station_counts = _distinct_count(stations, "station_id") if stations is not None else {}
    for county in sorted(counties):
        totals = per_zip.get(county)
        if totals is None and county not in peak_power:
            continue
        out["county"].append(
            {
                "county": county,
                "sessions": int(totals["sessions_sum"]) if totals else 0,
                "energy_kwh": float(totals["energy_kwh_sum"]) if totals else 0.0,
                "first_date": totals["first_date_min"] if totals else None,
                "last_date": totals["last_date_max"] if totals else None,
                "zips": totals["zips"] if totals else 0,
                "stations": station_counts.get(county, 0),
                "peak_power_kw": peak_power.get(county, 0.0),
                "peak_daily_energy_kwh": peak_daily.get(county, 0.0),
            }
        )
    for name, key in (("month", ["county", "year", "month"]), ("segment", ["county", "segment"])):
        frame = _rows(parts[name])
        if frame is None:
            continue
        grouped = _sum_by(frame, key, ["sessions", "energy_kwh"])
        out[name] = [
            {
                **{k: (int(r[k]) if k in ("year", "month") else r[k]) for k in key},
                "sessions": int(r["sessions"]),
                "energy_kwh": float(r["energy_kwh"]),
            }
            for r in grouped.sort_by([(k, "ascending") for k in key]).to_pylist()
        ]
    return out


def _rows(table: pa.Table | None) -> pa.Table | None:
    """``table``, or None when there is none or it has no rows."""
    return table if table is not None and table.num_rows else None


def _sum_by(table: pa.Table, keys: list[str], values: list[str]) -> pa.Table:
    grouped = table.group_by(keys, use_threads=False).aggregate([(v, "sum") for v in values])
    return grouped.select([*keys, *(f"{v}_sum" for v in values)]).rename_columns([*keys, *values])


def _distinct_count(table: pa.Table, column: str) -> dict[str, int]:
    """Per county, the number of distinct non-null values of ``column``."""
    import pyarrow.compute as pc

    counted = table.group_by("county", use_threads=False).aggregate(
        [(column, "count_distinct", pc.CountOptions(mode="only_valid"))]
    )
    return dict(
        zip(
            counted["county"].to_pylist(),
            counted[f"{column}_count_distinct"].to_pylist(),
            strict=True,
        )
    )


def read_stats(engine: Engine, source: str, by: str, county: str | None) -> list[dict[str, Any]]:
    """Rows of one statistics table for display, optionally one county."""
    from sqlalchemy import select

    from script_ec2.db.models import CountyMonthStats, CountySegmentStats, CountyStats, ZipStats

    tables: dict[str, Any] = {
        "county": CountyStats,
        "month": CountyMonthStats,
        "segment": CountySegmentStats,
        "zip": ZipStats,
    }
    table = tables[by].__table__
    cols = [c for c in table.columns if c.name not in ("source", "updated_at")]
    stmt = select(*cols).where(table.c.source == source)
    if county is not None:
        stmt = stmt.where(table.c.county == county)
    stmt = stmt.order_by(*[c for c in cols if c.primary_key])
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def refresh_all(engine: Engine, source: str, cache_dir: Path) -> list[str]:
    """Recompute every statistic of ``source`` from the cache, under the sync lock."""
    from script_ec2.lock import run_lock
    from script_ec2.sync import CacheLayout

    with run_lock(engine, f"sync {source}", cache_dir / "locks"):
        return rebuild(
            engine, source, CacheLayout.for_source(cache_dir, source), None, clear_marks=True
        )


def known_county(engine: Engine, name: str) -> bool:
    from script_ec2.db.reference import county_names

    with engine.connect() as conn:
        return name in county_names(conn)
