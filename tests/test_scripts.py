"""The operator scripts: the crontab line and the systemd units run a command the CLI accepts, and
the EC2 bootstrap script is valid bash that writes a config file the settings accept."""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _cli_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0].endswith("/script-ec2"), command
    return words[1:]


def test_sync_service_runs_quiet_json_sync(cli) -> None:  # type: ignore[no-untyped-def]
    unit = _unit(SCRIPTS / "systemd" / "script-ec2-sync.service")
    assert unit["Service"]["Type"] == "oneshot"
    args = _cli_args(unit["Service"]["ExecStart"])
    assert args == ["sync", "--quiet", "--log-format", "json"]
    assert set(unit["Service"]["SuccessExitStatus"].split()) == {"3", "75"}
    assert cli(*args, "--help").exit_code == 0


def test_sync_timer_fires_every_30_minutes() -> None:
    timer = _unit(SCRIPTS / "systemd" / "script-ec2-sync.timer")
    assert timer["Timer"]["OnCalendar"] == "*:0/30"
    assert timer["Timer"]["Unit"] == "script-ec2-sync.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_crontab_line_runs_every_30_minutes(cli) -> None:  # type: ignore[no-untyped-def]
    lines = [
        line
        for line in (SCRIPTS / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_0-9]+=", line)
    ]
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert fields[:5] == ["*/30", "*", "*", "*", "*"]
    command = fields[5].split(">>")[0]
    args = _cli_args(command)
    assert args == ["sync", "--quiet", "--log-format", "json"]
    assert cli(*args, "--help").exit_code == 0


@pytest.mark.parametrize(
    "name", ["script-ec2-sync.service", "script-ec2-sync.timer", "script-ec2-worker.service"]
)
def test_units_verify_with_systemd_analyze_when_available(name: str, tmp_path: Path) -> None:
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units are checked by parsing above")
    # verify needs the ExecStart binary to exist: point the copies at a stand-in executable.
    fake = tmp_path / "script-ec2"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for unit in SCRIPTS.glob("systemd/*"):
        text = unit.read_text().replace("/opt/script-ec2/.venv/bin/script-ec2", str(fake))
        text = re.sub(r"^(User|Group)=.*$", "", text, flags=re.M)
        (tmp_path / unit.name).write_text(text)
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if name in line and "Failed to" not in line and "bus" not in line.lower()
    ]
    assert out.returncode == 0 or not problems, out.stdout + out.stderr


def test_worker_service_runs_the_worker_and_restarts_on_failure(cli) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures_broker import ensure_job_commands

    unit = _unit(SCRIPTS / "systemd" / "script-ec2-worker.service")
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["User"] == service["Group"] == "script-ec2"
    assert service["Environment"] == "SCRIPT_EC2_CONFIG=/etc/script-ec2/config.toml"
    args = _cli_args(service["ExecStart"])
    assert args == ["worker", "--log-format", "json"]
    # Warm shutdown: SIGTERM to the main process only, time for running jobs to finish.
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "15min"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    ensure_job_commands()  # registers `worker` if script_ec2.cli does not yet
    assert cli(*args, "--help").exit_code == 0


# -- the EC2 bootstrap script ---------------------------------------------------------------------

USER_DATA = SCRIPTS / "ec2-user-data.sh"


