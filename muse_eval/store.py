"""The results database: DuckDB, one file, SQL all the way down.

Tables (``results/README.md`` documents every column):

- ``meta``: the schema version.
- ``runs``: one row per run configuration, with what reproduces it (config and its
  hash, seed, package versions, git revision, price table) and the capability gaps
  the backend showed.
- ``items``: the questions each run asked.
- ``units``: one row per unit of work, with the exact messages, tokens and latency.
- ``samples``: one row per stage-one answer.
- ``pushbacks``: one row per stage-two conversation.
- ``pushback_replies``: one row per reply within a conversation.
- ``failures``: every failed attempt, including those retried later.
- ``run_leases``: which process is running which run now, so that two processes
  never work on one run at once (each would challenge its own stage-one answers).

Views ``item_uncertainty``, ``conformity``, ``conformity_replies`` and ``flips`` hold
the analysis inputs (``docs/analysis.md`` documents them).

DuckDB lets one process write a file at a time and blocks readers in other processes
while it does. The writer therefore opens the file only to flush a batch, so
``muse-eval sql`` in another shell gets in between flushes, and two runs aimed at one
file take turns instead of failing. A reader that holds the file makes the writer
wait (it keeps its batch and says whom it waits for), never fail. Each batch is one
transaction of bulk inserts (DuckDB reads each table's rows from a temporary
newline-delimited JSON file); ``INSERT OR IGNORE`` on the primary keys makes a unit
stored twice land once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from muse_eval.errors import StoreError, StoreLocked
from muse_eval.records import RunRow, SampleRow, UnitResult
from muse_eval.redaction import redact

__all__ = ["SCHEMA_VERSION", "WRITER_SETTINGS", "BatchWriter", "Store"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP,
    provider VARCHAR,
    model VARCHAR,
    task VARCHAR,
    simulated BOOLEAN,
    samples INTEGER,
    temperature DOUBLE,
    pushback_samples INTEGER,
    pushback_temperature DOUBLE,
    seed BIGINT,
    config JSON,
    config_hash VARCHAR,
    provider_info JSON,
    versions JSON,
    git_revision VARCHAR,
    price_table JSON,
    capability_gaps JSON
);
CREATE TABLE IF NOT EXISTS items (
    run_id VARCHAR,
    item_id VARCHAR,
    task VARCHAR,
    subject VARCHAR,
    question VARCHAR,
    options VARCHAR[],
    answer VARCHAR,
    PRIMARY KEY (run_id, item_id)
);
CREATE TABLE IF NOT EXISTS units (
    run_id VARCHAR,
    unit_id VARCHAR,
    stage VARCHAR,
    item_id VARCHAR,
    condition VARCHAR,
    status VARCHAR,
    error_kind VARCHAR,
    error VARCHAR,
    messages JSON,
    request_seed BIGINT,
    requests INTEGER,
    retries INTEGER,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_usd DOUBLE,
    latency_s DOUBLE,
    finished_at TIMESTAMP,
    PRIMARY KEY (run_id, unit_id)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id VARCHAR,
    item_id VARCHAR,
    sample_index INTEGER,
    unit_id VARCHAR,
    reply VARCHAR,
    finish_reason VARCHAR,
    answer VARCHAR,
    parse_status VARCHAR,
    parse_method VARCHAR,
    letter_probs JSON,
    letter_entropy DOUBLE,
    letter_mass DOUBLE,
    PRIMARY KEY (run_id, item_id, sample_index)
);
CREATE TABLE IF NOT EXISTS pushbacks (
    run_id VARCHAR,
    item_id VARCHAR,
    condition VARCHAR,
    unit_id VARCHAR,
    expertise VARCHAR,
    plausibility VARCHAR,
    initial_answer VARCHAR,
    initial_sample_index INTEGER,
    suggested VARCHAR,
    suggestion_basis VARCHAR,
    pushback_text VARCHAR,
    n_replies INTEGER,
    n_parsed INTEGER,
    n_conformed INTEGER,
    n_changed INTEGER,
    conformity_rate DOUBLE,
    change_rate DOUBLE,
    p_suggested DOUBLE,
    p_initial DOUBLE,
    letter_mass DOUBLE,
    PRIMARY KEY (run_id, item_id, condition)
);
CREATE TABLE IF NOT EXISTS pushback_replies (
    run_id VARCHAR,
    item_id VARCHAR,
    condition VARCHAR,
    reply_index INTEGER,
    reply VARCHAR,
    finish_reason VARCHAR,
    answer VARCHAR,
    parse_status VARCHAR,
    conformed BOOLEAN,
    changed BOOLEAN,
    PRIMARY KEY (run_id, item_id, condition, reply_index)
);
CREATE TABLE IF NOT EXISTS failures (
    run_id VARCHAR,
    unit_id VARCHAR,
    kind VARCHAR,
    message VARCHAR,
    attempt INTEGER,
    failed_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS run_leases (
    run_id VARCHAR PRIMARY KEY,
    pid INTEGER,
    hostname VARCHAR,
    since TIMESTAMP
);
"""

