"""``script-ec2 models pull`` from a local folder and from S3 (moto): pull then fit on a machine
that never saw the private data, checksum and tamper detection (nothing installed), partial
publishes, anonymous (unsigned) reads, local conflicts and repairs, and an interrupted install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from script_ec2.errors import AccessDenied
from script_ec2.forecast_train import save_models, train_load_forecast
from script_ec2.publish import INDEX_FILE, PullError, open_source, publish, pull
from script_ec2.registry import ARTIFACT_FILES, Registry, npz_bytes, read_npz
from script_ec2.settings import resolve
from script_ec2.store import LocalStore, ObjectStore, S3Store, open_store
from tests.test_publish import (
    NAME,
    OTHER,
    REPO,
    listing,
    register_commands,
    save_model,
    sha256,
    store_for,
    sums_for,
)

register_commands()

SEGMENT_HABITS = {  # mean start hour, mean energy kWh
    "Residential L1": (19.0, 8.0),
    "Residential L2": (20.0, 12.0),
    "Residential MUD": (21.0, 10.0),
    "Workplace": (8.5, 9.0),
    "Public L2": (13.0, 7.0),
    "DC Fast": (15.0, 22.0),
}
FIRST_MONDAY = datetime(2019, 1, 7)


def synthetic_sessions(per_segment: int = 300, seed: int = 5) -> pd.DataFrame:
    """Weekday sessions of every forecast segment, in the columns training reads."""
    rng = np.random.default_rng(seed)
    frames = []
    for segment, (hour, energy) in SEGMENT_HABITS.items():
        hours = np.mod(rng.normal(hour, 1.5, per_segment), 24.0)
        seconds = np.mod(np.round(hours * 3600), 86_400).astype(np.int64)
        weekday = rng.integers(0, 5, per_segment)
        week = rng.integers(0, 10, per_segment)
        frames.append(
            pd.DataFrame(
                {
                    "start_datetime": [
                        FIRST_MONDAY + timedelta(days=int(7 * w + d), seconds=int(s))
                        for w, d, s in zip(week, weekday, seconds, strict=True)
                    ],
                    "start_seconds": seconds.astype(np.int32),
                    "start_weekday": weekday.astype(np.int8),
                    "Energy (kWh)": np.clip(rng.gamma(4.0, energy / 4.0, per_segment), 0.2, None),
                    "forecast_segment": segment,
                    "county": "Santa Clara",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def train_into(registry: Registry) -> list[str]:
    """Train real session models (weekday, all six segments) and save them; their names."""
    result = train_load_forecast(
        synthetic_sessions(),
        fingerprint_entries=[("clean/evsezip94301_sessions.csv", "etag-1")],
        day_types=["weekday"],
        max_components=2,
        seed=0,
    )
    saved = save_models(registry, result.models, licence=resolve().model_licence)
    return [s.version.name for s in saved]


@pytest.fixture
def private(isolated_env: Path) -> Registry:
    return Registry(LocalStore(isolated_env / "models"))


@pytest.fixture
def published(private: Registry, store_uri: str) -> ObjectStore:
    """NAME@1 and OTHER@1 published to a fresh target."""
    save_model(private)
    save_model(private, OTHER, scale=2.0)
    store = store_for(store_uri)
    publish(private, store, [NAME, OTHER])
    return store


@pytest.fixture
def clean_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A second, empty data directory: a machine that never saw the private data."""
    home = tmp_path / "clean-machine"
    monkeypatch.setenv("SCRIPT_EC2_DATA_DIR", str(home))
    return home


def fit_document(cli: Any) -> dict[str, Any]:
    result = cli(
        "fit", "load-forecast", "--param", "num_evs=2000", "--param", "time_steps=96", "-f", "json"
    )
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# --------------------------------------------------------------------------- pull then fit


