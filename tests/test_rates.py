"""Rates: the built-in tariffs, rate files, canonical JSON, and one error per malformed file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from script_ec2.errors import EXIT_USAGE, UsageError
from script_ec2.rates import (
    RATE_NAMES,
    DemandCharge,
    Rate,
    builtin_rate,
    load_rate,
    mask_to_ranges,
)

PAPER_CUSTOM = """
name = "paper-custom"
[periods]
super-off-peak = ["11:00-15:00"]
off-peak = ["09:00-11:00", "15:00-17:00"]
mid = ["07:00-09:00"]
peak = ["17:00-07:00"]
[energy]
super-off-peak = 0.0
off-peak = 0.05
mid = 0.10
peak = 0.15
[[demand_charges]]
name = "night"
price = 20.0
ranges = ["16:00-06:00"]
[[demand_charges]]
name = "overall"
price = 2
periods = ["super-off-peak", "off-peak", "mid", "peak"]
"""


def slots(start_h: float, end_h: float) -> np.ndarray:
    return np.arange(int(start_h * 4), int(end_h * 4))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- built-ins


def test_default_is_e19_with_the_spec_prices_and_periods() -> None:
    rate = load_rate()
    assert rate == load_rate("e19")
    price = rate.energy_price
    assert (price[slots(0, 8.5)] == 0.09082).all()
    assert (price[slots(8.5, 12)] == 0.12236).all()
    assert (price[slots(12, 18)] == 0.16997).all()
    assert (price[slots(18, 21.5)] == 0.12236).all()
    assert (price[slots(21.5, 24)] == 0.09082).all()
    charges = {d.name: d for d in rate.demand_charges}
    assert [d.name for d in rate.demand_charges] == ["overall", "peak", "part-peak"]
    assert charges["overall"].price == 19.10 and charges["overall"].mask.all()
    assert charges["peak"].price == 21.23
    assert np.flatnonzero(charges["peak"].mask).tolist() == list(range(48, 72))
    assert charges["part-peak"].price == 5.85
    assert np.flatnonzero(charges["part-peak"].mask).tolist() == [*range(34, 48), *range(72, 86)]
    assert rate.cap_kw is None and rate.cap_fraction is None


def test_pge_cev_family() -> None:
    cev, demand, energy = (load_rate(n) for n in ("pge-cev", "pge-cev-demand", "pge-cev-energy"))
    for rate in (cev, demand, energy):
        assert (rate.energy_price[slots(16, 22)] == 0.30267).all()
        assert (rate.energy_price[slots(9, 14)] == 0.08882).all()
        assert (rate.energy_price[[*slots(22, 24), *slots(0, 9), *slots(14, 16)]] == 0.11079).all()
    assert cev.cap_fraction == 1.0 and cev.demand_charges == ()
    assert len(demand.demand_charges) == 1
    assert demand.demand_charges[0].price == pytest.approx(183.86 / 50)
    assert demand.demand_charges[0].mask.all() and demand.cap_fraction is None
    assert energy.demand_charges == () and energy.cap_fraction is None


def test_sce_tou_ev8_summer_by_default_and_winter_by_season() -> None:
    summer = load_rate("sce-tou-ev8")
    assert (summer.energy_price[slots(15, 20)] == 0.37).all()
    assert (np.delete(summer.energy_price, slots(15, 20)) == 0.13).all()
    winter = builtin_rate("sce-tou-ev8", season="winter")
    assert (winter.energy_price[[*slots(0, 7), *slots(20, 24)]] == 0.13).all()
    assert (winter.energy_price[slots(7, 15)] == 0.08).all()
    assert (winter.energy_price[slots(15, 20)] == 0.26).all()


def test_cap_and_minpeak() -> None:
    cap = load_rate("cap")
    assert not cap.has_prices and cap.cap_fraction == 0.8
    assert cap.cap_level(500.0) == pytest.approx(400.0)
    minpeak = load_rate("minpeak")
    assert not minpeak.energy_price.any()
    assert [(d.name, d.price, bool(d.mask.all())) for d in minpeak.demand_charges] == [
        ("overall", 1.0, True)
    ]
    assert minpeak.cap_level(500.0) is None


@pytest.mark.parametrize("name", RATE_NAMES)
def test_every_builtin_round_trips_through_canonical_json(name: str, tmp_path: Path) -> None:
    rate = load_rate(name)
    data = rate.to_json()
    assert list(data) == ["name", "energy_price", "demand_charges", "cap_kw", "cap_fraction"]
    assert len(data["energy_price"]) == 96
    assert Rate.from_json(data) == rate
    path = write(tmp_path, "rate.json", json.dumps(data))
    assert load_rate(str(path)).to_json() == data


def test_cost_of_a_flat_one_kw_day_under_e19() -> None:
    rate = load_rate("e19")
    flat = np.ones(96)
    energy = 0.25 * (34 * 0.09082 + 28 * 0.12236 + 24 * 0.16997 + 10 * 0.09082)
    assert rate.cost(flat) == pytest.approx(energy + 19.10 + 21.23 + 5.85)
    two = rate.cost(np.stack([flat, 2 * flat]))
    assert two.shape == (2,) and two[1] == pytest.approx(2 * two[0])


# --------------------------------------------------------------------------- rate files


def test_custom_toml_with_periods_wrapping_ranges_and_demand_windows(tmp_path: Path) -> None:
    rate = load_rate(write(tmp_path, "custom.toml", PAPER_CUSTOM))
    price = rate.energy_price
    assert (price[slots(11, 15)] == 0.0).all()
    assert (price[[*slots(9, 11), *slots(15, 17)]] == 0.05).all()
    assert (price[slots(7, 9)] == 0.10).all()
    assert (price[[*slots(17, 24), *slots(0, 7)]] == 0.15).all()
    night, overall = rate.demand_charges
    assert (night.name, night.price, overall.price) == ("night", 20.0, 2.0)
    assert mask_to_ranges(night.mask) == ["00:00-06:00", "16:00-24:00"]
    assert overall.mask.all()
    assert rate.to_json()["demand_charges"][0]["ranges"] == ["00:00-06:00", "16:00-24:00"]


def test_ninety_six_prices_json_and_its_toml_twin_are_equal(tmp_path: Path) -> None:
    prices = [0.1] * 48 + [0.2] * 48
    as_json = {
        "name": "halves",
        "energy_price": prices,
        "demand_charges": [{"name": "pm", "price": 3, "ranges": ["12:00-24:00"]}],
        "cap_kw": 250,
    }
    a = load_rate(write(tmp_path, "a.json", json.dumps(as_json)))
    toml = (
        'cap_kw = 250.0\nname = "halves"\n'
        f"energy_price = [{', '.join(['0.10'] * 48 + ['0.20'] * 48)}]\n"
        '[[demand_charges]]\nranges = ["12:00-24:00"]\nprice = 3.0\nname = "pm"\n'
    )
    b = load_rate(write(tmp_path, "b.toml", toml))
    assert a == b
    assert json.dumps(a.to_json()) == json.dumps(b.to_json())
    assert a.cap_level(999.0) == 250.0


def test_a_file_without_a_known_suffix_is_read_as_json_or_toml(tmp_path: Path) -> None:
    as_toml = load_rate(write(tmp_path, "rate.conf", PAPER_CUSTOM))
    assert as_toml.name == "paper-custom"
    as_json = load_rate(write(tmp_path, "rate.txt", json.dumps(load_rate("e19").to_json())))
    assert as_json == load_rate("e19")


def test_builtin_reference_with_season_and_cap(tmp_path: Path) -> None:
    winter = load_rate(write(tmp_path, "w.toml", 'builtin = "sce-tou-ev8"\nseason = "winter"\n'))
    assert winter == builtin_rate("sce-tou-ev8", season="winter")
    capped = load_rate(write(tmp_path, "c.toml", 'builtin = "e19"\ncap_kw = 150\nname = "e19c"'))
    assert capped.name == "e19c" and capped.cap_kw == 150.0
    assert np.array_equal(capped.energy_price, load_rate("e19").energy_price)
    tighter = load_rate(write(tmp_path, "t.json", '{"builtin": "cap", "cap_fraction": 0.6}'))
    assert tighter.cap_fraction == 0.6 and tighter.cap_kw is None
    by_kw = load_rate(write(tmp_path, "k.json", '{"builtin": "pge-cev", "cap_kw": 90}'))
    assert by_kw.cap_kw == 90.0 and by_kw.cap_fraction is None


# --------------------------------------------------------------------------- one error per defect

_BASE = {
    "name": "x",
    "periods": {"day": ["06:00-18:00"], "night": ["18:00-06:00"]},
    "energy": {"day": 0.2, "night": 0.1},
    "demand_charges": [{"name": "all", "price": 5.0, "ranges": ["00:00-24:00"]}],
}


def _with(**changes: object) -> dict[str, object]:
    data = json.loads(json.dumps(_BASE))
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


BAD_FILES: list[tuple[str, dict[str, object] | str, str]] = [
    ("missing-energy", _with(energy=None), "energy: missing field"),
    ("missing-period-price", _with(energy={"day": 0.2}), "energy.night: missing field"),
    ("missing-name", _with(name=None), "name: missing field"),
    (
        "missing-demand-price",
        _with(demand_charges=[{"name": "a", "ranges": ["00:00-24:00"]}]),
        "demand_charges[0].price: missing field",
    ),
    (
        "negative-energy",
        _with(energy={"day": -0.2, "night": 0.1}),
        "energy.day: must not be negative",
    ),
    (
        "negative-demand",
        _with(demand_charges=[{"name": "a", "price": -1, "ranges": ["00:00-24:00"]}]),
        "demand_charges[0].price: must not be negative",
    ),
    (
        "text-price",
        _with(energy={"day": "0.2", "night": 0.1}),
        "energy.day: must be a number, got '0.2'",
    ),
    (
        "bool-price",
        _with(energy={"day": True, "night": 0.1}),
        "energy.day: must be a number, got True",
    ),
    (
        "wrong-length",
        {"name": "x", "energy_price": [0.1] * 95},
        "energy_price: must have 96 values",
    ),
    (
        "bad-range-text",
        _with(periods={"day": ["6-18"], "night": ["18:00-06:00"]}),
        "periods.day[0]: bad time range",
    ),
    (
        "bad-hour",
        _with(periods={"day": ["06:00-25:00"], "night": ["18:00-06:00"]}),
        "periods.day[0]: bad time '25:00'",
    ),
    (
        "off-boundary",
        _with(periods={"day": ["06:10-18:00"], "night": ["18:00-06:10"]}),
        "periods.day[0]: time '06:10' is not on a 15-minute boundary",
    ),
    (
        "empty-range",
        _with(periods={"day": ["06:00-06:00"], "night": ["18:00-06:00"]}),
        "periods.day[0]: empty time range",
    ),
    (
        "overlapping-periods",
        _with(periods={"day": ["06:00-19:00"], "night": ["18:00-06:00"]}),
        "periods.night: overlaps another period at 18:00",
    ),
    (
        "overlap-in-one-period",
        _with(periods={"day": ["06:00-12:00", "11:00-18:00"], "night": ["18:00-06:00"]}),
        "periods.day[1]: time range '11:00-18:00' overlaps an earlier range",
    ),
    (
        "gap",
        _with(periods={"day": ["06:00-17:00"], "night": ["18:00-06:00"]}),
        "periods: the periods leave a gap at 17:00",
    ),
    ("unknown-field", _with(currency="USD"), "currency: unknown field"),
    (
        "unknown-demand-field",
        _with(demand_charges=[{"name": "a", "price": 1, "window": "x", "ranges": ["00:00-24:00"]}]),
        "demand_charges[0].window: unknown field",
    ),
    (
        "unknown-period-in-energy",
        _with(energy={"day": 0.2, "night": 0.1, "dusk": 0.3}),
        "energy.dusk: unknown period",
    ),
    (
        "unknown-period-in-demand",
        _with(demand_charges=[{"name": "a", "price": 1, "periods": ["x"]}]),
        "demand_charges[0].periods: unknown period 'x'",
    ),
    (
        "ranges-and-periods",
        _with(
            demand_charges=[
                {"name": "a", "price": 1, "periods": ["day"], "ranges": ["00:00-24:00"]}
            ]
        ),
        "demand_charges[0]: give exactly one of ranges or periods",
    ),
    (
        "duplicate-demand",
        _with(
            demand_charges=[
                {"name": "a", "price": 1, "periods": ["day"]},
                {"name": "a", "price": 2, "periods": ["night"]},
            ]
        ),
        "demand_charges[1].name: duplicate demand charge name",
    ),
    ("both-caps", _with(cap_kw=10, cap_fraction=0.5), "cap_kw: give cap_kw or cap_fraction"),
    ("zero-cap", _with(cap_fraction=0), "cap_fraction: must be greater than 0"),
    ("energy-both-ways", _with(energy_price=[0.1] * 96), "energy_price: give energy_price or"),
    ("season-on-e19", {"builtin": "e19", "season": "winter"}, "season: only sce-tou-ev8"),
    ("bad-season", {"builtin": "sce-tou-ev8", "season": "spring"}, "season: must be one of"),
    ("unknown-builtin", {"builtin": "e20"}, "builtin: unknown rate 'e20'"),
    ("builtin-extra-field", {"builtin": "e19", "periods": {}}, "periods: unknown field"),
    ("not-a-table", "[1, 2, 3]", "the top level must be a table"),
]


@pytest.mark.parametrize(("case", "content", "expected"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_each_malformed_rate_file_has_its_own_error(
    tmp_path: Path, case: str, content: dict[str, object] | str, expected: str
) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    path = write(tmp_path, f"{case}.json", text)
    with pytest.raises(UsageError) as info:
        load_rate(str(path))
    message = str(info.value)
    assert message.startswith(f"rate file {path}: ")
    assert expected in message
    assert "\n" not in message
    assert info.value.exit_code == EXIT_USAGE


def test_the_malformed_cases_are_all_told_apart() -> None:
    assert len({expected for _, _, expected in BAD_FILES}) == len(BAD_FILES)


def test_not_toml_nor_json(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is neither TOML nor JSON"):
        load_rate(write(tmp_path, "rate.txt", "this is {not: a rate"))
    with pytest.raises(UsageError, match="is not valid TOML"):
        load_rate(write(tmp_path, "rate.toml", '{"name": "x"}'))
    with pytest.raises(UsageError, match="is not valid JSON"):
        load_rate(write(tmp_path, "rate.json", "name = 'x'"))
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        load_rate(tmp_path / "bin.json")


def test_unknown_rate_name_lists_the_names() -> None:
    with pytest.raises(UsageError) as info:
        load_rate("e20")
    assert str(info.value).startswith("unknown rate 'e20': choose one of ")
    for name in RATE_NAMES:
        assert name in str(info.value)
    assert info.value.exit_code == EXIT_USAGE


def test_missing_rate_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"rate file .*nope\.toml not found"):
        load_rate(str(tmp_path / "nope.toml"))


def test_rate_object_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="96 values"):
        Rate("x", np.zeros(95))
    with pytest.raises(ValueError, match="some true"):
        DemandCharge("d", np.zeros(96, dtype=bool), 1.0)
    rate = load_rate("e19")
    with pytest.raises(ValueError):
        rate.energy_price[0] = 1.0  # read-only: a rate cannot change after validation


# --------------------------------------------------------------------------- canonical form


@st.composite
def tariffs(draw: st.DrawFn) -> dict[str, object]:
    """A random tariff as a rate file mapping: contiguous periods covering the day."""
    cuts = sorted(draw(st.sets(st.integers(1, 95), min_size=1, max_size=6)))
    bounds = [0, *cuts, 96]
    ranges = [
        f"{a // 4:02d}:{a % 4 * 15:02d}-{b // 4:02d}:{b % 4 * 15:02d}"
        for a, b in itertools.pairwise(bounds)
    ]
    prices = draw(st.lists(st.integers(0, 500), min_size=len(ranges), max_size=len(ranges)))
    demand = draw(st.integers(0, 3000))
    return {
        "name": "random",
        "periods": {f"p{k}": [r] for k, r in enumerate(ranges)},
        "energy": {f"p{k}": p / 1000 for k, p in enumerate(prices)},
        "demand_charges": [{"name": "d", "price": demand / 100, "periods": ["p0"]}],
    }


@settings(max_examples=50, deadline=None)
@given(tariffs())
def test_canonical_json_is_a_fixed_point(data: dict[str, object]) -> None:
    rate = Rate.from_json(data)
    canonical = rate.to_json()
    again = Rate.from_json(json.loads(json.dumps(canonical)))
    assert again == rate
    assert again.to_json() == canonical
    # Field order and number formatting of the input do not matter.
    shuffled = dict(reversed(list(data.items())))
    assert Rate.from_json(shuffled).to_json() == canonical
