"""The analysis as tables: built once, printed by rich or written into the report.

`run_tables` turns one run's analysis into `ResultTable`s of text cells; the terminal
(`print_analysis`) and the HTML report render the same cells, so both show the same
numbers. A missing estimate shows its reason instead of a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from muse_eval.analysis.results import (
    Analysis,
    ConditionComponents,
    Estimate,
    RunAnalysis,
    RunInfo,
)

__all__ = [
    "SIMULATED_LABEL",
    "Cell",
    "ResultTable",
    "percent",
    "print_analysis",
    "run_heading",
    "run_tables",
    "signed",
    "simulated_banner",
]

SIMULATED_LABEL = (
    "SIMULATED: the simulated test backend, not a real model; these numbers only "
    "check that the estimators recover known parameters."
)


def simulated_banner(analysis: Analysis) -> str | None:
    """The warning an output opens with when any run is simulated."""
    simulated = [r.run.run_id for r in analysis.runs if r.run.simulated]
    if not simulated:
        return None
    if len(simulated) == len(analysis.runs):
        return SIMULATED_LABEL
    return (
        f"Includes SIMULATED runs ({', '.join(simulated)}): the simulated test "
        "backend, not a real model; they are marked SIMULATED below."
    )


class Cell(NamedTuple):
    """One table cell: its text, and whether it stands in for a missing number."""

    text: str
    missing: bool = False


@dataclass
class ResultTable:
    """A titled table of text cells with a caption that says how to read it."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str = ""
    #: Leading columns that hold text (aligned left); the rest hold numbers.
    text_columns: int = 1


def percent(estimate: Estimate, *, interval: bool = True) -> Cell:
    """A probability as a percentage with its interval."""
    if estimate.value is None:
        return Cell(estimate.note or "–", missing=True)
    text = f"{100 * estimate.value:.1f}%"
    if interval and estimate.low is not None and estimate.high is not None:
        text += f" [{100 * estimate.low:.1f}, {100 * estimate.high:.1f}]"
    return Cell(text)


def signed(estimate: Estimate, *, scale: float = 1.0, digits: int = 2) -> Cell:
    """A signed number (a log-odds or a difference) with its interval."""
    if estimate.value is None:
        return Cell(estimate.note or "–", missing=True)
    text = f"{scale * estimate.value:+.{digits}f}"
    if estimate.low is not None and estimate.high is not None:
        low, high = scale * estimate.low, scale * estimate.high
        text += f" [{low:+.{digits}f}, {high:+.{digits}f}]"
    return Cell(text)


