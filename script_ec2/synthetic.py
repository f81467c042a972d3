"""Synthetic charging data shaped like the private cleaned ChargePoint export.

The real session and interval files never enter the repository, so tests, demos and benchmarks run
on data made here. :func:`generate` writes one ``evsezip<ZIP>_sessions.csv`` and one
``evsezip<ZIP>_intervals.csv`` per station zip in the nine Bay Area counties (the layout of the
upstream ``clean/Reduced/By_ZipCode/`` prefix) plus ``county_ev_distribution.csv``.

The data behave like the real thing where the algorithms look: workplace L2 sessions dominate and
arrive on weekday mornings with long dwells, multifamily sessions arrive in the evening and stay
overnight, public L2 sessions sit around midday, DC fast sessions are short and powerful, weekends
have far fewer workplace sessions, and volume grows year over year. Every row passes the upstream
cleaning rules (energy >= 0.1 kWh, session >= 120 s, PDT/PST, USD, United States).

Each zip's rows come from its own random streams keyed by (seed, zip), and the streams are consumed
in one fixed order whatever the chunk size, so the bytes depend only on the arguments. Rows are
generated and appended a chunk of whole days at a time, so memory stays flat for millions of rows.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from script_ec2.errors import ScriptEc2Error, UsageError

SESSION_COLUMNS: tuple[str, ...] = (
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
)
INTERVAL_COLUMNS: tuple[str, ...] = (
    "Interval ID",
    "Session ID",
    "Interval Start Time (Local)",
    "Interval Duration (Secs)",
    "Interval Energy",
    "Peak Power",
    "Average Power",
)
BAY_AREA_COUNTIES: tuple[str, ...] = (
    "Alameda",
    "Contra Costa",
    "Marin",
    "Napa",
    "San Francisco",
    "San Mateo",
    "Santa Clara",
    "Solano",
    "Sonoma",
)
EV_DISTRIBUTION_FILE = "county_ev_distribution.csv"
DEFAULT_START_DATE = date(2017, 1, 1)
DEFAULT_END_DATE = date(2020, 1, 1)
DEFAULT_ZIPS_PER_COUNTY = 6
DEFAULT_CHUNK_SESSIONS = 50_000
SLOT_SECONDS = 900
_CSV_BATCH_ROWS = 16_384

_SESSION_ID_BASE = 10_000_001
_INTERVAL_ID_BASE = 100_000_001
_DRIVER_ID_BASE = 500_001
# Share of the Bay Area's sessions by county: Silicon Valley workplaces dominate.
_COUNTY_SHARE = {
    "Santa Clara": 0.34,
    "Alameda": 0.15,
    "San Mateo": 0.13,
    "San Francisco": 0.12,
    "Contra Costa": 0.08,
    "Marin": 0.05,
    "Sonoma": 0.05,
    "Solano": 0.04,
    "Napa": 0.04,
}
# Sessions grow by this factor per year (EV adoption).
_YEARLY_GROWTH = 1.4


@dataclass(frozen=True)
class _Segment:
    """How one kind of charging behaves: volume, arrival, dwell, energy and its stations."""

    name: str
    daily_volume: tuple[float, float]  # relative sessions per day: (weekday, weekend)
    arrival_mean_h: tuple[float, float]  # arrival hour ~ Normal, clipped; (weekday, weekend)
    arrival_sd_h: tuple[float, float]
    arrival_lo_h: tuple[float, float]
    arrival_hi_h: tuple[float, float]
    dwell_median_h: tuple[float, float]  # plugged-in hours ~ LogNormal, clipped
    dwell_sigma: tuple[float, float]
    dwell_range_h: tuple[float, float]
    energy_median_kwh: float  # energy wanted ~ LogNormal, bounded by free battery capacity
    energy_sigma: float
    sites: tuple[tuple[str, str], ...]  # (POI Category, POI Subcategory) choices
    max_power_kw: tuple[float, ...]  # port rating choices
    connectors: tuple[str, ...]  # one per station, in turn
    stations_per_zip: tuple[int, int]  # inclusive range
    ports: int
    session_type: str  # "OTHER" for access-restricted sites (workplace, multifamily), else "PUBLIC"


_PUBLIC_SITES = (
    ("Parking", "Parking Garage"),
    ("Parking", "Parking Lot"),
    ("Retail", "Shopping Center"),
    ("Retail", "Grocery Store"),
    ("Municipal", "City Hall"),
    ("Municipal", "Library"),
    ("Education", "University"),
    ("Hospitality", "Hotel"),
    ("Parks and Recreation", "Park"),
    ("Healthcare", "Hospital"),
    ("Government (Fed, State)", "Government Office"),
)
_MULTIFAMILY_SITES = (
    ("Multifamily Home Service", "Apartment"),
    ("Multifamily Home Service", "Condominium"),
    ("Multifamily Commercial", "Apartment"),
)
# Workplace is about three quarters of all sessions; the weekend total is under half the weekday
# total, almost all of the drop being workplace charging. DC fast dwell follows its charging time
# (see _DC_*), so its dwell entries are unused.
_SEGMENTS: tuple[_Segment, ...] = (
    _Segment(
        "Workplace L2",
        daily_volume=(90.0, 10.0),
        arrival_mean_h=(8.6, 10.8),
        arrival_sd_h=(1.0, 2.2),
        arrival_lo_h=(5.0, 6.0),
        arrival_hi_h=(13.0, 18.0),
        dwell_median_h=(8.4, 3.0),
        dwell_sigma=(0.16, 0.6),
        dwell_range_h=(1.0, 12.5),
        energy_median_kwh=9.0,
        energy_sigma=0.55,
        sites=(
            ("Workplace", "Office Building"),
            ("Workplace", "Corporate Campus"),
            ("Workplace", "Research and Development"),
            ("Workplace", "Manufacturing"),
        ),
        max_power_kw=(6.6,),
        connectors=("J1772",),
        stations_per_zip=(2, 4),
        ports=2,
        session_type="OTHER",
    ),
    _Segment(
        "Multifamily L2",
        daily_volume=(8.0, 10.0),
        arrival_mean_h=(18.8, 17.5),
        arrival_sd_h=(1.6, 3.0),
        arrival_lo_h=(13.0, 8.0),
        arrival_hi_h=(23.9, 23.9),
        dwell_median_h=(11.5, 12.5),
        dwell_sigma=(0.2, 0.25),
        dwell_range_h=(2.0, 18.0),
        energy_median_kwh=11.0,
        energy_sigma=0.6,
        sites=_MULTIFAMILY_SITES,
        max_power_kw=(6.6,),
        connectors=("J1772",),
        stations_per_zip=(1, 2),
        ports=2,
        session_type="OTHER",
    ),
    _Segment(
        "Public L2",
        daily_volume=(10.0, 14.0),
        arrival_mean_h=(12.5, 13.0),
        arrival_sd_h=(2.6, 2.8),
        arrival_lo_h=(6.0, 6.5),
        arrival_hi_h=(21.5, 21.5),
        dwell_median_h=(1.8, 2.0),
        dwell_sigma=(0.5, 0.5),
        dwell_range_h=(0.25, 6.0),
        energy_median_kwh=6.0,
        energy_sigma=0.7,
        sites=_PUBLIC_SITES,
        max_power_kw=(6.6, 6.6, 7.2),
        connectors=("J1772",),
        stations_per_zip=(2, 3),
        ports=2,
        session_type="PUBLIC",
    ),
    _Segment(
        "DC fast",
        daily_volume=(6.0, 8.0),
        arrival_mean_h=(14.0, 13.5),
        arrival_sd_h=(3.8, 3.8),
        arrival_lo_h=(5.0, 5.0),
        arrival_hi_h=(23.5, 23.5),
        dwell_median_h=(0.5, 0.5),
        dwell_sigma=(0.3, 0.3),
        dwell_range_h=(0.1, 1.0),
        energy_median_kwh=16.0,
        energy_sigma=0.4,
        sites=(
            ("Retail", "Shopping Center"),
            ("Parking", "Parking Lot"),
            ("Utility", "Utility Office"),
            ("Municipal", "City Hall"),
        ),
        max_power_kw=(50.0,),
        connectors=("CHAdeMO", "Combo"),
        stations_per_zip=(2, 2),
        ports=1,
        session_type="PUBLIC",
    ),
    _Segment(
        "Public L1",
        daily_volume=(3.0, 2.0),
        arrival_mean_h=(11.5, 12.5),
        arrival_sd_h=(2.4, 2.5),
        arrival_lo_h=(6.0, 7.0),
        arrival_hi_h=(20.0, 20.0),
        dwell_median_h=(4.0, 3.5),
        dwell_sigma=(0.45, 0.45),
        dwell_range_h=(1.0, 10.0),
        energy_median_kwh=5.0,
        energy_sigma=0.6,
        sites=(("Parking", "Parking Garage"), ("Municipal", "Library")),
        max_power_kw=(1.92,),
        connectors=("NEMA 5-20R",),
        stations_per_zip=(1, 1),
        ports=1,
        session_type="PUBLIC",
    ),
    # Residents plugging into a wall outlet: the closest thing to home L1 charging in the export.
    _Segment(
        "Multifamily L1",
        daily_volume=(2.0, 2.5),
        arrival_mean_h=(19.0, 17.5),
        arrival_sd_h=(1.8, 3.0),
        arrival_lo_h=(13.0, 8.0),
        arrival_hi_h=(23.9, 23.9),
        dwell_median_h=(11.5, 12.5),
        dwell_sigma=(0.2, 0.25),
        dwell_range_h=(2.0, 18.0),
        energy_median_kwh=7.0,
        energy_sigma=0.5,
        sites=_MULTIFAMILY_SITES,
        max_power_kw=(1.92,),
        connectors=("NEMA 5-20R",),
        stations_per_zip=(1, 1),
        ports=1,
        session_type="OTHER",
    ),
)
WORKPLACE, MULTIFAMILY, PUBLIC_L2, DC_FAST, PUBLIC_L1, MULTIFAMILY_L1 = range(len(_SEGMENTS))
SEGMENT_NAMES: tuple[str, ...] = tuple(s.name for s in _SEGMENTS)

# Per-segment parameters as arrays, indexed [segment] or [segment, weekend].
_DAILY_VOLUME = np.array([s.daily_volume for s in _SEGMENTS])
_ARRIVAL_MEAN = np.array([s.arrival_mean_h for s in _SEGMENTS])
_ARRIVAL_SD = np.array([s.arrival_sd_h for s in _SEGMENTS])
_ARRIVAL_LO = np.array([s.arrival_lo_h for s in _SEGMENTS])
_ARRIVAL_HI = np.array([s.arrival_hi_h for s in _SEGMENTS])
_DWELL_MEDIAN = np.array([s.dwell_median_h for s in _SEGMENTS])
_DWELL_SIGMA = np.array([s.dwell_sigma for s in _SEGMENTS])
_DWELL_LO = np.array([s.dwell_range_h[0] for s in _SEGMENTS])
_DWELL_HI = np.array([s.dwell_range_h[1] for s in _SEGMENTS])
_ENERGY_MEDIAN = np.array([s.energy_median_kwh for s in _SEGMENTS])
_ENERGY_SIGMA = np.array([s.energy_sigma for s in _SEGMENTS])

# DC fast charging seconds ~ LogNormal(log(28 min), 0.3) clipped; then idle before unplugging.
_DC_CHARGE_MEDIAN_S = 28 * 60
_DC_CHARGE_SIGMA = 0.3
_DC_CHARGE_RANGE_S = (8 * 60, 50 * 60)
_DC_IDLE_RANGE_S = (60, 480)

# DC connector groups: which vehicles may use a DC fast station.
_AC_ONLY, _CHADEMO, _COMBO = 0, 1, 2
_DC_GROUP_OF_CONNECTOR = {"CHAdeMO": _CHADEMO, "Combo": _COMBO}


@dataclass(frozen=True)
class _Vehicle:
    make: str
    model: str
    battery_kwh: float
    ev_type: str
    ac_kw: float
    dc_kw: float
    dc_group: int
    first_year: int
    last_year: int
    weight: float


_VEHICLES: tuple[_Vehicle, ...] = (
    _Vehicle("Nissan", "Leaf", 24.0, "BEV", 6.6, 44.0, _CHADEMO, 2013, 2015, 10.0),
    _Vehicle("Nissan", "Leaf", 40.0, "BEV", 6.6, 46.0, _CHADEMO, 2018, 2019, 6.0),
    _Vehicle("Kia", "Soul EV", 30.0, "BEV", 6.6, 50.0, _CHADEMO, 2015, 2019, 3.0),
    _Vehicle("Tesla", "Model S", 85.0, "BEV", 10.0, 0.0, _AC_ONLY, 2013, 2016, 9.0),
    _Vehicle("Tesla", "Model X", 100.0, "BEV", 11.5, 0.0, _AC_ONLY, 2016, 2019, 3.0),
    _Vehicle("Tesla", "Model 3", 75.0, "BEV", 11.5, 0.0, _AC_ONLY, 2018, 2019, 8.0),
    _Vehicle("Chevrolet", "Bolt EV", 60.0, "BEV", 7.2, 50.0, _COMBO, 2017, 2019, 7.0),
    _Vehicle("BMW", "i3", 33.0, "BEV", 7.4, 50.0, _COMBO, 2014, 2019, 5.0),
    _Vehicle("Volkswagen", "e-Golf", 35.8, "BEV", 7.2, 40.0, _COMBO, 2015, 2019, 4.0),
    _Vehicle("Hyundai", "Ioniq Electric", 28.0, "BEV", 6.6, 50.0, _COMBO, 2017, 2019, 2.0),
    _Vehicle("Fiat", "500e", 24.0, "BEV", 6.6, 0.0, _AC_ONLY, 2013, 2019, 4.0),
    _Vehicle("Chevrolet", "Volt", 18.4, "PHEV", 3.6, 0.0, _AC_ONLY, 2016, 2019, 12.0),
    _Vehicle("Toyota", "Prius Prime", 8.8, "PHEV", 3.3, 0.0, _AC_ONLY, 2017, 2019, 7.0),
    _Vehicle("Ford", "Fusion Energi", 7.6, "PHEV", 3.3, 0.0, _AC_ONLY, 2013, 2019, 5.0),
    _Vehicle("Honda", "Clarity Plug-In Hybrid", 17.0, "PHEV", 6.6, 0.0, _AC_ONLY, 2018, 2019, 4.0),
)

_VEHICLE_BATTERY = np.array([v.battery_kwh for v in _VEHICLES])
_VEHICLE_AC = np.array([v.ac_kw for v in _VEHICLES])
_VEHICLE_DC = np.array([v.dc_kw for v in _VEHICLES])

_STATE = "California"
_COUNTRY = "United States"


@dataclass(frozen=True)
class ZipInfo:
    """One row of the packaged zip -> county table."""

    zip_code: int
    city: str
    county: str


@dataclass(frozen=True)
class WrittenFile:
    """A file written by :func:`generate`; ``name`` is relative to the output folder."""

    name: str
    kind: str  # "sessions", "intervals" or "ev_distribution"
    rows: int
    size: int
    zip_code: int | None = None
    county: str | None = None


@dataclass(frozen=True)
class GenerationSummary:
    files: tuple[WrittenFile, ...]
    sessions: int
    intervals: int
    county_sessions: dict[str, int]
    seed: int
    start_date: date
    end_date: date

    @property
    def zips(self) -> tuple[int, ...]:
        return tuple(
            f.zip_code for f in self.files if f.kind == "sessions" and f.zip_code is not None
        )

    def county_rows(self) -> list[dict[str, Any]]:
        """Per-county totals (zips, sessions, intervals, bytes), sorted by county."""
        rows: dict[str, dict[str, Any]] = {}
        for f in self.files:
            if f.county is None:
                continue
            row = rows.setdefault(
                f.county, {"county": f.county, "zips": 0, "sessions": 0, "intervals": 0, "bytes": 0}
            )
            row["bytes"] += f.size
            if f.kind == "sessions":
                row["zips"] += 1
                row["sessions"] += f.rows
            else:
                row["intervals"] += f.rows
        return [rows[c] for c in sorted(rows)]


def session_file_name(zip_code: int) -> str:
    return f"evsezip{zip_code}_sessions.csv"


def interval_file_name(zip_code: int) -> str:
    return f"evsezip{zip_code}_intervals.csv"


@functools.cache
def load_zip_table() -> tuple[ZipInfo, ...]:
    """The packaged zip -> county lookup (zips are stored as floats such as ``94301.0``)."""
    text = resources.files("script_ec2").joinpath("data/zip_county_lookup.csv").read_text()
    return tuple(
        ZipInfo(int(float(row["Zip Code"])), row["City"], row["County"])
        for row in csv.DictReader(text.splitlines())
    )


def station_zips(zips_per_county: int = DEFAULT_ZIPS_PER_COUNTY) -> list[ZipInfo]:
    """A fixed, evenly spread sample of zips per Bay Area county, in county then zip order.

    It does not depend on the seed, so regenerating into the same folder replaces every file.
    """
    table = load_zip_table()
    chosen: list[ZipInfo] = []
    for county in BAY_AREA_COUNTIES:
        rows = sorted((z for z in table if z.county == county), key=lambda z: z.zip_code)
        k = min(zips_per_county, len(rows))
        chosen.extend(rows[(2 * i + 1) * len(rows) // (2 * k)] for i in range(k))
    return chosen


def generate(
    out_dir: Path,
    *,
    sessions: int,
    seed: int,
    start_date: date = DEFAULT_START_DATE,
    end_date: date = DEFAULT_END_DATE,
    zips_per_county: int = DEFAULT_ZIPS_PER_COUNTY,
    chunk_sessions: int = DEFAULT_CHUNK_SESSIONS,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationSummary:
    """Write synthetic session/interval files per station zip and the county EV distribution.

    Sessions fall on days in [``start_date``, ``end_date``) at ``zips_per_county`` station zips
    per county (see :func:`station_zips`); a zip with no sessions gets header-only files. Rows
    are generated and appended about ``chunk_sessions`` at a time, which bounds memory but never
    changes the bytes. ``progress(done, total)`` is called with session counts after every
    chunk. Every file is written under a temporary name and renamed when complete.
    """
    if sessions < 1:
        raise UsageError(f"the number of sessions must be at least 1, got {sessions}")
    if start_date >= end_date:
        raise UsageError(f"start date {start_date} must be before end date {end_date}")
    if zips_per_county < 1 or chunk_sessions < 1:
        raise UsageError("zips per county and chunk size must be at least 1")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScriptEc2Error(
            f"cannot create output folder {out_dir}: {exc.strerror}; choose a writable folder"
        ) from None

    zips = station_zips(zips_per_county)
    days = _Days(start_date, end_date)
    counts = _allocate_sessions(sessions, zips, seed)
    session_base = _SESSION_ID_BASE + np.concatenate([[0], np.cumsum(counts)[:-1]])
    written: list[WrittenFile] = []
    county_sessions = {c: 0 for c in BAY_AREA_COUNTIES}
    next_interval_id = _INTERVAL_ID_BASE
    next_driver_id = _DRIVER_ID_BASE
    done = 0
    for zi, n_zip, base in zip(zips, counts.tolist(), session_base.tolist(), strict=True):
        plan = _ZipPlan(zi, int(n_zip), seed, days, first_driver_id=next_driver_id)
        next_driver_id += plan.n_drivers
        files, n_intervals = _write_zip(
            out_dir,
            plan,
            days,
            int(base),
            next_interval_id,
            chunk_sessions,
            progress,
            done,
            sessions,
        )
        next_interval_id += n_intervals
        done += int(n_zip)
        written.extend(files)
        county_sessions[zi.county] += int(n_zip)
    written.append(_write_ev_distribution(out_dir, seed))
    return GenerationSummary(
        files=tuple(written),
        sessions=sessions,
        intervals=next_interval_id - _INTERVAL_ID_BASE,
        county_sessions=county_sessions,
        seed=seed,
        start_date=start_date,
        end_date=end_date,
    )


def _allocate_sessions(sessions: int, zips: Sequence[ZipInfo], seed: int) -> np.ndarray:
    """Sessions per zip: county share times per-zip noise; each zip gets one if there are enough."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    per_county = {c: sum(1 for z in zips if z.county == c) for c in BAY_AREA_COUNTIES}
    weights = np.array([_COUNTY_SHARE[z.county] / per_county[z.county] for z in zips])
    weights *= rng.lognormal(0.0, 0.5, size=len(zips))
    weights /= weights.sum()
    floor = 1 if sessions >= len(zips) else 0
    return floor + rng.multinomial(sessions - floor * len(zips), weights)


