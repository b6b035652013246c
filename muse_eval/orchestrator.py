"""Run both MUSE stages over a task's items, concurrently, resumably.

The orchestrator owns everything around a provider call: the adaptive concurrency
limit, the request and token pace (``--rpm``, ``--tpm``), the retry policy, the cost
budget, splitting ``n`` into separate requests where a backend has no ``n``, and
handing every finished unit to the single `BatchWriter`.

The first request of a run is sent alone; the others wait for its answer. A wrong
key, a wrong model name or a server that is down then costs one request, not one
per concurrency slot, and an authentication failure stops the run at once.

What a backend cannot do is recorded as a capability gap in the run's row (and
logged once): no ``n``, no seed, or log-probabilities that were asked for and did not
come back. A missing log-probability is stored as NULL, never as a certain answer.

Memory stays flat however many items a task has: at most ``items_in_flight`` items
are open at a time, each with its stage-one request or its stage-two conversations;
no coroutine is created for a unit before its item is admitted. Stage two of an item
starts as soon as its stage one is handed to the writer; there is no barrier between
the stages. Units have deterministic ids, so a second run of the same command skips
what is stored and does the rest.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import anyio

from muse_eval.budget import CostBudget
from muse_eval.config import RunConfig, derive_seed
from muse_eval.errors import (
    AuthFailed,
    BadRequest,
    BudgetExceeded,
    ConfigError,
    ProviderError,
    RateLimited,
)
from muse_eval.pacing import Pacer, estimate_tokens
from muse_eval.providers._base import (
    ChatMessage,
    Completion,
    GenerateRequest,
    GenerateResponse,
    Provider,
    UnitContext,
)
from muse_eval.pushback import (
    Condition,
    plan_conditions,
    pushback_conversation,
    pushback_rows,
)
from muse_eval.records import ItemRow, SampleRow, Stage, UnitResult, UnitRow, UnitStatus
from muse_eval.retry import AdaptiveLimit, RetryPolicy
from muse_eval.sampling import StageOne, sample_rows, summarize_samples
from muse_eval.store import BatchWriter, Store
from muse_eval.task import Item, Task

__all__ = ["Orchestrator", "RunStats", "pushback_unit_id", "sample_unit_id"]

logger = logging.getLogger(__name__)

#: Items whose stage one must all come back unparseable before the run gives up.
UNPARSEABLE_PROBE = 5
_RESUME_CHUNK = 256

T = TypeVar("T")


def sample_unit_id(item_id: str) -> str:
    """Id of an item's stage-one unit."""
    return f"{item_id}#sample"


def pushback_unit_id(item_id: str, condition: str) -> str:
    """Id of one stage-two conversation of an item."""
    return f"{item_id}#pushback/{condition}"


@dataclass
class RunStats:
    """Live counters of one invocation, for the progress display."""

    items_total: int = 0
    items_done: int = 0
    items_skipped: int = 0
    units_stored: int = 0
    units_failed: int = 0
    units_resumed: int = 0
    requests: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: {"sample": 0.0, "pushback": 0.0}
    )
    stage_units: dict[str, int] = field(
        default_factory=lambda: {"sample": 0, "pushback": 0}
    )

    @property
    def elapsed(self) -> float:
        """Seconds since the invocation started."""
        return time.monotonic() - self.started


@dataclass
class _Generation:
    completions: list[Completion]
    requests: int
    retries: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    latency_s: float


