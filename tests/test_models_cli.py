"""``script-ec2 models list | show | verify | rm`` through the real command line, on a registry
of models trained by ``script-ec2 train`` on the shared synthetic data (see test_train_cli).

The registry is trained once per module; every test works on its own copy of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from script_ec2.registry import ARTIFACT_FILES, ModelError, Registry
from script_ec2.store import LocalStore
from tests.conftest import Result
from tests.test_train_cli import (
    CONTROL,
    CONTROL_MODEL,
    QUICK,
    QUICK_MODEL,
    SyncedSource,
    build_synced_source,
    clean_environment,
    ok,
    refused,
    rows_of,
    run_main,
)

Cli = Callable[..., Result]
MODELS = (CONTROL_MODEL, QUICK_MODEL)


@pytest.fixture(scope="module")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding version 1 of the quick session model and of the small control model."""
    source: SyncedSource = build_synced_source(tmp_path_factory.getbasetemp() / "train-cli-source")
    home = tmp_path_factory.mktemp("models-cli-home")
    with (
        closing(sqlite3.connect(source.database)) as src,
        closing(sqlite3.connect(home / "script-ec2.db")) as dst,
    ):
        src.backup(dst)
    shutil.copytree(source.home / "cache", home / "cache", ignore=shutil.ignore_patterns("raw"))
    with pytest.MonkeyPatch.context() as mp:
        clean_environment(mp, home)
        mp.setenv("SCRIPT_EC2_DATA_URI", str(source.bucket))
        assert run_main("--quiet", "train", "load-forecast", *QUICK, "-f", "json") == 0
        assert run_main("--quiet", "train", "load-control", *CONTROL, "-f", "json") == 0
    return home / "models"


