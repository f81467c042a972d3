"""The documented mapping from a charging session to its statistics and forecast segments.

Both mappings look only at three session columns: ``POI Category``, ``Max Power`` (kW, the port
rating) and ``Connector Type``. Text comparisons ignore case and surrounding blanks. They are
vectorised: each function takes equal-length array-likes (Arrow arrays, pandas Series, numpy
arrays, lists) and returns a numpy object array, one label per session. A missing ``Max Power``
fails every power test, so such a session is fast only through its connector.

A session is **fast** when ``Max Power >= 20`` kW or its connector is one of CHAdeMO, Combo, CCS,
CCS1, SAE Combo, Tesla Supercharger. The **public** POI categories are Parking, Retail, Municipal,
Education, Hospitality, Government (Fed, State), Parks and Recreation, Healthcare, Utility.
"L2" below means ``2 < Max Power < 20`` kW; "L1" means ``Max Power <= 2`` kW.

Statistics segment (:func:`stats_segment`; the first matching row wins):

==============  =========================================================================
Segment         Rule
==============  =========================================================================
dc_fast         fast (any POI category)
multifamily     POI category starts with "Multifamily", not fast (any power)
workplace_l2    POI category "Workplace", L2
public_l2       a public POI category, L2
other           everything else: Fleet, L1 at workplace or public sites, unknown categories,
                missing power
==============  =========================================================================

Forecast segment (:func:`forecast_segment`; the first matching row wins; the labels are
:data:`FORECAST_SEGMENTS`, the load forecast's segments):

===============  ========================================================================
Segment          Rule
===============  ========================================================================
DC Fast          fast (any POI category)
Residential L1   POI category starts with "Multifamily", L1
Residential L2   POI category "Multifamily Home Service", L2
Residential MUD  any other "Multifamily…" category (e.g. "Multifamily Commercial"), L2
Workplace        POI category "Workplace", ``Max Power <= 10`` kW (upstream's control filter)
Public L2        a public POI category, L2
(none)           everything else: Fleet, Workplace between 10 and 20 kW, L1 at public
                 sites, unknown categories, missing power
===============  ========================================================================

Why the residential rows read this way: the commercial export has no single-family home data, so
the closest stand-ins are its residential sites. "Multifamily Home Service" ports are chargers
assigned to one resident, so they charge like a home L2 charger and feed Residential L2; shared
"Multifamily Commercial" ports feed Residential MUD. Residential L1 uses only L1 ports at
residential (Multifamily) sites, not L1 ports at workplaces or public sites, whose start times
follow the working day rather than the evening at home.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

STATS_SEGMENTS = ("workplace_l2", "public_l2", "dc_fast", "multifamily", "other")

FORECAST_SEGMENTS = (
    "Residential L1",
    "Residential L2",
    "Residential MUD",
    "Workplace",
    "Public L2",
    "DC Fast",
)

FAST_POWER_KW = 20.0
L1_MAX_KW = 2.0
WORKPLACE_FORECAST_MAX_KW = 10.0

FAST_CONNECTORS = frozenset({"chademo", "combo", "ccs", "ccs1", "sae combo", "tesla supercharger"})
PUBLIC_CATEGORIES = frozenset(
    {
        "parking",
        "retail",
        "municipal",
        "education",
        "hospitality",
        "government (fed, state)",
        "parks and recreation",
        "healthcare",
        "utility",
    }
)
_WORKPLACE = "workplace"
_MULTIFAMILY_PREFIX = "multifamily"
_HOME_SERVICE = "multifamily home service"

ArrayLike = Any  # an Arrow array, a pandas Series, a numpy array or a sequence


def _norm(value: object) -> str:
    return value.strip().casefold() if isinstance(value, str) else ""


class _Text:
    """A text column factorised once, so each test runs per distinct value (a few dozen).

    Arrow arrays (what ingest passes) are dictionary-encoded in C++; anything else goes through
    one dict look-up per row. pandas is not needed, which keeps it out of ``sync``'s imports.
    """

    def __init__(self, values: ArrayLike):
        if hasattr(values, "dictionary_encode"):  # pyarrow Array or ChunkedArray
            import pyarrow as pa
            import pyarrow.compute as pc

            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            encoded = pc.dictionary_encode(values)
            uniques: list[object] = encoded.dictionary.to_pylist()
            missing = len(uniques)
            self.codes = pc.fill_null(encoded.indices, missing).to_numpy(zero_copy_only=False)
        else:
            index: dict[object, int] = {}
            items = np.asarray(values, dtype=object).ravel()
            self.codes = np.fromiter(
                (index.setdefault(v, len(index)) for v in items), dtype=np.intp, count=len(items)
            )
            uniques = list(index)
        # The trailing "" entry is what missing Arrow values point at.
        self.values = [_norm(u) for u in uniques] + [""]

    def __len__(self) -> int:
        return len(self.codes)

    def flags(self, test: Callable[[str], bool]) -> np.ndarray:
        return np.array([test(v) for v in self.values], dtype=bool)[self.codes]


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _power(max_power: ArrayLike) -> np.ndarray:
    """Max Power as float kW; anything that is not a number becomes NaN."""
    if hasattr(max_power, "dictionary_encode"):  # pyarrow: nulls become NaN
        max_power = max_power.to_numpy(zero_copy_only=False)
    array = np.asarray(max_power)
    if array.dtype.kind in "fiub":
        return array.astype(float, copy=False)
    return np.fromiter((_number(v) for v in array.ravel()), dtype=float, count=array.size)


def is_fast(max_power: ArrayLike, connector: ArrayLike) -> np.ndarray:
    """True where a session is DC fast: ``Max Power >= 20`` kW or a fast connector."""
    power = _power(max_power)
    fast_connector = _Text(connector).flags(FAST_CONNECTORS.__contains__)
    if len(power) != len(fast_connector):
        raise ValueError("max_power and connector must have the same length")
    return (power >= FAST_POWER_KW) | fast_connector


def _inputs(
    poi: ArrayLike, max_power: ArrayLike, connector: ArrayLike
) -> tuple[_Text, np.ndarray, np.ndarray]:
    """(POI categories, power in kW, fast flags), checked to be of one length."""
    categories = _Text(poi)
    power = _power(max_power)
    fast = is_fast(power, connector)
    if len(categories) != len(power):
        raise ValueError("poi and max_power must have the same length")
    return categories, power, fast


def _pick(conditions: list[np.ndarray], labels: Sequence[str | None]) -> np.ndarray:
    """The label of the first true condition per row; the last label where none holds."""
    choices = np.array(labels, dtype=object)
    index = np.select(conditions, list(range(len(conditions))), default=len(conditions))
    return choices[index]


def stats_segment(poi: ArrayLike, max_power: ArrayLike, connector: ArrayLike) -> np.ndarray:
    """The statistics segment of each session (see the module docstring for the rules)."""
    categories, power, fast = _inputs(poi, max_power, connector)
    l2 = (power > L1_MAX_KW) & (power < FAST_POWER_KW)
    return _pick(
        [
            fast,
            categories.flags(lambda p: p.startswith(_MULTIFAMILY_PREFIX)),
            categories.flags(_WORKPLACE.__eq__) & l2,
            categories.flags(PUBLIC_CATEGORIES.__contains__) & l2,
        ],
        ["dc_fast", "multifamily", "workplace_l2", "public_l2", "other"],
    )


def forecast_segment(poi: ArrayLike, max_power: ArrayLike, connector: ArrayLike) -> np.ndarray:
    """The load-forecast segment of each session, or None (see the module docstring)."""
    categories, power, fast = _inputs(poi, max_power, connector)
    multifamily = categories.flags(lambda p: p.startswith(_MULTIFAMILY_PREFIX))
    l1 = power <= L1_MAX_KW
    l2 = (power > L1_MAX_KW) & (power < FAST_POWER_KW)
    return _pick(
        [
            fast,
            multifamily & l1,
            categories.flags(_HOME_SERVICE.__eq__) & l2,
            multifamily & l2,
            categories.flags(_WORKPLACE.__eq__) & (power <= WORKPLACE_FORECAST_MAX_KW),
            categories.flags(PUBLIC_CATEGORIES.__contains__) & l2,
        ],
        [
            "DC Fast",
            "Residential L1",
            "Residential L2",
            "Residential MUD",
            "Workplace",
            "Public L2",
            None,
        ],
    )
