"""The demo: synthetic data put where the private cleaned data would live, for trying the tool.

:func:`write_demo_data` generates with :mod:`script_ec2.synthetic` straight into a local folder,
or into a temporary folder that is then uploaded file by file to an ``s3://`` location.
:func:`run_demo` is the one-command tour behind ``script-ec2 demo run``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from script_ec2.errors import ScriptEc2Error, UsageError
from script_ec2.settings import Settings, mask_url
from script_ec2.store.interface import ObjectStore
from script_ec2.store.uri import LocalLocation, parse_uri
from script_ec2.synthetic import (
    DEFAULT_END_DATE,
    DEFAULT_START_DATE,
    DEFAULT_ZIPS_PER_COUNTY,
    GenerationSummary,
    generate,
)

DEMO_SESSIONS = 20_000
DEMO_SEED = 42

# progress(stage, done, total) with stage "generate" (sessions) or "upload" (files).
Progress = Callable[[str, int, int], None]
OpenStore = Callable[[str], ObjectStore]

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class DemoData:
    uri: str
    summary: GenerationSummary
    uploaded: bool  # True when the files were uploaded to an object store

    def report(self) -> dict[str, Any]:
        """A JSON-ready description: totals, every file, and per-county counts."""
        s = self.summary
        return {
            "uri": mask_url(self.uri),
            "sessions": s.sessions,
            "intervals": s.intervals,
            "seed": s.seed,
            "start_date": s.start_date.isoformat(),
            "end_date": s.end_date.isoformat(),
            "files": [
                {"name": f.name, "kind": f.kind, "zip": f.zip_code, "rows": f.rows, "bytes": f.size}
                for f in s.files
            ],
            "counties": s.county_rows(),
        }


@dataclass(frozen=True)
class DemoRun:
    data: DemoData


def parse_day(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` date, or a :class:`UsageError` naming ``option``."""
    try:
        if not _DAY.fullmatch(text.strip()):
            raise ValueError(text)
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{option} must be a date as YYYY-MM-DD, got {text!r}") from None


def write_demo_data(
    uri: str,
    open_store: OpenStore,
    *,
    sessions: int,
    seed: int,
    start_date: date = DEFAULT_START_DATE,
    end_date: date = DEFAULT_END_DATE,
    zips_per_county: int = DEFAULT_ZIPS_PER_COUNTY,
    work_dir: Path | None = None,
    progress: Progress | None = None,
) -> DemoData:
    """Generate synthetic data at ``uri``: a local folder directly, ``s3://`` through a temp folder.

    ``work_dir`` is where the temp folder goes for an S3 upload (the system default if None).
    """
    location = parse_uri(uri)

    def generated(done: int, total: int) -> None:
        if progress is not None:
            progress("generate", done, total)

    options: dict[str, Any] = {
        "sessions": sessions,
        "seed": seed,
        "start_date": start_date,
        "end_date": end_date,
        "zips_per_county": zips_per_county,
        "progress": generated,
    }
    if isinstance(location, LocalLocation):
        return DemoData(uri, generate(location.root, **options), uploaded=False)

    store = open_store(uri)
    if work_dir is not None:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ScriptEc2Error(
                f"cannot create work folder {work_dir}: {exc.strerror}; check cache_dir"
            ) from None
    with tempfile.TemporaryDirectory(prefix="script-ec2-demo-", dir=work_dir) as tmp:
        summary = generate(Path(tmp), **options)
        for i, f in enumerate(summary.files, start=1):
            store.upload(Path(tmp) / f.name, f.name)
            if progress is not None:
                progress("upload", i, len(summary.files))
    return DemoData(uri, summary, uploaded=True)


def run_demo(
    settings: Settings,
    open_store: OpenStore,
    *,
    sessions: int = DEMO_SESSIONS,
    seed: int = DEMO_SEED,
    progress: Progress | None = None,
) -> DemoRun:
    """The demo tour: synthetic data at the configured private data location."""
    data = write_demo_data(
        settings.data_uri,
        open_store,
        sessions=sessions,
        seed=seed,
        work_dir=settings.cache_dir,
        progress=progress,
    )
    return DemoRun(data=data)
