"""Training of the load forecast's session models: one joint Gaussian mixture per segment and day.

For each forecast segment (:data:`script_ec2.segments.FORECAST_SEGMENTS`) and day type (weekday:
``start_weekday`` 0-4, Monday to Friday; weekend: 5-6) :func:`train_load_forecast` fits a
full-covariance Gaussian mixture over (start time of day in hours, energy in kWh) with
scikit-learn and turns it into the plain arrays of :mod:`script_ec2.gmm`; the sklearn object is
never stored. The model is named ``sessions-<segment slug>-<day type>``, e.g.
``sessions-dc-fast-weekend``.

Per model, in this order:

1. **Canonical order.** The segment's sessions are sorted by (start, energy), so the result depends
   on the set of sessions, not on file or row order.
2. **Subsample.** Above ``max_sessions_per_model`` a seeded uniform sample without replacement is
   kept, which bounds the training time; the counts before and after are recorded.
3. **Split.** A seeded permutation holds out 20 % for evaluation; the rest is the training set.
4. **Midnight.** Time of day is circular, so the axis is cut where the training starts are
   sparsest: each clock hour is scored by its starts (counted twice) plus those of its two
   neighbours, and the cut goes in the middle of the longest run of hours with the lowest score
   (on a tie, the run that starts first after the day's first busier hour). The cut is stored
   as ``shift_hours`` and the model is fitted on ``(hour - shift) mod 24``. See
   :mod:`script_ec2.gmm` for how sampling and likelihoods wrap back.
5. **Components.** Mixtures with 1 … ``max_components`` components (at most one per 20 training
   sessions) are fitted; the lowest BIC on the training set wins. The whole BIC curve is kept.
6. **Energy bounds.** From the cleaning floor (0.1 kWh) to the 99.9th percentile of the training
   energies: sampled sessions stay inside what was observed.
7. **Metrics.** Mean log-likelihood per session on the training and held-out sets (of the wrapped
   mixture, per hour·kWh), BIC, and the two-sample Kolmogorov-Smirnov distance between held-out
   sessions and as many model samples (at least 10 000), for start time on the shifted axis (so
   midnight is not an artificial jump) and for energy.

Every random choice comes from a per-model seed derived from (``seed``, model name), and BLAS and
OpenMP run single-threaded while fitting, so the same sessions, options and seed give
byte-identical arrays on every run, whichever models are trained together and in which order.
Models are fitted in parallel over ``workers`` threads (scikit-learn's numerical kernels release
the GIL).

The data fingerprint recorded with each model is a sha256 over the sorted (key, ETag) pairs of the
ledger entries that fed the training (:func:`data_fingerprint`), never over the data itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from script_ec2 import gmm
from script_ec2.errors import DataError, UsageError
from script_ec2.ingest import MIN_SESSION_ENERGY_KWH
from script_ec2.registry import Registry, SaveResult, slug
from script_ec2.segments import FORECAST_SEGMENTS

if TYPE_CHECKING:
    import pandas as pd

KIND = "sessions-gmm"
DAY_TYPES = ("weekday", "weekend")
DAY_TYPE_WEEKDAYS: dict[str, tuple[int, ...]] = {"weekday": (0, 1, 2, 3, 4), "weekend": (5, 6)}
TRAINING_COLUMNS = (
    "start_datetime",
    "start_seconds",
    "start_weekday",
    "Energy (kWh)",
    "forecast_segment",
    "county",
)
_REQUIRED_COLUMNS = ("start_seconds", "start_weekday", "Energy (kWh)", "forecast_segment")

DEFAULT_MAX_COMPONENTS = 8
DEFAULT_MAX_SESSIONS = 50_000
DEFAULT_MIN_SESSIONS = 200
DEFAULT_N_INIT = 2
HOLDOUT_FRACTION = 0.2
ENERGY_CLIP_QUANTILE = 0.999
KS_MIN_SAMPLES = 10_000
SESSIONS_PER_COMPONENT = 20
MAX_ITER = 300
TOL = 1e-3
REG_COVAR = 1e-6
INIT_PARAMS = "kmeans"
# The smallest useful model: enough sessions for a held-out set and one component.
_MIN_SESSIONS_FLOOR = 50

# Independent random streams of one model, derived from its seed.
_STREAM_SUBSAMPLE, _STREAM_SPLIT, _STREAM_KS = 1, 2, 3

Progress = Callable[[str, int, int], None]  # (model name just finished or skipped, done, total)


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions train a model: start dates (both ends inclusive) and counties."""

    since: date | None = None
    until: date | None = None
    counties: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise UsageError(f"--since {self.since} is after --until {self.until}")
        if self.counties is not None and not self.counties:
            raise UsageError("the county list is empty; give at least one county or none at all")

    def columns(self) -> tuple[str, ...]:
        needed = []
        if self.since or self.until:
            needed.append("start_datetime")
        if self.counties:
            needed.append("county")
        return tuple(needed)

    def apply(self, sessions: pd.DataFrame) -> pd.DataFrame:
        """The rows that pass; :class:`DataError` if a column the filter needs is absent."""
        import pandas as pd

        missing = [c for c in self.columns() if c not in sessions.columns]
        if missing:
            raise DataError(f"session data lack column {missing[0]!r} needed by the filter")
        keep = np.ones(len(sessions), dtype=bool)
        if self.since or self.until:
            start = pd.to_datetime(sessions["start_datetime"])
            if self.since:
                keep &= (start >= pd.Timestamp(self.since)).to_numpy(dtype=bool, na_value=False)
            if self.until:
                end = pd.Timestamp(self.until + timedelta(days=1))
                keep &= (start < end).to_numpy(dtype=bool, na_value=False)
        if self.counties:
            wanted = {c.strip().casefold() for c in self.counties}
            county = sessions["county"].astype(object)
            keep &= np.array(
                [isinstance(c, str) and c.strip().casefold() in wanted for c in county],
                dtype=bool,
            )
        return sessions[keep] if not keep.all() else sessions

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "counties": sorted(self.counties, key=str.casefold) if self.counties else None,
        }


