"""What an object key in the private bucket says: its kind and its station zip.

Standard library only, so that a sync pass with nothing to fetch never imports pandas or pyarrow.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["sessions", "intervals"]

# The partial aggregates ingest writes beside each object's rows (``<stem>.agg.<part>.parquet``);
# a test keeps these equal to script_ec2.ingest's SESSION_AGGREGATES and INTERVAL_AGGREGATES.
CACHE_PARTS: dict[Kind, tuple[str, ...]] = {
    "sessions": ("zip", "stations", "month", "segment"),
    "intervals": ("slots", "days"),
}


def aggregate_file_name(stem: str, part: str) -> str:
    """The cache file of one partial aggregate of an ingested object."""
    return f"{stem}.agg.{part}.parquet"


def cache_file_names(stem: str, kind: Kind) -> list[str]:
    """The cache files of one ingested object: its rows, then its partial aggregates."""
    return [f"{stem}.parquet", *(aggregate_file_name(stem, part) for part in CACHE_PARTS[kind])]


_KEY_RE = re.compile(
    r"(?:^|/)evsezip(\d{5})_(sessions|intervals)\.(?:csv|csv\.gz|parquet)$", re.IGNORECASE
)
_KEY_ZIP_RE = re.compile(r"evsezip(\d{5})(?!\d)", re.IGNORECASE)


def detect_kind(key: str) -> Kind | None:
    """``sessions`` / ``intervals`` for ``…/evsezip<ZIP>_<kind>.csv[.gz]|.parquet``, else None."""
    match = _KEY_RE.search(key)
    if match is None:
        return None
    return "sessions" if match.group(2).lower() == "sessions" else "intervals"


def zip_from_key(key: str) -> str | None:
    """The 5 digits after ``evsezip`` in the key's file name, or None."""
    match = _KEY_ZIP_RE.search(key.rsplit("/", 1)[-1])
    return match.group(1) if match else None
