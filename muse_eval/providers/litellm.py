"""A provider for any backend litellm can reach: hosted APIs and local servers.

litellm is imported in `LiteLLMProvider.start`, never when this module is imported,
because importing it takes seconds and the CLI must start fast. Before that first
import the environment is set so that litellm uses the price table bundled with the
installed package: otherwise it downloads one, which makes costs depend on the day a
run happened and sends traffic nobody asked for.

Retries belong to the orchestrator. litellm has two retry layers of its own (its
``num_retries`` wrapper and the retries of the SDK underneath, ``max_retries``); both
are switched off here so that every 429 and 5xx reaches the orchestrator's single
policy, which honours Retry-After and counts attempts.

The API key is read from the environment variable the profile names. It is passed
to litellm per request and is scrubbed from every message this module raises or
logs, because some backends echo the key they rejected. litellm's loggers lose the
stderr handlers litellm gives them, so that their records reach muse-eval's own
handler, which masks secrets, instead of bypassing it.

``drop_params`` is off: a parameter the backend does not take fails the request
instead of vanishing, so no run believes it asked for ``n`` or logprobs it never
got. Before the first request, `start` narrows the profile's capabilities to the
parameters litellm says the backend takes (no ``n`` for Anthropic, no
``top_logprobs`` for Gemini), so those parameters are not sent at all and the
orchestrator records the gap.
"""

from __future__ import annotations

import email.utils
import importlib.metadata
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

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
from muse_eval.redaction import register_secret

