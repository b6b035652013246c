"""Ctrl-C stops a run cleanly, keeps what finished, and the same command resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fault_server import FaultServer

from muse_eval.store import Store

ROOT = Path(__file__).resolve().parent.parent


def run_args(base_url: str, db: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "muse_eval.cli",
        "--provider",
        "openai-compatible",
        "--base-url",
        base_url,
        "--model",
        "slow",
        "--limit",
        "12",
        "--samples",
        "2",
        "--pushback-samples",
        "1",
        "--expertise",
        "none",
        "--plausibility",
        "plausible",
        "--max-concurrency",
        "2",
        "--db",
        str(db),
        "-q",
    ]


def test_ctrl_c_keeps_finished_units_and_the_rerun_completes(tmp_path) -> None:
    db = tmp_path / "m.duckdb"
    with FaultServer(fault_rate=1.0, fault_mix={"slow": 1.0}, slow_seconds=0.15) as srv:
        process = subprocess.Popen(
            run_args(srv.base_url, db),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        stored = 0
        while time.monotonic() < deadline and stored < 3:
            time.sleep(0.3)
            if db.exists():
                try:
                    stored = Store(db, lock_timeout=0.2).query(
                        "SELECT count(*) FROM units"
                    )[1][0][0]
                except Exception:  # noqa: BLE001 - the schema may not exist yet
                    stored = 0
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 130, err
        assert "Interrupted" in err and "Traceback" not in err

        before = Store(db).query("SELECT count(*) FROM units")[1][0][0]
        assert before >= 3

        rerun = subprocess.run(
            run_args(srv.base_url, db),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
    assert rerun.returncode == 0, rerun.stderr
    store = Store(db)
    # 12 items x (stage one + control + none/plausible), each stored exactly once.
    assert store.query("SELECT count(*), count(DISTINCT unit_id) FROM units")[1] == [
        (36, 36)
    ]
    assert store.query("SELECT count(*) FROM samples")[1] == [(24,)]
    assert f"({before} were stored before)" in " ".join(rerun.stdout.split())
