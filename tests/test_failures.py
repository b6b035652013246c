"""Failure handling: every kind of fault is classified, retried or recorded as it
should be, and a run under faults stores exactly what a clean run stores."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from fault_server import FaultServer
from loopback import loopback_only  # noqa: F401  (autouse fixture)
from stored_rows import count, result_rows

from muse_eval.cli import main
from muse_eval.errors import ConfigError, RateLimited, Transient
from muse_eval.pacing import Pacer, TokenBucket
from muse_eval.retry import AdaptiveLimit, RetryPolicy

#: Control plus 2 x 2 conditions, 4 samples and 2 replies each, on 6 items.
SMALL = [
    "--limit",
    "6",
    "--samples",
    "4",
    "--pushback-samples",
    "2",
    "--expertise",
    "none,expert",
    "--plausibility",
    "plausible,implausible",
    "-q",
]

#: Every fault a retry should recover from, timeouts and resets included.
EVERY_RECOVERABLE_FAULT = {
    "rate_limit": 1.0,
    "server_error": 1.0,
    "drop": 1.0,
    "slow": 1.0,
    "malformed_json": 1.0,
    "truncated_json": 1.0,
    "partial_body": 1.0,
}


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MUSE_RETRY_BASE", "0.01")
    monkeypatch.setenv("MUSE_RETRY_CAP", "0.2")
    monkeypatch.setenv("MUSE_RETRY_ATTEMPTS", "14")
    # A profile whose requests time out after 0.5 s, so "slow" faults are timeouts.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "impatient.toml").write_text(
        'kind = "openai-compatible"\nmax_concurrency = 8\ntimeout = 0.5\n'
    )
    monkeypatch.setenv("MUSE_PROVIDERS_PATH", str(profiles))


def run(server: FaultServer, db: Path, *extra: str) -> int:
    argv = [
        "--provider",
        "impatient",
        "--model",
        "m",
        "--base-url",
        server.base_url,
        *SMALL,
        *extra,
        "--db",
        str(db),
    ]
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def test_a_run_under_30_percent_faults_stores_what_a_clean_run_stores(
    tmp_path: Path,
) -> None:
    clean_db, faulty_db = tmp_path / "clean.duckdb", tmp_path / "faulty.duckdb"
    with FaultServer(letters="ABCD") as clean:
        assert run(clean, clean_db) == 0
    with FaultServer(
        letters="ABCD",
        fault_rate=0.3,
        fault_mix=EVERY_RECOVERABLE_FAULT,
        slow_seconds=1.0,
        # This seed's first 53 draws hold every fault kind (17 faults, 36 ok).
        seed=4,
    ) as faulty:
        assert run(faulty, faulty_db) == 0
        outcomes = faulty.stats()["outcomes"]

    # Faults of every kind happened, and all of them were retried away.
    assert set(EVERY_RECOVERABLE_FAULT) <= set(outcomes)
    assert sum(v for k, v in outcomes.items() if k != "ok") >= 10
    assert count(faulty_db, "SELECT sum(retries) FROM units") >= 10
    assert count(faulty_db, "SELECT count(*) FROM units WHERE status <> 'done'") == 0
    kinds = count(faulty_db, "SELECT list(DISTINCT kind ORDER BY kind) FROM failures")
    assert {"rate_limited", "transient"} <= set(kinds)

    # Every unit exactly once, with the same content as the clean run.
    clean_rows, faulty_rows = result_rows(clean_db), result_rows(faulty_db)
    assert len(clean_rows["units"]) == 6 + len(clean_rows["pushbacks"])
    assert len(clean_rows["samples"]) == 6 * 4
    assert faulty_rows == clean_rows


def test_a_401_stops_the_run_at_once_naming_the_key_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUSE_TEST_KEY", "sk-test-wrong-key-0042")
    with FaultServer(always_401=True) as server:
        code = run(server, tmp_path / "m.duckdb", "--api-key-env", "MUSE_TEST_KEY")
        stats = server.stats()
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    # The server is asked who it serves first; no chat request is ever sent.
    assert stats["routes"] == {"models": 1}
    assert "refused the credentials (HTTP 401); check the key in MUSE_TEST_KEY" in err
    assert "sk-test-wrong-key-0042" not in err
    assert "Traceback" not in err


def test_bad_requests_and_long_contexts_are_recorded_not_retried(
    tmp_path: Path,
) -> None:
    db = tmp_path / "m.duckdb"
    mix = {"bad_request": 1.0, "context_too_long": 1.0}
    with FaultServer(letters="ABCD", fault_rate=0.4, fault_mix=mix, seed=5) as server:
        assert run(server, db) == 0
        stats = server.stats()

    failed = count(
        db, "SELECT list(DISTINCT error_kind) FROM units WHERE status = 'failed'"
    )
    assert set(failed) == {"bad_request", "context_too_long"}
    assert count(db, "SELECT count(*) FROM failures") == 0
    # One request per stored unit: nothing was sent twice.
    assert stats["routes"]["chat_completions"] == count(
        db, "SELECT count(*) FROM units"
    )
    reason = count(
        db, "SELECT any_value(error) FROM units WHERE error_kind = 'context_too_long'"
    )
    assert "maximum context length is 8192 tokens" in reason

    # A rerun sends the rejected units again (the cause may have been fixed), and
    # each lands once, replacing its failure; the units already done are not sent.
    rejected = count(db, "SELECT count(*) FROM units WHERE status = 'failed'")
    done_before = count(db, "SELECT count(*) FROM units WHERE status = 'done'")
    with FaultServer(letters="ABCD") as again:
        assert run(again, db) == 0
        resent = again.stats()["routes"].get("chat_completions", 0)
    assert count(db, "SELECT count(*) FROM units WHERE status = 'failed'") == 0
    done_after = count(db, "SELECT count(*) FROM units WHERE status = 'done'")
    assert resent == done_after - done_before >= rejected


def test_retry_after_is_honoured_and_backoff_is_capped() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)

    class State:
        def __init__(self, attempt: int, error: BaseException) -> None:
            self.attempt_number = attempt
            self.outcome = self

        def exception(self) -> BaseException:
            return self.error

    def wait(attempt: int, error: BaseException) -> float:
        state = State(attempt, error)
        state.error = error  # type: ignore[attr-defined]
        return policy.wait_seconds(state)  # type: ignore[arg-type]

    assert all(wait(1, RateLimited("429", 2.5)) >= 2.5 for _ in range(20))
    assert all(wait(1, RateLimited("429", 99.0)) == 4.0 for _ in range(20))
    assert all(wait(9, Transient("500")) <= 4.0 for _ in range(20))
    assert all(wait(1, Transient("500")) <= 0.5 for _ in range(20))


def test_the_retry_policy_reads_its_timing_from_the_environment() -> None:
    policy = RetryPolicy.from_environment(
        {"MUSE_RETRY_BASE": "0.1", "MUSE_RETRY_CAP": "3", "MUSE_RETRY_ATTEMPTS": "4"}
    )
    assert (policy.base, policy.cap, policy.max_attempts) == (0.1, 3.0, 4)
    default = RetryPolicy.from_environment({})
    assert (default.base, default.cap, default.max_attempts) == (0.5, 60.0, 8)
    with pytest.raises(ConfigError, match="MUSE_RETRY_CAP must be a positive"):
        RetryPolicy.from_environment({"MUSE_RETRY_CAP": "-1"})


def test_concurrency_halves_when_throttled_and_grows_back() -> None:
    limit = AdaptiveLimit(8, grow_after=3, cooldown=0.0)
    limit.throttled()
    assert limit.current == 4
    limit.throttled()
    assert limit.current == 2
    for _ in range(3):
        limit.succeeded()
    assert limit.current == 3
    for _ in range(100):
        limit.succeeded()
    assert limit.current == 8


@pytest.mark.anyio
async def test_a_token_bucket_waits_for_its_refill_and_settles_estimates() -> None:
    bucket = TokenBucket(6000)  # 100 a second, holding one second's worth
    assert bucket.capacity == 100
    started = time.monotonic()
    await bucket.take(100)
    await bucket.take(30)
    assert 0.25 <= time.monotonic() - started < 1.0

    # An estimate of 100 that used 40 gives 60 back, never above capacity.
    bucket.settle(100, 40)
    assert 55 <= bucket.level <= 100

    # A request larger than the bucket waits for a full bucket, then leaves debt.
    big = TokenBucket(60)  # 1 a second, capacity 1
    await big.take(5)
    assert big.level < -3


@pytest.mark.anyio
async def test_a_pacer_keeps_to_its_requests_per_minute_and_pauses_on_429() -> None:
    pacer = Pacer(rpm=1200)  # 20 a second
    started = time.monotonic()
    async with anyio.create_task_group() as group:
        for _ in range(40):
            group.start_soon(pacer.wait_turn, 10)
    assert 0.9 <= time.monotonic() - started < 2.5

    pacer.pause(0.3)
    started = time.monotonic()
    await pacer.wait_turn(10)
    assert time.monotonic() - started >= 0.28


def test_rpm_paces_a_whole_run(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(letters="ABCD") as server:
        started = time.monotonic()
        assert run(server, db, "--rpm", "900") == 0
        elapsed = time.monotonic() - started
        requests = server.stats()["routes"]["chat_completions"]
    # 15 a second after a burst of 15: the run cannot be faster than that.
    assert requests > 20
    assert elapsed >= (requests - 15) / 15 * 0.9
