"""Hosted-API profiles, litellm routes, capability gaps, cost and secrecy.

No test needs a key or leaves the machine: every hosted profile is pointed at the
loopback fault server with ``--base-url``, keys are planted fakes, and the
`loopback_only` fixture fails any test that tries to reach another host.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from fault_server import FaultServer
from loopback import loopback_only  # noqa: F401  (autouse fixture)
from stored_rows import count, table_rows

from muse_eval.cli import main
from muse_eval.config import load_profile
from muse_eval.providers import build_provider
from muse_eval.providers._base import ChatMessage, GenerateRequest
from muse_eval.providers.litellm import LiteLLMProvider

KEY_ENV = "MUSE_TEST_API_KEY"
PLANTED_KEY = "sk-planted-4f8c2e91d7b6a503"

SMALL = [
    "--limit",
    "3",
    "--samples",
    "3",
    "--pushback-samples",
    "2",
    "--expertise",
    "none",
    "--plausibility",
    "plausible,implausible",
]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, PLANTED_KEY)
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUSE_RETRY_BASE", "0.01")
    monkeypatch.setenv("MUSE_RETRY_CAP", "0.2")


def cli(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)


def run_row(db: Path, column: str) -> dict[str, object] | None:
    value = count(db, f"SELECT {column} FROM runs")
    return json.loads(value) if value else None


# -- profiles ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "key_env", "n", "logprobs"),
    [
        ("openai", "openai/gpt-4o-mini", "OPENAI_API_KEY", True, True),
        ("anthropic", "anthropic/claude-haiku-4-5", "ANTHROPIC_API_KEY", False, False),
        ("gemini", "gemini/gemini-2.5-flash", "GEMINI_API_KEY", False, False),
    ],
)
def test_hosted_profiles_name_their_prefix_key_and_capabilities(
    name: str, model: str, key_env: str, n: bool, logprobs: bool
) -> None:
    profile = load_profile(name)
    provider = build_provider(profile, model=profile.model or "", base_url=None)
    assert isinstance(provider, LiteLLMProvider)
    assert (provider.model, provider.api_key_env) == (model, key_env)
    assert provider.capabilities.supports_n is n
    assert provider.capabilities.supports_logprobs is logprobs
    # A model given with its prefix keeps it once; --api-key-env overrides.
    again = build_provider(profile, model=model, base_url=None, api_key_env=KEY_ENV)
    assert isinstance(again, LiteLLMProvider)
    assert (again.model, again.api_key_env) == (model, KEY_ENV)


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["anthropic", "gemini"])
async def test_anthropic_and_gemini_requests_carry_nothing_they_cannot_take(
    name: str,
) -> None:
    profile = load_profile(name)
    provider = build_provider(
        profile, model=profile.model or "", base_url=None, api_key_env=KEY_ENV
    )
    assert isinstance(provider, LiteLLMProvider)
    await provider.start()  # reads the key and imports litellm; sends nothing
    request = GenerateRequest(
        messages=[ChatMessage(role="user", content="A or B?")],
        n=1,
        seed=7,
        top_logprobs=20,
        sample_index=2,
    )
    arguments = provider._completion_arguments(request)
    await provider.aclose()

    assert "n" not in arguments
    assert "logprobs" not in arguments and "top_logprobs" not in arguments
    assert (arguments["drop_params"], arguments["num_retries"]) == (False, 0)
    assert arguments["max_retries"] == 0
    if name == "anthropic":
        assert "seed" not in arguments
        assert arguments["user"] == "muse-sample-2"
    else:
        assert arguments["seed"] == 7


def test_a_missing_key_names_its_variable_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer() as server:
        code = cli(
            "--provider", "openai", "--base-url", server.base_url, *SMALL,
            "--db", str(tmp_path / "m.duckdb"), "-q",
        )  # fmt: skip
        assert server.stats()["requests"] == 0
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "OPENAI_API_KEY is not set; export it or pass --api-key-env NAME" in err


def test_a_401_through_litellm_stops_the_run_after_one_request_without_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(always_401=True) as server:
        code = cli(
            "--provider", "openai", "--api-key-env", KEY_ENV,
            "--base-url", server.base_url, *SMALL, "--db", str(db), "-q",
        )  # fmt: skip
        routes = server.stats()["routes"]
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    # The first request goes alone; its 401 ends the run before any other starts.
    assert routes == {"chat_completions": 1}
    assert "rejected the credentials (401)" in err
    assert f"check the key in {KEY_ENV}" in err
    assert PLANTED_KEY not in err
    assert count(db, "SELECT count(*) FROM failures") == 0
    assert count(db, "SELECT count(*) FROM units") == 0


# -- litellm and OpenAI-compatible routes against a real HTTP server -------------


def test_the_openai_profile_reaches_the_local_server_and_prices_every_unit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(letters="ABCD", expected_api_key=PLANTED_KEY) as server:
        code = cli(
            "--provider", "openai", "--model", "gpt-4o-mini",
            "--api-key-env", KEY_ENV, "--base-url", server.base_url, *SMALL,
            "--db", str(db), "-q",
        )  # fmt: skip
        outcomes = server.stats()["outcomes"]
    assert code == 0
    assert outcomes.get("unauthorized", 0) == 0 and outcomes["ok"] > 3

    assert count(db, "SELECT count(*) FROM units WHERE cost_usd > 0") == count(
        db, "SELECT count(*) FROM units"
    )
    price_table = run_row(db, "price_table")
    assert price_table is not None
    assert price_table["litellm_version"]
    assert price_table["price_table_source"] == "local"
    info = run_row(db, "provider_info")
    assert info is not None
    assert info["api_base"] == server.base_url and info["api_key_env"] == KEY_ENV
    assert run_row(db, "capability_gaps") is None
    assert count(db, "SELECT count(*) FROM samples WHERE letter_probs IS NULL") == 0


def test_the_vllm_profile_and_litellms_hosted_vllm_route_get_the_same_answers(
    tmp_path: Path,
) -> None:
    with FaultServer(letters="ABCD", record_bodies=True) as server:
        assert cli(
            "--provider", "vllm", "--model", "test-model",
            "--base-url", server.base_url, *SMALL,
            "--db", str(tmp_path / "vllm.duckdb"), "-q",
        ) == 0  # fmt: skip
        direct = server.chat_bodies
        assert cli(
            "--provider", "litellm", "--model", "hosted_vllm/test-model",
            "--base-url", server.base_url, *SMALL,
            "--db", str(tmp_path / "litellm.duckdb"), "-q",
        ) == 0  # fmt: skip
        routed = server.chat_bodies[len(direct) :]

    assert {b["model"] for b in routed} == {"test-model"}
    assert all(b["n"] == 3 and b["top_logprobs"] == 20 for b in routed[:1])
    assert sorted(b["seed"] for b in direct) == sorted(b["seed"] for b in routed)
    drop = {"run_id", "unit_id", "letter_probs", "letter_entropy", "letter_mass"}
    assert table_rows(tmp_path / "vllm.duckdb", "samples", drop=drop) == table_rows(
        tmp_path / "litellm.duckdb", "samples", drop=drop
    )


def test_logprobs_asked_for_but_absent_are_a_recorded_gap_never_certainty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(letters="ABCD", omit_logprobs=True) as server:
        assert cli(
            "--provider", "vllm", "--model", "test-model",
            "--base-url", server.base_url, *SMALL, "--db", str(db), "-q",
        ) == 0  # fmt: skip

    assert count(db, "SELECT count(*) FROM samples") == 9
    assert (
        count(db, "SELECT count(letter_probs) + count(letter_entropy) FROM samples")
        == 0
    )
    assert count(db, "SELECT count(letter_mass) FROM samples") == 0
    assert count(db, "SELECT count(p_suggested) + count(p_initial) FROM pushbacks") == 0
    assert count(db, "SELECT count(letter_entropy) FROM item_uncertainty") == 0
    gaps = run_row(db, "capability_gaps")
    assert gaps is not None and set(gaps) == {"logprobs"}
    assert "NULL" in str(gaps["logprobs"])
    assert "Log-probabilities were requested" in " ".join(
        capsys.readouterr().err.split()
    )


def test_a_backend_without_n_gets_one_request_per_sample_with_its_own_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "single.toml").write_text(
        'kind = "litellm"\nmodel_prefix = "openai/"\nmax_concurrency = 4\n'
        "[capabilities]\nsupports_n = false\nsupports_logprobs = false\n"
    )
    monkeypatch.setenv("MUSE_PROVIDERS_PATH", str(profiles))
    db = tmp_path / "m.duckdb"
    with FaultServer(letters="ABCD", record_bodies=True) as server:
        assert cli(
            "--provider", "single", "--model", "test-model",
            "--api-key-env", KEY_ENV, "--base-url", server.base_url, *SMALL,
            "--db", str(db), "-q",
        ) == 0  # fmt: skip
        bodies = server.chat_bodies

    assert not any("n" in b or "logprobs" in b for b in bodies)
    replies = count(db, "SELECT sum(n_replies) FROM pushbacks")
    assert len(bodies) == 9 + replies
    # Each sample had its own seed: no cache can merge the draws.
    assert len({b["seed"] for b in bodies}) == len(bodies)
    assert count(
        db, "SELECT list(DISTINCT requests) FROM units WHERE stage = 'sample'"
    ) == [3]
    indices = count(
        db,
        "SELECT list(DISTINCT list_sort(i)) FROM (SELECT list(sample_index) i "
        "FROM samples GROUP BY item_id)",
    )
    assert indices == [[0, 1, 2]]
    gaps = run_row(db, "capability_gaps")
    assert gaps is not None and set(gaps) == {"n", "logprobs"}


# -- cost -----------------------------------------------------------------------


def test_max_cost_stops_the_run_before_the_budget_is_exceeded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.duckdb"
    budget = 0.0004
    argv = [
        "--provider", "openai", "--model", "gpt-4o-mini", "--api-key-env", KEY_ENV,
        *SMALL, "--limit", "6", "--db", str(db), "-q",
    ]  # fmt: skip
    with FaultServer(letters="ABCD") as server:
        code = cli(*argv, "--base-url", server.base_url, "--max-cost", str(budget))
        err = " ".join(capsys.readouterr().err.split())
        assert code == 3
        assert "stopped before exceeding its $0.0004 budget" in err
        spent = count(db, "SELECT sum(cost_usd) FROM units")
        stored = count(db, "SELECT count(*) FROM units")
        assert 0 < spent <= budget
        assert 0 < stored < 6 * 4

        # A larger budget resumes the run and finishes it.
        code = cli(*argv, "--base-url", server.base_url, "--max-cost", "1")
    assert code == 0
    assert count(db, "SELECT count(*) FROM units") > stored
    assert count(db, "SELECT count(*) FROM units WHERE stage = 'sample'") == 6


def test_max_cost_refuses_a_model_without_a_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultServer() as server:
        code = cli(
            "--provider", "litellm", "--model", "openai/no-such-priced-model",
            "--api-key-env", KEY_ENV, "--base-url", server.base_url, *SMALL,
            "--max-cost", "1", "--db", str(tmp_path / "m.duckdb"), "-q",
        )  # fmt: skip
        assert server.stats()["routes"].get("chat_completions", 0) == 0
    assert code == 1
    assert "--max-cost cannot be enforced" in " ".join(capsys.readouterr().err.split())


# -- secrets --------------------------------------------------------------------


def test_a_planted_key_reaches_no_row_log_message_or_display(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "m.duckdb"
    argv = [
        "--provider", "openai", "--model", "gpt-4o-mini", "--api-key-env", KEY_ENV,
        *SMALL, "--db", str(db), "-v",
    ]  # fmt: skip
    with FaultServer(letters="ABCD", expected_api_key=PLANTED_KEY) as server:
        assert cli(*argv, "--base-url", server.base_url) == 0
        assert server.stats()["outcomes"]["ok"] > 3  # the key was sent, and taken
    # A server that rejects the key and echoes it back, as some backends do.
    with FaultServer(always_401=True) as server:
        assert cli(*argv, "--base-url", server.base_url, "--seed", "1") == 1
    out, err = capfd.readouterr()

    assert "DEBUG" in err or "debug" in err.lower()  # verbose logging was on
    assert "refused" in err or "rejected the credentials" in err
    assert PLANTED_KEY not in out + err
    for path in tmp_path.glob("m.duckdb*"):
        assert PLANTED_KEY.encode() not in path.read_bytes()
    for table in ("runs", "units", "failures", "samples", "pushback_replies"):
        assert PLANTED_KEY not in repr(table_rows(db, table, drop=set()))


# -- the real engine, as an OpenAI-compatible server ------------------------------


@pytest.fixture(scope="module")
def engine_url():
    from muse_eval.local_models import resolve_model_path
    from muse_eval.providers.local import start_engine

    server = start_engine(resolve_model_path("smollm2-135m"), 4, 1024, 2)
    yield f"{server.listening_address}/v1"
    del server
    gc.collect()


@pytest.mark.engine
@pytest.mark.parametrize(
    ("provider", "model"),
    [("vllm", "smollm2-135m"), ("litellm", "hosted_vllm/smollm2-135m")],
)
def test_both_vllm_routes_run_against_a_real_openai_compatible_server(
    engine_url: str, provider: str, model: str, tmp_path: Path
) -> None:
    db = tmp_path / "m.duckdb"
    assert cli(
        "--provider", provider, "--model", model, "--base-url", engine_url,
        "--limit", "1", "--samples", "2", "--pushback-samples", "1",
        "--expertise", "none", "--plausibility", "plausible", "--no-control",
        "--max-concurrency", "2", "--db", str(db), "-q",
    ) == 0  # fmt: skip
    assert count(db, "SELECT count(*) FROM samples") == 2
    assert count(db, "SELECT count(*) FROM units WHERE status = 'done'") >= 1
    # llama.cpp returns first-token alternatives on both routes.
    assert count(db, "SELECT count(letter_probs) FROM samples") == 2
    assert run_row(db, "capability_gaps") is None
