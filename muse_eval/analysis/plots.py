"""The report's figures, drawn with matplotlib's Agg canvas (no display needed).

Every figure names the model, task, N, temperatures and the items behind each panel,
and says SIMULATED in its title when the run used the simulated backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from muse_eval.analysis.ablation import PLAUSIBILITY_ORDER
from muse_eval.analysis.components import CONTROL
from muse_eval.analysis.estimates import clustered_wilson, logistic
from muse_eval.analysis.results import ConditionComponents, Estimate, RunAnalysis
from muse_eval.config import PLAUSIBILITY_LEVELS

__all__ = [
    "plot_components",
    "plot_curves",
    "plot_measures",
    "plot_models",
    "png_bytes",
]

#: Edges of the u bins whose observed rates are drawn as points (u = 0 is its own).
_BINS = (0.0, 0.25, 0.5, 0.75, 1.0)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _title(result: RunAnalysis, what: str) -> str:
    run = result.run
    label = "SIMULATED backend (not a model): " if run.simulated else ""
    return (
        f"{label}{what}\n{run.model} on {run.task}, N = {run.samples} at "
        f"T = {run.temperature:g}, M = {run.pushback_samples} at "
        f"T = {run.pushback_temperature:g}"
    )


def _binned(c: ConditionComponents) -> list[tuple[float, float, float, float, int]]:
    """(centre, rate, low, high, items) of the observed rate in each u bin."""
    u = np.asarray(c.items_u)
    trials = np.asarray(c.items_trials, dtype=float)
    hits = np.asarray(c.items_rate) * trials
    found = []
    masks = [(np.abs(u) <= 1e-12, 0.0)]
    for low, high in zip(_BINS[:-1], _BINS[1:], strict=True):
        masks.append(((u > max(low, 1e-12)) & (u <= high), (low + high) / 2))
    for mask, centre in masks:
        if trials[mask].sum() == 0:
            continue
        rate, low_ci, high_ci, _ = clustered_wilson(hits[mask], trials[mask])
        found.append((centre, rate, low_ci, high_ci, int(mask.sum())))
    return found


def _curve_panel(ax: object, c: ConditionComponents, simulated: bool) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    if c.curve:
        u = [p.u for p in c.curve]
        ax.fill_between(
            u,
            [p.low for p in c.curve],
            [p.high for p in c.curve],
            alpha=0.25,
            color=_COLOURS[0],
            linewidth=0,
            label="fit, 95 % band",
        )
        low_u = c.basis.lowest_u or 0.0
        high_u = c.basis.highest_u if c.basis.highest_u is not None else 1.0
        inside = [p for p in c.curve if low_u - 1e-9 <= p.u <= high_u + 1e-9]
        ax.plot(
            [p.u for p in inside],
            [p.p for p in inside],
            color=_COLOURS[0],
            linewidth=2,
            label="fit",
        )
        # Beyond the items' range of u the curve is an extrapolation: dashed.
        for part in (
            [p for p in c.curve if p.u <= low_u + 1e-9],
            [p for p in c.curve if p.u >= high_u - 1e-9],
        ):
            if len(part) > 1:
                ax.plot(
                    [p.u for p in part],
                    [p.p for p in part],
                    color=_COLOURS[0],
                    linewidth=1.5,
                    linestyle=(0, (2, 2)),
                )
    for centre, rate, low, high, items in _binned(c):
        ax.errorbar(
            centre,
            rate,
            yerr=[[max(0.0, rate - low)], [max(0.0, high - rate)]],
            fmt="o",
            color="black",
            markersize=3 + min(items, 80) / 10,
            capsize=2,
            label=None,
        )
    if simulated and c.intercept.truth is not None and c.slope.truth is not None:
        grid = np.linspace(0, 1, 51)
        ax.plot(
            grid,
            logistic(c.intercept.truth + c.slope.truth * grid),
            "--",
            color="#444444",
            linewidth=1.2,
            label="true curve",
        )
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    note = c.slope.note if c.slope.value is None else None
    title = f"{c.condition}\n{c.basis.items} items, {c.basis.items_at_zero} at u = 0"
    ax.set_title(title, fontsize=9)
    if note:
        ax.text(
            0.5,
            0.5,
            note,
            ha="center",
            va="center",
            fontsize=8,
            wrap=True,
            transform=ax.transAxes,
            color="#aa0000",
        )


def plot_curves(result: RunAnalysis) -> Figure:
    """Conformity against u with its band: one panel per condition.

    Rows are expertise levels and columns plausibility levels; the control has
    its own column. Points: observed rates in u bins (u = 0 alone) with Wilson
    intervals, sized by items.
    """
    by_condition = {c.condition: c for c in result.components}
    expertise = [e for e in _levels(result, "expertise")]
    plausibility = [p for p in PLAUSIBILITY_LEVELS if _present(result, p)]
    rows, cols = max(1, len(expertise)), 1 + max(1, len(plausibility))
    figure = Figure(figsize=(3.2 * cols, 2.7 * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False)
    for row in range(rows):
        for col in range(cols):
            axes[row][col].set_visible(False)
    if CONTROL in by_condition:
        axes[0][0].set_visible(True)
        _curve_panel(axes[0][0], by_condition[CONTROL], result.run.simulated)
        axes[0][0].set_title(
            axes[0][0].get_title().replace("control", "control: changed answer"),
            fontsize=9,
        )
        axes[0][0].set_ylabel("P(changed answer)")
        axes[0][0].set_xlabel("u: stage-one sampling entropy")
    for row, who in enumerate(expertise):
        for col, level in enumerate(plausibility, start=1):
            c = by_condition.get(f"{who}/{level}")
            if c is None:
                continue
            ax = axes[row][col]
            ax.set_visible(True)
            _curve_panel(ax, c, result.run.simulated)
            if col == 1:
                ax.set_ylabel(f"P(took suggestion)\n{who}")
            if row == rows - 1:
                ax.set_xlabel("u: stage-one sampling entropy")
    if rows > 1:
        legend_ax = axes[1][0]
        legend_ax.set_visible(True)
        legend_ax.axis("off")
        handles, labels = axes[0][1 if plausibility else 0].get_legend_handles_labels()
        legend_ax.legend(handles, labels, loc="center", fontsize=8, frameon=False)
        legend_ax.text(
            0.5,
            0.1,
            "points: observed rate in u bins\n(u = 0 alone), Wilson 95 %",
            ha="center",
            fontsize=8,
            transform=legend_ax.transAxes,
        )
    figure.suptitle(_title(result, "Conformity against uncertainty"), fontsize=11)
    return figure


def _levels(result: RunAnalysis, factor: str) -> list[str]:
    seen: list[str] = []
    for c in result.components:
        value = getattr(c, factor)
        if value is not None and value not in seen:
            seen.append(value)
    return seen


def _present(result: RunAnalysis, level: str) -> bool:
    return any(c.plausibility == level for c in result.components)


def _errorbar(
    ax: object,
    x: float,
    estimate: Estimate,
    colour: str,
    label: str | None,
    marker: str = "o",
    scale: float = 1.0,
) -> None:
    from matplotlib.axes import Axes

    assert isinstance(ax, Axes)
    if estimate.value is None:
        return
    value = scale * estimate.value
    low = scale * (estimate.low if estimate.low is not None else estimate.value)
    high = scale * (estimate.high if estimate.high is not None else estimate.value)
    # A percentile interval need not contain the estimate; draw what it spans.
    ax.errorbar(
        x,
        value,
        yerr=[[max(0.0, value - low)], [max(0.0, high - value)]],
        fmt=marker,
        color=colour,
        capsize=3,
        label=label,
    )
    if estimate.truth is not None:
        ax.plot(
            x,
            scale * estimate.truth,
            marker="x",
            color="black",
            markersize=7,
            linestyle="none",
        )


def plot_components(result: RunAnalysis) -> Figure:
    """Both components by expertise and by plausibility (2 x 2 panels)."""
    by_condition = {c.condition: c for c in result.components}
    expertise = _levels(result, "expertise")
    plausibility = [p for p in PLAUSIBILITY_ORDER if _present(result, p)]
    figure = Figure(figsize=(11, 7.5), layout="constrained")
    axes = figure.subplots(2, 2, squeeze=False)
    components = (
        ("at_zero", "sycophantic: P(yield | u = 0)", 1.0),
        ("rise", "uncertainty-driven: P(u = 1) − P(u = 0)", 1.0),
    )
    for row, (name, label, scale) in enumerate(components):
        for col, (factor, levels, lines) in enumerate(
            (
                ("expertise", expertise, plausibility),
                ("plausibility", plausibility, expertise),
            )
        ):
            ax = axes[row][col]
            for index, line in enumerate(lines):
                colour = _COLOURS[index % len(_COLOURS)]
                xs: list[float] = []
                ys: list[float] = []
                for x, level in enumerate(levels):
                    condition = (
                        f"{level}/{line}"
                        if factor == "expertise"
                        else f"{line}/{level}"
                    )
                    c = by_condition.get(condition)
                    if c is None:
                        continue
                    estimate = getattr(c, name)
                    offset = (index - (len(lines) - 1) / 2) * 0.1
                    _errorbar(
                        ax,
                        x + offset,
                        estimate,
                        colour,
                        line if x == 0 or not xs else None,
                        scale=scale,
                    )
                    if estimate.value is not None:
                        xs.append(x + offset)
                        ys.append(scale * estimate.value)
                ax.plot(xs, ys, color=colour, alpha=0.6)
            control = by_condition.get(CONTROL)
            if control is not None and getattr(control, name).value is not None:
                value = scale * getattr(control, name).value
                ax.axhline(value, color="grey", linestyle=":", label="control")
            ax.set_xticks(range(len(levels)), levels)
            ax.set_xlabel(factor)
            ax.set_ylabel(label, fontsize=9)
            ax.grid(alpha=0.3)
            if not ax.get_legend_handles_labels()[0]:
                _say_missing(ax, result, name)
                continue
            ax.legend(
                fontsize=8,
                title="plausibility" if col == 0 else "expertise",
                title_fontsize=8,
            )
    tests = {t.factor: t for t in (result.ablation.tests if result.ablation else [])}
    subtitle = "; ".join(
        f"{factor}: χ² = {t.chi2:.1f}, p = {t.p_value:.2g}"
        for factor, t in tests.items()
    )
    title = _title(result, "Both components by expertise and by plausibility")
    counts = [c.basis.items for c in result.components if c.condition != CONTROL]
    if counts:
        title += f", {min(counts)}–{max(counts)} items per condition"
    if subtitle:
        title += f"\njoint Wald tests that a factor moves neither component: {subtitle}"
    figure.suptitle(title, fontsize=11)
    if result.run.simulated:
        figure.text(0.99, 0.005, "x: true value", ha="right", fontsize=8)
    return figure


def _say_missing(ax: Axes, result: RunAnalysis, name: str) -> None:
    """Write on an empty panel why it is empty."""
    notes = {getattr(c, name).note for c in result.components} - {None}
    ax.text(
        0.5,
        0.5,
        "no estimate: " + "; ".join(sorted(str(n) for n in notes))[:80],
        ha="center",
        va="center",
        fontsize=9,
        color="#aa0000",
        transform=ax.transAxes,
    )


def plot_measures(result: RunAnalysis) -> Figure | None:
    """Each other uncertainty measure against sampling entropy, per item."""
    correlations = {c.measure: c for c in result.correlations}
    if not correlations or not result.item_scores:
        return None
    figure = Figure(figsize=(4.2 * len(correlations), 4.0), layout="constrained")
    axes = figure.subplots(1, len(correlations), squeeze=False)[0]
    for ax, (measure, corr) in zip(axes, correlations.items(), strict=True):
        pairs = [
            (item.entropy, getattr(item, measure))
            for item in result.item_scores
            if item.entropy is not None and getattr(item, measure) is not None
        ]
        if pairs:
            x, y = zip(*pairs, strict=True)
            ax.scatter(x, y, s=12, alpha=0.6, color=_COLOURS[0])
        if corr.spearman is not None and corr.pearson is not None:
            ax.set_title(
                f"{measure}: Pearson r = {corr.pearson:.2f}, Spearman ρ = "
                f"{corr.spearman:.2f}\n{corr.items} items",
                fontsize=9,
            )
        else:
            ax.set_title(f"{measure}: {corr.note}", fontsize=9)
        ax.set_xlabel("sampling entropy u")
        ax.set_ylabel(measure)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    figure.suptitle(_title(result, "Uncertainty measures, per item"), fontsize=10)
    return figure


def plot_models(results: Sequence[RunAnalysis]) -> Figure:
    """Both components of every run side by side, condition by condition."""
    conditions: list[str] = []
    for result in results:
        for c in result.components:
            if c.condition not in conditions:
                conditions.append(c.condition)
    figure = Figure(
        figsize=(max(8.0, 1.1 * len(conditions)), 7.5), layout="constrained"
    )
    axes = figure.subplots(2, 1, sharex=True, squeeze=False)[:, 0]
    width = 0.7 / max(1, len(results))
    for index, result in enumerate(results):
        colour = _COLOURS[index % len(_COLOURS)]
        by_condition = {c.condition: c for c in result.components}
        label = result.run.model + (" (SIMULATED)" if result.run.simulated else "")
        label += f", {result.run.items} items"
        for row, name in enumerate(("at_zero", "rise")):
            first = True
            for x, condition in enumerate(conditions):
                found = by_condition.get(condition)
                if found is None:
                    continue
                offset = (index - (len(results) - 1) / 2) * width
                estimate = getattr(found, name)
                _errorbar(
                    axes[row], x + offset, estimate, colour, label if first else None
                )
                first = first and estimate.value is None
            if first:
                axes[row].plot([], [], "o", color=colour, label=f"{label}: no estimate")
    axes[0].set_ylabel("sycophantic: P(yield | u = 0)")
    axes[1].set_ylabel("uncertainty-driven: P(1) − P(0)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[1].set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
    simulated = any(r.run.simulated for r in results)
    label = "SIMULATED runs included. " if simulated else ""
    figure.suptitle(
        f"{label}Model by model: both components per condition", fontsize=11
    )
    if simulated:
        figure.text(0.99, 0.005, "x: true value (simulated)", ha="right", fontsize=8)
    return figure
