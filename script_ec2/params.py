"""Parameter schemas of the fit algorithms, their validation, and the canonical result-cache key.

Each algorithm declares its parameters as a tuple of :class:`Param` (:data:`LOAD_FORECAST_PARAMS`,
:data:`LOAD_CONTROL_PARAMS`). Values arrive from a params file (JSON or TOML, read by
:func:`read_params_file`) and from ``--param key=value`` flags; :func:`parse_params` merges them
(flags win), and :func:`validate` checks every value before any work starts. All problems found
are reported together, joined with ``"; "`` on one line, in one :class:`ParamError` (exit 2); each
names the field and what it allows.

Accepted spellings: integers reject fractions (``1.5``) but take integral floats (``1e6``); floats
take any Python float spelling (``0.1``, ``0.10``, ``1e-1``) and, for shares, a percentage
(``"10%"``); booleans take ``true/false/1/0`` in any case; choices are case-insensitive; a county
is matched case-insensitively, with or without a trailing ``" County"``; ``county`` is unset by
``null``, ``""`` or ``"none"``; a rate name is taken in its registry (slug) form, lower-case words
joined by ``-`` (``PGE_CEV`` is ``pge-cev``), because it names the control model; ``-`` in a key
reads as ``_``.

Share rules (upstream Gen B, spec 2.3): ``fast_percent + work_percent + publicl2_percent <= 1``,
and residential charging takes the rest of the owners; ``l1_percent + res_percent + rent_percent``
must equal 1 within 1e-9, because they split the residential owners between home L1, home L2 and
multi-unit dwellings (the upstream UI required the same).

Canonical form (:func:`canonical_json`): every parameter present (defaults filled), floats rounded
to 12 significant digits (so ``0.1``, ``0.10`` and ``1e-1`` are one value, as are ``0.1 + 0.2``
and ``0.3``), integers as integers, booleans as booleans, choices lower-case, county names spelled
as in the packaged lookup; plus the algorithm name and version, the unit of each parameter, and the
content hash of every model the result depends on; keys sorted, no spaces. Its sha256 is
:func:`cache_key`. Hashing this rather than the request text means two requests that ask for the
same computation share one cached result whatever their spelling, while a new model release or a
changed algorithm can never return a stale one (upstream matched control models by float
equality, spec 7 item 19). :func:`validate` returns the same normalised values, so the computation
uses exactly the numbers that were hashed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from script_ec2.errors import UsageError

LOAD_FORECAST = "load-forecast"
LOAD_CONTROL = "load-control"

# Bump an algorithm's version whenever its code changes the numbers it produces (for the load
# forecast: script_ec2/forecast_fit.py and the samplers it calls); the version is part of the
# cache key, so older cached results stop matching.
ALGORITHM_VERSIONS: dict[str, int] = {LOAD_FORECAST: 1, LOAD_CONTROL: 1}

# The layout of the canonical document itself.
CANONICAL_SCHEMA_VERSION = 1

FLOAT_SIGNIFICANT_DIGITS = 12
SHARE_SUM_TOLERANCE = 1e-9

TYPES = ("int", "float", "bool", "str", "enum")

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_NON_SLUG_RE = re.compile(r"[^a-z0-9]+")
_UNSET = frozenset({"", "none", "null"})


class ParamError(UsageError):
    """One or more invalid parameters; ``problems`` lists (field, message) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        super().__init__(
            "invalid parameters: " + "; ".join(f"{name}: {text}" for name, text in self.problems)
        )


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type, default, allowed values, unit and meaning."""

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] = ()
    unit: str = ""
    nullable: bool = False
    required: bool = False
    # "county": a California county name; "rate": "none"/a rate name (see _check_str).
    kind: str = ""

    def allowed(self) -> str:
        """The allowed values, as shown in errors and by --show-params."""
        if self.choices:
            return "|".join(_show(c) for c in self.choices)
        if self.type == "bool":
            return "true|false"
        if self.kind == "county":
            return "a California county name" + (" or none" if self.nullable else "")
        if self.kind == "rate":
            return "none or a control rate name (e.g. e19)" if self.nullable else "a rate name"
        if self.min is not None or self.max is not None:
            low = "" if self.min is None else _show(self.min)
            high = "" if self.max is None else _show(self.max)
            return f"{low}..{high}"
        return "any"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _share(name: str, default: float, help: str) -> Param:
    return Param(name, "float", default, help, min=0.0, max=1.0, unit="fraction")


LOAD_FORECAST_PARAMS: tuple[Param, ...] = (
    Param(
        "num_evs",
        "int",
        100_000,
        "Light-duty EVs in the whole state (split over counties by the EV distribution).",
        min=1,
        max=50_000_000,
        unit="vehicles",
    ),
    Param(
        "aggregation_level",
        "enum",
        "state",
        "Forecast for the whole state or for one county.",
        choices=("state", "county"),
    ),
    Param(
        "county",
        "str",
        None,
        "County to forecast (bare name, e.g. Santa Clara); required with "
        "aggregation_level=county, not allowed with state.",
        nullable=True,
        kind="county",
    ),
    _share("fast_percent", 0.1, "Share of owners charging at DC fast stations."),
    _share("work_percent", 0.2, "Share of owners charging at workplace L2."),
    _share("publicl2_percent", 0.0, "Share of owners charging at public L2."),
    _share("res_percent", 0.2, "Share of residential charging that is home L2."),
    _share("l1_percent", 0.5, "Share of residential charging that is home L1."),
    _share("rent_percent", 0.3, "Share of residential charging in multi-unit dwellings."),
    _share("res_daily_use", 1.0, "Fraction of residential chargers charging on the day."),
    _share("work_daily_use", 1.0, "Fraction of workplace chargers charging on the day."),
    _share("fast_daily_use", 0.5, "Fraction of DC fast users charging on the day."),
    _share("publicl2_daily_use", 0.33, "Fraction of public L2 users charging on the day."),
    Param(
        "day_type",
        "enum",
        "weekday",
        "Which session models to sample: weekday or weekend.",
        choices=("weekday", "weekend"),
    ),
    Param(
        "res_l2_smooth",
        "bool",
        True,
        "Sample home L2 from the home L1 (smooth) session model, as upstream.",
    ),
    Param(
        "work_control",
        "str",
        "none",
        "Control rate applied to workplace charging ('none' for uncontrolled only); "
        "the control model is control-<county>-<rate>.",
        kind="rate",
        nullable=True,
    ),
    Param(
        "time_steps",
        "int",
        1440,
        "Steps per day of the profile: 1440 (1 min) or 96 (15 min).",
        choices=(96, 1440),
        unit="steps/day",
    ),
    Param("seed", "int", 0, "Seed of the random session draws.", min=0, max=2**63 - 1),
)

LOAD_CONTROL_PARAMS: tuple[Param, ...] = (
    Param(
        "county",
        "str",
        None,
        "County whose control model and uncontrolled load to use.",
        required=True,
        kind="county",
    ),
    Param("rate", "str", None, "Rate the control model optimises for.", required=True, kind="rate"),
)

ALGORITHMS: dict[str, tuple[Param, ...]] = {
    LOAD_FORECAST: LOAD_FORECAST_PARAMS,
    LOAD_CONTROL: LOAD_CONTROL_PARAMS,
}


def schema(algorithm: str) -> tuple[Param, ...]:
    """The parameters of ``algorithm``; a ParamError names the known algorithms otherwise."""
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise _fail(
            "algorithm", f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        ) from None


def _fail(field: str, text: str) -> ParamError:
    return ParamError([(field, text)])


class _Invalid(Exception):
    """One field's problem, collected by validate()."""


