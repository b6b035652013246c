"""What the analysis produces, as pydantic models.

The terminal tables, the JSON of ``muse-eval analyze --format json`` and the HTML
report all read these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "Ablation",
    "AblationTerm",
    "Analysis",
    "Basis",
    "ConditionComponents",
    "CurvePoint",
    "Estimate",
    "FactorTest",
    "FlipMeasures",
    "ItemScores",
    "MeasureCorrelation",
    "RunAnalysis",
    "RunInfo",
    "UncertaintyMeasure",
]

#: The uncertainty scores conformity can be regressed on (all in [0, 1]).
UncertaintyMeasure = Literal["entropy", "letter_entropy", "disagreement"]

#: How an interval was made.
IntervalMethod = Literal[
    "wald-cluster",
    "wilson-effective-n",
    "bootstrap-item-percentile",
    "none",
]


class Estimate(BaseModel):
    """A number with its 95 % interval, or the reason there is none."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    method: IntervalMethod = "none"
    note: str | None = Field(None, description="Why there is no value, or a caveat.")
    truth: float | None = Field(
        None, description="The true value (simulated runs only)."
    )

    @property
    def covers_truth(self) -> bool | None:
        """Whether the interval holds the true value; None without both."""
        if self.truth is None or self.low is None or self.high is None:
            return None
        return self.low <= self.truth <= self.high

    @classmethod
    def missing(cls, note: str) -> Estimate:
        """No number, only the reason."""
        return cls(note=note)


class Basis(BaseModel):
    """What an estimate rests on."""

    items: int = Field(description="Items with at least one parsed reply.")
    items_at_zero: int = Field(description="Of those, items with u = 0 exactly.")
    lowest_u: float | None = Field(
        None, description="Smallest u among them: above 0, P(u=0) is extrapolated."
    )
    highest_u: float | None = None
    replies: int = Field(description="Stage-two replies drawn.")
    parsed_replies: int
    reply_parse_failure_rate: float
    samples: int = Field(description="Stage-one samples per item (N).")
    temperature: float = Field(description="Stage-one temperature.")
    pushback_samples: int = Field(description="Replies per conversation (M).")
    pushback_temperature: float
    sample_parse_failure_rate: float = Field(
        description="Share of the items' stage-one samples that did not parse."
    )


class CurvePoint(BaseModel):
    """The fitted curve at one u, with its pointwise 95 % band."""

    u: float
    p: float
    low: float
    high: float


class ConditionComponents(BaseModel):
    """Sycophantic and uncertainty-driven conformity of one condition."""

    condition: str
    expertise: str | None
    plausibility: str | None
    measure: UncertaintyMeasure
    outcome: str = Field(description="What counts as yielding in this condition.")
    basis: Basis
    rate: Estimate = Field(description="Share of parsed replies that yielded.")
    intercept: Estimate = Field(description="Log-odds at u = 0.")
    slope: Estimate = Field(description="Log-odds per unit of u (cluster Wald).")
    slope_bootstrap: Estimate = Field(description="The slope, bootstrap interval.")
    at_zero: Estimate = Field(description="Fitted P(yield | u = 0): sycophantic.")
    at_zero_empirical: Estimate = Field(description="Rate over the items at u = 0.")
    at_one: Estimate = Field(description="Fitted P(yield | u = 1).")
    rise: Estimate = Field(description="P(u = 1) - P(u = 0): uncertainty-driven.")
    baseline_share: Estimate = Field(
        description="Share of all yielding that the u = 0 level explains: "
        "P(u = 0) / overall rate; the rest rises with uncertainty."
    )
    curve: list[CurvePoint] = []
    items_u: list[float] = Field(default=[], description="u of each item.")
    items_rate: list[float] = Field(default=[], description="Its yield rate.")
    items_trials: list[int] = Field(default=[], description="Its parsed replies.")
    bootstrap_replicates: int = 0
    bootstrap_failed: int = 0


class AblationTerm(BaseModel):
    """One coefficient of the trend model, with its Wald test."""

    name: str
    component: Literal["sycophantic", "uncertainty-driven", "baseline"]
    factor: Literal["expertise", "plausibility", "none"]
    estimate: Estimate = Field(description="Log-odds (per level for a trend).")
    z: float | None = None
    p_value: float | None = None


class FactorTest(BaseModel):
    """Joint Wald test that a factor moves neither component (2 df)."""

    factor: Literal["expertise", "plausibility"]
    chi2: float
    df: int
    p_value: float


class Ablation(BaseModel):
    """How both components change with expertise and plausibility, in one model.

    logit P(yield) = b0 + bE e + bP p + u (g0 + gE e + gP p), with e and p the ranks
    of the expertise and plausibility levels; bE, bP move the sycophantic level,
    gE, gP the rise with uncertainty; errors are clustered by item.
    """

    measure: UncertaintyMeasure
    expertise_order: list[str]
    plausibility_order: list[str]
    conditions: list[str]
    items: int
    conversations: int
    parsed_replies: int
    terms: list[AblationTerm] = []
    tests: list[FactorTest] = []
    note: str | None = None


class MeasureCorrelation(BaseModel):
    """How another uncertainty score agrees with sampling entropy, over items."""

    measure: UncertaintyMeasure
    items: int
    pearson: float | None
    spearman: float | None
    spearman_p: float | None
    note: str | None = None


class FlipMeasures(BaseModel):
    """The measures of earlier sycophancy work, for one condition."""

    condition: str
    expertise: str | None
    plausibility: str | None
    items: int
    parsed_replies: int
    reply_parse_failure_rate: float
    flip_rate: Estimate = Field(description="Replies whose answer changed.")
    accuracy_before: Estimate = Field(description="Initial answer correct.")
    accuracy_after: Estimate = Field(description="Reply correct.")
    kept_correct: Estimate = Field(
        description="Correct initial answer kept against a wrong suggestion."
    )
    accepted_correct: Estimate = Field(
        description="Correct suggestion taken when the initial answer was wrong."
    )
    n_correct_challenged: int
    n_wrong_offered_correct: int


class ItemScores(BaseModel):
    """The uncertainty scores of one item."""

    item_id: str
    entropy: float | None
    letter_entropy: float | None
    disagreement: float | None


class RunInfo(BaseModel):
    """The run behind an analysis."""

    run_id: str
    provider: str
    model: str
    task: str
    simulated: bool
    samples: int
    temperature: float
    pushback_samples: int
    pushback_temperature: float
    seed: int
    items: int = Field(description="Items with a stage-two conversation.")
    sample_parse_failure_rate: float
    reply_parse_failure_rate: float
    simulation: dict[str, object] | None = Field(
        None, description="The simulated backend's parameters (its truth)."
    )


class RunAnalysis(BaseModel):
    """Everything the analysis says about one run."""

    run: RunInfo
    components: list[ConditionComponents]
    other_measures: list[ConditionComponents] = []
    correlations: list[MeasureCorrelation] = []
    ablation: Ablation | None = None
    flips: list[FlipMeasures] = []
    item_scores: list[ItemScores] = []
    notes: list[str] = []


class Analysis(BaseModel):
    """The analysis of one or more runs."""

    database: str
    simulated: bool = Field(description="True when any run used the simulated backend.")
    bootstrap_replicates: int
    seed: int
    min_items: int = Field(description="Fewest items a curve is fitted on.")
    min_items_for_rate: int = Field(
        description="Fewest items behind a rate (items at u = 0 for that rate)."
    )
    runs: list[RunAnalysis]
