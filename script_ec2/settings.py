"""Settings, resolved once: flag > ``SCRIPT_EC2_*`` environment > TOML config file > default.

The result is one frozen :class:`Settings` that also remembers where each value came from, so
``config show`` can tell an operator why a value is what it is. Secrets in URLs are masked by
:func:`mask_url` whenever a setting is shown or logged.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from script_ec2.errors import ConfigError

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Spec:
    """One setting: its key (also the config-file key), type, environment variable and default."""

    key: str
    kind: str  # "str", "path", "bool", "int", "choice"
    help: str
    default: Callable[[Path], Any]
    choices: tuple[str, ...] = ()
    secret_url: bool = False
    secret: bool = False  # hidden whole when shown (e.g. a webhook URL with a token in its path)

    @property
    def env(self) -> str:
        return "SCRIPT_EC2_" + self.key.upper()


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "script-ec2"


SPECS: tuple[Spec, ...] = (
    Spec("data_dir", "path", "Home of every embedded default below.", lambda d: d),
    Spec(
        "database_url",
        "str",
        "SQLAlchemy URL of the database (SQLite file or postgresql://).",
        lambda d: f"sqlite:///{d / 'script-ec2.db'}",
        secret_url=True,
    ),
    Spec(
        "data_uri",
        "str",
        "Private cleaned-data location: s3://bucket/prefix or a local folder.",
        lambda d: str(d / "buckets" / "private"),
    ),
    Spec(
        "public_uri",
        "str",
        "Public model location: s3://bucket/prefix or a local folder.",
        lambda d: str(d / "buckets" / "public"),
    ),
    Spec(
        "cache_dir", "path", "Local cache of downloaded and ingested data.", lambda d: d / "cache"
    ),
    Spec(
        "models_dir",
        "str",
        "Model registry: a folder or an s3:// prefix.",
        lambda d: str(d / "models"),
    ),
    Spec(
        "broker_url",
        "str",
        "Celery broker URL (empty: run jobs in-process).",
        lambda d: "",
        secret_url=True,
    ),
    Spec(
        "s3_endpoint_url",
        "str",
        "S3 endpoint override (MinIO, LocalStack); else AWS_ENDPOINT_URL.",
        lambda d: "",
    ),
    Spec("aws_region", "str", "AWS region for S3 (empty: the standard AWS chain).", lambda d: ""),
    Spec(
        "s3_max_attempts",
        "int",
        "Attempts per S3 call, botocore retry mode 'standard'.",
        lambda d: 5,
    ),
    Spec(
        "broker_queue", "str", "Queue that jobs go to and workers consume.", lambda d: "script-ec2"
    ),
    Spec(
        "notify_webhook_url",
        "str",
        "Webhook POSTed (JSON) when a job ends; empty: none.",
        lambda d: "",
        secret=True,
    ),
    Spec(
        "notify_email_to", "str", "Comma-separated addresses mailed when a job ends.", lambda d: ""
    ),
    Spec(
        "notify_email_from",
        "str",
        "Sender of job e-mails (empty: script-ec2@<host>).",
        lambda d: "",
    ),
    Spec(
        "smtp_url",
        "str",
        "SMTP server: smtp://, smtp+starttls:// or smtps://[user:pw@]host[:port].",
        lambda d: "smtp://127.0.0.1:25",
        secret_url=True,
    ),
    Spec("notify_attempts", "int", "Attempts per notification, with backoff.", lambda d: 5),
    Spec("notify_backoff", "str", "First retry delay of a notification; doubles.", lambda d: "2s"),
    Spec(
        "model_licence",
        "str",
        "Licence line written into every model card.",
        lambda d: "CC-BY-4.0; data-derived parameters, no session data",
    ),
    Spec("quiet", "bool", "No progress bars or informational log lines.", lambda d: False),
    Spec(
        "log_format", "choice", "Log lines on stderr: text or json.", lambda d: "text", LOG_FORMATS
    ),
)
SPEC_BY_KEY = {s.key: s for s in SPECS}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    data_uri: str
    public_uri: str
    cache_dir: Path
    models_dir: str
    broker_url: str
    s3_endpoint_url: str
    aws_region: str
    s3_max_attempts: int
    broker_queue: str
    notify_webhook_url: str
    notify_email_to: str
    notify_email_from: str
    smtp_url: str
    notify_attempts: int
    notify_backoff: str
    model_licence: str
    quiet: bool
    log_format: str
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def shown(self) -> list[dict[str, str]]:
        """Rows of (key, value, source, env) with secrets masked, for display."""
        rows = []
        for spec in SPECS:
            value = getattr(self, spec.key)
            text = "" if value is None else str(value)
            if spec.secret_url:
                text = mask_url(text)
            if spec.secret and text:
                text = "*** (set, hidden)"
            rows.append(
                {
                    "key": spec.key,
                    "value": text,
                    "source": self.sources.get(spec.key, "default"),
                    "env": spec.env,
                }
            )
        return rows


_URL_PASSWORD = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)",
    re.ASCII,  # only ASCII whitespace ends a URL: any other character may be in a password
)


def mask_url(text: str) -> str:
    """Replace any password inside ``scheme://user:password@host`` with ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


