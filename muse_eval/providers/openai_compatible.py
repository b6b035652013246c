"""A provider for any server that speaks the OpenAI chat-completions API.

vLLM, SGLang, llama.cpp's server and Ollama all do. Requests go over one pooled
``httpx.AsyncClient``; HTTP failures are turned into the `ProviderError` subclass that
the orchestrator's retry policy understands. The client never retries on its own.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import httpx

from muse_eval.errors import (
    AuthFailed,
    BadRequest,
    ContextTooLong,
    ProviderError,
    RateLimited,
    Transient,
    Unreachable,
)
from muse_eval.providers._base import (
    Capabilities,
    Completion,
    GenerateRequest,
    GenerateResponse,
)
from muse_eval.redaction import register_secret

__all__ = ["OpenAICompatibleProvider", "classify_http_error", "parse_retry_after"]

logger = logging.getLogger(__name__)

_CONTEXT_HINTS = ("context length", "context size", "maximum context", "too long")


class OpenAICompatibleProvider:
    """Chat completions over HTTP at `base_url` (which ends in ``/v1``)."""

    kind = "openai-compatible"

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        max_connections: int = 256,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_connections = max_connections
        self.capabilities = capabilities or Capabilities()
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the connection pool and check that the server answers."""
        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AuthFailed(
                    f"{self.api_key_env} is not set; export it with the API key of "
                    f"{self.base_url}."
                )
            register_secret(key)
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=10.0),
            limits=limits,
        )
        try:
            await self._client.get("/models", timeout=10.0)
        except httpx.HTTPError:
            await self.aclose()
            raise Unreachable(
                f"Nothing answers at {self.base_url}; start the server or fix "
                "--base-url."
            ) from None

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Send one chat-completions request."""
        if self._client is None:
            raise RuntimeError("start() must be awaited before generate()")
        body = self._request_body(request)
        try:
            response = await self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException:
            raise Transient(
                f"{self.base_url} did not answer in {self.timeout:g} s"
            ) from None
        except httpx.ConnectError:
            raise Unreachable(f"Nothing answers at {self.base_url}.") from None
        except httpx.TransportError as exc:
            raise Transient(
                f"connection to {self.base_url} failed: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise classify_http_error(
                response.status_code, response.text, response.headers
            )
        try:
            payload = response.json()
            return self._parse(payload)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise Transient(
                f"malformed reply from {self.base_url}: {type(exc).__name__}"
            ) from None

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def describe(self) -> dict[str, object]:
        """Kind, model and base URL; the key's variable name, never its value."""
        return {
            "kind": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
        }

    def _request_body(self, request: GenerateRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.n > 1:
            body["n"] = request.n
        if request.seed is not None and self.capabilities.supports_seed:
            body["seed"] = request.seed
        if request.top_logprobs and self.capabilities.supports_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        if request.sample_index is not None:
            # A distinct field per sample keeps prefix or response caches from
            # returning one draw for all of them.
            body["user"] = f"muse-sample-{request.sample_index}"
        return body

    @staticmethod
    def _parse(payload: dict[str, Any]) -> GenerateResponse:
        completions = []
        for choice in payload["choices"]:
            message = choice.get("message") or {}
            completions.append(
                Completion(
                    text=message.get("content") or "",
                    finish_reason=choice.get("finish_reason"),
                    first_token_logprobs=_first_token_logprobs(choice.get("logprobs")),
                )
            )
        usage = payload.get("usage") or {}
        return GenerateResponse(
            completions=completions,
            model=payload.get("model"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )


def _first_token_logprobs(logprobs: dict[str, Any] | None) -> dict[str, float] | None:
    content = (logprobs or {}).get("content") or []
    if not content:
        return None
    first = content[0]
    alternatives = first.get("top_logprobs") or [first]
    table: dict[str, float] = {}
    for alt in alternatives:
        token = alt["token"]
        # Keep the most likely spelling when a token text appears twice.
        table[token] = max(table.get(token, float("-inf")), float(alt["logprob"]))
    return table


def parse_retry_after(headers: httpx.Headers | dict[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header given in seconds, if any."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def classify_http_error(
    status: int, text: str, headers: httpx.Headers | dict[str, str]
) -> ProviderError:
    """Turn a non-200 HTTP reply into the matching `ProviderError`."""
    detail = _error_detail(text)
    if status == 429:
        return RateLimited(
            f"rate limited (HTTP 429): {detail}", parse_retry_after(headers)
        )
    if status in (401, 403):
        return AuthFailed(
            f"the server refused the credentials (HTTP {status}); check the API key."
        )
    if status in (400, 404, 413, 422):
        if any(hint in detail.lower() for hint in _CONTEXT_HINTS):
            return ContextTooLong(
                f"the conversation does not fit the context: {detail}"
            )
        return BadRequest(f"the server rejected the request (HTTP {status}): {detail}")
    return Transient(f"server error (HTTP {status}): {detail}")


def _error_detail(text: str) -> str:
    try:
        payload = json.loads(text)
        error = payload.get("error", payload)
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (json.JSONDecodeError, AttributeError):
        message = text
    return " ".join(str(message).split())[:300]
