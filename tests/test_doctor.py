"""``script-ec2 doctor``: a healthy setup passes every check (exit 0); each failure mode fails its
own check with a hint and exit 1, without hiding the other checks or printing a secret.

Faults that cannot be provoked for real here (S3 access denied to one operation) are injected at
the object-store boundary; everything else is real: SQLite, PostgreSQL, the moto S3 server,
RabbitMQ and a real ``script-ec2 worker`` process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from script_ec2 import doctor as doctor_core
from script_ec2.context import AppContext
from script_ec2.doctor import PROBE_PREFIX, session_model_names
from script_ec2.errors import AccessDenied
from script_ec2.forecast_train import KIND
from script_ec2.registry import Registry
from script_ec2.settings import resolve
from script_ec2.store.local import LocalStore
from script_ec2.training import CONTROL_KIND
from tests import fixtures_broker
from tests.conftest import Result, free_port
from tests.fixtures_broker import Workers
from tests.fixtures_s3 import S3Bucket

# The broker fixtures, until tests/conftest.py lists tests.fixtures_broker among its plugins.
rabbitmq_url = fixtures_broker.rabbitmq_url
broker_queue = fixtures_broker.broker_queue
workers = fixtures_broker.workers

Cli = Callable[..., Result]
ALL_CHECKS = [
    "settings",
    "database",
    "migrations",
    "private bucket list",
    "private bucket read",
    "public write",
    "broker",
    "workers",
    "session models",
    "control models",
]
PLANTED_PASSWORD = "Pl4nted-Secret-7e3d"


def save_model(models: Path, name: str, kind: str = KIND) -> Path:
    """Save a tiny, valid version of ``name``; return its version folder."""
    result = Registry(LocalStore(models)).save(
        kind,
        name,
        parameters={"test": True},
        metrics={},
        fingerprint="doctor-test",
        arrays={"weights": np.arange(4.0)},
        record={},
        licence="test",
    )
    return models / name / str(result.version.version)


def run_doctor(cli: Cli, *args: str) -> tuple[Result, dict[str, dict[str, str]]]:
    result = cli("doctor", "--format", "json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert [c["check"] for c in report["checks"]] == ALL_CHECKS
    assert report["ok"] is (result.exit_code == 0)
    return result, {c["check"]: c for c in report["checks"]}


def statuses(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def assert_only_failure(checks: dict[str, dict[str, str]], *names: str) -> None:
    """Exactly ``names`` failed, and each failure carries a hint."""
    failed = [name for name, check in checks.items() if check["status"] == "fail"]
    assert failed == list(names), checks
    for name in names:
        assert checks[name]["hint"], checks[name]


@pytest.fixture
def healthy(cli: Cli, isolated_env: Path) -> Path:
    """The embedded defaults made healthy: database at head, data, a public folder, models."""
    home = isolated_env
    assert cli("db", "upgrade").exit_code == 0
    private = home / "buckets" / "private"
    private.mkdir(parents=True)
    (private / "evsezip94011_sessions.csv").write_text("Session ID,Energy (kWh)\n1,2.5\n" * 20)
    (private / "county_ev_distribution.csv").write_text("County,EVs\nAlameda,10\n")
    (home / "buckets" / "public").mkdir()
    for name in session_model_names():
        save_model(home / "models", name)
    return home


# -- the healthy case and the report --------------------------------------------------------------


def test_healthy_setup_passes_and_exits_0(cli: Cli, healthy: Path) -> None:
    result, checks = run_doctor(cli)
    assert result.exit_code == 0, checks
    assert statuses(checks) == {
        **dict.fromkeys(ALL_CHECKS, "pass"),
        "broker": "skip",
        "workers": "skip",
        "control models": "skip",
    }
    assert checks["migrations"]["detail"].startswith("at head ")
    assert "2 objects" in checks["private bucket list"]["detail"]
    # The smallest object is the one read; its bytes are never shown.
    assert "county_ev_distribution.csv" in checks["private bucket read"]["detail"]
    assert "Alameda" not in result.stdout + result.stderr
    assert "12 of 12 present (every version verified)" in checks["session models"]["detail"]
    # The write probe is gone again.
    assert list((healthy / "buckets" / "public").iterdir()) == []


def test_table_format_names_every_check_and_the_verdict(cli: Cli, healthy: Path) -> None:
    result = cli("doctor")
    assert result.exit_code == 0
    assert "script-ec2 doctor: ok" in result.stdout
    for name in ALL_CHECKS:
        assert name in result.stdout


def test_unknown_format_is_a_usage_error(cli: Cli, healthy: Path) -> None:
    result = cli("doctor", "--format", "csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --format must be one of table, json")


def test_json_log_line_summarises_the_run(cli: Cli, healthy: Path) -> None:
    (healthy / "buckets" / "private" / "county_ev_distribution.csv").unlink()
    (healthy / "buckets" / "private" / "evsezip94011_sessions.csv").unlink()
    (healthy / "buckets" / "private").rmdir()
    result = cli("--log-format", "json", "doctor", "--quick")
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["event"] == "doctor finished"
    assert lines[-1]["level"] == "warning" and lines[-1]["command"] == "doctor"
    assert lines[-1]["failed"] == 1 and lines[-1]["failed_checks"] == "private bucket list"
    assert lines[-1]["quick"] is True and lines[-1]["seconds"] >= 0


# -- --quick --------------------------------------------------------------------------------------


def test_quick_skips_the_read_the_write_and_the_checksums(cli: Cli, healthy: Path) -> None:
    version = save_model(healthy / "models", "sessions-dc-fast-weekday")
    (version / "arrays.npz").write_bytes(b"not the saved arrays")

    result, checks = run_doctor(cli)
    assert result.exit_code == 1
    assert_only_failure(checks, "session models")
    assert "damaged: sessions-dc-fast-weekday@" in checks["session models"]["detail"]
    assert "checksum mismatch" in checks["session models"]["detail"]

    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 0, checks
    for name in ("private bucket read", "public write"):
        assert checks[name] == {**checks[name], "status": "skip", "detail": "skipped by --quick"}
    assert "not verified: --quick" in checks["session models"]["detail"]


def test_quick_still_notices_an_unreadable_model_json(cli: Cli, healthy: Path) -> None:
    version = save_model(healthy / "models", "sessions-workplace-weekend")
    (version / "model.json").write_text("{not json")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "session models")
    assert "sessions-workplace-weekend@" in checks["session models"]["detail"]


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SCRIPT_EC2_DATA_URI", "ftp://host/data", "unsupported scheme 'ftp'"),
        ("SCRIPT_EC2_PUBLIC_URI", "{private}/published", "public_uri and data_uri overlap"),
        ("SCRIPT_EC2_BROKER_URL", "http://broker.invalid", "must start with one of amqp://"),
        ("SCRIPT_EC2_BROKER_QUEUE", "bad queue!", "broker queue name 'bad queue!'"),
    ],
)
def test_bad_settings_fail_the_settings_check(
    cli: Cli,
    healthy: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    expected: str,
) -> None:
    if variable == "SCRIPT_EC2_BROKER_QUEUE":
        monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", "amqp://guest@127.0.0.1:5672//")
    monkeypatch.setenv(variable, value.format(private=healthy / "buckets" / "private"))
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert checks["settings"]["status"] == "fail"
    assert expected in checks["settings"]["detail"]
    assert checks["settings"]["hint"]


def test_unparseable_database_url_fails_settings_and_database(
    cli: Cli, healthy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", "not a database url")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "settings", "database")
    assert "cannot be parsed" in checks["settings"]["detail"]
    assert checks["migrations"]["status"] == "skip"


def test_bad_config_file_stops_before_any_check_with_exit_2(
    cli: Cli, healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('data_url = "s3://typo"\n')
    monkeypatch.setenv("SCRIPT_EC2_CONFIG", str(config))
    result = cli("doctor")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: config file {config}: unknown key 'data_url'")


# -- database -------------------------------------------------------------------------------------


def test_missing_sqlite_file_fails_and_is_not_created(cli: Cli, isolated_env: Path) -> None:
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    database = checks["database"]
    assert database["status"] == "fail"
    assert database["detail"] == f"SQLite file {isolated_env / 'script-ec2.db'} does not exist"
    assert "script-ec2 db upgrade" in database["hint"]
    assert checks["migrations"]["status"] == "skip"
    assert not (isolated_env / "script-ec2.db").exists()


def test_sqlite_file_without_schema_fails_migrations(
    cli: Cli, healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", f"sqlite:///{empty}")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "migrations")
    assert checks["migrations"]["detail"].startswith("schema at none, code expects ")
    assert "run script-ec2 db upgrade" in checks["migrations"]["hint"]


def test_unreachable_database_fails_with_the_password_masked(
    cli: Cli, healthy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://script:{PLANTED_PASSWORD}@127.0.0.1:{free_port()}/script"
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", url)
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "database")
    assert (
        "cannot connect to database postgresql://script:***@127.0.0.1"
        in (checks["database"]["detail"])
    )
    assert checks["migrations"]["status"] == "skip"
    assert PLANTED_PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgres
def test_postgresql_behind_head_fails_until_upgraded(
    cli: Cli, healthy: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_DATABASE_URL", pg_url)
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "migrations")
    assert checks["database"]["detail"].startswith("postgresql at postgresql")
    assert "run script-ec2 db upgrade" in checks["migrations"]["hint"]

    assert cli("db", "upgrade").exit_code == 0
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 0, checks


# -- private bucket -------------------------------------------------------------------------------


def test_missing_private_folder_fails_the_listing(
    cli: Cli, healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(tmp_path / "nowhere"))
    result, checks = run_doctor(cli)
    assert result.exit_code == 1
    assert_only_failure(checks, "private bucket list")
    assert "does not exist" in checks["private bucket list"]["detail"]
    assert checks["private bucket read"]["status"] == "skip"


def test_empty_private_location_passes_the_listing_and_skips_the_read(
    cli: Cli, healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", str(tmp_path / "empty"))
    result, checks = run_doctor(cli)
    assert result.exit_code == 0
    assert checks["private bucket list"]["detail"].startswith("0 objects in ")
    assert checks["private bucket read"]["status"] == "skip"
    assert "is empty" in checks["private bucket read"]["detail"]


class _Denying:
    """A store that refuses one operation with AccessDenied, as S3 does for a missing permission."""

    def __init__(self, inner: Any, operation: str) -> None:
        self._inner = inner
        self._operation = operation
        self.uri = inner.uri

    def __getattr__(self, name: str) -> Any:
        if name == self._operation:

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise AccessDenied(f"access denied to {name} in {self.uri}: AccessDenied")

            return refuse
        return getattr(self._inner, name)


def _context(**stores: Any) -> AppContext:
    ctx = AppContext(resolve())
    for name, (operation, store) in stores.items():
        setattr(ctx, name, _Denying(store, operation))
    return ctx


def test_denied_read_of_private_data_fails_with_a_permission_hint(healthy: Path) -> None:
    private = LocalStore(healthy / "buckets" / "private")
    listed, read = doctor_core.check_private(
        _context(data_store=("download", private)), quick=False
    )
    assert listed.ok is True
    assert read.ok is False and "access denied to download" in read.detail
    assert "s3:GetObject" in read.hint


@pytest.mark.parametrize(
    ("operation", "expected", "hint"),
    [
        ("put_bytes", "access denied to put_bytes", "s3:PutObject"),
        ("delete", "could not delete it: access denied to delete", "by hand"),
    ],
)
def test_denied_public_write_or_delete_fails_with_a_hint(
    healthy: Path, operation: str, expected: str, hint: str
) -> None:
    public = LocalStore(healthy / "buckets" / "public")
    ctx = _context(public_store=(operation, public))
    check = doctor_core.check_public_write(ctx, quick=False)
    assert check.ok is False
    assert expected in check.detail and hint in check.hint
    left = [p.name for p in public.root.iterdir()]
    assert left == ([] if operation == "put_bytes" else [check.detail.split()[1]])
    assert all(name.startswith(PROBE_PREFIX) for name in left)


def test_public_write_to_a_folder_not_yet_made_leaves_no_folder(
    cli: Cli, healthy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "not" / "yet" / "public"
    monkeypatch.setenv("SCRIPT_EC2_PUBLIC_URI", str(target))
    result, checks = run_doctor(cli)
    assert result.exit_code == 0, checks
    assert checks["public write"]["detail"].startswith(f"wrote and deleted {PROBE_PREFIX}")
    assert not (tmp_path / "not").exists()


@pytest.mark.s3
def test_s3_private_and_public_pass_and_leave_no_probe(
    cli: Cli, healthy: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_bucket.client.put_object(
        Bucket=s3_bucket.bucket, Key="prefix/data/evsezip94011_sessions.csv", Body=b"x" * 50
    )
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", f"s3://{s3_bucket.bucket}/prefix/data")
    monkeypatch.setenv("SCRIPT_EC2_PUBLIC_URI", f"s3://{s3_bucket.bucket}/prefix/public")
    result, checks = run_doctor(cli)
    assert result.exit_code == 0, checks
    assert checks["private bucket read"]["detail"] == "read evsezip94011_sessions.csv (50 bytes)"
    listing = s3_bucket.client.list_objects_v2(Bucket=s3_bucket.bucket)
    assert [o["Key"] for o in listing["Contents"]] == ["prefix/data/evsezip94011_sessions.csv"]


@pytest.mark.s3
def test_s3_missing_buckets_fail_list_write_and_models(
    cli: Cli, healthy: Path, s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"{s3_bucket.bucket}-missing"
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", f"s3://{missing}/data")
    monkeypatch.setenv("SCRIPT_EC2_PUBLIC_URI", f"s3://{missing}/public")
    monkeypatch.setenv("SCRIPT_EC2_MODELS_DIR", f"s3://{missing}/models")
    result, checks = run_doctor(cli)
    assert result.exit_code == 1
    assert_only_failure(checks, "private bucket list", "public write", "session models")
    for name in ("private bucket list", "public write", "session models"):
        assert f"bucket '{missing}' not found" in checks[name]["detail"]
    assert checks["control models"]["status"] == "skip"


@pytest.mark.s3
def test_unreachable_s3_endpoint_fails_with_an_endpoint_hint(
    cli: Cli, healthy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SCRIPT_EC2_S3_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("SCRIPT_EC2_DATA_URI", "s3://private-bucket/data")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "private bucket list")
    assert "cannot reach S3 endpoint" in checks["private bucket list"]["detail"]
    assert "s3_endpoint_url" in checks["private bucket list"]["hint"]


# -- broker and workers ---------------------------------------------------------------------------


def test_unreachable_broker_fails_and_skips_workers(
    cli: Cli, healthy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "broker")
    assert "Connection refused" in checks["broker"]["detail"]
    assert checks["workers"]["status"] == "skip"


@pytest.mark.rabbitmq
def test_refused_broker_login_fails_with_the_password_masked(
    cli: Cli, healthy: Path, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", f"amqp://guest:{PLANTED_PASSWORD}@127.0.0.1:5672//")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "broker")
    assert "ACCESS_REFUSED" in checks["broker"]["detail"]
    assert "amqp://guest:***@127.0.0.1:5672//" in checks["broker"]["detail"]
    assert PLANTED_PASSWORD not in result.stdout + result.stderr


def _consumers(url: str, queue: str) -> int:
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).consumer_count)


@pytest.mark.rabbitmq
def test_workers_pass_while_one_consumes_the_queue_and_fail_after(
    cli: Cli,
    healthy: Path,
    rabbitmq_url: str,
    broker_queue: str,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCRIPT_EC2_BROKER_URL", rabbitmq_url)
    monkeypatch.setenv("SCRIPT_EC2_BROKER_QUEUE", broker_queue)
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "workers")
    assert f"queue {broker_queue!r} does not exist" in checks["workers"]["detail"]
    assert "script-ec2 worker" in checks["workers"]["hint"]

    worker = workers.start()
    worker.wait_ready()
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 0, checks
    assert checks["broker"]["detail"] == "connected to amqp://guest:***@127.0.0.1:5672//"
    assert checks["workers"]["detail"] == f"1 consuming queue {broker_queue!r} (0 jobs waiting)"

    worker.stop()
    deadline = time.monotonic() + 15
    while _consumers(rabbitmq_url, broker_queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "workers")
    assert (
        checks["workers"]["detail"] == f"no worker consumes queue {broker_queue!r} (0 jobs waiting)"
    )


# -- models ---------------------------------------------------------------------------------------


def test_missing_session_models_fail_with_a_training_hint(cli: Cli, isolated_env: Path) -> None:
    assert cli("db", "upgrade").exit_code == 0
    save_model(isolated_env / "models", "sessions-dc-fast-weekday")
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    detail = checks["session models"]["detail"]
    assert detail.startswith("missing 11 of 12: sessions-residential-l1-weekday, ")
    assert "sessions-dc-fast-weekday" not in detail
    assert checks["session models"]["hint"] == "train them: script-ec2 train load-forecast"


def test_session_model_of_the_wrong_kind_fails(cli: Cli, healthy: Path) -> None:
    save_model(healthy / "models", "sessions-public-l2-weekend", kind=CONTROL_KIND)
    result, checks = run_doctor(cli, "--quick")
    assert result.exit_code == 1
    assert_only_failure(checks, "session models")
    assert "sessions-public-l2-weekend@2 is workplace-control" in checks["session models"]["detail"]


def test_control_models_are_optional_but_must_verify(cli: Cli, healthy: Path) -> None:
    version = save_model(healthy / "models", "control-santa-clara-e19", kind=CONTROL_KIND)
    result, checks = run_doctor(cli)
    assert result.exit_code == 0, checks
    assert checks["control models"]["detail"] == "1 present (verified): control-santa-clara-e19"

    (version / "README.md").write_text("edited by hand\n")
    result, checks = run_doctor(cli)
    assert result.exit_code == 1
    assert_only_failure(checks, "control models")
    assert "control-santa-clara-e19@1" in checks["control models"]["detail"]


# -- robustness -----------------------------------------------------------------------------------


def test_an_unexpected_error_fails_its_check_and_the_others_still_run(
    cli: Cli, healthy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: AppContext) -> list[Any]:
        raise RuntimeError(f"driver exploded at postgresql://u:{PLANTED_PASSWORD}@db/x")

    monkeypatch.setattr(doctor_core, "check_database", broken)
    result, checks = run_doctor(cli)
    assert result.exit_code == 1
    assert_only_failure(checks, "database")
    assert checks["database"]["detail"] == (
        "unexpected RuntimeError: driver exploded at postgresql://u:***@db/x"
    )
    assert checks["migrations"]["status"] == "skip"
    assert checks["session models"]["status"] == "pass"
    assert PLANTED_PASSWORD not in result.stdout + result.stderr
