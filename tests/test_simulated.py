"""The simulated backend answers by its known parameters, reproducibly."""

import json
import math

import anyio
import pytest

from muse_eval.config import load_profile
from muse_eval.errors import ConfigError
from muse_eval.providers import build_provider
from muse_eval.providers._base import ChatMessage, GenerateRequest, UnitContext
from muse_eval.providers.simulated import (
    SimulatedProvider,
    SimulationParameters,
    item_distribution,
    logistic,
)
from muse_eval.run import with_simulation_options
from muse_eval.uncertainty import answer_entropy, letter_entropy, letter_probabilities

LETTERS = ["A", "B", "C", "D"]
MESSAGES = [ChatMessage(role="user", content="Which option?")]


def sample_request(item_id: str, seed: int, n: int = 10, **extra) -> GenerateRequest:
    return GenerateRequest(
        messages=MESSAGES,
        n=n,
        temperature=extra.pop("temperature", 1.0),
        seed=seed,
        top_logprobs=extra.pop("top_logprobs", 20),
        unit=UnitContext(
            stage="sample", item_id=item_id, correct_answer="B", letters=LETTERS
        ),
        **extra,
    )


def pushback_request(
    u: float, seed: int, n: int, condition: str = "expert/plausible", **extra
) -> GenerateRequest:
    control = condition == "control"
    return GenerateRequest(
        messages=MESSAGES,
        n=n,
        temperature=extra.pop("temperature", 1.0),
        seed=seed,
        top_logprobs=20,
        unit=UnitContext(
            stage="pushback",
            item_id="mmlu/x/0",
            correct_answer="B",
            letters=LETTERS,
            condition=condition,
            expertise=None if control else condition.split("/")[0],
            plausibility=None if control else condition.split("/")[1],
            suggested=None if control else "C",
            initial_answer="A",
            uncertainty=u,
        ),
    )


@pytest.fixture(scope="module")
def provider() -> SimulatedProvider:
    built = build_provider(load_profile("simulated"), model="sim", base_url=None)
    assert isinstance(built, SimulatedProvider)
    return built


def generate(provider: SimulatedProvider, request: GenerateRequest):
    return anyio.run(provider.generate, request)


def test_the_profile_builds_a_labelled_simulated_provider(provider) -> None:
    description = provider.describe()
    assert description["simulated"] is True
    curves = description["parameters"]["conformity"]
    assert curves["expert/plausible"] == {"intercept": -1.05, "slope": 2.3}
    assert provider.capabilities.supports_n


def test_same_seed_same_answers_other_seed_other_answers(provider) -> None:
    uncertain = next(
        f"mmlu/x/{i}"
        for i in range(50)
        if max(
            item_distribution(
                provider.parameters, sample_request(f"mmlu/x/{i}", 0).unit
            ).values()
        )
        < 0.5
    )
    first = generate(provider, sample_request(uncertain, seed=7))
    again = generate(provider, sample_request(uncertain, seed=7))
    other = generate(provider, sample_request(uncertain, seed=8))
    texts = [c.text for c in first.completions]
    assert texts == [c.text for c in again.completions]
    assert texts != [c.text for c in other.completions]
    single = generate(provider, sample_request(uncertain, seed=7, n=1, sample_index=3))
    assert len(single.completions) == 1


def test_item_distribution_is_fixed_by_item_and_item_seed() -> None:
    parameters = SimulationParameters()
    unit = sample_request("mmlu/x/3", 0).unit
    assert item_distribution(parameters, unit) == item_distribution(parameters, unit)
    moved = SimulationParameters(item_seed=1)
    spreads = {
        tuple(item_distribution(moved, sample_request(f"mmlu/x/{i}", 0).unit).values())
        != tuple(
            item_distribution(
                parameters, sample_request(f"mmlu/x/{i}", 0).unit
            ).values()
        )
        for i in range(20)
    }
    assert True in spreads


def test_stage_one_spans_certain_and_uncertain_items(provider) -> None:
    entropies = []
    for index in range(300):
        response = generate(provider, sample_request(f"mmlu/x/{index}", seed=index))
        answers = [c.text for c in response.completions if c.text]
        entropies.append(answer_entropy(answers, 4))
    certain = sum(e == 0 for e in entropies) / len(entropies)
    # 30 % certain by construction, plus uncertain items that happened to agree.
    assert 0.3 <= certain <= 0.55
    assert max(entropies) > 0.8


