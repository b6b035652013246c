"""The ``analyze`` and ``report`` commands, registered into the CLI's table.

::

    muse-eval analyze [--run ID ...] [--db PATH] [--format table|json]
    muse-eval report  [--run ID ...] [--out DIR] [--db PATH]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from muse_eval.config import DEFAULT_DB

__all__ = ["register"]

#: Where ``report`` writes when no --out is given.
DEFAULT_REPORT_DIR = Path("results/report")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        dest="runs",
        action="extend",
        nargs="+",
        metavar="ID",
        help="runs to analyse, by id or unique prefix (default: every stored run)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        help=f"results database (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="B",
        help="item resamples per bootstrap interval (default: 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap (default: 0)"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait while a running evaluation holds the database",
    )


def _analyze_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-eval analyze",
        description="Separate sycophantic from uncertainty-driven conformity and "
        "print the estimates.",
    )
    _common(parser)
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="tables for people, json for scripts (default: table)",
    )
    return parser


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-eval report",
        description="Write the analysis as one HTML page with its plots.",
    )
    _common(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help=f"folder for report.html and its PNGs (default: {DEFAULT_REPORT_DIR})",
    )
    return parser


def _command_analyze(args: argparse.Namespace, console: Console) -> int:
    from muse_eval.analysis.analyze import analyze_runs
    from muse_eval.analysis.tables import print_analysis
    from muse_eval.store import Store

    analysis = analyze_runs(
        Store(args.db, lock_timeout=args.wait),
        args.runs,
        bootstrap=_positive(args.bootstrap),
        seed=args.seed,
    )
    if args.format == "json":
        sys.stdout.write(analysis.model_dump_json(indent=1) + "\n")
    else:
        print_analysis(console, analysis)
    return 0


def _command_report(args: argparse.Namespace, console: Console) -> int:
    from muse_eval.analysis.analyze import analyze_runs
    from muse_eval.analysis.report import write_report
    from muse_eval.store import Store

    analysis = analyze_runs(
        Store(args.db, lock_timeout=args.wait),
        args.runs,
        bootstrap=_positive(args.bootstrap),
        seed=args.seed,
    )
    page = write_report(analysis, args.out, command=_report_command(args))
    label = " [bold black on yellow] SIMULATED [/]" if analysis.simulated else ""
    console.print(f"Report: {page}{label}")
    return 0


def _report_command(args: argparse.Namespace) -> str:
    """The command line that reproduces a report, for the page to state."""
    parts = ["muse-eval", "report"]
    for run in args.runs or []:
        parts += ["--run", run]
    parts += ["--db", str(args.db), "--out", str(args.out)]
    if args.bootstrap != 1000:
        parts += ["--bootstrap", str(args.bootstrap)]
    if args.seed != 0:
        parts += ["--seed", str(args.seed)]
    return " ".join(parts)


def _positive(value: int) -> int:
    from muse_eval.errors import ConfigError

    if value < 1:
        raise ConfigError(f"--bootstrap must be at least 1, not {value}.")
    return value


Handler = Callable[[argparse.Namespace, Console], int]


def register(
    commands: dict[str, tuple[Callable[[], argparse.ArgumentParser], Handler]],
) -> None:
    """Add ``analyze`` and ``report`` to the CLI's command table."""
    commands["analyze"] = (_analyze_parser, _command_analyze)
    commands["report"] = (_report_parser, _command_report)