def _bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Source the bootstrap script (its main does not run when sourced), then run ``script``."""
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{USER_DATA}"; {script}'],
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _bootstrap_env(tmp_path: Path) -> dict[str, str]:
    return {
        "BOOTSTRAP_SOURCE": "https://git.example.invalid/script-ec2.git",
        "SCRIPT_EC2_DATA_URI": "s3://private-bucket/clean/Reduced",
        "SCRIPT_EC2_PUBLIC_URI": 's3://public-bucket/models "quoted" back\\slash',
        "SCRIPT_EC2_DATABASE_URL": "postgresql://script@db.internal:5432/script",
        "SCRIPT_EC2_AWS_REGION": "us-west-1",
        "CONFIG_FILE": str(tmp_path / "etc" / "config.toml"),
        "SERVICE_USER": "no-such-user-script-ec2-test",
        "SERVICE_HOME": str(tmp_path / "home"),
    }


def test_user_data_is_valid_bash() -> None:
    out = subprocess.run(["bash", "-n", str(USER_DATA)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert USER_DATA.read_text().startswith("#!/bin/bash\n")


def test_user_data_passes_shellcheck_when_available() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed; bash -n above checks the syntax")
    out = subprocess.run([shellcheck, str(USER_DATA)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_user_data_writes_a_config_the_settings_accept(tmp_path: Path) -> None:
    from script_ec2.settings import read_config_file, resolve

    env = _bootstrap_env(tmp_path)
    out = _bash('BROKER_URL="amqp://script:pw@mq.internal:5672//"; write_config', env, tmp_path)
    assert out.returncode == 0, out.stderr
    config = Path(env["CONFIG_FILE"])
    values = read_config_file(config)
    assert values == {
        "database_url": env["SCRIPT_EC2_DATABASE_URL"],
        "data_uri": env["SCRIPT_EC2_DATA_URI"],
        "public_uri": env["SCRIPT_EC2_PUBLIC_URI"],
        "models_dir": "/var/lib/script-ec2/models",
        "aws_region": "us-west-1",
        "broker_url": "amqp://script:pw@mq.internal:5672//",
        "log_format": "json",
    }
    assert resolve(env={}, config_file=config).public_uri == env["SCRIPT_EC2_PUBLIC_URI"]
    # The broker URL holds a password: the file is not world-readable.
    assert config.stat().st_mode & 0o777 == 0o640

    # A second run keeps the file an operator may have edited since.
    config.write_text('data_uri = "/edited"\n')
    again = _bash("write_config", {**env, "SCRIPT_EC2_DATA_URI": "/other"}, tmp_path)
    assert again.returncode == 0 and "keeping the existing" in again.stderr
    assert config.read_text() == 'data_uri = "/edited"\n'


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BOOTSTRAP_SOURCE": ""}, "set BOOTSTRAP_SOURCE in the settings block"),
        (
            {"SCRIPT_EC2_DATA_URI": "", "SCRIPT_EC2_DATABASE_URL": ""},
            "set SCRIPT_EC2_DATA_URI SCRIPT_EC2_DATABASE_URL in the settings block",
        ),
        (
            {"SCRIPT_EC2_DATABASE_URL": "postgresql://script:hunter2@db:5432/script"},
            "must not hold a password; use BOOTSTRAP_PGPASS_PARAMETER",
        ),
    ],
)
def test_user_data_refuses_missing_settings_and_passwords(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    out = _bash("require_settings", {**_bootstrap_env(tmp_path), **change}, tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert "hunter2" not in out.stderr


def test_user_data_writes_pgpass_from_the_parameter_store(tmp_path: Path) -> None:
    # A stand-in for the aws CLI (the real one would call AWS): prints the SecureString value.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aws"
    fake.write_text(
        '#!/bin/sh\n[ "$1 $2" = "ssm get-parameter" ] || exit 9\necho \'pa:ss\\word\'\n'
    )
    fake.chmod(0o755)
    (tmp_path / "home").mkdir()
    env = {
        **_bootstrap_env(tmp_path),
        "BOOTSTRAP_PGPASS_PARAMETER": "/script-ec2/db-password",
        "SERVICE_USER": pwd.getpwuid(os.getuid()).pw_name,
        "VENV": sys.prefix,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    out = _bash("write_pgpass", env, tmp_path)
    assert out.returncode == 0, out.stderr
    pgpass = tmp_path / "home" / ".pgpass"
    assert pgpass.read_text() == "db.internal:5432:script:script:pa\\:ss\\\\word\n"
    assert pgpass.stat().st_mode & 0o777 == 0o600


def test_user_data_installs_every_unit_at_the_paths_they_expect(tmp_path: Path) -> None:
    out = _bash(
        'echo "${UNITS_SYNC[@]} ${UNITS_WORKER[@]}"; echo "$VENV/bin/script-ec2"; '
        'echo "$CONFIG_FILE"',
        {},
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    units, binary, config = out.stdout.splitlines()
    assert sorted(units.split()) == sorted(p.name for p in (SCRIPTS / "systemd").iterdir())
    for path in (SCRIPTS / "systemd").glob("*.service"):
        service = _unit(path)["Service"]
        assert shlex.split(service["ExecStart"])[0] == binary
        assert service["Environment"] == f"SCRIPT_EC2_CONFIG={config}"
        assert service["User"] == "script-ec2"


def test_user_data_installs_the_same_extras_as_the_image() -> None:
    from tests.test_container import extras_of, pip_install_target

    text = USER_DATA.read_text()
    installs = re.findall(r'pip" install [^\n]*"\$SRC(\[[^\]]*\])?"', text)
    assert len(installs) == 1, installs
    assert extras_of("." + installs[0]) == extras_of(pip_install_target())
