"""A simulated backend whose behaviour is set by known parameters: a test instrument.

It exists so that the analysis can be checked against truth. It never stands in for a
model, and every run that uses it is stored with ``simulated = true``.

Stage one. Each item gets a categorical distribution over its option letters, drawn
once from the item id and ``item_seed``, so it is the same in every request and run:

- a share ``certain_share`` of items put all their mass on one option (u = 0 for
  sure);
- the others put ``1 - spread`` on a favourite option, with ``spread`` uniform in
  [``min_spread``, ``max_spread``], and share the rest at random (Dirichlet(1));
- the favourite is the correct option with probability ``accuracy``.

The N samples are drawn from that distribution at the request's temperature (the
probabilities raised to 1/T and renormalized; greedy at T = 0). A share
``empty_rate`` of replies come back empty, which the parser records as ``empty``.

Stage two. The probability of yielding to a pushback is

    P(yield | u, condition) = logistic((intercept + slope * u) / T)

where u is the item's empirical stage-one entropy (``request.unit.uncertainty``), the
very number the analysis regresses on, ``intercept`` and ``slope`` are the
condition's parameters and T the stage-two temperature (greedy at T = 0). Yielding
means giving the suggested letter; in the control, which suggests nothing, it means
leaving the initial answer for another option. A reply that does not yield repeats
the initial answer.

Replies are bare letters. First-token log-probabilities, when asked for, are those of
the distribution the letters were drawn from. Every draw comes from a generator seeded
by the request's seed and sample index, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from muse_eval.errors import BadRequest, ConfigError
from muse_eval.providers._base import (
    Capabilities,
    Completion,
    GenerateRequest,
    GenerateResponse,
    UnitContext,
)

__all__ = [
    "ConformityParameters",
    "SimulatedProvider",
    "SimulationParameters",
    "item_distribution",
    "logistic",
]

#: Condition key whose parameters apply to conditions not listed on their own.
DEFAULT_CONDITION = "default"


def logistic(x: float) -> float:
    """The logistic function, safe for large arguments."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class ConformityParameters(BaseModel):
    """The true conformity curve of one condition, on the logit scale at T = 1."""

    model_config = ConfigDict(extra="forbid")

    intercept: float = Field(description="Log-odds of yielding at u = 0.")
    slope: float = Field(description="Change in log-odds from u = 0 to u = 1.")

    def at_temperature(self, temperature: float) -> ConformityParameters | None:
        """The curve a run at `temperature` follows; None when greedy (T = 0)."""
        if temperature <= 0:
            return None
        return ConformityParameters(
            intercept=self.intercept / temperature, slope=self.slope / temperature
        )

    def probability(self, uncertainty: float) -> float:
        """P(yield) at uncertainty `uncertainty`."""
        return logistic(self.intercept + self.slope * uncertainty)


class SimulationParameters(BaseModel):
    """Everything that sets the simulated backend's behaviour (``[options]``)."""

    model_config = ConfigDict(extra="forbid")

    item_seed: int = Field(0, description="Seeds every item's answer distribution.")
    certain_share: float = Field(
        0.3, ge=0, le=1, description="Share of items with all mass on one option."
    )
    accuracy: float = Field(
        0.6, ge=0, le=1, description="Chance that an item's favourite is correct."
    )
    min_spread: float = Field(
        0.02, ge=0, le=1, description="Least mass an uncertain item puts elsewhere."
    )
    max_spread: float = Field(
        0.8, ge=0, le=1, description="Most mass an uncertain item puts elsewhere."
    )
    empty_rate: float = Field(
        0.03, ge=0, lt=1, description="Share of replies that come back empty."
    )
    conformity: dict[str, ConformityParameters] = Field(
        default_factory=dict,
        description="Curve per condition id (e.g. 'expert/plausible', 'control'); "
        f"'{DEFAULT_CONDITION}' covers conditions not listed.",
    )

    def curve(self, condition: str) -> ConformityParameters:
        """The T = 1 curve of `condition`.

        Raises:
            ConfigError: Neither the condition nor a default is configured.
        """
        found = self.conformity.get(condition) or self.conformity.get(DEFAULT_CONDITION)
        if found is None:
            raise ConfigError(
                f"The simulated backend has no conformity curve for condition "
                f"'{condition}'; add it (or '{DEFAULT_CONDITION}') under "
                "[options.conformity] or in --sim-params."
            )
        return found


def item_distribution(
    parameters: SimulationParameters, unit: UnitContext
) -> dict[str, float]:
    """The item's probabilities over its letters at T = 1 (same in every request)."""
    rng = random.Random(f"{parameters.item_seed}:{unit.item_id}")
    letters = unit.letters
    wrong = [letter for letter in letters if letter != unit.correct_answer]
    certain = rng.random() < parameters.certain_share
    if rng.random() < parameters.accuracy or not wrong:
        favourite = unit.correct_answer
    else:
        favourite = rng.choice(wrong)
    if certain:
        return {letter: float(letter == favourite) for letter in letters}

    low, high = sorted((parameters.min_spread, parameters.max_spread))
    spread = rng.uniform(low, high)
    others = [letter for letter in letters if letter != favourite]
    weights = [rng.gammavariate(1.0, 1.0) for _ in others]
    total = sum(weights) or 1.0
    probs = {favourite: 1.0 - spread}
    for letter, weight in zip(others, weights, strict=True):
        probs[letter] = spread * weight / total
    return {letter: probs[letter] for letter in letters}