class _Days:
    """Calendar facts for every day in [start, end): local midnights and DST bounds.

    Daylight time follows the US rule in force since 2007: from 02:00 on the second Sunday of
    March to 02:00 on the first Sunday of November.
    """

    def __init__(self, start: date, end: date) -> None:
        d = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D"))
        self.n = len(d)
        self.midnight = d.astype(np.int64) * 86400  # naive local seconds since 1970
        self.year = d.astype("datetime64[Y]").astype(np.int64) + 1970
        self.month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
        self.doy = (d - d.astype("datetime64[Y]")).astype(np.int64) + 1
        self.weekday = (d.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        self.weekend = (self.weekday >= 5).astype(np.int64)
        self.first_year = int(self.year[0])
        years = range(self.first_year, int(self.year[-1]) + 1)
        self.dst_start = np.array([_local_seconds(_nth_sunday(y, 3, 2)) + 7200 for y in years])
        self.dst_end = np.array([_local_seconds(_nth_sunday(y, 11, 1)) + 7200 for y in years])

    def time_zone_is_dst(self, local: np.ndarray, day: np.ndarray) -> np.ndarray:
        y = self.year[day] - self.first_year
        return (local >= self.dst_start[y]) & (local < self.dst_end[y])


def _nth_sunday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    return date(year, month, 1 + (6 - first.weekday()) % 7 + 7 * (n - 1))


def _local_seconds(d: date) -> int:
    return (d.toordinal() - date(1970, 1, 1).toordinal()) * 86400


class _ZipPlan:
    """Everything about one zip that is fixed before its sessions are drawn.

    Stations, the driver pool, the segment mix and the sessions per day all come from the zip's
    plan stream; sessions then draw from three further streams (uniforms, normals, per-interval).
    """

    def __init__(
        self, zi: ZipInfo, n_sessions: int, seed: int, days: _Days, first_driver_id: int
    ) -> None:
        self.zip = zi
        self.n_sessions = n_sessions
        plan_ss, uniform_ss, normal_ss, interval_ss = np.random.SeedSequence(
            seed, spawn_key=(1, zi.zip_code)
        ).spawn(4)
        rng = np.random.default_rng(plan_ss)
        self.uniform = np.random.default_rng(uniform_ss)
        self.normal = np.random.default_rng(normal_ss)
        self.interval = np.random.default_rng(interval_ss)
        self._stations(rng)
        self._drivers(rng, first_driver_id)

        # Segment mix varies from zip to zip around the Bay Area mix.
        volume = _DAILY_VOLUME * rng.lognormal(0.0, 0.3, size=(len(_DAILY_VOLUME), 1))
        self.segment_cdf = np.cumsum(volume / volume.sum(axis=0), axis=0).T  # (daytype, segment)
        day_weight = volume.sum(axis=0)[days.weekend]
        day_weight *= _YEARLY_GROWTH ** (np.arange(days.n) / 365.25)
        self.day_counts = rng.multinomial(n_sessions, day_weight / day_weight.sum())

    def _stations(self, rng: np.random.Generator) -> None:
        rows: list[tuple[int, str, str, float, str, int, float, float, float]] = []
        for seg, kind in enumerate(_SEGMENTS):
            lo, hi = kind.stations_per_zip
            for k in range(int(rng.integers(lo, hi + 1))):
                category, sub = kind.sites[int(rng.integers(len(kind.sites)))]
                power = kind.max_power_kw[int(rng.integers(len(kind.max_power_kw)))]
                connector = kind.connectors[k % len(kind.connectors)]
                rows.append((seg, category, sub, power, connector, kind.ports, *_fee(seg, rng)))
        self.station_id = np.array([self.zip.zip_code * 100 + i + 1 for i in range(len(rows))])
        self.station_segment = np.array([r[0] for r in rows])
        self.category, self.category_codes = _codes([r[1] for r in rows])
        self.subcategory, self.subcategory_codes = _codes([r[2] for r in rows])
        self.max_power = np.array([r[3] for r in rows])
        self.connector, self.connector_codes = _codes([r[4] for r in rows])
        self.ports = np.array([r[5] for r in rows])
        self.fee = np.array([r[6:9] for r in rows])  # $/hour plugged, $/kWh, $/minute charging
        self.dc_group = np.array([_DC_GROUP_OF_CONNECTOR.get(r[4], _AC_ONLY) for r in rows])
        # Stations sorted by segment so a session can pick one of its segment's stations.
        self.station_order = np.argsort(self.station_segment, kind="stable")
        seg_counts = np.bincount(self.station_segment, minlength=len(_SEGMENTS))
        self.segment_station_start = np.concatenate([[0], np.cumsum(seg_counts)[:-1]])
        self.segment_station_count = seg_counts

    def _drivers(self, rng: np.random.Generator, first_driver_id: int) -> None:
        # A general pool (any vehicle) followed by CHAdeMO and Combo pools for the DC stations.
        general = max(12, self.n_sessions // 150)
        dc_pool = max(3, self.n_sessions // 1500)
        groups = [(None, general), (_CHADEMO, dc_pool), (_COMBO, dc_pool)]
        vehicle_parts = []
        for group, size in groups:
            allowed = [i for i, v in enumerate(_VEHICLES) if group is None or v.dc_group == group]
            weight = np.array([_VEHICLES[i].weight for i in allowed])
            vehicle_parts.append(
                np.array(allowed)[rng.choice(len(allowed), size=size, p=weight / weight.sum())]
            )
        self.driver_vehicle = np.concatenate(vehicle_parts)
        self.n_drivers = len(self.driver_vehicle)
        self.driver_id = first_driver_id + np.arange(self.n_drivers)
        # group 0 (AC stations) may pick any driver; DC groups only their own pool.
        self.driver_group_start = np.array([0, general, general + dc_pool])
        self.driver_group_count = np.array([self.n_drivers, dc_pool, dc_pool])
        first = np.array([_VEHICLES[i].first_year for i in self.driver_vehicle])
        last = np.array([_VEHICLES[i].last_year for i in self.driver_vehicle])
        self.driver_model_year = first + np.floor(
            rng.random(self.n_drivers) * (last - first + 1)
        ).astype(np.int64)
        # Most drivers live in the station's county, the rest elsewhere in the Bay Area.
        bay = [z for z in load_zip_table() if z.county in BAY_AREA_COUNTIES]
        local = [i for i, z in enumerate(bay) if z.county == self.zip.county]
        home = np.where(
            rng.random(self.n_drivers) < 0.6,
            np.array(local)[rng.integers(len(local), size=self.n_drivers)],
            rng.integers(len(bay), size=self.n_drivers),
        )
        self.driver_zip = np.array([bay[i].zip_code for i in home])
        self.driver_city, self.driver_city_codes = _codes([bay[i].city for i in home])

    def chunks(self, chunk_sessions: int) -> Iterator[tuple[int, int]]:
        """Day ranges [d0, d1) holding about ``chunk_sessions`` sessions; never splits a day."""
        cum = np.cumsum(self.day_counts)
        d0 = 0
        n_days = len(self.day_counts)
        while d0 < n_days:
            before = int(cum[d0 - 1]) if d0 else 0
            d1 = max(d0 + 1, int(np.searchsorted(cum, before + chunk_sessions, side="right")))
            yield d0, min(d1, n_days)
            d0 = d1


def _fee(seg: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """A station's price: ($/hour plugged in, $/kWh, $/minute charging)."""
    if seg == DC_FAST:
        return 0.0, 0.0, round(float(rng.uniform(0.2, 0.35)), 2)
    if seg in (MULTIFAMILY, MULTIFAMILY_L1):
        return 0.0, round(float(rng.uniform(0.2, 0.3)), 2), 0.0
    if seg in (WORKPLACE, PUBLIC_L2) and rng.random() < 0.5:
        return float(rng.integers(4, 9)) * 0.25, 0.0, 0.0
    return 0.0, 0.0, 0.0


def _codes(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes into a sorted list of distinct values (for Arrow dictionary columns)."""
    distinct = sorted(set(values))
    index = {v: i for i, v in enumerate(distinct)}
    return np.array([index[v] for v in values], dtype=np.int32), distinct


@dataclass
class _Chunk:
    sessions: Any  # pyarrow.Table
    intervals: Any  # pyarrow.Table


def _make_chunk(
    plan: _ZipPlan, days: _Days, d0: int, d1: int, first_session_id: int, first_interval_id: int
) -> _Chunk:
    """Sessions of days [d0, d1) and their intervals, in start-time order."""
    day = np.repeat(np.arange(d0, d1), plan.day_counts[d0:d1])
    m = len(day)
    weekend = days.weekend[day]
    u = plan.uniform.random((m, 8))
    z = plan.normal.standard_normal((m, 4))

    seg = (u[:, 0, None] > plan.segment_cdf[weekend]).sum(axis=1).clip(0, len(_DAILY_VOLUME) - 1)
    pick = np.floor(u[:, 1] * plan.segment_station_count[seg]).astype(np.int64)
    station = plan.station_order[plan.segment_station_start[seg] + pick]
    port = 1 + np.floor(u[:, 2] * plan.ports[station]).astype(np.int64)
    group = plan.dc_group[station]
    # Skewed pick: a few regulars charge much more often than the rest.
    driver = plan.driver_group_start[group] + np.floor(
        u[:, 3] ** 1.6 * plan.driver_group_count[group]
    ).astype(np.int64)
    vehicle = plan.driver_vehicle[driver]
    battery = _VEHICLE_BATTERY[vehicle]
    max_power = plan.max_power[station]
    is_dc = seg == DC_FAST

    arrival_h = np.clip(
        _ARRIVAL_MEAN[seg, weekend] + _ARRIVAL_SD[seg, weekend] * z[:, 0],
        _ARRIVAL_LO[seg, weekend],
        _ARRIVAL_HI[seg, weekend],
    )
    start_s = np.minimum((arrival_h * 3600).astype(np.int64), 86399)
    dwell_h = np.clip(
        _DWELL_MEDIAN[seg, weekend] * np.exp(_DWELL_SIGMA[seg, weekend] * z[:, 1]),
        _DWELL_LO[seg],
        _DWELL_HI[seg],
    )
    start_soc = 10.0 + 60.0 * u[:, 5]
    free_kwh = battery * (1.0 - start_soc / 100.0)
    wanted_kwh = np.clip(_ENERGY_MEDIAN[seg] * np.exp(_ENERGY_SIGMA[seg] * z[:, 2]), 0.5, free_kwh)

    # Power the car draws: below the station and vehicle limits (AC losses; DC taper on average).
    ac_kw = np.minimum(max_power, _VEHICLE_AC[vehicle]) * (0.92 + 0.07 * u[:, 4])
    dc_kw = np.minimum(max_power, _VEHICLE_DC[vehicle]) * (0.55 + 0.3 * u[:, 7])
    power = np.where(is_dc, dc_kw, ac_kw)
    plugged_s = np.round(dwell_h * 3600).astype(np.int64)
    ac_charge_s = np.minimum(plugged_s, np.floor(wanted_kwh / power * 3600).astype(np.int64))
    dc_target_s = np.clip(
        _DC_CHARGE_MEDIAN_S * np.exp(_DC_CHARGE_SIGMA * z[:, 3]), *_DC_CHARGE_RANGE_S
    )
    dc_charge_s = np.minimum(dc_target_s, free_kwh / power * 3600).astype(np.int64)
    charge_s = np.maximum(np.where(is_dc, dc_charge_s, ac_charge_s), 1)
    idle_s = (_DC_IDLE_RANGE_S[0] + (_DC_IDLE_RANGE_S[1] - _DC_IDLE_RANGE_S[0]) * u[:, 6]).astype(
        np.int64
    )
    session_s = np.where(is_dc, charge_s + idle_s, plugged_s)

    # Chronological order within the chunk; chunks are whole days, so chunk size cannot change it.
    order = np.lexsort((start_s, day))
    day, seg, station, port, driver, vehicle, battery, max_power, is_dc = (
        a[order] for a in (day, seg, station, port, driver, vehicle, battery, max_power, is_dc)
    )
    start_s, start_soc, power, charge_s, session_s = (
        a[order] for a in (start_s, start_soc, power, charge_s, session_s)
    )
    local_start = days.midnight[day] + start_s

    iv = _intervals(plan, local_start, charge_s, power, is_dc, max_power)
    energy_units = np.add.reduceat(iv.units, iv.first)
    energy_kwh = energy_units / 10_000.0
    end_soc = start_soc + 100.0 * energy_kwh / battery
    session_id = first_session_id + np.arange(m)
    interval_id = first_interval_id + np.arange(len(iv.units))
    fee = plan.fee[station]
    dollars = np.round(
        fee[:, 0] * session_s / 3600.0 + fee[:, 1] * energy_kwh + fee[:, 2] * charge_s / 60.0, 2
    )
    dst = days.time_zone_is_dst(local_start, day)
    return _Chunk(
        sessions=_session_table(
            plan,
            days,
            session_id=session_id,
            station=station,
            port=port,
            driver=driver,
            vehicle=vehicle,
            seg=seg,
            day=day,
            dst=dst,
            session_s=session_s,
            charge_s=charge_s,
            start_soc=start_soc,
            end_soc=end_soc,
            is_dc=is_dc,
            energy_kwh=energy_kwh,
            dollars=dollars,
            local_start=local_start,
            start_s=start_s,
        ),
        intervals=_interval_table(interval_id, session_id[iv.session], iv),
    )


@dataclass
class _Intervals:
    session: np.ndarray  # row index of the owning session in the chunk
    first: np.ndarray  # index of each session's first interval
    start: np.ndarray  # local seconds
    duration: np.ndarray  # charging seconds in the slot
    units: np.ndarray  # energy in 1e-4 kWh
    peak_kw: np.ndarray
    average_kw: np.ndarray


def _intervals(
    plan: _ZipPlan,
    local_start: np.ndarray,
    charge_s: np.ndarray,
    power: np.ndarray,
    is_dc: np.ndarray,
    max_power: np.ndarray,
) -> _Intervals:
    """15-minute clock-aligned slots of every session's charging, built without a Python loop."""
    local_end = local_start + charge_s
    first_slot = local_start // SLOT_SECONDS
    n_slots = (local_end - 1) // SLOT_SECONDS - first_slot + 1
    first = np.concatenate([[0], np.cumsum(n_slots)[:-1]])
    owner = np.repeat(np.arange(len(n_slots)), n_slots)
    k = np.arange(len(owner)) - first[owner]
    slot_start = (first_slot[owner] + k) * SLOT_SECONDS
    start = np.maximum(slot_start, local_start[owner])
    end = np.minimum(slot_start + SLOT_SECONDS, local_end[owner])
    duration = end - start
    # DC fast power tapers from 115 % to 85 % of its mean as the battery fills; L2 is flat.
    progress = ((start + end) / 2.0 - local_start[owner]) / charge_s[owner]
    shape = np.where(is_dc[owner], 1.15 - 0.3 * progress, 1.0)
    # Floor keeps every interval's average power at or below the power actually drawn.
    units = np.floor(power[owner] * shape * duration / 3600.0 * 10_000.0 + 1e-9).astype(np.int64)
    average = units / 10_000.0 / duration * 3600.0
    spread = np.where(is_dc[owner], 0.2, 0.03)
    peak = np.minimum(max_power[owner], average * (1.0 + spread * plan.interval.random(len(owner))))
    return _Intervals(
        session=owner,
        first=first,
        start=start,
        duration=duration,
        units=units,
        peak_kw=np.round(peak, 4),
        average_kw=np.round(average, 4),
    )


def _dictionary(codes: np.ndarray, values: Sequence[str]) -> Any:
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(list(values), pa.string())
    )


def _constant(value: str, n: int) -> Any:
    return _dictionary(np.zeros(n, dtype=np.int32), [value])


def _session_table(plan: _ZipPlan, days: _Days, **c: np.ndarray) -> Any:
    import pyarrow as pa

    m = len(c["session_id"])
    st, drv, veh, day = c["station"], c["driver"], c["vehicle"], c["day"]
    not_dc = ~c["is_dc"]
    # Only DC fast chargers report state of charge; L2 rows leave it blank as in the export.
    start_soc = pa.array(np.round(c["start_soc"]).astype(np.int64), mask=not_dc)
    end_soc = pa.array(np.round(np.minimum(c["end_soc"], 100.0)).astype(np.int64), mask=not_dc)
    columns = {
        "Session ID": pa.array(c["session_id"]),
        "Station ID": pa.array(plan.station_id[st]),
        "Port ID": pa.array(c["port"]),
        "Connector Type": _dictionary(plan.connector[st], plan.connector_codes),
        "POI Category": _dictionary(plan.category[st], plan.category_codes),
        "POI Subcategory": _dictionary(plan.subcategory[st], plan.subcategory_codes),
        "Session Time Zone": _dictionary(np.where(c["dst"], 0, 1), ["PDT", "PST"]),
        "Session Time (secs)": pa.array(c["session_s"]),
        "Charging Time (secs)": pa.array(c["charge_s"]),
        "Start SoC": start_soc,
        "End SoC": end_soc,
        "Full Charge": pa.array((c["end_soc"] >= 99.5).astype(np.int64)),
        "Energy (kWh)": pa.array(c["energy_kwh"]),
        "Driver ID": pa.array(plan.driver_id[drv]),
        "Driver Zip": pa.array(plan.driver_zip[drv]),
        "Vehicle Make": _dictionary(veh, [v.make for v in _VEHICLES]),
        "Vehicle Model": _dictionary(veh, [v.model for v in _VEHICLES]),
        "Battery Capacity": pa.array(_VEHICLE_BATTERY[veh]),
        "EV Type": _dictionary(veh, [v.ev_type for v in _VEHICLES]),
        "$ Fee": pa.array(c["dollars"]),
        "Fee Currency": _constant("USD", m),
        "Zip Code": pa.array(np.full(m, plan.zip.zip_code)),
        "City": _constant(plan.zip.city, m),
        "County": _constant(f"{plan.zip.county} County", m),
        "State": _constant(_STATE, m),
        "Country": _constant(_COUNTRY, m),
        "Driver City": _dictionary(plan.driver_city[drv], plan.driver_city_codes),
        "Driver State": _constant(_STATE, m),
        "Driver Country": _constant(_COUNTRY, m),
        "Max Power": pa.array(plan.max_power[st]),
        "Session Type": _dictionary(c["seg"], [s.session_type for s in _SEGMENTS]),
        "Vehicle Model Year": pa.array(plan.driver_model_year[drv]),
        "start_datetime": pa.array(c["local_start"], pa.timestamp("s")),
        "start_seconds": pa.array(c["start_s"]),
        "start_year": pa.array(days.year[day]),
        "start_month": pa.array(days.month[day]),
        "start_day": pa.array(days.doy[day]),
        "start_weekday": pa.array(days.weekday[day]),
    }
    return pa.table(columns)


def _interval_table(interval_id: np.ndarray, session_id: np.ndarray, iv: _Intervals) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "Interval ID": pa.array(interval_id),
            "Session ID": pa.array(session_id),
            "Interval Start Time (Local)": pa.array(iv.start, pa.timestamp("s")),
            "Interval Duration (Secs)": pa.array(iv.duration),
            "Interval Energy": pa.array(iv.units / 10_000.0),
            "Peak Power": pa.array(iv.peak_kw),
            "Average Power": pa.array(iv.average_kw),
        }
    )


def _write_zip(
    out_dir: Path,
    plan: _ZipPlan,
    days: _Days,
    first_session_id: int,
    first_interval_id: int,
    chunk_sessions: int,
    progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> tuple[list[WrittenFile], int]:
    """Stream one zip's sessions and intervals to disk chunk by chunk; return files, intervals."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    zip_code = plan.zip.zip_code
    names = (session_file_name(zip_code), interval_file_name(zip_code))
    finals = [out_dir / n for n in names]
    temps = [out_dir / f".{n}.part" for n in names]
    n_sessions = n_intervals = 0
    # Native Arrow streams: the CSV writer then never goes back through Python per batch.
    no_header = pacsv.WriteOptions(include_header=False, batch_size=_CSV_BATCH_ROWS)
    try:
        with (
            pa.OSFile(str(temps[0]), "wb") as s_fh,
            pa.OSFile(str(temps[1]), "wb") as i_fh,
            ThreadPoolExecutor(max_workers=1) as writer,
        ):
            s_fh.write((",".join(SESSION_COLUMNS) + "\n").encode())
            i_fh.write((",".join(INTERVAL_COLUMNS) + "\n").encode())
            for d0, d1 in plan.chunks(chunk_sessions):
                if not plan.day_counts[d0:d1].any():
                    continue
                chunk = _make_chunk(
                    plan,
                    days,
                    d0,
                    d1,
                    first_session_id + n_sessions,
                    first_interval_id + n_intervals,
                )
                # Arrow releases the GIL while formatting, so the two files are written in parallel.
                pending = writer.submit(pacsv.write_csv, chunk.sessions, s_fh, no_header)
                pacsv.write_csv(chunk.intervals, i_fh, write_options=no_header)
                pending.result()
                n_sessions += chunk.sessions.num_rows
                n_intervals += chunk.intervals.num_rows
                if progress is not None:
                    progress(done + n_sessions, total)
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise ScriptEc2Error(
            f"cannot write {exc.filename or out_dir}: {exc.strerror}; check the folder"
        ) from None
    county = plan.zip.county
    return [
        WrittenFile(names[0], "sessions", n_sessions, finals[0].stat().st_size, zip_code, county),
        WrittenFile(names[1], "intervals", n_intervals, finals[1].stat().st_size, zip_code, county),
    ], n_intervals


def _write_ev_distribution(out_dir: Path, seed: int) -> WrittenFile:
    """Light-duty EVs per California county: many per zip in the Bay Area, fewer elsewhere."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    zips_in: dict[str, int] = {}
    for z in load_zip_table():
        zips_in[z.county] = zips_in.get(z.county, 0) + 1
    counties = sorted(zips_in)
    per_zip = np.array([900.0 if c in BAY_AREA_COUNTIES else 110.0 for c in counties])
    evs = np.maximum(
        10,
        np.round(
            per_zip
            * np.array([zips_in[c] for c in counties])
            * rng.lognormal(0, 0.3, len(counties))
        ),
    )
    final = out_dir / EV_DISTRIBUTION_FILE
    tmp = out_dir / f".{EV_DISTRIBUTION_FILE}.part"
    try:
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["County", "EVs"])
            writer.writerows(zip(counties, evs.astype(np.int64).tolist(), strict=True))
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ScriptEc2Error(f"cannot write {final}: {exc.strerror}; check the folder") from None
    return WrittenFile(EV_DISTRIBUTION_FILE, "ev_distribution", len(counties), final.stat().st_size)
