"""Assemble and execute one evaluation: flags to config, provider, store, report.

The run's row is stored once the provider has started, so that it records what the
provider found out about itself (its capabilities) and where its prices come from.
Every total printed at the end is read back from the database, so a run resumed
after an interruption reports the whole run, not only the last invocation.

Exit status: 0 when the run finished, 3 when ``--max-cost`` stopped it before its
budget ran out (every finished unit is stored; a larger budget resumes it).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from muse_eval.config import (
    EXPERTISE_LEVELS,
    PLAUSIBILITY_LEVELS,
    ProviderProfile,
    RunConfig,
    config_hash,
    load_profile,
)
from muse_eval.errors import BudgetExceeded, ConfigError, ProviderError
from muse_eval.orchestrator import Orchestrator, RunStats
from muse_eval.providers import Provider, build_provider
from muse_eval.records import RunRow
from muse_eval.store import WRITER_SETTINGS, Store
from muse_eval.summary import print_summary, summarize_run
from muse_eval.task import Item, Task, load_task
from muse_eval.terminal import stderr_console

__all__ = ["RunOptions", "run_evaluation"]

logger = logging.getLogger(__name__)

_VERSIONED = ("muse-eval", "httpx", "litellm", "duckdb", "pydantic", "xllamacpp")

#: Exit status of a run that ``--max-cost`` stopped.
EXIT_BUDGET = 3


@dataclass
class RunOptions:
    """What the command line asked for, before profiles fill the gaps."""

    provider: str = "local"
    model: str | None = None
    base_url: str | None = None
    task: str = "mmlu"
    limit: int | None = None
    subjects: list[str] | None = None
    samples: int = 10
    temperature: float = 1.0
    max_tokens: int = 8
    pushback_samples: int = 5
    pushback_temperature: float = 1.0
    pushback_max_tokens: int = 8
    top_logprobs: int = 20
    expertise: list[str] | None = None
    plausibility: list[str] | None = None
    control: bool = True
    seed: int = 0
    max_concurrency: int | None = None
    max_cost: float | None = None
    #: Environment variable holding the API key, instead of the profile's.
    api_key_env: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    #: Simulated provider only: JSON (or a JSON file) laid over the profile's options.
    sim_params: str | None = None
    db: Path = Path("results/muse.duckdb")
    progress: bool = True


def run_evaluation(options: RunOptions, console: Console) -> int:
    """Run MUSE as `options` say, print the summary, and return an exit status."""
    profile = load_profile(options.provider)
    if options.sim_params is not None:
        profile = with_simulation_options(profile, options.sim_params)
    model = options.model or profile.model
    if not model:
        raise ConfigError(f"The '{options.provider}' provider needs --model NAME.")
    task = load_task(options.task)
    _check_levels(task, options)
    items = task.select_items(
        subjects=options.subjects, limit=options.limit, seed=options.seed
    )
    config = RunConfig(
        provider=options.provider,
        model=model,
        task=options.task,
        subjects=options.subjects,
        limit=options.limit,
        samples=options.samples,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        pushback_samples=options.pushback_samples,
        pushback_temperature=options.pushback_temperature,
        pushback_max_tokens=options.pushback_max_tokens,
        top_logprobs=options.top_logprobs,
        expertise=options.expertise or list(EXPERTISE_LEVELS),
        plausibility=options.plausibility or list(PLAUSIBILITY_LEVELS),
        control=options.control,
        seed=options.seed,
        max_concurrency=options.max_concurrency,
        base_url=options.base_url or profile.base_url,
        max_cost=options.max_cost,
        rpm=options.rpm,
        tpm=options.tpm,
    )
    fingerprint = task_fingerprint(task)
    if profile.kind == "simulated":
        # The options are the simulated model itself: new parameters, new run.
        fingerprint = config_hash({"task": fingerprint, "simulation": profile.options})
    run_id = config.run_id(fingerprint)
    concurrency = options.max_concurrency or profile.max_concurrency

    store = Store(options.db, settings=WRITER_SETTINGS)
    store.initialize()
    provider = build_provider(
        profile,
        model=model,
        base_url=config.base_url,
        slot_tokens=slot_tokens(task, items, config),
        slots=max(config.samples, config.pushback_samples) * 2,
        max_concurrency=concurrency,
        api_key_env=options.api_key_env,
    )
    run_row = RunRow(
        run_id=run_id,
        created_at=datetime.now(UTC),
        provider=options.provider,
        model=model,
        task=options.task,
        simulated=profile.kind == "simulated",
        samples=config.samples,
        temperature=config.temperature,
        pushback_samples=config.pushback_samples,
        pushback_temperature=config.pushback_temperature,
        seed=config.seed,
        config=config.model_dump_json(),
        config_hash=config_hash(config.identity(fingerprint)),
        provider_info="{}",
        versions=json.dumps(_versions()),
        git_revision=_git_revision(),
    )
    simulated = (
        " [bold yellow](SIMULATED backend: not a real model)[/]"
        if (profile.kind == "simulated")
        else ""
    )
    console.print(
        f"Run [bold]{run_id}[/]: {len(items)} items of {task.name}, "
        f"{options.provider}/{model}, N={config.samples} at T={config.temperature:g}, "
        f"M={config.pushback_samples} at T={config.pushback_temperature:g}{simulated}"
    )
    stats, stopped = anyio.run(
        _execute,
        config,
        run_row,
        task,
        provider,
        store,
        items,
        concurrency,
        options.progress,
        console,
    )
    # The items and the run's buffers are done with; freeing them before the
    # summary lets its tables reuse their memory instead of adding to the peak.
    del items
    gc.collect()
    _report_stats(console, stats)
    _report_totals(console, store, run_id)
    summaries = summarize_run(store, run_id)
    print_summary(
        console,
        summaries,
        f"MUSE summary: {run_id} ({task.name}, {model}, N={config.samples}, "
        f"T={config.temperature:g}){' SIMULATED' if simulated else ''}",
    )
    console.print(f'Results: {options.db} (muse-eval sql "SELECT * FROM conformity")')
    if stopped is not None:
        stderr_console().print(f"[bold yellow]{stopped}[/]", highlight=False)
        return EXIT_BUDGET
    _, counts = store.query_params(
        "SELECT count(*) FILTER (WHERE status = 'done'), "
        "count(*) FILTER (WHERE status = 'failed') FROM units WHERE run_id = ?",
        [run_id],
    )
    done, failed = counts[0]
    if not done and (failed or stats.units_failed):
        raise ProviderError(
            f"Every unit of run {run_id} failed; see muse-eval sql "
            "\"SELECT unit_id, error FROM units WHERE status = 'failed'\", fix the "
            "cause and run the same command again to retry them."
        )
    return 0


async def _execute(
    config: RunConfig,
    run_row: RunRow,
    task: Task,
    provider: object,
    store: Store,
    items: list[Item],
    concurrency: int,
    progress: bool,
    console: Console,
) -> tuple[RunStats, str | None]:
    """Claim the run, start the provider, record the run, and run it.

    Returns:
        The invocation's counters, and the budget's message if ``--max-cost``
        stopped the run.
    """
    assert isinstance(provider, Provider)
    run_id = run_row.run_id
    await anyio.to_thread.run_sync(store.acquire_lease, run_id)
    try:
        return await _start_and_run(
            config, run_row, task, provider, store, items, concurrency, progress
        )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store.release_lease, run_id)


async def _start_and_run(
    config: RunConfig,
    run_row: RunRow,
    task: Task,
    provider: Provider,
    store: Store,
    items: list[Item],
    concurrency: int,
    progress: bool,
) -> tuple[RunStats, str | None]:
    run_id = run_row.run_id
    spent = _spent_usd(store, run_id)
    await provider.start()
    try:
        _check_pricing(provider, config)
        await anyio.to_thread.run_sync(
            store.record_run,
            run_row.model_copy(
                update={
                    "provider_info": _provider_info(provider),
                    "price_table": _price_table(provider),
                }
            ),
        )
        with _progress(stderr_console(), enabled=progress) as bar:
            job = bar.add_task(
                "items", total=len(items), requests=0, errors=0, rate=0.0
            )

            def update(stats: RunStats) -> None:
                bar.update(
                    job,
                    completed=stats.items_done,
                    requests=stats.requests,
                    errors=stats.errors,
                    rate=stats.requests / max(stats.elapsed, 1e-9),
                )

            orchestrator = Orchestrator(
                config,
                run_id,
                task,
                provider,
                store,
                max_concurrency=concurrency,
                spent_usd=spent,
                on_progress=update,
            )
            try:
                return await orchestrator.run(items), None
            except BudgetExceeded as stop:
                return orchestrator.stats, str(stop)
    finally:
        with anyio.CancelScope(shield=True):
            await provider.aclose()


def _progress(console: Console, *, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed}/{task.total} items"),
        TextColumn("{task.fields[requests]} requests ({task.fields[rate]:.1f}/s)"),
        TextColumn("{task.fields[errors]} errors"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def _report_stats(console: Console, stats: RunStats) -> None:
    per_stage = []
    for stage, units in stats.stage_units.items():
        if units:
            per_stage.append(
                f"{stage}: {units} units, "
                f"{stats.stage_seconds[stage] / units:.2f} s each"
            )
    console.print(
        f"This invocation: {stats.units_stored} units stored "
        f"({stats.units_resumed} were stored before), {stats.units_failed} failed, "
        f"{stats.requests} requests, {stats.errors} retried errors in "
        f"{stats.elapsed:.1f} s ({stats.requests / max(stats.elapsed, 1e-9):.2f} "
        f"requests/s). " + "; ".join(per_stage)
    )


_TOTALS_SQL = """
SELECT stage, count(*) AS units,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       sum(requests) AS requests, sum(retries) AS retries,
       sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd, sum(latency_s) AS seconds
