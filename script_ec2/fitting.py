"""Fit requests end to end: validate, pin the models, key, answer from the cache or compute, store.

The steps are separate so a queue worker can run them apart (:func:`fit` chains them):

* :func:`prepare` validates the parameters (:mod:`script_ec2.params`; every problem is a
  ParamError, exit 2), picks the newest complete registry version of every model the request
  needs and computes the cache key. It reads only the listing and the newest ``model.json`` of
  each model it needs (:meth:`~script_ec2.registry.Registry.newest`), never model arrays, so a
  cache hit neither loads a model nor imports numpy, scikit-learn, scipy or matplotlib. A missing
  model is a :class:`ModelNotAvailable` (exit 2) that lists the models there are.
* :func:`lookup` returns a stored result and counts the hit. :func:`result_document` (the JSON
  form) reads its float64 tables straight from the stored ``.npz`` bytes, so a hit printed as
  JSON does not import numpy either; tables, CSV and charts use numpy.
* :func:`answer` is :func:`fit` for the command line: it looks a request up through the database
  driver alone and builds the SQLAlchemy engine only for a miss.
* :func:`compute` loads the pinned versions (checksums verified, content hash compared with the
  key's), runs the algorithm and stores the result idempotently (:func:`script_ec2.results.save`).

**What the key covers** (:func:`script_ec2.params.canonical_json`): the validated parameters with
defaults filled, the algorithm and its version, units, the content hash of every model used and,
for a county forecast, the sha256 of the county EV-distribution file under the name
``data:county_ev_distribution.csv``, because the county's share of ``num_evs`` comes from it.
A retrained model, an edited EV file or a changed algorithm therefore never returns a stale result.

**Load forecast.** Only the session models of segments that get vehicles are needed (with the
default ``publicl2_percent`` 0 no Public L2 model is), and the control model
``control-<county>-<rate>`` when ``work_control`` is set. Arrays: ``uncontrolled_96`` and, on the
1-minute grid, ``uncontrolled_1440`` (steps × the seven columns of
:data:`script_ec2.forecast_fit.COLUMNS`, kW), plus the ``controlled_*`` tables when controlled.

**Load control** (parameters ``county`` and ``rate``). The workplace profile of the county is the
control model's stored ``reference_uncontrolled`` profile, the mean of its training runs'
aggregates (about 200 sessions each), used as is: the model maps profiles normalised by their
peak, so a profile scaled by k gives a controlled profile scaled by k, and the energy parts of the
costs scale with it. The controlled profile is :func:`script_ec2.control.predict_controlled` of
it. Costs are $ per day under the rate the model was trained for (stored in the model, so a rate
file that redefines a rate name cannot silently mix definitions; see :func:`rate_param`).
Arrays: ``uncontrolled_96`` and ``controlled_96`` (96 values, kW); meta: peaks, peak reduction in
kW and %, costs, daily energies and the model reference.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2.errors import BucketNotFound, DataError, KeyNotFound, UsageError
from script_ec2.params import (
    ALGORITHM_VERSIONS,
    ALGORITHMS,
    LOAD_CONTROL,
    LOAD_FORECAST,
    ParamError,
    cache_key,
    canonical_json,
    parse_pairs,
    validate,
)
from script_ec2.results import StoredResult
from script_ec2.results import lookup as _lookup_row
from script_ec2.results import save as _save_row

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Engine

    from script_ec2.registry import LoadedModel, ModelVersion, Registry
    from script_ec2.store.interface import ObjectStore

__all__ = [
    "COUNTY_EV_FILE",
    "FitOutcome",
    "FitRequest",
    "ModelNotAvailable",
    "StoredResult",
    "answer",
    "compute",
    "fit",
    "headline",
    "lookup",
    "merge_params",
    "pick_algorithm",
    "prepare",
    "profile_grid",
    "rate_param",
    "read_county_evs",
    "result_document",
    "summary_line",
    "table_rows",
    "table_title",
    "time_labels",
    "title",
    "with_control",
]

COUNTY_EV_FILE = "county_ev_distribution.csv"
_DATA_PREFIX = "data:"
CONTROL_PREFIX = "control-"
SESSION_PREFIX = "sessions-"
_UNSET = ("", "none", "null")


class ModelNotAvailable(UsageError):
    """A model the request needs is not in the registry; the message lists those that are."""


@dataclass(frozen=True)
class FitRequest:
    """A validated request whose models are pinned and whose cache key is known."""

    algorithm: str
    params: dict[str, Any]
    model_versions: dict[str, dict[str, Any]]  # name -> {"version": int, "content_hash": str}
    key: str
    canonical: str
    inputs: dict[str, str] = field(default_factory=dict)  # data file -> sha256 of its bytes


@dataclass(frozen=True)
class FitOutcome:
    result: StoredResult
    cached: bool
    seconds: float  # wall time of this request: the lookup for a hit, everything for a miss


# --------------------------------------------------------------------------- parameters


def merge_params(
    file_values: Mapping[str, Any] | None,
    pairs: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw parameters: a params file's values, then ``key=value`` flags, then named options.

    Later sources win; keys are compared after ``-`` → ``_``. Values stay raw for :func:`prepare`.
    """
    merged: dict[str, Any] = {}
    for source in (file_values or {}, parse_pairs(pairs), overrides or {}):
        for name, value in source.items():
            merged[name.strip().replace("-", "_")] = value
    return merged


def with_control(raw_params: Mapping[str, Any]) -> dict[str, Any]:
    """``raw_params`` with workplace control on: ``work_control`` as given, else ``e19``."""
    from script_ec2.rates import DEFAULT_RATE

    result = dict(raw_params)
    current = result.get("work_control")
    if current is None or (isinstance(current, str) and current.strip().lower() in _UNSET):
        result["work_control"] = DEFAULT_RATE
    return result


def pick_algorithm(named: str | None, from_file: str | None) -> str:
    """The algorithm of a request: the subcommand's, else the params file's ``algorithm``."""
    if named is not None and from_file is not None and named != from_file:
        raise ParamError([("algorithm", f"the params file is for {from_file!r}, not {named!r}")])
    algorithm = named or from_file
    if algorithm is None:
        raise ParamError(
            [
                (
                    "algorithm",
                    'not given: name it in the params file ("algorithm": "load-forecast") '
                    f"or as a subcommand (one of {', '.join(ALGORITHMS)})",
                )
            ]
        )
    if algorithm not in ALGORITHMS:
        raise ParamError(
            [("algorithm", f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")]
        )
    return algorithm


def _looks_like_rate_file(text: str) -> bool:
    from script_ec2.rates import RATE_NAMES

    if text in RATE_NAMES:
        return False
    path = Path(text)
    return path.suffix.lower() in (".toml", ".json") or "/" in text or path.is_file()


def rate_param(registry: Registry, rate: str, county: Any) -> str:
    """The ``rate`` parameter for ``--rate NAME|FILE``: a name as given, a file by its rate name.

    A rate file names its control model by the slug of its ``name``; when that model exists, the
    file must define the rate exactly as the one the model was trained for, else a UsageError says
    to retrain (otherwise the costs would follow one definition and the control another).
    """
    if not _looks_like_rate_file(rate):
        return rate
    from script_ec2.rates import Rate, load_rate
    from script_ec2.registry import slug

    defined = load_rate(Path(rate))
    name = slug(defined.name)
    values = validate(LOAD_CONTROL, {"county": county, "rate": name})
    model_name = _control_name(values["county"], values["rate"])
    version = _latest(registry, model_name)
    if version is None:
        return name
    model = registry.load(model_name, version.version)
    trained = Rate.from_json(model.meta["parameters"]["rate"], source=f"model {version.ref}")
    if trained != defined:
        raise UsageError(
            f"rate file {rate} defines rate {defined.name!r} differently from the rate "
            f"{version.ref} was trained for; train a control model for it (script-ec2 train "
            f'load-control --county "{values["county"]}" --rate {rate}) or rename the rate'
        )
    return name


# --------------------------------------------------------------------------- inputs


def read_county_evs(data_store: ObjectStore) -> tuple[dict[str, float], str]:
    """(county -> EVs, sha256 of the file) from :data:`COUNTY_EV_FILE` at the data root."""
    where = f"{data_store.uri.rstrip('/')}/{COUNTY_EV_FILE}"
    try:
        data = data_store.get_bytes(COUNTY_EV_FILE)
    except (KeyNotFound, BucketNotFound):
        raise DataError(
            f"county EV distribution {where} not found: a county forecast needs it (columns "
            "County,EVs); upload it there or forecast at aggregation_level=state"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"county EV distribution {where} is not UTF-8 CSV text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    if "County" not in header or "EVs" not in header:
        raise DataError(
            f"county EV distribution {where} needs the columns County and EVs, has "
            f"{', '.join(header) or 'none'}"
        )
    reader.fieldnames = header
    counts: dict[str, float] = {}
    for line, row in enumerate(reader, start=2):
        county = (row.get("County") or "").strip()
        raw = (row.get("EVs") or "").strip()
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where} line {line}: EVs {raw!r} is not a number") from None
        if not county or not math.isfinite(value) or value < 0:
            raise DataError(f"{where} line {line}: needs a county name and EVs >= 0")
        counts[county] = counts.get(county, 0.0) + value
    return counts, hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- models


def _latest(registry: Registry, name: str) -> ModelVersion | None:
    """The newest complete version of ``name`` whose model.json is readable, or None."""
    return registry.newest(name)


def _control_name(county: str, rate: str) -> str:
    from script_ec2.registry import slug

    return f"{CONTROL_PREFIX}{slug(county)}-{slug(rate)}"


def _available(registry: Registry, prefix: str) -> str:
    names = sorted({v.name for v in registry.list() if v.name.startswith(prefix)})
    return ", ".join(names) if names else "none"


def _missing_session_model(registry: Registry, name: str) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"session model {name} is not in the registry at {registry.store.uri} (available: "
        f"{_available(registry, SESSION_PREFIX)}); train it with script-ec2 train load-forecast"
    )


def _missing_control_model(
    registry: Registry, name: str, county: str, rate: str
) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"no control model for county {county!r} and rate {rate!r} ({name}) in the registry at "
        f"{registry.store.uri} (available: {_available(registry, CONTROL_PREFIX)}); train it "
        f'with script-ec2 train load-control --county "{county}" --rate {rate}'
    )


def _pin(registry: Registry, name: str, missing: Any) -> dict[str, Any]:
    version = _latest(registry, name)
    if version is None:
        raise missing()
    return {"version": version.version, "content_hash": version.content_hash}


def _forecast_needs(
    registry: Registry, data_store: ObjectStore, params: Mapping[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(pinned models, data inputs) of a load forecast; see the module docstring."""
    from script_ec2.forecast_fit import (
        DEFAULT_CONTROL_COUNTY,
        _model_source,
        control_model_name,
        session_model_names,
        vehicle_counts,
    )

    inputs: dict[str, str] = {}
    county_evs = None
    if params["aggregation_level"] == "county":
        county_evs, inputs[COUNTY_EV_FILE] = read_county_evs(data_store)
    counts = vehicle_counts(params, county_evs)
    names = session_model_names(params)
    # Only segments that get vehicles sample their model (forecast_fit._sample).
    needed = {_model_source(label, params) for label, n in counts.items() if n > 0}
    models: dict[str, dict[str, Any]] = {}
    for label, name in names.items():
        if label in needed:
            models[name] = _pin(registry, name, lambda n=name: _missing_session_model(registry, n))
    control = control_model_name(params)
    if control is not None:
        county = params["county"] or DEFAULT_CONTROL_COUNTY
        models[control] = _pin(
            registry,
            control,
            lambda: _missing_control_model(registry, control, county, params["work_control"]),
        )
    return models, inputs


def _control_needs(registry: Registry, params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    name = _control_name(params["county"], params["rate"])
    return {
        name: _pin(
            registry,
            name,
            lambda: _missing_control_model(registry, name, params["county"], params["rate"]),
        )
    }


def _load(registry: Registry, name: str, pinned: Mapping[str, Any]) -> LoadedModel:
    from script_ec2.registry import ModelError

    model = registry.load(name, int(pinned["version"]))
    if model.meta.get("content_hash") != pinned["content_hash"]:
        raise ModelError(
            f"{name}@{pinned['version']} changed after the request was prepared; run it again"
        )
    return model


# --------------------------------------------------------------------------- the API


def prepare(
    engine: Engine | None,
    registry: Registry,
    data_store: ObjectStore,
    algorithm: str,
    raw_params: Mapping[str, Any],
) -> FitRequest:
    """Validate, pin the models and compute the cache key; nothing is computed or loaded.

    ``engine`` is not used (a request does not depend on the database); it is accepted so every
    step takes the same clients.
    """
    del engine
    pick_algorithm(algorithm, None)
    params = validate(algorithm, raw_params)
    inputs: dict[str, str] = {}
    if algorithm == LOAD_FORECAST:
        models, inputs = _forecast_needs(registry, data_store, params)
    else:
        models = _control_needs(registry, params)
    digests = {name: str(pinned["content_hash"]) for name, pinned in models.items()}
    digests.update({_DATA_PREFIX + name: digest for name, digest in inputs.items()})
    return FitRequest(
        algorithm=algorithm,
        params=params,
        model_versions=models,
        key=cache_key(algorithm, params, digests),
        canonical=canonical_json(algorithm, params, digests),
        inputs=inputs,
    )


def lookup(engine: Engine, key: str) -> StoredResult | None:
    """The cached result for ``key`` (its hit counted), or None."""
    return _lookup_row(engine, key)


def compute(
    engine: Engine,
    registry: Registry,
    data_store: ObjectStore,
    request: FitRequest,
    *,
    replace: bool = False,
) -> StoredResult:
    """Run the request's algorithm and store the result (``replace``: overwrite a stored one).

    When another process stored the same key meanwhile, its row is returned (see
    :func:`script_ec2.results.save`).
    """
    pick_algorithm(request.algorithm, None)
    started = time.perf_counter()
    if request.algorithm == LOAD_FORECAST:
        meta, arrays = _compute_forecast(registry, data_store, request)
    else:
        meta, arrays = _compute_control(registry, request)
    meta["models"] = {
        name: f"{name}@{pinned['version']}" for name, pinned in request.model_versions.items()
    }
    meta["inputs"] = dict(request.inputs)
    seconds = time.perf_counter() - started
    return _save_row(
        engine,
        key=request.key,
        algorithm=request.algorithm,
        canonical=request.canonical,
        model_versions=request.model_versions,
        meta=meta,
        arrays=arrays,
        compute_seconds=seconds,
        replace=replace,
    )


def fit(
    engine: Engine,
    registry: Registry,
    data_store: ObjectStore,
    algorithm: str,
    raw_params: Mapping[str, Any],
    *,
    use_cache: bool = True,
    prepared: FitRequest | None = None,
) -> FitOutcome:
    """The cached result of the request, or a new one; ``use_cache=False`` always recomputes.

    ``prepared`` is the request :func:`prepare` already made of these parameters, if any.
    """
    started = time.perf_counter()
    request = prepared or prepare(engine, registry, data_store, algorithm, raw_params)
    if use_cache:
        stored = lookup(engine, request.key)
        if stored is not None:
            return FitOutcome(stored, cached=True, seconds=time.perf_counter() - started)
    stored = compute(engine, registry, data_store, request, replace=not use_cache)
    return FitOutcome(stored, cached=False, seconds=time.perf_counter() - started)


def answer(
    engine: Callable[[], Engine],
    database_url: str,
    registry: Registry,
    data_store: ObjectStore,
    algorithm: str,
    raw_params: Mapping[str, Any],
    *,
    use_cache: bool = True,
) -> FitOutcome:
    """:func:`fit` for the command line: a cached result is read through the database driver
    alone (:func:`script_ec2.results.lookup_direct`), and ``engine()`` is called, SQLAlchemy
    imported, only when that finds nothing; a cache hit then costs ~0.2 s as a whole process.
    """
    from script_ec2.results import lookup_direct

    started = time.perf_counter()
    request = prepare(None, registry, data_store, algorithm, raw_params)
    if use_cache:
        stored = lookup_direct(database_url, request.key)
        if stored is not None:
            return FitOutcome(stored, cached=True, seconds=time.perf_counter() - started)
    outcome = fit(
        engine(), registry, data_store, algorithm, raw_params, use_cache=use_cache, prepared=request
    )
    return FitOutcome(outcome.result, outcome.cached, seconds=time.perf_counter() - started)


# --------------------------------------------------------------------------- algorithms


def _compute_forecast(
    registry: Registry, data_store: ObjectStore, request: FitRequest
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from script_ec2.forecast_fit import (
        control_model_name,
        forecast,
        result_arrays,
        result_meta,
        session_model_names,
    )

    params = request.params
    county_evs = None
    if COUNTY_EV_FILE in request.inputs:
        county_evs, digest = read_county_evs(data_store)
        if digest != request.inputs[COUNTY_EV_FILE]:
            raise DataError(
                f"{COUNTY_EV_FILE} changed after the request was prepared; run it again"
            )
    models = {
        label: _load(registry, name, request.model_versions[name]).arrays
        for label, name in session_model_names(params).items()
        if name in request.model_versions
    }
    control = None
    control_name = control_model_name(params)
    if control_name is not None:
        arrays = _load(registry, control_name, request.model_versions[control_name]).arrays
        control = (arrays["coef"], arrays["intercept"])
    result = forecast(params, models, county_evs, control)
    return result_meta(result), result_arrays(result)


def _compute_control(
    registry: Registry, request: FitRequest
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import numpy as np

    from script_ec2.control import predict_controlled
    from script_ec2.rates import SLOT_HOURS, Rate
    from script_ec2.registry import ModelError

    params = request.params
    (name,) = request.model_versions
    model = _load(registry, name, request.model_versions[name])
    ref = f"{name}@{model.version}"
    if "reference_uncontrolled" not in model.arrays:
        raise ModelError(
            f"{ref} has no reference_uncontrolled profile (trained by an older script-ec2); "
            "train it again with script-ec2 train load-control"
        )
    uncontrolled = np.asarray(model.arrays["reference_uncontrolled"], dtype=np.float64)
    controlled = np.asarray(
        predict_controlled(model.arrays["coef"], model.arrays["intercept"], uncontrolled),
        dtype=np.float64,
    )
    rate = Rate.from_json(model.meta["parameters"]["rate"], source=f"model {ref}")
    cost_before, cost_after = (float(c) for c in rate.cost(np.stack([uncontrolled, controlled])))
    peak_before, peak_after = float(uncontrolled.max()), float(controlled.max())
    reduction = peak_before - peak_after
    cap = rate.cap_level(peak_before)
    meta: dict[str, Any] = {
        "algorithm": LOAD_CONTROL,
        "algorithm_version": ALGORITHM_VERSIONS[LOAD_CONTROL],
        "county": params["county"],
        "rate": rate.name,
        "model": ref,
        "columns": ["Work"],
        "unit": "kW",
        "time_steps": uncontrolled.shape[0],
        "step_minutes": 15,
        "arrays": {"uncontrolled_96": [96], "controlled_96": [96]},
        "peak_kw": {"uncontrolled": peak_before, "controlled": peak_after},
        "peak_reduction_kw": reduction,
        "peak_reduction_pct": 100.0 * reduction / peak_before if peak_before > 0 else 0.0,
        "cost_usd_per_day": {
            "uncontrolled": cost_before,
            "controlled": cost_after,
            "saving": cost_before - cost_after,
        },
        "energy_kwh": {
            "uncontrolled": float(uncontrolled.sum() * SLOT_HOURS),
            "controlled": float(controlled.sum() * SLOT_HOURS),
        },
        "cap_kw": cap,
        "profile": "the control model's reference_uncontrolled (mean of its training runs)",
    }
    return meta, {"uncontrolled_96": uncontrolled, "controlled_96": controlled}


# --------------------------------------------------------------------------- views


def time_labels(steps: int) -> list[str]:
    """``HH:MM`` at the start of each of ``steps`` equal steps of a day."""
    minutes = 24 * 60 // steps
    return [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, 24 * 60, minutes)]


def _grid(result: StoredResult, *, full: bool) -> tuple[list[str], str, str]:
    """(columns, uncontrolled array name, controlled array name) of :func:`profile_grid`."""
    columns = [str(c) for c in result.meta.get("columns", [])]
    suffix = "1440" if full and "uncontrolled_1440" in result.arrays else "96"
    if f"uncontrolled_{suffix}" not in result.arrays:
        raise DataError(f"stored result {result.key} has no uncontrolled profile")
    return columns, f"uncontrolled_{suffix}", f"controlled_{suffix}"


def profile_grid(
    result: StoredResult, *, full: bool
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(columns, uncontrolled, controlled or None) as steps × columns kW tables.

    ``full``: the result's own grid (1440 steps when computed so), else the 96-step means.
    """
    import numpy as np

    columns, uncontrolled, controlled = _grid(result, full=full)

    def table(name: str) -> np.ndarray | None:
        if name not in result.arrays:
            return None
        array = result.arrays[name]
        return np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)

    shown = table(uncontrolled)
    assert shown is not None  # _grid checked it
    return columns, shown, table(controlled)


def _profile_columns(
    result: StoredResult, *, full: bool
) -> tuple[list[str], int, list[list[float]], list[list[float]] | None]:
    """:func:`profile_grid` as (columns, steps, uncontrolled, controlled or None) with each table
    a list of its columns as floats; without numpy when the stored arrays allow (see
    :meth:`script_ec2.registry.NpzArrays.float64_columns`), so a cache hit need not import it."""
    columns, uncontrolled, controlled = _grid(result, full=full)
    steps, uncontrolled_columns = _float_columns(result.arrays, uncontrolled)
    controlled_columns = None
    if controlled in result.arrays:
        controlled_columns = _float_columns(result.arrays, controlled)[1]
    return columns, steps, uncontrolled_columns, controlled_columns


def _float_columns(arrays: Mapping[str, np.ndarray], name: str) -> tuple[int, list[list[float]]]:
    """(rows, columns as float lists) of ``arrays[name]`` reshaped to rows × columns."""
    from script_ec2.registry import NpzArrays

    if isinstance(arrays, NpzArrays):
        read = arrays.float64_columns(name)
        # A table of no rows is left to numpy, whose reshape refuses it, as it always did.
        if read is not None and read[0] > 0:
            return read
    import numpy as np

    array = arrays[name]
    table = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    return table.shape[0], [table[:, i].tolist() for i in range(table.shape[1])]


def _argmax(values: Sequence[float]) -> int:
    """The index ``numpy.argmax`` gives: of the first NaN, else of the first largest value."""
    for i, value in enumerate(values):
        if math.isnan(value):
            return i
    return max(range(len(values)), key=values.__getitem__)


def table_rows(
    result: StoredResult, *, full: bool, decimals: int | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows) of a result's profile for table and CSV output, kW.

    Load forecast: the controlled profile when there is one, else the uncontrolled one. Load
    control: both, side by side. ``decimals`` rounds the values (for reading, not for files).
    """
    import numpy as np

    columns, uncontrolled, controlled = profile_grid(result, full=full)
    times = time_labels(uncontrolled.shape[0])
    if result.algorithm == LOAD_CONTROL and controlled is not None:
        columns = ["uncontrolled", "controlled"]
        shown = np.column_stack([uncontrolled[:, 0], controlled[:, 0]])
    else:
        shown = controlled if controlled is not None else uncontrolled
    if decimals is not None:
        # "+ 0.0" turns the -0.0 of a rounded tiny negative into 0.0.
        shown = shown.round(decimals) + 0.0
    rows = [
        {"time": t, **{c: float(v) for c, v in zip(columns, shown[i], strict=True)}}
        for i, t in enumerate(times)
    ]
    return ["time", *columns], rows


def _by_column(
    columns: Sequence[str], table: Sequence[list[float]] | None
) -> dict[str, list[float]] | None:
    if table is None:
        return None
    return {c: table[i] for i, c in enumerate(columns)}


def result_document(outcome: FitOutcome) -> dict[str, Any]:
    """The JSON form of a fit (stable keys): request, cache facts, meta, full-grid profiles."""
    result = outcome.result
    columns, steps, uncontrolled, controlled = _profile_columns(result, full=True)
    return {
        "key": result.key,
        "algorithm": result.algorithm,
        "params": result.params,
        "model_versions": result.model_versions,
        "cached": outcome.cached,
        "seconds": outcome.seconds,
        "compute_seconds": result.compute_seconds,
        "created_at": result.created_at.isoformat(),
        "meta": result.meta,
        "columns": columns,
        "time": time_labels(steps),
        "uncontrolled": _by_column(columns, uncontrolled),
        "controlled": _by_column(columns, controlled),
    }


def summary_line(outcome: FitOutcome) -> str:
    """``computed in X s (key …)`` or ``from cache in X s (key …, computed in Y s on DATE)``."""
    result = outcome.result
    short = result.key[:12]
    if outcome.cached:
        when = result.created_at.strftime("%Y-%m-%d %H:%M UTC")
        return (
            f"from cache in {outcome.seconds:.3f} s (key {short}, computed in "
            f"{result.compute_seconds:.2f} s on {when})"
        )
    return f"computed in {outcome.seconds:.2f} s (key {short}, now cached)"


def headline(result: StoredResult) -> str:
    """One line of the result's main figures, for a person reading the table."""
    meta = result.meta
    if result.algorithm == LOAD_CONTROL:
        cost = meta["cost_usd_per_day"]
        return (
            f"{meta['county']}, rate {meta['rate']} ({meta['model']}): peak "
            f"{meta['peak_kw']['uncontrolled']:,.1f} -> {meta['peak_kw']['controlled']:,.1f} kW "
            f"(-{meta['peak_reduction_pct']:.1f} %), cost ${cost['uncontrolled']:,.2f} -> "
            f"${cost['controlled']:,.2f} per day"
        )
    _, _, uncontrolled, controlled = _profile_columns(result, full=True)
    shown = controlled if controlled is not None else uncontrolled
    total = shown[-1]
    step = _argmax(total)
    peak_time = time_labels(len(total))[step]
    variant = "controlled " if controlled is not None else ""
    return (
        f"{variant}peak {float(total[step]):,.0f} kW at {peak_time}; "
        f"{meta.get('vehicles', 0):,} vehicles; {meta.get('energy_kwh', 0.0):,.0f} kWh"
    )


def table_title(result: StoredResult, *, full: bool) -> str:
    """The title of the printed profile table: short, since the load-control table is narrow."""
    if result.algorithm == LOAD_CONTROL:
        return f"{result.params['county']}, {result.params['rate']} (kW)"
    means = not full and "uncontrolled_1440" in result.arrays
    return f"{title(result)} (kW{', 15-minute means' if means else ''})"


def title(result: StoredResult) -> str:
    """A short description of the request, for table and chart titles."""
    p = result.params
    if result.algorithm == LOAD_CONTROL:
        return f"Workplace load control: {p['county']}, rate {p['rate']}"
    where = p["county"] if p["aggregation_level"] == "county" else "California"
    text = f"Load forecast: {where}, {p['num_evs']:,} EVs, {p['day_type']}, seed {p['seed']}"
    if p["work_control"] != "none":
        text += f", workplace controlled ({p['work_control']})"
    return text
