"""A user's own task file: every mistake in it is one clear sentence."""

import json

import pytest

from muse_eval.errors import TaskError
from muse_eval.task import load_task

GOOD_ROW = {"q": "2 + 2?", "a": "3", "b": "4", "answer": "B", "topic": "arithmetic"}


def write_task(folder, rows, *, extra="", user="{question}\\n{options}", raw=None):
    data = folder / "rows.jsonl"
    if raw is not None:
        data.write_bytes(raw)
    else:
        data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "mine.toml").write_text(
        f"""
name = "mine"
{extra}
[source]
path = "{data}"
question = "q"
options = ["a", "b"]
answer = "answer"
subject = "topic"

[prompt]
user = "{user}"

[pushback]
closing = "Final answer ({{letters}})?"
control = "Are you sure?"

[pushback.expertise]
none = "I think it is {{letter}}."
"""
    )


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSE_TASKS_PATH", str(tmp_path))
    return tmp_path


def test_a_user_task_is_found_and_read(folder) -> None:
    write_task(folder, [GOOD_ROW, {**GOOD_ROW, "answer": "A"}])
    items = list(load_task("mine").iter_items())
    assert [i.id for i in items] == ["mine/arithmetic/0", "mine/arithmetic/1"]
    assert items[0].options == ["3", "4"]


@pytest.mark.parametrize(
    ("rows", "raw", "message"),
    [
        ([{k: v for k, v in GOOD_ROW.items() if k != "q"}], None, "missing field 'q'"),
        ([["a", "b"]], None, "not a JSON object"),
        ([{**GOOD_ROW, "answer": "Z"}], None, "the answer 'Z' is not one of"),
        (None, b'{"q": "\xff"}\n', "is not UTF-8 text"),
        (None, b"{not json\n", "rows.jsonl:1 is not a valid row"),
    ],
)
def test_bad_rows(folder, rows, raw, message) -> None:
    write_task(folder, rows or [], raw=raw)
    with pytest.raises(TaskError, match=message):
        list(load_task("mine").iter_items())


def test_a_misspelled_key_is_refused(folder) -> None:
    write_task(folder, [GOOD_ROW], extra='sytem = "x"')
    with pytest.raises(
        TaskError, match="field 'sytem': Extra inputs are not permitted"
    ):
        load_task("mine")


def test_an_unknown_placeholder_is_refused_before_any_request(folder) -> None:
    write_task(folder, [GOOD_ROW], user="{questoin}")
    with pytest.raises(
        TaskError, match=r"prompt.user uses the unknown placeholder \{questoin\}"
    ):
        load_task("mine")
