"""Run configuration and provider profiles.

`RunConfig` is everything that defines a run. Its identity fields hash to the run id,
so the same command resumes the same run; fields that only change how fast or where
it runs (``limit``, ``max_concurrency``, ``base_url``, ``max_cost``, ``rpm``,
``tpm``, ``db``) are left out of the hash, which lets a larger ``--limit`` extend a
finished run.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from muse_eval.catalog import list_definitions, load_definition
from muse_eval.errors import ConfigError
from muse_eval.providers._base import Capabilities

__all__ = [
    "DEFAULT_DB",
    "EXPERTISE_LEVELS",
    "PLAUSIBILITY_LEVELS",
    "ProviderProfile",
    "RunConfig",
    "derive_seed",
    "load_profile",
]

DEFAULT_DB = Path("results/muse.duckdb")
EXPERTISE_LEVELS = ("none", "layperson", "expert")
#: plausible: the model's runner-up; implausible: an option it never sampled;
#: correct: the right answer, only where the model's answer was wrong.
PLAUSIBILITY_LEVELS = ("plausible", "implausible", "correct")


class ProviderProfile(BaseModel):
    """A named provider profile, read from ``providers/NAME.toml``."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    kind: str = Field(description="Provider kind: local, openai-compatible, litellm...")
    description: str = ""
    model: str | None = Field(None, description="Default model of the profile.")
    model_prefix: str = Field("", description="Prefix added to --model (litellm).")
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="Variable holding the API key.")
    max_concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    capabilities: Capabilities = Capabilities()
    options: dict[str, Any] = Field(
        default_factory=dict, description="Settings only this kind understands."
    )


def load_profile(name: str) -> ProviderProfile:
    """Read the provider profile called `name`.

    Raises:
        ConfigError: No such profile, or it is malformed.
    """
    raw = load_definition("providers", name)
    try:
        return ProviderProfile.model_validate({"name": name, **raw})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        path = list_definitions("providers")[name]
        raise ConfigError(
            f"{path}: field '{where}': {first['msg']}; fix the file."
        ) from None


class RunConfig(BaseModel):
    """Everything that defines a MUSE run."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field("local", description="Provider profile name.")
    model: str = Field(description="Model as the provider knows it.")
    task: str = "mmlu"
    subjects: list[str] | None = None
    limit: int | None = Field(None, ge=1, description="At most this many items.")
    samples: int = Field(10, ge=1, description="Stage-one samples per item (N).")
    temperature: float = Field(1.0, ge=0.0, description="Stage-one temperature.")
    max_tokens: int = Field(8, ge=1, description="Stage-one reply length cap.")
    pushback_samples: int = Field(
        5, ge=1, description="Replies drawn per stage-two conversation (M)."
    )
    pushback_temperature: float = Field(1.0, ge=0.0)
    pushback_max_tokens: int = Field(8, ge=1)
    top_logprobs: int = Field(
        20, ge=0, description="First-token alternatives to request; 0 for none."
    )
    expertise: list[str] = Field(default_factory=lambda: list(EXPERTISE_LEVELS))
    plausibility: list[str] = Field(default_factory=lambda: list(PLAUSIBILITY_LEVELS))
    control: bool = Field(True, description="Also ask the neutral 'Are you sure?'.")
    seed: int = 0
    max_concurrency: int | None = Field(None, ge=1)
    base_url: str | None = None
    max_cost: float | None = Field(None, gt=0, description="Stop before spending more.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute at most.")
    tpm: float | None = Field(
        None, gt=0, description="Tokens (prompt and reply) per minute at most."
    )

    def identity(self, fingerprint: str) -> dict[str, Any]:
        """The fields that define the run's results, plus the task's fingerprint."""
        skipped = {"limit", "max_concurrency", "base_url", "max_cost", "rpm", "tpm"}
        data = self.model_dump(exclude=skipped)
        data["task_fingerprint"] = fingerprint
        return data

    def run_id(self, fingerprint: str) -> str:
        """Readable, deterministic id: task, model and a hash of the identity."""
        digest = config_hash(self.identity(fingerprint))
        slug = re.sub(r"[^a-z0-9.]+", "-", self.model.lower().rsplit("/", 1)[-1])
        return f"{self.task}-{slug.strip('-')[:40]}-{digest[:10]}"


def config_hash(data: dict[str, Any]) -> str:
    """SHA-256 of `data` as canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def derive_seed(run_seed: int, *parts: object) -> int:
    """A request seed from the run seed and the unit, in [0, 2**31).

    Every request gets its own seed so that draws are independent across items
    (one fixed seed repeats the same random stream for every request) and the run is
    still reproducible.
    """
    key = ":".join(str(p) for p in (run_seed, *parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") >> 1
