"""Log lines on stderr: concise text for people, one JSON object per line for machines.

Every message and field passes through :func:`script_ec2.settings.mask_url`, so a password in a
database or broker URL never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from script_ec2.settings import mask_url

LOGGER_NAME = "script_ec2"
_state: dict[str, str] = {"command": "", "run_id": uuid.uuid4().hex[:12]}


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        message = mask_url(record.getMessage())
        if self.fmt == "json":
            obj = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "level": record.levelname.lower(),
                "command": _state["command"],
                "run_id": _state["run_id"],
                "event": message,
                **{k: _masked(v) for k, v in fields.items()},
            }
            return json.dumps(obj, default=str, sort_keys=False)
        extra = " ".join(f"{k}={_masked(v)}" for k, v in fields.items())
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"{prefix}{message}{(' ' + extra) if extra else ''}"


def _masked(value: Any) -> Any:
    return mask_url(value) if isinstance(value, str) else value


def configure(log_format: str = "text", quiet: bool = False, command: str = "") -> None:
    """Send the project's log records to stderr in the chosen format."""
    _state["command"] = command
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(log_format))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def run_id() -> str:
    return _state["run_id"]


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields (counts, durations, keys; never raw data rows)."""
    logging.getLogger(LOGGER_NAME).log(level, name, extra={"fields": fields})


class Timer:
    """Context manager measuring wall seconds: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
