"""``script-ec2 publish`` on a local folder and on S3 (moto): layout and upload order, dry runs,
every privacy-guard refusal, the scanner's rules (and what it must not flag), idempotent and
conflicting re-publishes, records, and ``latest`` never visible before its version is complete
(the process is killed between files)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from script_ec2.errors import KeyNotFound
from script_ec2.privacy import identifier_label, known_numbers, scan_json, scan_model, scan_text
from script_ec2.publish import (
    INDEX_FILE,
    PlannedFile,
    PrivacyRefusal,
    PublishConflict,
    PublishError,
    plan_publish,
    publish,
)
from script_ec2.registry import ARTIFACT_FILES, Registry, SaveResult, model_card
from script_ec2.settings import resolve
from script_ec2.store import LocalStore, ObjectInfo, ObjectStore, open_store

NAME = "sessions-workplace-weekday"
OTHER = "control-santa-clara-e19"
LICENCE = "CC-BY-4.0; data-derived parameters, no session data"
REPO = Path(__file__).resolve().parent.parent


def register_commands() -> None:
    """Add ``publish`` and ``fit`` to the CLI when cli.py does not register them itself.

    The finished tree's cli.py registers both; this keeps the tests on the real entry point
    (``script_ec2.cli.main``) whichever way round the files land.
    """
    from script_ec2 import cli
    from script_ec2.commands import fit as fit_cmd
    from script_ec2.commands import publish as publish_cmd

    if not any(c.name == "publish" for c in cli.app.registered_commands):
        cli.app.command("publish")(publish_cmd.publish)
    if not any(g.name == "fit" for g in cli.app.registered_groups):
        cli.app.add_typer(fit_cmd.app, name="fit")


register_commands()


# --------------------------------------------------------------------------- helpers


def full_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "title": "Charging sessions: Workplace, weekdays",
        "summary": "A joint Gaussian mixture of the start time and energy of Workplace sessions.",
        "scope": {"segment": "Workplace", "day type": "weekday (Monday to Friday)"},
        "training": {
            "period": "2017-01-02 to 2019-12-31",
            "sessions used": 18955,
            "source files": 54,
            "fingerprint": "f" * 64,
        },
        "units": {"means[:, 1]": "energy in kWh"},
        "intended_use": "Sampling synthetic sessions for aggregate load forecasts.",
        "limitations": ["Holidays count as ordinary weekdays."],
    }
    record.update(overrides)
    return record


def model_arrays(scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "weights": np.array([0.25, 0.75]),
        "means": np.array([[8.0, 10.0], [17.5, 6.0]]) * scale,
        "covariances": np.array([[[1.0, 0.2], [0.2, 4.0]], [[2.0, -0.3], [-0.3, 9.0]]]),
        "shift_hours": np.asarray(3.5),
        "energy_bounds": np.array([0.1, 60.0]),
    }


def save_model(
    registry: Registry,
    name: str = NAME,
    *,
    scale: float = 1.0,
    record: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> SaveResult:
    return registry.save(
        "sessions-gmm",
        name,
        parameters=parameters or {"segment": "Workplace", "day_type": "weekday", "seed": 0},
        metrics={"bic": 128886.36869279169, "ks_start": 0.0166, "components": 2},
        fingerprint="ab" * 32,
        arrays=arrays or model_arrays(scale),
        record=full_record() if record is None else record,
        licence=LICENCE,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sums_for(files: dict[str, bytes]) -> bytes:
    return "".join(
        f"{sha256(files[f])}  {f}\n" for f in ARTIFACT_FILES if f != "SHA256SUMS"
    ).encode()


def store_for(uri: str) -> ObjectStore:
    return open_store(uri, resolve())


def listing(store: ObjectStore) -> dict[str, tuple[int, str]]:
    if isinstance(store, LocalStore) and not store.root.exists():
        return {}
    return {i.key: (i.size, i.etag) for i in store.list()}


class RecordingStore:
    """A store that notes every write before passing it on (to check order and count writes)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def download(self, key: str, dest: Path, **options: Any) -> ObjectInfo:
        return self.inner.download(key, dest, **options)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        self.writes.append(key)
        return self.inner.put_bytes(key, data)

    def upload(self, src: Path, key: str) -> ObjectInfo:
        self.writes.append(key)
        return self.inner.upload(src, key)

    def delete(self, key: str) -> None:
        self.writes.append(f"delete {key}")
        self.inner.delete(key)


