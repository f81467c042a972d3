"""Electricity rates for load control: what a 15-minute schedule of charging costs.

A :class:`Rate` is a daily tariff on the 96-slot grid (slot k covers 15·k to 15·k + 15 minutes
after local midnight): an energy price per slot in $/kWh, demand charges in $/kW on the largest
aggregate power inside a window of slots (each charge counted once), and an optional cap on the
aggregate power, given in kW (``cap_kw``) or as a fraction of the uncontrolled peak of the day
being scheduled (``cap_fraction``). :func:`load_rate` returns a built-in rate by name or reads a
rate file.

Built-in rates (spec §3.4; no weekday/weekend distinction, demand charges weighed against one
day of energy cost as upstream did):

==================  ===========================================================================
Name                Definition
==================  ===========================================================================
``e19`` (default)   PG&E E-19 summer, secondary, variable parts. Energy: peak 12:00-18:00
                    $0.16997/kWh, part-peak 08:30-12:00 and 18:00-21:30 $0.12236, off-peak
                    00:00-08:30 and 21:30-24:00 $0.09082. Demand: overall $19.10/kW, peak
                    $21.23/kW, part-peak $5.85/kW.
``pge-cev``         PG&E Commercial EV. Energy: peak 16:00-22:00 $0.30267, part-peak 22:00-09:00
                    and 14:00-16:00 $0.11079, off-peak 09:00-14:00 $0.08882. The subscription
                    becomes a cap on the aggregate, by default the uncontrolled peak
                    (``cap_fraction`` 1.0, upstream's default). The subscription fee ($183.86
                    per 50 kW) is constant for a given level, so it is left out.
``pge-cev-demand``  The same energy prices plus a demand charge of 183.86 / 50 = $3.6772/kW on
                    the daily maximum.
``pge-cev-energy``  The same energy prices only.
``sce-tou-ev8``     SCE TOU-EV-8. Summer (default): peak 15:00-20:00 $0.37, otherwise $0.13.
                    Winter (``season = "winter"``): off-peak 00:00-07:00 and 20:00-24:00 $0.13,
                    super-off-peak 07:00-15:00 $0.08, part-peak 15:00-20:00 $0.26.
``cap``             No prices: the aggregate must stay at or below the cap, by default 0.8 of the
                    uncontrolled peak (upstream required the level as an argument; at 1.0 the
                    uncontrolled schedule itself would satisfy it).
``minpeak``         Minimise the daily aggregate maximum: a $1/kW demand charge on the whole
                    day, no energy price.
==================  ===========================================================================

A rate file is TOML (``.toml``) or JSON (``.json``; any other name is tried as JSON, then TOML).
It either refines a built-in::

    builtin = "sce-tou-ev8"
    season = "winter"          # sce-tou-ev8 only: "summer" (default) or "winter"
    cap_kw = 150.0             # optional on any built-in; or cap_fraction = 0.9

or defines a tariff, with energy prices either as 96 numbers (``energy_price = [...]``) or per
named period, the periods covering the day exactly once::

    name = "paper-custom"
    [periods]
    super-off-peak = ["11:00-15:00"]
    off-peak = ["09:00-11:00", "15:00-17:00"]
    mid = ["07:00-09:00"]
    peak = ["17:00-07:00"]           # a range may wrap midnight
    [energy]                         # $/kWh, one price per period
    super-off-peak = 0.0
    off-peak = 0.05
    mid = 0.10
    peak = 0.15
    [[demand_charges]]               # $/kW on the window's maximum
    name = "night"
    price = 20.0
    ranges = ["16:00-06:00"]         # or periods = ["peak"]
    [[demand_charges]]
    name = "overall"
    price = 2.0
    ranges = ["00:00-24:00"]

Times are ``HH:MM`` on 15-minute boundaries, ``24:00`` allowed as an end; a range whose end is
before its start wraps midnight. Every problem is a :class:`~script_ec2.errors.UsageError`
naming the file and the field. :meth:`Rate.to_json` gives the canonical form (96 energy prices,
demand windows as sorted non-wrapping ranges, every key present), itself a valid rate file.

numpy is imported by the functions that build or apply a rate, not by this module, so the names
and defaults (:data:`RATE_NAMES`, :data:`DEFAULT_RATE`) cost a cached fit nothing.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

SLOTS = 96
SLOT_HOURS = 0.25
SLOT_MINUTES = 15
DEFAULT_RATE = "e19"
CAP_DEFAULT_FRACTION = 0.8
SEASONS = ("summer", "winter")

_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_RANGE_RE = re.compile(r"\s*(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})\s*")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()-]{0,63}")

_TOP_FIELDS_CUSTOM = frozenset(
    {"name", "energy_price", "periods", "energy", "demand_charges", "cap_kw", "cap_fraction"}
)
_TOP_FIELDS_BUILTIN = frozenset({"builtin", "name", "season", "cap_kw", "cap_fraction"})
_DEMAND_FIELDS = frozenset({"name", "price", "ranges", "periods"})


# --------------------------------------------------------------------------- the rate


@dataclass(frozen=True, eq=False)
class DemandCharge:
    """A charge in $/kW on the largest aggregate power inside ``mask`` (96 booleans)."""

    name: str
    mask: np.ndarray
    price: float

    def __post_init__(self) -> None:
        import numpy as np

        mask = np.array(self.mask, dtype=bool)
        if mask.shape != (SLOTS,) or not mask.any():
            raise ValueError(f"demand charge {self.name!r}: mask must be 96 booleans, some true")
        mask.setflags(write=False)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "price", float(self.price))


@dataclass(frozen=True, eq=False)
class Rate:
    """A daily tariff on the 96-slot grid; equal rates have equal :meth:`to_json`."""

    name: str
    energy_price: np.ndarray  # (96,) $/kWh
    demand_charges: tuple[DemandCharge, ...] = ()
    cap_kw: float | None = None
    cap_fraction: float | None = None
    source: str = field(default="", compare=False)  # where it came from, for messages only

    def __post_init__(self) -> None:
        import numpy as np

        price = np.array(self.energy_price, dtype=float)
        if price.shape != (SLOTS,):
            raise ValueError(f"rate {self.name!r}: energy_price must have 96 values")
        price.setflags(write=False)
        object.__setattr__(self, "energy_price", price)
        object.__setattr__(self, "demand_charges", tuple(self.demand_charges))
        if self.cap_kw is not None and self.cap_fraction is not None:
            raise ValueError(f"rate {self.name!r}: give cap_kw or cap_fraction, not both")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    @property
    def has_prices(self) -> bool:
        """Whether any energy price or demand charge is non-zero (else only the cap matters)."""
        return bool(self.energy_price.any()) or any(d.price > 0 for d in self.demand_charges)

    def cap_level(self, uncontrolled_peak_kw: float) -> float | None:
        """The aggregate cap in kW for a day whose uncontrolled peak is given, or None."""
        if self.cap_kw is not None:
            return self.cap_kw
        if self.cap_fraction is not None:
            return self.cap_fraction * float(uncontrolled_peak_kw)
        return None

    def cost(self, profile_kw: np.ndarray) -> np.ndarray:
        """$ per day of aggregate profile(s) (..., 96) in kW: energy plus each demand charge."""
        import numpy as np

        profile = np.asarray(profile_kw, dtype=float)
        if profile.shape[-1] != SLOTS:
            raise ValueError("profiles must have 96 slots in the last axis")
        total = profile @ self.energy_price * SLOT_HOURS
        for charge in self.demand_charges:
            total = total + charge.price * profile[..., charge.mask].max(axis=-1)
        return np.asarray(total)

    def to_json(self) -> dict[str, Any]:
        """The canonical form: stable keys, 96 float prices, sorted non-wrapping ranges."""
        return {
            "name": self.name,
            "energy_price": [float(p) for p in self.energy_price],
            "demand_charges": [
                {"name": d.name, "price": d.price, "ranges": mask_to_ranges(d.mask)}
                for d in self.demand_charges
            ],
            "cap_kw": self.cap_kw,
            "cap_fraction": self.cap_fraction,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "rate JSON") -> Rate:
        """A rate from :meth:`to_json` output or any accepted rate-file mapping (validated)."""
        return _parse(data, source)


# --------------------------------------------------------------------------- built-ins

_PGE_CEV_PERIODS = {
    "peak": ["16:00-22:00"],
    "part-peak": ["22:00-09:00", "14:00-16:00"],
    "off-peak": ["09:00-14:00"],
}
_PGE_CEV_ENERGY = {"peak": 0.30267, "part-peak": 0.11079, "off-peak": 0.08882}
_PGE_CEV_SUBSCRIPTION_PER_50KW = 183.86
_ALL_DAY = ["00:00-24:00"]

_BUILTINS: dict[str, dict[str, Any]] = {
    "e19": {
        "name": "e19",
        "periods": {
            "off-peak": ["00:00-08:30", "21:30-24:00"],
            "part-peak": ["08:30-12:00", "18:00-21:30"],
            "peak": ["12:00-18:00"],
        },
        "energy": {"off-peak": 0.09082, "part-peak": 0.12236, "peak": 0.16997},
        "demand_charges": [
            {"name": "overall", "price": 19.10, "ranges": _ALL_DAY},
            {"name": "peak", "price": 21.23, "periods": ["peak"]},
            {"name": "part-peak", "price": 5.85, "periods": ["part-peak"]},
        ],
    },
    "pge-cev": {
        "name": "pge-cev",
        "periods": _PGE_CEV_PERIODS,
        "energy": _PGE_CEV_ENERGY,
        "cap_fraction": 1.0,
    },
    "pge-cev-demand": {
        "name": "pge-cev-demand",
        "periods": _PGE_CEV_PERIODS,
        "energy": _PGE_CEV_ENERGY,
        "demand_charges": [
            {
                "name": "overall",
                "price": _PGE_CEV_SUBSCRIPTION_PER_50KW / 50.0,
                "ranges": _ALL_DAY,
            }
        ],
    },
    "pge-cev-energy": {
        "name": "pge-cev-energy",
        "periods": _PGE_CEV_PERIODS,
        "energy": _PGE_CEV_ENERGY,
    },
    "sce-tou-ev8": {
        "name": "sce-tou-ev8",
        "periods": {"peak": ["15:00-20:00"], "off-peak": ["20:00-15:00"]},
        "energy": {"peak": 0.37, "off-peak": 0.13},
    },
    "cap": {"name": "cap", "energy_price": [0.0] * SLOTS, "cap_fraction": CAP_DEFAULT_FRACTION},
    "minpeak": {
        "name": "minpeak",
        "energy_price": [0.0] * SLOTS,
        "demand_charges": [{"name": "overall", "price": 1.0, "ranges": _ALL_DAY}],
    },
}
_SCE_WINTER: dict[str, Any] = {
    "name": "sce-tou-ev8 (winter)",
    "periods": {
        "off-peak": ["00:00-07:00", "20:00-24:00"],
        "super-off-peak": ["07:00-15:00"],
        "part-peak": ["15:00-20:00"],
    },
    "energy": {"off-peak": 0.13, "super-off-peak": 0.08, "part-peak": 0.26},
}

RATE_NAMES: tuple[str, ...] = tuple(_BUILTINS)


def builtin_rate(name: str, *, season: str = "summer") -> Rate:
    """A built-in rate by name (see the module docstring); ``season`` for sce-tou-ev8 only."""
    if name not in _BUILTINS:
        raise UsageError(
            f"unknown rate {name!r}: choose one of {', '.join(RATE_NAMES)} "
            "or give the path of a TOML or JSON rate file"
        )
    if season not in SEASONS:
        raise UsageError(f"rate {name}: season must be one of {', '.join(SEASONS)}, got {season!r}")
    spec = _SCE_WINTER if name == "sce-tou-ev8" and season == "winter" else _BUILTINS[name]
    return _parse(spec, f"built-in rate {name}")


def load_rate(name_or_path: str | Path | None = None) -> Rate:
    """A built-in rate by name, or a rate file by path; None gives the default (``e19``)."""
    if name_or_path is None:
        return builtin_rate(DEFAULT_RATE)
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in _BUILTINS:
        return builtin_rate(text)
    path = Path(text)
    looks_like_file = (
        isinstance(name_or_path, Path)
        or path.suffix.lower() in (".toml", ".json")
        or "/" in text
        or path.exists()
    )
    if not looks_like_file:
        return builtin_rate(text)  # raises the "unknown rate" error listing the names
    return read_rate_file(path)


def read_rate_file(path: Path) -> Rate:
    """Parse and validate one TOML or JSON rate file."""
    source = f"rate file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"{source} not found: give an existing file or one of {', '.join(RATE_NAMES)}"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{source} is not UTF-8 text (expected TOML or JSON)") from None
    data = _decode(text, path.suffix.lower(), source)
    if not isinstance(data, dict):
        raise UsageError(f"{source}: the top level must be a table/object of fields")
    return _parse(data, source)


def _decode(text: str, suffix: str, source: str) -> Any:
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{source} is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if suffix == ".json":
            raise UsageError(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise UsageError(f"{source} is neither TOML nor JSON") from None


# --------------------------------------------------------------------------- parsing


def _fail(source: str, field_name: str, problem: str) -> UsageError:
    return UsageError(f"{source}: {field_name}: {problem}")


def _parse(data: Mapping[str, Any], source: str) -> Rate:
    """Validate a rate mapping (built-in reference or custom tariff) into a :class:`Rate`."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: the rate must be a table/object of fields")
    # JSON null means "not given" for the optional fields (to_json writes nulls).
    fields = {k: v for k, v in data.items() if v is not None}
    if "builtin" in fields:
        return _parse_builtin_reference(fields, source)
    _check_fields(fields, _TOP_FIELDS_CUSTOM, "", source)
    name = _parse_name(fields.get("name"), "name", source)
    periods: dict[str, np.ndarray] = {}
    if "periods" in fields:
        periods = _parse_periods(fields["periods"], source)
    energy = _parse_energy(fields, periods, source)
    charges = _parse_demand(fields.get("demand_charges", []), periods, source)
    cap_kw, cap_fraction = _parse_cap(fields, source)
    return Rate(name, energy, tuple(charges), cap_kw, cap_fraction, source)


