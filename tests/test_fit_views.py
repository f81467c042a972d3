"""The views of a stored fit, read without numpy, equal numpy's reading of the same arrays.

:func:`script_ec2.fitting.result_document` (JSON) and :func:`~script_ec2.fitting.headline` read
the float64 tables straight from the stored ``.npz`` bytes so that a cache hit need not import
numpy; :func:`~script_ec2.fitting.profile_grid` is numpy's reading, the oracle here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from script_ec2 import fitting
from script_ec2.errors import DataError
from script_ec2.forecast_fit import COLUMNS
from script_ec2.registry import NpzArrays, npz_bytes
from script_ec2.results import StoredResult

SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1]


@st.composite
def _tables(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A forecast's arrays: 96 steps, maybe 1440, maybe controlled, with odd values planted."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.int64]))
    names = ["uncontrolled_96"]
    if draw(st.booleans()):
        names.append("uncontrolled_1440")
    if draw(st.booleans()):
        names += [n.replace("uncontrolled", "controlled") for n in names]
    arrays = {}
    for name in names:
        steps = int(name.rsplit("_", 1)[1])
        table = rng.random((steps, len(COLUMNS))) * 1000.0
        if draw(st.booleans()):
            table[rng.integers(steps), -1] = table[:, -1].max()  # a tie for the peak
        if dtype is np.float64:
            planted = st.tuples(st.sampled_from(SPECIAL), st.booleans())
            for value, in_total in draw(st.lists(planted, max_size=4)):
                column = -1 if in_total else rng.integers(len(COLUMNS))
                table[rng.integers(steps), column] = value
        arrays[name] = table.astype(dtype)
    return arrays


def _stored(arrays: dict[str, np.ndarray], *, lazy: bool) -> StoredResult:
    return StoredResult(
        key="f" * 64,
        algorithm="load-forecast",
        params={},
        model_versions={},
        meta={"columns": list(COLUMNS), "vehicles": 1234, "energy_kwh": 5678.9},
        arrays=NpzArrays(npz_bytes(arrays)) if lazy else arrays,
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        compute_seconds=1.5,
    )


def _numpy_views(result: StoredResult) -> tuple[dict[str, Any], str]:
    """The profile part of the JSON document and the headline, read with numpy."""
    columns, uncontrolled, controlled = fitting.profile_grid(result, full=True)

    def by_column(table: np.ndarray | None) -> dict[str, list[float]] | None:
        return None if table is None else {c: table[:, i].tolist() for i, c in enumerate(columns)}

    document = {
        "columns": columns,
        "time": fitting.time_labels(uncontrolled.shape[0]),
        "uncontrolled": by_column(uncontrolled),
        "controlled": by_column(controlled),
    }
    shown = controlled if controlled is not None else uncontrolled
    total = shown[:, -1]
    step = int(total.argmax())
    variant = "controlled " if controlled is not None else ""
    headline = (
        f"{variant}peak {float(total[step]):,.0f} kW at "
        f"{fitting.time_labels(shown.shape[0])[step]}; 1,234 vehicles; 5,679 kWh"
    )
    return document, headline


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tables(), st.booleans())
def test_property_views_equal_numpys_reading(arrays: dict[str, np.ndarray], lazy: bool) -> None:
    result = _stored(arrays, lazy=lazy)
    expected_document, expected_headline = _numpy_views(_stored(arrays, lazy=False))
    document = fitting.result_document(fitting.FitOutcome(result, cached=True, seconds=0.25))
    profile = {k: document[k] for k in expected_document}
    # As text: NaN never equals itself, and the JSON text is what a client reads.
    assert json.dumps(profile) == json.dumps(expected_document)
    assert fitting.headline(result) == expected_headline


def test_document_of_a_result_without_its_uncontrolled_profile_fails() -> None:
    result = _stored({"controlled_96": np.zeros((96, 7))}, lazy=True)
    with pytest.raises(DataError, match="has no uncontrolled profile"):
        fitting.result_document(fitting.FitOutcome(result, cached=True, seconds=0.0))