@pytest.fixture
def registry_dir(
    trained_registry: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """This test's own copy of the trained registry, as the models_dir setting."""
    copy = isolated_env / "models"
    shutil.copytree(trained_registry, copy)
    monkeypatch.setenv("SCRIPT_EC2_MODELS_DIR", str(copy))
    return copy


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def resum(version_dir: Path) -> None:
    """Rewrite SHA256SUMS for the current files, as a careful forger would."""
    lines = [
        f"{hashlib.sha256((version_dir / f).read_bytes()).hexdigest()}  {f}\n"
        for f in ARTIFACT_FILES
        if f != "SHA256SUMS"
    ]
    (version_dir / "SHA256SUMS").write_text("".join(lines))


def second_version(registry_dir: Path) -> None:
    """Version 2 of the session model: the same arrays saved with another seed."""
    registry = Registry(LocalStore(registry_dir))
    first = registry.load(QUICK_MODEL, 1)
    meta = first.meta
    saved = registry.save(
        meta["kind"],
        QUICK_MODEL,
        parameters={**meta["parameters"], "seed": 99},
        metrics=meta["metrics"],
        fingerprint=meta["fingerprint"],
        arrays=first.arrays,
        record=meta["record"],
        licence=meta["licence"],
    )
    assert saved.created and saved.version.version == 2


# --------------------------------------------------------------------------- list


def test_list_in_every_format(cli: Cli, registry_dir: Path) -> None:
    listed = rows_of(cli("models", "list", "-f", "json"))
    assert [(v["name"], v["version"], v["kind"]) for v in listed] == [
        (CONTROL_MODEL, 1, "workplace-control"),
        (QUICK_MODEL, 1, "sessions-gmm"),
    ]
    for version in listed:
        assert set(version) == {
            "name",
            "version",
            "kind",
            "created_at",
            "content_hash",
            "published",
            "published_to",
            "problem",
        }
        assert len(version["content_hash"]) == 64 and version["published"] is False
        meta = json.loads((registry_dir / version["name"] / "1" / "model.json").read_text())
        assert version["content_hash"] == meta["content_hash"]

    table = ok(cli("models", "list")).stdout
    assert CONTROL_MODEL in table and QUICK_MODEL in table and str(registry_dir) in table
    csv_lines = ok(cli("models", "list", "-f", "csv")).stdout.splitlines()
    assert csv_lines[0].startswith("name,version,kind,created_at,content_hash")
    assert [line.split(",")[:2] for line in csv_lines[1:]] == [[m, "1"] for m in MODELS]


def test_list_of_an_empty_registry(cli: Cli, isolated_env: Path) -> None:
    assert (
        rows_of(cli("--models-dir", str(isolated_env / "nothing"), "models", "list", "-f", "json"))
        == []
    )


# --------------------------------------------------------------------------- show


def test_show_name_version_and_json(cli: Cli, registry_dir: Path) -> None:
    second_version(registry_dir)
    latest = rows_of(cli("models", "show", QUICK_MODEL, "-f", "json"))
    assert latest["version"] == 2 and latest["parameters"]["seed"] == 99
    assert rows_of(cli("models", "show", f"{QUICK_MODEL}@latest", "-f", "json")) == latest

    first = rows_of(cli("models", "show", f"{QUICK_MODEL}@1", "-f", "json"))
    stored = json.loads((registry_dir / QUICK_MODEL / "1" / "model.json").read_text())
    assert first == stored
    assert first["schema_version"] == 1 and first["kind"] == "sessions-gmm"
    assert {"numpy", "scikit-learn"} <= set(first["libraries"])
    assert len(first["fingerprint"]) == 64

    table = ok(cli("models", "show", f"{QUICK_MODEL}@1")).stdout
    assert f"{QUICK_MODEL}@1" in table
    for key in ("content_hash", "fingerprint", "parameters.seed", "metrics.ks_start"):
        assert key in table
    csv_rows = ok(cli("models", "show", CONTROL_MODEL, "-f", "csv")).stdout.splitlines()
    assert csv_rows[0] == "key,value"
    assert "parameters.county,Santa Clara" in csv_rows
    assert "kind,workplace-control" in csv_rows


@pytest.mark.parametrize(
    ("ref", "code", "needles"),
    [
        (f"{QUICK_MODEL}@9", 1, (f"{QUICK_MODEL}@9 not found", "versions: 1")),
        ("no-such-model", 1, ("model 'no-such-model' not found", "no versions")),
        ("Not_A_Name", 2, ("invalid model name 'Not_A_Name'",)),
        (f"{QUICK_MODEL}@one", 2, ("the version after '@' must be a whole number",)),
    ],
    ids=["missing-version", "missing-model", "bad-name", "bad-version"],
)
def test_show_refusals(
    cli: Cli, registry_dir: Path, ref: str, code: int, needles: tuple[str, ...]
) -> None:
    refused(cli("models", "show", ref), code, *needles)


# --------------------------------------------------------------------------- verify


def test_verify_passes_then_fails_after_a_byte_changes(cli: Cli, registry_dir: Path) -> None:
    verified = rows_of(cli("models", "verify", "-f", "json"))
    assert [(r["name"], r["version"], r["status"]) for r in verified] == [
        (CONTROL_MODEL, 1, "ok"),
        (QUICK_MODEL, 1, "ok"),
    ]
    npz = registry_dir / QUICK_MODEL / "1" / "arrays.npz"
    flip_byte(npz, npz.stat().st_size // 2)

    result = cli("models", "verify", "-f", "json")
    assert result.exit_code == 1
    by_name = {r["name"]: r for r in json.loads(result.stdout)}
    assert by_name[CONTROL_MODEL]["status"] == "ok"
    assert by_name[QUICK_MODEL]["status"] == "damaged"
    assert "checksum mismatch for arrays.npz" in by_name[QUICK_MODEL]["problem"]
    assert cli("models", "verify", QUICK_MODEL).exit_code == 1
    ok(cli("models", "verify", CONTROL_MODEL))

    # Showing or loading it is refused with one line that says what to do.
    refused(
        cli("models", "show", QUICK_MODEL),
        1,
        f"{QUICK_MODEL}@1: checksum mismatch for arrays.npz",
        "re-train",
    )
    with pytest.raises(ModelError, match="checksum mismatch"):
        Registry(LocalStore(registry_dir)).load(QUICK_MODEL)
    # Listing still shows it: a damaged version is not silently hidden.
    assert [v["name"] for v in rows_of(cli("models", "list", "-f", "json"))] == list(MODELS)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("forged-arrays", "the content hash in model.json does not match"),
        ("future-schema", "unknown model schema version 2"),
        ("stray-file", "unexpected file 'weights.pkl'"),
        ("missing-card", "file 'README.md' is missing"),
    ],
)
def test_verify_and_show_refuse_each_kind_of_tampering(
    cli: Cli, registry_dir: Path, damage: str, needle: str
) -> None:
    version_dir = registry_dir / CONTROL_MODEL / "1"
    if damage == "forged-arrays":
        # New arrays with checksums to match: only the content hash gives it away.
        with np.load(version_dir / "arrays.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        arrays["coef"] = arrays["coef"] * 1.01
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        (version_dir / "arrays.npz").write_bytes(buffer.getvalue())
        resum(version_dir)
    elif damage == "future-schema":
        meta = json.loads((version_dir / "model.json").read_text())
        (version_dir / "model.json").write_text(json.dumps({**meta, "schema_version": 2}))
        resum(version_dir)
    elif damage == "stray-file":
        (version_dir / "weights.pkl").write_bytes(b"\x80\x04N.")
    elif damage == "missing-card":
        (version_dir / "README.md").unlink()

    result = cli("models", "verify", "-f", "json")
    assert result.exit_code == 1
    [damaged] = [r for r in json.loads(result.stdout) if r["status"] != "ok"]
    assert (damaged["name"], damaged["status"]) == (CONTROL_MODEL, "damaged")
    assert needle in damaged["problem"]
    refused(cli("models", "show", f"{CONTROL_MODEL}@1"), 1, f"{CONTROL_MODEL}@1", needle)


def test_verify_of_an_unknown_model_fails(cli: Cli, registry_dir: Path) -> None:
    refused(cli("models", "verify", "no-such-model"), 1, "'no-such-model' not found")
    refused(cli("models", "verify", "Bad Name"), 2, "invalid model name")


# --------------------------------------------------------------------------- rm


def test_rm_removes_an_unpublished_version(cli: Cli, registry_dir: Path) -> None:
    second_version(registry_dir)
    result = ok(cli("models", "rm", f"{QUICK_MODEL}@1"))
    assert f"removed {QUICK_MODEL}@1" in result.stderr and result.stdout == ""
    assert not (registry_dir / QUICK_MODEL / "1").exists()
    listed = rows_of(cli("models", "list", "-f", "json"))
    assert [(v["name"], v["version"]) for v in listed] == [(CONTROL_MODEL, 1), (QUICK_MODEL, 2)]
    assert rows_of(cli("models", "show", QUICK_MODEL, "-f", "json"))["version"] == 2
    refused(cli("models", "show", f"{QUICK_MODEL}@1"), 1, "not found", "versions: 2")
    refused(cli("models", "rm", f"{QUICK_MODEL}@1"), 1, "not found")
    ok(cli("models", "verify"))
    # Removing the last version leaves the name with no versions; the number stays used.
    ok(cli("models", "rm", f"{QUICK_MODEL}@2"))
    assert [v["name"] for v in rows_of(cli("models", "list", "-f", "json"))] == [CONTROL_MODEL]
    assert json.loads((registry_dir / QUICK_MODEL / "removed.json").read_text())["versions"] == [
        1,
        2,
    ]


def test_rm_needs_a_version(cli: Cli, registry_dir: Path) -> None:
    for ref in (QUICK_MODEL, f"{QUICK_MODEL}@latest"):
        refused(cli("models", "rm", ref), 2, "models rm needs NAME@VERSION", repr(ref))
    assert (registry_dir / QUICK_MODEL / "1" / "SHA256SUMS").exists()


def test_rm_refuses_a_published_version(cli: Cli, registry_dir: Path) -> None:
    where = "s3://script-public/models"
    Registry(LocalStore(registry_dir)).mark_published(QUICK_MODEL, 1, where)
    listed = {v["name"]: v for v in rows_of(cli("models", "list", "-f", "json"))}
    assert listed[QUICK_MODEL]["published"] is True
    assert listed[QUICK_MODEL]["published_to"] == [where]
    assert listed[CONTROL_MODEL]["published"] is False

    refused(
        cli("models", "rm", f"{QUICK_MODEL}@1"),
        1,
        f"{QUICK_MODEL}@1 is published to {where}",
        "cannot be removed",
    )
    assert (registry_dir / QUICK_MODEL / "1" / "arrays.npz").exists()
    ok(cli("models", "verify"))
    # An unpublished sibling can still go.
    ok(cli("models", "rm", f"{CONTROL_MODEL}@1"))


# --------------------------------------------------------------------------- artifacts


def test_artifacts_hold_no_pickles_and_check_out(registry_dir: Path) -> None:
    every = [p for p in registry_dir.rglob("*") if p.is_file()]
    assert not [p for p in every if p.suffix in (".pkl", ".pickle", ".joblib", ".sav")]
    for name in MODELS:
        version_dir = registry_dir / name / "1"
        assert sorted(p.name for p in version_dir.iterdir()) == sorted(ARTIFACT_FILES)
        meta = json.loads((version_dir / "model.json").read_text())
        with np.load(version_dir / "arrays.npz", allow_pickle=False) as npz:
            assert sorted(npz.files) == sorted(meta["arrays"])
            for array_name, spec in meta["arrays"].items():
                array = npz[array_name]
                assert array.dtype.kind in "biufc"
                assert [list(array.shape), array.dtype.str] == [spec["shape"], spec["dtype"]]
        # SHA256SUMS is in sha256sum's own format, so `sha256sum -c` can check it too.
        for line in (version_dir / "SHA256SUMS").read_text().splitlines():
            digest, filename = line.split("  ")
            assert hashlib.sha256((version_dir / filename).read_bytes()).hexdigest() == digest
        card = (version_dir / "README.md").read_text()
        assert card.startswith("---\n") and f'name: "{name}"' in card
        assert "## Limitations" in card and "allow_pickle=False" in card
        for key in ("kind", "name", "version", "parameters", "metrics", "fingerprint"):
            assert key in meta
        assert meta["libraries"]["numpy"] == np.__version__
