import pytest

from muse_eval.parsing import ParseStatus, option_letters, parse_answer

OPTIONS = ["0", "4", "2", "6"]
TEXT_OPTIONS = ["Paris", "London", "Berlin", "Madrid"]


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("[C]", "C"),
        ("**B**", "B"),
        ("$B$", "B"),
        ("\\boxed{D}", "D"),
        ("Answer: B", "B"),
        ("answer: c", "C"),
        ("The answer is B.", "B"),
        ("The correct answer is: D. all", "D"),
        ("My final answer is (A).", "A"),
        ("B. the option text", "B"),
        ("A) 3", "A"),
        ("C\n\nExplanation: A is wrong because...", "C"),
        ("I think A, but the final answer is C", "C"),
        ("4", "B"),
        ("The degree is 4", "B"),
    ],
)
def test_reads_the_letter(reply: str, letter: str) -> None:
    parsed = parse_answer(reply, OPTIONS)
    assert parsed.status == ParseStatus.OK
    assert parsed.letter == letter


def test_reads_the_option_text_without_a_letter() -> None:
    parsed = parse_answer("It is Berlin, of course.", TEXT_OPTIONS)
    assert (parsed.letter, parsed.status, parsed.method) == ("C", "ok", "option_text")


@pytest.mark.parametrize("reply", ["A or B", "A mix of B and C", "(A) and (D)"])
def test_two_different_letters_are_unparseable(reply: str) -> None:
    parsed = parse_answer(reply, OPTIONS)
    assert parsed.status == ParseStatus.UNPARSEABLE
    assert parsed.letter is None


def test_the_article_a_is_not_an_answer() -> None:
    parsed = parse_answer("It appears to be a mix of numbers", OPTIONS)
    assert parsed.status == ParseStatus.UNPARSEABLE
    assert parse_answer("A good guess is C", OPTIONS).letter == "C"


@pytest.mark.parametrize("reply", ["", "   ", "\n", None])
def test_empty_replies(reply: str | None) -> None:
    assert parse_answer(reply, OPTIONS) == (None, ParseStatus.EMPTY, "empty")


@pytest.mark.parametrize(
    "reply",
    ["I'm sorry, but I can't help with that.", "As an AI, I cannot answer this."],
)
def test_refusals(reply: str) -> None:
    parsed = parse_answer(reply, OPTIONS)
    assert parsed.status == ParseStatus.REFUSED
    assert parsed.letter is None


def test_letters_outside_the_options_are_not_answers() -> None:
    assert parse_answer("E", OPTIONS).status == ParseStatus.UNPARSEABLE
    assert parse_answer("E", [*OPTIONS, "8"]).letter == "E"


def test_option_letters() -> None:
    assert option_letters(4) == ["A", "B", "C", "D"]
    with pytest.raises(ValueError, match="between 1 and 26"):
        option_letters(0)
