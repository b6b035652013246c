"""The ablations: how both components move with expertise and plausibility.

One logistic model over every suggestion condition of a run (the control suggests
nothing and stays out):

    logit P(yield) = b0 + bE e + bP p + u (g0 + gE e + gP p)

with e the rank of the expertise level in the run's order (none 0, layperson 1,
expert 2 by default) and p the rank of the plausibility level in
`PLAUSIBILITY_ORDER` (implausible 0, plausible 1, correct 2). bE and bP are the
trends of sycophantic conformity (log-odds at u = 0, per level); gE and gP the trends
of the rise with uncertainty (the interaction terms). Errors are clustered by item,
since an item is challenged in every condition. Each trend gets a Wald z test, and
each factor a 2-df Wald test that it moves neither component.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from muse_eval.analysis.estimates import Z95, fit_logistic
from muse_eval.analysis.results import (
    Ablation,
    AblationTerm,
    Estimate,
    FactorTest,
    UncertaintyMeasure,
)
from muse_eval.providers.simulated import ConformityParameters

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PLAUSIBILITY_ORDER", "TERMS", "fit_ablation", "true_trends"]

#: Plausibility levels from least to most support for the suggestion: an option the
#: model never sampled, its own runner-up, and the right answer.
PLAUSIBILITY_ORDER = ("implausible", "plausible", "correct")

#: Coefficient name -> (component, factor).
TERMS: dict[str, tuple[str, str]] = {
    "intercept": ("baseline", "none"),
    "expertise": ("sycophantic", "expertise"),
    "plausibility": ("sycophantic", "plausibility"),
    "u": ("uncertainty-driven", "none"),
    "u:expertise": ("uncertainty-driven", "expertise"),
    "u:plausibility": ("uncertainty-driven", "plausibility"),
}


def _ranks(
    conversations: pd.DataFrame, expertise_order: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    e = conversations["expertise"].map({x: i for i, x in enumerate(expertise_order)})
    p = conversations["plausibility"].map(
        {x: i for i, x in enumerate(PLAUSIBILITY_ORDER)}
    )
    return e.to_numpy(dtype=float), p.to_numpy(dtype=float)


def fit_ablation(
    conversations: pd.DataFrame,
    *,
    measure: UncertaintyMeasure,
    expertise_order: Sequence[str],
    truth: dict[str, float] | None,
    min_items: int,
) -> Ablation:
    """Fit the trend model to a run's suggestion conditions.

    Args:
        conversations: Every conversation of the run (control rows are left out).
        measure: Which uncertainty score is u.
        expertise_order: The run's expertise levels, least expert first.
        truth: True coefficients by name (simulated runs only).
        min_items: Fewest items the model is fitted on.
    """
    from scipy import stats

    rows = conversations[conversations["suggestion_correct"].notna()]
    rows = rows[rows["trials"] > 0]
    rows = rows[rows[measure].notna()]
    e, p = _ranks(rows, expertise_order)
    known = ~(np.isnan(e) | np.isnan(p))
    rows, e, p = rows[known], e[known], p[known]
    u = rows[measure].to_numpy(dtype=float)
    result = Ablation(
        measure=measure,
        expertise_order=list(expertise_order),
        plausibility_order=list(PLAUSIBILITY_ORDER),
        conditions=sorted(rows["condition"].unique().tolist()),
        items=int(rows["item_id"].nunique()),
        conversations=len(rows),
        parsed_replies=int(rows["trials"].sum()),
    )
    if result.items < min_items:
        result.note = f"too few items ({result.items} < {min_items})"
        return result

    columns = {
        "intercept": np.ones_like(u),
        "expertise": e,
        "plausibility": p,
        "u": u,
        "u:expertise": u * e,
        "u:plausibility": u * p,
    }
    varying = [
        name
        for name, values in columns.items()
        if name in ("intercept", "u") or np.ptp(values) > 0
    ]
    dropped = [name for name in columns if name not in varying]
    design = np.column_stack([columns[name] for name in varying])
    fit = fit_logistic(
        design,
        rows["hits"].to_numpy(dtype=float),
        rows["trials"].to_numpy(dtype=float),
        rows["item_id"].astype(str).tolist(),
        varying,
    )
    if fit is None:
        result.note = "not estimable (no variation, or the fit diverged)"
        return result
    if dropped:
        result.note = "only one level of " + " and ".join(
            sorted({TERMS[name][1] for name in dropped})
        )

    se = fit.se()
    for index, name in enumerate(varying):
        value, error = float(fit.params[index]), float(se[index])
        z = value / error if error > 0 else None
        component, factor = TERMS[name]
        result.terms.append(
            AblationTerm(
                name=name,
                component=component,
                factor=factor,
                estimate=Estimate(
                    value=value,
                    low=value - Z95 * error,
                    high=value + Z95 * error,
                    method="wald-cluster",
                    truth=truth.get(name) if truth else None,
                ),
                z=z,
                p_value=float(2 * stats.norm.sf(abs(z))) if z is not None else None,
            )
        )
    for factor in ("expertise", "plausibility"):
        pair = [name for name in (factor, f"u:{factor}") if name in varying]
        if len(pair) < 2:
            continue
        contrast = np.zeros((2, len(varying)))
        for row, name in enumerate(pair):
            contrast[row, varying.index(name)] = 1.0
        chi2, df = fit.wald(contrast)
        result.tests.append(
            FactorTest(
                factor=factor,
                chi2=chi2,
                df=int(df),
                p_value=float(stats.chi2.sf(chi2, df)),
            )
        )
    return result


def true_trends(
    curves: dict[str, ConformityParameters], expertise_order: Sequence[str]
) -> dict[str, float] | None:
    """The trend model's true coefficients, when the true curves follow it exactly.

    Args:
        curves: True curve of each suggestion condition, by condition id.
        expertise_order: The run's expertise levels, least expert first.

    Returns:
        Coefficients by name, or None when the curves are not additive in the ranks
        (then the trend model has no single true value).
    """
    rows, intercepts, slopes = [], [], []
    for condition, curve in curves.items():
        who, _, level = condition.partition("/")
        if who not in expertise_order or level not in PLAUSIBILITY_ORDER:
            return None
        rows.append(
            [1.0, float(expertise_order.index(who)), PLAUSIBILITY_ORDER.index(level)]
        )
        intercepts.append(curve.intercept)
        slopes.append(curve.slope)
    if len(rows) < 3:
        return None
    x = np.asarray(rows, dtype=float)
    # A factor with one level is not in the fitted model; leave it out here too.
    used = [0] + [j for j in (1, 2) if np.ptp(x[:, j]) > 0]
    x = x[:, used]
    found = {}
    for names, values in (
        (("intercept", "expertise", "plausibility"), intercepts),
        (("u", "u:expertise", "u:plausibility"), slopes),
    ):
        coef, *_ = np.linalg.lstsq(x, np.asarray(values), rcond=None)
        if np.max(np.abs(x @ coef - np.asarray(values))) > 1e-9:
            return None
        chosen = [names[j] for j in used]
        found.update({name: float(c) for name, c in zip(chosen, coef, strict=True)})
    return found
