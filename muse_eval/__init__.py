"""muse-eval: sycophantic versus uncertainty-driven conformity of language models.

The public API, for use from Python rather than the command line::

    from muse_eval import Store, load_task, parse_answer

Names are imported on first use, so ``import muse_eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AuthFailed": "muse_eval.errors",
    "BadRequest": "muse_eval.errors",
    "Capabilities": "muse_eval.providers._base",
    "ChatMessage": "muse_eval.providers._base",
    "Completion": "muse_eval.providers._base",
    "ConfigError": "muse_eval.errors",
    "ContextTooLong": "muse_eval.errors",
    "GenerateRequest": "muse_eval.providers._base",
    "GenerateResponse": "muse_eval.providers._base",
    "Item": "muse_eval.task",
    "MuseError": "muse_eval.errors",
    "Orchestrator": "muse_eval.orchestrator",
    "ParseStatus": "muse_eval.parsing",
    "Provider": "muse_eval.providers._base",
    "ProviderError": "muse_eval.errors",
    "RateLimited": "muse_eval.errors",
    "RunConfig": "muse_eval.config",
    "Store": "muse_eval.store",
    "StoreError": "muse_eval.errors",
    "Task": "muse_eval.task",
    "TaskError": "muse_eval.errors",
    "Transient": "muse_eval.errors",
    "agreement": "muse_eval.uncertainty",
    "answer_entropy": "muse_eval.uncertainty",
    "build_provider": "muse_eval.providers",
    "letter_entropy": "muse_eval.uncertainty",
    "load_profile": "muse_eval.config",
    "load_task": "muse_eval.task",
    "parse_answer": "muse_eval.parsing",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'muse_eval' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
