"""``script-ec2 train load-forecast`` and ``train load-control`` through the real command line.

One synthetic data set (6,000 sessions, two station zips per county) is generated into a local
folder that plays the private bucket and synced once per test session; each test gets its own
copy of the synced database and cache, so tests that train never see each other's models or
rows. Also: the registry on a moto S3 prefix, an end-to-end run on PostgreSQL, and the progress
bar on a real terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import Result
from tests.fixtures_s3 import S3Bucket

Cli = Callable[..., Result]

SOURCE_SESSIONS = 6000
SOURCE_SEED = 7
# The quick model most tests train: one segment, one day type, few components.
QUICK = ("--segment", "workplace", "--day-type", "weekday", "--max-components", "3")
QUICK_MODEL = "sessions-workplace-weekday"
CONTROL = ("--county", "Santa Clara", "--runs", "6", "--sessions-per-run", "40", "--jobs", "1")
CONTROL_MODEL = "control-santa-clara-e19"
CHILD_TIMEOUT_S = 180


# --------------------------------------------------------------------------- shared data


@dataclass(frozen=True)
class SyncedSource:
    """Synthetic data in a folder bucket and the data dir (database, cache) that synced it."""

    bucket: Path
    home: Path

    @property
    def database(self) -> Path:
        return self.home / "script-ec2.db"


def clean_environment(mp: pytest.MonkeyPatch, home: Path) -> None:
    """What ``isolated_env`` does, for set-up that outlives one test."""
    for key in list(os.environ):
        if key.startswith(("SCRIPT_EC2_", "AWS_")) and key != "SCRIPT_EC2_REQUIRE_SERVICES":
            mp.delenv(key, raising=False)
    mp.setenv("SCRIPT_EC2_DATA_DIR", str(home))
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


def run_main(*args: str) -> int:
    from script_ec2.cli import main

    return main(list(args))


def build_synced_source(base: Path) -> SyncedSource:
    """Generate and sync the shared data set under ``base`` once; later calls reuse it."""
    source = SyncedSource(bucket=base / "bucket", home=base / "home")
    done = base / "synced"
    if done.exists():
        return source
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, source.home)
        generate = run_main(
            "--quiet",
            "demo",
            "data",
            "--out",
            str(source.bucket),
            "--sessions",
            str(SOURCE_SESSIONS),
            "--seed",
            str(SOURCE_SEED),
            "--zips-per-county",
            "2",
            "-f",
            "json",
        )
        assert generate == 0
        assert run_main("--quiet", "--data-uri", str(source.bucket), "sync", "-f", "json") == 0
    done.touch()
    return source


@pytest.fixture(scope="session")
def synced_source(tmp_path_factory: pytest.TempPathFactory) -> SyncedSource:
    return build_synced_source(tmp_path_factory.getbasetemp() / "train-cli-source")


def use_synced_copy(source: SyncedSource, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the test its own copy of the synced database and cache, reading the shared bucket."""
    home.mkdir(parents=True, exist_ok=True)
    # The backup API, not a file copy: the sync's writes may still sit in the WAL file.
    with (
        closing(sqlite3.connect(source.database)) as src,
        closing(sqlite3.connect(home / "script-ec2.db")) as dst,
    ):
        src.backup(dst)
    shutil.copytree(source.home / "cache", home / "cache", ignore=shutil.ignore_patterns("raw"))
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(source.bucket))


@pytest.fixture
def synced(
    synced_source: SyncedSource, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A data dir whose database and cache have synced the shared data; returns the data dir."""
    use_synced_copy(synced_source, isolated_env, monkeypatch)
    return isolated_env


# --------------------------------------------------------------------------- helpers


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return result


def rows_of(result: Result) -> Any:
    """The parsed JSON output of a successful command."""
    return json.loads(ok(result).stdout)


def train_forecast(cli: Cli, *options: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = rows_of(cli("train", "load-forecast", *options, "-f", "json"))
    return rows


def refused(result: Result, code: int, *needles: str) -> str:
    """The one ``Error:`` line of a refused command, after checking its code and wording."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def db_rows(database: str) -> list[dict[str, Any]]:
    engine = create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT name, version, kind, content_hash, fingerprint, registry_uri, metrics "
                    "FROM model_versions ORDER BY name, version"
                )
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'script-ec2.db'}"


