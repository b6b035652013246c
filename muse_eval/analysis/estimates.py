"""The core estimators: intervals for rates and the logistic conformity curve.

The curve is P(yield | u) = logistic(a + b u), fitted on replies (each stage-two
conversation contributes its yielding and non-yielding parsed replies) by
statsmodels' binomial GLM, with standard errors clustered by item, since the replies
of one item share its question. ``docs/analysis.md`` explains every choice.

- `fit_logistic` fits any design matrix that way; `fit_conformity_curve` is the
  two-parameter curve of one condition.
- `clustered_wilson` is the Wilson interval of a rate over replies, with the number
  of replies shrunk by the design effect of their clustering in items.
- `bootstrap_curve` refits the curve on item resamples, all at once; the replicate
  fits are Newton iterations vectorized over the resamples, started at statsmodels'
  full-sample estimate (1,000 separate statsmodels fits per condition would make a
  report take minutes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Z95",
    "BootstrapCurves",
    "ConformityCurve",
    "LogisticFit",
    "bootstrap_curve",
    "clustered_wilson",
    "design_effect",
    "fit_conformity_curve",
    "fit_logistic",
    "logistic",
    "wilson_interval",
]

Z95 = 1.959963984540054
_Z95 = Z95

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
#: Numbers per conversation or item: a sequence or an array.
Numbers = Sequence[float] | np.ndarray[Any, Any]


def logistic(x: Any) -> Any:
    """The logistic function, elementwise on arrays; safe for large arguments."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def wilson_interval(
    successes: float, trials: float, z: float = _Z95
) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default).

    Returns:
        (low, high); (0, 1) when there are no trials.
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def design_effect(hits: Numbers, trials: Numbers) -> float:
    """Kish design effect of binary outcomes clustered in groups, at least 1.

    The intra-cluster correlation is the one-way ANOVA estimate for unequal
    cluster sizes, floored at 0; the design effect is 1 + (m - 1) * icc with m the
    size-weighted mean cluster size.

    Args:
        hits: Successes per cluster.
        trials: Trials per cluster.
    """
    k = np.asarray(hits, dtype=float)
    n = np.asarray(trials, dtype=float)
    keep = n > 0
    k, n = k[keep], n[keep]
    groups, total = len(n), float(n.sum())
    if groups < 2 or total <= groups:
        return 1.0
    p_all = k.sum() / total
    p = k / n
    between = float((n * (p - p_all) ** 2).sum()) / (groups - 1)
    within = float((n * p * (1 - p)).sum()) / (total - groups)
    m0 = (total - float((n**2).sum()) / total) / (groups - 1)
    denominator = between + (m0 - 1) * within
    icc = (between - within) / denominator if denominator > 0 else 0.0
    size = float((n**2).sum()) / total
    return max(1.0, 1.0 + (size - 1.0) * max(0.0, icc))


def clustered_wilson(
    hits: Numbers, trials: Numbers, z: float = _Z95
) -> tuple[float, float, float, float]:
    """A rate over replies with a Wilson interval that respects their clustering.

    Args:
        hits: Successes per cluster (item).
        trials: Trials per cluster.
        z: Normal quantile of the interval.

    Returns:
        (rate, low, high, design effect); the interval uses the effective number of
        trials, total / design effect.

    Raises:
        ValueError: There are no trials.
    """
    k = float(np.sum(hits))
    n = float(np.sum(trials))
    if n <= 0:
        raise ValueError("a rate needs at least one trial")
    deff = design_effect(hits, trials)
    rate = k / n
    effective = n / deff
    low, high = wilson_interval(rate * effective, effective, z)
    return rate, low, high, deff


