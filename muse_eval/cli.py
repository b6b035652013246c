"""The ``muse-eval`` command.

``muse-eval [run options]`` runs an evaluation; the other commands read results::

    muse-eval --task mmlu --limit 20            run MUSE (default provider: local)
    muse-eval tasks [--subjects TASK]           list tasks, or a task's subjects
    muse-eval runs                              list stored runs
    muse-eval sql "SELECT ..." [--format csv]   query the results database

Heavy modules (the engine, litellm, statsmodels) are imported only by the commands
that need them, so reading results starts fast.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from muse_eval.config import DEFAULT_DB
from muse_eval.errors import ConfigError, MuseError
from muse_eval.redaction import RedactingFilter, redact
from muse_eval.terminal import stderr_console, widened

__all__ = ["main"]

logger = logging.getLogger("muse_eval")

Handler = Callable[[argparse.Namespace, Console], int]


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError("must be below 2**63")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value:g}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        help=f"results database (default: {DEFAULT_DB})",
    )


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log per request")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress display"
    )


def build_run_parser() -> argparse.ArgumentParser:
    """The parser of the default command, which runs an evaluation."""
    parser = argparse.ArgumentParser(
        prog="muse-eval",
        description="Measure why a language model gives in to pushback (MUSE).",
        epilog="other commands: tasks, runs, sql, analyze, report "
        "(muse-eval COMMAND --help)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--provider", default="local", help="provider profile (default: local)"
    )
    run.add_argument("--model", help="model name (default: the profile's model)")
    run.add_argument("--base-url", help="server address, e.g. http://127.0.0.1:8000/v1")
    run.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the API key (default: the profile's)",
    )
    run.add_argument("--task", default="mmlu", help="task name (default: mmlu)")
    run.add_argument("--limit", type=_positive_int, help="evaluate at most K items")
    run.add_argument("--subjects", help="comma-separated subjects to keep")
    run.add_argument(
        "--samples", type=_positive_int, default=10, help="stage-one samples N"
    )
    run.add_argument(
        "--temperature",
        type=_non_negative_float,
        default=1.0,
        help="stage-one temperature",
    )
    run.add_argument(
        "--max-tokens", type=_positive_int, default=8, help="stage-one reply cap"
    )
    run.add_argument(
        "--pushback-samples",
        type=_positive_int,
        default=5,
        help="replies per conversation M",
    )
    run.add_argument(
        "--pushback-temperature",
        type=_non_negative_float,
        default=1.0,
        help="stage-two temperature",
    )
    run.add_argument(
        "--pushback-max-tokens",
        type=_positive_int,
        default=8,
        help="stage-two reply cap",
    )
    run.add_argument(
        "--top-logprobs",
        type=_non_negative_int,
        default=20,
        help="first-token alternatives to request (0: none)",
    )
    run.add_argument(
        "--expertise", help="comma-separated expertise levels (default: all)"
    )
    run.add_argument(
        "--plausibility",
        help="comma-separated plausibility levels: plausible,implausible,correct",
    )
    run.add_argument("--no-control", action="store_true", help="skip 'Are you sure?'")
    run.add_argument("--seed", type=_seed, default=0, help="run seed (default: 0)")
    run.add_argument(
        "--max-concurrency", type=_positive_int, help="requests in flight at most"
    )
    run.add_argument(
        "--max-cost",
        type=_positive_float,
        metavar="USD",
        help="stop before the run could spend more than USD (priced models only)",
    )
    run.add_argument("--rpm", type=_positive_float, help="requests per minute at most")
    run.add_argument(
        "--tpm", type=_positive_float, help="tokens per minute at most (estimated)"
    )
    run.add_argument(
        "--sim-params",
        metavar="JSON_OR_FILE",
        help="simulated provider only: options over the profile's [options], as JSON "
        "or a file holding JSON",
    )
    _add_db(parser)
    _add_verbosity(parser)
    return parser


def _split(text: str | None, flag: str = "") -> list[str] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{flag} is empty; name at least one, or leave the flag out.")
    return parts


def _command_run(args: argparse.Namespace, console: Console) -> int:
    from muse_eval.run import RunOptions, run_evaluation

    options = RunOptions(
        provider=args.provider,
        model=args.model,
        base_url=args.base_url,
        task=args.task,
        limit=args.limit,
        subjects=_split(args.subjects, "--subjects"),
        samples=args.samples,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        pushback_samples=args.pushback_samples,
        pushback_temperature=args.pushback_temperature,
        pushback_max_tokens=args.pushback_max_tokens,
        top_logprobs=args.top_logprobs,
        expertise=_split(args.expertise, "--expertise"),
        plausibility=_split(args.plausibility, "--plausibility"),
        control=not args.no_control,
        seed=args.seed,
        max_concurrency=args.max_concurrency,
        max_cost=args.max_cost,
        api_key_env=args.api_key_env,
        rpm=args.rpm,
        tpm=args.tpm,
        sim_params=args.sim_params,
        db=args.db,
        progress=not args.quiet,
    )
    return run_evaluation(options, console)


def _command_tasks(args: argparse.Namespace, console: Console) -> int:
    from collections import Counter

    from muse_eval.catalog import list_definitions
    from muse_eval.task import load_task

    if args.subjects:
        task = load_task(args.subjects)
        counts = Counter(item.subject for item in task.iter_items())
        table = Table(title=f"Subjects of {task.name}", title_justify="left")
        table.add_column("subject")
        table.add_column("items", justify="right")
        for subject, count in sorted(counts.items()):
            table.add_row(subject, str(count))
        console.print(table)
        return 0

    table = Table(title="Tasks", title_justify="left")
    for header in ("task", "items", "subjects", "description"):
        table.add_column(
            header, justify="right" if header in ("items", "subjects") else "left"
        )
    for name in list_definitions("tasks"):
        task = load_task(name)
        try:
            items = list(task.iter_items())
            n_items = str(len(items))
            subjects = str(len({i.subject for i in items}))
        except MuseError as exc:
            n_items, subjects = "–", f"unavailable: {exc}"
        table.add_row(name, n_items, subjects, task.description)
    console.print(table)
    return 0


_RUNS_SQL = """
SELECT r.run_id, strftime(r.created_at, '%Y-%m-%d %H:%M') AS created,
       r.provider, r.model, r.task,
       CASE WHEN r.simulated THEN 'yes' ELSE '' END AS simulated,
       r.samples AS n, r.temperature AS t,
       (SELECT count(*) FROM items i WHERE i.run_id = r.run_id) AS items,
       (SELECT count(*) FROM samples s WHERE s.run_id = r.run_id) AS samples,
       (SELECT count(*) FROM pushbacks p WHERE p.run_id = r.run_id) AS pushbacks,
       (SELECT count(*) FROM units u WHERE u.run_id = r.run_id
            AND u.status = 'failed') AS failed
FROM runs r ORDER BY r.created_at
"""


def _command_runs(args: argparse.Namespace, console: Console) -> int:
    from muse_eval.store import Store

    names, rows = Store(args.db, lock_timeout=args.wait).query(_RUNS_SQL)
    if not rows:
        console.print(f"No runs stored in {args.db} yet.")
        return 0
    _print_rows(console, names, rows, args.format)
    return 0


def _command_sql(args: argparse.Namespace, console: Console) -> int:
    from muse_eval.store import Store

    if not args.query.strip():
        raise ConfigError('The query is empty; pass SQL, e.g. "SELECT * FROM runs".')
    names, rows = Store(args.db, lock_timeout=args.wait).query(args.query)
    if not names:
        raise ConfigError("The query returns no result set; muse-eval sql only reads.")
    _print_rows(console, names, rows, args.format)
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _print_rows(
    console: Console, names: list[str], rows: Sequence[tuple[Any, ...]], fmt: str
) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([[_plain(v) for v in row] for row in rows])
    elif fmt == "json":
        records = [dict(zip(names, map(_plain, row), strict=True)) for row in rows]
        sys.stdout.write(json.dumps(records, default=str, indent=1) + "\n")
    else:
        table = Table()
        for name in names:
            table.add_column(name, overflow="fold")
        cells = [["" if v is None else str(_plain(v)) for v in row] for row in rows]
        for row_cells in cells:
            table.add_row(*row_cells)
        # Keep short columns (ids, names) on one line; fold only long text.
        natural = (
            sum(
                min(40, max([len(n), *(len(c[i]) for c in cells)])) + 3
                for i, n in enumerate(names)
            )
            + 1
        )
        out = console if console.is_terminal else widened(console, min(natural, 240))
        out.print(table)
        out.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")


def _reader_parser(name: str, help_text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"muse-eval {name}", description=help_text)
    _add_db(parser)
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait while a running evaluation holds the database",
    )
    return parser


def _tasks_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-eval tasks", description="List tasks with their item counts."
    )
    parser.add_argument("--subjects", metavar="TASK", help="list one task's subjects")
    return parser


def _sql_parser() -> argparse.ArgumentParser:
    parser = _reader_parser("sql", "Run read-only SQL on the results database.")
    parser.add_argument("query", help='SQL, e.g. "SELECT * FROM conformity LIMIT 5"')
    return parser


#: Subcommands: name -> (parser factory, handler). The default command is ``run``.
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Handler]] = {
    "tasks": (_tasks_parser, _command_tasks),
    "runs": (lambda: _reader_parser("runs", "List stored runs."), _command_runs),
    "sql": (_sql_parser, _command_sql),
}


def _register_analysis_commands() -> None:
    try:
        from muse_eval.analysis.commands import register
    except ImportError:
        return
    register(COMMANDS)


def _configure_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(
        console=stderr_console(),
        show_path=False,
        show_time=False,
        markup=False,
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "httpcore", "LiteLLM", "litellm", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _first_muse_error(error: BaseException) -> MuseError | None:
    if isinstance(error, MuseError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_muse_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``muse-eval`` command line; return the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    _register_analysis_commands()
    if args_list and args_list[0] in COMMANDS:
        make_parser, handler = COMMANDS[args_list[0]]
        args = make_parser().parse_args(args_list[1:])
    elif args_list and args_list[0] == "run":
        args, handler = build_run_parser().parse_args(args_list[1:]), _command_run
    else:
        args, handler = build_run_parser().parse_args(args_list), _command_run

    console = Console()
    _configure_logging(getattr(args, "verbose", False))
    err = stderr_console()
    try:
        return handler(args, console)
    except KeyboardInterrupt:
        err.print(
            "Interrupted. Every finished unit is stored; run the same command again "
            "to resume."
        )
        return 130
    except BaseException as error:  # noqa: BLE001 - one sentence, never a traceback
        found = _first_muse_error(error)
        if found is None:
            if isinstance(error, SystemExit):
                raise
            if isinstance(error, BaseExceptionGroup) and any(
                isinstance(e, KeyboardInterrupt) for e in error.exceptions
            ):
                err.print("Interrupted. Every finished unit is stored.")
                return 130
            raise
        err.print(f"[bold red]error:[/] {escape(redact(str(found)))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
