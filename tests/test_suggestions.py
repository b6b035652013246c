from conftest import make_item, make_stage_one

from muse_eval.pushback import CONTROL, choose_suggestion, plan_conditions


def test_modal_answer_and_the_reply_replayed() -> None:
    stage_one = make_stage_one(["", "C", "B", "C", "The answer is C.", "B"])
    assert stage_one.modal == "C"
    assert stage_one.modal_sample_index == 1
    assert stage_one.modal_reply == "C"
    assert stage_one.counts == {"C": 3, "B": 2}


def test_a_tie_goes_to_the_letter_sampled_first() -> None:
    stage_one = make_stage_one(["D", "A", "A", "D"])
    assert stage_one.modal == "D"


def test_plausible_is_the_runner_up() -> None:
    stage_one = make_stage_one(["C"] * 6 + ["A"] * 3 + ["D"])
    assert choose_suggestion(stage_one, "plausible", seed=0) == (
        "A",
        "runner-up among samples",
    )


def test_implausible_is_never_sampled_and_least_probable() -> None:
    probs = {"A": 0.2, "B": 0.05, "C": 0.7, "D": 0.05}
    stage_one = make_stage_one(["C"] * 7 + ["A"] * 3, probs=probs)
    letter, basis = choose_suggestion(stage_one, "implausible", seed=0)
    assert letter in {"B", "D"}
    assert basis == "never sampled, least probable"
    assert stage_one.counts[letter] == 0


def test_when_certain_plausible_uses_letter_probabilities() -> None:
    probs = {"A": 0.01, "B": 0.09, "C": 0.85, "D": 0.05}
    stage_one = make_stage_one(["C"] * 10, probs=probs)
    assert stage_one.entropy == 0.0
    assert choose_suggestion(stage_one, "plausible", seed=0)[0] == "B"
    assert choose_suggestion(stage_one, "implausible", seed=0)[0] == "A"


def test_plausible_and_implausible_differ_without_logprobs() -> None:
    for seed in range(20):
        stage_one = make_stage_one(["C"] * 10)
        plausible = choose_suggestion(stage_one, "plausible", seed=seed)[0]
        implausible = choose_suggestion(stage_one, "implausible", seed=seed)[0]
        assert plausible != implausible
        assert "C" not in (plausible, implausible)


def test_every_option_sampled_falls_back_to_least_sampled() -> None:
    stage_one = make_stage_one(["A"] * 4 + ["B"] * 3 + ["C"] * 2 + ["D"])
    assert choose_suggestion(stage_one, "implausible", seed=0) == (
        "D",
        "least sampled, every option was sampled",
    )


def test_correct_suggestion_only_when_the_model_was_wrong() -> None:
    wrong = make_stage_one(["C"] * 10, item=make_item(answer="B"))
    right = make_stage_one(["B"] * 10, item=make_item(answer="B"))
    assert choose_suggestion(wrong, "correct", seed=0) == ("B", "correct answer")
    assert choose_suggestion(right, "correct", seed=0)[0] is None


def test_conditions_cross_expertise_and_plausibility_plus_control() -> None:
    stage_one = make_stage_one(["C"] * 6 + ["A"] * 4, item=make_item(answer="B"))
    conditions = plan_conditions(
        stage_one,
        expertise=["none", "layperson", "expert"],
        plausibility=["plausible", "implausible", "correct"],
        control=True,
        seed=0,
    )
    ids = [c.id for c in conditions]
    assert ids[0] == CONTROL
    assert len(ids) == 1 + 3 * 3
    assert "expert/correct" in ids
    by_id = {c.id: c for c in conditions}
    assert by_id["expert/plausible"].suggested == "A"
    assert by_id["none/correct"].suggested == "B"
    assert by_id[CONTROL].suggested is None


def test_no_conditions_for_an_item_without_a_parsed_answer() -> None:
    stage_one = make_stage_one(["", "I cannot answer."])
    assert stage_one.modal is None
    assert (
        plan_conditions(
            stage_one,
            expertise=["none"],
            plausibility=["plausible"],
            control=True,
            seed=0,
        )
        == []
    )