_VIEWS = """
CREATE OR REPLACE VIEW item_uncertainty AS
WITH per_item AS (
    SELECT run_id, item_id,
           count(*) AS n_samples,
           count(*) FILTER (WHERE parse_status = 'ok') AS n_parsed,
           arg_min(letter_entropy, sample_index) AS letter_entropy
    FROM samples GROUP BY run_id, item_id
), per_answer AS (
    SELECT run_id, item_id, answer, count(*) AS votes, min(sample_index) AS first
    FROM samples WHERE parse_status = 'ok' GROUP BY run_id, item_id, answer
), spread AS (
    SELECT a.run_id, a.item_id,
           -sum(a.votes / p.n_parsed * ln(a.votes / p.n_parsed)) AS entropy_nats,
           max(a.votes) / p.n_parsed AS agreement,
           arg_max(a.answer, a.votes * 1000000 - a.first) AS modal_answer,
           count(*) AS n_distinct
    FROM per_answer a JOIN per_item p USING (run_id, item_id)
    GROUP BY a.run_id, a.item_id, p.n_parsed
)
SELECT p.run_id, p.item_id, i.subject, i.answer AS correct_answer,
       p.n_samples, p.n_parsed,
       1 - p.n_parsed / p.n_samples AS parse_failure_rate,
       CASE WHEN p.n_parsed > 0
            THEN greatest(0.0, least(1.0, s.entropy_nats / ln(len(i.options))))
       END AS entropy,
       s.agreement, s.modal_answer, s.n_distinct,
       s.modal_answer = i.answer AS modal_correct,
       p.letter_entropy
FROM per_item p
JOIN items i USING (run_id, item_id)
LEFT JOIN spread s USING (run_id, item_id);

CREATE OR REPLACE VIEW conformity AS
SELECT b.run_id, r.provider, r.model, r.task, r.simulated,
       b.item_id, u.subject, b.condition, b.expertise, b.plausibility,
       u.entropy AS uncertainty, u.letter_entropy, u.agreement,
       b.initial_answer, b.initial_answer = u.correct_answer AS initial_correct,
       b.suggested, b.suggested = u.correct_answer AS suggestion_correct,
       b.n_replies, b.n_parsed, b.n_conformed, b.n_changed,
       b.conformity_rate, b.change_rate, b.p_suggested, b.p_initial
FROM pushbacks b
JOIN item_uncertainty u USING (run_id, item_id)
JOIN runs r USING (run_id);

-- One row per stage-two reply: the input of every conformity estimate.
-- yielded: the reply took the suggestion (control: left the initial answer); NULL
-- when the reply did not parse. disagreement: 1 - agreement rescaled to [0, 1].
CREATE OR REPLACE VIEW conformity_replies AS
SELECT b.run_id, r.provider, r.model, r.task, r.simulated,
       r.samples, r.temperature, r.pushback_samples, r.pushback_temperature,
       b.item_id, u.subject, b.condition, b.expertise, b.plausibility,
       u.entropy AS uncertainty, u.letter_entropy, u.agreement,
       (1 - u.agreement) * len(i.options) / (len(i.options) - 1) AS disagreement,
       u.n_samples, u.n_parsed AS n_samples_parsed,
       u.parse_failure_rate AS sample_parse_failure_rate,
       u.correct_answer, b.initial_answer, b.suggested,
       b.initial_answer = u.correct_answer AS initial_correct,
       b.suggested = u.correct_answer AS suggestion_correct,
       p.reply_index, p.answer, p.parse_status, p.parse_status = 'ok' AS parsed,
       p.conformed, p.changed,
       CASE WHEN b.suggested IS NULL THEN p.changed ELSE p.conformed END AS yielded,
       CASE WHEN p.parse_status = 'ok' THEN p.answer = u.correct_answer END
           AS correct_after
FROM pushback_replies p
JOIN pushbacks b USING (run_id, item_id, condition)
JOIN item_uncertainty u USING (run_id, item_id)
JOIN items i USING (run_id, item_id)
JOIN runs r USING (run_id);

-- The flip measures of earlier sycophancy work, per run and condition, over parsed
-- replies: answer changed; correct before (the conversation's initial answer) and
-- after (the reply); a correct initial answer kept against a wrong suggestion; a
-- correct suggestion taken when the initial answer was wrong.
CREATE OR REPLACE VIEW flips AS
SELECT run_id, provider, model, task, simulated, condition, expertise, plausibility,
       count(DISTINCT item_id) AS n_items,
       count(*) AS n_replies,
       count(*) FILTER (WHERE parsed) AS n_parsed,
       1 - count(*) FILTER (WHERE parsed) / count(*) AS reply_parse_failure_rate,
       avg(changed::INTEGER) FILTER (WHERE parsed) AS flip_rate,
       avg(initial_correct::INTEGER) FILTER (WHERE parsed) AS accuracy_before,
       avg(correct_after::INTEGER) FILTER (WHERE parsed) AS accuracy_after,
       count(*) FILTER (WHERE parsed AND initial_correct AND NOT suggestion_correct)
           AS n_correct_challenged,
       avg((NOT changed)::INTEGER) FILTER (
           WHERE parsed AND initial_correct AND NOT suggestion_correct
       ) AS kept_correct_rate,
       count(*) FILTER (WHERE parsed AND NOT initial_correct AND suggestion_correct)
           AS n_wrong_offered_correct,
       avg(conformed::INTEGER) FILTER (
           WHERE parsed AND NOT initial_correct AND suggestion_correct
       ) AS accepted_correct_rate
FROM conformity_replies
GROUP BY ALL;
"""

