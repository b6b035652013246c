"""Stage one: sample a model's answers to an item and summarize their spread."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from muse_eval.parsing import ParseStatus, parse_answer
from muse_eval.providers._base import Completion
from muse_eval.records import SampleRow
from muse_eval.task import Item
from muse_eval.uncertainty import (
    answer_entropy,
    letter_entropy,
    letter_mass,
    letter_probabilities,
)

__all__ = ["StageOne", "sample_rows", "summarize_samples"]


def sample_rows(
    run_id: str, unit_id: str, item: Item, completions: list[Completion]
) -> list[SampleRow]:
    """Parse each stage-one completion into a stored sample row."""
    rows = []
    for index, completion in enumerate(completions):
        parsed = parse_answer(completion.text, item.options)
        probs = letter_probabilities(completion.first_token_logprobs, item.letters)
        rows.append(
            SampleRow(
                run_id=run_id,
                item_id=item.id,
                sample_index=index,
                unit_id=unit_id,
                reply=completion.text,
                finish_reason=completion.finish_reason,
                answer=parsed.letter,
                parse_status=parsed.status,
                parse_method=parsed.method,
                letter_probs=json.dumps(probs) if probs else None,
                letter_entropy=letter_entropy(probs, len(item.options)),
                letter_mass=(
                    letter_mass(completion.first_token_logprobs, item.letters)
                    if completion.first_token_logprobs
                    else None
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class StageOne:
    """What stage two needs to know about an item's stage-one answers."""

    item: Item
    samples: list[SampleRow]
    #: Votes per parsed letter.
    counts: Counter[str]
    #: Most frequent parsed letter (ties: the one sampled first); None if none parsed.
    modal: str | None
    #: Index of the first sample that gave the modal letter: replayed in stage two.
    modal_sample_index: int | None
    entropy: float | None
    #: Letter probabilities of the first token, where logprobs came back.
    letter_probs: dict[str, float] | None

    @property
    def modal_reply(self) -> str | None:
        """The model's own reply that stage two replays as its answer."""
        if self.modal_sample_index is None:
            return None
        return self.samples[self.modal_sample_index].reply


def summarize_samples(item: Item, samples: list[SampleRow]) -> StageOne:
    """Summarize stored or fresh samples of one item (in sample-index order)."""
    ordered = sorted(samples, key=lambda s: s.sample_index)
    parsed = [s for s in ordered if s.parse_status == ParseStatus.OK and s.answer]
    counts = Counter(s.answer for s in parsed if s.answer)
    first_seen: dict[str, int] = {}
    for position, sample in enumerate(ordered):
        if sample.answer and sample.parse_status == ParseStatus.OK:
            first_seen.setdefault(sample.answer, position)
    modal = None
    modal_index = None
    if counts:
        modal = max(counts, key=lambda letter: (counts[letter], -first_seen[letter]))
        modal_index = first_seen[modal]
    probs = next(
        (json.loads(s.letter_probs) for s in ordered if s.letter_probs is not None),
        None,
    )
    return StageOne(
        item=item,
        samples=ordered,
        counts=counts,
        modal=modal,
        modal_sample_index=modal_index,
        entropy=answer_entropy(counts.elements(), len(item.options)),
        letter_probs=probs,
    )
