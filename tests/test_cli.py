"""The CLI frame: fast start-up, version, exit codes and the one-line error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("pandas", "sklearn", "scipy", "boto3", "botocore", "sqlalchemy", "numpy", "pyarrow")


def _imported_after(args: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from script_ec2.cli import main\n"
        f"rc = main({args!r})\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))


@pytest.mark.parametrize(
    "args", [["--help"], ["db", "--help"], ["demo", "--help"], ["config", "--help"], ["--version"]]
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    assert _imported_after(args) == set()


def test_version_via_python_m() -> None:
    from script_ec2 import __version__

    out = subprocess.run(
        [sys.executable, "-m", "script_ec2", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"script-ec2 {__version__}"


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("script-ec2")
    assert exe.exists(), "pip install -e . should install the script-ec2 console script"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "sync private charging data" in out.stdout


def test_every_command_has_help(cli) -> None:  # type: ignore[no-untyped-def]
    import typer

    from script_ec2.cli import app

    def walk(cmd: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                found += walk(sub, [*path, name])
        return found

    root = typer.main.get_command(app)
    for path in walk(root, []):
        cmd: Any = root
        for name in path:
            cmd = cmd.commands[name]
        assert (cmd.help or "").strip(), f"command {' '.join(path) or '(root)'} has no help"


def test_unknown_command_is_usage_error(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("frobnicate")
    assert r.exit_code == 2
    assert "No such command" in r.stderr


def test_bad_log_format_flag_exits_2(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("--log-format", "xml", "config", "show")
    assert r.exit_code == 2
    assert (
        r.stderr.strip()
        == "Error: option --log-format: 'log_format' must be one of text, json, got 'xml'"
    )


def test_env_setting_error_names_variable(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SCRIPT_EC2_S3_MAX_ATTEMPTS", "many")
    r = cli("config", "show")
    assert r.exit_code == 2
    assert "SCRIPT_EC2_S3_MAX_ATTEMPTS" in r.stderr


def test_log_lines_mask_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    from script_ec2 import log

    log.configure("json", quiet=False, command="probe")
    log.event("connecting", url="postgresql://u:topsecret@h/db", rows=3)
    log.event("text postgresql://u:topsecret@h/db")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert lines[0]["event"] == "connecting" and lines[0]["rows"] == 3
    assert lines[0]["command"] == "probe" and lines[0]["run_id"]
    assert "topsecret" not in err
    log.configure("text", quiet=True)
    log.event("hidden when quiet")
    assert capsys.readouterr().err == ""


def test_logging_flags_after_the_command_are_global(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("config", "show", "--quiet", "--log-format", "json", "--format", "json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["quiet"] == {"value": "True", "source": "flag"}
    assert data["log_format"] == {"value": "json", "source": "flag"}
    r = cli("config", "show", "--log-format=json", "-f", "json")
    assert json.loads(r.stdout)["log_format"]["source"] == "flag"


def test_hoisting_leaves_other_arguments_in_order() -> None:
    from script_ec2.cli import hoist_global_flags

    argv = ["sync", "--format", "json", "--quiet", "--log-format", "json", "--", "--quiet"]
    assert hoist_global_flags(argv) == [
        "--quiet", "--log-format", "json", "sync", "--format", "json", "--", "--quiet"
    ]  # fmt: skip


def test_environment_failures_become_one_line_and_bugs_keep_their_traceback() -> None:
    import errno

    from script_ec2.errors import environment_failure

    full = OSError(errno.ENOSPC, "No space left on device", "/data/cache/x.parquet")
    assert environment_failure(full) == "No space left on device: /data/cache/x.parquet"
    assert environment_failure(OSError(errno.EACCES, "Permission denied")) == "Permission denied"
    assert environment_failure(OSError("no errno")) is None
    assert environment_failure(ValueError("a bug")) is None
    assert environment_failure(KeyError("a bug")) is None


def test_a_database_bug_keeps_its_traceback_and_an_outage_does_not() -> None:
    import sqlite3

    from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError

    from script_ec2.errors import environment_failure

    def wrapped(kind: type, message: str) -> BaseException:
        return kind("INSERT INTO t VALUES (?)", ("a-value",), sqlite3.Error(message))

    outage = environment_failure(wrapped(OperationalError, "disk I/O error\nsecond line"))
    assert outage is not None and outage.startswith("database failed: disk I/O error (")
    assert "second line" not in outage and "a-value" not in outage and "INSERT" not in outage
    assert environment_failure(wrapped(InterfaceError, "connection already closed")) is not None
    assert environment_failure(wrapped(IntegrityError, "UNIQUE constraint failed")) is None
    assert environment_failure(wrapped(ProgrammingError, "no such table: t")) is None
