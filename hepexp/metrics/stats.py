"""Statistics of results: spreads of residuals (std, RMS, sigma68) and binomial confidence
intervals for efficiencies."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

#: the probability content of +-1 sigma of a Gaussian
ONE_SIGMA = 0.682689492137086


def clopper_pearson(
    passed: np.ndarray | float, total: np.ndarray | float, level: float = ONE_SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bound of the central Clopper-Pearson interval of ``passed / total``.

    The exact binomial interval: the bounds are quantiles of Beta distributions, 0 when nothing
    passed and 1 when everything did; NaN where ``total`` is 0.
    """
    k = np.asarray(passed, dtype=np.float64)
    n = np.asarray(total, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("clopper_pearson needs 0 <= passed <= total")
    alpha = 1.0 - level
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        upper = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    return np.where(empty, np.nan, lower), np.where(empty, np.nan, upper)


def efficiency_errors(
    passed: np.ndarray, total: np.ndarray, level: float = ONE_SIGMA
) -> tuple[np.ndarray, np.ndarray]:
    """Efficiency ``passed / total`` and its asymmetric errors (shape (2, N): below, above) from
    the Clopper-Pearson interval, ready for ``errorbar(yerr=...)``; NaN where ``total`` is 0."""
    k = np.asarray(passed, dtype=np.float64)
    n = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = k / n
    lower, upper = clopper_pearson(k, n, level)
    return eff, np.stack([eff - lower, upper - eff])


def summarize(values: np.ndarray) -> dict[str, float]:
    """Mean, RMS, standard deviation and sigma68 (half the central 68% width) of finite values."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {
            "mean": float("nan"),
            "rms": float("nan"),
            "std": float("nan"),
            "sigma68": float("nan"),
            "n": 0,
        }
    lo, hi = np.quantile(v, [0.16, 0.84])
    return {
        "mean": float(v.mean()),
        "rms": float(np.sqrt(np.mean(v**2))),
        "std": float(v.std()),
        "sigma68": float((hi - lo) / 2),
        "n": int(v.size),
    }
