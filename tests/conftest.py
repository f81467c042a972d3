"""Shared test plumbing: the service policy and the CLI runner.

Tests that need PostgreSQL, the moto S3 server or RabbitMQ skip with a reason when the service is
absent, unless ``SCRIPT_EC2_REQUIRE_SERVICES=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = [
    "tests.fixtures_s3",
    "tests.fixtures_db",
    "tests.fixtures_broker",
    "tests.sync_helpers",
]

REQUIRE_SERVICES = os.environ.get("SCRIPT_EC2_REQUIRE_SERVICES") == "1"

# Property tests explore new random examples on every local run; CI (HYPOTHESIS_PROFILE=ci, set
# by .ci/run) runs a fixed set, so a landing never fails on an example nobody has seen. Failures
# found locally are kept as @example cases.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def service_missing(name: str, reason: str) -> None:
    """Skip (or, with SCRIPT_EC2_REQUIRE_SERVICES=1, fail) because a service is unavailable."""
    message = f"{name} unavailable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (SCRIPT_EC2_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no SCRIPT_EC2_* or AWS variables leak in; data dir under tmp_path."""
    for key in list(os.environ):
        if key.startswith(("SCRIPT_EC2_", "AWS_")) and key != "SCRIPT_EC2_REQUIRE_SERVICES":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("SCRIPT_EC2_DATA_DIR", str(home))
    # Never let boto3 look for real credentials or instance metadata.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return home


@pytest.fixture
def cli(isolated_env: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Result]]:
    """Run ``script-ec2 ARGS`` in-process through the real entry point and capture its output."""
    from script_ec2.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    yield run
    # The root callback attached a handler to this test's captured stderr; detach it.
    import logging

    logging.getLogger("script_ec2").handlers.clear()
