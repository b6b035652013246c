"""Read the analysis inputs from the results database's views.

Every number the analysis reports is computed from ``conformity_replies`` (one row
per stage-two reply) and the ``runs`` table, so ``muse-eval sql`` can reproduce it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from muse_eval.errors import ConfigError
from muse_eval.store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RunRecord",
    "conversations_of",
    "load_replies",
    "load_run",
    "resolve_runs",
]

_RUNS_SQL = """
SELECT run_id, provider, model, task, simulated, samples, temperature,
       pushback_samples, pushback_temperature, seed, config, provider_info
FROM runs ORDER BY created_at, run_id
"""

_REPLIES_SQL = """
SELECT * FROM conformity_replies WHERE run_id = ?
ORDER BY condition, item_id, reply_index
"""

#: Columns that are constant within one conversation (run, item, condition).
_CONVERSATION_COLUMNS = [
    "expertise",
    "plausibility",
    "uncertainty",
    "letter_entropy",
    "disagreement",
    "sample_parse_failure_rate",
    "initial_correct",
    "suggestion_correct",
]

#: Uncertainty scores, rounded to `_DIGITS` decimals when read.
_SCORES = ("uncertainty", "letter_entropy", "agreement", "disagreement")
_DIGITS = 12

RunRecord = dict[str, Any]


def resolve_runs(store: Store, wanted: Sequence[str] | None) -> list[RunRecord]:
    """The runs to analyse: all of them, or those named (a unique prefix will do).

    Raises:
        ConfigError: The database has no runs, or a name matches none or several.
    """
    names, rows = store.query(_RUNS_SQL)
    runs = [dict(zip(names, row, strict=True)) for row in rows]
    if not runs:
        raise ConfigError(f"No runs stored in {store.path} yet; run an evaluation.")
    if not wanted:
        return runs
    chosen = []
    for name in wanted:
        exact = [r for r in runs if r["run_id"] == name]
        matches = exact or [r for r in runs if str(r["run_id"]).startswith(name)]
        if not matches:
            known = ", ".join(str(r["run_id"]) for r in runs)
            raise ConfigError(f"No run '{name}' in {store.path}; stored runs: {known}.")
        if len(matches) > 1:
            found = ", ".join(str(r["run_id"]) for r in matches)
            raise ConfigError(f"'{name}' matches several runs ({found}); give more.")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def load_run(record: RunRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's configuration and provider description, decoded."""
    config = json.loads(record["config"]) if record.get("config") else {}
    info = json.loads(record["provider_info"]) if record.get("provider_info") else {}
    return config, info


def load_replies(store: Store, run_id: str) -> pd.DataFrame:
    """Every stage-two reply of a run, from ``conformity_replies``."""
    import pandas as pd

    names, rows = store.query_params(_REPLIES_SQL, [run_id])
    frame = pd.DataFrame(rows, columns=names)
    # DuckDB sums in parallel, so an entropy can differ in its last bit from one
    # query to the next; rounding makes equal scores equal (ties in ranks, u = 0).
    for column in _SCORES:
        frame[column] = frame[column].astype(float).round(_DIGITS)
    for column in ("parsed", "yielded", "changed", "conformed", "correct_after"):
        frame[column] = frame[column].astype("boolean")
    return frame


def conversations_of(replies: pd.DataFrame) -> pd.DataFrame:
    """One row per conversation: its item's scores and its reply counts.

    Columns ``hits`` (parsed replies that yielded), ``trials`` (parsed replies) and
    ``replies`` (all replies) join the per-conversation columns of the view.
    """
    frame = replies.assign(
        hit=(replies["parsed"] & replies["yielded"]).fillna(False).astype(int),
        trial=replies["parsed"].fillna(False).astype(int),
    )
    grouped = frame.groupby(["condition", "item_id"], sort=True, dropna=False)
    conversations = grouped[_CONVERSATION_COLUMNS].first()
    conversations["hits"] = grouped["hit"].sum()
    conversations["trials"] = grouped["trial"].sum()
    conversations["replies"] = grouped.size()
    return conversations.reset_index()
