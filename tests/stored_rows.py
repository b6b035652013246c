"""Read a results database back as plain rows, to compare two runs' contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

#: Columns that differ between two runs of one configuration by timing alone.
TIMING_COLUMNS = {"latency_s", "finished_at", "created_at", "requests", "retries"}

RESULT_TABLES = ("items", "units", "samples", "pushbacks", "pushback_replies")


def table_rows(
    db: Path, table: str, *, drop: set[str] = TIMING_COLUMNS, where: str = "true"
) -> list[Any]:
    """Every row of `table` matching `where`, without the `drop` columns, sorted."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
        keep = [name for name in names if name not in drop]
        sql = f"SELECT {', '.join(keep)} FROM {table} WHERE {where}"
        rows = con.execute(sql).fetchall()
    return sorted(rows, key=repr)


def result_rows(db: Path) -> dict[str, list[Any]]:
    """The rows of every results table, keyed by table."""
    return {table: table_rows(db, table) for table in RESULT_TABLES}


def count(db: Path, sql: str) -> Any:
    """The single value `sql` selects."""
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(sql).fetchone()
    assert found is not None
    return found[0]
