"""``script-ec2 fit``: parameters and their errors, models, the results cache, outputs.

The registry is built once per session from hand-made session models (one Gaussian component
each) and one hand-made control model, so no test trains anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from script_ec2 import fitting
from script_ec2.forecast_fit import COLUMNS, SEGMENT_LABELS, session_model_name
from script_ec2.rates import builtin_rate
from script_ec2.registry import Registry
from script_ec2.store.local import LocalStore

SMALL = ["-p", "num_evs=2000", "-p", "time_steps=96"]
EV_CSV = "County,EVs\nSanta Clara,300\nAlameda,100\nFresno,100\n"


def _gmm(start_hour: float, energy_kwh: float, shift_hours: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "weights": np.array([1.0]),
        "means": np.array([[start_hour, energy_kwh]]),
        "covariances": np.array([[[4.0, 0.5], [0.5, 9.0]]]),
        "shift_hours": np.array(shift_hours),
        "energy_bounds": np.array([0.1, 60.0]),
    }


SESSION_MODELS = {
    "Residential L1": _gmm(20.0, 8.0),
    "Residential L2": _gmm(19.0, 14.0),
    "Residential MUD": _gmm(21.0, 12.0),
    "Workplace": _gmm(4.5, 11.0, shift_hours=4.0),
    "Public L2": _gmm(13.0, 8.0),
    "DC Fast": _gmm(15.0, 25.0),
}


def _save(
    registry: Registry, kind: str, name: str, arrays: dict[str, np.ndarray], **params: Any
) -> None:
    registry.save(
        kind,
        name,
        parameters=params,
        metrics={},
        fingerprint="test",
        arrays=arrays,
        record={},
        licence="test",
    )


def _reference_profile() -> np.ndarray:
    slots = np.arange(96)
    return 400.0 * np.exp(-0.5 * ((slots - 38) / 6.0) ** 2)


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weekday session models of every segment and control-santa-clara-e19 (no weekend ones)."""
    root = tmp_path_factory.mktemp("registry")
    registry = Registry(LocalStore(root))
    for label in SEGMENT_LABELS:
        _save(registry, "sessions-gmm", session_model_name(label, "weekday"), SESSION_MODELS[label])
    reference = _reference_profile()
    _save(
        registry,
        "workplace-control",
        "control-santa-clara-e19",
        {
            # Every slot gets the day's mean: energy kept, peak flattened.
            "coef": np.full((96, 96), 1.0 / 96),
            "intercept": np.zeros(96),
            "alpha": np.array(1.0),
            "reference_uncontrolled": reference,
            "reference_controlled": np.full(96, reference.mean()),
        },
        county="Santa Clara",
        rate=builtin_rate("e19").to_json(),
    )
    return root


