"""Durations as operators write them: ``90s``, ``30m``, ``2h``, ``7d``, or plain seconds."""

from __future__ import annotations

import re
from datetime import timedelta

from script_ec2.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_duration(text: str, option: str) -> timedelta:
    """Parse ``text`` or raise a usage error naming ``option``; ``1h30m`` works too."""
    cleaned = text.strip().lower()
    pos, seconds = 0, 0.0
    while pos < len(cleaned):
        match = _PATTERN.match(cleaned, pos)
        if not match or match.end() == pos:
            break
        seconds += float(match[1]) * _UNITS[match[2] or "s"]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise UsageError(f"{option} must be a duration like 90s, 30m, 2h or 7d, got {text!r}")
    return timedelta(seconds=seconds)
