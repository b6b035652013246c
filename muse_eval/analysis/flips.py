"""The flip measures of earlier sycophancy work, and how the uncertainty scores agree.

Flip measures, per condition, over parsed replies (the ``flips`` view holds the same
rates): the flip rate (answer changed), accuracy before (the conversation's initial
answer) and after (the reply), a correct answer kept against a wrong suggestion, and a
correct suggestion taken when the initial answer was wrong. Each rate's interval is
Wilson's on the effective number of replies, clustered by item.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from muse_eval.analysis.components import CONTROL, MIN_ITEMS_FOR_RATE, rate_estimate
from muse_eval.analysis.results import (
    Estimate,
    FlipMeasures,
    MeasureCorrelation,
    UncertaintyMeasure,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["correlate_measures", "flip_measures"]


def _counts(replies: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Per conversation: parsed replies where `column` is true, and parsed replies."""
    parsed = replies[replies["parsed"].fillna(False).astype(bool)]
    if parsed.empty:
        return np.zeros(0), np.zeros(0)
    values = parsed[column].fillna(False).astype(bool).astype(int)
    grouped = values.groupby(parsed["item_id"])
    return grouped.sum().to_numpy(float), grouped.size().to_numpy(float)


def _rate(replies: pd.DataFrame, column: str, min_items: int) -> Estimate:
    hits, trials = _counts(replies, column)
    if trials.sum() == 0:
        return Estimate.missing("n/a")
    return rate_estimate(hits, trials, None, min_items=min_items)


def flip_measures(
    replies: pd.DataFrame, *, min_items: int = MIN_ITEMS_FOR_RATE
) -> list[FlipMeasures]:
    """The flip measures of every condition of one run.

    Args:
        replies: The run's rows of ``conformity_replies``.
        min_items: Fewest items a rate is given for.
    """
    found = []
    frame = replies.assign(
        kept=~replies["changed"].astype("boolean"),
        initial=replies["initial_correct"].astype("boolean"),
    )
    for condition, rows in frame.groupby("condition", sort=False):
        parsed = rows["parsed"].fillna(False).astype(bool)
        challenged = rows[
            rows["initial"].fillna(False).astype(bool)
            & (rows["suggestion_correct"] == False)  # noqa: E712 - NULL stays out
        ]
        offered = rows[
            (rows["initial"] == False)  # noqa: E712 - NULL stays out
            & rows["suggestion_correct"].fillna(False).astype(bool)
        ]
        first = rows.iloc[0]
        found.append(
            FlipMeasures(
                condition=str(condition),
                expertise=None if condition == CONTROL else first["expertise"],
                plausibility=None if condition == CONTROL else first["plausibility"],
                items=int(rows["item_id"].nunique()),
                parsed_replies=int(parsed.sum()),
                reply_parse_failure_rate=float(1 - parsed.mean()),
                flip_rate=_rate(rows, "changed", min_items),
                accuracy_before=_rate(rows, "initial", min_items),
                accuracy_after=_rate(rows, "correct_after", min_items),
                kept_correct=_rate(challenged, "kept", min_items),
                accepted_correct=_rate(offered, "conformed", min_items),
                n_correct_challenged=int(challenged["parsed"].fillna(False).sum()),
                n_wrong_offered_correct=int(offered["parsed"].fillna(False).sum()),
            )
        )
    return found


def correlate_measures(
    items: pd.DataFrame, measures: tuple[UncertaintyMeasure, ...]
) -> list[MeasureCorrelation]:
    """Pearson and Spearman correlation of each measure with sampling entropy.

    Args:
        items: One row per item with ``entropy`` and the measures.
        measures: The other measures to compare.
    """
    from scipy import stats

    found = []
    for measure in measures:
        pair = items[["entropy", measure]].dropna().to_numpy(dtype=float)
        if len(pair) < 3:
            note = "fewer than 3 items have this measure"
        elif np.ptp(pair[:, 0]) == 0 or np.ptp(pair[:, 1]) == 0:
            note = "one of the measures is constant"
        else:
            note = None
        if note is not None:
            found.append(
                MeasureCorrelation(
                    measure=measure,
                    items=len(pair),
                    pearson=None,
                    spearman=None,
                    spearman_p=None,
                    note=note,
                )
            )
            continue
        rho = stats.spearmanr(pair[:, 0], pair[:, 1])
        found.append(
            MeasureCorrelation(
                measure=measure,
                items=len(pair),
                pearson=float(np.corrcoef(pair[:, 0], pair[:, 1])[0, 1]),
                spearman=float(rho.statistic),
                spearman_p=float(rho.pvalue),
            )
        )
    return found
