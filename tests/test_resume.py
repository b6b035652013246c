"""Runs that survive SIGKILL, readers beside a writer, and runs sharing one file.

Each test runs ``python -m muse_eval.cli`` in subprocesses against the loopback
fault server, whose replies depend only on the request (seed, sample tag, choice
index), so two runs of one configuration must store exactly the same rows.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from fault_server import FaultServer
from loopback import loopback_only  # noqa: F401  (autouse fixture)
from stored_rows import count, result_rows, table_rows

from muse_eval.cli import main

REPO = Path(__file__).resolve().parent.parent

#: 8 items, each with stage one and control plus 2 x 2 conditions.
RUN = [
    "--provider",
    "vllm",
    "--model",
    "test-model",
    "--limit",
    "8",
    "--samples",
    "3",
    "--pushback-samples",
    "2",
    "--expertise",
    "none,expert",
    "--plausibility",
    "plausible,implausible",
    "-q",
]


def command(base_url: str, db: Path, *extra: str) -> list[str]:
    return [*RUN, "--base-url", base_url, "--db", str(db), *extra]


def spawn(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "muse_eval.cli", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MUSE_RETRY_BASE": "0.01", "MUSE_RETRY_CAP": "0.2"},
    )


def reference(
    db: Path, *extra: str, base_url: str | None = None
) -> dict[str, list[object]]:
    """An uninterrupted run of the same configuration, on a server without delay."""
    if base_url is None:
        with FaultServer(letters="ABCD") as server:
            return reference(db, *extra, base_url=server.base_url)
    assert main(command(base_url, db, *extra)) == 0
    return result_rows(db)


@pytest.fixture(scope="module")
def seed0(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, list[object]]]:
    """The uninterrupted reference run of `RUN`: its file and its rows."""
    db = tmp_path_factory.mktemp("reference") / "seed0.duckdb"
    return db, reference(db)


def stored_units(db: Path) -> int:
    """Units stored so far, read while another process may be writing."""
    deadline = time.monotonic() + 30
    while True:
        if not db.exists():
            return 0
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                found = con.execute("SELECT count(*) FROM units").fetchone()
            return int(found[0]) if found else 0
        except duckdb.CatalogException:
            return 0  # created, tables not yet
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_a_run_killed_twice_and_resumed_stores_what_an_uninterrupted_run_stores(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    seed0: tuple[Path, dict[str, list[object]]],
) -> None:
    db = tmp_path / "killed.duckdb"
    total = len(seed0[1]["units"])

    with FaultServer(letters="ABCD", latency=0.15) as server:
        argv = command(server.base_url, db, "--max-concurrency", "2")
        seen = []
        for _ in range(2):
            process = spawn(argv)
            before = stored_units(db)
            deadline = time.monotonic() + 30
            while stored_units(db) <= before and time.monotonic() < deadline:
                assert process.poll() is None, process.communicate()
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.communicate()
            assert process.returncode == -signal.SIGKILL
            seen.append(stored_units(db))

    # Both kills landed mid-run, each after more units were stored.
    assert 0 < seen[0] < seen[1] < total

    # The same command finishes the run; where the server is does not matter.
    with FaultServer(letters="ABCD") as server:
        assert main(command(server.base_url, db, "--max-concurrency", "2")) == 0
        out = " ".join(capsys.readouterr().out.split())
    assert f"({seen[1]} were stored before)" in out
    assert result_rows(db) == seed0[1]
    assert count(db, "SELECT count(*) FROM run_leases") == 0


def test_sql_and_runs_read_a_database_while_a_run_writes_it(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(letters="ABCD", latency=0.08) as server:
        writer = spawn(command(server.base_url, db, "--max-concurrency", "1"))
        while not db.exists() and writer.poll() is None:
            time.sleep(0.05)
        counts = []
        listings = []
        while writer.poll() is None:
            sql = subprocess.run(
                [sys.executable, "-m", "muse_eval.cli", "sql", "--db", str(db),
                 "--format", "csv", "SELECT count(*) AS n FROM units"],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert sql.returncode == 0, sql.stderr
            counts.append(int(sql.stdout.split()[1]))
            if len(listings) < 2:
                runs = subprocess.run(
                    [sys.executable, "-m", "muse_eval.cli", "runs", "--db", str(db),
                     "--format", "csv"],
                    cwd=REPO, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert runs.returncode == 0, runs.stderr
                listings.append(runs.stdout)
        assert writer.communicate()[1].count("Traceback") == 0
        assert writer.returncode == 0

    final = count(db, "SELECT count(*) FROM units")
    # The readers saw the run grow, flush by flush, and never blocked it.
    assert counts == sorted(counts)
    assert any(0 < n < final for n in counts)
    assert any("mmlu-test-model" in listing for listing in listings)


def test_two_runs_aimed_at_one_database_both_complete_and_never_mix(
    tmp_path: Path, seed0: tuple[Path, dict[str, list[object]]]
) -> None:
    second = reference(tmp_path / "seed1.duckdb", "--seed", "1")
    db = tmp_path / "shared.duckdb"

    with FaultServer(letters="ABCD", latency=0.02) as server:
        runs = [
            spawn(command(server.base_url, db)),
            spawn(command(server.base_url, db, "--seed", "1")),
        ]
        results = [(run.communicate(timeout=120), run.returncode) for run in runs]
    assert [code for _, code in results] == [0, 0], results

    with duckdb.connect(str(db)) as con:
        found = con.execute("SELECT run_id FROM runs ORDER BY seed").fetchall()
        con.execute("CHECKPOINT")  # the file is whole: it can be written again
    run_ids = [row[0] for row in found]
    assert len(run_ids) == 2
    for run_id, expected in zip(run_ids, (seed0[1], second), strict=True):
        for table, rows in expected.items():
            where = f"run_id = '{run_id}'"
            assert table_rows(db, table, where=where) == rows, table


def test_a_run_that_a_live_process_is_running_is_refused_a_dead_ones_taken_over(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    seed0: tuple[Path, dict[str, list[object]]],
) -> None:
    db = tmp_path / "m.duckdb"
    shutil.copy(seed0[0], db)
    run_id = count(db, "SELECT run_id FROM runs")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with duckdb.connect(str(db)) as con:
            con.execute(
                "INSERT INTO run_leases VALUES (?, ?, ?, now())",
                [run_id, holder.pid, socket.gethostname()],
            )
        with FaultServer(letters="ABCD") as server:
            assert main(command(server.base_url, db)) == 1
            err = " ".join(capsys.readouterr().err.split())
            assert f"Run {run_id} is already running in process {holder.pid}" in err
            assert server.stats()["routes"].get("chat_completions", 0) == 0

            holder.kill()
            holder.wait()
            assert main(command(server.base_url, db)) == 0
    finally:
        holder.kill()
        holder.wait()
    assert "0 units stored" in " ".join(capsys.readouterr().out.split())
    assert count(db, "SELECT count(*) FROM run_leases") == 0


def test_a_database_from_before_the_price_and_gap_columns_gains_them(
    tmp_path: Path,
) -> None:
    from muse_eval.store import Store

    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, "
            "provider VARCHAR, model VARCHAR, task VARCHAR, simulated BOOLEAN, "
            "samples INTEGER, temperature DOUBLE, pushback_samples INTEGER, "
            "pushback_temperature DOUBLE, seed BIGINT, config JSON, "
            "config_hash VARCHAR, provider_info JSON, versions JSON, "
            "git_revision VARCHAR)"
        )
        con.execute("INSERT INTO runs (run_id, model) VALUES ('old-run', 'm')")
    Store(db).initialize()
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(
            "SELECT run_id, price_table, capability_gaps FROM runs"
        ).fetchall()
    assert found == [("old-run", None, None)]
