"""Provider kinds, and how a profile plus a run configuration becomes a provider.

Each kind's module is imported only when a run uses it, so the CLI starts fast and
an SDK that is not installed only matters to the runs that need it.
"""

from __future__ import annotations

from muse_eval.errors import ConfigError
from muse_eval.providers._base import (
    Capabilities,
    ChatMessage,
    Completion,
    GenerateRequest,
    GenerateResponse,
    Provider,
)

__all__ = [
    "KINDS",
    "Capabilities",
    "ChatMessage",
    "Completion",
    "GenerateRequest",
    "GenerateResponse",
    "Provider",
    "build_provider",
]

#: Every provider kind a profile may name.
KINDS = ("local", "openai-compatible", "litellm", "simulated")


def build_provider(
    profile: object,
    *,
    model: str,
    base_url: str | None,
    slot_tokens: int = 2048,
    slots: int = 10,
    max_concurrency: int = 1,
    api_key_env: str | None = None,
) -> Provider:
    """Create the provider a profile describes (not yet started).

    Args:
        profile: A `ProviderProfile`.
        model: The model to use, already resolved from flags and the profile.
        base_url: The server address, for kinds that talk HTTP.
        slot_tokens: Longest conversation of the run, for engines that size a context.
        slots: Parallel requests an embedded engine should serve.
        max_concurrency: Requests the orchestrator keeps in flight.
        api_key_env: Variable holding the API key, instead of the profile's
            (``--api-key-env``).

    Raises:
        ConfigError: The profile's kind is unknown or lacks what it needs.
    """
    from muse_eval.config import ProviderProfile

    assert isinstance(profile, ProviderProfile)
    caps = profile.capabilities.model_copy()
    key_env = api_key_env or profile.api_key_env
    if profile.kind == "local":
        from muse_eval.providers.local import LocalProvider

        return LocalProvider(
            model,
            slots=int(profile.options.get("slots", slots)),
            slot_tokens=slot_tokens,
            threads=profile.options.get("threads"),
            timeout=profile.timeout,
        )
    if profile.kind == "openai-compatible":
        from muse_eval.providers.openai_compatible import OpenAICompatibleProvider

        if not base_url:
            raise ConfigError(
                f"The '{profile.name}' provider needs a server address; pass "
                "--base-url http://HOST:PORT/v1."
            )
        return OpenAICompatibleProvider(
            model,
            base_url=base_url,
            api_key_env=key_env,
            timeout=profile.timeout,
            max_connections=max(max_concurrency, 16),
            capabilities=caps,
        )
    if profile.kind == "litellm":
        from muse_eval.providers.litellm import LiteLLMProvider

        prefix = profile.model_prefix
        extra = profile.options.get("extra", {})
        if not isinstance(extra, dict):
            raise ConfigError(
                f"Profile '{profile.name}': options.extra must be a table of "
                "litellm arguments."
            )
        return LiteLLMProvider(
            model if model.startswith(prefix) else f"{prefix}{model}",
            api_base=base_url,
            api_key_env=key_env,
            timeout=profile.timeout,
            capabilities=caps,
            extra=extra,
        )
    if profile.kind == "simulated":
        from muse_eval.providers.simulated import SimulatedProvider

        return SimulatedProvider.from_options(model, profile.options)
    raise ConfigError(
        f"Profile '{profile.name}' has unknown kind '{profile.kind}'; use one of "
        f"{', '.join(KINDS)}."
    )
