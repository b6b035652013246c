"""The embedded provider: a llama.cpp server that muse-eval starts and stops itself.

The engine is ``xllamacpp``, a prebuilt CPU build of llama.cpp's OpenAI-compatible
server, loaded in-process and bound to 127.0.0.1 on a random port. Requests then go
through `OpenAICompatibleProvider` like those to any other server, so the local path
and the remote path share every line of request and error handling.

llama.cpp divides its context evenly between parallel slots, and ``n`` choices each
take a slot, so the context is sized as ``slots * slot_tokens`` where ``slot_tokens``
covers the longest conversation of the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio

from muse_eval.errors import ConfigError
from muse_eval.local_models import resolve_model_path
from muse_eval.providers._base import (
    Capabilities,
    GenerateRequest,
    GenerateResponse,
)
from muse_eval.providers.openai_compatible import OpenAICompatibleProvider

__all__ = ["PROMPT_CACHE_MIB", "LocalProvider", "start_engine"]

#: Host memory llama.cpp may use to keep prompts evicted from the slots.
PROMPT_CACHE_MIB = 256

logger = logging.getLogger(__name__)


def start_engine(path: Path, slots: int, slot_tokens: int, threads: int) -> Any:
    """Start llama.cpp's server on 127.0.0.1 at a random port; blocks while loading.

    The server stops when the returned object is garbage-collected; its address is
    its ``listening_address``.

    Raises:
        ConfigError: The engine is not installed.
    """
    try:
        import xllamacpp
    except ImportError:
        raise ConfigError(
            "The local engine (xllamacpp) is not installed; run `make setup`."
        ) from None

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.hostnames = ["127.0.0.1"]
    params.n_parallel = slots
    params.n_ctx = slots * slot_tokens
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0
    # llama.cpp keeps evicted prompts in host memory, 8 GiB by default: over a long
    # run that grew the process by gigabytes. The slots' own caches already reuse a
    # conversation's prefix across its stage-two turns.
    params.cache_ram_mib = PROMPT_CACHE_MIB
    logger.info(
        "Starting the local engine: %s, %d slots x %d tokens, %d threads",
        path.name,
        slots,
        slot_tokens,
        threads,
    )
    return xllamacpp.Server(params)


class LocalProvider:
    """Runs a GGUF model with the embedded llama.cpp server for the run's duration."""

    kind = "local"

    def __init__(
        self,
        model: str,
        *,
        slots: int = 10,
        slot_tokens: int = 2048,
        threads: int | None = None,
        timeout: float = 600.0,
    ) -> None:
        if slots < 1 or slot_tokens < 64:
            raise ConfigError("The local engine needs at least 1 slot of 64 tokens.")
        self.model = model
        self.slots = slots
        self.slot_tokens = slot_tokens
        self.threads = threads or os.cpu_count() or 1
        self.timeout = timeout
        self.capabilities = Capabilities(supports_n=True, max_n=slots)
        self._server: Any = None
        self._http: OpenAICompatibleProvider | None = None

    async def start(self) -> None:
        """Load the model and start the server on loopback."""
        path = await anyio.to_thread.run_sync(resolve_model_path, self.model)
        self._server = await anyio.to_thread.run_sync(
            start_engine, path, self.slots, self.slot_tokens, self.threads
        )
        self._http = OpenAICompatibleProvider(
            self.model,
            base_url=f"{self._server.listening_address}/v1",
            timeout=self.timeout,
            capabilities=self.capabilities,
        )
        await self._http.start()

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Send one request to the embedded server."""
        if self._http is None:
            raise RuntimeError("start() must be awaited before generate()")
        return await self._http.generate(request)

    async def aclose(self) -> None:
        """Close the client and stop the server."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        # Dropping the last reference shuts the server's threads down.
        self._server = None

    @property
    def base_url(self) -> str | None:
        """Address of the running server, for tests that talk to it directly."""
        return self._http.base_url if self._http else None

    def describe(self) -> dict[str, object]:
        """Kind, model and the engine's sizing."""
        return {
            "kind": self.kind,
            "model": self.model,
            "slots": self.slots,
            "slot_tokens": self.slot_tokens,
            "threads": self.threads,
        }