@dataclass(frozen=True)
class TrainedModel:
    """One fitted session model, ready for :meth:`script_ec2.registry.Registry.save`."""

    name: str
    segment: str
    day_type: str
    arrays: dict[str, np.ndarray]
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    record: dict[str, Any]
    fingerprint: str
    libraries: dict[str, str]
    kind: str = KIND

    def gmm(self) -> gmm.SessionGmm:
        return gmm.SessionGmm.from_arrays(self.arrays)


@dataclass(frozen=True)
class SkippedModel:
    name: str
    segment: str
    day_type: str
    sessions: int
    reason: str


@dataclass(frozen=True)
class TrainingResult:
    models: list[TrainedModel]
    skipped: list[SkippedModel]
    fingerprint: str
    sessions: int  # sessions that passed the filter, over all segments


@dataclass(frozen=True)
class _Task:
    name: str
    segment: str
    day_type: str
    hours: np.ndarray  # clock hours of the start, canonical order
    energy: np.ndarray  # kWh, same order
    first_date: str | None
    last_date: str | None
    counties: tuple[str, ...]
    options: _Options


@dataclass(frozen=True)
class _Options:
    seed: int
    max_components: int
    max_sessions: int
    min_sessions: int
    n_init: int
    fingerprint: str
    data_files: int
    session_filter: dict[str, Any] = field(default_factory=dict)


def model_name(segment: str, day_type: str) -> str:
    """``sessions-<segment slug>-<day type>``, e.g. ``sessions-residential-mud-weekday``."""
    return f"sessions-{slug(segment)}-{day_type}"