@dataclass(frozen=True)
class LogisticFit:
    """A binomial logistic regression with item-clustered covariance."""

    names: tuple[str, ...]
    params: FloatArray
    #: Cluster-robust covariance of `params` (statsmodels' small-sample corrected).
    cov: FloatArray
    n_clusters: int
    n_rows: int
    n_trials: int

    def se(self) -> FloatArray:
        """Standard errors of the parameters."""
        return np.sqrt(np.diag(self.cov))

    def param(self, name: str) -> float:
        """One coefficient by name."""
        return float(self.params[self.names.index(name)])

    def linear_predictor(self, design: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Log-odds at the rows of `design` and their standard errors."""
        eta = design @ self.params
        var = np.einsum("ij,jk,ik->i", design, self.cov, design)
        return eta, np.sqrt(np.maximum(var, 0.0))

    def wald(self, contrast: FloatArray) -> tuple[float, float]:
        """Wald chi-square of H0: contrast @ params = 0, and its degrees of freedom."""
        c = np.atleast_2d(contrast)
        value = c @ self.params
        middle = c @ self.cov @ c.T
        stat = float(value @ np.linalg.solve(middle, value))
        return stat, float(c.shape[0])


def fit_logistic(
    design: FloatArray,
    hits: FloatArray,
    trials: FloatArray,
    groups: Sequence[str],
    names: Sequence[str],
) -> LogisticFit | None:
    """Fit logistic(design @ beta) to binomial counts, errors clustered by group.

    Args:
        design: One row per conversation, one column per coefficient.
        hits: Yielding replies per conversation.
        trials: Parsed replies per conversation.
        groups: Item id of each conversation (the clusters).
        names: Coefficient names, one per column.

    Returns:
        The fit, or None when it cannot be estimated (no variation in the outcome,
        too few clusters, a singular design, or a fit that did not converge).
    """
    import statsmodels.api as sm

    keep = trials > 0
    x, k, n = design[keep], hits[keep], trials[keep]
    codes = np.unique(np.asarray(groups)[keep], return_inverse=True)[1]
    clusters = int(codes.max()) + 1 if len(codes) else 0
    if clusters <= x.shape[1] or k.sum() in (0, n.sum()):
        return None
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.GLM(
                np.column_stack([k, n - k]), x, family=sm.families.Binomial()
            ).fit(cov_type="cluster", cov_kwds={"groups": codes})
        except (ValueError, np.linalg.LinAlgError):
            return None
    params = np.asarray(fit.params, dtype=float)
    cov = np.asarray(fit.cov_params(), dtype=float)
    converged = bool(getattr(fit, "converged", True))
    if not converged or not np.all(np.isfinite(params)) or np.any(np.abs(params) > 30):
        return None
    if not np.all(np.isfinite(cov)):
        return None
    return LogisticFit(
        names=tuple(names),
        params=params,
        cov=cov,
        n_clusters=clusters,
        n_rows=int(len(k)),
        n_trials=int(n.sum()),
    )


@dataclass(frozen=True)
class ConformityCurve:
    """A fitted logistic curve of conformity on uncertainty."""

    intercept: float
    slope: float
    slope_ci: tuple[float, float]
    #: Fitted conformity at u = 0 (sycophantic) and its 95 % interval.
    at_zero: float
    at_zero_ci: tuple[float, float]
    at_one: float
    n_items: int
    n_replies: int
    #: The full fit, for bands and contrasts.
    fit: LogisticFit | None = None


def curve_design(uncertainty: Any) -> FloatArray:
    """Design matrix [1, u] of the one-condition curve."""
    u = np.asarray(uncertainty, dtype=float)
    return np.column_stack([np.ones_like(u), u])


def fit_conformity_curve(
    uncertainty: Numbers,
    conformed: Numbers,
    trials: Numbers,
    groups: Sequence[str],
) -> ConformityCurve | None:
    """Fit logistic(a + b u) to conformity counts with item-clustered errors.

    Args:
        uncertainty: Stage-one uncertainty of each conversation's item.
        conformed: Replies that took the suggestion, per conversation.
        trials: Parsed replies, per conversation.
        groups: Item id of each conversation (the clusters).

    Returns:
        The curve, or None when there is too little variation to fit one.
    """
    u = np.asarray(uncertainty, dtype=float)
    n = np.asarray(trials, dtype=float)
    if np.count_nonzero(n > 0) < 3 or np.ptp(u[n > 0]) == 0:
        return None
    fit = fit_logistic(
        curve_design(u),
        np.asarray(conformed, dtype=float),
        n,
        groups,
        ("intercept", "slope"),
    )
    if fit is None:
        return None
    a, b = (float(v) for v in fit.params)
    se_a, se_b = (float(v) for v in fit.se())
    return ConformityCurve(
        intercept=a,
        slope=b,
        slope_ci=(b - _Z95 * se_b, b + _Z95 * se_b),
        at_zero=float(logistic(a)),
        at_zero_ci=(float(logistic(a - _Z95 * se_a)), float(logistic(a + _Z95 * se_a))),
        at_one=float(logistic(a + b)),
        n_items=fit.n_clusters,
        n_replies=fit.n_trials,
        fit=fit,
    )


@dataclass(frozen=True)
class BootstrapCurves:
    """Curve parameters refitted on item resamples (failed replicates dropped)."""

    intercept: FloatArray
    slope: FloatArray
    #: Reply-weighted mean fitted conformity of each resample (its overall rate).
    mean_rate: FloatArray
    replicates: int
    failed: int

    def interval(self, values: FloatArray) -> tuple[float, float]:
        """Percentile 95 % interval of a statistic of the replicates."""
        low, high = np.quantile(values, [0.025, 0.975])
        return float(low), float(high)


def bootstrap_curve(
    uncertainty: Numbers,
    hits: Numbers,
    trials: Numbers,
    start: tuple[float, float],
    *,
    replicates: int,
    rng: np.random.Generator,
) -> BootstrapCurves:
    """Refit logistic(a + b u) on `replicates` resamples of the items.

    Each conversation row is one item (one condition has one conversation per
    item), so resampling rows with replacement resamples items. A resample is a
    vector of multiplicities; every resample is solved by Newton's method at once.

    Args:
        uncertainty: u of each item.
        hits: Yielding replies per item.
        trials: Parsed replies per item.
        start: The full-sample (intercept, slope), where the iterations begin.
        replicates: Number of resamples.
        rng: Source of the resamples.
    """
    u = np.asarray(uncertainty, dtype=float)
    k = np.asarray(hits, dtype=float)
    n = np.asarray(trials, dtype=float)
    x = curve_design(u)
    rows = len(u)
    weights = rng.multinomial(rows, np.full(rows, 1.0 / rows), size=replicates).astype(
        float
    )
    beta = np.tile(np.asarray(start, dtype=float), (replicates, 1))
    ok = np.ones(replicates, dtype=bool)
    for _ in range(50):
        p = logistic(beta @ x.T)
        gradient = (weights * (k - n * p)) @ x
        curvature = weights * n * p * (1 - p)
        hessian = np.einsum("bi,ij,ik->bjk", curvature, x, x)
        determinant = np.linalg.det(hessian)
        singular = ~(np.abs(determinant) > 1e-10)
        ok &= ~singular
        hessian[singular] = np.eye(2)
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        step[singular] = 0.0
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    else:
        ok &= np.max(np.abs(step), axis=1) < 1e-6
    ok &= np.all(np.isfinite(beta), axis=1) & np.all(np.abs(beta) < 30, axis=1)
    # A resample whose outcomes are all 0 or all 1 has no finite estimate.
    resampled_hits = weights @ k
    resampled_trials = weights @ n
    ok &= (resampled_hits > 0) & (resampled_hits < resampled_trials)

    beta = beta[ok]
    fitted = logistic(beta @ x.T)
    mean_rate = (weights[ok] * n * fitted).sum(axis=1) / resampled_trials[ok]
    return BootstrapCurves(
        intercept=beta[:, 0],
        slope=beta[:, 1],
        mean_rate=mean_rate,
        replicates=replicates,
        failed=int((~ok).sum()),
    )
