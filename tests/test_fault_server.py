"""The fault server answers like an OpenAI backend and fails exactly as configured."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import httpx
import pytest
from fault_server import FAULT_KINDS, FaultKind, FaultServer, serve_fault_server

CHAT = "/chat/completions"
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "one two"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(reply_text="B") as running:
        yield running


# One client for the module: building one per request costs ~20 ms of TLS setup.
HTTP = httpx.Client(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def close_http_client() -> Iterator[None]:
    yield
    HTTP.close()


def post_chat(
    base_url: str, body: dict[str, object], headers: dict[str, str] | None = None
) -> httpx.Response:
    return HTTP.post(base_url + CHAT, json=body, headers=headers)


def test_binds_loopback_on_a_free_port(server: FaultServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    assert server.port > 0


def test_reply_has_n_choices_with_the_configured_text_and_usage(
    server: FaultServer,
) -> None:
    reply = post_chat(server.base_url, {**BODY, "n": 3})

    assert reply.status_code == 200
    payload = reply.json()
    assert [choice["message"]["content"] for choice in payload["choices"]] == ["B"] * 3
    assert [choice["index"] for choice in payload["choices"]] == [0, 1, 2]
    assert all(choice["logprobs"] is None for choice in payload["choices"])
    assert payload["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
    }
    assert payload["model"] == "test-model"


def test_first_token_logprobs_rank_the_reply_first(server: FaultServer) -> None:
    reply = post_chat(server.base_url, {**BODY, "logprobs": True, "top_logprobs": 3})

    first = reply.json()["choices"][0]["logprobs"]["content"][0]
    assert first["token"] == "B"
    top = {entry["token"]: entry["logprob"] for entry in first["top_logprobs"]}
    assert top == pytest.approx(
        {"B": math.log(0.5), "A": math.log(0.25), "C": math.log(0.125)}
    )


def test_models_route_lists_the_model(server: FaultServer) -> None:
    reply = HTTP.get(server.base_url + "/models")

    assert reply.status_code == 200
    assert [model["id"] for model in reply.json()["data"]] == ["test-model"]


def test_stats_count_routes_and_outcomes_but_not_themselves(
    server: FaultServer,
) -> None:
    post_chat(server.base_url, BODY)
    post_chat(server.base_url, BODY)
    HTTP.get(server.base_url + "/models")
    HTTP.get(server.base_url + "/nowhere")

    stats = HTTP.get(f"http://127.0.0.1:{server.port}/stats").json()

    assert stats["requests"] == 4
    assert stats["routes"] == {"chat_completions": 2, "models": 1, "unknown": 1}
    assert stats["outcomes"] == {"ok": 3, "not_found": 1}
    assert server.stats()["routes"] == stats["routes"]
    assert server.last_chat_body == BODY


def test_unknown_route_is_404(server: FaultServer) -> None:
    assert HTTP.get(server.base_url + "/nowhere").status_code == 404


def test_rate_limit_sends_429_with_retry_after() -> None:
    with FaultServer(
        fault_rate=1.0, fault_mix={"rate_limit": 1}, retry_after=0.05
    ) as s:
        reply = post_chat(s.base_url, BODY)

    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "0.05"
    assert reply.json()["error"]["code"] == "rate_limit"


def test_server_error_sends_500() -> None:
    with FaultServer(fault_rate=1.0, fault_mix={"server_error": 1}) as s:
        assert post_chat(s.base_url, BODY).status_code == 500


@pytest.mark.parametrize("kind", ["drop", "partial_body"])
def test_connection_faults_leave_the_client_without_a_full_reply(kind: str) -> None:
    with FaultServer(fault_rate=1.0, fault_mix={kind: 1}) as s:  # type: ignore[dict-item]
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            post_chat(s.base_url, BODY)
        assert s.stats()["outcomes"] == {kind: 1}


@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
def test_broken_json_arrives_as_a_complete_200(kind: str) -> None:
    with FaultServer(fault_rate=1.0, fault_mix={kind: 1}) as s:  # type: ignore[dict-item]
        reply = post_chat(s.base_url, BODY)

    assert reply.status_code == 200
    assert int(reply.headers["content-length"]) == len(reply.content)
    with pytest.raises(json.JSONDecodeError):
        reply.json()


def test_slow_reply_outlasts_a_short_client_timeout() -> None:
    with (
        FaultServer(fault_rate=1.0, fault_mix={"slow": 1}, slow_seconds=2.0) as s,
        pytest.raises(httpx.ReadTimeout),
    ):
        HTTP.post(s.base_url + CHAT, json=BODY, timeout=0.2)


@pytest.mark.parametrize(
    ("kind", "code"),
    [("bad_request", None), ("context_too_long", "context_length_exceeded")],
)
def test_client_errors_send_400_like_openai(kind: str, code: str | None) -> None:
    with FaultServer(fault_rate=1.0, fault_mix={kind: 1}) as s:  # type: ignore[dict-item]
        reply = post_chat(s.base_url, BODY)

    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.json()["error"]["code"] == code


def test_always_401_echoes_the_presented_key() -> None:
    with FaultServer(always_401=True) as s:
        reply = post_chat(s.base_url, BODY, headers={"Authorization": "Bearer sk-abc"})
        models = HTTP.get(s.base_url + "/models")
        stats = s.stats()

    assert reply.status_code == 401
    assert "sk-abc" in reply.json()["error"]["message"]
    assert models.status_code == 401
    assert stats["outcomes"] == {"unauthorized": 2}


def test_expected_api_key_admits_only_that_key() -> None:
    with FaultServer(expected_api_key="sk-right") as s:
        right = post_chat(
            s.base_url, BODY, headers={"Authorization": "Bearer sk-right"}
        )
        wrong = post_chat(
            s.base_url, BODY, headers={"Authorization": "Bearer sk-wrong"}
        )
        missing = post_chat(s.base_url, BODY)

    assert (right.status_code, wrong.status_code, missing.status_code) == (
        200,
        401,
        401,
    )


def outcome_of(reply: httpx.Response) -> str:
    try:
        reply.json()
    except json.JSONDecodeError:
        return "broken json"
    return str(reply.status_code)


def outcome_sequence(seed: int, count: int) -> list[str]:
    mix: dict[FaultKind, float] = {
        "rate_limit": 1,
        "server_error": 1,
        "malformed_json": 1,
    }
    with (
        FaultServer(fault_rate=0.3, fault_mix=mix, seed=seed) as s,
        httpx.Client(base_url=s.base_url) as client,
    ):
        return [outcome_of(client.post(CHAT, json=BODY)) for _ in range(count)]


def test_a_seed_fixes_the_sequence_of_faults_and_the_rate_holds() -> None:
    first = outcome_sequence(seed=11, count=200)

    assert outcome_sequence(seed=11, count=200) == first
    assert outcome_sequence(seed=12, count=200) != first
    assert set(first) == {"200", "429", "500", "broken json"}
    # 200 draws at p=0.3: the mean is 60 and the standard deviation about 6.5.
    failures = sum(outcome != "200" for outcome in first)
    assert 35 <= failures <= 85


def test_keep_alive_reuses_one_connection(server: FaultServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        statuses = {client.post(CHAT, json=BODY).status_code for _ in range(50)}

    assert statuses == {200}
    assert server.stats()["connections_accepted"] == 1


@pytest.mark.anyio
async def test_serves_64_concurrent_clients(server: FaultServer) -> None:
    # aiohttp, the transport litellm itself uses: httpx's async pool slows down
    # as connections are added and would make this test measure the client.
    statuses: list[int] = []
    url = server.base_url + CHAT

    async def send(session: aiohttp.ClientSession) -> None:
        for _ in range(10):
            async with session.post(url, json={**BODY, "n": 2}) as reply:
                payload = await reply.json()
                statuses.append(reply.status)
                assert len(payload["choices"]) == 2

    connector = aiohttp.TCPConnector(limit=64)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        anyio.create_task_group() as group,
    ):
        for _ in range(64):
            group.start_soon(send, session)

    assert statuses == [200] * 640
    assert server.stats()["outcomes"] == {"ok": 640}
    assert server.stats()["connections_accepted"] <= 64


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="fault_rate"):
        FaultServer(fault_rate=1.5)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultServer(fault_mix={"gremlins": 1.0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="positive weight"):
        FaultServer(fault_rate=0.5, fault_mix={"drop": 0.0})


def test_every_fault_kind_is_drawable() -> None:
    mix = dict.fromkeys(FAULT_KINDS, 1.0)
    with FaultServer(fault_rate=1.0, fault_mix=mix, slow_seconds=0.0, seed=3) as s:
        for _ in range(120):
            try:
                HTTP.post(s.base_url + CHAT, json=BODY)
            except httpx.TransportError:
                pass
        outcomes = s.stats()["outcomes"]

    assert set(outcomes) == set(FAULT_KINDS)
    assert sum(outcomes.values()) == 120


def test_serve_fault_server_yields_a_base_url_and_stops() -> None:
    with serve_fault_server(reply_text="C") as base_url:
        reply = post_chat(base_url, BODY)

    assert reply.json()["choices"][0]["message"]["content"] == "C"
    with pytest.raises(httpx.ConnectError):
        post_chat(base_url, BODY)


def test_runs_as_a_subprocess_that_prints_its_base_url() -> None:
    script = Path(__file__).with_name("fault_server.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--reply-text", "D"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        reply = post_chat(base_url, BODY)
    finally:
        process.terminate()
        returncode = process.wait(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert reply.json()["choices"][0]["message"]["content"] == "D"
    assert returncode == 0