def _parse_builtin_reference(fields: Mapping[str, Any], source: str) -> Rate:
    _check_fields(fields, _TOP_FIELDS_BUILTIN, "", source)
    builtin = fields["builtin"]
    if not isinstance(builtin, str) or builtin not in _BUILTINS:
        raise _fail(source, "builtin", f"unknown rate {builtin!r}; one of {', '.join(RATE_NAMES)}")
    season = fields.get("season", "summer")
    if "season" in fields and builtin != "sce-tou-ev8":
        raise _fail(source, "season", f"only sce-tou-ev8 has seasons, not {builtin}")
    if season not in SEASONS:
        raise _fail(source, "season", f"must be one of {', '.join(SEASONS)}, got {season!r}")
    base = builtin_rate(builtin, season=season)
    name = base.name
    if "name" in fields:
        name = _parse_name(fields["name"], "name", source)
    cap_kw, cap_fraction = base.cap_kw, base.cap_fraction
    if "cap_kw" in fields or "cap_fraction" in fields:
        cap_kw, cap_fraction = _parse_cap(fields, source)
    return Rate(name, base.energy_price, base.demand_charges, cap_kw, cap_fraction, source)


def _check_fields(
    fields: Mapping[str, Any], allowed: frozenset[str], where: str, source: str
) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise _fail(
            source,
            f"{where}{unknown[0]}",
            f"unknown field; allowed fields are {', '.join(sorted(allowed))}",
        )


