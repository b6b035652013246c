"""Read a task: its definition (TOML), its items, and the messages built from them.

A task definition names a JSON-lines data file (shipped in a registry package or at a
path), says which fields hold the question, the options, the answer and the subject,
and carries the prompt and pushback templates as data. Item ids are stable and
readable: ``mmlu/abstract_algebra/0`` is the first abstract-algebra row of the file.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import string
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from muse_eval.catalog import list_definitions, load_definition
from muse_eval.errors import TaskError
from muse_eval.parsing import option_letters
from muse_eval.providers._base import ChatMessage

__all__ = ["Item", "Task", "load_task"]


class Item(BaseModel):
    """One multiple-choice question."""

    id: str = Field(description="Stable id: task/subject/index-within-subject.")
    task: str
    subject: str = Field(description="Subject id, words joined by underscores.")
    question: str
    options: list[str]
    answer: str = Field(description="Letter of the correct option.")

    @property
    def letters(self) -> list[str]:
        """Option letters of this item, ``A`` onwards."""
        return option_letters(len(self.options))

    @property
    def subject_name(self) -> str:
        """Subject in words, as used in prompts."""
        return self.subject.replace("_", " ")


class SourceSpec(BaseModel):
    """Where a task's rows come from and which fields mean what."""

    model_config = ConfigDict(extra="forbid")

    package: str | None = Field(None, description="Registry package shipping the file.")
    path: str = Field(description="File inside the package, or a filesystem path.")
    question: str
    options: list[str]
    answer: str
    subject: str
    skip_when_answer_is: list[str] = []


class PromptSpec(BaseModel):
    """Template of the stage-one question."""

    model_config = ConfigDict(extra="forbid")

    user: str
    system: str | None = None


class PushbackSpec(BaseModel):
    """Templates of the stage-two pushback, one per expertise level."""

    model_config = ConfigDict(extra="forbid")

    closing: str
    control: str
    expertise: dict[str, str]


class Task(BaseModel):
    """A task definition as read from its TOML file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    source: SourceSpec
    prompt: PromptSpec
    pushback: PushbackSpec

    def data_path(self) -> Path:
        """Locate the data file without importing the package that ships it."""
        if self.source.package is None:
            return Path(self.source.path).expanduser()
        try:
            dist = importlib.metadata.distribution(self.source.package)
        except importlib.metadata.PackageNotFoundError:
            raise TaskError(
                f"Task '{self.name}' needs the package '{self.source.package}', which "
                "is not installed; run `make setup`."
            ) from None
        return Path(str(dist.locate_file(self.source.path)))

    def iter_items(self) -> Iterator[Item]:
        """Yield every item in file order."""
        path = self.data_path()
        if not path.is_file():
            raise TaskError(f"Task '{self.name}' data file {path} is missing.")
        skipped = {a.upper() for a in self.source.skip_when_answer_is}
        per_subject: dict[str, int] = defaultdict(int)
        with path.open(encoding="utf-8", errors="strict") as handle:
            try:
                for line_no, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    item = self._read_row(path, line_no, line, skipped, per_subject)
                    if item is not None:
                        yield item
            except UnicodeDecodeError:
                raise TaskError(
                    f"{path} is not UTF-8 text; convert the file to UTF-8."
                ) from None

    def _read_row(
        self,
        path: Path,
        line_no: int,
        line: str,
        skipped: set[str],
        per_subject: dict[str, int],
    ) -> Item | None:
        """One data row as an item; None for a row the definition skips."""
        src = self.source
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError("not a JSON object")
            answer = str(row[src.answer]).strip().upper()
            if answer in skipped:
                return None
            subject = str(row[src.subject]).strip().replace(" ", "_")
            options = [str(row[field]) for field in src.options]
            question = str(row[src.question])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise TaskError(
                f"{where} is not a valid row for task '{self.name}' ({reason}); fix "
                "the file or the [source] fields."
            ) from None
        letters = option_letters(len(options))
        if answer not in letters:
            raise TaskError(
                f"{where}: the answer '{answer}' is not one of the option letters "
                f"{', '.join(letters)}; fix the row."
            )
        index = per_subject[subject]
        per_subject[subject] += 1
        return Item(
            id=f"{self.name}/{subject}/{index}",
            task=self.name,
            subject=subject,
            question=question,
            options=options,
            answer=answer,
        )

    def select_items(
        self,
        *,
        subjects: list[str] | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> list[Item]:
        """Items filtered by subject, in a seeded order, at most `limit` of them.

        The order is a fixed shuffle of the whole task, so a larger `limit` extends
        a smaller one and a slice spans many subjects.

        Raises:
            TaskError: A subject is unknown or the filters leave no item.
        """
        items = list(self.iter_items())
        if subjects:
            known = {item.subject for item in items}
            wanted = {s.strip().replace(" ", "_") for s in subjects if s.strip()}
            unknown = sorted(wanted - known)
            if unknown:
                raise TaskError(
                    f"Task '{self.name}' has no subject {', '.join(unknown)}; "
                    "`muse-eval tasks --subjects` lists them."
                )
            items = [item for item in items if item.subject in wanted]
        random.Random(f"{self.name}:{seed}").shuffle(items)
        if limit is not None:
            items = items[:limit]
        if not items:
            raise TaskError(f"The filters leave no item of task '{self.name}'.")
        return items

    def question_messages(self, item: Item) -> list[ChatMessage]:
        """The stage-one conversation: the question with its lettered options."""
        lines = "\n".join(
            f"{letter}. {text}"
            for letter, text in zip(item.letters, item.options, strict=True)
        )
        user = self.prompt.user.format(
            subject=item.subject_name,
            question=item.question,
            options=lines,
            letters=_letter_list(item.letters),
        )
        messages = [ChatMessage(role="user", content=user)]
        if self.prompt.system:
            messages.insert(0, ChatMessage(role="system", content=self.prompt.system))
        return messages

    def pushback_message(
        self, item: Item, expertise: str | None, suggestion: str | None
    ) -> str:
        """The user's pushback; `expertise` None with no suggestion is the control."""
        closing = self.pushback.closing.format(letters=_letter_list(item.letters))
        if suggestion is None or expertise is None:
            return f"{self.pushback.control} {closing}"
        template = self.pushback.expertise[expertise]
        text = template.format(
            subject=item.subject_name,
            letter=suggestion,
            option=item.options[item.letters.index(suggestion)].rstrip("."),
        )
        return f"{text} {closing}"


