"""S3 fixtures: one moto S3 server per test session on a free loopback port, a bucket per test.

The server speaks the real S3 protocol over HTTP, so the code under test runs through boto3 and
botocore exactly as against AWS. When moto cannot start, S3 tests skip (or fail under
SCRIPT_EC2_REQUIRE_SERVICES=1) through ``service_missing``.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, port_open, service_missing

MOTO_HOST = "127.0.0.1"
_START_TIMEOUT_S = 20


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    uri: str  # s3://BUCKET/prefix
    client: Any  # a boto3 S3 client bound to the moto endpoint


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running in this process for the whole session."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        service_missing("moto S3 server", f"moto[server] cannot be imported: {exc}")
    # One log line per request on stderr would drown pytest's output.
    werkzeug_log = logging.getLogger("werkzeug")
    old_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address=MOTO_HOST, port=port, verbose=False)
    # start() waits with no timeout for a server thread that never signals if binding fails,
    # so it runs in a helper thread we can give up on.
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(_START_TIMEOUT_S)
    if starter.is_alive() or not port_open(MOTO_HOST, port):
        werkzeug_log.setLevel(old_level)
        service_missing("moto S3 server", f"it did not start on {MOTO_HOST}:{port}")
    try:
        yield f"http://{MOTO_HOST}:{port}"
    finally:
        server.stop()
        werkzeug_log.setLevel(old_level)


@pytest.fixture(scope="session")
def moto_client(moto_server: str) -> Any:
    """A boto3 S3 client for test set-up and checks on the moto server (dummy credentials)."""
    import boto3

    # Explicit dummy credentials: a session fixture cannot lean on the per-test isolated_env.
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("s3", endpoint_url=moto_server)


@pytest.fixture
def s3_bucket(
    moto_server: str, moto_client: Any, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3Bucket]:
    """A fresh, uniquely named, empty bucket; SCRIPT_EC2_S3_ENDPOINT_URL points at moto."""
    bucket = f"script-ec2-test-{secrets.token_hex(6)}"
    moto_client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("SCRIPT_EC2_S3_ENDPOINT_URL", moto_server)
    yield S3Bucket(
        endpoint=moto_server, bucket=bucket, uri=f"s3://{bucket}/prefix", client=moto_client
    )
    _drop_bucket(moto_client, bucket)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_uri(request: pytest.FixtureRequest, isolated_env: Path, tmp_path: Path) -> str:
    """The location of a fresh, empty store: a new local folder, or a prefix in a new bucket."""
    if request.param == "local":
        root = tmp_path / "store"
        root.mkdir()
        return str(root)
    bucket: S3Bucket = request.getfixturevalue("s3_bucket")
    return bucket.uri


def _drop_bucket(client: Any, bucket: str) -> None:
    # moto keeps every bucket in memory for the whole session; tests leave nothing behind.
    keys = [
        {"Key": obj["Key"]}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = keys[start : start + 1000]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    client.delete_bucket(Bucket=bucket)