def _parse_name(value: Any, field_name: str, source: str) -> str:
    if value is None:
        raise _fail(source, field_name, "missing field")
    if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
        raise _fail(
            source,
            field_name,
            "must be 1-64 letters, digits, blanks or _.()- starting with a letter or digit",
        )
    return value


def _number(value: Any, field_name: str, source: str, *, positive: bool = False) -> float:
    # bool is an int subclass; true/false is never meant as a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, field_name, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(source, field_name, f"must be finite, got {value!r}")
    if positive and number <= 0:
        raise _fail(source, field_name, f"must be greater than 0, got {value!r}")
    if number < 0:
        raise _fail(source, field_name, f"must not be negative, got {value!r}")
    return number


def _parse_time(text: str, field_name: str, source: str, *, end: bool) -> int:
    """Slot index of ``HH:MM`` (a boundary 0..96); 24:00 only as an end."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise _fail(source, field_name, f"bad time {text!r} (expected HH:MM)")
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute >= 60 or hour > 24 or (hour == 24 and (minute or not end)):
        raise _fail(source, field_name, f"bad time {text!r} (00:00 to 24:00)")
    if minute % SLOT_MINUTES:
        raise _fail(source, field_name, f"time {text!r} is not on a 15-minute boundary")
    return hour * 4 + minute // SLOT_MINUTES


def _parse_ranges(value: Any, field_name: str, source: str) -> np.ndarray:
    """A 96-slot mask from ``["HH:MM-HH:MM", ...]``; ranges may wrap but must not overlap."""
    import numpy as np

    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _fail(source, field_name, 'must be a non-empty list of "HH:MM-HH:MM" ranges')
    mask = np.zeros(SLOTS, dtype=bool)
    for k, item in enumerate(value):
        where = f"{field_name}[{k}]"
        match = _RANGE_RE.fullmatch(item) if isinstance(item, str) else None
        if match is None:
            raise _fail(source, where, f'bad time range {item!r} (expected "HH:MM-HH:MM")')
        start = _parse_time(match.group(1), where, source, end=False)
        stop = _parse_time(match.group(2), where, source, end=True)
        if start == stop:
            raise _fail(
                source, where, f"empty time range {item!r} (write 00:00-24:00 for the whole day)"
            )
        slots = np.arange(start, stop if stop > start else stop + SLOTS) % SLOTS
        if mask[slots].any():
            raise _fail(source, where, f"time range {item!r} overlaps an earlier range")
        mask[slots] = True
    return mask


def _parse_periods(value: Any, source: str) -> dict[str, np.ndarray]:
    import numpy as np

    if not isinstance(value, Mapping) or not value:
        raise _fail(source, "periods", "must be a table of period name -> list of time ranges")
    periods: dict[str, np.ndarray] = {}
    covered = np.zeros(SLOTS, dtype=int)
    for name, ranges in value.items():
        _parse_name(name, f"periods.{name}", source)
        mask = _parse_ranges(ranges, f"periods.{name}", source)
        both = covered.astype(bool) & mask
        if both.any():
            raise _fail(
                source,
                f"periods.{name}",
                f"overlaps another period at {slot_time(int(np.argmax(both)))}",
            )
        covered += mask
        periods[name] = mask
    if not covered.all():
        gap = int(np.argmin(covered))
        raise _fail(
            source, "periods", f"the periods leave a gap at {slot_time(gap)}; cover 00:00-24:00"
        )
    return periods


def _parse_energy(
    fields: Mapping[str, Any], periods: Mapping[str, np.ndarray], source: str
) -> np.ndarray:
    import numpy as np

    if "energy_price" in fields:
        if "energy" in fields or periods:
            raise _fail(source, "energy_price", "give energy_price or periods + energy, not both")
        value = fields["energy_price"]
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise _fail(source, "energy_price", "must be a list of 96 prices in $/kWh")
        if len(value) != SLOTS:
            raise _fail(
                source,
                "energy_price",
                f"must have 96 values (one per 15 minutes), got {len(value)}",
            )
        return np.array([_number(v, f"energy_price[{k}]", source) for k, v in enumerate(value)])
    if "energy" not in fields:
        raise _fail(source, "energy", "missing field (or give energy_price with 96 prices)")
    if not periods:
        raise _fail(source, "periods", "missing field (energy prices are given per period)")
    energy = fields["energy"]
    if not isinstance(energy, Mapping):
        raise _fail(source, "energy", "must be a table of period name -> $/kWh")
    for name in energy:
        if name not in periods:
            raise _fail(source, f"energy.{name}", "unknown period (not in periods)")
    price = np.zeros(SLOTS)
    for name, mask in periods.items():
        if name not in energy:
            raise _fail(source, f"energy.{name}", "missing field (a price for every period)")
        price[mask] = _number(energy[name], f"energy.{name}", source)
    return price


def _parse_demand(value: Any, periods: Mapping[str, np.ndarray], source: str) -> list[DemandCharge]:
    if isinstance(value, str | Mapping) or not isinstance(value, Sequence):
        raise _fail(source, "demand_charges", "must be a list of {name, price, ranges|periods}")
    charges: list[DemandCharge] = []
    for k, item in enumerate(value):
        where = f"demand_charges[{k}]"
        if not isinstance(item, Mapping):
            raise _fail(source, where, "must be a table with name, price and ranges or periods")
        item = {key: v for key, v in item.items() if v is not None}
        _check_fields(item, _DEMAND_FIELDS, f"{where}.", source)
        name = _parse_name(item.get("name"), f"{where}.name", source)
        if any(c.name == name for c in charges):
            raise _fail(source, f"{where}.name", f"duplicate demand charge name {name!r}")
        if "price" not in item:
            raise _fail(source, f"{where}.price", "missing field ($/kW)")
        price = _number(item["price"], f"{where}.price", source)
        if ("ranges" in item) == ("periods" in item):
            raise _fail(source, where, "give exactly one of ranges or periods")
        if "ranges" in item:
            mask = _parse_ranges(item["ranges"], f"{where}.ranges", source)
        else:
            mask = _period_mask(item["periods"], periods, f"{where}.periods", source)
        charges.append(DemandCharge(name, mask, price))
    return charges


def _period_mask(
    value: Any, periods: Mapping[str, np.ndarray], field_name: str, source: str
) -> np.ndarray:
    import numpy as np

    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _fail(source, field_name, "must be a non-empty list of period names")
    mask = np.zeros(SLOTS, dtype=bool)
    for name in value:
        if not isinstance(name, str) or name not in periods:
            raise _fail(source, field_name, f"unknown period {name!r}")
        mask |= periods[name]
    return mask


def _parse_cap(fields: Mapping[str, Any], source: str) -> tuple[float | None, float | None]:
    if "cap_kw" in fields and "cap_fraction" in fields:
        raise _fail(source, "cap_kw", "give cap_kw or cap_fraction, not both")
    cap_kw = cap_fraction = None
    if "cap_kw" in fields:
        cap_kw = _number(fields["cap_kw"], "cap_kw", source, positive=True)
    if "cap_fraction" in fields:
        cap_fraction = _number(fields["cap_fraction"], "cap_fraction", source, positive=True)
    return cap_kw, cap_fraction


# --------------------------------------------------------------------------- time helpers


def slot_time(slot: int) -> str:
    """``HH:MM`` of a slot boundary 0..96."""
    return f"{slot // 4:02d}:{slot % 4 * SLOT_MINUTES:02d}"


def mask_to_ranges(mask: np.ndarray) -> list[str]:
    """Sorted, non-wrapping ``HH:MM-HH:MM`` ranges of the true runs of a 96-slot mask."""
    import numpy as np

    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [f"{slot_time(a)}-{slot_time(b)}" for a, b in zip(edges[::2], edges[1::2], strict=True)]