def _convert(spec: Spec, raw: Any, where: str) -> Any:
    """Turn a raw TOML value or environment string into the spec's type, or fail naming it."""
    from_text = isinstance(raw, str)
    if spec.kind in ("str", "choice", "path"):
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: '{spec.key}' must be a string, got {type(raw).__name__}")
        if spec.kind == "choice" and raw not in spec.choices:
            raise ConfigError(
                f"{where}: '{spec.key}' must be one of {', '.join(spec.choices)}, got {raw!r}"
            )
        return Path(raw).expanduser() if spec.kind == "path" else raw
    if spec.kind == "bool":
        if isinstance(raw, bool):
            return raw
        if from_text and raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if from_text and raw.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: '{spec.key}' must be a boolean (true/false), got {raw!r}")
    if spec.kind == "int":
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: '{spec.key}' must be an integer, got {raw!r}")
        if isinstance(raw, int):
            value = raw
        elif from_text and re.fullmatch(r"\s*-?\d+\s*", raw):
            value = int(raw)
        else:
            raise ConfigError(f"{where}: '{spec.key}' must be an integer, got {raw!r}")
        if value < 1:
            raise ConfigError(f"{where}: '{spec.key}' must be at least 1, got {value}")
        return value
    raise AssertionError(spec.kind)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a flat TOML config file; unknown keys are errors that name the key."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    for key in data:
        if key not in SPEC_BY_KEY:
            known = ", ".join(sorted(SPEC_BY_KEY))
            raise ConfigError(f"config file {path}: unknown key '{key}' (known keys: {known})")
    return data


def resolve(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve every setting by precedence: flag > environment > config file > default.

    ``flags`` holds only the options given on the command line (``None`` means not given). The
    config file is ``config_file`` if given, else ``SCRIPT_EC2_CONFIG`` from the environment.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env = os.environ if env is None else env
    unknown_flags = set(flags) - set(SPEC_BY_KEY)
    if unknown_flags:
        raise AssertionError(f"unknown setting flags: {unknown_flags}")
    if config_file is None and env.get("SCRIPT_EC2_CONFIG"):
        config_file = Path(env["SCRIPT_EC2_CONFIG"]).expanduser()
    file_values = read_config_file(config_file) if config_file else {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    data_dir_default = _default_data_dir()
    for spec in SPECS:
        if spec.key in flags:
            raw, where, source = flags[spec.key], f"option --{spec.key.replace('_', '-')}", "flag"
            if spec.kind == "path" and isinstance(raw, Path):
                raw = str(raw)
        elif env.get(spec.env, "") != "":
            raw, where, source = env[spec.env], f"environment {spec.env}", f"env {spec.env}"
        elif spec.key in file_values:
            raw, where, source = (
                file_values[spec.key],
                f"config file {config_file}",
                f"config {config_file}",
            )
        else:
            base = values.get("data_dir", data_dir_default)
            values[spec.key] = spec.default(base)
            sources[spec.key] = "default"
            continue
        values[spec.key] = _convert(spec, raw, where)
        sources[spec.key] = source
    return Settings(**values, config_file=config_file, sources=sources)