@pytest.mark.slow
def test_pull_then_fit_on_a_machine_without_the_data(  # type: ignore[no-untyped-def]
    cli, private: Registry, store_uri: str, isolated_env: Path, tmp_path: Path, monkeypatch
) -> None:
    names = train_into(private)
    assert len(names) == 6
    published = cli("publish", *names, "--to", store_uri)  # real training output passes the guard
    assert published.exit_code == 0, published.stderr
    on_private_machine = fit_document(cli)

    home = tmp_path / "clean-machine"
    monkeypatch.setenv("SCRIPT_EC2_DATA_DIR", str(home))
    pulled = cli("models", "pull", store_uri, "-f", "json")
    assert pulled.exit_code == 0, pulled.stderr
    assert sorted(r["name"] for r in json.loads(pulled.stdout)) == sorted(names)
    assert {r["status"] for r in json.loads(pulled.stdout)} == {"installed"}
    on_clean_machine = fit_document(cli)

    # Nothing private reached the clean machine: no data location, no cache of sessions.
    assert not (home / "buckets").exists()
    assert not any((home / "cache").rglob("*.parquet"))
    # Same models (same content hashes), same result, recomputed here rather than copied.
    assert on_clean_machine["cached"] is False
    for field in ("key", "model_versions", "columns", "uncontrolled", "meta"):
        assert on_clean_machine[field] == on_private_machine[field], field
    assert Registry(LocalStore(home / "models")).verify() != []
    assert all(r.ok for r in Registry(LocalStore(home / "models")).verify())


# --------------------------------------------------------------------------- verification


def _tamper(store: ObjectStore, key: str, data: bytes) -> None:
    store.put_bytes(key, data)


