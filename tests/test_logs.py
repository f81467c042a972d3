"""Log output: ``--log-format json`` is one JSON object per line on stderr, the text format is
concise, and neither (nor stdout) ever shows a secret or a data row.

The test plants a password in the database and broker URLs and a session ID in the private data
(in a row that is ingested and in the row that gets its file quarantined), runs real sync passes
and doctor runs in both formats, and searches everything they print for the planted values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import Result, free_port
from tests.sync_helpers import make_demo_data, set_cell

Cli = Callable[..., Result]
PLANTED_PASSWORD = "Pl4nted-Pw-5c2e"
# Digits, so that it is a valid Session ID and the good row carrying it is ingested.
PLANTED_SESSION = "914725836041"
JSON_KEYS = {"time", "level", "command", "run_id", "event"}
TEXT_LINE_MAX = 200


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two zips of synthetic data; the planted session ID is in a good file and in a bad row."""
    demo = make_demo_data(tmp_path_factory.mktemp("demo"))
    good_sessions, good_intervals = demo.zip_files(0)
    bad_sessions, bad_intervals = demo.zip_files(1)
    good = set_cell(demo.read(good_sessions), 2, "Session ID", PLANTED_SESSION)
    bad = set_cell(demo.read(bad_sessions), 3, "Session ID", PLANTED_SESSION)
    bad = set_cell(bad, 3, "Max Power", "fast")
    assert PLANTED_SESSION.encode() in good and PLANTED_SESSION.encode() in bad
    return {
        good_sessions: good,
        good_intervals: demo.read(good_intervals),
        bad_sessions: bad,
        bad_intervals: demo.read(bad_intervals),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL; on PostgreSQL it carries the planted password (trust auth ignores it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'script-ec2.db'}"
        return
    url: str = request.getfixturevalue("pg_url")
    yield make_url(url).set(password=PLANTED_PASSWORD).render_as_string(hide_password=False)


def assert_no_secret(*results: Result) -> None:
    for result in results:
        for stream in (result.stdout, result.stderr):
            assert PLANTED_PASSWORD not in stream
            assert PLANTED_SESSION not in stream


def json_lines(stderr: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stderr.splitlines()]
    for line in lines:
        assert isinstance(line, dict) and set(line) >= JSON_KEYS, line
        datetime.fromisoformat(str(line["time"]))
    return lines


def assert_concise_text(stderr: str) -> None:
    for line in stderr.splitlines():
        assert not line.startswith("{"), line
        assert len(line) <= TEXT_LINE_MAX, line


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_sync_logs_hold_no_password_and_no_data(
    cli: Cli, tmp_path: Path, data_files: dict[str, bytes], database_url: str, log_format: str
) -> None:
    source = tmp_path / "private"
    source.mkdir()
    for name, data in data_files.items():
        (source / name).write_bytes(data)
    common = (
        f"--database-url={database_url}",
        f"--broker-url=amqp://guest:{PLANTED_PASSWORD}@127.0.0.1:5672//",
        f"--data-uri={source}",
        f"--cache-dir={tmp_path / 'cache'}",
        f"--log-format={log_format}",
    )
    upgrade = cli(*common, "db", "upgrade")
    first = cli(*common, "sync")
    second = cli(*common, "sync", "--format", "json")
    assert upgrade.exit_code == 0, upgrade.stderr
    assert first.exit_code == 3 and second.exit_code == 3, first.stderr
    assert_no_secret(upgrade, first, second)

    # The planted row was read: the quarantine names its row and column, never its content.
    reason = "column 'Max Power' row 3: the value is not a number"
    summary = json.loads(second.stdout)
    assert summary["still_quarantined"] == 1 and summary["rows_ingested"] == 0
    assert reason in first.stdout
    if log_format == "text":
        assert_concise_text(first.stderr + second.stderr)
        assert f"reason={reason}" in first.stderr
        return
    events = json_lines(first.stderr)
    assert {e["command"] for e in events} == {"sync"}
    assert len({e["run_id"] for e in events}) == 1
    quarantined = [e for e in events if e["event"] == "object quarantined"]
    assert [e["reason"] for e in quarantined] == [reason]
    assert quarantined[0]["level"] == "warning"
    (finished,) = [e for e in events if e["event"] == "sync finished"]
    assert finished["new"] == 4 and finished["quarantined"] == 1
    assert isinstance(finished["rows_ingested"], int) and finished["rows_ingested"] > 0
    assert isinstance(finished["seconds"], float)


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize("output_format", ["json", "table"])
def test_doctor_and_errors_hold_no_password(
    cli: Cli, tmp_path: Path, log_format: str, output_format: str
) -> None:
    common = (
        f"--database-url=postgresql://script:{PLANTED_PASSWORD}@127.0.0.1:{free_port()}/script",
        f"--broker-url=amqp://guest:{PLANTED_PASSWORD}@127.0.0.1:{free_port()}//",
        f"--log-format={log_format}",
    )
    doctor = cli(*common, "doctor", "--format", output_format)
    failed = cli(*common, "sync")
    assert doctor.exit_code == 1 and failed.exit_code == 1
    assert "postgresql://script:***@127.0.0.1" in doctor.stdout
    assert "amqp://guest:***@127.0.0.1" in doctor.stdout
    assert failed.stderr.splitlines()[-1].startswith(
        "Error: cannot connect to database postgresql://script:***@127.0.0.1"
    )
    assert_no_secret(doctor, failed)
    if log_format == "json":
        (finished,) = json_lines(doctor.stderr)
        assert finished["event"] == "doctor finished" and finished["command"] == "doctor"
    else:
        assert_concise_text(doctor.stderr)
