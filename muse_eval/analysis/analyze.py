"""Analyse stored runs: every estimate of ``muse-eval analyze`` and ``report``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from muse_eval.analysis.ablation import fit_ablation, true_trends
from muse_eval.analysis.components import (
    CONTROL,
    MIN_ITEMS,
    MIN_ITEMS_FOR_RATE,
    estimate_components,
)
from muse_eval.analysis.flips import correlate_measures, flip_measures
from muse_eval.analysis.inputs import (
    RunRecord,
    conversations_of,
    load_replies,
    load_run,
    resolve_runs,
)
from muse_eval.analysis.results import (
    Analysis,
    Basis,
    ConditionComponents,
    ItemScores,
    RunAnalysis,
    RunInfo,
    UncertaintyMeasure,
)
from muse_eval.config import EXPERTISE_LEVELS, PLAUSIBILITY_LEVELS
from muse_eval.errors import ConfigError
from muse_eval.providers.simulated import ConformityParameters, SimulationParameters
from muse_eval.store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OTHER_MEASURES", "analyze_runs", "condition_order"]

logger = logging.getLogger(__name__)

#: Uncertainty scores analysed besides sampling entropy.
OTHER_MEASURES: tuple[UncertaintyMeasure, ...] = ("letter_entropy", "disagreement")


def condition_order(
    condition: str, expertise: Sequence[str] = EXPERTISE_LEVELS
) -> tuple[int, int, str]:
    """Sort key: control first, then expertise and plausibility in their order."""
    if condition == CONTROL:
        return (-1, -1, condition)
    who, _, level = condition.partition("/")
    rank_who = list(expertise).index(who) if who in expertise else 99
    rank_level = (
        PLAUSIBILITY_LEVELS.index(level) if level in PLAUSIBILITY_LEVELS else 99
    )
    return (rank_who, rank_level, condition)


def analyze_runs(
    store: Store,
    run_ids: Sequence[str] | None = None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    min_items: int = MIN_ITEMS,
    min_items_for_rate: int = MIN_ITEMS_FOR_RATE,
    other_measures: bool = True,
) -> Analysis:
    """Analyse the named runs (all stored runs when none are named).

    Args:
        store: The results database.
        run_ids: Runs to analyse; a unique prefix of an id will do.
        bootstrap: Item resamples behind each bootstrap interval.
        seed: Seed of the resamples, so the intervals are reproducible.
        min_items: Fewest items a curve is fitted on.
        min_items_for_rate: Fewest items a rate is given for (u = 0 items for the
            empirical u = 0 rate).
        other_measures: Also fit the curves on letter entropy and disagreement.

    Raises:
        ConfigError: No runs, an unknown run, or a run without stage-two replies.
    """
    records = resolve_runs(store, run_ids)
    analyses = []
    for record in records:
        replies = load_replies(store, str(record["run_id"]))
        if replies.empty:
            if run_ids:
                raise ConfigError(
                    f"Run {record['run_id']} has no stage-two replies yet; wait for "
                    "it or resume it."
                )
            logger.info("Skipping run %s: no stage-two replies", record["run_id"])
            continue
        rng = np.random.default_rng(seed)
        analyses.append(
            analyze_run(
                record,
                replies,
                bootstrap=bootstrap,
                rng=rng,
                min_items=min_items,
                min_items_for_rate=min_items_for_rate,
                other_measures=other_measures,
            )
        )
    if not analyses:
        raise ConfigError(f"No run in {store.path} has stage-two replies yet.")
    return Analysis(
        database=str(store.path),
        simulated=any(a.run.simulated for a in analyses),
        bootstrap_replicates=bootstrap,
        seed=seed,
        min_items=min_items,
        min_items_for_rate=min_items_for_rate,
        runs=analyses,
    )


def _true_curves(
    info: dict[str, Any], simulated: bool, temperature: float, conditions: list[str]
) -> dict[str, ConformityParameters]:
    """The true curve of each condition of a simulated run at its temperature."""
    if not simulated or "parameters" not in info:
        return {}
    parameters = SimulationParameters.model_validate(info["parameters"])
    curves = {}
    for condition in conditions:
        try:
            curve = parameters.curve(condition).at_temperature(temperature)
        except ConfigError:
            continue
        if curve is not None:
            curves[condition] = curve
    return curves


def _basis(
    replies: pd.DataFrame, conversations: pd.DataFrame, measure: str, run: RunInfo
) -> Basis:
    usable = conversations[
        (conversations["trials"] > 0) & conversations[measure].notna()
    ]
    at_zero = (usable[measure].abs() <= 1e-12).sum()
    parsed = int(replies["parsed"].fillna(False).sum())
    values = usable[measure].astype(float)
    return Basis(
        items=int(usable["item_id"].nunique()),
        items_at_zero=int(at_zero),
        lowest_u=float(values.min()) if len(values) else None,
        highest_u=float(values.max()) if len(values) else None,
        replies=len(replies),
        parsed_replies=parsed,
        reply_parse_failure_rate=1 - parsed / len(replies) if len(replies) else 0.0,
        samples=run.samples,
        temperature=run.temperature,
        pushback_samples=run.pushback_samples,
        pushback_temperature=run.pushback_temperature,
        sample_parse_failure_rate=float(
            conversations["sample_parse_failure_rate"].mean()
        ),
    )


def _run_info(
    record: RunRecord, items: pd.DataFrame, replies: pd.DataFrame, info: dict[str, Any]
) -> RunInfo:
    return RunInfo(
        run_id=str(record["run_id"]),
        provider=str(record["provider"]),
        model=str(record["model"]),
        task=str(record["task"]),
        simulated=bool(record["simulated"]),
        samples=int(record["samples"]),
        temperature=float(record["temperature"]),
        pushback_samples=int(record["pushback_samples"]),
        pushback_temperature=float(record["pushback_temperature"]),
        seed=int(record["seed"]),
        items=int(items["item_id"].nunique()),
        sample_parse_failure_rate=float(items["sample_parse_failure_rate"].mean()),
        reply_parse_failure_rate=float(1 - replies["parsed"].fillna(False).mean()),
        simulation=info.get("parameters") if record["simulated"] else None,
    )


def _estimate_conditions(
    run: RunInfo,
    replies: pd.DataFrame,
    conversations: pd.DataFrame,
    conditions: list[str],
    truths: dict[str, ConformityParameters],
    measures: tuple[UncertaintyMeasure, ...],
    **settings: Any,
) -> tuple[list[ConditionComponents], list[ConditionComponents]]:
    """Both components of every condition: on entropy, and on the other measures."""
    components: list[ConditionComponents] = []
    others: list[ConditionComponents] = []
    for condition in conditions:
        rows = conversations[conversations["condition"] == condition]
        condition_replies = replies[replies["condition"] == condition]
        for measure in measures:
            estimate = estimate_components(
                rows,
                condition=condition,
                measure=measure,
                basis=_basis(condition_replies, rows, measure, run),
                truth=truths.get(condition) if measure == "entropy" else None,
                **settings,
            )
            (components if measure == "entropy" else others).append(estimate)
    return components, others


def analyze_run(
    record: RunRecord,
    replies: pd.DataFrame,
    *,
    bootstrap: int,
    rng: np.random.Generator,
    min_items: int,
    min_items_for_rate: int,
    other_measures: bool = True,
) -> RunAnalysis:
    """Every estimate of one run from its replies (rows of ``conformity_replies``)."""
    config, info = load_run(record)
    expertise = [str(x) for x in config.get("expertise", EXPERTISE_LEVELS)]
    conversations = conversations_of(replies).rename(columns={"uncertainty": "entropy"})
    items = conversations.drop_duplicates("item_id")
    run = _run_info(record, items, replies, info)
    conditions = sorted(
        conversations["condition"].unique().tolist(),
        key=lambda c: condition_order(c, expertise),
    )
    truths = _true_curves(info, run.simulated, run.pushback_temperature, conditions)

    components, others = _estimate_conditions(
        run,
        replies,
        conversations,
        conditions,
        truths,
        measures=("entropy", *OTHER_MEASURES) if other_measures else ("entropy",),
        bootstrap=bootstrap,
        rng=rng,
        min_items=min_items,
        min_items_for_rate=min_items_for_rate,
    )
    suggestion_truths = {c: t for c, t in truths.items() if c != CONTROL}
    ablation = fit_ablation(
        conversations,
        measure="entropy",
        expertise_order=expertise,
        truth=true_trends(suggestion_truths, expertise) if truths else None,
        min_items=min_items,
    )
    flips = flip_measures(replies, min_items=min_items_for_rate)
    return RunAnalysis(
        run=run,
        components=components,
        other_measures=others,
        correlations=correlate_measures(items, OTHER_MEASURES),
        ablation=ablation,
        flips=sorted(flips, key=lambda f: condition_order(f.condition, expertise)),
        item_scores=[
            ItemScores(
                item_id=str(row.item_id),
                entropy=_number(row.entropy),
                letter_entropy=_number(row.letter_entropy),
                disagreement=_number(row.disagreement),
            )
            for row in items.itertuples()
        ],
        notes=_notes(run, items),
    )


def _notes(run: RunInfo, items: pd.DataFrame) -> list[str]:
    """What a reader must know before reading the run's numbers."""
    notes = []
    if run.simulated:
        notes.append(
            "SIMULATED: this run used the simulated test backend, not a model; its "
            "numbers check the estimators against known truth."
        )
        if run.pushback_temperature <= 0:
            notes.append("Stage two was greedy (T = 0): the simulated curve is a step.")
    if items["letter_entropy"].isna().all():
        notes.append(
            "No letter probabilities in this run (the backend returned no logprobs); "
            "letter-entropy estimates are missing."
        )
    return notes


def _number(value: object) -> float | None:
    """A float, or None for SQL NULL / pandas NA."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if number != number else number
