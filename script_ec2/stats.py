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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

    from script_ec2.sync import CacheLayout

SESSION_PARTS = ("zip", "stations", "month", "segment")
INTERVAL_PARTS = ("slots", "days")


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
    wanted = set(counties) if counties is not None else {c for _, _, cs in objects for c in cs}
    frames = _load_parts(layout, objects, wanted)
    rows = compute(frames, wanted)
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


def _contributing_objects(conn: Connection, source: str) -> list[tuple[str, str, list[str]]]:
    """(kind, cache stem, counties) of every ledger entry whose cached rows count."""
    from sqlalchemy import select

    from script_ec2.db.models import LedgerEntry

    rows = conn.execute(
        select(LedgerEntry.kind, LedgerEntry.cache_stem, LedgerEntry.counties).where(
            LedgerEntry.source == source, LedgerEntry.cache_stem.is_not(None)
        )
    )
    return [(r.kind, r.cache_stem, json.loads(r.counties)) for r in rows]


def _load_parts(
    layout: CacheLayout, objects: list[tuple[str, str, list[str]]], counties: set[str]
) -> dict[str, pd.DataFrame]:
    import pandas as pd
    import pyarrow.parquet as pq

    found: dict[str, list[pd.DataFrame]] = {p: [] for p in SESSION_PARTS + INTERVAL_PARTS}
    for kind, stem, object_counties in objects:
        if not counties.intersection(object_counties):
            continue
        for part in SESSION_PARTS if kind == "sessions" else INTERVAL_PARTS:
            path: Path = layout.objects / f"{stem}.agg.{part}.parquet"
            table = pq.read_table(path, filters=[("county", "in", sorted(counties))])
            found[part].append(table.to_pandas())
    return {
        p: pd.concat(fs, ignore_index=True) if fs else pd.DataFrame() for p, fs in found.items()
    }


def compute(frames: dict[str, pd.DataFrame], counties: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Combine partial aggregates into statistics rows (pure; exposed for tests)."""
    out: dict[str, list[dict[str, Any]]] = {"county": [], "month": [], "segment": [], "zip": []}
    zips, stations = frames["zip"], frames["stations"]
    if not zips.empty:
        per_zip = zips.groupby("zip", sort=True).agg(
            county=("county", "first"),
            sessions=("sessions", "sum"),
            energy_kwh=("energy_kwh", "sum"),
        )
        out["zip"] = [
            {
                "zip": z,
                "county": r.county,
                "sessions": int(r.sessions),
                "energy_kwh": float(r.energy_kwh),
            }
            for z, r in per_zip.iterrows()
        ]
    peak_power = _peak(frames["slots"], "slot", "average_power_kw")
    peak_daily = _peak(frames["days"], "date", "energy_kwh")
    for county in sorted(counties):
        cz = zips[zips["county"] == county] if not zips.empty else zips
        if cz.empty and county not in peak_power:
            continue
        cs = stations[stations["county"] == county] if not stations.empty else stations
        out["county"].append(
            {
                "county": county,
                "sessions": int(cz["sessions"].sum()) if not cz.empty else 0,
                "energy_kwh": float(cz["energy_kwh"].sum()) if not cz.empty else 0.0,
                "first_date": _date(cz["first_date"].min()) if not cz.empty else None,
                "last_date": _date(cz["last_date"].max()) if not cz.empty else None,
                "zips": int(cz.loc[cz["sessions"] > 0, "zip"].nunique()) if not cz.empty else 0,
                "stations": int(cs["station_id"].nunique()) if not cs.empty else 0,
                "peak_power_kw": peak_power.get(county, 0.0),
                "peak_daily_energy_kwh": peak_daily.get(county, 0.0),
            }
        )
    for name, key in (("month", ["county", "year", "month"]), ("segment", ["county", "segment"])):
        frame = frames[name]
        if frame.empty:
            continue
        grouped = frame.groupby(key, sort=True)[["sessions", "energy_kwh"]].sum().reset_index()
        out[name] = [
            {
                **{k: (int(r[k]) if k in ("year", "month") else r[k]) for k in key},
                "sessions": int(r["sessions"]),
                "energy_kwh": float(r["energy_kwh"]),
            }
            for r in grouped.to_dict("records")
        ]
    return out


def _peak(frame: pd.DataFrame, by: str, value: str) -> dict[str, float]:
    """Per county, the largest total of ``value`` over the ``by`` groups."""
    if frame.empty:
        return {}
    totals = frame.groupby(["county", by], sort=False)[value].sum()
    return {str(c): float(v) for c, v in totals.groupby(level=0).max().items()}


def _date(value: Any) -> Any:
    if value is None or value != value:  # NaT/NaN
        return None
    return value.date() if hasattr(value, "date") and callable(value.date) else value


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
