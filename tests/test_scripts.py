"""The operator scripts: the crontab line and the systemd units run a command the CLI accepts."""

from __future__ import annotations

import configparser
import re
import shlex
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


@pytest.mark.parametrize("name", ["script-ec2-sync.service", "script-ec2-sync.timer"])
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
