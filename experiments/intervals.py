"""Confidence intervals over seeds, shared by the reports (``compare``, ``pool``, sweeps, the
best-response table)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["mean_ci"]


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The mean of ``values`` and the half-width of its 95% Student-t confidence interval (0 for
    a single value)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)