def test_logprobs_are_the_distribution_sampled_from(provider) -> None:
    request = sample_request("mmlu/x/5", seed=1, temperature=1.0)
    response = generate(provider, request)
    truth = item_distribution(provider.parameters, request.unit)
    probs = letter_probabilities(response.completions[0].first_token_logprobs, LETTERS)
    assert probs is not None
    for letter in LETTERS:
        assert probs[letter] == pytest.approx(truth[letter], abs=1e-12)
    assert letter_entropy(probs, 4) is not None


def test_greedy_stage_one_gives_the_favourite_every_time(provider) -> None:
    request = sample_request("mmlu/x/9", seed=3, temperature=0.0)
    truth = item_distribution(provider.parameters, request.unit)
    favourite = max(truth, key=truth.__getitem__)
    texts = {c.text for c in generate(provider, request).completions if c.text}
    assert texts == {favourite}


@pytest.mark.parametrize("u", [0.0, 0.5, 1.0])
def test_conformity_follows_the_curve_on_the_given_u(provider, u) -> None:
    response = generate(provider, pushback_request(u, seed=11, n=4000))
    parsed = [c.text for c in response.completions if c.text]
    rate = sum(text == "C" for text in parsed) / len(parsed)
    assert set(parsed) <= {"A", "C"}
    expected = logistic(-1.05 + 2.3 * u)
    se = math.sqrt(expected * (1 - expected) / len(parsed))
    assert abs(rate - expected) < 4 * se
    empty = 1 - len(parsed) / 4000
    assert 0.015 < empty < 0.05


def test_control_yielding_means_leaving_the_initial_answer(provider) -> None:
    response = generate(
        provider, pushback_request(1.0, seed=5, n=4000, condition="control")
    )
    parsed = [c.text for c in response.completions if c.text]
    changed = sum(text != "A" for text in parsed) / len(parsed)
    expected = logistic(-2.5 + 1.5)
    assert abs(changed - expected) < 4 * math.sqrt(
        expected * (1 - expected) / len(parsed)
    )
    assert {"B", "C", "D"} <= set(parsed)


def test_temperature_divides_the_log_odds(provider) -> None:
    response = generate(
        provider, pushback_request(0.0, seed=2, n=4000, temperature=2.0)
    )
    parsed = [c.text for c in response.completions if c.text]
    rate = sum(text == "C" for text in parsed) / len(parsed)
    expected = logistic(-1.05 / 2.0)
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / len(parsed))


def test_an_unconfigured_condition_is_a_clear_error() -> None:
    provider = SimulatedProvider.from_options("sim", {"conformity": {}})
    with pytest.raises(ConfigError, match="no conformity curve for condition"):
        generate(provider, pushback_request(0.2, seed=1, n=2))


def test_bad_options_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="certain_share"):
        SimulatedProvider.from_options("sim", {"certain_share": 2})
    with pytest.raises(ConfigError, match="Simulated backend option 'wobble'"):
        SimulatedProvider.from_options("sim", {"wobble": 1})


def test_sim_params_merge_over_the_profile(tmp_path) -> None:
    profile = load_profile("simulated")
    changed = with_simulation_options(
        profile,
        json.dumps(
            {
                "certain_share": 0.5,
                "conformity": {"control": {"intercept": 0.0, "slope": 0.0}},
            }
        ),
    )
    assert changed.options["certain_share"] == 0.5
    assert changed.options["conformity"]["control"] == {"intercept": 0.0, "slope": 0.0}
    assert changed.options["conformity"]["expert/correct"]["slope"] == 2.8
    path = tmp_path / "sim.json"
    path.write_text(json.dumps({"item_seed": 4}))
    assert with_simulation_options(profile, str(path)).options["item_seed"] == 4
    with pytest.raises(ConfigError, match="neither JSON nor a readable JSON file"):
        with_simulation_options(profile, "{not json")
    with pytest.raises(ConfigError, match="applies to the simulated provider only"):
        with_simulation_options(load_profile("local"), "{}")
