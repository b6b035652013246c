"""Both stages through the real embedded engine with the small SmolLM2 model."""

import gc
import json

import pytest

from muse_eval.cli import main
from muse_eval.local_models import resolve_model_path
from muse_eval.providers import ChatMessage, GenerateRequest
from muse_eval.providers.local import start_engine
from muse_eval.providers.openai_compatible import OpenAICompatibleProvider
from muse_eval.store import Store

pytestmark = pytest.mark.engine

SMALL_RUN = [
    "--model",
    "smollm2-135m",
    "--limit",
    "2",
    "--samples",
    "4",
    "--pushback-samples",
    "2",
    "--expertise",
    "none,expert",
    "--plausibility",
    "plausible,implausible",
    "--max-concurrency",
    "2",
    "-q",
]


@pytest.fixture(scope="module")
def engine_url():
    server = start_engine(resolve_model_path("smollm2-135m"), 4, 1024, 2)
    yield f"{server.listening_address}/v1"
    del server
    gc.collect()


@pytest.mark.anyio
async def test_openai_compatible_provider_against_the_engine(engine_url) -> None:
    provider = OpenAICompatibleProvider("smollm2-135m", base_url=engine_url)
    await provider.start()
    try:
        response = await provider.generate(
            GenerateRequest(
                messages=[ChatMessage(role="user", content="Say A, B, C or D.")],
                n=3,
                temperature=1.0,
                max_tokens=4,
                seed=7,
                top_logprobs=5,
            )
        )
    finally:
        await provider.aclose()
    assert len(response.completions) == 3
    first = response.completions[0].first_token_logprobs
    assert first is not None and len(first) == 5
    assert all(lp <= 0 for lp in first.values())
    assert response.prompt_tokens and response.prompt_tokens > 5


def test_both_stages_are_stored_and_a_rerun_resumes(tmp_path, capsys) -> None:
    db = tmp_path / "muse.duckdb"
    assert main([*SMALL_RUN, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "MUSE summary" in out

    store = Store(db)
    _, units = store.query(
        "SELECT stage, status, count(*) FROM units GROUP BY ALL ORDER BY stage"
    )
    _, samples = store.query("SELECT count(*), count(DISTINCT item_id) FROM samples")
    assert samples == [(8, 2)]
    _, pushbacks = store.query(
        "SELECT item_id, count(*) FROM pushbacks GROUP BY item_id"
    )
    # control + 2 expertise x 2 plausibility per item that had a parsed answer
    assert all(count == 5 for _, count in pushbacks)
    _, replies = store.query("SELECT count(*) FROM pushback_replies")
    assert replies[0][0] == 2 * sum(count for _, count in pushbacks)

    # The replayed assistant turn is the model's own sampled reply.
    _, rows = store.query(
        "SELECT u.messages, s.reply FROM pushbacks p "
        "JOIN units u USING (run_id, unit_id) "
        "JOIN samples s ON s.run_id = p.run_id AND s.item_id = p.item_id "
        "AND s.sample_index = p.initial_sample_index"
    )
    for messages, reply in rows:
        turns = json.loads(messages)
        assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
        assert turns[2]["content"] == reply
        assert "final answer" in turns[3]["content"]

    # Every request seed differs: derived from the run seed and the unit.
    _, seeds = store.query("SELECT count(*), count(DISTINCT request_seed) FROM units")
    assert seeds[0][0] == seeds[0][1]

    # Running the same command again stores nothing new.
    before = store.query("SELECT count(*) FROM units")[1]
    assert main([*SMALL_RUN, "--db", str(db)]) == 0
    assert "0 units stored" in capsys.readouterr().out
    assert store.query("SELECT count(*) FROM units")[1] == before
    assert store.query("SELECT count(*) FROM runs")[1] == [(1,)]


def test_a_server_that_refuses_n_gets_one_request_per_sample(
    engine_url, tmp_path
) -> None:
    db = tmp_path / "muse.duckdb"
    # The fixture's engine has 4 slots, so it refuses n = 6 with HTTP 400.
    argv = [
        "--provider",
        "openai-compatible",
        "--base-url",
        engine_url,
        "--model",
        "smollm2-135m",
        "--limit",
        "1",
        "--samples",
        "6",
        "--pushback-samples",
        "1",
        "--expertise",
        "none",
        "--plausibility",
        "plausible",
        "--db",
        str(db),
        "-q",
    ]
    assert main(argv) == 0
    store = Store(db)
    _, rows = store.query("SELECT requests, status FROM units WHERE stage = 'sample'")
    assert rows == [(6, "done")]
    _, indices = store.query(
        "SELECT list(sample_index ORDER BY sample_index) FROM samples"
    )
    assert indices == [([0, 1, 2, 3, 4, 5],)]
