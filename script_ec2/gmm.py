"""The joint (start time, energy) Gaussian mixtures of charging sessions, as plain arrays.

A session model is five arrays, nothing else (no scikit-learn object, no pickle):

===============  ===========  ==================================================================
Array            Shape        Meaning
===============  ===========  ==================================================================
weights          (K,)         mixture weights, summing to 1
means            (K, 2)       per component: [start hour on the shifted axis, energy kWh]
covariances      (K, 2, 2)    per component: full covariance of those two features
shift_hours      ()           where the shifted axis starts, in clock hours, in [0, 24)
energy_bounds    (2,)         [lowest, highest] energy a sampled session may have, kWh
===============  ===========  ==================================================================

**Time of day is circular.** A Gaussian on a line cannot describe starts that straddle midnight
(evening arrivals at 23:30 and 00:30 are an hour apart, not 23). So the time axis is cut where the
segment is quietest: training finds the quietest hours and places the cut in the middle of them,
at ``shift_hours`` (for example 4.5 = 04:30). A start at clock hour ``h`` is fitted at
``(h - shift_hours) mod 24``, a value in [0, 24) whose 0 is the quiet point, so busy periods sit
well inside the interval. Sampling adds the shift back and wraps modulo 24 h, so the few samples a
component spills past either end of the shifted axis land on the other side of the cut, as they
would on a clock. For the same reason :func:`log_likelihood` evaluates the start dimension as a
*wrapped* Gaussian: the density at ``t`` is summed over ``t - 24``, ``t`` and ``t + 24``.

**Energy.** Samples are truncated to ``energy_bounds``: a draw whose energy falls outside is
redrawn (start and energy together, so the start time keeps its distribution given a valid
energy). The lower bound is the cleaning floor of 0.1 kWh (no kept session delivers less); the
upper bound is a high quantile of the training energies. After a fixed number of redraw rounds the
rare remaining draws are clipped instead, so sampling always ends.

**Reproducibility.** :func:`sample` takes a :class:`numpy.random.Generator` and draws from it in a
fixed order (component choices, then standard normals, per round), so the same parameters, ``n``
and seed give byte-identical samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

DAY_HOURS = 24.0
FEATURES = ("start_hours_shifted", "energy_kwh")
ARRAY_NAMES = ("weights", "means", "covariances", "shift_hours", "energy_bounds")
# Redraw rounds before the remaining out-of-bounds energies are clipped (see module docstring).
_MAX_REDRAW_ROUNDS = 16
# The wrapped start density sums these copies of each component, one day apart.
_WRAP_IMAGES = (-1.0, 0.0, 1.0)
_LOG_2PI = float(np.log(2.0 * np.pi))


def check_parameters(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
    """Raise :class:`ValueError` naming the problem unless the arrays form a valid 2-D mixture."""
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"weights must be a non-empty vector, got shape {weights.shape}")
    k = weights.size
    if means.shape != (k, 2):
        raise ValueError(f"means must have shape ({k}, 2), got {means.shape}")
    if covariances.shape != (k, 2, 2):
        raise ValueError(f"covariances must have shape ({k}, 2, 2), got {covariances.shape}")
    for name, array in (("weights", weights), ("means", means), ("covariances", covariances)):
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must hold finite floating-point numbers")
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError("weights must be non-negative and sum to 1")
    if not np.allclose(covariances, np.swapaxes(covariances, 1, 2), rtol=1e-9, atol=1e-12):
        raise ValueError("covariances must be symmetric")
    try:
        np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        raise ValueError("covariances must be positive definite") from None


def sample(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    shift_hours: float = 0.0,
    energy_bounds: tuple[float, float] = (0.0, float("inf")),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` sessions: (start clock hour in [0, 24), energy kWh within ``energy_bounds``)."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    low, high = float(energy_bounds[0]), float(energy_bounds[1])
    if not low <= high:
        raise ValueError(f"energy bounds must be ordered, got [{low}, {high}]")
    chol = np.linalg.cholesky(covariances)
    # rng.choice rejects probabilities that miss 1 by float rounding; renormalising is exact enough.
    p = weights / weights.sum()
    starts = np.empty(n, dtype=np.float64)
    energies = np.empty(n, dtype=np.float64)
    filled = 0
    for _ in range(_MAX_REDRAW_ROUNDS):
        need = n - filled
        if need == 0:
            break
        t, e = _draw(p, means, chol, need, rng)
        ok = (e >= low) & (e <= high)
        kept = int(ok.sum())
        starts[filled : filled + kept] = t[ok]
        energies[filled : filled + kept] = e[ok]
        filled += kept
    if filled < n:
        t, e = _draw(p, means, chol, n - filled, rng)
        starts[filled:] = t
        energies[filled:] = np.clip(e, low, high)
    clock = np.mod(starts + shift_hours, DAY_HOURS)
    # mod can return exactly 24.0 for tiny negative inputs; the contract is [0, 24).
    clock[clock >= DAY_HOURS] = 0.0
    return clock, energies


def _draw(
    p: np.ndarray, means: np.ndarray, chol: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` raw draws on the shifted axis: component choices, then correlated normals."""
    component = rng.choice(p.size, size=n, p=p)
    z = rng.standard_normal((n, 2))
    x = means[component] + np.einsum("nij,nj->ni", chol[component], z)
    return x[:, 0], x[:, 1]


