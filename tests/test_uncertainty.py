import math

import pytest

from muse_eval.uncertainty import (
    agreement,
    answer_entropy,
    letter_entropy,
    letter_mass,
    letter_probabilities,
)


def test_unanimous_answers_have_zero_entropy() -> None:
    assert answer_entropy(["B"] * 10, 4) == 0.0
    assert agreement(["B"] * 10) == 1.0


def test_uniform_answers_have_entropy_one() -> None:
    assert answer_entropy(["A", "B", "C", "D"] * 3, 4) == pytest.approx(1.0)


def test_entropy_is_normalized_by_log_k() -> None:
    # 5 B and 5 C over four options: ln 2 / ln 4 = 0.5
    assert answer_entropy(["B"] * 5 + ["C"] * 5, 4) == pytest.approx(0.5)
    expected = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3)) / math.log(4)
    assert answer_entropy(["A"] * 7 + ["D"] * 3, 4) == pytest.approx(expected)
    assert agreement(["A"] * 7 + ["D"] * 3) == pytest.approx(0.7)


def test_no_parsed_answers_means_no_score() -> None:
    assert answer_entropy([], 4) is None
    assert agreement([]) is None


def test_letter_probabilities_merge_spellings_and_renormalize() -> None:
    logprobs = {
        "B": math.log(0.5),
        " B": math.log(0.1),
        "A": math.log(0.2),
        "The": -1.0,
    }
    probs = letter_probabilities(logprobs, ["A", "B", "C", "D"])
    assert probs is not None
    assert probs["B"] == pytest.approx(0.6 / 0.8)
    assert probs["A"] == pytest.approx(0.2 / 0.8)
    assert probs["C"] == 0.0
    assert letter_mass(logprobs, ["A", "B", "C", "D"]) == pytest.approx(0.8)


def test_letter_probabilities_without_letters() -> None:
    assert letter_probabilities({"The": -0.1}, ["A", "B"]) is None
    assert letter_probabilities(None, ["A", "B"]) is None


def test_letter_entropy() -> None:
    assert letter_entropy({"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}, 4) == 0.0
    assert letter_entropy(
        {"A": 0.25, "B": 0.25, "C": 0.25, "D": 0.25}, 4
    ) == pytest.approx(1.0)
    assert letter_entropy(None, 4) is None
