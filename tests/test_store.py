import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from conftest import make_item

from muse_eval.errors import StoreError, StoreLocked
from muse_eval.parsing import parse_answer
from muse_eval.records import ItemRow, SampleRow, Stage, UnitResult, UnitRow, UnitStatus
from muse_eval.store import SCHEMA_VERSION, Store
from muse_eval.uncertainty import answer_entropy


def stage_one_result(replies: list[str], item_id: str = "mmlu/abstract_algebra/0"):
    item = make_item()
    unit_id = f"{item_id}#sample"
    samples = []
    for index, reply in enumerate(replies):
        parsed = parse_answer(reply, item.options)
        samples.append(
            SampleRow(
                run_id="r1",
                item_id=item_id,
                sample_index=index,
                unit_id=unit_id,
                reply=reply,
                answer=parsed.letter,
                parse_status=parsed.status,
                parse_method=parsed.method,
                letter_entropy=0.5,
            )
        )
    return UnitResult(
        unit=UnitRow(
            run_id="r1",
            unit_id=unit_id,
            stage=Stage.SAMPLE,
            item_id=item_id,
            status=UnitStatus.DONE,
            messages=json.dumps([{"role": "user", "content": "q"}]),
            latency_s=0.1,
            finished_at=datetime.now(UTC),
        ),
        item=ItemRow(
            run_id="r1",
            item_id=item_id,
            task="mmlu",
            subject="abstract_algebra",
            question=item.question,
            options=item.options,
            answer=item.answer,
        ),
        samples=samples,
    )


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "nested" / "muse.duckdb")
    store.initialize()
    return store


def test_initialize_creates_schema_and_is_idempotent(store) -> None:
    store.initialize()
    _, rows = store.query("SELECT value FROM meta WHERE key = 'schema_version'")
    assert rows == [(str(SCHEMA_VERSION),)]
    _, tables = store.query("SELECT table_name FROM information_schema.tables")
    found = {t[0] for t in tables}
    assert {
        "runs",
        "items",
        "units",
        "samples",
        "pushbacks",
        "pushback_replies",
    } <= found
    assert {"item_uncertainty", "conformity"} <= found


def test_a_unit_written_twice_is_stored_once(store) -> None:
    result = stage_one_result(["B", "B", "C", ""])
    store.write([result])
    store.write([result, result])
    _, rows = store.query("SELECT count(*) FROM samples")
    assert rows == [(4,)]
    _, rows = store.query("SELECT count(*) FROM units")
    assert rows == [(1,)]
    assert store.stored_units("r1") == {"mmlu/abstract_algebra/0#sample"}


def test_uncertainty_view_matches_the_python_entropy(store) -> None:
    replies = ["B", "B", "B", "C", "C", "D", "", "I cannot answer.", "B", "A"]
    store.write([stage_one_result(replies)])
    _, rows = store.query(
        "SELECT entropy, agreement, modal_answer, n_parsed, parse_failure_rate, "
        "modal_correct FROM item_uncertainty"
    )
    entropy, agreement, modal, n_parsed, failure_rate, correct = rows[0]
    parsed = [p.letter for p in (parse_answer(r, make_item().options) for r in replies)]
    letters = [p for p in parsed if p]
    assert entropy == pytest.approx(answer_entropy(letters, 4))
    assert agreement == pytest.approx(4 / 8)
    assert (modal, n_parsed, correct) == ("B", 8, True)
    assert failure_rate == pytest.approx(0.2)


def test_certain_item_has_exactly_zero_entropy(store) -> None:
    store.write([stage_one_result(["C"] * 10)])
    _, rows = store.query("SELECT entropy, modal_correct FROM item_uncertainty")
    assert rows == [(0.0, False)]


def test_stage_one_samples_round_trip(store) -> None:
    result = stage_one_result(["B", "C"])
    store.write([result])
    loaded = store.stage_one_samples("r1", ["mmlu/abstract_algebra/0", "other"])
    assert [s.model_dump() for s in loaded["mmlu/abstract_algebra/0"]] == [
        s.model_dump() for s in result.samples
    ]


def test_a_newer_schema_is_refused(store) -> None:
    with store.connect() as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer muse-eval"):
        store.initialize()


def test_an_unwritable_path_is_one_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="choose another --db"):
        Store(blocker / "muse.duckdb").initialize()


def test_reading_a_missing_database(tmp_path) -> None:
    with pytest.raises(StoreError, match="No results database"):
        Store(tmp_path / "none.duckdb").query("SELECT 1")


def test_a_lock_held_by_another_process_names_it(store) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(30)",
            str(store.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        waiting = Store(store.path, lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreLocked, match=f"locked by process {holder.pid}"):
            waiting.query("SELECT 1")
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    assert Store(store.path).query("SELECT count(*) FROM runs")[1] == [(0,)]


def test_invalid_sql_is_one_sentence(store) -> None:
    with pytest.raises(StoreError, match="The query failed: .*no_such_table"):
        store.query("SELECT * FROM no_such_table")


def test_a_reader_cannot_touch_other_files(store, tmp_path) -> None:
    victim = Store(tmp_path / "victim.duckdb")
    victim.initialize()
    attack = f"ATTACH '{victim.path}' AS v (READ_WRITE); DROP TABLE v.runs CASCADE"
    with pytest.raises(StoreError, match="disabled by configuration"):
        store.query(attack)
    with pytest.raises(StoreError, match="disabled by configuration"):
        store.query(f"COPY (SELECT 1) TO '{victim.path}' (FORMAT csv)")
    assert victim.query("SELECT count(*) FROM runs")[1] == [(0,)]
    with pytest.raises(StoreError, match="read-only|read only"):
        store.query("DROP TABLE runs")