def log_likelihood(
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    x: np.ndarray,
    *,
    wrap_hours: float | None = DAY_HOURS,
) -> np.ndarray:
    """Log density of each row of ``x`` (shape (n, 2): shifted start hour, energy kWh).

    With ``wrap_hours`` (the default, 24) the start dimension is a wrapped Gaussian, matching what
    :func:`sample` draws; ``wrap_hours=None`` gives the plain 2-D mixture that scikit-learn fits.
    The truncation of energies to their bounds is not included.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {x.shape}")
    chol = np.linalg.cholesky(covariances)
    images = _WRAP_IMAGES if wrap_hours is not None else (0.0,)
    period = wrap_hours or 0.0
    terms = []
    for k in range(weights.size):
        # Solve L y = (x - mu) for the 2x2 lower-triangular L by hand: vectorised and exact.
        l00, l10, l11 = chol[k, 0, 0], chol[k, 1, 0], chol[k, 1, 1]
        log_det = np.log(l00) + np.log(l11)
        de = x[:, 1] - means[k, 1]
        for image in images:
            dt = x[:, 0] + image * period - means[k, 0]
            y0 = dt / l00
            y1 = (de - l10 * y0) / l11
            terms.append(np.log(weights[k]) - _LOG_2PI - log_det - 0.5 * (y0 * y0 + y1 * y1))
    stacked = np.stack(terms)
    top = stacked.max(axis=0)
    return np.asarray(top + np.log(np.exp(stacked - top).sum(axis=0)))


def parameter_count(components: int, dimensions: int = 2) -> int:
    """Free parameters of a full-covariance mixture (as scikit-learn counts them for BIC)."""
    return (
        components - 1 + components * dimensions + components * dimensions * (dimensions + 1) // 2
    )


def bic(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, x: np.ndarray) -> float:
    """Bayesian information criterion of the plain (unwrapped) mixture on ``x``; lower is better."""
    total = float(log_likelihood(weights, means, covariances, x, wrap_hours=None).sum())
    return -2.0 * total + parameter_count(weights.size) * float(np.log(len(x)))


def to_shifted(clock_hours: np.ndarray, shift_hours: float) -> np.ndarray:
    """Clock hours in [0, 24) to the model's shifted axis, also in [0, 24)."""
    shifted = np.mod(np.asarray(clock_hours, dtype=np.float64) - shift_hours, DAY_HOURS)
    shifted[shifted >= DAY_HOURS] = 0.0
    return shifted


@dataclass(frozen=True)
class SessionGmm:
    """One session model: the arrays of the module docstring, checked on construction."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    shift_hours: float
    energy_bounds: tuple[float, float]

    def __post_init__(self) -> None:
        check_parameters(self.weights, self.means, self.covariances)
        if not (np.isfinite(self.shift_hours) and 0.0 <= self.shift_hours < DAY_HOURS):
            raise ValueError(f"shift_hours must be in [0, 24), got {self.shift_hours}")
        low, high = self.energy_bounds
        if not (np.isfinite(low) and np.isfinite(high) and 0.0 <= low <= high):
            raise ValueError(f"energy_bounds must be finite with 0 <= low <= high, got {low, high}")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> SessionGmm:
        """Build from stored arrays; :class:`ValueError` names a missing or malformed one."""
        missing = [name for name in ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"session model arrays lack {', '.join(missing)}")
        shift = np.asarray(arrays["shift_hours"])
        bounds = np.asarray(arrays["energy_bounds"])
        if shift.shape != () or bounds.shape != (2,):
            raise ValueError("shift_hours must be a scalar and energy_bounds a pair")
        return cls(
            weights=np.asarray(arrays["weights"]),
            means=np.asarray(arrays["means"]),
            covariances=np.asarray(arrays["covariances"]),
            shift_hours=float(shift),
            energy_bounds=(float(bounds[0]), float(bounds[1])),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "weights": np.asarray(self.weights, dtype=np.float64),
            "means": np.asarray(self.means, dtype=np.float64),
            "covariances": np.asarray(self.covariances, dtype=np.float64),
            "shift_hours": np.asarray(self.shift_hours, dtype=np.float64),
            "energy_bounds": np.asarray(self.energy_bounds, dtype=np.float64),
        }

    @property
    def components(self) -> int:
        return int(self.weights.size)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` sessions: (start clock hour in [0, 24), energy kWh); see :func:`sample`."""
        return sample(
            self.weights,
            self.means,
            self.covariances,
            n,
            rng,
            shift_hours=self.shift_hours,
            energy_bounds=self.energy_bounds,
        )

    def log_likelihood(self, clock_hours: np.ndarray, energy_kwh: np.ndarray) -> np.ndarray:
        """Log density of sessions given in clock hours and kWh (wrapped start dimension)."""
        x = np.column_stack(
            [to_shifted(clock_hours, self.shift_hours), np.asarray(energy_kwh, dtype=np.float64)]
        )
        return log_likelihood(self.weights, self.means, self.covariances, x)