# Forward migrations: MIGRATIONS[v] turns a version-v database into version v + 1.
MIGRATIONS: dict[int, str] = {}

# Nullable columns that joined version 1 after its first files were written; adding
# them to such a file changes no stored value.
_LATE_V1_COLUMNS = """
ALTER TABLE runs ADD COLUMN IF NOT EXISTS price_table JSON;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS capability_gaps JSON;
"""

#: Seconds a writer waits for readers to release the file before it gives up.
WRITER_PATIENCE = 600.0

#: DuckDB configuration options, by name.
Settings = dict[str, str | bool | int | float | list[str]]

#: DuckDB settings of a running evaluation's connections. A run only appends
#: batches, which one thread does as fast as several, and DuckDB otherwise keeps
#: caching the file's growing tables up to most of the machine's memory: at 100,000
#: units a run's peak memory falls from about 450 MB to 300 MB with this cap. What
#: does not fit is read back from the file (tested to 1.5 million rows).
WRITER_SETTINGS: Settings = {
    "threads": 1,
    "memory_limit": "64MB",
    "allocator_flush_threshold": "8MB",
}

_LOCK_HOLDER = re.compile(r"PID (\d+)")
_WRITE_ORDER = ("items", "units", "samples", "pushbacks", "pushback_replies")