def _tempered(probs: Mapping[str, float], temperature: float) -> dict[str, float]:
    """Probabilities raised to 1/T and renormalized; a point mass at T = 0."""
    if temperature <= 0:
        best = max(probs, key=lambda letter: probs[letter])
        return {letter: float(letter == best) for letter in probs}
    powered = {
        letter: p ** (1.0 / temperature) if p > 0 else 0.0
        for letter, p in probs.items()
    }
    total = sum(powered.values())
    return {letter: p / total for letter, p in powered.items()}


def _draw(rng: random.Random, probs: Mapping[str, float]) -> str:
    letters = [letter for letter, p in probs.items() if p > 0]
    return rng.choices(letters, weights=[probs[letter] for letter in letters])[0]


def _logprobs(probs: Mapping[str, float], top: int) -> dict[str, float] | None:
    """The `top` most likely letters with their log-probabilities."""
    if top <= 0:
        return None
    ranked = sorted(
        ((letter, p) for letter, p in probs.items() if p > 0),
        key=lambda pair: -pair[1],
    )
    return {letter: math.log(p) for letter, p in ranked[:top]}


class SimulatedProvider:
    """A backend that answers by `SimulationParameters`; see the module docstring.

    Args:
        model: Name the run records for the simulated model.
        parameters: The known parameters.
    """

    kind = "simulated"

    def __init__(self, model: str, parameters: SimulationParameters) -> None:
        self.model = model
        self.parameters = parameters
        self.capabilities = Capabilities(
            supports_n=True, max_n=None, supports_logprobs=True, supports_seed=True
        )

    @classmethod
    def from_options(cls, model: str, options: Mapping[str, Any]) -> SimulatedProvider:
        """Build from a profile's ``[options]`` table.

        Raises:
            ConfigError: An option is unknown or out of range.
        """
        try:
            parameters = SimulationParameters.model_validate(dict(options))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"Simulated backend option '{where}': {first['msg']}; fix the "
                "profile's [options] or --sim-params."
            ) from None
        return cls(model, parameters)

    async def start(self) -> None:
        """Nothing to acquire."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def describe(self) -> dict[str, object]:
        """The parameters, so that every stored run carries its own truth."""
        return {
            "kind": self.kind,
            "model": self.model,
            "simulated": True,
            "parameters": self.parameters.model_dump(),
        }

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Answer as the parameters say.

        Raises:
            BadRequest: The request carries no `UnitContext` to answer by.
            ConfigError: The condition has no conformity curve.
        """
        unit = request.unit
        if unit is None:
            raise BadRequest(
                "The simulated backend answers only requests made by the "
                "orchestrator, which carry their MUSE unit."
            )
        if unit.stage == "sample":
            probs = _tempered(
                item_distribution(self.parameters, unit), request.temperature
            )
        else:
            probs = self._reply_distribution(unit, request.temperature)

        rng = random.Random(f"{request.seed}:{request.sample_index}:{unit.item_id}")
        logprobs = _logprobs(probs, request.top_logprobs)
        completions = []
        for _ in range(request.n):
            empty = rng.random() < self.parameters.empty_rate
            letter = _draw(rng, probs)
            completions.append(
                Completion(
                    text="" if empty else letter,
                    finish_reason="stop",
                    first_token_logprobs=logprobs,
                )
            )
        return GenerateResponse(
            completions=completions,
            model=self.model,
            prompt_tokens=sum(len(m.content) // 4 for m in request.messages),
            completion_tokens=request.n,
            cost_usd=0.0,
        )

    def _reply_distribution(
        self, unit: UnitContext, temperature: float
    ) -> dict[str, float]:
        """Letter probabilities of a stage-two reply."""
        initial = unit.initial_answer
        if initial is None or unit.uncertainty is None or unit.condition is None:
            raise BadRequest("A stage-two request needs its initial answer and u.")
        curve = self.parameters.curve(unit.condition)
        tempered = curve.at_temperature(temperature)
        if tempered is None:
            p_yield = float(curve.probability(unit.uncertainty) > 0.5)
        else:
            p_yield = tempered.probability(unit.uncertainty)

        probs = dict.fromkeys(unit.letters, 0.0)
        probs[initial] = 1.0 - p_yield
        if unit.suggested is not None:
            probs[unit.suggested] += p_yield
        else:
            others = [letter for letter in unit.letters if letter != initial]
            for letter in others:
                probs[letter] += p_yield / len(others)
        return probs
