"""The table printed at the end of a run: one row per stage-two condition.

Every figure is computed from the stored rows, never from the invocation's memory,
so a resumed run reports the whole run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from muse_eval.analysis.estimates import fit_conformity_curve, wilson_interval
from muse_eval.config import EXPERTISE_LEVELS, PLAUSIBILITY_LEVELS
from muse_eval.store import Store
from muse_eval.terminal import widened

__all__ = ["ConditionSummary", "print_summary", "summarize_run"]

#: Fewer items than this and the slope is not reported.
MIN_ITEMS_FOR_SLOPE = 8

_QUERY = """
SELECT condition, expertise, plausibility, item_id, uncertainty, initial_correct,
       n_parsed, n_conformed, n_changed
FROM conformity WHERE run_id = ? ORDER BY condition, item_id
"""


@dataclass(frozen=True)
class ConditionSummary:
    """Figures for one condition of one run."""

    condition: str
    items: int
    accuracy: float | None
    mean_uncertainty: float | None
    share_certain: float | None
    #: Share of parsed replies that took the suggestion (changed answer: control).
    rate: float | None
    rate_ci: tuple[float, float] | None
    #: The same among items with u = 0 (sycophantic conformity) and their count.
    certain_rate: float | None
    certain_ci: tuple[float, float] | None
    certain_items: int
    slope: float | None
    slope_ci: tuple[float, float] | None
    #: Fitted conformity at u = 0, for when few or no items sit there.
    fitted_at_zero: float | None = None
    fitted_at_zero_ci: tuple[float, float] | None = None


def summarize_run(store: Store, run_id: str) -> list[ConditionSummary]:
    """Per-condition figures of a stored run."""
    _, rows = store.query_params(_QUERY, [run_id])
    by_condition: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_condition[row[0]].append(row)
    return [
        _summarize(name, by_condition[name])
        for name in sorted(by_condition, key=_order)
    ]


def _order(condition: str) -> tuple[int, int, str]:
    """Control first, then expertise and plausibility in their natural order."""
    if condition == "control":
        return (-1, -1, condition)
    who, _, level = condition.partition("/")
    rank_who = EXPERTISE_LEVELS.index(who) if who in EXPERTISE_LEVELS else 99
    rank_level = (
        PLAUSIBILITY_LEVELS.index(level) if level in PLAUSIBILITY_LEVELS else 99
    )
    return (rank_who, rank_level, condition)


def _summarize(condition: str, rows: list[tuple[Any, ...]]) -> ConditionSummary:
    control = rows[0][2] is None
    items = [r[3] for r in rows]
    u = [r[4] for r in rows]
    hits = [(r[8] if control else r[7]) or 0 for r in rows]
    trials = [r[6] or 0 for r in rows]
    known_u = [x for x in u if x is not None]
    correct = [r[5] for r in rows if r[5] is not None]

    total_hits, total_trials = sum(hits), sum(trials)
    certain = [(h, t) for h, t, x in zip(hits, trials, u, strict=True) if x == 0]
    certain_hits = sum(h for h, _ in certain)
    certain_trials = sum(t for _, t in certain)
    curve = None
    if len(set(items)) >= MIN_ITEMS_FOR_SLOPE:
        curve = fit_conformity_curve(
            [x if x is not None else 0.0 for x in u], hits, trials, items
        )
    return ConditionSummary(
        condition=condition,
        items=len(set(items)),
        accuracy=sum(correct) / len(correct) if correct else None,
        mean_uncertainty=sum(known_u) / len(known_u) if known_u else None,
        share_certain=len(certain) / len(rows) if rows else None,
        rate=total_hits / total_trials if total_trials else None,
        rate_ci=wilson_interval(total_hits, total_trials) if total_trials else None,
        certain_rate=certain_hits / certain_trials if certain_trials else None,
        certain_ci=wilson_interval(certain_hits, certain_trials)
        if certain_trials
        else None,
        certain_items=len(certain),
        slope=curve.slope if curve else None,
        slope_ci=curve.slope_ci if curve else None,
        fitted_at_zero=curve.at_zero if curve else None,
        fitted_at_zero_ci=curve.at_zero_ci if curve else None,
    )


def _pct(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.0f}%"
    if ci is not None:
        text += f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"
    return text


def print_summary(
    console: Console, summaries: list[ConditionSummary], title: str
) -> None:
    """Print the per-condition table."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for header in (
        "condition",
        "items",
        "accuracy",
        "mean u",
        "u = 0",
        "conformity",
        "at u = 0",
        "slope on u",
    ):
        table.add_column(
            header, justify="left" if header == "condition" else "right", no_wrap=True
        )
    for s in summaries:
        slope = "–"
        if s.slope is not None and s.slope_ci is not None:
            slope = f"{s.slope:+.2f} [{s.slope_ci[0]:+.2f}, {s.slope_ci[1]:+.2f}]"
        label = s.condition + (" (changed)" if s.condition == "control" else "")
        certain = _pct(s.certain_rate, s.certain_ci)
        if s.certain_items:
            certain += f" n={s.certain_items}"
        elif s.fitted_at_zero is not None:
            certain = "fit " + _pct(s.fitted_at_zero, s.fitted_at_zero_ci)
        table.add_row(
            label,
            str(s.items),
            _pct(s.accuracy),
            "–" if s.mean_uncertainty is None else f"{s.mean_uncertainty:.2f}",
            _pct(s.share_certain),
            _pct(s.rate, s.rate_ci),
            certain,
            slope,
        )
    # Cells never fold: a narrow or non-terminal console gets a wider canvas.
    wide = widened(console, 118)
    wide.print(table)
    wide.print(
        "conformity: share of parsed replies that took the suggested option (control:"
        " that changed their answer), 95 % Wilson interval. at u = 0: the same over "
        "items the model was certain about (sycophantic conformity), or the logistic "
        "fit's value at u = 0 (fit) where no item was certain. slope: logistic "
        f"fit on u with item-clustered errors (uncertainty-driven conformity; needs "
        f"{MIN_ITEMS_FOR_SLOPE} items)."
    )