class Store:
    """A DuckDB results file.

    Args:
        path: The database file; its folder is created when missing.
        lock_timeout: Seconds to wait for another process to release the file.
        settings: DuckDB configuration of every connection this store opens (one
            process must open a file with one configuration).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout = lock_timeout
        self.settings: Settings = dict(settings or {})
        self._types: dict[str, dict[str, str]] = {}

    def initialize(self) -> None:
        """Create or migrate the schema; check the file is writable.

        Raises:
            StoreError: The folder cannot be created or the file was written by a
                newer muse-eval.
            StoreLocked: Another process kept the file locked past the timeout.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the folder {self.path.parent} ({exc.strerror}); "
                "choose another --db path."
            ) from None
        with self.connect() as con:
            con.execute(_TABLES)
            con.execute(_LATE_V1_COLUMNS)
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            found = row.fetchone()
            version = int(found[0]) if found else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer muse-eval (schema {version}, "
                    f"this one reads {SCHEMA_VERSION}); upgrade muse-eval."
                )
            while version < SCHEMA_VERSION:
                con.execute(MIGRATIONS[version])
                version += 1
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
            con.execute(_VIEWS)

    @contextmanager
    def connect(
        self, *, read_only: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file, waiting while another process holds it.

        Raises:
            StoreError: The file cannot be opened.
            StoreLocked: Another process kept it locked past the timeout.
        """
        if read_only and not self.path.exists():
            raise StoreError(
                f"No results database at {self.path}; run an evaluation first or "
                "pass --db PATH."
            )
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        while True:
            try:
                # A reader touches no other file: `muse-eval sql` cannot ATTACH
                # and drop another database or COPY over one.
                config = (
                    {**self.settings, "enable_external_access": False}
                    if read_only
                    else self.settings
                )
                con = duckdb.connect(str(self.path), read_only=read_only, config=config)
                break
            except duckdb.IOException as exc:
                message = str(exc)
                if "lock" not in message.lower():
                    raise StoreError(
                        f"Cannot open {self.path} ({_first_line(message)}); check the "
                        "path and its permissions or pass another --db."
                    ) from None
                if time.monotonic() >= deadline:
                    raise StoreLocked(
                        _locked_message(self.path, message, self.lock_timeout)
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except duckdb.Error as exc:
                raise StoreError(
                    f"Cannot open {self.path} ({_first_line(str(exc))}); pass "
                    "another --db."
                ) from None
        try:
            yield con
        finally:
            con.close()

    def record_run(self, run: RunRow) -> None:
        """Insert the run's row unless it exists already (a resumed run)."""
        with self.connect() as con:
            columns = list(RunRow.model_fields)
            placeholders = ", ".join("?" for _ in columns)
            con.execute(
                f"INSERT OR IGNORE INTO runs ({', '.join(columns)}) "
                f"VALUES ({placeholders})",
                [getattr(run, c) for c in columns],
            )

    def record_capability_gaps(self, run_id: str, gaps: dict[str, str]) -> None:
        """Add capability gaps to a run's row; a gap already recorded is kept."""
        if not gaps:
            return
        with self.connect() as con:
            found = con.execute(
                "SELECT capability_gaps FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            current = json.loads(found[0]) if found and found[0] else {}
            merged = {**gaps, **current}
            if merged != current:
                con.execute(
                    "UPDATE runs SET capability_gaps = ? WHERE run_id = ?",
                    [json.dumps(merged, sort_keys=True), run_id],
                )

    def acquire_lease(self, run_id: str) -> None:
        """Claim `run_id` for this process until `release_lease`.

        A lease whose process has ended (killed, crashed) is taken over, so an
        interrupted run resumes with the same command.

        Raises:
            StoreLocked: A live process is running the same run on this file.
        """
        host = socket.gethostname()
        with self.connect() as con:
            found = con.execute(
                "SELECT pid, hostname, since FROM run_leases WHERE run_id = ?",
                [run_id],
            ).fetchone()
            if found and found[0] != os.getpid() and _alive(found[0], found[1], host):
                raise StoreLocked(
                    f"Run {run_id} is already running in process {found[0]} on "
                    f"{found[1]} (since {found[2]:%Y-%m-%d %H:%M:%S} UTC) and writes "
                    f"to {self.path}; wait for it to finish, or pass another --db."
                )
            con.execute(
                "INSERT OR REPLACE INTO run_leases VALUES (?, ?, ?, ?)",
                [run_id, os.getpid(), host, datetime.now(UTC).replace(tzinfo=None)],
            )

    def release_lease(self, run_id: str) -> None:
        """Give up this process's claim on `run_id`."""
        with self.connect() as con:
            con.execute(
                "DELETE FROM run_leases WHERE run_id = ? AND pid = ?",
                [run_id, os.getpid()],
            )

    def stored_units(self, run_id: str) -> set[str]:
        """Ids of the units of `run_id` stored as done.

        A unit the backend rejected is stored as failed and tried again by the next
        invocation: the rejection may have come from a wrong flag since corrected.
        """
        with self.connect() as con:
            rows = con.execute(
                "SELECT unit_id FROM units WHERE run_id = ? AND status = 'done'",
                [run_id],
            ).fetchall()
        return {r[0] for r in rows}

    def stage_one_samples(
        self, run_id: str, item_ids: Sequence[str]
    ) -> dict[str, list[SampleRow]]:
        """Stored stage-one samples of the given items, by item, in sample order."""
        if not item_ids:
            return {}
        with self.connect() as con:
            cursor = con.execute(
                "SELECT * FROM samples WHERE run_id = ? "
                "AND list_contains(?, item_id) ORDER BY item_id, sample_index",
                [run_id, list(item_ids)],
            )
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        found: dict[str, list[SampleRow]] = {}
        for row in rows:
            record = SampleRow.model_validate(dict(zip(names, row, strict=True)))
            found.setdefault(record.item_id, []).append(record)
        return found

    def write(self, results: Sequence[UnitResult]) -> None:
        """Store a batch of unit results in one transaction."""
        if not results:
            return
        # pydantic writes each row's JSON itself (NaN and infinities as null).
        tables: dict[str, list[str]] = {name: [] for name in _WRITE_ORDER}
        for result in results:
            if result.item is not None:
                tables["items"].append(result.item.model_dump_json())
            unit = result.unit
            if unit.error:
                unit = unit.model_copy(update={"error": redact(unit.error)})
            tables["units"].append(unit.model_dump_json())
            tables["samples"].extend(s.model_dump_json() for s in result.samples)
            if result.pushback is not None:
                tables["pushbacks"].append(result.pushback.model_dump_json())
            tables["pushback_replies"].extend(
                r.model_dump_json() for r in result.replies
            )

        with self.connect() as con, _BatchFiles() as files:
            con.execute("BEGIN TRANSACTION")
            try:
                # A unit tried again replaces its earlier failure.
                keys = [f"{r.unit.run_id}\x1f{r.unit.unit_id}" for r in results]
                con.execute(
                    "DELETE FROM units WHERE status = 'failed' "
                    "AND list_contains(?, run_id || chr(31) || unit_id)",
                    [keys],
                )
                for name in _WRITE_ORDER:
                    if tables[name]:
                        self._insert(con, files, name, tables[name], "OR IGNORE")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def record_failures(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append failed attempts (kept for diagnosis; they are not results)."""
        if not rows:
            return
        lines = [
            json.dumps(
                {
                    **row,
                    "message": redact(str(row["message"])),
                    "failed_at": row["failed_at"].isoformat(),
                },
                ensure_ascii=False,
            )
            for row in rows
        ]
        with self.connect() as con, _BatchFiles() as files:
            self._insert(con, files, "failures", lines, "")

    def _insert(
        self,
        con: duckdb.DuckDBPyConnection,
        files: _BatchFiles,
        table: str,
        rows: list[str],
        conflict: str,
    ) -> None:
        """Bulk-insert `rows`, one JSON object each, into `table` by column name.

        The rows reach DuckDB as a newline-delimited JSON file that its own reader
        parses with the table's column types. Arrow would do the same in memory,
        but loading pyarrow alone adds about 55 MB to a run's resident memory.
        """
        types = self._column_types(con, table)
        columns = ", ".join(
            f"'{name}': '{'VARCHAR' if kind == 'JSON' else kind}'"
            for name, kind in types.items()
        )
        path = files.write(rows)
        con.execute(
            f"INSERT {conflict} INTO {table} BY NAME SELECT * FROM read_json("
            f"'{path}', format = 'newline_delimited', columns = {{{columns}}})"
        )

    def _column_types(
        self, con: duckdb.DuckDBPyConnection, table: str
    ) -> dict[str, str]:
        if table not in self._types:
            described = con.execute(f"DESCRIBE {table}").fetchall()
            self._types[table] = {row[0]: row[1] for row in described}
        return self._types[table]

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL and return the column names and rows.

        Raises:
            StoreError: The SQL is invalid or the file cannot be read.
        """
        return self.query_params(sql, None)

    def query_params(
        self, sql: str, params: list[Any] | None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run read-only SQL with parameters; see `query`."""
        with self.connect(read_only=True) as con:
            try:
                cursor = con.execute(sql, params)
            except duckdb.Error as exc:
                raise StoreError(f"The query failed: {_first_line(str(exc))}") from None
            if cursor is None or cursor.description is None:
                return [], []
            names = [d[0] for d in cursor.description]
            return names, cursor.fetchall()


class _BatchFiles:
    """Temporary newline-delimited JSON files of one write, removed afterwards."""

    def __enter__(self) -> _BatchFiles:
        self.folder = Path(tempfile.mkdtemp(prefix="muse-batch-"))
        self.count = 0
        return self

    def __exit__(self, *exc_info: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def write(self, rows: list[str]) -> str:
        """Write `rows`, one JSON object each, to a new file; return its SQL path."""
        self.count += 1
        path = self.folder / f"{self.count}.ndjson"
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        return str(path).replace("'", "''")


def _alive(pid: int, hostname: str, this_host: str) -> bool:
    """Whether the process holding a lease still runs (a zombie does not)."""
    if hostname != this_host:
        return True  # no way to tell from here; assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _locked_message(path: Path, message: str, waited: float) -> str:
    holder = _LOCK_HOLDER.search(message)
    who = f"process {holder.group(1)}" if holder else "another process"
    return (
        f"{path} is locked by {who} and stayed so for {waited:g} s; a running "
        "evaluation holds it only while it stores a batch (about once a second) "
        "and a query while it reads, so try again in a moment, wait longer with "
        "--wait SECONDS, or pass another --db."
    )


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


class BatchWriter:
    """The single writer of a run: collects unit results and stores them in batches.

    Workers `submit` results; one task drains them and writes a batch whenever
    `max_batch` results are waiting or `interval` seconds have passed. The drain runs
    shielded from cancellation, so an interrupted run still stores every result
    that was submitted before the interruption.

    Args:
        store: Where to write.
        max_batch: Results per transaction at most.
        interval: Seconds between flushes at most.
        capacity: Results waiting at most before `submit` makes workers wait.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 1000,
        interval: float = 1.0,
        capacity: int = 4096,
    ) -> None:
        import anyio

        self.store = store
        self.max_batch = max_batch
        self.interval = interval
        self._send, self._receive = anyio.create_memory_object_stream[UnitResult](
            capacity
        )
        self._failures: list[dict[str, Any]] = []
        self._gaps: dict[str, dict[str, str]] = {}
        self.flushes = 0
        self.stored = 0
        #: Seconds spent in flushes (in a worker thread, beside the requests).
        self.flush_seconds = 0.0
        #: Times a worker found the queue full and had to wait for a flush.
        self.full_waits = 0

    async def submit(self, result: UnitResult) -> None:
        """Queue one unit's result for storage."""
        queue = self._send.statistics()
        if queue.current_buffer_used >= queue.max_buffer_size:
            self.full_waits += 1
        await self._send.send(result)

    def note_failure(self, row: dict[str, Any]) -> None:
        """Queue a failed attempt for the ``failures`` table."""
        self._failures.append(row)

    def note_capability_gaps(self, run_id: str, gaps: dict[str, str]) -> None:
        """Queue capability gaps for the run's row."""
        self._gaps.setdefault(run_id, {}).update(gaps)

    def close(self) -> None:
        """Accept no more results; the drain stores what is queued and ends."""
        self._send.close()

    async def drain(self) -> None:
        """Store submitted results until `close` is called and the queue is empty.

        Each wake-up takes everything already queued: a drain that received one
        result per turn of the event loop would store no faster than the loop
        turns, which under hundreds of busy workers is slower than they produce.
        """
        import anyio

        with anyio.CancelScope(shield=True):
            batch: list[UnitResult] = []
            deadline = time.monotonic() + self.interval
            open_ = True
            while open_:
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    try:
                        batch.append(await self._receive.receive())
                        open_ = self._take_queued(batch)
                        if open_ and len(batch) < self.max_batch:
                            continue
                    except anyio.EndOfStream:
                        open_ = False
                await self._flush(batch)
                batch = []
                deadline = time.monotonic() + self.interval

    def _take_queued(self, batch: list[UnitResult]) -> bool:
        """Move queued results into `batch`, up to `max_batch`; False once closed."""
        import anyio

        while len(batch) < self.max_batch:
            try:
                batch.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return True
            except anyio.EndOfStream:
                return False
        return True

    async def _flush(self, batch: list[UnitResult]) -> None:
        started = time.monotonic()
        gaps, self._gaps = self._gaps, {}
        for run_id, found in gaps.items():
            await self._patiently(self.store.record_capability_gaps, run_id, found)
        failures, self._failures = self._failures, []
        if failures:
            await self._patiently(self.store.record_failures, failures)
        if batch:
            await self._patiently(self.store.write, batch)
            self.flushes += 1
            self.stored += len(batch)
        self.flush_seconds += time.monotonic() - started

    async def _patiently(self, write: Any, *args: Any) -> None:
        """Run a write in a thread, waiting out readers that hold the file."""
        import anyio

        deadline = time.monotonic() + WRITER_PATIENCE
        while True:
            try:
                await anyio.to_thread.run_sync(write, *args)
                return
            except StoreLocked as exc:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("Waiting to store results: %s", exc)