def latest_if_complete(store: ObjectStore, name: str) -> int | None:
    """The version latest.json names, after checking every file of it is there and intact."""
    try:
        alias = json.loads(store.get_bytes(f"{name}/latest.json"))
    except KeyNotFound:
        return None
    version = alias["version"]
    sums = store.get_bytes(f"{name}/{version}/SHA256SUMS")
    assert sha256(sums) == alias["sha256sums"]
    for line in sums.decode().splitlines():
        digest, filename = line.split("  ")
        assert sha256(store.get_bytes(f"{name}/{version}/{filename}")) == digest
    index = json.loads(store.get_bytes(INDEX_FILE))
    entry = index["models"][name]["versions"][str(version)]
    assert entry["content_hash"] == alias["content_hash"]
    return int(version)


def index_lists_only_complete(store: ObjectStore) -> None:
    try:
        index = json.loads(store.get_bytes(INDEX_FILE))
    except KeyNotFound:
        return
    for name, model in index["models"].items():
        for version, entry in model["versions"].items():
            for filename, spec in entry["files"].items():
                data = store.get_bytes(f"{name}/{version}/{filename}")
                assert sha256(data) == spec["sha256"] and len(data) == spec["size"]


@pytest.fixture
def private(isolated_env: Path) -> Registry:
    """The private registry at the default models_dir of the isolated environment."""
    return Registry(LocalStore(isolated_env / "models"))


@pytest.fixture
def saved(private: Registry) -> Registry:
    save_model(private)
    save_model(private, OTHER, scale=2.0)
    return private


# --------------------------------------------------------------------------- layout and order