def registry_list(cli: Cli, *global_options: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = rows_of(cli(*global_options, "models", "list", "-f", "json"))
    return listed


def model_json(registry: Path, ref: str) -> dict[str, Any]:
    name, version = ref.split("@")
    meta: dict[str, Any] = json.loads((registry / name / version / "model.json").read_text())
    return meta


def arrays_bytes(registry: Path, ref: str) -> bytes:
    name, version = ref.split("@")
    return (registry / name / version / "arrays.npz").read_bytes()


# --------------------------------------------------------------------------- load-forecast


def test_train_load_forecast_saves_every_model_lists_it_and_records_it(
    cli: Cli, synced: Path
) -> None:
    rows = train_forecast(cli)
    trained = {r["model"] for r in rows}
    assert rows and all(r["new"] is True for r in rows)
    assert {r["model"].split("@")[1] for r in rows} == {"1"}
    # Every model has the documented summary columns, with sensible values.
    for row in rows:
        assert set(row) == {
            "model",
            "new",
            "segment",
            "day_type",
            "sessions",
            "components",
            "heldout_loglik",
            "ks_start",
            "ks_energy",
        }
        assert row["day_type"] in ("weekday", "weekend")
        assert row["sessions"] >= 1 and 1 <= row["components"] <= 8
        assert 0 <= row["ks_start"] <= 1 and 0 <= row["ks_energy"] <= 1
        assert row["model"].startswith("sessions-") and row["model"].endswith(
            f"-{row['day_type']}@1"
        )
    assert f"{QUICK_MODEL}@1" in trained

    listed = registry_list(cli)
    assert {f"{v['name']}@{v['version']}" for v in listed} == trained
    assert {v["kind"] for v in listed} == {"sessions-gmm"}
    assert not any(v["published"] for v in listed)

    recorded = db_rows(sqlite_url(synced))
    assert {f"{r['name']}@{r['version']}" for r in recorded} == trained
    by_ref = {f"{v['name']}@{v['version']}": v for v in listed}
    registry = synced / "models"
    for record in recorded:
        ref = f"{record['name']}@{record['version']}"
        assert record["kind"] == "sessions-gmm"
        assert record["content_hash"] == by_ref[ref]["content_hash"]
        assert record["registry_uri"] == str(registry)
        meta = model_json(registry, ref)
        assert record["fingerprint"] == meta["fingerprint"]
        assert json.loads(record["metrics"]) == meta["metrics"]
        # Aggregates only: no session rows make it into the database mirror.
        assert len(record["metrics"]) < 5000


def test_combinations_with_too_few_sessions_are_listed_as_not_trained(
    cli: Cli, synced: Path
) -> None:
    result = ok(
        cli(
            "train",
            "load-forecast",
            "--segment",
            "Residential L1",
            "--segment",
            "workplace",
            "--day-type",
            "weekday",
            "--max-components",
            "2",
        )
    )
    assert "session models" in result.stdout and "not trained" in result.stdout
    assert "sessions-residential-l1-weekday" in result.stdout
    assert "fewer than the minimum of 200" in result.stdout
    assert [v["name"] for v in registry_list(cli)] == [QUICK_MODEL]


def test_retraining_is_recognised_and_arrays_are_byte_identical(cli: Cli, synced: Path) -> None:
    registry = synced / "models"
    first = train_forecast(cli, *QUICK)
    assert [(r["model"], r["new"]) for r in first] == [(f"{QUICK_MODEL}@1", True)]
    ref = first[0]["model"]
    npz = arrays_bytes(registry, ref)
    files = {p.name: p.read_bytes() for p in (registry / QUICK_MODEL / "1").iterdir()}

    again = train_forecast(cli, *QUICK)
    assert [(r["model"], r["new"]) for r in again] == [(ref, False)]
    assert arrays_bytes(registry, ref) == npz
    # Versions are immutable: recognising one rewrites none of its files.
    assert {p.name: p.read_bytes() for p in (registry / QUICK_MODEL / "1").iterdir()} == files
    assert sorted(p.name for p in (registry / QUICK_MODEL).iterdir()) == ["1"]
    assert len(db_rows(sqlite_url(synced))) == 1

    # An independent training into a second, empty registry gives the same bytes.
    other = synced / "other-registry"
    elsewhere = rows_of(
        cli("--models-dir", str(other), "train", "load-forecast", *QUICK, "-f", "json")
    )
    assert [(r["model"], r["new"]) for r in elsewhere] == [(ref, True)]
    assert arrays_bytes(other, ref) == npz
    assert model_json(other, ref)["content_hash"] == model_json(registry, ref)["content_hash"]


def test_another_seed_or_option_gives_new_versions(cli: Cli, synced: Path) -> None:
    registry = synced / "models"
    train_forecast(cli, *QUICK)
    seeded = train_forecast(cli, *QUICK, "--seed", "1")
    assert [(r["model"], r["new"]) for r in seeded] == [(f"{QUICK_MODEL}@2", True)]
    assert model_json(registry, f"{QUICK_MODEL}@2")["parameters"]["seed"] == 1
    fewer = train_forecast(cli, *QUICK[:-1], "2")
    assert [(r["model"], r["new"]) for r in fewer] == [(f"{QUICK_MODEL}@3", True)]
    hashes = {model_json(registry, f"{QUICK_MODEL}@{v}")["content_hash"] for v in (1, 2, 3)}
    assert len(hashes) == 3
    recorded = db_rows(sqlite_url(synced))
    assert [(r["name"], r["version"]) for r in recorded] == [(QUICK_MODEL, v) for v in (1, 2, 3)]
    # The first seed again is still version 1.
    assert [r["model"] for r in train_forecast(cli, *QUICK)] == [f"{QUICK_MODEL}@1"]


def test_a_removed_version_is_retrained_under_a_new_number_and_recorded(
    cli: Cli, synced: Path
) -> None:
    train_forecast(cli, *QUICK)
    ok(cli("models", "rm", f"{QUICK_MODEL}@1"))
    again = train_forecast(cli, *QUICK)
    assert [(r["model"], r["new"]) for r in again] == [(f"{QUICK_MODEL}@2", True)]
    # The database mirror follows the registry: the content now lives at version 2.
    recorded = db_rows(sqlite_url(synced))
    assert [(r["name"], r["version"]) for r in recorded] == [(QUICK_MODEL, 2)]
    assert (
        recorded[0]["content_hash"]
        == model_json(synced / "models", f"{QUICK_MODEL}@2")["content_hash"]
    )


def test_county_filter_trains_on_that_county_only(cli: Cli, synced: Path) -> None:
    registry = synced / "models"
    everything = train_forecast(cli, *QUICK)
    county = train_forecast(cli, *QUICK, "--county", "Santa Clara")
    assert [r["model"] for r in county] == [f"{QUICK_MODEL}@2"]
    assert 0 < county[0]["sessions"] < everything[0]["sessions"]
    meta = model_json(registry, county[0]["model"])
    assert meta["parameters"]["filter"]["counties"] == ["Santa Clara"]
    assert meta["record"]["counties_represented"] == ["Santa Clara"]
    # Only Santa Clara's files feed it, so the data fingerprint differs from the full one.
    assert meta["fingerprint"] != model_json(registry, everything[0]["model"])["fingerprint"]
    # County names are matched as the cache spells them, whatever the case or "County" suffix.
    spelled = train_forecast(cli, *QUICK, "--county", "  santa clara COUNTY")
    assert [(r["model"], r["new"]) for r in spelled] == [(county[0]["model"], False)]


def test_date_filters_bound_the_training_period(cli: Cli, synced: Path) -> None:
    registry = synced / "models"
    everything = train_forecast(cli, *QUICK)
    dated = train_forecast(cli, *QUICK, "--since", "2018-01-01", "--until", "2018-12-31")
    assert 0 < dated[0]["sessions"] < everything[0]["sessions"]
    meta = model_json(registry, dated[0]["model"])
    assert meta["parameters"]["filter"]["since"] == "2018-01-01"
    assert meta["parameters"]["filter"]["until"] == "2018-12-31"
    first, last = meta["record"]["training"]["period"].split(" to ")
    assert "2018-01-01" <= first[:10] <= last[:10] <= "2018-12-31"


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (("--day-type", "holiday"), ("--day-type", "'holiday'")),
        (("--since", "2019-13-01"), ("--since", "YYYY-MM-DD", "'2019-13-01'")),
        (("--until", "yesterday"), ("--until", "YYYY-MM-DD")),
        (("--since", "2019-05-01", "--until", "2019-01-01"), ("--since", "--until")),
        (("--segment", "Nope"), ("--segment", "'Nope'", "Workplace", "dc-fast")),
        (("--segment", "workplace", "--segment", ""), ("--segment", "''")),
        (("--county", "Atlantis"), ("--county", "'Atlantis'", "Santa Clara", "Marin")),
        (("--max-components", "0"), ("--max-components",)),
        (("--seed", "-1"), ("--seed",)),
        (("-f", "xml"), ("--format",)),
    ],
    ids=[
        "day-type",
        "since",
        "until",
        "since-after-until",
        "segment",
        "empty-segment",
        "county",
        "components",
        "seed",
        "format",
    ],
)
def test_bad_load_forecast_options_exit_2_naming_the_option(
    cli: Cli, synced: Path, options: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    refused(cli("train", "load-forecast", *options), 2, *needles)
    assert not (synced / "models").exists()
    assert db_rows(sqlite_url(synced)) == []


@pytest.mark.parametrize("command", ["load-forecast", "load-control"])
def test_training_before_any_sync_asks_for_one(cli: Cli, isolated_env: Path, command: str) -> None:
    options = CONTROL if command == "load-control" else QUICK
    refused(cli("train", command, *options), 1, "run script-ec2 sync first")
    assert not (isolated_env / "models").exists()


# --------------------------------------------------------------------------- load-control


def test_train_load_control_small_run(cli: Cli, synced: Path) -> None:
    [row] = rows_of(cli("train", "load-control", *CONTROL, "-f", "json"))
    assert row["model"] == f"{CONTROL_MODEL}@1" and row["new"] is True
    assert (row["county"], row["rate"], row["runs"], row["sessions_per_run"]) == (
        "Santa Clara",
        "e19",
        6,
        40,
    )
    assert row["peak_mape_pct"] >= 0 and row["energy_mape_pct"] >= 0
    assert row["clipped_sessions"] >= 0

    registry = synced / "models"
    meta = model_json(registry, row["model"])
    assert meta["kind"] == "workplace-control"
    assert meta["parameters"]["county"] == "Santa Clara"
    assert meta["parameters"]["runs"] == 6 and meta["parameters"]["sessions_per_run"] == 40
    loaded = np.load(registry / CONTROL_MODEL / "1" / "arrays.npz", allow_pickle=False)
    assert loaded["coef"].shape == (96, 96)
    assert loaded["reference_uncontrolled"].shape == (96,)
    assert loaded["reference_controlled"].shape == (96,)
    # The controlled reference moves load, it does not create or destroy energy.
    assert loaded["reference_controlled"].sum() == pytest.approx(
        loaded["reference_uncontrolled"].sum(), rel=1e-6
    )

    [listed] = registry_list(cli)
    assert (listed["name"], listed["version"], listed["kind"]) == (
        CONTROL_MODEL,
        1,
        "workplace-control",
    )
    [recorded] = db_rows(sqlite_url(synced))
    assert (recorded["name"], recorded["version"], recorded["kind"]) == (
        CONTROL_MODEL,
        1,
        "workplace-control",
    )
    assert recorded["content_hash"] == meta["content_hash"]

    # The same request in other words (county spelling, two workers) is the same version.
    again = rows_of(
        cli(
            "train",
            "load-control",
            "--county",
            "santa clara county",
            "--rate",
            "e19",
            *CONTROL[2:-2],
            "--jobs",
            "2",
            "-f",
            "json",
        )
    )
    assert [(r["model"], r["new"]) for r in again] == [(row["model"], False)]
    assert len(db_rows(sqlite_url(synced))) == 1


def test_load_control_with_a_rate_file(cli: Cli, synced: Path, tmp_path: Path) -> None:
    rate = tmp_path / "night.toml"
    rate.write_text(
        'name = "night-owl"\n'
        "[periods]\n"
        'day = ["06:00-18:00"]\n'
        'night = ["18:00-06:00"]\n'
        "[energy]\n"
        "day = 0.30\n"
        "night = 0.10\n"
    )
    [row] = rows_of(cli("train", "load-control", *CONTROL, "--rate", str(rate), "-f", "json"))
    assert row["model"] == "control-santa-clara-night-owl@1" and row["rate"] == "night-owl"
    meta = model_json(synced / "models", row["model"])
    assert meta["parameters"]["rate"]["name"] == "night-owl"


def _rate_file(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


RATE_BASE = 'name = "two-period"\n[periods]\nday = ["06:00-18:00"]\nnight = ["18:00-06:00"]\n'


BAD_RATE_FILES: list[tuple[str, str, str]] = [
    (
        "missing-price.toml",
        RATE_BASE + "[energy]\nday = 0.2\n",
        "missing-price.toml: energy.night: missing field",
    ),
    ("missing-energy.toml", RATE_BASE, "missing-energy.toml: energy: missing field"),
    (
        "negative.toml",
        RATE_BASE + "[energy]\nday = -0.2\nnight = 0.1\n",
        "negative.toml: energy.day: must not be negative",
    ),
    (
        "negative-demand.json",
        json.dumps(
            {
                "name": "d",
                "energy_price": [0.1] * 96,
                "demand_charges": [{"name": "all", "price": -3, "ranges": ["00:00-24:00"]}],
            }
        ),
        "negative-demand.json: demand_charges[0].price: must not be negative",
    ),
    ("bad.toml", 'name = "x"\n[energy\nday = 0.2\n', "bad.toml is not valid TOML"),
    ("bad.json", '{"name": "x", "energy_price": [0.1, }', "bad.json is not valid JSON"),
    (
        "short.json",
        json.dumps({"name": "x", "energy_price": [0.1] * 95}),
        "short.json: energy_price: must have 96 values",
    ),
    (
        "unknown-field.toml",
        'builtin = "e19"\ncurrency = "USD"\n',
        "unknown-field.toml: currency: unknown field",
    ),
]


def test_each_malformed_rate_file_exits_2_with_its_own_message(
    cli: Cli, synced: Path, tmp_path: Path
) -> None:
    lines = []
    for name, content, expected in BAD_RATE_FILES:
        path = _rate_file(tmp_path, name, content)
        line = refused(cli("train", "load-control", *CONTROL, "--rate", path), 2, expected)
        assert line.startswith(f"Error: rate file {path}")
        lines.append(line.removeprefix(f"Error: rate file {path}"))
    # Told apart by the message itself, not only by the file name in it.
    assert len(set(lines)) == len(BAD_RATE_FILES), lines
    assert not (synced / "models").exists()


def test_unknown_rate_name_lists_the_names(cli: Cli, synced: Path) -> None:
    refused(
        cli("train", "load-control", *CONTROL, "--rate", "e20"),
        2,
        "unknown rate 'e20'",
        "e19",
        "pge-cev",
        "sce-tou-ev8",
        "minpeak",
        "TOML or JSON rate file",
    )


def test_missing_rate_file(cli: Cli, synced: Path, tmp_path: Path) -> None:
    refused(
        cli("train", "load-control", *CONTROL, "--rate", str(tmp_path / "nope.toml")),
        2,
        "nope.toml not found",
    )


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (("--runs", "2"), ("--runs", "2")),
        (("--sessions-per-run", "0"), ("--sessions-per-run", "0")),
        (("--sessions-per-run", "100000"), ("sessions per run", "Santa Clara", "100000")),
        (("--seed", "-1"), ("--seed", "-1")),
        (("--jobs", "0"), ("--jobs", "0")),
        (("--county", "Atlantis"), ("--county", "'Atlantis'", "Santa Clara")),
        (("-f", "yaml"), ("--format",)),
    ],
    ids=["runs", "sessions", "too-many-sessions", "seed", "jobs", "county", "format"],
)
def test_bad_load_control_options_exit_2_naming_the_option(
    cli: Cli, synced: Path, options: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    base = dict(zip(CONTROL[::2], CONTROL[1::2], strict=True))
    given = dict(zip(options[::2], options[1::2], strict=True))
    merged = [item for key, value in (base | given).items() for item in (key, value)]
    refused(cli("train", "load-control", *merged), 2, *needles)
    assert not (synced / "models").exists()


# --------------------------------------------------------------------------- other back ends


@pytest.mark.s3
def test_registry_on_an_s3_prefix(cli: Cli, synced: Path, s3_bucket: S3Bucket) -> None:
    uri = f"s3://{s3_bucket.bucket}/registry"
    first = rows_of(cli("--models-dir", uri, "train", "load-forecast", *QUICK, "-f", "json"))
    assert [(r["model"], r["new"]) for r in first] == [(f"{QUICK_MODEL}@1", True)]
    control = rows_of(cli("--models-dir", uri, "train", "load-control", *CONTROL, "-f", "json"))
    assert [(r["model"], r["new"]) for r in control] == [(f"{CONTROL_MODEL}@1", True)]

    keys = sorted(
        obj["Key"]
        for page in s3_bucket.client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket.bucket, Prefix="registry/"
        )
        for obj in page.get("Contents", [])
    )
    expected = sorted(
        f"registry/{name}/1/{f}"
        for name in (CONTROL_MODEL, QUICK_MODEL)
        for f in ("model.json", "arrays.npz", "README.md", "SHA256SUMS")
    )
    assert keys == expected
    assert not (synced / "models").exists()

    listed = registry_list(cli, "--models-dir", uri)
    assert [(v["name"], v["version"]) for v in listed] == [(CONTROL_MODEL, 1), (QUICK_MODEL, 1)]
    verified = rows_of(cli("--models-dir", uri, "models", "verify", "-f", "json"))
    assert {v["status"] for v in verified} == {"ok"}
    shown = rows_of(cli("--models-dir", uri, "models", "show", QUICK_MODEL, "-f", "json"))
    assert shown["content_hash"] == listed[1]["content_hash"]
    assert {r["registry_uri"] for r in db_rows(sqlite_url(synced))} == {uri}

    again = rows_of(cli("--models-dir", uri, "train", "load-forecast", *QUICK, "-f", "json"))
    assert [(r["model"], r["new"]) for r in again] == [(f"{QUICK_MODEL}@1", False)]

    # The same training into a local folder stores byte-identical arrays.
    local = train_forecast(cli, *QUICK)
    body = s3_bucket.client.get_object(
        Bucket=s3_bucket.bucket, Key=f"registry/{QUICK_MODEL}/1/arrays.npz"
    )["Body"].read()
    assert arrays_bytes(synced / "models", local[0]["model"]) == body


