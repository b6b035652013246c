r"""Read an option letter out of a model's free-text reply.

Models answer in many shapes: ``B``, ``(B)``, ``**B**``, ``$B$``, ``\boxed{B}``,
``Answer: B``, ``The answer is B.``, ``B. the option text``, or only the option's text.
The parser tries the most explicit readings first and only accepts a reading that is
unambiguous. A reply that names two different letters with equal weight is
``unparseable``, never a guess; a reply that refuses is ``refused``. A parse failure
is not an option and not a wrong answer: callers keep it out of both.
"""

from __future__ import annotations

import re
import string
from enum import StrEnum
from typing import NamedTuple

__all__ = ["ParseStatus", "ParsedAnswer", "option_letters", "parse_answer"]


class ParseStatus(StrEnum):
    """Outcome of parsing one reply."""

    OK = "ok"
    EMPTY = "empty"
    UNPARSEABLE = "unparseable"
    REFUSED = "refused"


class ParsedAnswer(NamedTuple):
    """A parsed reply: the letter (or None) and how it was read."""

    letter: str | None
    status: ParseStatus
    #: Which reading produced the letter (``bare``, ``phrase``, ``leading``,
    #: ``marked``, ``option_text``) or why none did.
    method: str


def option_letters(k: int) -> list[str]:
    """Return the first `k` option letters, ``A`` onwards."""
    if not 1 <= k <= 26:
        raise ValueError(f"a question needs between 1 and 26 options, not {k}")
    return list(string.ascii_uppercase[:k])


_WRAPPERS = re.compile(r"\\boxed\{([^{}]*)\}|\\text(?:bf)?\{([^{}]*)\}")
_DECORATION = re.compile(r"[*_`$]+")
_REFUSAL = re.compile(
    r"\b(?:I (?:can(?:no|')t|am unable to|won't|will not)|I'm (?:sorry|unable|not able)"
    r"|as an AI|cannot (?:answer|help|provide)|unable to (?:answer|determine))",
    re.IGNORECASE,
)


def _normalize(text: str) -> str:
    text = _WRAPPERS.sub(lambda m: m.group(1) or m.group(2) or "", text)
    return _DECORATION.sub("", text).strip()


def parse_answer(text: str | None, options: list[str]) -> ParsedAnswer:
    """Parse a reply to a multiple-choice question into an option letter.

    Args:
        text: The model's reply, verbatim.
        options: The option texts, in letter order.

    Returns:
        The letter and status. The letter is None unless the status is ``ok``.
    """
    if text is None or not text.strip():
        return ParsedAnswer(None, ParseStatus.EMPTY, "empty")

    letters = option_letters(len(options))
    cls = f"[{letters[0]}-{letters[-1]}]"
    clean = _normalize(text)

    for method, reading in (
        ("bare", _read_bare),
        ("phrase", _read_phrase),
        ("leading", _read_leading),
        ("marked", _read_marked),
    ):
        found = reading(clean, cls)
        if found == "ambiguous":
            return ParsedAnswer(None, ParseStatus.UNPARSEABLE, "two letters")
        if found is not None:
            return ParsedAnswer(found, ParseStatus.OK, method)

    by_text = _read_option_text(clean, options, letters)
    if by_text is not None:
        return ParsedAnswer(by_text, ParseStatus.OK, "option_text")
    if _REFUSAL.search(clean):
        return ParsedAnswer(None, ParseStatus.REFUSED, "refusal")
    return ParsedAnswer(None, ParseStatus.UNPARSEABLE, "no letter")


def _read_bare(text: str, cls: str) -> str | None:
    """The whole reply is one letter, maybe bracketed or punctuated: ``(b)``."""
    match = re.fullmatch(rf"[\(\[]?({cls})[\)\]]?[.:!]?", text, re.IGNORECASE)
    return match.group(1).upper() if match else None


_PHRASE = (
    r"(?:final answer|correct answer|the answer|answer|correct option|my choice"
    r"|option|choice)\s*(?:is|would be|remains|:|=|-)?\s*:?\s*"
    r"(?:option\s+|letter\s+)?[\(\[]?({cls})\b(?![\'’]\w)"
)


def _read_phrase(text: str, cls: str) -> str | None:
    """An explicit statement such as ``Answer: B``; the last one counts."""
    pattern = _PHRASE.replace("{cls}", cls)
    hits = [m.group(1) for m in re.finditer(pattern, text, re.IGNORECASE)]
    # "option a" in running text is too weak when lower case; keep the capitals
    # unless the phrase is a real answer statement.
    hits = [h.upper() for h in hits]
    return hits[-1] if hits else None


def _read_leading(text: str, cls: str) -> str | None:
    """The reply opens with a letter label: ``B. text``, ``(B) text``, ``B) 3``."""
    match = re.match(rf"[\(\[]({cls})[\)\]]|({cls})(?:[\)\].:]|\s*$|\s*\n)", text)
    if not match:
        return None
    letter = match.group(1) or match.group(2)
    # "(A) and (D)": the same label shape naming another letter makes it a list.
    rest = text[match.end() :]
    if any(m != letter for m in re.findall(rf"[\(\[]({cls})[\)\]]", rest)):
        return "ambiguous"
    return letter


_ARTICLE = re.compile(r" (?!(?:or|and|is|was|vs|nor|seems|would)\b)[a-z]")


def _read_marked(text: str, cls: str) -> str | None | str:
    """Capital letters that stand alone as labels; one distinct letter only."""
    found = set()
    for match in re.finditer(rf"(?<![\w'’])({cls})(?![\w'’])", text):
        letter = match.group(1)
        # "A" followed by a lower-case word is the English article, not an option.
        if letter == "A" and _ARTICLE.match(text, match.end()):
            continue
        found.add(letter)
    if len(found) > 1:
        return "ambiguous"
    return found.pop() if found else None


def _read_option_text(text: str, options: list[str], letters: list[str]) -> str | None:
    """The reply repeats exactly one option's text instead of its letter."""
    reply = _words(text)
    if not reply:
        return None
    matches = set()
    for letter, option in zip(letters, options, strict=True):
        words = _words(option)
        if words and (words == reply or f" {words} " in f" {reply} "):
            matches.add(letter)
    return matches.pop() if len(matches) == 1 else None


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