def data_fingerprint(entries: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted, distinct (key, ETag) pairs of the ledger entries used to train."""
    pairs = sorted({(str(key), str(etag)) for key, etag in entries})
    if not pairs:
        raise UsageError("no ledger entries to fingerprint; run `script-ec2 sync` first")
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def resolve_segments(segments: Iterable[str] | None) -> list[str]:
    """Forecast segment labels from labels or slugs (``dc-fast``), in the canonical order."""
    if segments is None:
        return list(FORECAST_SEGMENTS)
    by_key = {slug(s): s for s in FORECAST_SEGMENTS}
    chosen = set()
    for text in segments:
        label = by_key.get(slug(text)) if text.strip() else None
        if label is None:
            raise UsageError(
                f"unknown segment {text!r}; choose from {', '.join(FORECAST_SEGMENTS)} "
                f"(or their slugs: {', '.join(by_key)})"
            )
        chosen.add(label)
    return [s for s in FORECAST_SEGMENTS if s in chosen]


def resolve_day_types(day_types: Iterable[str] | None) -> list[str]:
    if day_types is None:
        return list(DAY_TYPES)
    chosen = {d.strip().lower() for d in day_types}
    unknown = sorted(chosen - set(DAY_TYPES))
    if unknown:
        raise UsageError(f"unknown day type {unknown[0]!r}; choose from {', '.join(DAY_TYPES)}")
    return [d for d in DAY_TYPES if d in chosen]


def load_sessions(
    parquet_paths: Sequence[Path],
    *,
    columns: Sequence[str] = TRAINING_COLUMNS,
    since: date | None = None,
    until: date | None = None,
    counties: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read only ``columns`` of cached session files and keep the sessions the filter passes."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    session_filter = SessionFilter(since, until, tuple(counties) if counties is not None else None)
    wanted = list(dict.fromkeys([*columns, *session_filter.columns()]))
    frames = []
    for path in parquet_paths:
        try:
            present = set(pq.read_schema(path).names)
            missing = [c for c in wanted if c not in present]
            if missing:
                raise DataError(
                    f"cached session file {path} has no column {missing[0]!r}; "
                    "re-run `script-ec2 sync` to rebuild the cache"
                )
            table = pq.read_table(path, columns=wanted)
        except FileNotFoundError:
            raise DataError(
                f"cached session file {path} is missing; run `script-ec2 sync` to restore it"
            ) from None
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(
                f"cannot read cached session file {path} ({type(exc).__name__}); "
                "re-run `script-ec2 sync`"
            ) from None
        frames.append(session_filter.apply(table.to_pandas()))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in wanted})
    return pd.concat(frames, ignore_index=True)


def train_load_forecast(
    sessions: pd.DataFrame,
    *,
    fingerprint_entries: Iterable[tuple[str, str]],
    segments: Iterable[str] | None = None,
    day_types: Iterable[str] | None = None,
    since: date | None = None,
    until: date | None = None,
    counties: Sequence[str] | None = None,
    max_components: int = DEFAULT_MAX_COMPONENTS,
    seed: int = 0,
    max_sessions_per_model: int = DEFAULT_MAX_SESSIONS,
    min_sessions: int = DEFAULT_MIN_SESSIONS,
    n_init: int = DEFAULT_N_INIT,
    workers: int | None = None,
    progress: Progress | None = None,
) -> TrainingResult:
    """Fit the session models of the chosen segments and day types (see the module docstring).

    Combinations with fewer than ``min_sessions`` sessions are skipped with a reason. Raises
    :class:`UsageError` for bad options and :class:`DataError` when no model can be trained.
    ``workers`` (default: CPU count) threads fit models in parallel; the result does not depend
    on it. ``progress(name, done, total)`` is called as each model finishes or is skipped.
    """
    _check_options(max_components, seed, max_sessions_per_model, min_sessions, n_init, workers)
    fingerprint_pairs = list(fingerprint_entries)
    fingerprint = data_fingerprint(fingerprint_pairs)
    chosen_segments = resolve_segments(segments)
    chosen_days = resolve_day_types(day_types)
    session_filter = SessionFilter(since, until, tuple(counties) if counties is not None else None)
    missing = [c for c in _REQUIRED_COLUMNS if c not in sessions.columns]
    if missing:
        raise DataError(f"session data lack column {missing[0]!r}")
    sessions = session_filter.apply(sessions)
    options = _Options(
        seed=seed,
        max_components=max_components,
        max_sessions=max_sessions_per_model,
        min_sessions=min_sessions,
        n_init=n_init,
        fingerprint=fingerprint,
        data_files=len({key for key, _ in fingerprint_pairs}),
        session_filter=session_filter.as_dict(),
    )
    tasks = _tasks(sessions, chosen_segments, chosen_days, options)
    total = len(tasks)
    models: dict[str, TrainedModel] = {}
    skipped: dict[str, SkippedModel] = {}
    done = 0

    def finish(outcome: TrainedModel | SkippedModel) -> None:
        nonlocal done
        done += 1
        if isinstance(outcome, TrainedModel):
            models[outcome.name] = outcome
        else:
            skipped[outcome.name] = outcome
        if progress is not None:
            progress(outcome.name, done, total)

    # Loads scikit-learn's OpenMP runtime now: threadpool_limits only limits libraries already
    # loaded, and an unlimited OpenMP team spinning on a busy machine slows fits tenfold.
    import sklearn.mixture  # noqa: F401
    from threadpoolctl import threadpool_limits

    pool_size = min(workers or os.cpu_count() or 1, max(total, 1))
    # One BLAS/OpenMP thread per fit: parallelism comes from fitting models side by side, and
    # single-threaded kernels reduce in a fixed order, so results never depend on the core count.
    with threadpool_limits(limits=1):
        if pool_size <= 1:
            for task in tasks:
                finish(_fit(task))
        else:
            with ThreadPoolExecutor(max_workers=pool_size) as pool:
                # Largest first, so the long fits do not start last.
                ordered = sorted(tasks, key=lambda t: -min(t.hours.size, options.max_sessions))
                for outcome in pool.map(_fit, ordered):
                    finish(outcome)
    order = [t.name for t in tasks]
    trained = [models[n] for n in order if n in models]
    if not trained:
        detail = "; ".join(f"{s.name}: {s.reason}" for s in skipped.values()) or "no sessions"
        raise DataError(f"no session model could be trained ({detail})")
    return TrainingResult(
        models=trained,
        skipped=[skipped[n] for n in order if n in skipped],
        fingerprint=fingerprint,
        sessions=len(sessions),
    )


def save_models(
    registry: Registry, models: Iterable[TrainedModel], *, licence: str
) -> list[SaveResult]:
    """Save each model as a registry version (identical content returns the existing version)."""
    return [
        registry.save(
            model.kind,
            model.name,
            parameters=model.parameters,
            metrics=model.metrics,
            fingerprint=model.fingerprint,
            arrays=model.arrays,
            record=model.record,
            licence=licence,
            libraries=model.libraries,
        )
        for model in models
    ]


def _check_options(
    max_components: int,
    seed: int,
    max_sessions: int,
    min_sessions: int,
    n_init: int,
    workers: int | None,
) -> None:
    if not 1 <= max_components <= 32:
        raise UsageError(f"--max-components must be from 1 to 32, got {max_components}")
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be from 0 to 4294967295, got {seed}")
    if min_sessions < _MIN_SESSIONS_FLOOR:
        raise UsageError(
            f"--min-sessions must be at least {_MIN_SESSIONS_FLOOR}, got {min_sessions}"
        )
    if max_sessions < min_sessions:
        raise UsageError(
            f"--max-sessions ({max_sessions}) must be at least --min-sessions ({min_sessions})"
        )
    if not 1 <= n_init <= 10:
        raise UsageError(f"--n-init must be from 1 to 10, got {n_init}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")


def _tasks(
    sessions: pd.DataFrame, segments: list[str], day_types: list[str], options: _Options
) -> list[_Task]:
    import pandas as pd

    segment = sessions["forecast_segment"].astype(object).to_numpy()
    weekday = pd.to_numeric(sessions["start_weekday"], errors="coerce").to_numpy(dtype=float)
    seconds = pd.to_numeric(sessions["start_seconds"], errors="coerce").to_numpy(dtype=float)
    energy = pd.to_numeric(sessions["Energy (kWh)"], errors="coerce").to_numpy(dtype=float)
    usable = (
        np.isfinite(seconds)
        & (seconds >= 0)
        & (seconds < 86_400)
        & np.isfinite(energy)
        & (energy > 0)
    )
    start = (
        pd.to_datetime(sessions["start_datetime"]).to_numpy()
        if "start_datetime" in sessions.columns
        else None
    )
    county = sessions["county"].astype(object).to_numpy() if "county" in sessions.columns else None
    tasks = []
    for seg in segments:
        in_segment = usable & (segment == seg)
        for day_type in day_types:
            mask = in_segment & np.isin(weekday, DAY_TYPE_WEEKDAYS[day_type])
            hours = seconds[mask] / 3600.0
            kwh = energy[mask]
            order = np.lexsort((kwh, hours))
            first = last = None
            if start is not None and mask.any():
                dates = start[mask]
                dates = dates[~np.isnat(dates)]
                if dates.size:
                    first = str(dates.min().astype("datetime64[D]"))
                    last = str(dates.max().astype("datetime64[D]"))
            places = (
                tuple(sorted({c for c in county[mask] if isinstance(c, str)}))
                if county is not None
                else ()
            )
            tasks.append(
                _Task(
                    name=model_name(seg, day_type),
                    segment=seg,
                    day_type=day_type,
                    hours=np.ascontiguousarray(hours[order]),
                    energy=np.ascontiguousarray(kwh[order]),
                    first_date=first,
                    last_date=last,
                    counties=places,
                    options=options,
                )
            )
    return tasks


def _model_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "big")


def quietest_hour_shift(hours: np.ndarray) -> float:
    """The cut of the circular time axis, in clock hours (see the module docstring, step 4)."""
    counts = np.bincount(np.clip(np.floor(hours).astype(np.int64), 0, 23), minlength=24)
    smoothed = 2 * counts + np.roll(counts, 1) + np.roll(counts, -1)
    quiet = smoothed == smoothed.min()
    if quiet.all():
        return 0.0
    # Runs of quiet hours on the clock face, read from just after a busy hour so none is split.
    first = (int(np.flatnonzero(~quiet)[0]) + 1) % 24
    best_start, best_length, start, length = 0, 0, 0, 0
    for step in range(24):
        hour = (first + step) % 24
        if quiet[hour]:
            start, length = (hour, 1) if length == 0 else (start, length + 1)
            if length > best_length:
                best_start, best_length = start, length
        else:
            length = 0
    return float((best_start + best_length / 2) % 24)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _fit(task: _Task) -> TrainedModel | SkippedModel:
    options = task.options
    available = task.hours.size
    if available < options.min_sessions:
        return SkippedModel(
            task.name,
            task.segment,
            task.day_type,
            available,
            f"{available} sessions, fewer than the minimum of {options.min_sessions}",
        )
    model_seed = _model_seed(options.seed, task.name)
    hours, energy = task.hours, task.energy
    if available > options.max_sessions:
        rng = np.random.default_rng([model_seed, _STREAM_SUBSAMPLE])
        keep = np.sort(rng.choice(available, size=options.max_sessions, replace=False))
        hours, energy = hours[keep], energy[keep]
    used = hours.size
    permutation = np.random.default_rng([model_seed, _STREAM_SPLIT]).permutation(used)
    n_test = round(used * HOLDOUT_FRACTION)
    test, train = permutation[:n_test], permutation[n_test:]

    shift = quietest_hour_shift(hours[train])
    x = np.column_stack([gmm.to_shifted(hours, shift), energy])
    x_train, x_test = x[train], x[test]
    fitted, curve = _select_by_bic(x_train, options, model_seed)

    order = np.lexsort((fitted.means_[:, 1], fitted.means_[:, 0]))
    weights = np.asarray(fitted.weights_[order], dtype=np.float64)
    covariances = np.asarray(fitted.covariances_[order], dtype=np.float64)
    low = float(MIN_SESSION_ENERGY_KWH)
    high = max(float(np.quantile(x_train[:, 1], ENERGY_CLIP_QUANTILE)), low)
    model = gmm.SessionGmm(
        weights=weights / weights.sum(),
        means=np.asarray(fitted.means_[order], dtype=np.float64),
        # Symmetric to the last bit: sklearn's X'WX can differ by an ulp across the diagonal.
        covariances=(covariances + np.swapaxes(covariances, 1, 2)) / 2.0,
        shift_hours=shift,
        energy_bounds=(low, high),
    )
    metrics = _metrics(model, x_train, x_test, curve, fitted, model_seed)
    return TrainedModel(
        name=task.name,
        segment=task.segment,
        day_type=task.day_type,
        arrays=model.to_arrays(),
        parameters=_parameters(task, options),
        metrics=metrics,
        record=_record(task, model, used, train.size, test.size, model_seed),
        fingerprint=options.fingerprint,
        libraries=_libraries(),
    )


def _select_by_bic(
    x_train: np.ndarray, options: _Options, model_seed: int
) -> tuple[Any, list[float]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    largest = max(1, min(options.max_components, x_train.shape[0] // SESSIONS_PER_COMPONENT))
    best: Any = None
    best_bic = np.inf
    curve = []
    for components in range(1, largest + 1):
        mixture = GaussianMixture(
            n_components=components,
            covariance_type="full",
            tol=TOL,
            reg_covar=REG_COVAR,
            max_iter=MAX_ITER,
            n_init=options.n_init,
            init_params=INIT_PARAMS,
            random_state=model_seed,
        )
        with warnings.catch_warnings():
            # Non-convergence is reported in the metrics (converged, iterations), not as noise.
            warnings.simplefilter("ignore", ConvergenceWarning)
            mixture.fit(x_train)
        value = float(mixture.bic(x_train))
        curve.append(value)
        if value < best_bic:
            best, best_bic = mixture, value
    return best, curve


def _metrics(
    model: gmm.SessionGmm,
    x_train: np.ndarray,
    x_test: np.ndarray,
    curve: list[float],
    fitted: Any,
    model_seed: int,
) -> dict[str, Any]:
    args = (model.weights, model.means, model.covariances)
    n_samples = max(KS_MIN_SAMPLES, x_test.shape[0])
    rng = np.random.default_rng([model_seed, _STREAM_KS])
    clock, energy = model.sample(n_samples, rng)
    return {
        "components": model.components,
        "bic": gmm.bic(*args, x_train),
        "bic_curve": curve,
        "train_mean_log_likelihood": float(np.mean(gmm.log_likelihood(*args, x_train))),
        "heldout_mean_log_likelihood": float(np.mean(gmm.log_likelihood(*args, x_test))),
        "ks_start": ks_distance(gmm.to_shifted(clock, model.shift_hours), x_test[:, 0]),
        "ks_energy": ks_distance(energy, x_test[:, 1]),
        "ks_samples": n_samples,
        "converged": bool(fitted.converged_),
        "iterations": int(fitted.n_iter_),
    }


def _parameters(task: _Task, options: _Options) -> dict[str, Any]:
    return {
        "segment": task.segment,
        "day_type": task.day_type,
        "weekdays": list(DAY_TYPE_WEEKDAYS[task.day_type]),
        "features": list(gmm.FEATURES),
        "covariance_type": "full",
        "selection": "bic",
        "max_components": options.max_components,
        "sessions_per_component": SESSIONS_PER_COMPONENT,
        "n_init": options.n_init,
        "init_params": INIT_PARAMS,
        "max_iter": MAX_ITER,
        "tol": TOL,
        "reg_covar": REG_COVAR,
        "seed": options.seed,
        "max_sessions_per_model": options.max_sessions,
        "min_sessions": options.min_sessions,
        "holdout_fraction": HOLDOUT_FRACTION,
        "energy_clip_quantile": ENERGY_CLIP_QUANTILE,
        "energy_floor_kwh": float(MIN_SESSION_ENERGY_KWH),
        "filter": options.session_filter,
    }


def _record(
    task: _Task,
    model: gmm.SessionGmm,
    used: int,
    n_train: int,
    n_test: int,
    model_seed: int,
) -> dict[str, Any]:
    counties = task.options.session_filter.get("counties")
    period = (
        f"{task.first_date} to {task.last_date}"
        if task.first_date and task.last_date
        else "unknown"
    )
    days = "Monday to Friday" if task.day_type == "weekday" else "Saturday and Sunday"
    shift = model.shift_hours
    return {
        "title": f"Charging sessions: {task.segment}, {task.day_type}s",
        "summary": (
            f"A joint Gaussian mixture ({model.components} components, full covariance) of the "
            f"start time of day and the energy of {task.segment} charging sessions starting on "
            f"{days}. The load forecast samples sessions from it and charges each at the "
            "segment's rate to build a load profile."
        ),
        "scope": {
            "segment": task.segment,
            "day type": f"{task.day_type} ({days})",
            "counties": ", ".join(counties) if counties else "all in the data",
            "charging rate": "not part of this model: the forecast applies the segment's rate",
        },
        "training": {
            "period": period,
            "sessions matching": task.hours.size,
            "sessions used": used,
            "training sessions": n_train,
            "held-out sessions": n_test,
            "counties represented": len(task.counties),
            "source files": task.options.data_files,
            "fingerprint": task.options.fingerprint,
        },
        "units": {
            "weights": "mixture weights, sum to 1",
            "means[:, 0], covariances[:, 0, :]": (
                f"start time in hours after the cut at {int(shift):02d}:{round(shift % 1 * 60):02d}"
                " (clock hour = (value + shift_hours) mod 24)"
            ),
            "means[:, 1], covariances[:, 1, :]": "energy in kWh",
            "shift_hours": "clock hour of the cut of the circular time axis",
            "energy_bounds": "[lowest, highest] sampled energy, kWh",
        },
        "intended_use": (
            "Sampling synthetic charging sessions for aggregate load forecasts of the SCRIPT "
            "planning tool (tens to millions of vehicles). Not for predicting individual "
            "drivers or stations."
        ),
        "limitations": [
            "Trained on sessions from commercial chargers of one network in the San Francisco "
            "Bay Area; other regions, years or networks may differ.",
            "Holidays count as ordinary weekdays.",
            "Start time and energy only: session duration and battery size are not modelled.",
            f"Energies are truncated to [{model.energy_bounds[0]:.1f}, "
            f"{model.energy_bounds[1]:.1f}] kWh.",
        ],
        "segment": task.segment,
        "day_type": task.day_type,
        "model_seed": model_seed,
        "counties_represented": list(task.counties),
        "trained_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }


def _libraries() -> dict[str, str]:
    import sklearn

    return {
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }
