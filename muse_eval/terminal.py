"""The one stderr console that logs and the progress display share.

Rich keeps log lines above a live progress bar only when both write through the same
`Console`; two consoles on one terminal garble each other.
"""

from __future__ import annotations

from functools import cache

from rich.console import Console

__all__ = ["stderr_console"]


@cache
def stderr_console() -> Console:
    """The process's console for diagnostics: logs, progress, errors."""
    return Console(stderr=True)
