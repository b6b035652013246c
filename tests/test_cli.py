"""Bad input gets one clear sentence and a non-zero exit, never a traceback."""

import pytest

from muse_eval.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "nope"], "Unknown task 'nope'; choose one of: mmlu"),
        (["--provider", "nope"], "Unknown provider 'nope'; choose one of:"),
        (["--subjects", "astrology"], "Task 'mmlu' has no subject astrology"),
        (["--expertise", "wizard"], "Task 'mmlu' has no expertise level wizard"),
        (["--plausibility", "absurd"], "Unknown plausibility level absurd"),
        (
            ["--provider", "openai-compatible", "--model", "m"],
            "needs a server address; pass --base-url",
        ),
        (
            [
                "--provider",
                "openai-compatible",
                "--model",
                "m",
                "--base-url",
                "http://127.0.0.1:9/v1",
            ],
            "Nothing answers at http://127.0.0.1:9/v1; start the server or fix "
            "--base-url.",
        ),
        (["--model", "no-such-model"], "Unknown local model 'no-such-model'"),
        (
            [
                "--provider",
                "openai-compatible",
                "--model",
                "m",
                "--base-url",
                "notaurl",
            ],
            "--base-url 'notaurl' is not a server address",
        ),
        (
            [
                "--provider",
                "vllm",
                "--model",
                "m",
                "--base-url",
                "http://127.0.0.1:99999/v1",
            ],
            "is not a server address; use http://HOST:PORT/v1",
        ),
        (["--subjects", ""], "--subjects is empty; name at least one"),
        (["--expertise", ","], "--expertise is empty; name at least one"),
        (["--model", "/tmp/absent.gguf"], "Model file /tmp/absent.gguf does not exist"),
    ],
)
def test_bad_run_input(argv, message, tmp_path, capsys) -> None:
    code, out, err = run_cli([*argv, "--db", str(tmp_path / "m.duckdb"), "-q"], capsys)
    assert code == 1
    assert message in " ".join(err.split())
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--limit", "0", "must be at least 1, not 0"),
        ("--limit", "-3", "must be at least 1, not -3"),
        ("--samples", "0", "must be at least 1, not 0"),
        ("--samples", "ten", "'ten' is not a whole number"),
        ("--temperature", "-1", "must not be negative"),
        ("--temperature", "nan", "must be a finite number, not nan"),
        ("--pushback-temperature", "inf", "must be a finite number"),
        ("--top-logprobs", "-1", "must not be negative, not -1"),
        ("--max-cost", "0", "must be more than 0"),
        ("--max-cost", "-1", "must not be negative"),
        ("--seed", "99999999999999999999999", "must be below 2**63"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(flag, value, message, capsys) -> None:
    code, _, err = run_cli([flag, value], capsys)
    assert code == 2
    assert message in err


def test_an_unwritable_database_path(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(["--db", str(blocker / "m.duckdb"), "-q"], capsys)
    assert code == 1
    assert "choose another --db path" in " ".join(err.split())


def test_sql_on_a_missing_database(tmp_path, capsys) -> None:
    code, _, err = run_cli(
        ["sql", "SELECT 1", "--db", str(tmp_path / "x.duckdb")], capsys
    )
    assert code == 1
    assert "No results database" in err


def test_sql_formats(tmp_path, capsys) -> None:
    from muse_eval.store import Store

    Store(tmp_path / "m.duckdb").initialize()
    db = str(tmp_path / "m.duckdb")
    code, out, _ = run_cli(
        ["sql", "SELECT 1 AS one, 'x' AS two", "--db", db, "--format", "csv"], capsys
    )
    assert (code, out) == (0, "one,two\r\n1,x\r\n")
    code, out, _ = run_cli(
        ["sql", "SELECT 1 AS one", "--db", db, "--format", "json"], capsys
    )
    assert (code, out.split()) == (0, ["[", "{", '"one":', "1", "}", "]"])
    code, _, err = run_cli(["sql", "SELEC nonsense", "--db", db], capsys)
    assert code == 1 and "The query failed" in err
    code, _, err = run_cli(["sql", "  ", "--db", db], capsys)
    assert code == 1 and "The query is empty" in err
    code, _, err = run_cli(["sql", "-- a comment", "--db", db], capsys)
    assert code == 1 and "returns no result set" in err
    code, out, _ = run_cli(["runs", "--db", db], capsys)
    assert code == 0 and "No runs stored" in out


def test_tasks_lists_mmlu_with_its_counts(capsys) -> None:
    code, out, _ = run_cli(["tasks"], capsys)
    assert code == 0
    row = next(line for line in out.splitlines() if "mmlu" in line)
    assert "14042" in row and "57" in row
    code, out, _ = run_cli(["tasks", "--subjects", "mmlu"], capsys)
    assert "abstract_algebra" in out and "100" in out


def test_a_model_that_never_gives_a_letter_stops_the_run(tmp_path, capsys) -> None:
    from fault_server import FaultServer

    from muse_eval.store import Store

    db = tmp_path / "m.duckdb"
    with FaultServer(reply_text="Let me think about this carefully.") as server:
        argv = [
            "--provider",
            "openai-compatible",
            "--base-url",
            server.base_url,
            "--model",
            "wordy",
            "--limit",
            "20",
            "--samples",
            "3",
            "--db",
            str(db),
            "-q",
        ]
        code, out, err = run_cli(argv, capsys)
    assert code == 1
    message = " ".join(err.split())
    assert "gave no parseable option letter in 5 items" in message
    assert "Traceback" not in err + out
    # What was stored before the stop is kept, and nothing was challenged.
    _, rows = Store(db).query("SELECT count(*), count(answer) FROM samples")
    assert rows[0][0] >= 15 and rows[0][1] == 0
    assert Store(db).query("SELECT count(*) FROM pushbacks")[1] == [(0,)]


def test_sql_while_another_process_holds_the_database(tmp_path, capsys) -> None:
    import subprocess
    import sys

    from muse_eval.store import Store

    db = tmp_path / "m.duckdb"
    Store(db).initialize()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(30)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code, _, err = run_cli(
            ["sql", "SELECT 1", "--db", str(db), "--wait", "0.2"], capsys
        )
    finally:
        holder.kill()
        holder.wait()
    assert code == 1
    assert f"is locked by process {holder.pid}" in " ".join(err.split())


def test_a_base_url_without_v1_is_caught_before_any_unit(tmp_path, capsys) -> None:
    from fault_server import FaultServer

    with FaultServer() as server:
        root = server.base_url.removesuffix("/v1")
        argv = ["--provider", "openai-compatible", "--model", "m", "--base-url", root]
        code, _, err = run_cli(
            [*argv, "--db", str(tmp_path / "m.duckdb"), "-q"], capsys
        )
        assert server.stats()["routes"].get("/v1/chat/completions", 0) == 0
    assert code == 1
    assert "check that --base-url ends in /v1" in " ".join(err.split())


def test_rejected_units_fail_the_run_and_are_retried_once_fixed(
    tmp_path, capsys
) -> None:
    from fault_server import FaultServer

    from muse_eval.store import Store

    db = tmp_path / "m.duckdb"
    argv = [
        "--provider",
        "openai-compatible",
        "--model",
        "m",
        "--limit",
        "2",
        "--samples",
        "2",
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
    with FaultServer(fault_rate=1.0, fault_mix={"bad_request": 1.0}) as server:
        code, _, err = run_cli([*argv, "--base-url", server.base_url], capsys)
    assert code == 1
    assert "Every unit of run" in " ".join(err.split())
    store = Store(db)
    assert store.query("SELECT status, count(*) FROM units GROUP BY ALL")[1] == [
        ("failed", 2)
    ]

    with FaultServer() as server:
        code, _, _ = run_cli([*argv, "--base-url", server.base_url], capsys)
    assert code == 0
    _, rows = store.query("SELECT status, count(*) FROM units GROUP BY ALL")
    assert rows == [("done", 6)]
    assert store.query("SELECT count(*) FROM samples")[1] == [(4,)]


def test_a_misspelled_capability_in_a_profile_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "typo.toml").write_text(
        'kind = "openai-compatible"\n[capabilities]\nsupports_nn = false\n'
    )
    monkeypatch.setenv("MUSE_PROVIDERS_PATH", str(tmp_path))
    argv = ["--provider", "typo", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    code, _, err = run_cli([*argv, "--db", str(tmp_path / "m.duckdb"), "-q"], capsys)
    assert code == 1
    assert "capabilities.supports_nn" in err and "fix the file" in " ".join(err.split())
