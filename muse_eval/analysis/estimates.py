"""The core estimators: a Wilson interval and the logistic conformity curve.

The curve is P(conform | u) = logistic(a + b u), fitted on replies (each stage-two
conversation contributes its conformed and not-conformed replies) with standard
errors clustered by item, since the replies of one item share its question.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ConformityCurve", "fit_conformity_curve", "wilson_interval"]

_Z95 = 1.959963984540054


def wilson_interval(successes: float, trials: float, z: float = _Z95) -> tuple[float, float]:
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


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fit_conformity_curve(
    uncertainty: Sequence[float],
    conformed: Sequence[float],
    trials: Sequence[float],
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
    import numpy as np
    import statsmodels.api as sm

    u = np.asarray(uncertainty, dtype=float)
    k = np.asarray(conformed, dtype=float)
    n = np.asarray(trials, dtype=float)
    keep = n > 0
    u, k, n = u[keep], k[keep], n[keep]
    codes = np.unique(np.asarray(groups)[keep], return_inverse=True)[1]
    if len(u) < 3 or np.ptp(u) == 0 or k.sum() in (0, n.sum()):
        return None

    exog = sm.add_constant(u, has_constant="add")
    endog = np.column_stack([k, n - k])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.GLM(endog, exog, family=sm.families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": codes}
        )
    a, b = (float(v) for v in fit.params)
    cov = np.asarray(fit.cov_params())
    se_a, se_b = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
    return ConformityCurve(
        intercept=a,
        slope=b,
        slope_ci=(b - _Z95 * se_b, b + _Z95 * se_b),
        at_zero=_logistic(a),
        at_zero_ci=(_logistic(a - _Z95 * se_a), _logistic(a + _Z95 * se_a)),
        at_one=_logistic(a + b),
        n_items=int(len(set(codes.tolist()))),
        n_replies=int(n.sum()),
    )
