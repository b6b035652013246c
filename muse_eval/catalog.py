"""Find the declarative files users plug in: provider profiles and task definitions.

Both are small TOML files. The built-in ones live in the repository's top-level
``providers/`` and ``tasks/`` folders; a wheel carries copies of them inside the
package (``muse_eval/_builtin``), so a plain ``pip install`` finds them too. Users add
their own folders with ``MUSE_PROVIDERS_PATH`` and ``MUSE_TASKS_PATH`` (lists
separated like ``PATH``); a user file with the same name shadows a built-in one.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from muse_eval.errors import ConfigError

__all__ = ["Kind", "definition_dirs", "list_definitions", "load_definition"]

Kind = Literal["providers", "tasks"]

_ENV = {"providers": "MUSE_PROVIDERS_PATH", "tasks": "MUSE_TASKS_PATH"}
_PACKAGE = Path(__file__).resolve().parent


def definition_dirs(kind: Kind) -> list[Path]:
    """Folders searched for `kind` files, highest priority first."""
    user = [Path(p) for p in os.environ.get(_ENV[kind], "").split(os.pathsep) if p]
    built_in = [_PACKAGE / "_builtin" / kind, _PACKAGE.parent / kind]
    return user + [d for d in built_in if d.is_dir()][:1]


def list_definitions(kind: Kind) -> dict[str, Path]:
    """Map every known name of `kind` to its file."""
    found: dict[str, Path] = {}
    for folder in reversed(definition_dirs(kind)):
        for path in sorted(folder.glob("*.toml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


def load_definition(kind: Kind, name: str) -> dict[str, Any]:
    """Read the TOML file named `name` of `kind`.

    Raises:
        ConfigError: The name is unknown or the file is not valid TOML.
    """
    known = list_definitions(kind)
    if name not in known:
        noun = "provider" if kind == "providers" else "task"
        choices = ", ".join(known) or "none"
        raise ConfigError(
            f"Unknown {noun} '{name}'; choose one of: {choices} "
            f"(or add {name}.toml to a folder in {_ENV[kind]})."
        )
    path = known[name]
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix the file.") from exc
