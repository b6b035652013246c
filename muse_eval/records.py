"""Rows that muse-eval stores, one pydantic model per table.

A `UnitResult` is everything one unit of work produced: stage one of an item (its N
samples) or one stage-two conversation (its M replies). The store writes a unit's
rows in one transaction, so a unit is either wholly stored or not at all.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from muse_eval.parsing import ParseStatus

__all__ = [
    "ItemRow",
    "PushbackRow",
    "ReplyRow",
    "RunRow",
    "SampleRow",
    "Stage",
    "UnitResult",
    "UnitRow",
    "UnitStatus",
]


class Stage(StrEnum):
    """Which MUSE stage a unit belongs to."""

    SAMPLE = "sample"
    PUSHBACK = "pushback"


class UnitStatus(StrEnum):
    """Final state of a stored unit."""

    DONE = "done"
    #: The backend rejected the request for good (bad request, context too long).
    FAILED = "failed"


class RunRow(BaseModel):
    """One run: a configuration applied to a task (table ``runs``)."""

    run_id: str
    created_at: datetime
    provider: str
    model: str
    task: str
    simulated: bool = Field(description="True for the simulated test backend.")
    samples: int
    temperature: float
    pushback_samples: int
    pushback_temperature: float
    seed: int
    config: str = Field(description="The run configuration as JSON.")
    config_hash: str
    provider_info: str = Field(description="The provider's description as JSON.")
    versions: str = Field(description="Versions of muse-eval and its key packages.")
    git_revision: str | None = None
    price_table: str | None = Field(
        None,
        description="Where the run's prices come from (litellm's bundled table, its "
        "version and revision), as JSON; None when the provider has no prices.",
    )
    capability_gaps: str | None = Field(
        None,
        description="What the backend could not do (capability to one sentence), "
        "as JSON; filled in while the run goes.",
    )


class ItemRow(BaseModel):
    """A question as it was asked in a run (table ``items``)."""

    run_id: str
    item_id: str
    task: str
    subject: str
    question: str
    options: list[str]
    answer: str


class UnitRow(BaseModel):
    """One unit of work and the requests behind it (table ``units``)."""

    run_id: str
    unit_id: str
    stage: Stage
    item_id: str
    condition: str | None = None
    status: UnitStatus
    error_kind: str | None = None
    error: str | None = None
    messages: str = Field(description="Exact messages sent, as JSON.")
    request_seed: int | None = None
    requests: int = Field(1, description="HTTP requests that produced the unit.")
    retries: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float
    finished_at: datetime


class SampleRow(BaseModel):
    """One stage-one answer (table ``samples``)."""

    run_id: str
    item_id: str
    sample_index: int
    unit_id: str
    reply: str
    finish_reason: str | None = None
    answer: str | None
    parse_status: ParseStatus
    parse_method: str
    letter_probs: str | None = Field(
        None, description="Option letter to probability of the first token, as JSON."
    )
    letter_entropy: float | None = None
    letter_mass: float | None = Field(
        None, description="Probability the first token puts on any option letter."
    )


class PushbackRow(BaseModel):
    """One stage-two conversation (table ``pushbacks``)."""

    run_id: str
    item_id: str
    condition: str
    unit_id: str
    expertise: str | None
    plausibility: str | None
    initial_answer: str
    initial_sample_index: int
    suggested: str | None
    suggestion_basis: str | None = Field(
        None, description="How the suggested option was chosen."
    )
    pushback_text: str
    n_replies: int
    n_parsed: int
    n_conformed: int | None
    n_changed: int
    conformity_rate: float | None
    change_rate: float | None
    p_suggested: float | None
    p_initial: float | None
    letter_mass: float | None


class ReplyRow(BaseModel):
    """One reply in a stage-two conversation (table ``pushback_replies``)."""

    run_id: str
    item_id: str
    condition: str
    reply_index: int
    reply: str
    finish_reason: str | None = None
    answer: str | None
    parse_status: ParseStatus
    conformed: bool | None
    changed: bool | None


class UnitResult(BaseModel):
    """Everything one unit produced; stored atomically."""

    unit: UnitRow
    item: ItemRow | None = None
    samples: list[SampleRow] = []
    pushback: PushbackRow | None = None
    replies: list[ReplyRow] = []
