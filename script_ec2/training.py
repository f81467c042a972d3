"""Training glue: find the cached data a model needs, train it, save it in the registry and
record the version in the database.

This is the only step that reads the private data; what it stores is model parameters and
aggregate metrics. The data fingerprint is a hash over the ledger entries (object keys and the
key-and-ETag-derived cache stems) that fed the model, never data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2.errors import ScriptEc2Error, UsageError

CONTROL_KIND = "workplace-control"

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from script_ec2.registry import ModelVersion, Registry, SaveResult


@dataclass(frozen=True)
class CachedObjects:
    paths: list[Path]
    entries: list[tuple[str, str]]  # (key, cache stem) pairs for the fingerprint
    counties: list[str] | None = None  # the requested counties as the cache spells them


def cached_objects(
    engine: Engine, source: str, cache_dir: Path, kind: str, counties: Sequence[str] | None = None
) -> CachedObjects:
    """The cached Parquet files of ``kind`` under ``source``, optionally only some counties.

    Counties match whatever their case or a trailing "County" (``santa clara county`` is
    ``Santa Clara``); one the cache does not hold is a :class:`UsageError` listing those it does.
    """
    from sqlalchemy import select

    from script_ec2.db.models import LedgerEntry
    from script_ec2.sync import CacheLayout

    layout = CacheLayout.for_source(cache_dir, source)
    with engine.connect() as conn:
        rows = conn.execute(
            select(LedgerEntry.key, LedgerEntry.cache_stem, LedgerEntry.counties)
            .where(
                LedgerEntry.source == source,
                LedgerEntry.kind == kind,
                LedgerEntry.cache_stem.is_not(None),
            )
            .order_by(LedgerEntry.key)
        ).all()
    if not rows:
        raise ScriptEc2Error(f"no cached {kind} data under {source}: run script-ec2 sync first")
    row_counties = [set(json.loads(r.counties)) for r in rows]
    wanted = None
    if counties:
        wanted = _cache_spelling(counties, set().union(*row_counties), kind, source)
    chosen = [r for r, c in zip(rows, row_counties, strict=True) if wanted is None or wanted & c]
    return CachedObjects(
        paths=[layout.objects / f"{r.cache_stem}.parquet" for r in chosen],
        entries=[(r.key, r.cache_stem) for r in chosen],
        counties=sorted(wanted) if wanted is not None else None,
    )


def _cache_spelling(requested: Sequence[str], known: set[str], kind: str, source: str) -> set[str]:
    from script_ec2.control import canonical_county

    by_key = {canonical_county(k).casefold(): k for k in known}
    missing = [c for c in requested if canonical_county(c).casefold() not in by_key]
    if missing:
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(
            f"--county: no cached {kind} data for {missing[0]!r} under {source}; "
            f"counties in the cache: {listed}"
        )
    return {by_key[canonical_county(c).casefold()] for c in requested}


def record_versions(
    engine: Engine, registry_uri: str, saved: Sequence[tuple[SaveResult, str, Mapping[str, Any]]]
) -> None:
    """Mirror saved versions (with fingerprint and metrics) into ``model_versions``; idempotent."""
    from sqlalchemy import insert, select, update

    from script_ec2.db.models import ModelRecord

    with engine.begin() as conn:
        for result, fingerprint, metrics in saved:
            v = result.version
            exists = conn.execute(
                select(ModelRecord.id, ModelRecord.version, ModelRecord.registry_uri).where(
                    ModelRecord.name == v.name, ModelRecord.content_hash == v.content_hash
                )
            ).first()
            if exists and (exists.version, exists.registry_uri) != (v.version, registry_uri):
                # The same content saved under another number (its old version was removed) or
                # in another registry: the row follows the copy that was saved last.
                conn.execute(
                    update(ModelRecord)
                    .where(ModelRecord.id == exists.id)
                    .values(
                        version=v.version,
                        registry_uri=registry_uri,
                        created_at=_parse_time(v.created_at),
                    )
                )
            if exists:
                continue
            conn.execute(
                insert(ModelRecord).values(
                    name=v.name,
                    version=v.version,
                    kind=v.kind,
                    content_hash=v.content_hash,
                    fingerprint=fingerprint,
                    registry_uri=registry_uri,
                    created_at=_parse_time(v.created_at),
                    metrics=json.dumps(metrics, sort_keys=True, default=str),
                )
            )


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.now(UTC)


@dataclass
class TrainOutcome:
    rows: list[dict[str, Any]]
    skipped: list[dict[str, Any]]


def train_forecast_models(
    engine: Engine,
    registry: Registry,
    *,
    source: str,
    cache_dir: Path,
    registry_uri: str,
    licence: str,
    segments: Sequence[str] | None,
    day_types: Sequence[str] | None,
    since: date | None,
    until: date | None,
    counties: Sequence[str] | None,
    max_components: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrainOutcome:
    """Train and save the session GMMs; return one summary row per model."""
    from script_ec2.forecast_train import (
        load_sessions,
        resolve_day_types,
        resolve_segments,
        save_models,
        train_load_forecast,
    )

    # Checked before any data is read, and named as the options that carry them.
    try:
        resolve_segments(segments)
    except UsageError as exc:
        raise UsageError(f"--segment: {exc}") from None
    try:
        resolve_day_types(day_types)
    except UsageError as exc:
        raise UsageError(f"--day-type: {exc}") from None
    objects = cached_objects(engine, source, cache_dir, "sessions", counties)
    sessions = load_sessions(objects.paths, since=since, until=until, counties=objects.counties)
    result = train_load_forecast(
        sessions,
        fingerprint_entries=objects.entries,
        segments=segments,
        day_types=day_types,
        since=since,
        until=until,
        counties=objects.counties,
        max_components=max_components,
        seed=seed,
        progress=progress,
    )
    saved = save_models(registry, result.models, licence=licence)
    record_versions(
        engine,
        registry_uri,
        [(res, m.fingerprint, m.metrics) for m, res in zip(result.models, saved, strict=True)],
    )
    rows = []
    for model, res in zip(result.models, saved, strict=True):
        rows.append(
            {
                "model": res.version.ref,
                "new": res.created,
                "segment": model.segment,
                "day_type": model.day_type,
                "sessions": model.record.get("training", {}).get("training sessions"),
                "components": model.metrics.get("components"),
                "heldout_loglik": model.metrics.get("heldout_mean_log_likelihood"),
                "ks_start": model.metrics.get("ks_start"),
                "ks_energy": model.metrics.get("ks_energy"),
            }
        )
    skipped = [
        {"model": s.name, "sessions": s.sessions, "reason": s.reason} for s in result.skipped
    ]
    return TrainOutcome(rows, skipped)


def train_control_model(
    engine: Engine,
    registry: Registry,
    *,
    source: str,
    cache_dir: Path,
    registry_uri: str,
    licence: str,
    county: str,
    rate_spec: str,
    runs: int,
    sessions_per_run: int,
    seed: int,
    jobs: int,
    progress: Callable[[int, int], None] | None = None,
) -> TrainOutcome:
    """Solve the LP runs for one county and rate, fit the regression, save the control model."""
    import numpy as np

    from script_ec2.control import canonical_county, load_workplace_data, train_control
    from script_ec2.forecast_train import data_fingerprint
    from script_ec2.rates import load_rate
    from script_ec2.registry import slug

    rate = load_rate(rate_spec)
    county = canonical_county(county)
    sessions_files = cached_objects(engine, source, cache_dir, "sessions", [county])
    county = (sessions_files.counties or [county])[0]
    interval_files = cached_objects(engine, source, cache_dir, "intervals", [county])
    sessions, intervals = load_workplace_data(sessions_files.paths, interval_files.paths, county)
    training = train_control(
        sessions,
        intervals,
        county=county,
        rate=rate,
        runs=runs,
        sessions_per_run=sessions_per_run,
        seed=seed,
        n_jobs=jobs,
        progress=progress,
    )
    arrays = training.arrays
    stored = {
        "coef": arrays["coef"],
        "intercept": arrays["intercept"],
        "alpha": np.asarray(arrays["alpha"], dtype=np.float64),
        # Means over all runs of 50 x 200-session aggregates: a typical day, for fit load-control.
        "reference_uncontrolled": arrays["uncontrolled"].mean(axis=0),
        "reference_controlled": arrays["controlled"].mean(axis=0),
    }
    entries = sessions_files.entries + interval_files.entries
    fingerprint = data_fingerprint(entries)
    name = f"control-{slug(county)}-{slug(rate.name)}"
    runs_solved = int(arrays["uncontrolled"].shape[0])
    record = {
        "title": f"Workplace load control: {county}, rate {rate.name}",
        "summary": (
            "A ridge regression from a max-normalised 96-step (15-minute) uncontrolled workplace "
            "charging profile to the profile that minimises the bill under the rate, learned from "
            f"{runs_solved} smart-charging LP solutions of {sessions_per_run} sampled workplace "
            f"sessions each in {county}. Use: controlled = m * model(x / m), m = max(x)."
        ),
        "scope": {"county": county, "rate": rate.name, "segment": "Workplace (Max Power <= 10 kW)"},
        "training": {
            "period": _period(sessions),
            "workplace sessions available": len(sessions),
            "LP runs solved": runs_solved,
            "sessions per run": sessions_per_run,
            "source files": len(entries),
        },
        "units": {
            "profiles": "kW per 15-minute step, 96 steps from local midnight",
            "coef": "96 x 96, on profiles divided by their maximum",
        },
        "intended_use": (
            "Scenario studies of workplace charging under the rate, through script-ec2 fit "
            "load-control and the controlled variant of fit load-forecast."
        ),
        "limitations": [
            "Learned from one county's workplace sessions; other segments are not controlled.",
            "Monthly demand charges are weighed against one day of energy cost, as upstream.",
            "The reference profiles are means of run aggregates, not any single day.",
        ],
    }
    from script_ec2.forecast_train import _libraries

    result = registry.save(
        CONTROL_KIND,
        name,
        parameters={**training.params, "county": county},
        metrics=training.metrics,
        fingerprint=fingerprint,
        arrays=stored,
        record=record,
        licence=licence,
        libraries=_libraries(),
    )
    record_versions(engine, registry_uri, [(result, fingerprint, training.metrics)])
    m = training.metrics
    row = {
        "model": result.version.ref,
        "new": result.created,
        "county": county,
        "rate": rate.name,
        "runs": runs_solved,
        "sessions_per_run": sessions_per_run,
        "r2": m.get("r2"),
        "peak_mape_pct": m.get("peak_mape_pct"),
        "energy_mape_pct": m.get("energy_mape_pct"),
        "clipped_sessions": m.get("clipped_sessions"),
    }
    return TrainOutcome([row], [])


def _period(sessions: Any) -> str:
    """First to last session date of the pool the runs were drawn from (an aggregate)."""
    starts = sessions["start_datetime"].dropna()
    if starts.empty:
        return "unknown"
    return f"{starts.min().date()} to {starts.max().date()}"


def model_rows(versions: Sequence[ModelVersion]) -> list[dict[str, Any]]:
    return [v.as_dict() for v in versions]