def _letter_list(letters: list[str]) -> str:
    return ", ".join(letters[:-1]) + f" or {letters[-1]}" if len(letters) > 1 else "A"


def load_task(name: str) -> Task:
    """Load the task definition called `name`.

    Raises:
        ConfigError: No task has that name.
        TaskError: The definition is malformed.
    """
    raw: dict[str, Any] = load_definition("tasks", name)
    path = list_definitions("tasks")[name]
    try:
        task = Task.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TaskError(
            f"{path}: field '{where}': {first['msg']}; fix the file."
        ) from None
    _check_templates(task, path)
    return task


#: Placeholders each kind of template may use.
_PLACEHOLDERS = {
    "prompt.user": {"subject", "question", "options", "letters"},
    "prompt.system": set(),
    "pushback.closing": {"letters"},
    "pushback.control": set(),
    "pushback.expertise": {"subject", "letter", "option"},
}


def _check_templates(task: Task, path: Path) -> None:
    """Refuse a template with an unknown placeholder before any request is sent."""
    if not task.pushback.expertise:
        raise TaskError(f"{path}: [pushback.expertise] needs at least one level.")
    templates = [
        ("prompt.user", "prompt.user", task.prompt.user),
        ("prompt.system", "prompt.system", task.prompt.system or ""),
        ("pushback.closing", "pushback.closing", task.pushback.closing),
        ("pushback.control", "pushback.control", task.pushback.control),
        *(
            (f"pushback.expertise.{level}", "pushback.expertise", text)
            for level, text in task.pushback.expertise.items()
        ),
    ]
    for where, kind, text in templates:
        allowed = _PLACEHOLDERS[kind]
        try:
            fields = {
                f for _, f, _, _ in string.Formatter().parse(text) if f is not None
            }
        except ValueError as exc:
            raise TaskError(
                f"{path}: {where} is not a valid template ({exc})."
            ) from None
        unknown = sorted(fields - allowed)
        if unknown:
            hint = ", ".join(f"{{{a}}}" for a in sorted(allowed)) or "no placeholder"
            raise TaskError(
                f"{path}: {where} uses the unknown placeholder {{{unknown[0]}}}; "
                f"it may use {hint}."
            )
