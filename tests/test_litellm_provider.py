"""LiteLLMProvider against the loopback fault server: replies, errors and secrecy.

Every test points the provider at 127.0.0.1 through ``api_base``; the model string
``openai/test-model`` makes litellm take its OpenAI route to that address.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from fault_server import FaultKind, FaultServer

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
    ChatMessage,
    GenerateRequest,
    Provider,
)
from muse_eval.providers.litellm import (
    LiteLLMProvider,
    litellm_price_table_info,
    parse_retry_after,
)

KEY_ENV = "MUSE_TEST_API_KEY"
PLANTED_KEY = "sk-test-PLANTED-123"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def planted_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    return PLANTED_KEY


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(reply_text="B") as running:
        yield running


def question(**fields: object) -> GenerateRequest:
    messages = [ChatMessage(role="user", content="Is the answer A or B?")]
    return GenerateRequest(messages=messages, **fields)  # type: ignore[arg-type]


async def started(
    server: FaultServer, model: str = "openai/test-model", **options: object
) -> LiteLLMProvider:
    options.setdefault("api_key_env", KEY_ENV)
    provider = LiteLLMProvider(model, api_base=server.base_url, **options)  # type: ignore[arg-type]
    await provider.start()
    return provider


def faulty(kind: FaultKind, **options: object) -> FaultServer:
    return FaultServer(fault_rate=1.0, fault_mix={kind: 1.0}, **options)  # type: ignore[arg-type]


# -- successful replies ------------------------------------------------------


@pytest.mark.anyio
async def test_n3_returns_three_completions_with_first_token_logprobs(
    server: FaultServer,
) -> None:
    provider = await started(server)

    response = await provider.generate(
        question(n=3, temperature=0.7, max_tokens=4, seed=42, top_logprobs=3)
    )

    assert [c.text for c in response.completions] == ["B", "B", "B"]
    assert [c.finish_reason for c in response.completions] == ["stop"] * 3
    expected = {"B": math.log(0.5), "A": math.log(0.25), "C": math.log(0.125)}
    for completion in response.completions:
        assert completion.first_token_logprobs == pytest.approx(expected)
    assert response.model == "test-model"
    assert (response.prompt_tokens, response.completion_tokens) == (6, 3)
    assert response.cost_usd is None

    sent = server.last_chat_body
    assert sent is not None
    assert sent["n"] == 3
    assert sent["seed"] == 42
    assert sent["temperature"] == 0.7
    assert sent["max_tokens"] == 4
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 3)
    assert sent["messages"] == [{"role": "user", "content": "Is the answer A or B?"}]
    assert server.stats()["outcomes"] == {"ok": 1}
    await provider.aclose()


@pytest.mark.anyio
async def test_single_sample_sends_no_n_and_no_logprobs(server: FaultServer) -> None:
    provider = await started(server)

    response = await provider.generate(question())

    assert [c.text for c in response.completions] == ["B"]
    assert response.completions[0].first_token_logprobs is None
    sent = server.last_chat_body
    assert sent is not None
    assert not {"n", "logprobs", "top_logprobs", "seed"} & set(sent)


@pytest.mark.anyio
async def test_capabilities_withhold_seed_and_logprobs(server: FaultServer) -> None:
    capabilities = Capabilities(supports_seed=False, supports_logprobs=False)
    provider = await started(server, capabilities=capabilities)

    response = await provider.generate(question(n=2, seed=7, top_logprobs=5))

    sent = server.last_chat_body
    assert sent is not None
    assert sent["n"] == 2
    assert not {"seed", "logprobs", "top_logprobs"} & set(sent)
    assert [c.first_token_logprobs for c in response.completions] == [None, None]


@pytest.mark.anyio
async def test_extra_options_reach_the_backend(server: FaultServer) -> None:
    provider = await started(server, extra={"stop": ["\n"], "presence_penalty": 0.5})

    await provider.generate(question())

    sent = server.last_chat_body
    assert sent is not None
    assert (sent["stop"], sent["presence_penalty"]) == (["\n"], 0.5)


@pytest.mark.anyio
async def test_a_priced_model_gets_a_cost_from_the_bundled_table(
    server: FaultServer,
) -> None:
    provider = await started(server, model="openai/gpt-4o-mini")

    response = await provider.generate(question(n=2))

    assert response.cost_usd is not None
    assert 0 < response.cost_usd < 0.001


def test_provider_satisfies_the_protocol_and_describes_itself() -> None:
    provider = LiteLLMProvider(
        "openai/test-model", api_base="http://127.0.0.1:9/v1", api_key_env=KEY_ENV
    )

    assert isinstance(provider, Provider)
    assert provider.kind == "litellm"
    assert provider.describe() == {
        "kind": "litellm",
        "model": "openai/test-model",
        "api_base": "http://127.0.0.1:9/v1",
        "api_key_env": KEY_ENV,
    }


@pytest.mark.anyio
async def test_describe_never_holds_the_key_even_after_start(
    server: FaultServer,
) -> None:
    provider = await started(server)

    assert PLANTED_KEY not in json.dumps(provider.describe())
    assert PLANTED_KEY not in repr(vars(provider).get("extra"))


# -- configuration and start-up ----------------------------------------------


@pytest.mark.anyio
async def test_missing_key_variable_fails_at_start_with_one_sentence(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MUSE_TEST_MISSING_KEY", raising=False)
    provider = LiteLLMProvider(
        "openai/test-model",
        api_base=server.base_url,
        api_key_env="MUSE_TEST_MISSING_KEY",
    )

    with pytest.raises(AuthFailed) as caught:
        await provider.start()

    assert str(caught.value) == (
        "MUSE_TEST_MISSING_KEY is not set; export it or pass --api-key-env NAME"
    )
    assert server.stats()["requests"] == 0


def test_extra_may_not_override_what_the_provider_controls() -> None:
    with pytest.raises(ConfigError, match="drop_params, num_retries"):
        LiteLLMProvider(
            "openai/test-model", extra={"num_retries": 3, "drop_params": True}
        )


@pytest.mark.anyio
async def test_generate_before_start_is_a_programming_error() -> None:
    provider = LiteLLMProvider("openai/test-model", api_base="http://127.0.0.1:9/v1")

    with pytest.raises(RuntimeError, match="start"):
        await provider.generate(question())


def test_importing_the_module_does_not_import_litellm() -> None:
    code = (
        "import sys, muse_eval.providers.litellm; "
        "print('litellm' in sys.modules, 'openai' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )

    assert result.stdout.split() == ["False", "False"]


def test_price_table_is_the_bundled_copy() -> None:
    info = litellm_price_table_info()

    version = importlib.metadata.version("litellm")
    assert info["litellm_version"] == version
    assert info["price_table"] == f"bundled local copy (litellm {version})"
    assert info.get("price_table_source", "local") == "local"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"


# -- errors ------------------------------------------------------------------


def assert_key_absent(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    printed = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), printed, caplog.text):
        assert PLANTED_KEY not in text


@pytest.mark.anyio
async def test_401_raises_auth_failed_without_leaking_the_echoed_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FaultServer(always_401=True) as server:
        provider = await started(server)
        with pytest.raises(AuthFailed) as caught:
            await provider.generate(question())
        stats = server.stats()

    assert stats["outcomes"] == {"unauthorized": 1}
    # The failure was logged at DEBUG, so the scrubbed text went through logging.
    assert any(
        record.name == "muse_eval.providers.litellm" and "***" in record.getMessage()
        for record in caplog.records
    )
    assert KEY_ENV in str(caught.value)
    assert "***" in str(caught.value)
    assert_key_absent(caught.value, caplog)


@pytest.mark.anyio
async def test_key_litellm_finds_itself_is_scrubbed_too(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no api_key_env, litellm reads OPENAI_API_KEY on its own.
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    caplog.set_level(logging.DEBUG)
    with FaultServer(always_401=True) as server:
        provider = await started(server, api_key_env=None)
        with pytest.raises(AuthFailed) as caught:
            await provider.generate(question())

    assert "Incorrect API key provided: ***" in str(caught.value)
    assert_key_absent(caught.value, caplog)


@pytest.mark.anyio
async def test_429_raises_rate_limited_with_the_servers_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with faulty("rate_limit", retry_after=0.05) as server:
        provider = await started(server)
        with pytest.raises(RateLimited) as caught:
            await provider.generate(question())
        stats = server.stats()

    assert caught.value.retry_after == pytest.approx(0.05)
    assert caught.value.kind == "rate_limited"
    assert stats["requests"] == 1
    assert_key_absent(caught.value, caplog)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("server_error", Transient),
        ("malformed_json", Transient),
        ("truncated_json", Transient),
        ("drop", Transient),
        ("partial_body", Transient),
        ("bad_request", BadRequest),
        ("context_too_long", ContextTooLong),
    ],
)
@pytest.mark.anyio
async def test_each_fault_maps_to_its_error_after_exactly_one_request(
    kind: FaultKind, expected: type[ProviderError]
) -> None:
    with faulty(kind) as server:
        provider = await started(server)
        with pytest.raises(ProviderError) as caught:
            await provider.generate(question())
        stats = server.stats()

    assert type(caught.value) is expected
    assert str(caught.value).startswith(f"openai/test-model at {server.base_url} ")
    # One request per call: litellm and the SDK under it did not retry.
    assert stats["requests"] == 1
    assert stats["outcomes"] == {kind: 1}


@pytest.mark.anyio
async def test_a_reply_slower_than_the_timeout_is_transient() -> None:
    with faulty("slow", slow_seconds=3.0) as server:
        provider = await started(server, timeout=0.3)
        began = time.perf_counter()
        with pytest.raises(Transient) as caught:
            await provider.generate(question())
        waited = time.perf_counter() - began
        stats = server.stats()

    assert type(caught.value) is Transient
    assert "did not answer within 0.3s" in str(caught.value)
    assert waited < 2.0
    assert stats["requests"] == 1


@pytest.mark.anyio
async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api_base = f"http://127.0.0.1:{port}/v1"
    provider = LiteLLMProvider(
        "openai/test-model", api_base=api_base, api_key_env=KEY_ENV
    )
    await provider.start()

    with pytest.raises(Unreachable) as caught:
        await provider.generate(question())

    assert api_base in str(caught.value)
    assert caught.value.kind == "unreachable"


# -- Retry-After parsing -----------------------------------------------------


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=30)

    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.05"}) == pytest.approx(0.05)
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": format_datetime(soon)}) == pytest.approx(
        30, abs=2
    )
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0


def test_retry_after_is_none_when_absent_or_unreadable() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "nan"}) is None