def _p_value(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _p_text(value: float | None) -> str:
    """'p < 0.0001' or 'p = 0.0123'."""
    text = _p_value(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def run_heading(run: RunInfo) -> str:
    """One line that says what the run's estimates rest on."""
    return (
        f"{run.model} ({run.provider}) on {run.task}: {run.items} items, "
        f"N = {run.samples} samples at T = {run.temperature:g}, "
        f"M = {run.pushback_samples} replies at T = {run.pushback_temperature:g}; "
        f"parse failures {100 * run.sample_parse_failure_rate:.1f}% (stage one), "
        f"{100 * run.reply_parse_failure_rate:.1f}% (stage two). Run {run.run_id}."
    )


def _sycophantic_table(run: RunAnalysis) -> ResultTable:
    table = ResultTable(
        key="sycophantic",
        title="Sycophantic conformity: yielding when certain (u = sampling entropy)",
        headers=[
            "condition",
            "items",
            "u = 0",
            "u range",
            "replies",
            "parse fail",
            "yield rate",
            "P(u=0) fitted",
            "P(u=0) observed",
            "baseline share",
        ],
        caption=(
            "Yield: the reply took the suggested option (control: changed its answer). "
            "items: items with parsed replies; u = 0: of those, items whose N samples "
            "all agreed; u range: the lowest and highest u (a lowest u above 0 means "
            "P(u=0) fitted is an extrapolation); replies: parsed replies; parse fail: "
            "share of replies that "
            "did not parse. P(u=0) fitted: the logistic fit at u = 0, Wald interval "
            "with errors clustered by item; observed: the rate over the items with "
            "u = 0, Wilson interval on the effective number of replies. Baseline "
            "share: P(u=0) fitted / yield rate, the part of all yielding that is "
            "there without uncertainty (bootstrap interval). All intervals 95 %."
        ),
    )
    for c in run.components:
        table.rows.append(
            [
                Cell(c.condition),
                Cell(str(c.basis.items)),
                Cell(str(c.basis.items_at_zero)),
                _u_range(c),
                Cell(str(c.basis.parsed_replies)),
                Cell(f"{100 * c.basis.reply_parse_failure_rate:.1f}%"),
                percent(c.rate),
                percent(c.at_zero),
                percent(c.at_zero_empirical),
                percent(c.baseline_share),
            ]
        )
    return table


def _u_range(c: ConditionComponents) -> Cell:
    low, high = c.basis.lowest_u, c.basis.highest_u
    if low is None or high is None:
        return Cell("–", missing=True)
    return Cell(f"{low:.2f}–{high:.2f}")


def _uncertainty_table(run: RunAnalysis) -> ResultTable:
    table = ResultTable(
        key="uncertainty",
        title="Uncertainty-driven conformity: the rise of yielding with u",
        headers=[
            "condition",
            "items",
            "slope (Wald)",
            "slope (bootstrap)",
            "P(u=1) fitted",
            "P(1) − P(0), points",
        ],
        caption=(
            "slope: log-odds of yielding per unit of u, with the item-clustered Wald "
            "interval and the percentile interval of a bootstrap over items. "
            "P(1) − P(0): the rise from certain to maximally uncertain, in percentage "
            "points, bootstrap interval. All intervals 95 %."
        ),
    )
    for c in run.components:
        table.rows.append(
            [
                Cell(c.condition),
                Cell(str(c.basis.items)),
                signed(c.slope),
                signed(c.slope_bootstrap),
                percent(c.at_one),
                signed(c.rise, scale=100, digits=1),
            ]
        )
    return table


def _truth_table(run: RunAnalysis) -> ResultTable | None:
    estimates = [
        ("fitted", "at_zero"),
        ("observed", "at_zero_empirical"),
        ("Wald", "slope"),
        ("bootstrap", "slope_bootstrap"),
        ("rise", "rise"),
        ("share", "baseline_share"),
    ]
    if not any(c.slope.truth is not None for c in run.components):
        return None
    table = ResultTable(
        key="truth",
        title="SIMULATED: recovery of the known parameters",
        headers=["condition", "true P(u=0)", "true slope", "true P(1) − P(0)"]
        + [short for short, _ in estimates],
        caption=(
            "True values of the simulated backend at the run's stage-two temperature; "
            "then, for each interval of the tables above (P(u=0) fitted and observed, "
            "the slope's Wald and bootstrap intervals, P(1) − P(0), baseline share), "
            "'yes' where it holds the true value."
        ),
    )
    covered = total = 0
    for c in run.components:
        row = [
            Cell(c.condition),
            _truth_cell(c.at_zero.truth, percent=True),
            _truth_cell(c.slope.truth),
            _truth_cell(c.rise.truth, percent=True),
        ]
        for _, name in estimates:
            verdict = getattr(c, name).covers_truth
            if verdict is not None:
                covered += verdict
                total += 1
            row.append(Cell("–" if verdict is None else ("yes" if verdict else "NO")))
        table.rows.append(row)
    if total:
        table.caption += f" {covered} of {total} intervals hold the truth."
    return table


def _truth_cell(value: float | None, *, percent: bool = False) -> Cell:
    if value is None:
        return Cell("–", missing=True)
    return Cell(f"{100 * value:.1f}%" if percent else f"{value:+.2f}")


def _ablation_table(run: RunAnalysis) -> ResultTable | None:
    ablation = run.ablation
    if ablation is None:
        return None
    table = ResultTable(
        key="ablation",
        title="Ablations: trends with expertise and plausibility, one model",
        text_columns=3,
        headers=["term", "component", "factor", "log-odds [95 % CI]", "z", "p"],
        caption=(
            "logit P(yield) = b0 + bE·e + bP·p + u·(g0 + gE·e + gP·p) over every "
            "suggestion condition, e = rank of expertise "
            f"({' < '.join(ablation.expertise_order)}), p = rank of plausibility "
            f"({' < '.join(ablation.plausibility_order)}); errors clustered by item; "
            f"{ablation.items} items, {ablation.conversations} conversations, "
            f"{ablation.parsed_replies} parsed replies. Terms on expertise or "
            "plausibility are the trends (per level) of the sycophantic level and "
            "of the rise with u; z and p test each trend."
        ),
    )
    if ablation.note:
        table.caption += f" Note: {ablation.note}."
    has_truth = any(t.estimate.truth is not None for t in ablation.terms)
    if has_truth:
        table.headers += ["true", "covers"]
    for term in ablation.terms:
        row = [
            Cell(term.name),
            Cell(term.component),
            Cell(term.factor if term.factor != "none" else "–"),
            signed(term.estimate),
            Cell("–" if term.z is None else f"{term.z:+.2f}"),
            Cell(_p_value(term.p_value)),
        ]
        if has_truth:
            truth, verdict = term.estimate.truth, term.estimate.covers_truth
            row += [
                _truth_cell(truth),
                Cell("–" if verdict is None else ("yes" if verdict else "NO")),
            ]
        table.rows.append(row)
    for test in ablation.tests:
        table.caption += (
            f" Joint test that {test.factor} moves neither component: "
            f"χ² = {test.chi2:.1f} on {test.df} df, {_p_text(test.p_value)}."
        )
    if not ablation.terms:
        table.rows.append([Cell(ablation.note or "not fitted", missing=True)])
    return table


def _measures_table(run: RunAnalysis) -> ResultTable:
    table = ResultTable(
        key="measures",
        title="The same with the other uncertainty measures",
        text_columns=2,
        headers=[
            "measure",
            "condition",
            "items",
            "u = 0",
            "u range",
            "P(u=0) fitted",
            "slope (Wald)",
            "P(1) − P(0)",
            "baseline share",
        ],
        caption=(
            "letter_entropy: normalized entropy of the first token's probabilities "
            "over the option letters (one pass, needs logprobs); disagreement: "
            "1 − agreement (share of the modal answer), rescaled to [0, 1]. "
        ),
    )
    for c in sorted(run.other_measures, key=lambda c: c.measure):
        table.rows.append(_measure_row(c))
    for corr in run.correlations:
        if corr.pearson is None or corr.spearman is None:
            table.caption += f" {corr.measure}: {corr.note}."
            continue
        table.caption += (
            f" {corr.measure} against sampling entropy over {corr.items} items: "
            f"Pearson r = {corr.pearson:.2f}, Spearman ρ = {corr.spearman:.2f} "
            f"({_p_text(corr.spearman_p)})."
        )
    return table


def _measure_row(c: ConditionComponents) -> list[Cell]:
    return [
        Cell(c.measure),
        Cell(c.condition),
        Cell(str(c.basis.items)),
        Cell(str(c.basis.items_at_zero)),
        _u_range(c),
        percent(c.at_zero),
        signed(c.slope),
        signed(c.rise, scale=100, digits=1),
        percent(c.baseline_share),
    ]


def _flips_table(run: RunAnalysis) -> ResultTable:
    table = ResultTable(
        key="flips",
        title="Flip measures of earlier sycophancy work",
        headers=[
            "condition",
            "items",
            "replies",
            "flip rate",
            "accuracy before",
            "accuracy after",
            "kept correct",
            "n",
            "took correct",
            "n",
        ],
        caption=(
            "Over parsed replies: flip rate = answer changed; accuracy before = the "
            "conversation's initial answer was correct, after = the reply is; kept "
            "correct = a correct initial answer kept against a wrong suggestion; took "
            "correct = a correct suggestion taken when the initial answer was wrong "
            "(n: the replies each rests on). Wilson intervals on the effective number "
            "of replies, clustered by item."
        ),
    )
    for f in run.flips:
        table.rows.append(
            [
                Cell(f.condition),
                Cell(str(f.items)),
                Cell(str(f.parsed_replies)),
                percent(f.flip_rate),
                percent(f.accuracy_before),
                percent(f.accuracy_after),
                percent(f.kept_correct),
                Cell(str(f.n_correct_challenged)),
                percent(f.accepted_correct),
                Cell(str(f.n_wrong_offered_correct)),
            ]
        )
    return table


def run_tables(run: RunAnalysis) -> list[ResultTable]:
    """Every table of one run's analysis, in reading order."""
    tables = [_sycophantic_table(run), _uncertainty_table(run)]
    truth = _truth_table(run)
    if truth is not None:
        tables.append(truth)
    ablation = _ablation_table(run)
    if ablation is not None:
        tables.append(ablation)
    tables += [_measures_table(run), _flips_table(run)]
    return tables


def print_analysis(console: Console, analysis: Analysis) -> None:
    """Print every run's tables to the terminal."""
    wide = Console(
        file=console.file,
        width=max(console.width, 160),
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )
    banner = simulated_banner(analysis)
    if banner:
        wide.print(Panel(Text(banner, style="bold black on yellow")))
    for result in analysis.runs:
        run = result.run
        label = " [bold black on yellow] SIMULATED [/]" if run.simulated else ""
        wide.rule(f"[bold]{run.model}[/] on {run.task}{label}")
        wide.print(run_heading(run), highlight=False)
        for note in result.notes:
            wide.print(f"[yellow]{note}[/]", highlight=False)
        for table in run_tables(result):
            rendered = _rich_table(table, simulated=run.simulated)
            needed = Console(width=400).measure(rendered).maximum
            fitting = Console(
                file=console.file,
                width=max(wide.width, needed),
                force_terminal=console.is_terminal,
                no_color=console.no_color,
            )
            fitting.print(rendered)
            wide.print(Text(table.caption, style="dim"))
            wide.print()
    wide.print(
        f"Bootstrap: {analysis.bootstrap_replicates} item resamples (seed "
        f"{analysis.seed}). Curves need {analysis.min_items} items, rates "
        f"{analysis.min_items_for_rate} (the observed u = 0 rate: at u = 0). Inputs: "
        "views conformity_replies and flips (muse-eval sql).",
        highlight=False,
    )


def _rich_table(table: ResultTable, *, simulated: bool) -> Table:
    title = table.title + (" [SIMULATED]" if simulated else "")
    rendered = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, title_style="bold"
    )
    for index, header in enumerate(table.headers):
        rendered.add_column(
            header,
            justify="left" if index < table.text_columns else "right",
            no_wrap=index > 0,
        )
    for row in table.rows:
        cells = [Text(c.text, style="dim italic" if c.missing else "") for c in row]
        rendered.add_row(*cells)
    return rendered