def test_publish_layout_index_latest_and_records(cli, saved: Registry, store_uri: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("publish", NAME, f"{OTHER}@1", "--to", store_uri, "-f", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["status"] for r in rows} == {"uploaded"}
    store = store_for(store_uri)
    keys = set(listing(store))
    expected = {f"{n}/1/{f}" for n in (NAME, OTHER) for f in ARTIFACT_FILES}
    expected |= {INDEX_FILE, f"{NAME}/latest.json", f"{OTHER}/latest.json"}
    assert keys == expected
    assert {r["file"] for r in rows} == expected
    for name in (NAME, OTHER):
        local = saved.artifact_files(name, 1)
        for filename in ARTIFACT_FILES:
            assert store.get_bytes(f"{name}/1/{filename}") == local[filename]
        assert latest_if_complete(store, name) == 1
        alias = json.loads(store.get_bytes(f"{name}/latest.json"))
        assert alias == {
            "name": name,
            "version": 1,
            "content_hash": json.loads(local["model.json"])["content_hash"],
            "sha256sums": sha256(local["SHA256SUMS"]),
        }
    index = json.loads(store.get_bytes(INDEX_FILE))
    entry = index["models"][NAME]["versions"]["1"]
    meta = saved.load(NAME, 1).meta
    assert entry["created_at"] == meta["created_at"]
    assert entry["content_hash"] == meta["content_hash"]
    assert entry["licence"] == LICENCE
    assert set(entry["files"]) == set(ARTIFACT_FILES)

    # Recorded in the registry and in model_versions (rows inserted: these models were saved
    # without training, so the database had none).
    listed = {v.name: v for v in saved.list()}
    where = str(store.root) if isinstance(store, LocalStore) else store_uri
    assert listed[NAME].published and listed[NAME].published_to == (where,)
    from sqlalchemy import select

    from script_ec2.db.engine import connect
    from script_ec2.db.models import ModelRecord

    engine = connect(resolve().database_url, auto_upgrade_sqlite=True)
    with engine.connect() as conn:
        records = conn.execute(
            select(
                ModelRecord.name,
                ModelRecord.version,
                ModelRecord.published_to,
                ModelRecord.published_at,
            )
        ).all()
    assert {(r.name, r.version, r.published_to) for r in records} == {
        (NAME, 1, where),
        (OTHER, 1, where),
    }
    assert all(r.published_at is not None for r in records)


def test_upload_order_files_then_index_then_latest(saved: Registry, store_uri: str) -> None:
    save_model(saved, NAME, scale=3.0)  # NAME@2
    recording = RecordingStore(store_for(store_uri))
    publish(saved, recording, [f"{NAME}@1", NAME, OTHER])  # type: ignore[arg-type]
    writes = recording.writes
    version_files = [k for k in writes if k.count("/") == 2]
    assert writes[: len(version_files)] == version_files
    # Within each version SHA256SUMS comes last.
    for prefix in (f"{NAME}/1/", f"{NAME}/2/", f"{OTHER}/1/"):
        mine = [k for k in version_files if k.startswith(prefix)]
        assert len(mine) == 4 and mine[-1] == prefix + "SHA256SUMS"
    assert writes[len(version_files)] == INDEX_FILE
    assert sorted(writes[len(version_files) + 1 :]) == [
        f"{OTHER}/latest.json",
        f"{NAME}/latest.json",
    ]
    # latest is the highest published version, whatever order the refs came in.
    assert latest_if_complete(recording.inner, NAME) == 2


def test_publishing_an_older_version_keeps_latest(saved: Registry, store_uri: str) -> None:
    save_model(saved, NAME, scale=3.0)
    store = store_for(store_uri)
    publish(saved, store, [f"{NAME}@2"])
    publish(saved, store, [f"{NAME}@1"])
    assert latest_if_complete(store, NAME) == 2
    index = json.loads(store.get_bytes(INDEX_FILE))
    assert sorted(index["models"][NAME]["versions"]) == ["1", "2"]


def test_default_target_is_the_public_uri_setting(cli, saved: Registry, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("publish", NAME)
    assert result.exit_code == 0, result.stderr
    assert (isolated_env / "buckets" / "public" / NAME / "latest.json").is_file()


def test_publish_all_takes_the_latest_of_every_model(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str, tmp_path: Path
) -> None:
    save_model(saved, NAME, scale=3.0)
    result = cli("publish", "--all", "--to", store_uri, "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert sorted({r["model"] for r in json.loads(result.stdout) if "@" in r["model"]}) == [
        f"{OTHER}@1",
        f"{NAME}@2",
    ]
    both = cli("publish", "--all", NAME, "--to", store_uri)
    assert both.exit_code == 2 and "or give --all" in both.stderr
    empty = Registry(LocalStore(tmp_path / "empty-models"))
    with pytest.raises(PublishError, match="holds no complete model version"):
        publish(empty, store_for(store_uri), None)


# --------------------------------------------------------------------------- dry run


def test_dry_run_lists_exactly_the_uploads_and_writes_nothing(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str, isolated_env: Path
) -> None:
    store = store_for(store_uri)
    publish(saved, store, [OTHER])  # some files already there: the dry run must skip them
    save_model(saved, NAME, scale=5.0)  # NAME@2
    before = listing(store)
    marks_before = (isolated_env / "models" / NAME / "published.json").exists()

    dry = cli("publish", NAME, f"{NAME}@1", OTHER, "--to", store_uri, "--dry-run", "-f", "json")
    assert dry.exit_code == 0, dry.stderr
    assert listing(store) == before
    assert (isolated_env / "models" / NAME / "published.json").exists() == marks_before
    would = [r["file"] for r in json.loads(dry.stdout)]
    assert {r["status"] for r in json.loads(dry.stdout)} == {"would upload"}
    assert "dry run" in dry.stderr and "nothing was written" in dry.stderr

    recording = RecordingStore(store)
    publish(saved, recording, [NAME, f"{NAME}@1", OTHER])  # type: ignore[arg-type]
    assert recording.writes == would
    assert OTHER + "/1/model.json" not in would


def test_dry_run_does_not_create_a_local_folder(cli, saved: Registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "not-yet" / "public"
    result = cli("publish", NAME, "--to", str(target), "--dry-run", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(ARTIFACT_FILES) + 2
    assert not target.parent.exists()


# --------------------------------------------------------------------------- privacy guard


@pytest.mark.parametrize(
    "stray", ["sessions.csv", "part-0000.parquet", "train.log", "notes.txt", "extra/raw.bin"]
)
def test_a_non_artifact_file_refuses_the_whole_publish(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str, isolated_env: Path, stray: str
) -> None:
    folder = isolated_env / "models" / NAME / "1"
    (folder / stray).parent.mkdir(parents=True, exist_ok=True)
    (folder / stray).write_text("Session ID,Energy (kWh)\n10015141,7.97\n")
    result = cli("publish", OTHER, NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert "refusing to publish" in result.stderr and f"{NAME}/1/{stray}" in result.stderr
    assert "not a model artifact" in result.stderr and "nothing was uploaded" in result.stderr
    assert "10015141" not in result.stderr
    assert listing(store_for(store_uri)) == {}  # not even the clean model went up
    assert not any(v.published for v in saved.list())


PLANTED: dict[str, Callable[[], dict[str, Any]]] = {
    "station id key in the training table": lambda: {
        "record": full_record(training={"Station ID": "9440208", "sessions used": 12})
    },
    "session id in the summary": lambda: {
        "record": full_record(summary="Longest stay: Session ID 10015141 at a workplace.")
    },
    "driver id in a limitation": lambda: {
        "record": full_record(limitations=["driver_id 500644 charges daily"])
    },
    "camel-case key in parameters": lambda: {"parameters": {"segment": "Workplace", "userId": 7}},
    "array named after ids": lambda: {
        "arrays": {**model_arrays(), "session_ids": np.array([10015141, 10015142])}
    },
    "long integer in text": lambda: {
        "record": full_record(summary="Excluded sessions 10015141 and 10015142 (outliers).")
    },
    "mac address": lambda: {"record": full_record(scope={"station": "0024:B100:0002:33D2"})},
    "raw csv row": lambda: {
        "record": full_record(
            intended_use="10015141,9440208,1,J1772,Workplace,2017-01-02 08:07:49,3.3438,94402"
        )
    },
    "raw row as a list": lambda: {
        "record": full_record(
            example=[10015142, "J1772", "2017-01-02 08:07:49", 3.3438, 94402, "San Mateo"]
        )
    },
    "raw header": lambda: {
        "record": full_record(columns="Energy (kWh), Zip Code, Vehicle Make, start_datetime")
    },
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_a_planted_identifier_refuses_the_publish(  # type: ignore[no-untyped-def]
    cli, private: Registry, store_uri: str, case: str
) -> None:
    save_model(private, OTHER, scale=2.0)
    save_model(private, NAME, **PLANTED[case]())
    result = cli("publish", OTHER, NAME, "--to", store_uri)
    assert result.exit_code == 1, result.stderr
    assert f"refusing to publish {NAME}@1" in result.stderr
    assert "nothing was uploaded" in result.stderr
    # The refusal names the place and the rule, never the private value it found.
    for value in ("9440208", "10015141", "500644", "0024:B100"):
        assert value not in result.stderr
    assert listing(store_for(store_uri)) == {}


def test_a_hand_edited_card_is_scanned(
    cli, saved: Registry, store_uri: str, isolated_env: Path
) -> None:  # type: ignore[no-untyped-def]
    folder = isolated_env / "models" / NAME / "1"
    files = {f: (folder / f).read_bytes() for f in ARTIFACT_FILES}
    files["README.md"] += b"\n| Station ID | 9440208 |\n"
    files["SHA256SUMS"] = sums_for(files)
    for filename, data in files.items():
        (folder / filename).write_bytes(data)
    assert saved.verify(NAME)[0].ok  # a consistent version: only the scanner can catch it
    result = cli("publish", NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert "README.md line" in result.stderr and "identifier-name" in result.stderr
    assert listing(store_for(store_uri)) == {}


def test_core_raises_privacy_refusal_with_every_finding(private: Registry, tmp_path: Path) -> None:
    save_model(private, **PLANTED["station id key in the training table"]())
    with pytest.raises(PrivacyRefusal) as caught:
        plan_publish(private, LocalStore(tmp_path / "pub"), [NAME])
    assert caught.value.exit_code == 1
    assert 'record.training["Station ID"]' in str(caught.value)


def test_a_card_without_a_required_section_is_refused(
    cli, private: Registry, store_uri: str
) -> None:  # type: ignore[no-untyped-def]
    record = full_record()
    del record["intended_use"]
    record["limitations"] = []
    save_model(private, record=record)
    result = cli("publish", NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert "lacks intended use, limitations" in result.stderr
    assert listing(store_for(store_uri)) == {}


# --------------------------------------------------------------------------- the scanner


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Session ID", "session id"),
        ("station_id", "station id"),
        ("driverId", "driver id"),
        ("sessionIds", "session ids"),
        ("EVSE-ID", "evse id"),
        ("Port Number", "port number"),
        ("Driver Zip", "driver zip"),
        ("MAC Address", "mac address"),
        ("VIN", "vin"),
    ],
)
def test_identifier_labels(text: str, label: str) -> None:
    assert identifier_label(text) == label


@pytest.mark.parametrize(
    "text",
    [
        "sessions used",
        "stations",
        "max_sessions_per_model",
        "member",
        "held-out sessions",
        "vehicle counts by segment",
        "the session no longer counts",
        "Not for predicting individual drivers or stations.",
        "identifier",
    ],
)
def test_ordinary_words_are_not_identifier_labels(text: str) -> None:
    assert identifier_label(text) is None


@pytest.mark.parametrize(
    "line",
    [
        "Segments: Residential L1, Residential L2, Residential MUD, Workplace, Public L2, DC Fast.",
        "133805.69, 129850.36, 129066.91, 128908.60, 128898.22, 128886.36, 128904.17",
        "2019-01-01, 2019-05-27, 2019-07-04, 2019-09-02, 2019-11-28, 2019-12-25",
        "Alameda, Contra Costa, Marin, Napa, San Francisco, San Mateo, Santa Clara",
        '{"name":"peak","price":21.23,"ranges":["12:00-18:00"]}, {"name":"part-peak"}',
        "| period | 2017-01-02 to 2019-12-31 |",
        'created_at: "2026-11-27T22:35:26Z"',
    ],
)
def test_legitimate_lines_are_not_flagged(line: str) -> None:
    assert scan_text(line) == []


def test_long_integers_in_the_card_are_allowed_when_they_are_the_models_own_numbers() -> None:
    line = "| bic_curve | 1339805, 1298503, 1290669, 1289086, 1288982, 1288863 |"
    meta = {"metrics": {"bic_curve": [1339805, 1298503, 1290669, 1289086, 1288982, 1288863.0]}}
    assert scan_text(line, known_numbers=known_numbers(meta)) == []
    assert [f.rule for f in scan_text(line)] == ["long-integer"]  # not a data row either way


hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
counts = st.integers(min_value=0, max_value=10**15)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content_hash=hex64,
    fingerprint=hex64,
    metrics=st.dictionaries(st.sampled_from(["bic", "ks_start", "r2", "mape"]), finite),
    curve=st.lists(finite, min_size=0, max_size=30),
    sessions=counts,
    files=counts,
    seed=st.integers(min_value=0, max_value=2**63 - 1),
    sums=st.lists(hex64, min_size=3, max_size=3),
)
def test_our_own_metadata_is_never_flagged(
    content_hash: str,
    fingerprint: str,
    metrics: dict[str, float],
    curve: list[float],
    sessions: int,
    files: int,
    seed: int,
    sums: list[str],
) -> None:
    meta = {
        "schema_version": 1,
        "kind": "sessions-gmm",
        "name": NAME,
        "version": 3,
        "created_at": "2026-11-27T22:35:26Z",
        "content_hash": content_hash,
        "fingerprint": fingerprint,
        "parameters": {"segment": "Workplace", "seed": seed, "max_sessions_per_model": sessions},
        "metrics": {**metrics, "bic_curve": curve, "ks_samples": files},
        "libraries": {"numpy": "2.4.6", "scikit-learn": "1.9.1"},
        "licence": LICENCE,
        "record": full_record(
            training={"sessions used": sessions, "source files": files, "fingerprint": fingerprint},
            model_seed=seed,
        ),
        "arrays": {"weights": {"member": "weights.npy", "shape": [files % 97], "dtype": "<f8"}},
    }
    model_json = json.dumps(meta, indent=2, sort_keys=True).encode()
    checksums = "".join(
        f"{s}  {f}\n" for s, f in zip(sums, ("model.json", "arrays.npz", "README.md"), strict=True)
    )
    found = scan_model(
        {
            "model.json": model_json,
            "README.md": model_card(meta).encode(),
            "SHA256SUMS": checksums.encode(),
        }
    )
    assert found == []


def test_scan_json_reports_the_path() -> None:
    found = scan_json({"record": {"training": {"Driver ID": 1}}, "x": ["a", {"station_ids": []}]})
    assert [(f.where, f.rule) for f in found] == [
        ('$.record.training["Driver ID"]', "identifier-name"),
        ("$.x[1].station_ids", "identifier-name"),
    ]


# --------------------------------------------------------------------------- re-publishing


def test_republishing_an_identical_version_changes_nothing(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str
) -> None:
    first = cli("publish", NAME, OTHER, "--to", store_uri)
    assert first.exit_code == 0, first.stderr
    store = store_for(store_uri)
    before = listing(store)
    again = cli("publish", NAME, OTHER, "--to", store_uri, "-f", "json")
    assert again.exit_code == 0, again.stderr
    assert {r["status"] for r in json.loads(again.stdout)} == {"unchanged"}
    assert "nothing changed" in again.stderr
    assert listing(store) == before
    recording = RecordingStore(store)
    publish(saved, recording, [NAME, OTHER])  # type: ignore[arg-type]
    assert recording.writes == []


def test_republishing_different_content_under_a_version_is_an_error(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str, tmp_path: Path
) -> None:
    assert cli("publish", NAME, "--to", store_uri).exit_code == 0
    store = store_for(store_uri)
    before = {k: store.get_bytes(k) for k in listing(store)}
    # Another registry (say, a rebuilt machine) trained different content as NAME@1.
    other = Registry(LocalStore(tmp_path / "other-models"))
    save_model(other, NAME, scale=7.0)
    with pytest.raises(PublishConflict) as caught:
        publish(other, store, [NAME])
    assert caught.value.exit_code == 1
    assert "immutable" in str(caught.value) and "nothing was uploaded" in str(caught.value)
    assert {k: store.get_bytes(k) for k in listing(store)} == before


def test_conflict_through_the_cli(cli, saved: Registry, store_uri: str) -> None:  # type: ignore[no-untyped-def]
    store = store_for(store_uri)
    store.put_bytes(f"{NAME}/1/model.json", b'{"someone": "else"}\n')
    result = cli("publish", NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert f"{NAME}/1/model.json holds different content" in result.stderr
    assert set(listing(store)) == {f"{NAME}/1/model.json"}


def test_a_malformed_index_at_the_target_is_an_error(cli, saved: Registry, store_uri: str) -> None:  # type: ignore[no-untyped-def]
    store_for(store_uri).put_bytes(INDEX_FILE, b"[not an index")
    result = cli("publish", NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert "index.json is not valid JSON" in result.stderr


@pytest.mark.parametrize("field", ["version", "content_hash", "sha256"])
def test_an_index_with_a_trailing_newline_in_a_checked_field_is_malformed(
    cli, saved: Registry, store_uri: str, field: str
) -> None:  # type: ignore[no-untyped-def]
    # "$" would match before a final newline: every checked field must match whole.
    store = store_for(store_uri)
    assert cli("publish", NAME, "--to", store_uri).exit_code == 0
    index = json.loads(store.get_bytes(INDEX_FILE))
    versions = index["models"][NAME]["versions"]
    if field == "version":
        versions["1\n"] = versions.pop("1")
    elif field == "content_hash":
        versions["1"]["content_hash"] += "\n"
    else:
        versions["1"]["files"][ARTIFACT_FILES[0]]["sha256"] += "\n"
    store.put_bytes(INDEX_FILE, json.dumps(index).encode())
    result = cli("publish", NAME, "--to", store_uri)
    assert result.exit_code == 1
    assert f"the entry of model {NAME!r} is malformed" in result.stderr


def test_unknown_model_and_bad_reference(cli, saved: Registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = cli("publish", "sessions-nowhere", "--to", str(tmp_path / "p"))
    assert missing.exit_code == 1 and "sessions-nowhere" in missing.stderr
    bad = cli("publish", f"{NAME}@0", "--to", str(tmp_path / "p"))
    assert bad.exit_code == 2
    no_refs = cli("publish", "--to", str(tmp_path / "p"))
    assert no_refs.exit_code == 2


def test_read_back_mismatch_stops_before_latest(saved: Registry, tmp_path: Path) -> None:
    class Corrupting(RecordingStore):
        def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
            self.writes.append(key)
            return self.inner.put_bytes(key, data[:-1] if key.endswith("arrays.npz") else data)

    (tmp_path / "pub").mkdir()
    store = Corrupting(LocalStore(tmp_path / "pub"))
    with pytest.raises(PublishError, match="reading it back"):
        publish(saved, store, [NAME])  # type: ignore[arg-type]
    assert INDEX_FILE not in store.writes
    assert latest_if_complete(store.inner, NAME) is None


# --------------------------------------------------------------------------- interruption


def run_killed(args: list[str], crash_at: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process that SIGKILLs itself at the named checkpoint."""
    code = (
        "import sys\n"
        "from tests.test_publish import register_commands\n"
        "from script_ec2.cli import main\n"
        "register_commands()\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "SCRIPT_EC2_CRASH_AT": crash_at}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("crash_at", "latest_after"),
    [
        ("publish.file#1", 1),
        ("publish.file#2", 1),
        ("publish.file#3", 1),
        ("publish.file#4", 1),
        ("publish.index", 1),
        ("publish.latest", 2),
    ],
)
def test_latest_is_never_visible_before_its_version_is_complete(  # type: ignore[no-untyped-def]
    cli, saved: Registry, store_uri: str, crash_at: str, latest_after: int
) -> None:
    store = store_for(store_uri)
    publish(saved, store, [NAME])
    save_model(saved, NAME, scale=4.0)  # NAME@2
    killed = run_killed(["publish", NAME, "--to", store_uri], crash_at)
    assert killed.returncode == -9, killed.stderr
    assert latest_if_complete(store, NAME) == latest_after
    index_lists_only_complete(store)
    # Running it again completes the publish.
    again = cli("publish", NAME, "--to", store_uri)
    assert again.exit_code == 0, again.stderr
    assert latest_if_complete(store, NAME) == 2
    index_lists_only_complete(store)


@pytest.mark.slow
def test_an_interrupted_first_publish_leaves_no_latest(saved: Registry, store_uri: str) -> None:
    killed = run_killed(["publish", NAME, "--to", store_uri], "publish.file#3")
    assert killed.returncode == -9, killed.stderr
    store = store_for(store_uri)
    assert latest_if_complete(store, NAME) is None
    with pytest.raises(KeyNotFound):
        store.get_bytes(INDEX_FILE)
    assert len(listing(store)) == 3


def test_planned_file_rows() -> None:
    planned = PlannedFile("a/1/model.json", b"{}", "upload", "a@1")
    assert planned.row("would upload") == {
        "file": "a/1/model.json",
        "model": "a@1",
        "size": 2,
        "sha256": sha256(b"{}"),
        "status": "would upload",
    }