@functools.cache
def _counties() -> dict[str, str]:
    """Case-folded county name -> the spelling in the packaged lookup."""
    from script_ec2.lookup import load_lookup_csv

    return {row.county.casefold(): row.county for row in load_lookup_csv()}


def normalise_county(text: str) -> str:
    """The lookup's spelling of a county name; _Invalid when it is not a California county."""
    key = text.strip()
    if key.casefold().endswith(" county"):
        key = key[: -len(" county")].rstrip()
    try:
        return _counties()[key.casefold()]
    except KeyError:
        raise _Invalid(
            f"unknown county {text!r} (allowed: a California county name, e.g. Santa Clara)"
        ) from None


def normalise_float(value: float) -> float:
    """``value`` rounded to 12 significant digits; the one float spelling of the canonical form."""
    # "+ 0.0" turns -0.0 into 0.0, so both spell the same.
    return float(f"{value:.{FLOAT_SIGNIFICANT_DIGITS}g}") + 0.0


def _coerce(param: Param, raw: Any) -> Any:
    """``raw`` converted to the parameter's type and normalised, or _Invalid."""
    if param.nullable and (raw is None or (isinstance(raw, str) and raw.strip().lower() in _UNSET)):
        return "none" if param.kind == "rate" else None
    if raw is None:
        raise _Invalid(f"a value is required (allowed {param.allowed()})")
    if param.type == "int":
        value: Any = _to_int(raw)
    elif param.type == "float":
        value = _to_float(raw, percent=param.unit == "fraction")
    elif param.type == "bool":
        value = _to_bool(raw)
    elif param.type == "enum":
        if not isinstance(raw, str) or raw.strip().lower() not in param.choices:
            raise _Invalid(f"{raw!r} is not allowed (allowed {param.allowed()})")
        return raw.strip().lower()
    else:
        if not isinstance(raw, str):
            raise _Invalid(f"expected text, got {_show_raw(raw)} (allowed {param.allowed()})")
        return _check_str(param, raw)
    if param.choices and value not in param.choices:
        raise _Invalid(f"{_show(value)} is not allowed (allowed {param.allowed()})")
    if (param.min is not None and value < param.min) or (
        param.max is not None and value > param.max
    ):
        raise _Invalid(f"{_show(value)} is out of range (allowed {param.allowed()})")
    return value


