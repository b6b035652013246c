"""Epistemic-uncertainty scores of one item from its stage-one samples.

``answer_entropy`` is MUSE's main score: the Shannon entropy of the empirical
distribution of parsed answers, divided by log K so that it lies in [0, 1]; 0 means
every parsed sample gave the same letter. ``letter_entropy`` is the single-pass
estimate from the next-token probabilities over the option letters, and
``agreement`` the share of the modal answer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = [
    "agreement",
    "answer_entropy",
    "letter_entropy",
    "letter_mass",
    "letter_probabilities",
]


def answer_entropy(answers: Iterable[str], k: int) -> float | None:
    """Normalized entropy of parsed answers; None when there are none.

    Args:
        answers: The parsed letters of the samples (parse failures left out).
        k: Number of options of the question.

    Returns:
        Entropy divided by log k, in [0, 1].
    """
    counts = Counter(answers)
    total = sum(counts.values())
    if total == 0:
        return None
    return _normalized_entropy([c / total for c in counts.values()], k)


def agreement(answers: Iterable[str]) -> float | None:
    """Share of the parsed answers that give the modal letter."""
    counts = Counter(answers)
    total = sum(counts.values())
    return max(counts.values()) / total if total else None


def letter_probabilities(
    top_logprobs: Mapping[str, float] | None, letters: list[str]
) -> dict[str, float] | None:
    """Probabilities of the option letters among a first token's alternatives.

    Tokens are matched after stripping spaces and brackets, so " B" and "(B" both
    count for B; several tokens for one letter are summed. The result is
    renormalized over the letters. None when no alternative is a letter.

    Args:
        top_logprobs: Token text to log-probability, for the first generated token.
        letters: The option letters.

    Returns:
        Letter to probability, summing to 1, or None.
    """
    if not top_logprobs:
        return None
    mass = dict.fromkeys(letters, 0.0)
    for token, logprob in top_logprobs.items():
        key = token.strip().strip("([*$").upper()
        if key in mass:
            mass[key] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {letter: p / total for letter, p in mass.items()}


def letter_mass(top_logprobs: Mapping[str, float] | None, letters: list[str]) -> float:
    """Total probability the first token puts on the option letters (unnormalized)."""
    if not top_logprobs:
        return 0.0
    wanted = set(letters)
    return sum(
        math.exp(lp)
        for token, lp in top_logprobs.items()
        if token.strip().strip("([*$").upper() in wanted
    )


def letter_entropy(probabilities: Mapping[str, float] | None, k: int) -> float | None:
    """Normalized entropy of letter probabilities; None when there are none."""
    if not probabilities:
        return None
    return _normalized_entropy(list(probabilities.values()), k)


def _normalized_entropy(probabilities: list[float], k: int) -> float:
    if k < 2:
        return 0.0
    h = -sum(p * math.log(p) for p in probabilities if p > 0)
    # Clamp rounding noise so that a certain item is exactly 0 and never -0.0.
    return min(1.0, max(0.0, h / math.log(k)))