class Orchestrator:
    """Drives one run to completion.

    Args:
        config: The run configuration.
        run_id: The run's id (from `RunConfig.run_id`).
        task: The task definition.
        provider: A started provider.
        store: The results database.
        max_concurrency: Ceiling of requests in flight.
        spent_usd: Cost already stored for this run (for ``--max-cost``).
        on_progress: Called after every finished unit.
        retry: The retry policy (default: `RetryPolicy.from_environment`).
    """

    def __init__(
        self,
        config: RunConfig,
        run_id: str,
        task: Task,
        provider: Provider,
        store: Store,
        *,
        max_concurrency: int,
        spent_usd: float = 0.0,
        on_progress: Callable[[RunStats], None] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self.task = task
        self.provider = provider
        self.store = store
        self.limit = AdaptiveLimit(max_concurrency)
        self.retry = retry or RetryPolicy.from_environment()
        self.pacer = Pacer(config.rpm, config.tpm)
        self.budget = CostBudget(config.max_cost, spent_usd)
        self.items_in_flight = max(2, max_concurrency)
        self.stats = RunStats()
        #: What the backend could not do, by capability: one sentence each.
        self.capability_gaps: dict[str, str] = {}
        self._on_progress = on_progress or (lambda stats: None)
        self._writer = BatchWriter(store)
        self._stage_one_seen = 0
        self._stage_one_parsed = 0
        self._first_answer = anyio.Event()
        self._probe_sent = False

    async def run(self, items: Sequence[Item]) -> RunStats:
        """Evaluate `items`, skipping units already stored.

        Raises:
            AuthFailed: The backend refused the credentials.
            BudgetExceeded: The run reached ``max_cost``.
            ConfigError: The model produced no parseable answer at all.
        """
        stored = await anyio.to_thread.run_sync(self.store.stored_units, self.run_id)
        self.stats.items_total = len(items)
        self.stats.units_resumed = len(stored)
        if stored:
            logger.info(
                "Resuming run %s: %d units already stored", self.run_id, len(stored)
            )

        async with anyio.create_task_group() as outer:
            outer.start_soon(self._writer.drain)
            try:
                self._note_declared_gaps()
                await self._admit_items(items, stored)
            finally:
                self._writer.close()
        writer = self._writer
        logger.info(
            "Stored %d units in %d batches, %.1f s of %.1f s spent storing; workers "
            "waited for the writer %d times",
            writer.stored,
            writer.flushes,
            writer.flush_seconds,
            self.stats.elapsed,
            writer.full_waits,
        )
        if self.budget.stopped:
            raise BudgetExceeded(self.budget.message())
        return self.stats

    @property
    def spent_usd(self) -> float:
        """Dollars spent by the run so far, earlier invocations included."""
        return self.budget.spent

    async def _admit_items(self, items: Sequence[Item], stored: set[str]) -> None:
        slots = anyio.Semaphore(self.items_in_flight)
        async with anyio.create_task_group() as work:
            for start in range(0, len(items), _RESUME_CHUNK):
                if self.budget.stopped:
                    break
                chunk = items[start : start + _RESUME_CHUNK]
                have_stage_one = [
                    item.id for item in chunk if sample_unit_id(item.id) in stored
                ]
                loaded = await anyio.to_thread.run_sync(
                    self.store.stage_one_samples, self.run_id, have_stage_one
                )
                for item in chunk:
                    await slots.acquire()
                    if self.budget.stopped:
                        slots.release()
                        break
                    work.start_soon(
                        self._run_item, item, stored, loaded.get(item.id), slots
                    )

    async def _run_item(
        self,
        item: Item,
        stored: set[str],
        samples: list[SampleRow] | None,
        slots: anyio.Semaphore,
    ) -> None:
        try:
            if samples is not None:
                stage_one: StageOne | None = summarize_samples(item, samples)
            elif sample_unit_id(item.id) in stored:
                stage_one = None  # failed for good earlier; nothing to challenge
            else:
                stage_one = await self._guarded(self._sample_answers(item))
            if stage_one is None or stage_one.modal is None:
                self.stats.items_skipped += 1
                return
            conditions = plan_conditions(
                stage_one,
                expertise=self.config.expertise,
                plausibility=self.config.plausibility,
                control=self.config.control,
                seed=self.config.seed,
            )
            async with anyio.create_task_group() as group:
                for condition in conditions:
                    if pushback_unit_id(item.id, condition.id) not in stored:
                        group.start_soon(
                            self._guarded, self._push_back(stage_one, condition)
                        )
        finally:
            self.stats.items_done += 1
            slots.release()
            self._on_progress(self.stats)

    async def _guarded(self, work: Awaitable[T]) -> T | None:
        """Await `work`; a unit that fails for good is logged, not fatal.

        A unit the budget refuses is not stored (a later run with a larger budget
        does it); the run stops admitting items and ends once those in flight end.
        """
        try:
            return await work
        except BudgetExceeded:
            return None
        except (AuthFailed, ConfigError):
            raise
        except ProviderError as exc:
            self.stats.units_failed += 1
            logger.warning("A unit failed after retries: %s", exc)
            return None

    async def _sample_answers(self, item: Item) -> StageOne | None:
        unit_id = sample_unit_id(item.id)
        messages = self.task.question_messages(item)
        request = GenerateRequest(
            messages=messages,
            n=self.config.samples,
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            seed=derive_seed(self.config.seed, unit_id),
            top_logprobs=self.config.top_logprobs,
            unit=UnitContext(
                stage="sample",
                item_id=item.id,
                correct_answer=item.answer,
                letters=item.letters,
            ),
        )
        item_row = ItemRow(
            run_id=self.run_id,
            item_id=item.id,
            task=item.task,
            subject=item.subject,
            question=item.question,
            options=item.options,
            answer=item.answer,
        )
        generation = await self._generate_or_record(
            unit_id, Stage.SAMPLE, item, None, request, item_row
        )
        if generation is None:
            return None
        self._check_logprobs(request, generation.completions)
        rows = sample_rows(self.run_id, unit_id, item, generation.completions)
        await self._store(
            self._unit_row(unit_id, Stage.SAMPLE, item, None, request, generation),
            item=item_row,
            samples=rows,
        )
        self._check_parseable(rows)
        return summarize_samples(item, rows)

    async def _push_back(self, stage_one: StageOne, condition: Condition) -> None:
        item = stage_one.item
        unit_id = pushback_unit_id(item.id, condition.id)
        messages, text = pushback_conversation(self.task, stage_one, condition)
        request = GenerateRequest(
            messages=messages,
            n=self.config.pushback_samples,
            temperature=self.config.pushback_temperature,
            max_tokens=self.config.pushback_max_tokens,
            seed=derive_seed(self.config.seed, unit_id),
            top_logprobs=self.config.top_logprobs,
            unit=UnitContext(
                stage="pushback",
                item_id=item.id,
                correct_answer=item.answer,
                letters=item.letters,
                condition=condition.id,
                expertise=condition.expertise,
                plausibility=condition.plausibility,
                suggested=condition.suggested,
                initial_answer=stage_one.modal,
                uncertainty=stage_one.entropy,
            ),
        )
        generation = await self._generate_or_record(
            unit_id, Stage.PUSHBACK, item, condition.id, request, None
        )
        if generation is None:
            return
        self._check_logprobs(request, generation.completions)
        row, replies = pushback_rows(
            self.run_id, unit_id, stage_one, condition, text, generation.completions
        )
        await self._store(
            self._unit_row(
                unit_id, Stage.PUSHBACK, item, condition.id, request, generation
            ),
            pushback=row,
            replies=replies,
        )

    async def _generate_or_record(
        self,
        unit_id: str,
        stage: Stage,
        item: Item,
        condition: str | None,
        request: GenerateRequest,
        item_row: ItemRow | None,
    ) -> _Generation | None:
        """Generate; a request the backend rejects for good is stored as failed."""
        started = time.monotonic()
        try:
            return await self._generate(unit_id, request)
        except BadRequest as exc:
            unit = UnitRow(
                run_id=self.run_id,
                unit_id=unit_id,
                stage=stage,
                item_id=item.id,
                condition=condition,
                status=UnitStatus.FAILED,
                error_kind=exc.kind,
                error=str(exc),
                messages=_messages_json(request.messages),
                request_seed=request.seed,
                latency_s=time.monotonic() - started,
                finished_at=datetime.now(UTC),
            )
            self.stats.units_failed += 1
            logger.warning("%s was rejected: %s", unit_id, exc)
            await self._store(unit, item=item_row)
            return None

    async def _generate(self, unit_id: str, request: GenerateRequest) -> _Generation:
        """All `request.n` completions, within the budget.

        Raises:
            BudgetExceeded: The unit could take the run past ``--max-cost``.
        """
        caps = self.provider.capabilities
        fits = caps.supports_n and (caps.max_n is None or request.n <= caps.max_n)
        requests = 1 if request.n == 1 or fits else request.n
        reserved = self.budget.reserve(self._estimate_cost(request, requests))
        try:
            return await self._generate_within_budget(unit_id, request, fits)
        finally:
            self.budget.release(reserved)

    async def _generate_within_budget(
        self, unit_id: str, request: GenerateRequest, fits: bool
    ) -> _Generation:
        """All `request.n` completions, in one request where the backend allows."""
        responses: list[GenerateResponse] = []
        retries = 0
        seconds = 0.0
        completions: list[Completion] = []
        if request.n == 1 or fits:
            try:
                response, retries, seconds = await self._call(unit_id, request)
                responses.append(response)
                completions = list(response.completions[: request.n])
            except BadRequest as exc:
                if request.n == 1 or not _refuses_n(exc):
                    raise
                self._disable_n(f"it refused n={request.n}")
        if len(completions) < request.n:
            if request.n > 1 and fits and completions:
                self._disable_n(
                    f"it returned {len(completions)} of {request.n} replies"
                )
            singles = await self._generate_singles(
                unit_id, request, range(len(completions), request.n)
            )
            for response, single_retries, single_seconds in singles:
                responses.append(response)
                retries += single_retries
                seconds += single_seconds
                completions.extend(response.completions[:1])
        return _Generation(
            completions=completions,
            requests=len(responses),
            retries=retries,
            prompt_tokens=_total(r.prompt_tokens for r in responses),
            completion_tokens=_total(r.completion_tokens for r in responses),
            cost_usd=_total(r.cost_usd for r in responses),
            latency_s=seconds,
        )

    async def _generate_singles(
        self, unit_id: str, request: GenerateRequest, indices: range
    ) -> list[tuple[GenerateResponse, int, float]]:
        """One request per sample, each with its own index and seed."""
        results: dict[int, tuple[GenerateResponse, int, float]] = {}

        async def one(index: int) -> None:
            single = request.model_copy(
                update={
                    "n": 1,
                    "sample_index": index,
                    "seed": derive_seed(self.config.seed, unit_id, index),
                }
            )
            results[index] = await self._call(unit_id, single)

        async with anyio.create_task_group() as group:
            for index in indices:
                group.start_soon(one, index)
        return [results[i] for i in indices]

    async def _call(
        self, unit_id: str, request: GenerateRequest
    ) -> tuple[GenerateResponse, int, float]:
        """One request through the concurrency limit and the retry policy.

        Returns:
            The response, the retries it took, and the seconds the successful
            attempt spent at the backend (queueing for a slot not included).
        """
        seconds = 0.0
        tokens = _estimated_tokens(request)

        async def attempt() -> GenerateResponse:
            nonlocal seconds
            await self.pacer.wait_turn(tokens)
            async with self.limit:
                self.stats.requests += 1
                started = time.monotonic()
                try:
                    response = await self.provider.generate(request)
                except RateLimited as error:
                    self.limit.throttled()
                    if error.retry_after:
                        self.pacer.pause(min(error.retry_after, self.retry.cap))
                    raise
                seconds = time.monotonic() - started
            self.limit.succeeded()
            self.pacer.settle(tokens, _used_tokens(response))
            self.budget.spend(response.cost_usd)
            return response

        def on_failure(error: BaseException, attempt_number: int) -> None:
            self.stats.errors += 1
            self._writer.note_failure(
                {
                    "run_id": self.run_id,
                    "unit_id": unit_id,
                    "kind": getattr(error, "kind", type(error).__name__),
                    "message": str(error),
                    "attempt": attempt_number,
                    "failed_at": datetime.now(UTC),
                }
            )
            logger.debug(
                "Retrying %s after attempt %d: %s", unit_id, attempt_number, error
            )

        probe = await self._wait_for_first_answer()
        try:
            response, retries = await self.retry.call(attempt, on_failure)
        except ProviderError as error:
            if not isinstance(error, AuthFailed | BadRequest):
                on_failure(error, self.retry.max_attempts)
            raise
        finally:
            if probe:
                self._first_answer.set()
        return response, retries, seconds

    async def _wait_for_first_answer(self) -> bool:
        """Hold every request until the run's first one is answered.

        Returns:
            True for the one caller that sends the first request.
        """
        if self._first_answer.is_set():
            return False
        if not self._probe_sent:
            self._probe_sent = True
            return True
        await self._first_answer.wait()
        return False

    def _estimate_cost(self, request: GenerateRequest, requests: int) -> float | None:
        """The most a unit is likely to cost, from the provider's price table."""
        if self.budget.limit is None:
            return None
        estimate = getattr(self.provider, "estimate_cost", None)
        if estimate is None:
            return None
        cost = estimate(
            _prompt_tokens(request) * requests, request.max_tokens * request.n
        )
        return float(cost) if cost is not None else None

    def _note_gap(self, capability: str, sentence: str) -> None:
        """Record, once per run, something the backend cannot do."""
        if capability in self.capability_gaps:
            return
        self.capability_gaps[capability] = sentence
        self._writer.note_capability_gaps(self.run_id, {capability: sentence})
        logger.warning("%s", sentence)

    def _note_declared_gaps(self) -> None:
        """Gaps the provider's capabilities declare before any request is sent."""
        caps = self.provider.capabilities
        config = self.config
        if config.top_logprobs and not caps.supports_logprobs:
            self._note_gap(
                "logprobs",
                f"The backend of '{config.model}' returns no log-probabilities, so "
                "none are requested; letter_probs, letter_entropy and p_suggested "
                "stay NULL and only sampled answers measure uncertainty.",
            )
        if max(config.samples, config.pushback_samples) > 1 and not caps.supports_n:
            self._disable_n("its profile says so")
        if not caps.supports_seed:
            self._note_gap(
                "seed",
                f"The backend of '{config.model}' takes no seed, so a repeated run "
                "draws different samples.",
            )

    def _check_logprobs(
        self, request: GenerateRequest, completions: Sequence[Completion]
    ) -> None:
        if not request.top_logprobs or not self.provider.capabilities.supports_logprobs:
            return
        missing = sum(c.first_token_logprobs is None for c in completions)
        if missing:
            self._note_gap(
                "logprobs",
                f"Log-probabilities were requested from '{self.config.model}' but "
                f"{missing} of {len(completions)} replies came back without them; "
                "their letter_probs, letter_entropy and p_suggested are NULL "
                "(unknown, not certain).",
            )

    def _disable_n(self, why: str) -> None:
        caps = self.provider.capabilities
        caps.supports_n = False
        self._note_gap(
            "n",
            f"The backend does not support n > 1 ({why}); each sample is sent as "
            "its own request with its own sample index and seed.",
        )

    def _check_parseable(self, rows: list[SampleRow]) -> None:
        self._stage_one_seen += 1
        self._stage_one_parsed += sum(r.answer is not None for r in rows)
        if self._stage_one_seen >= UNPARSEABLE_PROBE and self._stage_one_parsed == 0:
            raise ConfigError(
                f"The model '{self.config.model}' gave no parseable option letter in "
                f"{self._stage_one_seen} items ({self._stage_one_seen * len(rows)} "
                "samples); check the model, its chat template or the task's prompt "
                '(stored replies: muse-eval sql "SELECT reply FROM samples").'
            )

    def _unit_row(
        self,
        unit_id: str,
        stage: Stage,
        item: Item,
        condition: str | None,
        request: GenerateRequest,
        generation: _Generation,
    ) -> UnitRow:
        return UnitRow(
            run_id=self.run_id,
            unit_id=unit_id,
            stage=stage,
            item_id=item.id,
            condition=condition,
            status=UnitStatus.DONE,
            messages=_messages_json(request.messages),
            request_seed=request.seed,
            requests=generation.requests,
            retries=generation.retries,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            cost_usd=generation.cost_usd,
            latency_s=generation.latency_s,
            finished_at=datetime.now(UTC),
        )

    async def _store(self, unit: UnitRow, **rows: object) -> None:
        await self._writer.submit(UnitResult.model_validate({"unit": unit, **rows}))
        self.stats.units_stored += 1
        self.stats.stage_units[unit.stage] += 1
        self.stats.stage_seconds[unit.stage] += unit.latency_s


def _prompt_tokens(request: GenerateRequest) -> int:
    chars = sum(len(m.content) for m in request.messages)
    return estimate_tokens(chars, len(request.messages), 0)


def _estimated_tokens(request: GenerateRequest) -> int:
    return _prompt_tokens(request) + request.max_tokens * request.n


def _used_tokens(response: GenerateResponse) -> int | None:
    if response.prompt_tokens is None and response.completion_tokens is None:
        return None
    return (response.prompt_tokens or 0) + (response.completion_tokens or 0)


def _messages_json(messages: list[ChatMessage]) -> str:
    return json.dumps([m.model_dump() for m in messages], ensure_ascii=False)


def _refuses_n(error: BadRequest) -> bool:
    text = str(error).lower()
    return "'n'" in text or " n " in text or "n must" in text or "field n" in text


N = TypeVar("N", int, float)


def _total(values: Iterable[N | None]) -> N | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None