@pytest.fixture
def env(
    cli: Callable[..., Any],
    registry_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A SQLite database, the session registry and a data folder with the county EV file."""
    data = tmp_path / "data"
    data.mkdir()
    (data / fitting.COUNTY_EV_FILE).write_text(EV_CSV)
    monkeypatch.setenv("SCRIPT_EC2_MODELS_DIR", str(registry_dir))
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(data))
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", f"sqlite:///{tmp_path / 'fit.db'}")
    return data


@pytest.fixture
def db_env(env: Path, cli: Callable[..., Any], db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``env`` on SQLite and on PostgreSQL (upgraded first, as an operator would)."""
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", db_url)
    assert cli("db", "upgrade").exit_code == 0
    return db_url


def _json(cli: Callable[..., Any], *args: str) -> Any:
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- parameter errors


@pytest.mark.parametrize(
    ("args", "field", "allowed"),
    [
        (["-p", "num_evs=0"], "num_evs", "1..50000000"),
        (["-p", "fast_percent=1.5"], "fast_percent", "0..1"),
        (["-p", "seed=abc"], "seed", "whole number"),
        (["-p", "res_l2_smooth=maybe"], "res_l2_smooth", "true|false"),
        (["-p", "day_type=holiday"], "day_type", "weekday|weekend"),
        (
            ["-p", "fast_percent=0.6", "-p", "work_percent=0.6"],
            "fast_percent + work_percent + publicl2_percent",
            "0..1",
        ),
        (["-p", "l1_percent=0.9"], "l1_percent + res_percent + rent_percent", "must equal 1"),
        (["-p", "bogus=1"], "bogus", "known: num_evs"),
        (["-p", "aggregation_level=county", "-p", "county=Atlantis"], "county", "California"),
        (["-p", "aggregation_level=county"], "county", "required"),
        (["-p", "no-equals-sign"], "--param", "key=value"),
    ],
)
def test_each_parameter_error_exits_2_naming_the_field(
    env: Path, cli: Callable[..., Any], args: list[str], field: str, allowed: str
) -> None:
    result = cli("fit", "load-forecast", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid parameters: ")
    assert f"{field}: " in lines[0]
    assert allowed in lines[0]


def test_all_problems_are_reported_together(env: Path, cli: Callable[..., Any]) -> None:
    result = cli("fit", "load-forecast", "-p", "num_evs=-1", "-p", "seed=1.5", "-p", "x=1")
    assert result.exit_code == 2
    for field in ("num_evs:", "seed:", "x:"):
        assert field in result.stderr


def test_params_file_errors_name_the_field(
    env: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('algorithm = "load-forecast"\nwork_percent = "lots"\n')
    result = cli("fit", "--params", str(bad))
    assert result.exit_code == 2
    assert "work_percent: expected a number" in result.stderr


def test_parameter_errors_come_before_any_work(
    env: Path, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_listing(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the registry was read before validation")

    monkeypatch.setattr(Registry, "list", no_listing)
    assert cli("fit", "load-forecast", "-p", "num_evs=0").exit_code == 2


def test_show_params_lists_every_parameter(cli: Callable[..., Any]) -> None:
    from script_ec2.params import LOAD_CONTROL_PARAMS, LOAD_FORECAST_PARAMS

    shown = _json(cli, "fit", "load-forecast", "--show-params")
    assert [row["name"] for row in shown] == [p.name for p in LOAD_FORECAST_PARAMS]
    num_evs = next(row for row in shown if row["name"] == "num_evs")
    assert num_evs["range"] == "1..50000000" and num_evs["default"] == 100_000
    assert num_evs["meaning"]
    control = _json(cli, "fit", "load-control", "--show-params")
    assert [row["name"] for row in control] == [p.name for p in LOAD_CONTROL_PARAMS]


# --------------------------------------------------------------------------- models and inputs


def test_control_for_a_county_without_a_model_lists_the_available_ones(
    env: Path, cli: Callable[..., Any]
) -> None:
    result = cli("fit", "load-control", "--county", "Fresno", "--rate", "e19")
    assert result.exit_code == 2
    assert "control-fresno-e19" in result.stderr
    assert "available: control-santa-clara-e19" in result.stderr


def test_forecast_with_an_untrained_control_rate_exits_2(
    env: Path, cli: Callable[..., Any]
) -> None:
    result = cli("fit", "load-forecast", *SMALL, "-p", "work_control=pge-cev")
    assert result.exit_code == 2
    assert "control-santa-clara-pge-cev" in result.stderr
    assert "available: control-santa-clara-e19" in result.stderr


def test_missing_session_model_lists_the_available_ones(env: Path, cli: Callable[..., Any]) -> None:
    result = cli("fit", "load-forecast", *SMALL, "-p", "day_type=weekend")
    assert result.exit_code == 2
    assert "session model sessions-" in result.stderr and "-weekend" in result.stderr
    assert "sessions-workplace-weekday" in result.stderr


def test_only_segments_with_vehicles_need_a_model(env: Path, cli: Callable[..., Any]) -> None:
    # publicl2_percent defaults to 0: the Public L2 model is not part of the request.
    document = _json(cli, "fit", "load-forecast", *SMALL)
    assert session_model_name("Public L2", "weekday") not in document["model_versions"]
    # Home L2 samples the home L1 model by default (res_l2_smooth).
    assert session_model_name("Residential L2", "weekday") not in document["model_versions"]
    assert session_model_name("Residential L1", "weekday") in document["model_versions"]


def test_county_share_comes_from_the_ev_distribution(env: Path, cli: Callable[..., Any]) -> None:
    state = _json(cli, "fit", "load-forecast", "-p", "num_evs=5000")
    county = _json(
        cli,
        "fit",
        "load-forecast",
        "-p",
        "num_evs=5000",
        "-p",
        "aggregation_level=county",
        "-p",
        "county=santa clara county",
    )
    assert county["params"]["county"] == "Santa Clara"
    # Santa Clara has 300 of the file's 500 EVs.
    assert county["meta"]["vehicles"] == pytest.approx(0.6 * state["meta"]["vehicles"], abs=2)


def test_editing_the_ev_distribution_changes_the_key(env: Path, cli: Callable[..., Any]) -> None:
    args = ["fit", "load-forecast", *SMALL, "-p", "aggregation_level=county", "-p", "county=Fresno"]
    first = _json(cli, *args)
    (env / fitting.COUNTY_EV_FILE).write_text(EV_CSV.replace("Fresno,100", "Fresno,200"))
    second = _json(cli, *args)
    assert second["key"] != first["key"] and not second["cached"]
    assert second["meta"]["vehicles"] > first["meta"]["vehicles"]


def test_missing_county_ev_file_is_named(env: Path, cli: Callable[..., Any]) -> None:
    (env / fitting.COUNTY_EV_FILE).unlink()
    result = cli(
        "fit", "load-forecast", *SMALL, "-p", "aggregation_level=county", "-p", "county=Alameda"
    )
    assert result.exit_code == 1
    assert f"{env}/county_ev_distribution.csv not found" in result.stderr
    # A state forecast does not need the file.
    assert cli("fit", "load-forecast", *SMALL).exit_code == 0


def test_county_without_a_row_in_the_ev_file_fails(env: Path, cli: Callable[..., Any]) -> None:
    result = cli(
        "fit", "load-forecast", *SMALL, "-p", "aggregation_level=county", "-p", "county=Kern"
    )
    assert result.exit_code == 1
    assert "'Kern' has no row in the county EV distribution" in result.stderr


# --------------------------------------------------------------------------- the cache


def test_miss_then_hit_without_computing(
    db_env: str, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cli("fit", "load-forecast", *SMALL)
    assert first.exit_code == 0, first.stderr
    assert "computed in" in first.stderr and "from cache" not in first.stderr

    def no_compute(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a cache hit must not compute")

    monkeypatch.setattr(fitting, "compute", no_compute)
    second = cli("fit", "load-forecast", *SMALL)
    assert second.exit_code == 0
    assert "from cache in" in second.stderr and "computed in" in second.stderr
    assert second.stdout == first.stdout
    listed = _json(cli, "results", "list")
    assert len(listed) == 1 and listed[0]["hits"] == 1
    quiet = cli("--quiet", "fit", "load-forecast", *SMALL)
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == first.stdout


def test_no_cache_recomputes_and_replaces(
    db_env: str, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _json(cli, "fit", "load-forecast", *SMALL)
    assert _json(cli, "fit", "load-forecast", *SMALL)["cached"]
    calls: list[str] = []
    real_compute = fitting.compute

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[3].key)
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(fitting, "compute", counting)
    again = _json(cli, "fit", "load-forecast", *SMALL, "--no-cache")
    assert calls == [first["key"]]
    assert not again["cached"] and again["key"] == first["key"]
    assert again["created_at"] > first["created_at"]
    assert again["uncontrolled"] == first["uncontrolled"]  # same seed, same numbers
    listed = _json(cli, "results", "list")
    assert len(listed) == 1 and listed[0]["hits"] == 0


def test_key_ignores_parameter_order_and_float_spelling(env: Path, cli: Callable[..., Any]) -> None:
    a = _json(
        cli,
        "fit",
        "load-forecast",
        "-p",
        "num_evs=2000",
        "-p",
        "fast_percent=0.1",
        "-p",
        "work_percent=0.25",
    )
    b = _json(
        cli,
        "fit",
        "load-forecast",
        "-p",
        "work-percent=25%",
        "-p",
        "fast_percent=1e-1",
        "-p",
        "num_evs=2e3",
        "-p",
        "seed=0",
    )
    assert b["key"] == a["key"] and b["cached"]
    c = _json(cli, "fit", "load-forecast", "-p", "num_evs=2000", "-p", "work_percent=0.26")
    assert c["key"] != a["key"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.permutations(["num_evs", "fast_percent", "work_percent", "seed"]),
    spelling=st.sampled_from(["0.1", "0.10", "1e-1", "10%", "0.1000000000001"]),
    evs=st.sampled_from([3000, 3000.0, "3000", "3e3", "3000.0"]),
)
def test_prepared_key_is_order_and_spelling_invariant(
    registry_dir: Path, tmp_path: Path, order: list[str], spelling: str, evs: Any
) -> None:
    registry = Registry(LocalStore(registry_dir))
    values = {"num_evs": evs, "fast_percent": spelling, "work_percent": 0.2, "seed": 7}
    raw = {name: values[name] for name in order}
    reference = {"num_evs": 3000, "fast_percent": 0.1, "work_percent": 0.2, "seed": 7}
    store = LocalStore(tmp_path)
    prepared = fitting.prepare(None, registry, store, "load-forecast", raw)
    expected = fitting.prepare(None, registry, store, "load-forecast", reference)
    assert prepared.key == expected.key
    assert prepared.canonical == expected.canonical


def test_params_file_form_matches_the_subcommand(
    env: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    params = tmp_path / "forecast.json"
    params.write_text(
        json.dumps({"algorithm": "load-forecast", "num_evs": 2000, "time_steps": 96, "seed": 4})
    )
    by_file = _json(cli, "fit", "--params", str(params))
    by_command = _json(cli, "fit", "load-forecast", "-p", "seed=4", *SMALL)
    assert by_command["key"] == by_file["key"] and by_command["cached"]
    assert by_command["uncontrolled"] == by_file["uncontrolled"]
    # The subcommand reads the same file too; a flag wins over the file.
    overridden = _json(cli, "fit", "load-forecast", "--params", str(params), "-p", "seed=5")
    assert overridden["params"]["seed"] == 5


def test_toml_params_file_for_load_control(
    env: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    params = tmp_path / "control.toml"
    params.write_text('algorithm = "load-control"\ncounty = "Santa Clara"\nrate = "e19"\n')
    by_file = _json(cli, "fit", "--params", str(params))
    by_command = _json(cli, "fit", "load-control", "--county", "santa clara", "--rate", "E19")
    assert by_command["key"] == by_file["key"] and by_command["cached"]


def test_params_file_for_another_algorithm_is_refused(
    env: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    params = tmp_path / "control.json"
    params.write_text(json.dumps({"algorithm": "load-control", "county": "Santa Clara"}))
    result = cli("fit", "load-forecast", "--params", str(params))
    assert (
        result.exit_code == 2
        and "algorithm: the params file is for 'load-control'" in result.stderr
    )
    nameless = tmp_path / "nameless.json"
    nameless.write_text("{}")
    result = cli("fit", "--params", str(nameless))
    assert result.exit_code == 2 and "algorithm: not given" in result.stderr
    assert cli("fit").exit_code == 2
    misplaced = cli("fit", "--format", "json", "load-forecast")
    assert misplaced.exit_code == 2 and "after the algorithm" in misplaced.stderr


# --------------------------------------------------------------------------- results


def test_conservation_through_fit(env: Path, cli: Callable[..., Any]) -> None:
    document = _json(
        cli, "fit", "load-forecast", "-p", "num_evs=3000", "-p", "publicl2_percent=0.1"
    )
    assert len(document["time"]) == 1440
    profile = document["uncontrolled"]
    step_hours = 1 / 60
    segments = {s["column"]: s for s in document["meta"]["segments"]}
    for column in COLUMNS[:-1]:
        energy = sum(profile[column]) * step_hours
        assert energy == pytest.approx(segments[column]["delivered_kwh"], rel=1e-9, abs=1e-6)
        # These models never need more than 24 h of charging: nothing is capped.
        assert segments[column]["delivered_kwh"] == pytest.approx(segments[column]["sampled_kwh"])
    total = np.array(profile["Total"])
    parts = np.sum([profile[c] for c in COLUMNS[:-1]], axis=0)
    np.testing.assert_allclose(total, parts, rtol=1e-12, atol=1e-9)
    assert total.sum() * step_hours == pytest.approx(document["meta"]["energy_kwh"], rel=1e-9)


def test_controlled_forecast_changes_only_work(env: Path, cli: Callable[..., Any]) -> None:
    document = _json(cli, "fit", "load-forecast", *SMALL, "--controlled")
    assert document["params"]["work_control"] == "e19"
    assert "control-santa-clara-e19" in document["model_versions"]
    before, after = document["uncontrolled"], document["controlled"]
    for column in ("Residential L1", "Fast"):
        assert after[column] == before[column]
    # The hand-made model spreads the day's workplace energy evenly.
    np.testing.assert_allclose(after["Work"], np.mean(before["Work"]), rtol=1e-9)
    parts = np.sum([after[c] for c in COLUMNS[:-1]], axis=0)
    np.testing.assert_allclose(after["Total"], parts, rtol=1e-12, atol=1e-9)


def test_load_control_profiles_peak_and_costs(env: Path, cli: Callable[..., Any]) -> None:
    document = _json(cli, "fit", "load-control", "--county", "Santa Clara", "--rate", "e19")
    before = np.array(document["uncontrolled"]["Work"])
    after = np.array(document["controlled"]["Work"])
    assert before.shape == after.shape == (96,)
    np.testing.assert_allclose(before, _reference_profile())
    np.testing.assert_allclose(after, before.mean())
    meta = document["meta"]
    assert meta["peak_reduction_kw"] == pytest.approx(before.max() - after.max())
    assert meta["peak_reduction_pct"] == pytest.approx(100 * (1 - after.max() / before.max()))
    rate = builtin_rate("e19")
    assert meta["cost_usd_per_day"]["uncontrolled"] == pytest.approx(float(rate.cost(before)))
    assert meta["cost_usd_per_day"]["controlled"] == pytest.approx(float(rate.cost(after)))
    assert meta["model"] == "control-santa-clara-e19@1"
    table = cli("fit", "load-control", "--county", "Santa Clara", "--rate", "e19")
    assert "uncontrolled" in table.stdout and "peak" in table.stderr and "$" in table.stderr


def test_rate_file_names_its_model_and_must_match_it(
    env: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    same = tmp_path / "e19.toml"
    same.write_text('builtin = "e19"\n')
    by_name = _json(cli, "fit", "load-control", "--county", "Santa Clara", "--rate", "e19")
    by_file = _json(cli, "fit", "load-control", "--county", "Santa Clara", "--rate", str(same))
    assert by_file["key"] == by_name["key"]
    changed = tmp_path / "e19-capped.toml"
    changed.write_text('builtin = "e19"\ncap_kw = 100.0\n')
    result = cli("fit", "load-control", "--county", "Santa Clara", "--rate", str(changed))
    assert result.exit_code == 2
    assert "differently from the rate control-santa-clara-e19@1 was trained for" in result.stderr


# --------------------------------------------------------------------------- output


def test_table_has_96_rows_even_on_the_minute_grid(env: Path, cli: Callable[..., Any]) -> None:
    result = cli("fit", "load-forecast", "-p", "num_evs=2000")
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ")]
    assert len(rows) == 96
    assert rows[0].startswith("│ 00:00") and rows[-1].startswith("│ 23:45")
    assert "15-minute means" in result.stdout
    for column in COLUMNS:
        assert column in result.stdout


def test_csv_is_the_full_grid(env: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    out = tmp_path / "out" / "forecast.csv"
    result = cli(
        "fit", "load-forecast", "-p", "num_evs=2000", "--format", "csv", "--output", str(out)
    )
    assert result.exit_code == 0 and result.stdout == ""
    lines = out.read_text().splitlines()
    assert lines[0] == "time," + ",".join(COLUMNS)
    assert len(lines) == 1 + 1440 and lines[2].startswith("00:01,")


def test_json_has_stable_keys(env: Path, cli: Callable[..., Any]) -> None:
    document = _json(cli, "fit", "load-forecast", *SMALL)
    assert set(document) >= {
        "key",
        "algorithm",
        "params",
        "model_versions",
        "cached",
        "seconds",
        "meta",
        "columns",
        "time",
        "uncontrolled",
        "controlled",
    }
    assert document["columns"] == list(COLUMNS)
    assert document["controlled"] is None
    assert len(document["time"]) == 96 and document["time"][1] == "00:15"
    for pinned in document["model_versions"].values():
        assert pinned["version"] == 1 and len(pinned["content_hash"]) == 64


def test_plot_writes_a_png(env: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    png = tmp_path / "plots" / "forecast.png"
    assert cli("fit", "load-forecast", *SMALL, "--controlled", "--plot", str(png)).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    control_png = tmp_path / "control.png"
    control = cli(
        "fit",
        "load-control",
        "--county",
        "Santa Clara",
        "--rate",
        "e19",
        "--plot",
        str(control_png),
    )
    assert control.exit_code == 0 and control_png.read_bytes()[:4] == b"\x89PNG"
    wrong = cli("fit", "load-forecast", *SMALL, "--plot", str(tmp_path / "chart.jpg"))
    assert wrong.exit_code == 2 and "--plot must name a .png file" in wrong.stderr


def test_cache_hit_imports_no_heavy_library(env: Path, cli: Callable[..., Any]) -> None:
    args = ["fit", "load-forecast", *SMALL]
    assert cli(*args).exit_code == 0
    code = (
        "import sys\n"
        "from script_ec2.cli import main\n"
        f"rc = main({args!r})\n"
        "heavy = {'sklearn', 'scipy', 'matplotlib', 'pandas', 'pyarrow', 'joblib'}\n"
        "print(rc, sorted({m.split('.')[0] for m in sys.modules} & heavy), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert "from cache" in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "0 []"


@pytest.mark.parametrize(
    "args",
    [
        ["load-forecast", "-p", "num_evs=2000", "-p", "publicl2_percent=0.1"],  # 1440 steps
        ["load-forecast", *SMALL, "--controlled"],
        ["load-control", "--county", "Santa Clara", "--rate", "e19"],
    ],
    ids=["forecast-1440", "forecast-controlled", "load-control"],
)
def test_json_cache_hit_imports_neither_numpy_nor_the_orm(
    env: Path, cli: Callable[..., Any], args: list[str]
) -> None:
    """The lean path: a hit printed as JSON reads its tables from the stored .npz bytes."""
    fit = ["fit", *args, "--format", "json"]
    miss = cli(*fit)
    assert miss.exit_code == 0, miss.stderr
    code = (
        "import sys\n"
        "from script_ec2.cli import main\n"
        f"rc = main({['--quiet', *fit]!r})\n"
        "lean = {'numpy', 'sqlalchemy', 'script_ec2.db.models', 'sklearn', 'scipy',\n"
        "        'matplotlib', 'pandas', 'rich', 'pydantic'}\n"
        "print(rc, sorted(lean & set(sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    assert out.stderr.strip().splitlines()[-1] == "0 []", out.stderr
    hit, computed = json.loads(out.stdout), json.loads(miss.stdout)
    assert hit["cached"] and not computed["cached"]
    assert {**hit, "cached": False, "seconds": computed["seconds"]} == computed


def test_async_without_a_broker_keeps_a_job_record_then_answers_from_cache(
    env: Path, cli: Callable[..., Any]
) -> None:
    first = _json(cli, "fit", "load-forecast", *SMALL, "--async")
    assert first["state"] == "succeeded" and first["joined"] is False
    assert first["follow"] == f"script-ec2 jobs wait {first['job_id']}"
    status = _json(cli, "jobs", "status", first["job_id"])
    assert status["state"] == "succeeded" and status["result_key"] == first["result_key"]
    again = _json(cli, "fit", "load-forecast", *SMALL, "--async")
    assert again["key"] == first["result_key"] and again["cached"] is True
    assert len(_json(cli, "jobs", "list")) == 1


def test_sync_async_queues_a_refresh_job(env: Path, cli: Callable[..., Any]) -> None:
    submitted = _json(cli, "sync", "--async")
    assert submitted["state"] == "succeeded"
    [job] = _json(cli, "jobs", "list")
    assert job["kind"] == "sync" and job["id"] == submitted["job_id"]
    refused = cli("sync", "--async", "--dry-run")
    assert refused.exit_code == 2 and "--async cannot be combined" in refused.stderr


def test_an_unreachable_database_is_one_masked_line(env: Path, cli: Callable[..., Any]) -> None:
    """The driver-only hit lookup reports it as the ordinary path does."""
    from tests.conftest import free_port

    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/x"
    result = cli("--database-url", url, "fit", "load-forecast", *SMALL)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot connect to database postgresql://u:***@")
    assert result.stderr.count("\n") == 1 and "secret" not in result.stderr + result.stdout