TAMPERING = ["changed byte", "truncated", "missing file", "forged sums and index", "bad latest"]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampered_or_partial_downloads_install_nothing(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path, how: str
) -> None:
    arrays_key = f"{NAME}/1/arrays.npz"
    original = published.get_bytes(arrays_key)
    if how == "changed byte":
        _tamper(published, arrays_key, original[:-1] + bytes([original[-1] ^ 1]))
    elif how == "truncated":
        _tamper(published, arrays_key, original[: len(original) // 2])
    elif how == "missing file":
        published.delete(f"{NAME}/1/README.md")
    else:
        # A consistent forgery: new arrays, SHA256SUMS and index.json all agree with each other.
        arrays = read_npz(original)
        arrays["weights"] = arrays["weights"][::-1].copy()
        forged = npz_bytes(arrays)
        assert forged != original
        files = {f: published.get_bytes(f"{NAME}/1/{f}") for f in ARTIFACT_FILES}
        files["arrays.npz"] = forged
        files["SHA256SUMS"] = sums_for(files)
        for filename in ("arrays.npz", "SHA256SUMS"):
            _tamper(published, f"{NAME}/1/{filename}", files[filename])
        index = json.loads(published.get_bytes(INDEX_FILE))
        for filename in ("arrays.npz", "SHA256SUMS"):
            index["models"][NAME]["versions"]["1"]["files"][filename] = {
                "sha256": sha256(files[filename]),
                "size": len(files[filename]),
            }
        _tamper(published, INDEX_FILE, json.dumps(index).encode())
        if how == "bad latest":  # latest.json follows too: only the content hash can tell
            alias = json.loads(published.get_bytes(f"{NAME}/latest.json"))
            alias["sha256sums"] = sha256(files["SHA256SUMS"])
            _tamper(published, f"{NAME}/latest.json", json.dumps(alias).encode())

    result = cli("models", "pull", store_uri, OTHER, NAME)
    assert result.exit_code == 1, result.stdout
    assert f"refusing to pull {NAME}@1" in result.stderr or "refusing to pull from" in result.stderr
    assert "nothing was installed" in result.stderr
    expected = {
        "changed byte": "does not match the checksum in index.json",
        "truncated": "does not match the checksum in index.json",
        "missing file": "README.md is missing",
        "forged sums and index": "latest.json",
        "bad latest": "content hash",
    }[how]
    assert expected in result.stderr
    # OTHER was fine, yet nothing at all was installed.
    assert listing(LocalStore(clean_home / "models")) == {}


def test_naming_a_version_skips_latest_but_not_the_content_check(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    files = {f: published.get_bytes(f"{NAME}/1/{f}") for f in ARTIFACT_FILES}
    meta = json.loads(files["model.json"])
    meta["parameters"]["seed"] = 1  # a different model claiming the old content hash
    files["model.json"] = json.dumps(meta, indent=2, sort_keys=True).encode()
    files["SHA256SUMS"] = sums_for(files)
    index = json.loads(published.get_bytes(INDEX_FILE))
    for filename in ("model.json", "SHA256SUMS"):
        published.put_bytes(f"{NAME}/1/{filename}", files[filename])
        index["models"][NAME]["versions"]["1"]["files"][filename] = {
            "sha256": sha256(files[filename]),
            "size": len(files[filename]),
        }
    published.put_bytes(INDEX_FILE, json.dumps(index).encode())
    result = cli("models", "pull", store_uri, f"{NAME}@1")
    assert result.exit_code == 1
    assert "content hash" in result.stderr and "nothing was installed" in result.stderr
    assert listing(LocalStore(clean_home / "models")) == {}


# --------------------------------------------------------------------------- selection


def test_pull_everything_by_default_and_again_is_a_no_op(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    first = cli("models", "pull", store_uri, "-f", "json")
    assert first.exit_code == 0, first.stderr
    assert [(r["name"], r["version"], r["status"]) for r in json.loads(first.stdout)] == [
        (OTHER, 1, "installed"),
        (NAME, 1, "installed"),
    ]
    local = LocalStore(clean_home / "models")
    before = listing(local)
    again = cli("models", "pull", store_uri, "-f", "json")
    assert again.exit_code == 0, again.stderr
    assert {r["status"] for r in json.loads(again.stdout)} == {"present"}
    assert listing(local) == before
    listed = cli("models", "list", "-f", "json")
    assert {(m["name"], m["version"]) for m in json.loads(listed.stdout)} == {(NAME, 1), (OTHER, 1)}


def test_pull_keeps_published_version_numbers(  # type: ignore[no-untyped-def]
    cli, private: Registry, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    save_model(private, NAME, scale=3.0)
    save_model(private, NAME, scale=4.0)
    publish(private, published, [f"{NAME}@3"])
    result = cli("models", "pull", store_uri, NAME, f"{NAME}@1", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert [r["version"] for r in json.loads(result.stdout)] == [3, 1]
    pulled = Registry(LocalStore(clean_home / "models"))
    assert [v.version for v in pulled.list(NAME)] == [1, 3]
    assert pulled.load(NAME, 3).meta == private.load(NAME, 3).meta


def test_an_interrupted_publish_is_invisible_to_pull(  # type: ignore[no-untyped-def]
    cli, private: Registry, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    save_model(private, NAME, scale=3.0)
    files = private.artifact_files(NAME, 2)
    for filename in ARTIFACT_FILES[:2]:  # as if the publish died after two files
        published.put_bytes(f"{NAME}/2/{filename}", files[filename])
    latest = cli("models", "pull", store_uri, NAME, "-f", "json")
    assert latest.exit_code == 0, latest.stderr
    assert [r["version"] for r in json.loads(latest.stdout)] == [1]
    named = cli("models", "pull", store_uri, f"{NAME}@2")
    assert named.exit_code == 1
    assert f"{NAME}@2 is not published" in named.stderr and "versions: 1" in named.stderr


def test_a_model_without_latest_must_be_named_by_version(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    published.delete(f"{NAME}/latest.json")
    result = cli("models", "pull", store_uri, NAME)
    assert result.exit_code == 1
    assert "latest.json does not exist" in result.stderr and "NAME@N" in result.stderr
    assert cli("models", "pull", store_uri, f"{NAME}@1").exit_code == 0


def test_unknown_model_empty_location_and_bad_index(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path, tmp_path: Path
) -> None:
    unknown = cli("models", "pull", store_uri, "sessions-nowhere")
    assert unknown.exit_code == 1
    assert "'sessions-nowhere' is not published" in unknown.stderr and NAME in unknown.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = cli("models", "pull", str(empty))
    assert nothing.exit_code == 1 and "holds no published models" in nothing.stderr
    published.put_bytes(INDEX_FILE, b'{"format": "something-else"}')
    bad = cli("models", "pull", store_uri)
    assert bad.exit_code == 1 and "is not a script-ec2 model index" in bad.stderr


# --------------------------------------------------------------------------- local registry


def test_a_different_local_version_is_a_conflict(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    local = Registry(LocalStore(clean_home / "models"))
    save_model(local, NAME, scale=9.0)  # this machine trained something else as NAME@1
    before = listing(local.store)
    result = cli("models", "pull", store_uri, OTHER, NAME)
    assert result.exit_code == 1
    assert f"already has {NAME}@1 with different content" in result.stderr
    assert "nothing was installed" in result.stderr
    assert listing(local.store) == before  # OTHER was not installed either


def test_pull_repairs_a_damaged_local_copy(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    assert cli("models", "pull", store_uri, NAME).exit_code == 0
    arrays = clean_home / "models" / NAME / "1" / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:-3])
    assert cli("models", "verify").exit_code == 1
    result = cli("models", "pull", store_uri, NAME, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "repaired"
    assert cli("models", "verify").exit_code == 0


def test_pulled_versions_are_recorded_in_the_database(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    from sqlalchemy import select

    from script_ec2.db.engine import connect
    from script_ec2.db.models import ModelRecord

    assert cli("models", "pull", store_uri).exit_code == 0
    assert cli("models", "pull", store_uri).exit_code == 0
    engine = connect(resolve().database_url, auto_upgrade_sqlite=True)
    with engine.connect() as conn:
        rows = conn.execute(
            select(ModelRecord.name, ModelRecord.version, ModelRecord.registry_uri)
        ).all()
    assert sorted(rows) == sorted(
        [(NAME, 1, str(clean_home / "models")), (OTHER, 1, str(clean_home / "models"))]
    )


@pytest.mark.slow
def test_an_interrupted_install_leaves_no_visible_version(  # type: ignore[no-untyped-def]
    cli, published: ObjectStore, store_uri: str, clean_home: Path
) -> None:
    env = {**os.environ, "SCRIPT_EC2_CRASH_AT": "pull.file#3"}
    killed = subprocess.run(
        [sys.executable, "-m", "script_ec2", "models", "pull", store_uri, NAME],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    local = Registry(LocalStore(clean_home / "models"))
    assert local.list() == []  # three files, no SHA256SUMS: incomplete, so invisible
    assert len(listing(local.store)) == 3
    result = cli("models", "pull", store_uri, NAME, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "installed"
    assert all(r.ok for r in local.verify())


# --------------------------------------------------------------------------- anonymous reads


def make_public(bucket: Any) -> None:
    """A bucket policy granting anonymous reads, as a public model bucket has."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket.bucket}/*",
            }
        ],
    }
    bucket.client.put_bucket_policy(Bucket=bucket.bucket, Policy=json.dumps(policy))


def _authorization_headers(store: S3Store, key: str) -> list[bool]:
    """Whether each request made for ``get_bytes(key)`` carried an Authorization header."""
    seen: list[bool] = []

    def note(request: Any, **_: Any) -> None:
        seen.append("Authorization" in request.headers)

    client = store._client
    client.meta.events.register("before-send.s3", note)
    try:
        store.get_bytes(key)
    finally:
        client.meta.events.unregister("before-send.s3", note)
    return seen


@pytest.mark.s3
def test_anonymous_reads_send_unsigned_requests(  # type: ignore[no-untyped-def]
    s3_bucket, private: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(private)
    publish(private, store_for(s3_bucket.uri), [NAME])
    make_public(s3_bucket)
    signed = open_source(s3_bucket.uri, resolve())
    assert isinstance(signed, S3Store)
    assert _authorization_headers(signed, INDEX_FILE) == [True]
    forced = open_source(s3_bucket.uri, resolve(), anonymous=True)
    assert isinstance(forced, S3Store)
    assert _authorization_headers(forced, INDEX_FILE) == [False]
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    automatic = open_source(s3_bucket.uri, resolve())
    assert isinstance(automatic, S3Store)
    assert _authorization_headers(automatic, INDEX_FILE) == [False]


@pytest.mark.s3
def test_pull_from_a_public_bucket_without_credentials(  # type: ignore[no-untyped-def]
    cli, s3_bucket, private: Registry, clean_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(private)
    publish(private, store_for(s3_bucket.uri), [NAME])
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(AccessDenied, match="no usable AWS credentials"):
        open_store(s3_bucket.uri, resolve()).get_bytes(INDEX_FILE)  # signing needs credentials
    private_bucket = cli("models", "pull", s3_bucket.uri)
    assert private_bucket.exit_code == 1  # objects are private until the bucket policy says not
    assert "access denied" in private_bucket.stderr and "bucket policy" in private_bucket.stderr
    make_public(s3_bucket)
    result = cli("models", "pull", s3_bucket.uri, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["status"] == "installed"
    forced = cli("models", "pull", "--anonymous", s3_bucket.uri, "-f", "json")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)[0]["status"] == "present"


def test_core_pull_raises_pull_error(published: ObjectStore, tmp_path: Path) -> None:
    published.delete(f"{OTHER}/1/SHA256SUMS")
    registry = Registry(LocalStore(tmp_path / "fresh"))
    with pytest.raises(PullError) as caught:
        pull(published, registry, [OTHER])
    assert caught.value.exit_code == 1
    assert registry.list() == []
    assert not (tmp_path / "fresh").exists()
