from __future__ import annotations

import json

import pytest

from muse_eval.parsing import parse_answer
from muse_eval.records import SampleRow
from muse_eval.sampling import StageOne, summarize_samples
from muse_eval.task import Item


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_item(answer: str = "B", options: list[str] | None = None) -> Item:
    return Item(
        id="mmlu/abstract_algebra/0",
        task="mmlu",
        subject="abstract_algebra",
        question="Find the degree of Q(sqrt(2), sqrt(3), sqrt(18)) over Q.",
        options=options or ["0", "4", "2", "6"],
        answer=answer,
    )


def make_stage_one(
    replies: list[str], item: Item | None = None, probs: dict[str, float] | None = None
) -> StageOne:
    """A stage-one summary built from literal replies, parsed for real."""
    item = item or make_item()
    rows = []
    for index, reply in enumerate(replies):
        parsed = parse_answer(reply, item.options)
        rows.append(
            SampleRow(
                run_id="run",
                item_id=item.id,
                sample_index=index,
                unit_id=f"{item.id}#sample",
                reply=reply,
                answer=parsed.letter,
                parse_status=parsed.status,
                parse_method=parsed.method,
                letter_probs=json.dumps(probs) if probs and index == 0 else None,
            )
        )
    return summarize_samples(item, rows)
