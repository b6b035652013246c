"""The one stderr console that logs and the progress display share.

Rich keeps log lines above a live progress bar only when both write through the same
`Console`; two consoles on one terminal garble each other.
"""

from __future__ import annotations

from functools import cache

from rich.console import Console

__all__ = ["stderr_console", "widened"]


@cache
def stderr_console() -> Console:
    """The process's console for diagnostics: logs, progress, errors."""
    return Console(stderr=True)


def widened(console: Console, width: int) -> Console:
    """Return `console`, or a copy of it at least `width` columns wide.

    For tables whose cells must not fold: a pipe or a narrow window reports 80.
    """
    if console.width >= width:
        return console
    return Console(
        file=console.file,
        width=width,
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )
