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
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

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

    package: str | None = Field(None, description="Registry package shipping the file.")
    path: str = Field(description="File inside the package, or a filesystem path.")
    question: str
    options: list[str]
    answer: str
    subject: str
    skip_when_answer_is: list[str] = []


class PromptSpec(BaseModel):
    """Template of the stage-one question."""

    user: str
    system: str | None = None


class PushbackSpec(BaseModel):
    """Templates of the stage-two pushback, one per expertise level."""

    closing: str
    control: str
    expertise: dict[str, str]


class Task(BaseModel):
    """A task definition as read from its TOML file."""

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
        src = self.source
        per_subject: dict[str, int] = defaultdict(int)
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    answer = str(row[src.answer]).strip().upper()
                    if answer in {a.upper() for a in src.skip_when_answer_is}:
                        continue
                    subject = str(row[src.subject]).strip().replace(" ", "_")
                    options = [str(row[field]) for field in src.options]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise TaskError(
                        f"{path}:{line_no} is not a valid row for task "
                        f"'{self.name}' ({exc!r}); fix the file or the [source] fields."
                    ) from None
                index = per_subject[subject]
                per_subject[subject] += 1
                yield Item(
                    id=f"{self.name}/{subject}/{index}",
                    task=self.name,
                    subject=subject,
                    question=str(row[src.question]),
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
    try:
        return Task.model_validate(raw)
    except ValidationError as exc:
        path = list_definitions("tasks")[name]
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TaskError(
            f"{path}: field '{where}': {first['msg']}; fix the file."
        ) from None
