"""Parameter schemas: validation errors, spellings, params files, --show-params rows, cache keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from script_ec2 import params as P
from script_ec2.errors import EXIT_USAGE, UsageError
from script_ec2.params import (
    LOAD_CONTROL,
    LOAD_FORECAST,
    ParamError,
    cache_key,
    canonical_json,
    describe,
    parse_params,
    read_params_file,
    validate,
)

FORECAST_NAMES = [p.name for p in P.LOAD_FORECAST_PARAMS]


def error_of(values: dict[str, Any], algorithm: str = LOAD_FORECAST) -> ParamError:
    with pytest.raises(ParamError) as info:
        validate(algorithm, values)
    return info.value


# --------------------------------------------------------------------------- defaults


def test_defaults_are_the_frontend_gen_b_values() -> None:
    assert validate(LOAD_FORECAST, {}) == {
        "num_evs": 100_000,
        "aggregation_level": "state",
        "county": None,
        "fast_percent": 0.1,
        "work_percent": 0.2,
        "publicl2_percent": 0.0,
        "res_percent": 0.2,
        "l1_percent": 0.5,
        "rent_percent": 0.3,
        "res_daily_use": 1.0,
        "work_daily_use": 1.0,
        "fast_daily_use": 0.5,
        "publicl2_daily_use": 0.33,
        "day_type": "weekday",
        "res_l2_smooth": True,
        "work_control": "none",
        "time_steps": 1440,
        "seed": 0,
    }


def test_validate_is_idempotent() -> None:
    once = validate(LOAD_FORECAST, {"aggregation_level": "county", "county": "santa clara"})
    assert validate(LOAD_FORECAST, once) == once


# --------------------------------------------------------------------------- errors


def test_param_error_is_a_usage_error_with_exit_code_2() -> None:
    err = error_of({"num_evs": 0})
    assert isinstance(err, UsageError)
    assert err.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("values", "field", "allowed"),
    [
        ({"num_evs": 0}, "num_evs", "1..50000000"),
        ({"num_evs": 50_000_001}, "num_evs", "1..50000000"),
        ({"fast_percent": 1.5}, "fast_percent", "0..1"),
        ({"res_daily_use": "-0.1"}, "res_daily_use", "0..1"),
        ({"seed": -1}, "seed", "0.."),
        ({"time_steps": 100}, "time_steps", "96|1440"),
        ({"day_type": "holiday"}, "day_type", "weekday|weekend"),
        ({"aggregation_level": "zip"}, "aggregation_level", "state|county"),
    ],
)
def test_out_of_range_names_field_and_range(
    values: dict[str, Any], field: str, allowed: str
) -> None:
    message = str(error_of(values))
    assert message.startswith(f"invalid parameters: {field}: ")
    assert f"allowed {allowed}" in message


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"num_evs": 1.5}, "num_evs", "expected a whole number, got 1.5"),
        ({"num_evs": "1.5"}, "num_evs", "expected a whole number, got '1.5'"),
        ({"num_evs": "many"}, "num_evs", "expected a whole number, got 'many'"),
        ({"num_evs": True}, "num_evs", "expected a whole number, got bool True"),
        ({"seed": "nan"}, "seed", "expected a whole number"),
        ({"fast_percent": "a lot"}, "fast_percent", "expected a number, got 'a lot'"),
        ({"fast_percent": "inf"}, "fast_percent", "expected a finite number"),
        ({"fast_percent": False}, "fast_percent", "expected a number, got bool False"),
        ({"fast_percent": [0.1]}, "fast_percent", "expected a number, got list [0.1]"),
        ({"res_l2_smooth": "maybe"}, "res_l2_smooth", "expected true|false|1|0, got 'maybe'"),
        ({"res_l2_smooth": 2}, "res_l2_smooth", "expected true|false|1|0, got 2"),
        ({"county": 6085}, "county", "expected text, got int 6085"),
        ({"work_control": "!!!"}, "work_control", "is not a rate name"),
        ({"day_type": 1}, "day_type", "1 is not allowed (allowed weekday|weekend)"),
    ],
)
def test_wrong_type_names_field(values: dict[str, Any], field: str, expected: str) -> None:
    message = str(error_of(values))
    assert message.startswith(f"invalid parameters: {field}: ")
    assert expected in message


def test_owner_shares_above_one() -> None:
    message = str(error_of({"fast_percent": 0.5, "work_percent": 0.4, "publicl2_percent": 0.2}))
    assert "fast_percent + work_percent + publicl2_percent: 0.5 + 0.4 + 0.2 = 1.1 exceeds 1" in (
        message
    )
    assert "allowed sum 0..1" in message


def test_owner_shares_exactly_one_leave_no_residential() -> None:
    values = validate(
        LOAD_FORECAST, {"fast_percent": 0.3, "work_percent": 0.6, "publicl2_percent": 0.1}
    )
    assert values["fast_percent"] + values["work_percent"] + values[
        "publicl2_percent"
    ] == pytest.approx(1)


def test_residential_split_must_sum_to_one() -> None:
    message = str(error_of({"l1_percent": 0.5, "res_percent": 0.2, "rent_percent": 0.2}))
    assert (
        "l1_percent + res_percent + rent_percent: 0.5 + 0.2 + 0.2 = 0.9, but must equal 1"
        in message
    )


def test_residential_split_within_tolerance_passes() -> None:
    # 0.1 + 0.2 + 0.7 is 0.9999999999999999 in binary floating point.
    validate(LOAD_FORECAST, {"l1_percent": 0.1, "res_percent": 0.2, "rent_percent": 0.7})


def test_unknown_key_lists_the_known_ones() -> None:
    message = str(error_of({"foo": 1}))
    assert message == (
        "invalid parameters: foo: unknown parameter 'foo' (known: "
        + ", ".join(FORECAST_NAMES)
        + ")"
    )


def test_unknown_county_names_the_field() -> None:
    message = str(error_of({"aggregation_level": "county", "county": "Atlantis"}))
    assert message.startswith("invalid parameters: county: unknown county 'Atlantis'")


def test_county_required_at_county_level_and_refused_at_state_level() -> None:
    assert "county: required with aggregation_level=county" in str(
        error_of({"aggregation_level": "county"})
    )
    assert "county: only allowed with aggregation_level=county" in str(
        error_of({"county": "Alameda"})
    )


def test_all_problems_on_one_line_in_schema_order() -> None:
    message = str(error_of({"seed": -1, "num_evs": 0, "bogus": 1, "l1_percent": 0.9}))
    assert "\n" not in message
    fields = [
        part.split(":")[0] for part in message.removeprefix("invalid parameters: ").split("; ")
    ]
    assert fields == ["bogus", "num_evs", "seed", "l1_percent + res_percent + rent_percent"]


def test_unknown_algorithm() -> None:
    with pytest.raises(ParamError, match="algorithm: unknown algorithm 'load-magic'"):
        validate("load-magic", {})


def test_load_control_requires_county_and_rate() -> None:
    message = str(error_of({}, LOAD_CONTROL))
    assert "county: missing required parameter" in message
    assert "rate: missing required parameter (allowed a rate name)" in message
    assert "rate: 'none' is not a rate name" in str(
        error_of({"county": "Alameda", "rate": "none"}, LOAD_CONTROL)
    )
    assert validate(LOAD_CONTROL, {"county": "alameda county", "rate": "E19"}) == {
        "county": "Alameda",
        "rate": "e19",
    }


# --------------------------------------------------------------------------- spellings


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ("num_evs", "1e6", 1_000_000),
        ("num_evs", 2.0e6, 2_000_000),
        ("num_evs", " 250000 ", 250_000),
        ("fast_percent", "1e-1", 0.1),
        ("fast_percent", "0.10", 0.1),
        ("fast_percent", "10%", 0.1),
        ("fast_percent", 0, 0.0),
        ("res_l2_smooth", "TRUE", True),
        ("res_l2_smooth", "0", False),
        ("res_l2_smooth", 1, True),
        ("res_l2_smooth", False, False),
        ("day_type", "Weekend", "weekend"),
        ("time_steps", "96", 96),
        ("work_control", "E19", "e19"),
        ("work_control", "PGE_CEV", "pge-cev"),
        ("work_control", None, "none"),
        ("work_control", "", "none"),
    ],
)
def test_accepted_spellings(field: str, raw: Any, value: Any) -> None:
    got = validate(LOAD_FORECAST, {field: raw})[field]
    assert got == value
    assert type(got) is type(value)


def test_county_spellings_normalise_to_the_lookup_name() -> None:
    for raw in ("Santa Clara", "santa clara", "  SANTA CLARA County ", "Santa Clara county"):
        got = validate(LOAD_FORECAST, {"aggregation_level": "county", "county": raw})
        assert got["county"] == "Santa Clara"
    assert validate(LOAD_FORECAST, {"county": "none"})["county"] is None


def test_float_noise_below_twelve_digits_is_dropped() -> None:
    got = validate(LOAD_FORECAST, {"fast_percent": 0.1 + 0.2 - 0.2, "res_daily_use": -0.0})
    assert got["fast_percent"] == 0.1
    assert str(got["res_daily_use"]) == "0.0"


# --------------------------------------------------------------------------- parse_params


def test_flags_win_over_file_values() -> None:
    got = parse_params(
        {"num_evs": 5, "seed": 3, "algorithm": LOAD_FORECAST},
        ["seed=9", "day-type=weekend"],
        LOAD_FORECAST,
    )
    assert (got["num_evs"], got["seed"], got["day_type"]) == (5, 9, "weekend")


def test_last_repeated_flag_wins_and_values_may_contain_equals() -> None:
    assert parse_params(None, ["seed=1", "seed=2"], LOAD_FORECAST)["seed"] == 2
    with pytest.raises(ParamError, match="county: unknown county 'Santa=Clara'"):
        parse_params(None, ["aggregation_level=county", "county=Santa=Clara"], LOAD_FORECAST)


@pytest.mark.parametrize("pair", ["seed", "=3", " =3"])
def test_malformed_flag(pair: str) -> None:
    with pytest.raises(ParamError, match=f"--param: {pair!r} is not key=value"):
        parse_params(None, [pair], LOAD_FORECAST)


def test_algorithm_mismatch_and_algorithm_flag() -> None:
    with pytest.raises(
        ParamError, match="the params file is for 'load-control', not 'load-forecast'"
    ):
        parse_params({"algorithm": LOAD_CONTROL}, [], LOAD_FORECAST)
    with pytest.raises(ParamError, match="algorithm: not a parameter"):
        parse_params(None, ["algorithm=load-forecast"], LOAD_FORECAST)


# --------------------------------------------------------------------------- params files


def test_read_json_and_toml_files(tmp_path: Path) -> None:
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps({"algorithm": LOAD_FORECAST, "num_evs": 1e6, "county": None}))
    assert read_params_file(json_file) == (LOAD_FORECAST, {"num_evs": 1e6, "county": None})
    toml_file = tmp_path / "p.toml"
    toml_file.write_text('num_evs = 2000\nres_l2_smooth = false\nday_type = "weekend"\n')
    algorithm, data = read_params_file(toml_file)
    assert algorithm is None
    assert parse_params(data, [], LOAD_FORECAST)["res_l2_smooth"] is False
    other = tmp_path / "p.params"
    other.write_text("seed = 4\n")
    assert read_params_file(other) == (None, {"seed": 4})


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.json", '{"num_evs": 1,}', "is not valid JSON: line 1 column 15"),
        ("bad.toml", "num_evs = = 1", "is not valid TOML"),
        ("bad.txt", "{{{", "is neither JSON nor TOML; name it .json or .toml"),
        ("list.json", "[1, 2]", "must hold an object of parameters, not list"),
        ("alg.json", '{"algorithm": "nope"}', "algorithm: unknown algorithm 'nope'"),
        ("alg2.json", '{"algorithm": [1]}', "algorithm: unknown algorithm [1]"),
    ],
)
def test_bad_params_files(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ParamError) as info:
        read_params_file(path)
    assert f"params file {path}" in str(info.value)
    assert expected in str(info.value)


def test_missing_and_undecodable_params_files(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="not found; check the path"):
        read_params_file(tmp_path / "absent.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ParamError, match="is not UTF-8 text"):
        read_params_file(binary)


# --------------------------------------------------------------------------- describe


@pytest.mark.parametrize("algorithm", [LOAD_FORECAST, LOAD_CONTROL])
def test_describe_lists_every_parameter_completely(algorithm: str) -> None:
    rows = describe(algorithm)
    assert [r["name"] for r in rows] == [p.name for p in P.ALGORITHMS[algorithm]]
    for row in rows:
        assert set(row) == {"name", "type", "meaning", "range", "default", "unit"}
        assert row["type"] in P.TYPES
        assert row["meaning"].endswith(".")
        assert row["range"] and row["range"] != "any"


def test_describe_forecast_rows_match_the_defaults() -> None:
    rows = {r["name"]: r for r in describe(LOAD_FORECAST)}
    assert {name: r["default"] for name, r in rows.items()} == validate(LOAD_FORECAST, {})
    assert rows["num_evs"]["range"] == "1..50000000"
    assert rows["num_evs"]["unit"] == "vehicles"
    assert rows["fast_percent"]["unit"] == "fraction"
    assert rows["res_l2_smooth"]["range"] == "true|false"
    assert rows["time_steps"]["range"] == "96|1440"
    assert {r["default"] for r in describe(LOAD_CONTROL)} == {"(required)"}


# --------------------------------------------------------------------------- canonical form


def test_canonical_json_layout() -> None:
    text = canonical_json(LOAD_FORECAST, {"seed": "7"}, {"sessions-dc-fast-weekday": "abc"})
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    assert doc["algorithm"] == LOAD_FORECAST
    assert doc["algorithm_version"] == P.ALGORITHM_VERSIONS[LOAD_FORECAST]
    assert doc["schema_version"] == P.CANONICAL_SCHEMA_VERSION
    assert doc["models"] == {"sessions-dc-fast-weekday": "abc"}
    assert doc["params"] == validate(LOAD_FORECAST, {"seed": 7})
    assert doc["units"]["num_evs"] == "vehicles"
    assert " " not in text.replace("Santa Clara", "")
    assert '"fast_percent":0.1,' in text
    assert '"res_daily_use":1.0,' in text
    assert '"seed":7' in text


def test_key_depends_on_models_and_algorithm_version(monkeypatch: pytest.MonkeyPatch) -> None:
    base = cache_key(LOAD_FORECAST, {}, {"m": "1"})
    assert cache_key(LOAD_FORECAST, {}, {"m": "2"}) != base
    assert cache_key(LOAD_FORECAST, {}, {"m": "1", "n": "1"}) != base
    monkeypatch.setitem(P.ALGORITHM_VERSIONS, LOAD_FORECAST, 99)
    assert cache_key(LOAD_FORECAST, {}, {"m": "1"}) != base


def test_key_rejects_bad_model_versions_and_params() -> None:
    with pytest.raises(ParamError, match="model_versions: 'm'"):
        cache_key(LOAD_FORECAST, {}, {"m": ""})
    with pytest.raises(ParamError, match="num_evs"):
        cache_key(LOAD_FORECAST, {"num_evs": -5}, {})


# One different valid value per parameter (kept valid alongside the defaults).
CHANGED: dict[str, Any] = {
    "num_evs": 100_001,
    "fast_percent": 0.1000001,
    "work_percent": 0.25,
    "publicl2_percent": 0.01,
    "res_daily_use": 0.9,
    "work_daily_use": 0.8,
    "fast_daily_use": 0.51,
    "publicl2_daily_use": 0.3,
    "day_type": "weekend",
    "res_l2_smooth": False,
    "work_control": "e19",
    "time_steps": 96,
    "seed": 1,
}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_key_changes_with_each_value(field: str) -> None:
    assert cache_key(LOAD_FORECAST, {field: CHANGED[field]}, {}) != cache_key(LOAD_FORECAST, {}, {})


def test_key_changes_with_the_county_and_residential_split() -> None:
    keys = {
        cache_key(LOAD_FORECAST, values, {})
        for values in (
            {},
            {"aggregation_level": "county", "county": "Alameda"},
            {"aggregation_level": "county", "county": "Marin"},
            {"l1_percent": 0.4, "res_percent": 0.3},
            {"l1_percent": 0.4, "rent_percent": 0.4},
        )
    }
    assert len(keys) == 5


def _spellings(thousandths: int) -> st.SearchStrategy[Any]:
    """Ways to write thousandths/1000: float, plain, padded, exponent, percent."""
    value = thousandths / 1000
    return st.sampled_from(
        [value, repr(value), f"{value:.6f}", f"{thousandths}e-3", f"{thousandths / 10}%"]
    )


@st.composite
def spelled_params(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the intended values, one spelling of them) for a random valid forecast request."""
    fast, work, public = (draw(st.integers(0, 333)) for _ in range(3))
    l1 = draw(st.integers(0, 1000))
    res = draw(st.integers(0, 1000 - l1))
    thousandths = {
        "fast_percent": fast,
        "work_percent": work,
        "publicl2_percent": public,
        "l1_percent": l1,
        "res_percent": res,
        "rent_percent": 1000 - l1 - res,
        "res_daily_use": draw(st.integers(0, 1000)),
    }
    intended: dict[str, Any] = {k: v / 1000 for k, v in thousandths.items()}
    intended["num_evs"] = draw(st.integers(1, 50_000_000))
    intended["seed"] = draw(st.integers(0, 3))
    intended["res_l2_smooth"] = draw(st.booleans())
    spelled: dict[str, Any] = {k: draw(_spellings(v)) for k, v in thousandths.items()}
    spelled["num_evs"] = draw(
        st.sampled_from([intended["num_evs"], str(intended["num_evs"]), float(intended["num_evs"])])
    )
    spelled["seed"] = draw(st.sampled_from([intended["seed"], str(intended["seed"])]))
    flag = intended["res_l2_smooth"]
    spelled["res_l2_smooth"] = draw(st.sampled_from([flag, str(flag).lower(), str(int(flag))]))
    order = draw(st.permutations(list(spelled)))
    return intended, {k: spelled[k] for k in order}


@settings(max_examples=200, deadline=None)
@given(spelled_params())
def test_key_ignores_order_and_float_spelling(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    intended, spelled = case
    assert cache_key(LOAD_FORECAST, spelled, {"m": "h"}) == cache_key(
        LOAD_FORECAST, intended, {"m": "h"}
    )


@settings(max_examples=200, deadline=None)
@given(spelled_params(), spelled_params())
def test_keys_equal_exactly_when_values_equal(
    a: tuple[dict[str, Any], dict[str, Any]], b: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    same = validate(LOAD_FORECAST, a[0]) == validate(LOAD_FORECAST, b[0])
    assert (cache_key(LOAD_FORECAST, a[1], {}) == cache_key(LOAD_FORECAST, b[1], {})) == same


@settings(max_examples=100, deadline=None)
@given(spelled_params(), st.sampled_from(["num_evs", "seed", "res_l2_smooth", "res_daily_use"]))
def test_key_changes_when_one_value_changes(
    case: tuple[dict[str, Any], dict[str, Any]], field: str
) -> None:
    intended, spelled = case
    changed = dict(spelled)
    value = intended[field]
    if isinstance(value, bool):
        changed[field] = not value
    elif isinstance(value, int):
        changed[field] = value + 1 if value < 3 else value - 1
    else:
        changed[field] = value + 0.001 if value <= 0.5 else value - 0.001
    assert cache_key(LOAD_FORECAST, changed, {}) != cache_key(LOAD_FORECAST, spelled, {})