@pytest.mark.postgres
def test_end_to_end_on_postgresql(
    cli: Cli,
    synced_source: SyncedSource,
    isolated_env: Path,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", pg_url)
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(synced_source.bucket))
    # The schema is not there yet.
    refused(cli("train", "load-forecast", *QUICK), 1, "run script-ec2 db upgrade")
    ok(cli("db", "upgrade"))
    refused(cli("train", "load-forecast", *QUICK), 1, "run script-ec2 sync first")
    ok(cli("--quiet", "sync", "-f", "json"))

    forecast = train_forecast(cli, *QUICK, "--county", "Santa Clara")
    control = rows_of(cli("train", "load-control", *CONTROL, "-f", "json"))
    refs = {forecast[0]["model"], control[0]["model"]}
    assert refs == {f"{QUICK_MODEL}@1", f"{CONTROL_MODEL}@1"}

    recorded = db_rows(pg_url)
    assert {f"{r['name']}@{r['version']}" for r in recorded} == refs
    registry = isolated_env / "models"
    for record in recorded:
        meta = model_json(registry, f"{record['name']}@{record['version']}")
        assert (record["kind"], record["content_hash"], record["fingerprint"]) == (
            meta["kind"],
            meta["content_hash"],
            meta["fingerprint"],
        )
        assert record["registry_uri"] == str(registry)

    again = train_forecast(cli, *QUICK, "--county", "Santa Clara")
    assert again[0]["new"] is False
    assert len(db_rows(pg_url)) == 2
    # The PostgreSQL-trained arrays equal a SQLite-backed training of the same data.
    sqlite_home = isolated_env.parent / "sqlite-home"
    use_synced_copy(synced_source, sqlite_home, monkeypatch)
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", sqlite_url(sqlite_home))
    other = rows_of(
        cli(
            "--models-dir",
            str(sqlite_home / "models"),
            "train",
            "load-forecast",
            *QUICK,
            "--county",
            "Santa Clara",
            "-f",
            "json",
        )
    )
    assert arrays_bytes(sqlite_home / "models", other[0]["model"]) == arrays_bytes(
        registry, forecast[0]["model"]
    )


