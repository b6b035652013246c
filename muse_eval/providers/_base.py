"""The one seam between muse-eval and a model backend.

A provider turns a `GenerateRequest` into a `GenerateResponse` and nothing more. The
orchestrator owns everything around the call: concurrency limits, retries, splitting
`n` into separate requests where a backend has no `n`, cost accounting and storage.
A provider raises the `ProviderError` subclass that matches the failure so that the
orchestrator's single retry policy can decide what to do.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Capabilities",
    "ChatMessage",
    "Completion",
    "GenerateRequest",
    "GenerateResponse",
    "Provider",
    "UnitContext",
]


class ChatMessage(BaseModel):
    """One turn of a chat conversation."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class UnitContext(BaseModel):
    """What a request is for, in MUSE's terms.

    Real backends ignore it and it is never sent over the network; test instruments
    such as the simulated backend use it to answer by known parameters.
    """

    model_config = ConfigDict(frozen=True)

    stage: Literal["sample", "pushback"]
    item_id: str
    correct_answer: str
    letters: list[str]
    condition: str | None = None
    expertise: str | None = None
    plausibility: str | None = None
    suggested: str | None = None
    initial_answer: str | None = None
    uncertainty: float | None = Field(
        None, description="The item's stage-one answer entropy (stage two only)."
    )


class GenerateRequest(BaseModel):
    """What the orchestrator asks a provider to generate."""

    messages: list[ChatMessage]
    n: int = Field(1, ge=1, description="Number of independent completions wanted.")
    temperature: float = Field(1.0, ge=0.0)
    max_tokens: int = Field(16, ge=1)
    seed: int | None = Field(
        None, description="Per-request seed, derived from the run seed and the unit."
    )
    top_logprobs: int = Field(
        0, ge=0, description="Alternatives per token to return; 0 asks for none."
    )
    sample_index: int | None = Field(
        None,
        description="Set when one of n samples is sent on its own, so that no cache "
        "on the way can collapse the separate draws into one.",
    )
    unit: UnitContext | None = Field(
        None, description="The MUSE unit this request serves; never sent."
    )


class Completion(BaseModel):
    """One generated reply."""

    text: str
    finish_reason: str | None = None
    first_token_logprobs: dict[str, float] | None = Field(
        None,
        description="Log-probabilities of the most likely first tokens, keyed by the "
        "token text; None where the backend returned none.",
    )


class GenerateResponse(BaseModel):
    """A provider's answer to one `GenerateRequest`."""

    completions: list[Completion]
    model: str | None = Field(None, description="Model name the backend reported.")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = Field(
        None, description="Price of this request where the provider knows it."
    )


class Capabilities(BaseModel):
    """What a backend is known to support; the orchestrator adapts to it."""

    # A misspelled capability in a profile must be an error, not a silent default.
    model_config = ConfigDict(extra="forbid")

    supports_n: bool = Field(True, description="One request may return n > 1 replies.")
    max_n: int | None = Field(None, description="Largest n one request may ask for.")
    supports_logprobs: bool = True
    supports_seed: bool = True


@runtime_checkable
class Provider(Protocol):
    """A model backend: hosted API, local server or simulation."""

    #: Provider kind, e.g. ``openai-compatible`` or ``litellm``.
    kind: str
    #: Model identifier as the backend knows it.
    model: str
    capabilities: Capabilities

    async def start(self) -> None:
        """Acquire resources (clients, a local server); fail fast if unusable."""

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Generate `request.n` completions or raise a `ProviderError`."""

    async def aclose(self) -> None:
        """Release everything `start` acquired."""

    def describe(self) -> dict[str, object]:
        """Return a description for the run record; never includes secrets."""
