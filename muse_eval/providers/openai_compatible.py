"""A provider for any server that speaks the OpenAI chat-completions API.

vLLM, SGLang, llama.cpp's server and Ollama all do. Requests go over one pooled
``httpx.AsyncClient``; HTTP failures are turned into the `ProviderError` subclass that
the orchestrator's retry policy understands. The client never retries on its own.

`start` asks the server for ``/models`` first: a server that is down or refuses the
key fails the run there, before any chat request is sent.

Connections are spread over several small pools instead of one large one. httpx's
pool looks at every one of its connections for each request it places (and asks
the kernel whether each idle one is still open), so with 64 connections in one pool
choosing a connection costs more than the request itself: a bare loop reaches about
a third of the rate of eight pools of eight. A request goes to the first pool with
a free connection, which keeps the pools in use full and leaves the others alone.
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
    ConfigError,
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
from muse_eval.providers.litellm import parse_retry_after
from muse_eval.redaction import register_secret

__all__ = ["OpenAICompatibleProvider", "check_base_url", "classify_http_error"]

logger = logging.getLogger(__name__)

_CONTEXT_HINTS = ("context length", "context size", "maximum context", "too long")

#: Connections per httpx pool; see the module's docstring.
CONNECTIONS_PER_POOL = 8


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
        self.base_url = check_base_url(base_url)
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_connections = max_connections
        self.capabilities = capabilities or Capabilities()
        self._clients: list[httpx.AsyncClient] = []
        self._in_flight: list[int] = []
        self._per_pool = CONNECTIONS_PER_POOL

    async def start(self) -> None:
        """Open the connection pools and check that the server answers."""
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
        pools = -(-self.max_connections // CONNECTIONS_PER_POOL)
        self._per_pool = -(-self.max_connections // pools)
        limits = httpx.Limits(
            max_connections=self._per_pool, max_keepalive_connections=self._per_pool
        )
        # One TLS context for all pools: building one reads the CA bundle.
        tls = httpx.create_ssl_context()
        self._clients = [
            httpx.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, connect=10.0),
                limits=limits,
                verify=tls,
            )
            for _ in range(pools)
        ]
        self._in_flight = [0] * pools
        try:
            probe = await self._clients[0].get("/models", timeout=10.0)
        except httpx.HTTPError:
            await self.aclose()
            raise Unreachable(
                f"Nothing answers at {self.base_url}; start the server or fix "
                "--base-url."
            ) from None
        if probe.status_code in (401, 403):
            await self.aclose()
            raise classify_http_error(
                probe.status_code, probe.text, probe.headers, self.api_key_env
            )
        if probe.status_code == 404:
            await self.aclose()
            raise Unreachable(
                f"{self.base_url} answers but serves no OpenAI-compatible API "
                "(HTTP 404 on /models); check that --base-url ends in /v1."
            )

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Send one chat-completions request."""
        if not self._clients:
            raise RuntimeError("start() must be awaited before generate()")
        body = self._request_body(request)
        pool = self._pick_pool()
        self._in_flight[pool] += 1
        try:
            response = await self._clients[pool].post("/chat/completions", json=body)
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
        finally:
            self._in_flight[pool] -= 1
        if response.status_code != 200:
            raise classify_http_error(
                response.status_code,
                response.text,
                response.headers,
                self.api_key_env,
            )
        try:
            payload = response.json()
            return self._parse(payload)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise Transient(
                f"malformed reply from {self.base_url}: {type(exc).__name__}"
            ) from None

    def _pick_pool(self) -> int:
        for pool, busy in enumerate(self._in_flight):
            if busy < self._per_pool:
                return pool
        return self._in_flight.index(min(self._in_flight))

    async def aclose(self) -> None:
        """Close the connection pools."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

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
    # Only the alternatives say how likely the other letters were. A backend that
    # sends the chosen token alone would make every answer look certain, so that
    # counts as no log-probabilities at all.
    alternatives = content[0].get("top_logprobs")
    if not alternatives:
        return None
    table: dict[str, float] = {}
    for alt in alternatives:
        token = alt["token"]
        # Keep the most likely spelling when a token text appears twice.
        table[token] = max(table.get(token, float("-inf")), float(alt["logprob"]))
    return table


def classify_http_error(
    status: int,
    text: str,
    headers: httpx.Headers | dict[str, str],
    api_key_env: str | None = None,
) -> ProviderError:
    """Turn a non-200 HTTP reply into the matching `ProviderError`.

    Args:
        status: The HTTP status.
        text: The reply's body.
        headers: The reply's headers (for ``Retry-After``).
        api_key_env: The variable the key came from, named in an auth failure.
    """
    detail = _error_detail(text)
    if status == 429:
        return RateLimited(
            f"rate limited (HTTP 429): {detail}", parse_retry_after(headers)
        )
    if status in (401, 403):
        fix = (
            f"check the key in {api_key_env}"
            if api_key_env
            else "pass --api-key-env NAME with the variable that holds the key"
        )
        return AuthFailed(f"The server refused the credentials (HTTP {status}); {fix}.")
    if status in (400, 404, 413, 422):
        if any(hint in detail.lower() for hint in _CONTEXT_HINTS):
            return ContextTooLong(
                f"the conversation does not fit the context: {detail}"
            )
        return BadRequest(f"the server rejected the request (HTTP {status}): {detail}")
    return Transient(f"server error (HTTP {status}): {detail}")


def check_base_url(url: str) -> str:
    """Return `url` without a trailing slash, or say why it is not a server address.

    Raises:
        ConfigError: The URL is not http(s), has no host, or has an impossible port.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if (
        parsed is None
        or parsed.scheme not in ("http", "https")
        or not parsed.host
        or (parsed.port is not None and not 0 < parsed.port < 65536)
    ):
        raise ConfigError(
            f"--base-url '{url}' is not a server address; use "
            "http://HOST:PORT/v1, e.g. http://127.0.0.1:8000/v1."
        )
    return url.rstrip("/")


def _error_detail(text: str) -> str:
    try:
        payload = json.loads(text)
        error = payload.get("error", payload)
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (json.JSONDecodeError, AttributeError):
        message = text
    if message is None or not str(message).strip():
        message = text.strip() or "no details given"
    return " ".join(str(message).split())[:300]
