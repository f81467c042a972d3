"""The object stores: the same behaviour on a local folder and on S3 (a moto server), and the
errors a user can reach, each with a one-line message that names the thing that failed."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from script_ec2.errors import (
    AccessDenied,
    BucketNotFound,
    EndpointUnreachable,
    KeyNotFound,
    ScriptEc2Error,
    StoreError,
    UsageError,
)
from script_ec2.settings import Settings, resolve
from script_ec2.store import LocalStore, ObjectStore, S3Store, open_store
from tests.conftest import free_port
from tests.fixtures_s3 import S3Bucket

MiB = 1024 * 1024


def settings(**overrides: Any) -> Settings:
    return replace(resolve(), **overrides)


@pytest.fixture
def store(store_uri: str) -> ObjectStore:
    return open_store(store_uri, settings())


def message_of(excinfo: pytest.ExceptionInfo[ScriptEc2Error], *needles: str) -> str:
    """The error's message, checked to be one line that contains every needle."""
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# --- the same behaviour on both stores ------------------------------------------------------------


def test_download_shows_every_chunk_to_observe_and_can_skip_fsync(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
    store.put_bytes("big.bin", payload)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    hasher = hashlib.sha256()
    dest = tmp_path / "cache" / "big.bin"
    info = store.download("big.bin", dest, durable=False, observe=hasher.update)
    assert info.size == len(payload) and dest.read_bytes() == payload
    assert hasher.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert synced == [] and leftovers(dest.parent) == []

    store.download("big.bin", tmp_path / "durable.bin")
    assert synced, "a default download fsyncs the file"


def test_put_list_head_get_download_delete_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    put = store.put_bytes("sessions.csv", b"a,b\n1,2\n")
    assert put.key == "sessions.csv" and put.size == 8 and put.etag
    assert put.last_modified.utcoffset() == timedelta(0)
    assert before <= put.last_modified <= datetime.now(UTC) + timedelta(seconds=2)

    assert store.head("sessions.csv") == put
    assert list(store.list()) == [put]
    assert store.get_bytes("sessions.csv") == b"a,b\n1,2\n"

    dest = tmp_path / "out" / "copy.csv"
    assert store.download("sessions.csv", dest) == put
    assert dest.read_bytes() == b"a,b\n1,2\n"
    assert leftovers(dest.parent) == []

    store.delete("sessions.csv")
    with pytest.raises(KeyNotFound):
        store.head("sessions.csv")
    assert list(store.list()) == []
    store.delete("sessions.csv")  # deleting an absent key is not an error


def test_nested_keys_list_sorted_and_filter_by_string_prefix(store: ObjectStore) -> None:
    keys = ["z.csv", "a/b/c.csv", "a-c.csv", "a/b.csv", "a/b/d/e.csv", "b/x.csv"]
    for key in keys:
        store.put_bytes(key, key.encode())

    assert [info.key for info in store.list()] == sorted(keys)
    assert [i.key for i in store.list("a/")] == ["a/b.csv", "a/b/c.csv", "a/b/d/e.csv"]
    # A prefix is a string prefix, as on S3, not a folder name.
    assert [i.key for i in store.list("a")] == ["a-c.csv", "a/b.csv", "a/b/c.csv", "a/b/d/e.csv"]
    assert [i.key for i in store.list("a/b/")] == ["a/b/c.csv", "a/b/d/e.csv"]
    assert list(store.list("nothing/")) == []
    assert list(store.list("z.csv/")) == []
    assert store.get_bytes("a/b/d/e.csv") == b"a/b/d/e.csv"


@pytest.mark.parametrize(
    "store_uri",
    ["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])],
    indirect=True,
)
def test_list_returns_every_key_past_one_page(store: ObjectStore) -> None:
    # S3 returns at most 1000 keys per ListObjectsV2 call: 1001 forces a second page.
    keys = [f"day/{i:05d}.csv" for i in range(1001)]
    for key in keys:
        store.put_bytes(key, b"x")
    listed = [info.key for info in store.list()]
    assert listed == keys
    assert len([info for info in store.list("day/0009")]) == 10


def test_etag_changes_on_same_size_rewrite(store: ObjectStore) -> None:
    first = store.put_bytes("model.json", b"aaaa")
    second = store.put_bytes("model.json", b"bbbb")
    assert first.size == second.size == 4
    assert first.etag != second.etag
    assert [info.etag for info in store.list()] == [second.etag]
    assert store.head("model.json").etag == second.etag


def test_download_of_missing_key_leaves_dest_untouched(store: ObjectStore, tmp_path: Path) -> None:
    dest = tmp_path / "dest.csv"
    dest.write_bytes(b"old")
    with pytest.raises(KeyNotFound) as excinfo:
        store.download("missing.csv", dest)
    message_of(excinfo, "missing.csv")
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_download_that_cannot_be_renamed_removes_its_temp_file(
    store: ObjectStore, tmp_path: Path
) -> None:
    store.put_bytes("data.csv", b"new content")
    # The whole object is streamed to the temp file, then the rename onto a folder fails.
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(StoreError) as excinfo:
        store.download("data.csv", dest)
    message_of(excinfo, str(dest))
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert leftovers(tmp_path) == []

    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreError) as excinfo:
        store.download("data.csv", blocker / "dest.csv")
    message_of(excinfo, str(blocker / "dest.csv"))

    replaced = tmp_path / "replaced.csv"
    replaced.write_bytes(b"old")
    store.download("data.csv", replaced)
    assert replaced.read_bytes() == b"new content"
    assert leftovers(tmp_path) == []


def test_upload_above_multipart_threshold(store_uri: str, tmp_path: Path) -> None:
    store = open_store(store_uri, settings())
    if isinstance(store, S3Store):
        store = S3Store(store_uri, settings(), multipart_threshold=5 * MiB)
    src = tmp_path / "big.bin"
    payload = os.urandom(12 * MiB + 123)
    src.write_bytes(payload)

    info = store.upload(src, "models/big.bin")
    assert info.key == "models/big.bin" and info.size == len(payload)
    assert store.head("models/big.bin") == info
    if isinstance(store, S3Store):
        assert info.etag.endswith("-3")  # three 5 MiB parts: it really went multipart

    dest = tmp_path / "back.bin"
    assert store.download("models/big.bin", dest).size == len(payload)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(payload).digest()

    small = tmp_path / "small.bin"
    small.write_bytes(b"tiny")
    assert store.upload(small, "models/small.bin").size == 4
    assert store.get_bytes("models/small.bin") == b"tiny"


def test_upload_of_missing_file_names_it(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as excinfo:
        store.upload(tmp_path / "absent.bin", "x.bin")
    message_of(excinfo, str(tmp_path / "absent.bin"))
    assert list(store.list()) == []


def test_missing_key_errors_name_the_key(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("present.csv", b"x")
    for call in (
        lambda: store.head("folder/absent.csv"),
        lambda: store.get_bytes("folder/absent.csv"),
        lambda: store.download("folder/absent.csv", tmp_path / "d.csv"),
    ):
        with pytest.raises(KeyNotFound) as excinfo:
            call()
        message_of(excinfo, "folder/absent.csv")
    assert not (tmp_path / "d.csv").exists()


@pytest.mark.parametrize(
    "key", ["", "../escape.csv", "a/../../escape.csv", "/etc/passwd", "a//b", "a/./b", ".x.part"]
)
def test_keys_that_could_escape_the_root_are_refused(
    store: ObjectStore, key: str, tmp_path: Path
) -> None:
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.head(key),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.download(key, tmp_path / "d"),
    ):
        with pytest.raises(UsageError) as excinfo:
            call()
        message_of(excinfo, repr(key))
    assert not (tmp_path / "escape.csv").exists()
    with pytest.raises(UsageError):
        list(store.list("../"))


# --- missing bucket or folder ---------------------------------------------------------------------


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def missing_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[ObjectStore, str]:
    """A store whose bucket (or folder) does not exist, and the name its errors must mention."""
    if request.param == "local":
        root = tmp_path / "no-such-folder"
        return open_store(str(root), settings()), str(root)
    s3: S3Bucket = request.getfixturevalue("s3_bucket")
    name = s3.bucket + "-gone"
    return open_store(f"s3://{name}/prefix", settings()), f"bucket '{name}'"


def test_missing_bucket_or_folder_on_read(
    missing_store: tuple[ObjectStore, str], tmp_path: Path
) -> None:
    store, name = missing_store
    for call in (
        lambda: list(store.list()),
        lambda: store.head("k.csv"),
        lambda: store.get_bytes("k.csv"),
        lambda: store.download("k.csv", tmp_path / "d.csv"),
    ):
        with pytest.raises(BucketNotFound) as excinfo:
            call()
        message_of(excinfo, name)
    assert not (tmp_path / "d.csv").exists()


@pytest.mark.s3
def test_missing_bucket_on_write_names_bucket_and_endpoint(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    name = s3_bucket.bucket + "-gone"
    store = open_store(f"s3://{name}/prefix", settings())
    src = tmp_path / "src.bin"
    src.write_bytes(b"data")
    for call in (
        lambda: store.put_bytes("k.csv", b"x"),
        lambda: store.upload(src, "k.csv"),
        lambda: store.delete("k.csv"),
    ):
        with pytest.raises(BucketNotFound) as excinfo:
            call()
        message = message_of(excinfo, f"bucket '{name}' not found", s3_bucket.endpoint)
        assert "--data-uri" in message
        assert excinfo.value.__cause__ is not None


def test_local_store_creates_its_folder_on_first_write(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "new" / "store"), settings())
    store.put_bytes("a/b.csv", b"x")
    assert (tmp_path / "new" / "store" / "a" / "b.csv").read_bytes() == b"x"


def test_local_root_that_is_a_file_is_not_a_store(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_bytes(b"")
    with pytest.raises(BucketNotFound) as excinfo:
        list(open_store(str(root), settings()).list())
    message_of(excinfo, str(root), "not a folder")


# --- S3 connection, credentials and service errors ------------------------------------------------


@pytest.mark.s3
def test_unreachable_endpoint_is_reported_quickly(s3_bucket: S3Bucket) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = open_store(s3_bucket.uri, settings(s3_endpoint_url=endpoint, s3_max_attempts=1))
    started = time.monotonic()
    with pytest.raises(EndpointUnreachable) as excinfo:
        list(store.list())
    assert time.monotonic() - started < 10
    message_of(
        excinfo,
        f"cannot reach S3 endpoint {endpoint}: connection refused",
        "--s3-endpoint-url / AWS_ENDPOINT_URL",
    )
    assert excinfo.value.__cause__ is not None
    with pytest.raises(EndpointUnreachable):
        store.put_bytes("k", b"x")


@pytest.mark.s3
def test_aws_endpoint_url_from_the_environment_is_honoured(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCRIPT_EC2_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_bucket.endpoint)
    store = open_store(s3_bucket.uri, settings())
    assert store.put_bytes("k.csv", b"x").size == 1
    key = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key="prefix/k.csv")
    assert key["ContentLength"] == 1

    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    with pytest.raises(EndpointUnreachable) as excinfo:
        open_store(s3_bucket.uri, settings(s3_max_attempts=1)).head("k.csv")
    message_of(excinfo, closed)


@pytest.mark.s3
def test_missing_credentials_map_to_access_denied(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = open_store(s3_bucket.uri, settings())
    with pytest.raises(AccessDenied) as excinfo:
        list(store.list())
    message_of(excinfo, "credentials", s3_bucket.bucket, "AWS_PROFILE")


@pytest.mark.s3
def test_service_side_refusals_map_to_project_errors(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    # moto grants everything, so S3's refusals are injected at the client boundary with
    # botocore's own Stubber; the mapping code above it runs unchanged.
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    store = S3Store(s3_bucket.uri, settings(s3_max_attempts=1))
    with Stubber(store._client) as stub:
        stub.add_client_error(
            "list_objects_v2", "AccessDenied", "Access Denied", http_status_code=403
        )
        with pytest.raises(AccessDenied) as denied:
            list(store.list())
        message_of(denied, "access denied", s3_bucket.bucket, "AWS_PROFILE")

        stub.add_client_error("get_object", "SlowDown", "Reduce your request rate", 503)
        with pytest.raises(StoreError) as slow:
            store.get_bytes("k.csv")
        message_of(slow, "SlowDown", f"s3://{s3_bucket.bucket}/prefix/k.csv")

        # A body shorter than its Content-Length: the download must not land.
        stub.add_response(
            "get_object",
            {
                "Body": StreamingBody(io.BytesIO(b"abc"), 3),
                "ContentLength": 10,
                "ETag": '"x"',
                "LastModified": datetime.now(UTC),
            },
        )
        dest = tmp_path / "dest.csv"
        with pytest.raises(StoreError) as cut:
            store.download("k.csv", dest)
        message_of(cut, "got 3 bytes, expected 10", str(dest))
        assert not dest.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("endpoint", "region", "needle"),
    [
        ("not-a-url", "", "'not-a-url'"),
        ("", "not a region", "'not a region'"),
    ],
)
def test_bad_endpoint_or_region_is_a_usage_error(
    isolated_env: Path, endpoint: str, region: str, needle: str
) -> None:
    with pytest.raises(UsageError) as excinfo:
        open_store("s3://bucket/p", settings(s3_endpoint_url=endpoint, aws_region=region))
    message_of(excinfo, needle)


# --- locations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "s3://",
        "s3:///prefix",
        "s3:/bucket/x",
        "s3:bucket",
        "s3://ab/x",
        "s3://Upper-Case/x",
        "s3://under_score/x",
        "s3://-leading/x",
        "s3://trailing-/x",
        "s3://two..dots/x",
        "s3://192.168.1.1/x",
        "s3://xn--punycode/x",
        "s3://host:9000/x",
        "s3://user:secret@bucket/x",
        "s3://bucket/a/../b",
        "s3://" + "b" * 64,
        "http://example.org/data",
        "https://bucket.s3.amazonaws.com/x",
        "ftp://",
        "gs://bucket/x",
        "file://somehost/data",
        "file:relative/path",
        "file:///tmp/x?y=1",
    ],
)
def test_malformed_locations_are_usage_errors(isolated_env: Path, uri: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        open_store(uri, settings())
    message = message_of(excinfo, "s3://BUCKET")
    assert excinfo.value.exit_code == 2
    assert "secret" not in message
    if uri and "secret" not in uri:
        assert repr(uri) in message


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://script.chargepoint.data/clean", "script.chargepoint.data", "clean/"),
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("S3://my-bucket/a/b/", "my-bucket", "a/b/"),
    ],
)
def test_s3_locations(isolated_env: Path, uri: str, bucket: str, prefix: str) -> None:
    store = open_store(uri, settings())
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.uri) == (bucket, prefix, uri)