__all__ = [
    "RESERVED_OPTIONS",
    "LiteLLMProvider",
    "litellm_price_table_info",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

#: Arguments this provider sets itself; a profile's ``extra`` may not override them,
#: since doing so could hide retries, drop parameters silently or leak the key.
RESERVED_OPTIONS = frozenset(
    {
        "api_base",
        "api_key",
        "caching",
        "drop_params",
        "logprobs",
        "max_retries",
        "max_tokens",
        "messages",
        "model",
        "n",
        "num_retries",
        "seed",
        "stream",
        "temperature",
        "timeout",
        "top_logprobs",
    }
)

_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

# Environment variables whose values must never be shown even though this provider
# did not read them: with no api_key_env, litellm picks provider keys up itself.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
_MIN_SECRET_LENGTH = 8

# litellm prefixes messages with class names, e.g. "litellm.RateLimitError:
# RateLimitError: OpenAIException - ...". The backend's own words are what a user
# needs, so the prefixes are cut.
_LITELLM_PREFIX = re.compile(r"^(?:(?:litellm\.)?\w+(?:Error|Exception|Timeout): )+")
_PROVIDER_PREFIX = re.compile(r"^\w+Exception - ")
_MAX_DETAIL_CHARS = 300


def _import_litellm() -> ModuleType:
    """Import litellm with its price table pinned to the bundled copy, and quiet it."""
    # Both must be in the environment before the first import: litellm reads them
    # while its package initialises. Offline mode also stops it fetching other
    # catalogues (tokenizers, beta-header lists) on its own.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = False
    for name in _LITELLM_LOGGERS:
        named = logging.getLogger(name)
        # litellm's own handlers write to stderr past the redacting filter.
        for handler in list(named.handlers):
            named.removeHandler(handler)
        named.propagate = True
        if "LITELLM_LOG" not in os.environ:
            named.setLevel(logging.WARNING)
    return litellm


def litellm_price_table_info() -> dict[str, object]:
    """Describe where litellm's prices come from, for the run record.

    Returns:
        ``litellm_version``, ``price_table`` (a sentence naming the bundled copy and
        the litellm version it ships with) and, where litellm reports them,
        ``price_table_source`` and ``price_table_revision``.
    """
    _import_litellm()
    version = _litellm_version()
    info: dict[str, object] = {
        "litellm_version": version,
        "price_table": f"bundled local copy (litellm {version})",
    }

    # Where the table came from is litellm-internal; older releases lack it.
    try:
        from litellm.litellm_core_utils.get_model_cost_map import (
            get_model_cost_map_source_info,
        )

        source = get_model_cost_map_source_info()
    except (ImportError, AttributeError):
        return info
    info["price_table_source"] = source.get("source")
    info["price_table_revision"] = source.get("source_revision")
    return info


def _litellm_version() -> str:
    for distribution in ("litellm", "litellm-core"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


class LiteLLMProvider:
    """A `Provider` that sends chat requests through `litellm.acompletion`.

    Args:
        model: litellm model string, e.g. ``openai/gpt-4o-mini`` or
            ``anthropic/claude-3-5-haiku-latest``.
        api_base: Base URL of the backend; None uses litellm's default for the
            model's provider.
        api_key_env: Name of the environment variable that holds the API key; None
            leaves litellm to find the provider's usual variable itself.
        timeout: Seconds one request may take before it fails as `Transient`.
        capabilities: What the backend supports; defaults to everything.
        extra: Further keyword arguments for `litellm.acompletion`, e.g.
            ``{"extra_headers": {...}}``.

    Raises:
        ConfigError: If ``extra`` sets an argument this provider controls.
    """

    kind: str = "litellm"

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        capabilities: Capabilities | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        clash = sorted(RESERVED_OPTIONS.intersection(extra or {}))
        if clash:
            raise ConfigError(
                f"the provider option(s) {', '.join(clash)} are set by muse-eval "
                "itself; remove them from the profile's extra options"
            )

        self.model = model
        self.api_base = api_base
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.capabilities = capabilities or Capabilities()
        self.extra: dict[str, Any] = dict(extra or {})

        self._litellm: ModuleType | None = None
        self._api_key: str | None = None
        self._secrets: tuple[str, ...] = ()
        self._cost_unknown = False
        self._supported: frozenset[str] | None = None

    async def start(self) -> None:
        """Read the API key and import litellm.

        Raises:
            AuthFailed: If ``api_key_env`` names a variable that is not set.
        """
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise AuthFailed(
                    f"{self.api_key_env} is not set; export it or pass "
                    "--api-key-env NAME"
                )
            self._api_key = key

        self._secrets = _collect_secrets(self._api_key, os.environ)
        # Registered process-wide too, so the CLI, the store and the log filter
        # mask whatever this provider could send, not only what it raises.
        register_secret(self._api_key)
        if self._api_key is None:
            for secret in self._secrets:
                register_secret(secret)
        self._litellm = _import_litellm()
        self._supported = _supported_params(self._litellm, self.model)
        self._narrow_capabilities()
        logger.debug("litellm provider ready for %s at %s", self.model, self._where())

    def _narrow_capabilities(self) -> None:
        """Switch off what litellm says the backend does not take."""
        supported = self._supported
        if supported is None:
            return
        caps = self.capabilities
        if caps.supports_n and "n" not in supported:
            caps.supports_n = False
        if caps.supports_logprobs and not {"logprobs", "top_logprobs"} <= supported:
            caps.supports_logprobs = False
        if caps.supports_seed and "seed" not in supported:
            caps.supports_seed = False

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Price `prompt_tokens` and `completion_tokens` from litellm's bundled table.

        Returns:
            Dollars, or None when the model is not in the table.
        """
        litellm = self._litellm or _import_litellm()
        try:
            prompt, completion = litellm.cost_per_token(
                model=self.model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        except Exception as exc:
            logger.debug("no price for %s: %s", self.model, self._scrub(str(exc)))
            return None
        total = float(prompt) + float(completion)
        return total if math.isfinite(total) else None

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        """Send one chat request and return its completions.

        Args:
            request: The conversation and sampling settings.

        Returns:
            One `Completion` per choice the backend returned.

        Raises:
            RateLimited: On HTTP 429, with the server's Retry-After where sent.
            AuthFailed: On HTTP 401 or 403, or 402 (no credit left).
            ContextTooLong: When the conversation exceeds the model's context.
            BadRequest: On other 4xx answers.
            Unreachable: When nothing accepts connections at the base URL.
            Transient: On timeouts, dropped connections, 5xx and broken replies.
        """
        litellm = self._litellm
        if litellm is None:
            raise RuntimeError("LiteLLMProvider.start() must be awaited first")

        arguments = self._completion_arguments(request)
        began = time.perf_counter()
        try:
            response = await litellm.acompletion(**arguments)
        except Exception as exc:
            # Whatever litellm raises must leave as a ProviderError, for the
            # orchestrator's one retry policy, and with the key scrubbed from it.
            error = self._translate(exc)
            logger.debug(
                "%s failed after %.3fs: %s",
                self.model,
                time.perf_counter() - began,
                error,
            )
            # The original is not chained: its text and its causes' texts may
            # carry the key, and a printed traceback would show them.
            raise error from None

        logger.debug("%s answered in %.3fs", self.model, time.perf_counter() - began)
        return self._to_generate_response(response)

    async def aclose(self) -> None:
        """Forget the API key.

        litellm's HTTP clients are shared by every litellm call in the process and
        cached per event loop, and closing them leaves closed clients in that cache
        for later calls to fail on, so they are left for litellm to clean up.
        """
        self._api_key = None
        self._litellm = None

    def describe(self) -> dict[str, object]:
        """Return kind, model, base URL and the key's variable name, never the key."""
        return {
            "kind": self.kind,
            "model": self.model,
            "api_base": self.api_base,
            "api_key_env": self.api_key_env,
        }

    # -- request and response ----------------------------------------------

    def _completion_arguments(self, request: GenerateRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            **self.extra,
            "model": self.model,
            "messages": [message.model_dump() for message in request.messages],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": self.timeout,
            # num_retries is litellm's own retry loop, which retries even a 401;
            # max_retries is the SDK's. litellm currently copies num_retries over
            # max_retries, but both are pinned so no release can bring one back.
            "num_retries": 0,
            "max_retries": 0,
            # An explicit False keeps any process-wide litellm cache from
            # collapsing separate draws of the same prompt into one.
            "caching": False,
            "drop_params": False,
        }
        # n=1 is every API's default; sending it anyway makes litellm reject the
        # call for backends that have no n parameter at all.
        if request.n > 1:
            arguments["n"] = request.n
        if request.seed is not None and self.capabilities.supports_seed:
            arguments["seed"] = request.seed
        if request.top_logprobs > 0 and self.capabilities.supports_logprobs:
            arguments["logprobs"] = True
            arguments["top_logprobs"] = request.top_logprobs
        if request.sample_index is not None and self._takes("user"):
            # A distinct field per sample keeps caches on the way from returning
            # one draw for all of them.
            arguments["user"] = f"muse-sample-{request.sample_index}"
        if self.api_base is not None:
            arguments["api_base"] = self.api_base
        if self._api_key is not None:
            arguments["api_key"] = self._api_key
        return arguments

    def _takes(self, parameter: str) -> bool:
        return self._supported is not None and parameter in self._supported

    def _to_generate_response(self, response: Any) -> GenerateResponse:
        completions = [
            Completion(
                text=_field(_field(choice, "message"), "content") or "",
                finish_reason=_field(choice, "finish_reason"),
                first_token_logprobs=_first_token_logprobs(choice),
            )
            for choice in _field(response, "choices") or []
        ]
        usage = _field(response, "usage")
        return GenerateResponse(
            completions=completions,
            model=_field(response, "model"),
            prompt_tokens=_field(usage, "prompt_tokens"),
            completion_tokens=_field(usage, "completion_tokens"),
            cost_usd=self._cost_of(response),
        )

    def _cost_of(self, response: Any) -> float | None:
        """Price the response from litellm's table; None when the model is not in it."""
        if self._cost_unknown or self._litellm is None:
            return None
        try:
            cost = self._litellm.completion_cost(completion_response=response)
        except Exception as exc:
            # An unpriced model is no failure. A model missing from the table stays
            # missing for the whole run, so asking again would only cost time.
            if type(exc).__name__ == "ModelNotMappedError":
                self._cost_unknown = True
            logger.debug("no price for %s: %s", self.model, self._scrub(str(exc)))
            return None
        return float(cost) if cost is not None and math.isfinite(cost) else None

    # -- errors --------------------------------------------------------------

    def _translate(self, exc: Exception) -> ProviderError:
        """Map a litellm exception to the muse-eval error that says what to do."""
        errors = self._litellm.exceptions if self._litellm is not None else None
        if errors is None or not isinstance(exc, _litellm_exception_types(errors)):
            # Not a litellm error: a failure inside litellm itself, e.g. while it
            # reads a reply that is not the shape it expects. Retrying is right.
            what = f"failed unexpectedly ({type(exc).__name__})"
            return Transient(self._sentence(what, exc))

        status = getattr(exc, "status_code", None)
        where = self._where()

        if isinstance(exc, errors.RateLimitError):
            retry_after = parse_retry_after(_response_headers(exc))
            return RateLimited(
                self._sentence("throttled the request (429)", exc), retry_after
            )
        if isinstance(exc, errors.AuthenticationError | errors.PermissionDeniedError):
            return AuthFailed(
                self._sentence(
                    f"rejected the credentials ({status})", exc, fix=self._key_fix()
                )
            )
        if isinstance(exc, errors.ContextWindowExceededError):
            return ContextTooLong(
                self._sentence(
                    "cannot fit the conversation in the model's context", exc
                )
            )
        if isinstance(exc, getattr(errors, "PaymentRequiredError", ())):
            # Every later request would fail the same way, so the run should stop.
            return AuthFailed(
                self._sentence(
                    "refused payment (402)", exc, fix="check the account's credit"
                )
            )
        if isinstance(exc, errors.Timeout):
            return Transient(
                self._sentence(f"did not answer within {self.timeout:g}s", exc)
            )
        if _refused_connection(exc):
            return Unreachable(
                f"Nothing answers at {where}; start the server or fix --base-url "
                f"({self._detail(exc)})."
            )
        if isinstance(
            exc,
            errors.BadRequestError
            | errors.UnprocessableEntityError
            | errors.NotFoundError,
        ):
            return BadRequest(self._sentence(f"rejected the request ({status})", exc))
        if (
            isinstance(exc, errors.APIError)
            and isinstance(status, int)
            and 400 <= status < 500
        ):
            return BadRequest(self._sentence(f"rejected the request ({status})", exc))
        return Transient(self._sentence("failed to answer", exc))

    def _sentence(self, what: str, exc: BaseException, fix: str | None = None) -> str:
        detail = self._detail(exc)
        if fix and detail.endswith(".") and not detail.endswith("..."):
            detail = detail[:-1]
        text = f"{self.model} at {self._where()} {what}: {detail}"
        return f"{text}; {fix}" if fix else text

    def _detail(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        text = _PROVIDER_PREFIX.sub("", _LITELLM_PREFIX.sub("", text))
        text = self._scrub(text)
        if len(text) > _MAX_DETAIL_CHARS:
            text = text[: _MAX_DETAIL_CHARS - 3] + "..."
        return text

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _key_fix(self) -> str:
        if self.api_key_env is None:
            return "set the key with --api-key-env NAME"
        return f"check the key in {self.api_key_env}"

    def _where(self) -> str:
        return self.api_base or "the provider's default URL"


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Read how long a server asked the client to wait.

    Args:
        headers: Response headers, looked up case-insensitively.

    Returns:
        Seconds to wait, from ``retry-after-ms`` (OpenAI's millisecond header) or
        ``Retry-After`` in seconds or as an HTTP date; None when neither is usable.
    """
    if not headers:
        return None
    lowered = {name.lower(): value for name, value in headers.items()}

    milliseconds = _finite_float(lowered.get("retry-after-ms"))
    if milliseconds is not None and milliseconds >= 0:
        return milliseconds / 1000.0

    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _finite_float(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _finite_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _response_headers(exc: BaseException) -> Mapping[str, str] | None:
    """Headers of the failed reply; litellm keeps them in two places."""
    for headers in (
        getattr(getattr(exc, "response", None), "headers", None),
        getattr(exc, "litellm_response_headers", None),
    ):
        if isinstance(headers, Mapping) and headers:
            return headers
    return None


def _refused_connection(exc: BaseException) -> bool:
    """True when the cause chain shows no server listening at the address."""
    for cause in _cause_chain(exc):
        if isinstance(cause, ConnectionRefusedError):
            return True
        # httpx and aiohttp wrap the refusal; their names are enough to know it,
        # without importing either here.
        if type(cause).__name__ in {"ConnectError", "ClientConnectorError"}:
            return True
    return False


def _cause_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _litellm_exception_types(errors: ModuleType) -> tuple[type[BaseException], ...]:
    names = (
        "APIConnectionError",
        "APIError",
        "APIResponseValidationError",
        "AuthenticationError",
        "BadGatewayError",
        "BadRequestError",
        "InternalServerError",
        "NotFoundError",
        "PermissionDeniedError",
        "RateLimitError",
        "ServiceUnavailableError",
        "Timeout",
        "UnprocessableEntityError",
    )
    return tuple(getattr(errors, name) for name in names if hasattr(errors, name))


def _supported_params(litellm: ModuleType, model: str) -> frozenset[str] | None:
    """The OpenAI parameters litellm maps for `model`; None when it cannot tell."""
    try:
        name, provider, _, _ = litellm.get_llm_provider(model)
        found = litellm.get_supported_openai_params(
            model=name, custom_llm_provider=provider
        )
    except Exception as exc:
        logger.debug("litellm does not know the parameters of %s: %s", model, exc)
        return None
    return frozenset(found) if found else None


def _collect_secrets(
    api_key: str | None, environ: Mapping[str, str]
) -> tuple[str, ...]:
    """The strings to scrub: the key, and any environment value that looks secret."""
    secrets = {api_key} if api_key else set()
    secrets.update(
        value
        for name, value in environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    )
    # Longest first, so a key that contains another is replaced whole.
    return tuple(sorted(secrets, key=len, reverse=True))


def _field(value: Any, name: str) -> Any:
    """Read a field from a litellm object or a plain dict; None when absent."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def _first_token_logprobs(choice: Any) -> dict[str, float] | None:
    content = _field(_field(choice, "logprobs"), "content")
    if not content:
        return None
    alternatives = _field(content[0], "top_logprobs")
    if not alternatives:
        return None

    logprobs: dict[str, float] = {}
    for alternative in alternatives:
        token, logprob = _field(alternative, "token"), _field(alternative, "logprob")
        if token is None or logprob is None:
            continue
        # Two alternatives can decode to the same text; the likelier one stands.
        logprobs[token] = max(float(logprob), logprobs.get(token, -math.inf))
    return logprobs or None