FROM units WHERE run_id = ? GROUP BY stage ORDER BY stage DESC
"""


def run_totals(store: Store, run_id: str) -> dict[str, dict[str, float | int | None]]:
    """Per-stage totals of a run, from its stored units.

    Returns:
        Stage to ``units``, ``failed``, ``requests``, ``retries``,
        ``prompt_tokens``, ``completion_tokens``, ``cost_usd`` and ``seconds``
        (summed backend time of the units).
    """
    names, rows = store.query_params(_TOTALS_SQL, [run_id])
    return {row[0]: dict(zip(names[1:], row[1:], strict=True)) for row in rows}


def _report_totals(console: Console, store: Store, run_id: str) -> None:
    totals = run_totals(store, run_id)
    if not totals:
        return
    parts = []
    for stage, t in totals.items():
        units = int(t["units"] or 0)
        seconds = float(t["seconds"] or 0.0)
        parts.append(
            f"{stage}: {units} units ({t['failed']} failed), {t['requests']} "
            f"requests, {t['retries']} retries, {seconds / max(units, 1):.2f} s each"
        )
    prompt = sum(int(t["prompt_tokens"] or 0) for t in totals.values())
    completion = sum(int(t["completion_tokens"] or 0) for t in totals.values())
    costs = [t["cost_usd"] for t in totals.values() if t["cost_usd"] is not None]
    cost = f"${sum(float(c) for c in costs):.4f}" if costs else "no price known"
    console.print(
        "Whole run (from the database): "
        + "; ".join(parts)
        + f"; {prompt} prompt and {completion} completion tokens; cost {cost}."
    )


def _check_pricing(provider: object, config: RunConfig) -> None:
    """Make sure ``--max-cost`` can be enforced for this provider."""
    if config.max_cost is None:
        return
    estimate = getattr(provider, "estimate_cost", None)
    if estimate is None:
        logger.warning(
            "The '%s' provider reports no prices, so --max-cost has no effect.",
            config.provider,
        )
        return
    if estimate(1000, 100) is None:
        raise ConfigError(
            f"The price of '{config.model}' is not in litellm's bundled price "
            "table, so --max-cost cannot be enforced; drop --max-cost or use a "
            "priced model name."
        )


def _provider_info(provider: Provider) -> str:
    """The provider's description plus the capabilities it started with."""
    info = {**provider.describe(), "capabilities": provider.capabilities.model_dump()}
    return json.dumps(info, default=str)