def test_local_locations(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cases = {
        "relative/dir": tmp_path / "relative" / "dir",
        str(tmp_path / "abs"): tmp_path / "abs",
        f"file://{tmp_path}/with%20space": tmp_path / "with space",
        f"file://localhost{tmp_path}/x": tmp_path / "x",
        "~/data": tmp_path / "home" / "data",
        "C:/not-a-scheme": tmp_path / "C:" / "not-a-scheme",
    }
    for uri, root in cases.items():
        store = open_store(uri, settings())
        assert isinstance(store, LocalStore)
        assert (store.root, store.uri) == (root, uri)


# --- local specifics ------------------------------------------------------------------------------


def test_local_list_skips_temp_files_and_folders(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "a" / ".b.csv.1a2b3c4d.part").write_bytes(b"half")
    (root / "a" / "b.csv").write_bytes(b"whole")
    (root / ".hidden.csv").write_bytes(b"kept")
    store = open_store(str(root), settings())
    assert [info.key for info in store.list()] == [".hidden.csv", "a/b.csv"]
    info = store.head("a/b.csv")
    st = (root / "a" / "b.csv").stat()
    assert info.etag == f"{st.st_mtime_ns:x}-{st.st_size:x}"
    with pytest.raises(KeyNotFound):
        store.head("empty")


def test_local_delete_prunes_emptied_folders(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(str(root), settings())
    store.put_bytes("a/b/c.csv", b"x")
    store.put_bytes("a/d.csv", b"y")
    store.delete("a/b/c.csv")
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["a", "a/d.csv"]
    store.delete("a/d.csv")
    assert root.is_dir() and list(root.iterdir()) == []


def test_local_write_keeps_the_usual_file_mode(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"), settings())
    store.put_bytes("a.csv", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "store" / "a.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_importing_the_store_package_does_not_import_boto3() -> None:
    code = "import sys, script_ec2.store; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.s3
def test_s3_list_follows_every_continuation_page(s3_bucket: S3Bucket) -> None:
    store = S3Store(s3_bucket.uri, settings(), page_size=7)
    keys = [f"k/{i:03d}" for i in range(30)]
    for key in keys:
        s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=f"prefix/{key}", Body=b"x")
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key="outside-the-prefix", Body=b"x")
    s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key="prefix/folder-marker/", Body=b"")
    calls: list[str] = []
    store._client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda **kwargs: calls.append("page")
    )
    assert [info.key for info in store.list()] == keys
    assert len(calls) == 5  # 31 keys under the prefix, 7 a page
