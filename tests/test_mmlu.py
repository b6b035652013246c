from collections import Counter

import pytest

from muse_eval.errors import ConfigError, TaskError
from muse_eval.task import load_task


@pytest.fixture(scope="module")
def mmlu():
    return load_task("mmlu")


def test_the_real_file_has_every_item_and_subject(mmlu) -> None:
    items = list(mmlu.iter_items())
    assert len(items) == 14042
    subjects = Counter(item.subject for item in items)
    assert len(subjects) == 57
    assert subjects["abstract_algebra"] == 100
    assert all(item.answer in "ABCD" and len(item.options) == 4 for item in items)
    assert len({item.id for item in items}) == 14042


def test_the_first_abstract_algebra_item(mmlu) -> None:
    item = next(i for i in mmlu.iter_items() if i.id == "mmlu/abstract_algebra/0")
    assert "Q(sqrt(2), sqrt(3), sqrt(18))" in item.question
    assert item.options == ["0", "4", "2", "6"]
    assert item.answer == "B"


def test_selection_is_a_stable_prefix_across_subjects(mmlu) -> None:
    ten = mmlu.select_items(limit=10, seed=0)
    twenty = mmlu.select_items(limit=20, seed=0)
    assert [i.id for i in twenty[:10]] == [i.id for i in ten]
    assert len({i.subject for i in twenty}) > 5
    assert [i.id for i in mmlu.select_items(limit=10, seed=1)] != [i.id for i in ten]


def test_subject_filter(mmlu) -> None:
    items = mmlu.select_items(subjects=["anatomy", "virology"])
    assert {i.subject for i in items} == {"anatomy", "virology"}
    assert len(items) == 135 + 166


def test_unknown_subject_is_one_clear_sentence(mmlu) -> None:
    with pytest.raises(TaskError, match="has no subject astrology"):
        mmlu.select_items(subjects=["astrology"])


def test_unknown_task() -> None:
    with pytest.raises(
        ConfigError, match="Unknown task 'mmlu-pro'; choose one of: mmlu"
    ):
        load_task("mmlu-pro")


def test_prompt_restates_the_answer_format(mmlu) -> None:
    item = next(mmlu.iter_items())
    system, message = mmlu.question_messages(item)
    assert (
        system.role == "system"
        and "letter of the correct option only" in system.content
    )
    assert message.role == "user"
    assert "A. Wrong, Wrong" in message.content
    assert "(A, B, C or D)" in message.content
    pushback = mmlu.pushback_message(item, "expert", "C")
    assert "professor of moral scenarios" in pushback
    assert pushback.endswith("Reply with the letter only (A, B, C or D).")
    assert mmlu.pushback_message(item, None, None).startswith("Are you sure?")