def _price_table(provider: object) -> str | None:
    if getattr(provider, "kind", None) != "litellm":
        return None
    from muse_eval.providers.litellm import litellm_price_table_info

    return json.dumps(litellm_price_table_info())


def _check_levels(task: Task, options: RunOptions) -> None:
    unknown = set(options.expertise or []) - set(task.pushback.expertise)
    if unknown:
        raise ConfigError(
            f"Task '{task.name}' has no expertise level {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(task.pushback.expertise)}."
        )
    unknown = set(options.plausibility or []) - set(PLAUSIBILITY_LEVELS)
    if unknown:
        raise ConfigError(
            f"Unknown plausibility level {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(PLAUSIBILITY_LEVELS)}."
        )


def with_simulation_options(profile: ProviderProfile, text: str) -> ProviderProfile:
    """The profile with `text` (JSON, or a file holding JSON) over its options.

    Tables inside the options (such as ``conformity``) are merged key by key, so
    one condition can be changed without restating the others.

    Raises:
        ConfigError: The profile is not simulated or `text` is not a JSON object.
    """
    if profile.kind != "simulated":
        raise ConfigError(
            f"--sim-params applies to the simulated provider only, not to "
            f"'{profile.name}' ({profile.kind}); use --provider simulated."
        )
    source = Path(text).expanduser()
    try:
        raw = source.read_text(encoding="utf-8") if source.is_file() else text
        given = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--sim-params is neither JSON nor a readable JSON file ({exc}); pass "
            "e.g. '{\"certain_share\": 0.5}'."
        ) from None
    if not isinstance(given, dict):
        raise ConfigError("--sim-params must be a JSON object of option names.")
    merged = dict(profile.options)
    for key, value in given.items():
        old = merged.get(key)
        both_tables = isinstance(old, dict) and isinstance(value, dict)
        merged[key] = {**old, **value} if both_tables else value  # type: ignore[dict-item]
    return profile.model_copy(update={"options": merged})