# --------------------------------------------------------------------------- progress


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run a child with stderr on a pseudo-terminal; returns (exit code, stdout, terminal)."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=follower,
            env=env,
        )
    finally:
        os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the child closed its end
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{' '.join(args[-6:])} did not finish in {CHILD_TIMEOUT_S} s")
        out = proc.stdout.read().decode() if proc.stdout else ""
        return proc.wait(), out, seen.decode(errors="replace")
    finally:
        os.close(leader)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_a_progress_bar_shows_on_a_terminal_only(synced: Path) -> None:
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    args = [sys.executable, "-m", "script_ec2", "train", "load-forecast", *QUICK, "-f", "json"]
    code, out, terminal = _run_on_a_terminal(args, env)
    assert code == 0, terminal
    assert json.loads(out)[0]["model"] == f"{QUICK_MODEL}@1"
    assert "train load-forecast" in terminal and "1/1" in terminal

    code, out, terminal = _run_on_a_terminal([*args[:3], "--quiet", *args[3:]], env)
    assert code == 0, terminal
    assert json.loads(out)[0]["new"] is False
    assert "train load-forecast" not in terminal and "1/1" not in terminal


def test_no_pickles_in_what_training_writes(cli: Cli, synced: Path) -> None:
    train_forecast(cli, *QUICK)
    ok(cli("train", "load-control", *CONTROL))
    registry = synced / "models"
    files = [p for p in registry.rglob("*") if p.is_file()]
    assert files
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]
    # Everything but the arrays is text (JSON, Markdown, checksums), which cannot hold a pickle.
    for path in files:
        if path.suffix != ".npz":
            path.read_bytes().decode("utf-8")
    for npz in registry.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as arrays:
            for name in arrays.files:
                assert arrays[name].dtype.kind in "biufc", (npz, name)
        sums = (npz.parent / "SHA256SUMS").read_text()
        assert f"{hashlib.sha256(npz.read_bytes()).hexdigest()}  arrays.npz" in sums
