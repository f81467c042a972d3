"""Session-model training and the GMM maths: fidelity to the training data (including starts that
straddle midnight), BIC selection, determinism, metrics, options and the cache reader."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from script_ec2 import gmm
from script_ec2.errors import DataError, ScriptEc2Error, UsageError
from script_ec2.forecast_train import (
    KIND,
    TRAINING_COLUMNS,
    TrainingResult,
    data_fingerprint,
    ks_distance,
    load_sessions,
    model_name,
    quietest_hour_shift,
    resolve_segments,
    save_models,
    train_load_forecast,
)
from script_ec2.ingest import ingest_file
from script_ec2.keys import detect_kind
from script_ec2.registry import Registry, npz_bytes
from script_ec2.store import LocalStore

ENTRIES = [("clean/evsezip94301_sessions.csv", "etag-1"), ("clean/evsezip94103_sessions.csv", "e2")]
FIRST_DAY = datetime(2019, 1, 7)  # a Monday


def sessions_for(
    segment: str,
    n: int,
    rng: np.random.Generator,
    *,
    hours: np.ndarray,
    energy: np.ndarray,
    weekend: bool = False,
    county: str = "Santa Clara",
) -> pd.DataFrame:
    """Sessions of one segment on weekdays (or weekends) over ten weeks, at the given times."""
    week = rng.integers(0, 10, n)
    weekday = rng.integers(5, 7, n) if weekend else rng.integers(0, 5, n)
    seconds = np.mod(np.round(hours * 3600), 86_400).astype(np.int64)
    start = [
        FIRST_DAY + timedelta(days=int(7 * w + d), seconds=int(s))
        for w, d, s in zip(week, weekday, seconds, strict=True)
    ]
    return pd.DataFrame(
        {
            "start_datetime": pd.to_datetime(start),
            "start_seconds": seconds.astype(np.int32),
            "start_weekday": weekday.astype(np.int8),
            "Energy (kWh)": energy,
            "forecast_segment": segment,
            "county": county,
        }
    )


def night_sessions(
    n: int, rng: np.random.Generator, *, weekend: bool = False, county: str = "Santa Clara"
) -> pd.DataFrame:
    """Residential L2: arrivals around 23:00 that straddle midnight, energies around 10 kWh."""
    hours = np.mod(rng.normal(23.0, 1.5, n), 24.0)
    energy = np.clip(rng.gamma(4.0, 2.5, n), 0.2, None)
    return sessions_for(
        "Residential L2", n, rng, hours=hours, energy=energy, weekend=weekend, county=county
    )


def bimodal_sessions(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """DC Fast: a morning group with small energies and an evening group with large ones."""
    morning = rng.random(n) < 0.4
    hours = np.where(morning, rng.normal(8.0, 0.7, n), rng.normal(18.0, 1.0, n))
    energy = np.where(morning, rng.normal(8.0, 1.5, n), rng.normal(30.0, 4.0, n))
    return sessions_for("DC Fast", n, rng, hours=hours, energy=np.clip(energy, 0.5, None))


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.concat([night_sessions(3000, rng), bimodal_sessions(3000, rng)], ignore_index=True)


@pytest.fixture(scope="module")
def trained(sessions: pd.DataFrame) -> TrainingResult:
    return train_load_forecast(
        sessions,
        fingerprint_entries=ENTRIES,
        segments=["Residential L2", "dc-fast"],
        day_types=["weekday"],
        max_components=5,
        seed=3,
        workers=1,
    )


def circular_mean_hours(hours: np.ndarray) -> float:
    angle = np.asarray(hours) / 24.0 * 2 * np.pi
    mean_angle = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())
    return float(np.mod(mean_angle, 2 * np.pi) / (2 * np.pi) * 24)


def circular_gap(a: float, b: float) -> float:
    gap = abs(a - b) % 24.0
    return min(gap, 24.0 - gap)


# --- fidelity ---------------------------------------------------------------------------------


def test_samples_reproduce_starts_that_straddle_midnight(
    sessions: pd.DataFrame, trained: TrainingResult
) -> None:
    model = next(m for m in trained.models if m.segment == "Residential L2")
    assert model.name == "sessions-residential-l2-weekday" and model.kind == KIND
    night = sessions[sessions["forecast_segment"] == "Residential L2"]
    hours = night["start_seconds"].to_numpy() / 3600.0
    energy = night["Energy (kWh)"].to_numpy()
    mixture = model.gmm()
    # The cut sits in the quiet middle of the day, far from the busy hours around midnight.
    assert 8.0 <= mixture.shift_hours <= 16.0
    got_hours, got_energy = mixture.sample(40_000, np.random.default_rng(0))
    assert circular_gap(circular_mean_hours(got_hours), circular_mean_hours(hours)) < 0.2
    # About as many starts fall on each side of midnight as in the data.
    for lo, hi in ((21.0, 24.0), (0.0, 2.0), (2.0, 5.0)):
        expected = np.mean((hours >= lo) & (hours < hi))
        assert abs(np.mean((got_hours >= lo) & (got_hours < hi)) - expected) < 0.03, (lo, hi)
    shifted = gmm.to_shifted(hours, mixture.shift_hours)
    got_shifted = gmm.to_shifted(got_hours, mixture.shift_hours)
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(got_shifted, q) - np.quantile(shifted, q)) < 0.3, q
        assert abs(np.quantile(got_energy, q) / np.quantile(energy, q) - 1) < 0.08, q
    assert abs(got_energy.mean() / energy.mean() - 1) < 0.03
    low, high = mixture.energy_bounds
    assert low == 0.1 and np.quantile(energy, 0.99) < high <= energy.max()
    assert got_energy.min() >= low and got_energy.max() <= high


def test_bic_picks_several_components_on_bimodal_data(trained: TrainingResult) -> None:
    model = next(m for m in trained.models if m.segment == "DC Fast")
    metrics = model.metrics
    assert metrics["components"] >= 2
    curve = metrics["bic_curve"]
    assert len(curve) == 5 and curve[0] > min(curve)
    assert metrics["components"] == int(np.argmin(curve)) + 1
    # Our own BIC from the stored arrays equals scikit-learn's for the chosen mixture.
    assert metrics["bic"] == pytest.approx(min(curve), rel=1e-9)
    mixture = model.gmm()
    hours, energy = mixture.sample(20_000, np.random.default_rng(1))
    morning = (hours > 5) & (hours < 11)
    assert 0.35 < morning.mean() < 0.45
    assert abs(np.median(energy[morning]) - 8.0) < 1.0
    assert abs(np.median(energy[~morning]) - 30.0) < 1.5


def test_metrics_and_record(trained: TrainingResult) -> None:
    assert [m.name for m in trained.models] == [
        "sessions-residential-l2-weekday",
        "sessions-dc-fast-weekday",
    ]
    assert trained.fingerprint == data_fingerprint(ENTRIES) and not trained.skipped
    for model in trained.models:
        m = model.metrics
        # Below the two-sample KS critical value at the 0.1 % level: a good fit, up to noise.
        critical = 1.95 * np.sqrt(1 / 600 + 1 / m["ks_samples"])
        for key in ("ks_start", "ks_energy"):
            assert 0.0 < m[key] < critical, (model.name, key, m[key])
        assert m["ks_samples"] >= 10_000
        assert np.isfinite(m["heldout_mean_log_likelihood"])
        assert abs(m["heldout_mean_log_likelihood"] - m["train_mean_log_likelihood"]) < 0.2
        assert m["converged"] is True
        p = model.parameters
        assert (p["seed"], p["max_components"], p["covariance_type"]) == (3, 5, "full")
        assert p["filter"] == {"since": None, "until": None, "counties": None}
        training = model.record["training"]
        assert training["sessions matching"] == training["sessions used"] == 3000
        assert training["training sessions"] == 2400 and training["held-out sessions"] == 600
        assert training["period"] == "2019-01-07 to 2019-03-15"
        assert training["source files"] == 2 and training["fingerprint"] == trained.fingerprint
        assert model.record["counties_represented"] == ["Santa Clara"]
        assert set(model.libraries) == {"numpy", "scikit-learn", "python"}
        assert set(model.arrays) == set(gmm.ARRAY_NAMES)
        assert model.arrays["shift_hours"].shape == ()


def test_log_likelihood_matches_scikit_learn() -> None:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(5)
    x = np.column_stack([rng.uniform(2, 22, 500), rng.gamma(3, 3, 500)])
    fitted = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
    args = (fitted.weights_, fitted.means_, fitted.covariances_)
    ours = gmm.log_likelihood(*args, x, wrap_hours=None)
    np.testing.assert_allclose(ours, fitted.score_samples(x), rtol=1e-10, atol=1e-10)
    assert gmm.bic(*args, x) == pytest.approx(fitted.bic(x), rel=1e-10)


def test_wrapped_density_integrates_to_one_across_midnight() -> None:
    # A component centred on the cut: half its mass lies "before" 0 and wraps to the late hours.
    weights = np.array([1.0])
    means = np.array([[0.2, 20.0]])
    covariances = np.array([[[2.0, 0.5], [0.5, 16.0]]])
    t, e = np.meshgrid(np.linspace(0, 24, 481)[:-1] + 0.025, np.linspace(-20, 60, 801))
    x = np.column_stack([t.ravel(), e.ravel()])
    density = np.exp(gmm.log_likelihood(weights, means, covariances, x))
    assert density.sum() * 0.05 * 0.1 == pytest.approx(1.0, abs=1e-3)
    plain = np.exp(gmm.log_likelihood(weights, means, covariances, x, wrap_hours=None))
    assert plain.sum() * 0.05 * 0.1 < 0.6


# --- determinism ------------------------------------------------------------------------------


def test_training_is_byte_reproducible(sessions: pd.DataFrame, trained: TrainingResult) -> None:
    shuffled = sessions.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again = train_load_forecast(
        shuffled,
        fingerprint_entries=list(reversed(ENTRIES)),
        segments=["dc-fast", "residential-l2"],
        day_types=["weekday"],
        max_components=5,
        seed=3,
        workers=2,
    )
    for first, second in zip(trained.models, again.models, strict=True):
        assert first.name == second.name
        assert npz_bytes(first.arrays) == npz_bytes(second.arrays)
        assert first.metrics == second.metrics and first.parameters == second.parameters
    other_seed = train_load_forecast(
        sessions,
        fingerprint_entries=ENTRIES,
        segments=["dc-fast"],
        day_types=["weekday"],
        max_components=5,
        seed=4,
    )
    dc_fast = next(m for m in trained.models if m.segment == "DC Fast")
    assert npz_bytes(other_seed.models[0].arrays) != npz_bytes(dc_fast.arrays)


def test_sampling_is_reproducible_and_in_range(trained: TrainingResult) -> None:
    mixture = trained.models[0].gmm()
    a = mixture.sample(5000, np.random.default_rng(42))
    b = mixture.sample(5000, np.random.default_rng(42))
    c = mixture.sample(5000, np.random.default_rng(43))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert np.all((a[0] >= 0) & (a[0] < 24))
    assert mixture.sample(0, np.random.default_rng(0))[0].shape == (0,)


def test_energy_truncation_redraws_instead_of_piling_up_at_the_bound() -> None:
    # Half of this component's energy mass is below the floor: redraws keep the floor rare.
    mixture = gmm.SessionGmm(
        weights=np.array([1.0]),
        means=np.array([[12.0, 1.0]]),
        covariances=np.array([[[1.0, 0.0], [0.0, 1.0]]]),
        shift_hours=0.0,
        energy_bounds=(1.0, 50.0),
    )
    _, energy = mixture.sample(10_000, np.random.default_rng(0))
    assert energy.min() >= 1.0 and np.mean(energy == 1.0) < 0.001


def test_session_gmm_validation() -> None:
    good = gmm.SessionGmm(
        weights=np.array([0.5, 0.5]),
        means=np.zeros((2, 2)),
        covariances=np.stack([np.eye(2)] * 2),
        shift_hours=3.5,
        energy_bounds=(0.1, 50.0),
    )
    with pytest.raises(ValueError, match="shift_hours"):
        replace(good, shift_hours=24.0)
    with pytest.raises(ValueError, match="positive definite"):
        replace(good, covariances=np.array([[[1.0, 2.0], [2.0, 1.0]]] * 2))
    with pytest.raises(ValueError, match="sum to 1"):
        replace(good, weights=np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="energy_bounds"):
        replace(good, energy_bounds=(5.0, 1.0))
    with pytest.raises(ValueError, match="lack energy_bounds"):
        gmm.SessionGmm.from_arrays(
            {k: v for k, v in good.to_arrays().items() if k != "energy_bounds"}
        )


# --- registry, end to end ---------------------------------------------------------------------


def test_synthetic_cache_to_registry_end_to_end(tmp_path: Path) -> None:
    from script_ec2 import synthetic

    summary = synthetic.generate(
        tmp_path / "raw",
        sessions=5000,
        seed=5,
        start_date=date(2019, 1, 1),
        end_date=date(2019, 7, 1),
        zips_per_county=1,
    )
    zip_to_county = {f"{f.zip_code:05d}": f.county for f in summary.files if f.kind == "sessions"}
    paths = []
    for f in summary.files:
        if detect_kind(f.name) == "sessions":
            result = ingest_file(
                tmp_path / "raw" / f.name,
                kind="sessions",
                key=f.name,
                zip_to_county=zip_to_county,
                out_dir=tmp_path / "cache",
                stem=f.name.split(".")[0],
            )
            paths.append(result.parquet_path)
    entries = [(path.name, "etag") for path in paths]
    frame = load_sessions(paths)
    assert list(frame.columns) == list(TRAINING_COLUMNS)

    def train() -> TrainingResult:
        return train_load_forecast(
            frame,
            fingerprint_entries=entries,
            segments=["Workplace", "Public L2"],
            day_types=["weekday"],
            max_components=3,
            seed=0,
        )

    registry = Registry(LocalStore(tmp_path / "models"))
    first = save_models(registry, train().models, licence="CC-BY-4.0")
    assert [r.version.ref for r in first] == [
        "sessions-workplace-weekday@1",
        "sessions-public-l2-weekday@1",
    ]
    assert all(r.created for r in first)
    npz = (tmp_path / "models/sessions-workplace-weekday/1/arrays.npz").read_bytes()
    second = save_models(registry, train().models, licence="CC-BY-4.0")
    assert [(r.version.ref, r.created) for r in second] == [(r.version.ref, False) for r in first]
    assert (tmp_path / "models/sessions-workplace-weekday/1/arrays.npz").read_bytes() == npz
    loaded = registry.load("sessions-workplace-weekday")
    mixture = gmm.SessionGmm.from_arrays(loaded.arrays)
    hours, _ = mixture.sample(10_000, np.random.default_rng(0))
    # Synthetic workplace sessions arrive in the morning.
    assert 6.0 < np.median(hours) < 11.0
    assert loaded.meta["record"]["segment"] == "Workplace"
    assert (
        "| segment | Workplace |"
        in (tmp_path / "models/sessions-workplace-weekday/1/README.md").read_text()
    )


# --- options and refusals ---------------------------------------------------------------------


def test_subsampling_and_sparse_combinations(sessions: pd.DataFrame) -> None:
    rng = np.random.default_rng(2)
    few_weekend = night_sessions(60, rng, weekend=True)
    calls: list[tuple[str, int, int]] = []
    result = train_load_forecast(
        pd.concat([sessions, few_weekend], ignore_index=True),
        fingerprint_entries=ENTRIES,
        segments=["Residential L2"],
        max_components=2,
        max_sessions_per_model=1000,
        min_sessions=100,
        progress=lambda name, done, total: calls.append((name, done, total)),
    )
    [model] = result.models
    assert model.record["training"]["sessions matching"] == 3000
    assert model.record["training"]["sessions used"] == 1000
    assert model.parameters["max_sessions_per_model"] == 1000
    [skipped] = result.skipped
    assert skipped.name == "sessions-residential-l2-weekend" and skipped.sessions == 60
    assert "fewer than the minimum of 100" in skipped.reason
    # Models finish in any order when fitted in parallel; each reports once, counting up.
    assert sorted(name for name, _, _ in calls) == [model.name, skipped.name]
    assert [(done, total) for _, done, total in calls] == [(1, 2), (2, 2)]


def test_filters_are_applied_and_recorded(sessions: pd.DataFrame) -> None:
    rng = np.random.default_rng(9)
    elsewhere = night_sessions(3000, rng, county="Marin")
    frame = pd.concat([sessions, elsewhere], ignore_index=True)
    result = train_load_forecast(
        frame,
        fingerprint_entries=ENTRIES,
        segments=["Residential L2"],
        day_types=["weekday"],
        since=date(2019, 1, 14),
        until=date(2019, 2, 10),
        counties=["marin"],
        max_components=2,
    )
    [model] = result.models
    training = model.record["training"]
    assert training["period"] >= "2019-01-14" and training["period"].endswith("2019-02-08")
    assert model.record["counties_represented"] == ["Marin"]
    assert model.parameters["filter"] == {
        "since": "2019-01-14",
        "until": "2019-02-10",
        "counties": ["marin"],
    }
    assert 1000 < training["sessions matching"] < 1500


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"segments": ["Fleet"]}, UsageError, "unknown segment 'Fleet'"),
        ({"day_types": ["holiday"]}, UsageError, "unknown day type 'holiday'"),
        ({"max_components": 0}, UsageError, "--max-components"),
        ({"min_sessions": 10}, UsageError, "--min-sessions must be at least 50"),
        ({"max_sessions_per_model": 100}, UsageError, "--max-sessions (100)"),
        ({"seed": -1}, UsageError, "--seed"),
        ({"fingerprint_entries": []}, UsageError, "run `script-ec2 sync` first"),
        ({"since": date(2020, 1, 1), "until": date(2019, 1, 1)}, UsageError, "is after"),
        ({"counties": ["Nowhere"]}, DataError, "no session model could be trained"),
        ({"segments": ["Public L2"]}, DataError, "0 sessions, fewer than the minimum"),
    ],
)
def test_bad_options_are_refused(
    sessions: pd.DataFrame, kwargs: dict[str, object], error: type[ScriptEc2Error], needle: str
) -> None:
    options: dict[str, object] = {"fingerprint_entries": ENTRIES, "max_components": 2}
    options.update(kwargs)
    with pytest.raises(error) as excinfo:
        train_load_forecast(sessions, **options)  # type: ignore[arg-type]
    assert needle in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_missing_column_is_a_data_error(sessions: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="lack column 'Energy \\(kWh\\)'"):
        train_load_forecast(sessions.drop(columns=["Energy (kWh)"]), fingerprint_entries=ENTRIES)


def test_load_sessions_reads_only_what_it_needs(tmp_path: Path, sessions: pd.DataFrame) -> None:
    halves = [sessions.iloc[:3000].assign(extra=1), sessions.iloc[3000:].assign(extra=2)]
    paths = []
    for i, half in enumerate(halves):
        path = tmp_path / f"part{i}.parquet"
        pq.write_table(pa.Table.from_pandas(half, preserve_index=False), path)
        paths.append(path)
    frame = load_sessions(paths, columns=("start_seconds", "Energy (kWh)", "forecast_segment"))
    assert list(frame.columns) == ["start_seconds", "Energy (kWh)", "forecast_segment"]
    assert len(frame) == len(sessions)
    filtered = load_sessions(paths, since=date(2019, 2, 1), until=date(2019, 2, 28))
    dates = pd.to_datetime(filtered["start_datetime"])
    assert dates.min() >= pd.Timestamp("2019-02-01") and dates.max() < pd.Timestamp("2019-03-01")
    start = sessions["start_datetime"]
    assert len(filtered) == ((start >= "2019-02-01") & (start < "2019-03-01")).sum()
    assert len(load_sessions(paths, counties=["Marin"])) == 0
    assert len(load_sessions([])) == 0

    with pytest.raises(DataError, match="is missing; run `script-ec2 sync`"):
        load_sessions([tmp_path / "gone.parquet"])
    with pytest.raises(DataError, match="has no column 'start_weekday'"):
        load_sessions([_without(paths[0], "start_weekday", tmp_path)])
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read cached session file"):
        load_sessions([tmp_path / "bad.parquet"])


def _without(path: Path, column: str, folder: Path) -> Path:
    table = pq.read_table(path)
    out = folder / f"no-{column}.parquet"
    pq.write_table(table.drop_columns([column]), out)
    return out


# --- small pieces -----------------------------------------------------------------------------


def test_quietest_hour_shift() -> None:
    evening = np.concatenate([np.full(50, 18.5), np.full(50, 22.2), np.full(50, 1.1)])
    assert 4.0 < quietest_hour_shift(evening) < 17.0
    # The middle of a 3-hour quiet window wins over a lone quiet hour between busy ones.
    hours = np.concatenate([np.arange(24.0).repeat(10), np.full(40, 6.5)])
    hours = hours[~np.isin(np.floor(hours), [3, 13, 14, 15])]
    assert quietest_hour_shift(hours) == 14.5


def test_ks_distance_matches_scipy() -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 700), rng.normal(0.2, 1.1, 900)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_distance(a, a) == 0.0


def test_names_and_fingerprint() -> None:
    assert model_name("DC Fast", "weekend") == "sessions-dc-fast-weekend"
    assert model_name("Residential MUD", "weekday") == "sessions-residential-mud-weekday"
    assert resolve_segments(["workplace", "DC Fast"]) == ["Workplace", "DC Fast"]
    assert data_fingerprint([("b", "2"), ("a", "1"), ("a", "1")]) == data_fingerprint(
        [("a", "1"), ("b", "2")]
    )
    assert data_fingerprint([("a", "1")]) != data_fingerprint([("a", "2")])