def task_fingerprint(task: Task) -> str:
    """Hash of the task's prompts and source, so edited templates make a new run."""
    data = task.model_dump(include={"name", "source", "prompt", "pushback"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def slot_tokens(task: Task, items: list[Item], config: RunConfig) -> int:
    """Tokens one engine slot needs for the run's longest conversation.

    Counted without a tokenizer, at a conservative 2.5 characters per token, plus
    the replies and room for the chat template.
    """
    longest = max(
        sum(len(m.content) for m in task.question_messages(item)) for item in items
    )
    pushback = max(len(text) for text in task.pushback.expertise.values()) + 200
    chars = longest + pushback + 4 * config.max_tokens
    tokens = int(chars / 2.5) + config.max_tokens + config.pushback_max_tokens + 128
    return max(512, -(-tokens // 256) * 256)


def _spent_usd(store: Store, run_id: str) -> float:
    _, rows = store.query_params(
        "SELECT coalesce(sum(cost_usd), 0) FROM units WHERE run_id = ?", [run_id]
    )
    return float(rows[0][0])


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        status = subprocess.run(
            # No optional locks: reading the status must not rewrite the index.
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = result.stdout.strip() if result.returncode == 0 else ""
    if not revision:
        return None
    # Uncommitted changes to tracked files mean the revision alone does not
    # reproduce the code that ran.
    return f"{revision}+dirty" if status.stdout.strip() else revision