def _show_raw(raw: Any) -> str:
    return f"{type(raw).__name__} {raw!r}"


def _check_str(param: Param, raw: str) -> str:
    if param.kind == "county":
        return normalise_county(raw)
    if param.kind == "rate":
        # The slug form, because the rate is part of the control model's registry name.
        text = _NON_SLUG_RE.sub("-", raw.strip().lower()).strip("-")
        if not text or len(text) > 64 or (text == "none" and not param.nullable):
            raise _Invalid(f"{raw!r} is not a rate name (allowed {param.allowed()})")
        return text
    return raw


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _Invalid(f"expected a whole number, got {_show_raw(raw)}")
    if isinstance(raw, int):
        return raw
    number: float
    if isinstance(raw, float):
        number = raw
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise _Invalid(f"expected a whole number, got {raw!r}") from None
    else:
        raise _Invalid(f"expected a whole number, got {_show_raw(raw)}")
    if not math.isfinite(number) or not number.is_integer():
        raise _Invalid(f"expected a whole number, got {raw!r}")
    return int(number)


def _to_float(raw: Any, *, percent: bool) -> float:
    if isinstance(raw, bool):
        raise _Invalid(f"expected a number, got {_show_raw(raw)}")
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        scale = 1.0
        if percent and text.endswith("%"):
            text, scale = text[:-1].strip(), 100.0
        try:
            number = float(text) / scale
        except ValueError:
            raise _Invalid(f"expected a number, got {raw!r}") from None
    else:
        raise _Invalid(f"expected a number, got {_show_raw(raw)}")
    if not math.isfinite(number):
        raise _Invalid(f"expected a finite number, got {raw!r}")
    return normalise_float(number)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _Invalid(f"expected true|false|1|0, got {raw!r}")


def _key(name: str) -> str:
    return name.strip().replace("-", "_")


def validate(algorithm: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``algorithm``, typed and normalised, defaults filled; else ParamError."""
    params = schema(algorithm)
    by_name = {p.name: p for p in params}
    problems: list[tuple[str, str]] = []
    given = {_key(k): v for k, v in values.items()}
    for name in given:
        if name not in by_name:
            problems.append(
                (name, f"unknown parameter {name!r} (known: {', '.join(p.name for p in params)})")
            )
    result: dict[str, Any] = {}
    for p in params:
        if p.name not in given:
            if p.required:
                problems.append((p.name, f"missing required parameter (allowed {p.allowed()})"))
            else:
                result[p.name] = p.default
            continue
        try:
            result[p.name] = _coerce(p, given[p.name])
        except _Invalid as exc:
            problems.append((p.name, str(exc)))
    if algorithm == LOAD_FORECAST:
        problems.extend(_forecast_rules(result))
    if problems:
        raise ParamError(problems)
    return result


def _forecast_rules(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The load forecast's cross-field rules, over the fields that are themselves valid."""
    problems: list[tuple[str, str]] = []
    if "aggregation_level" in v and "county" in v:
        if v["aggregation_level"] == "county" and v["county"] is None:
            problems.append(("county", "required with aggregation_level=county"))
        if v["aggregation_level"] == "state" and v["county"] is not None:
            problems.append(
                ("county", "only allowed with aggregation_level=county (unset it or change level)")
            )
    owners = ("fast_percent", "work_percent", "publicl2_percent")
    if all(k in v for k in owners):
        total = sum(v[k] for k in owners)
        if total > 1 + SHARE_SUM_TOLERANCE:
            parts = " + ".join(_show(v[k]) for k in owners)
            problems.append(
                (
                    " + ".join(owners),
                    f"{parts} = {normalise_float(total)} exceeds 1 "
                    "(allowed sum 0..1; residential charging gets the rest)",
                )
            )
    split = ("l1_percent", "res_percent", "rent_percent")
    if all(k in v for k in split):
        total = sum(v[k] for k in split)
        if abs(total - 1) > SHARE_SUM_TOLERANCE:
            parts = " + ".join(_show(v[k]) for k in split)
            problems.append(
                (
                    " + ".join(split),
                    f"{parts} = {normalise_float(total)}, but must equal 1 "
                    "(they split residential charging)",
                )
            )
    return problems


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``key=value`` flags as a dict (the last of a repeated key wins); ParamError if malformed."""
    result: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(("--param", f"{pair!r} is not key=value"))
            continue
        result[_key(key)] = value.strip()
    if problems:
        raise ParamError(problems)
    return result


def parse_params(
    file_data: Mapping[str, Any] | None, pairs: Iterable[str], algorithm: str
) -> dict[str, Any]:
    """Validated parameters from a params file's values overridden by ``key=value`` flags."""
    schema(algorithm)
    merged = {_key(k): v for k, v in (file_data or {}).items()}
    named = merged.pop("algorithm", None)
    if named is not None and named != algorithm:
        raise _fail("algorithm", f"the params file is for {named!r}, not {algorithm!r}")
    flags = parse_pairs(pairs)
    if "algorithm" in flags:
        raise _fail("algorithm", "not a parameter; the command names the algorithm")
    merged.update(flags)
    return validate(algorithm, merged)


def read_params_file(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(the file's ``algorithm`` or None, its other values) from a JSON or TOML params file.

    ``.toml`` is read as TOML, ``.json`` as JSON, anything else as JSON then TOML. The values are
    returned as written; :func:`parse_params` validates them.
    """
    where = f"params file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(where, "not found; check the path") from None
    except UnicodeDecodeError:
        raise _fail(where, "is not UTF-8 text") from None
    except OSError as exc:
        raise _fail(where, f"cannot be read: {exc.strerror}") from None
    data = _decode(text, path.suffix.lower(), where)
    if not isinstance(data, dict):
        raise _fail(where, f"must hold an object of parameters, not {type(data).__name__}")
    algorithm = data.pop("algorithm", None)
    if algorithm is not None and (not isinstance(algorithm, str) or algorithm not in ALGORITHMS):
        raise _fail(
            f"{where}: algorithm",
            f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})",
        )
    return algorithm, data


def _decode(text: str, suffix: str, where: str) -> Any:
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _fail(where, f"is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if suffix == ".json":
            raise _fail(
                where, f"is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise _fail(where, "is neither JSON nor TOML; name it .json or .toml") from None


def describe(algorithm: str) -> list[dict[str, Any]]:
    """One row per parameter for ``--show-params``: name, type, meaning, range, default, unit."""
    return [
        {
            "name": p.name,
            "type": p.type,
            "meaning": p.help,
            "range": p.allowed(),
            "default": "(required)" if p.required else p.default,
            "unit": p.unit,
        }
        for p in schema(algorithm)
    ]


def canonical_json(
    algorithm: str, params: Mapping[str, Any], model_versions: Mapping[str, str]
) -> str:
    """The canonical document of one computation (see the module docstring)."""
    values = validate(algorithm, params)
    problems = [
        ("model_versions", f"{name!r}: expected a text name and content hash")
        for name, digest in model_versions.items()
        if not isinstance(name, str) or not isinstance(digest, str) or not digest
    ]
    if problems:
        raise ParamError(problems)
    document = {
        "schema_version": CANONICAL_SCHEMA_VERSION,
        "algorithm": algorithm,
        "algorithm_version": ALGORITHM_VERSIONS[algorithm],
        "params": values,
        "units": {p.name: p.unit for p in schema(algorithm) if p.unit},
        "models": dict(model_versions),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(algorithm: str, params: Mapping[str, Any], model_versions: Mapping[str, str]) -> str:
    """sha256 hex of :func:`canonical_json`: the result-cache key (``param_hash``)."""
    text = canonical_json(algorithm, params, model_versions)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
