"""Question files: a user's own questions and answers, one JSON object a line, for any model.

What it does: `read_questions(path)` checks a whole file before anything else runs (every bad
line is a `QuestionFileError` naming file, line and field: bad JSON, a field of the wrong type
or unknown, a missing `question` or `answer`, an unknown scorer, a duplicate id, a `choice`
answer that names no option, a `code` question without `input`) and returns one contract
record per line: `text` = the question, an empty think and the answer (so every tool that
reads contract records reads these), `meta` = the question, the answer and how to score it
(`tina.data.tasks.scoring.score_question` reads it), `task`, `difficulty_bin`, `split`.
A line with a `text` field is a contract record (traces included) and is checked as one
(`tina.data.contract`), its own task scorer kept. `split_of` gives a line without `split` its
split from a hash of the question (`SPLIT_FRACTIONS`), so the split never depends on the
file's order or on the machine. The fields: `tina/schemas/question.schema.json`, docs/data.md.

What it does not do: score answers (`tina.data.tasks.scoring`), run a model, or decide how
many questions a stage uses (`tina.recipe`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from tina.core.atomic import atomic_write
from tina.core.checks import parse_strict_json, schema_problems
from tina.data.contract import ContractError, validate_record
from tina.data.tasks.scoring import choice_letter, parse_number

SCHEMA = "question.schema.json"
DEFAULT_TASK = "questions"  #: the task label of a question without one
SPLITS = ("train", "dev", "test")
#: the share of each split for lines without `split` (by the question's hash)
SPLIT_FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}
_NUMBERISH = re.compile(r"^[$€£]?[-+]?[\d.,]+(?:[eE][-+]?\d+)?%?$")
_REQUIRED = re.compile(r"^'(\w+)' is a required property$")


class QuestionFileError(ContractError):
    """A bad line of a question file: `"{path}:{line}: {field}: {detail}"`."""


def split_of(question: str) -> str:
    """The split of a question without one: its SHA-256 read as a number in [0, 1), cut by
    `SPLIT_FRACTIONS` in the order train, dev, test."""
    point = int.from_bytes(hashlib.sha256(question.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += SPLIT_FRACTIONS[name]
        if point < edge:
            return name
    return SPLITS[-1]


def reads_as_number(text: str) -> bool:
    """Whether `text` is a plain number (`82`, `-3.5`, `1,000`, `$82`): the numeric scorer's
    default, and what a numeric question's answer must be."""
    number = parse_number(text)
    return number is not None and _NUMBERISH.match(text.strip()) is not None


def _question_record(value: dict[str, Any], where: str, line: int) -> dict[str, Any]:
    """The contract record of one checked question line."""
    answer = value["answer"]
    answer_text = answer if isinstance(answer, str) else json.dumps(answer)
    scorer = value.get("scorer") or ("numeric" if reads_as_number(answer_text) else "exact")
    choices = value.get("choices")
    if scorer == "numeric" and not reads_as_number(answer_text):
        raise QuestionFileError(where, line, "answer", f"{answer_text!r} is not a number")
    if scorer == "choice" and choice_letter(answer_text, choices) is None:
        raise QuestionFileError(
            where, line, "answer", f"{answer_text!r} names no option (a letter or a choice's text)"
        )
    if scorer == "code" and "input" not in value:
        raise QuestionFileError(where, line, "input", "a code question needs the input of f")
    question = value["question"]
    meta: dict[str, Any] = {"question": question, "answer": answer_text, "scorer": scorer}
    if choices is not None:
        meta["choices"] = list(choices)
    if "input" in value:
        meta["input"] = value["input"]
    record: dict[str, Any] = {
        "id": value.get("id", f"{where}:{line}"),
        "text": f"{question}\n<think></think><answer>{answer_text}</answer>",
        "task": value.get("task", DEFAULT_TASK),
        "split": value.get("split") or split_of(question),
        "meta": meta,
    }
    if "difficulty" in value:
        record["difficulty_bin"] = value["difficulty"]
    return record


def _contract_line(value: dict[str, Any], where: str, line: int) -> dict[str, Any]:
    """A contract record line of a question file, checked as one; its split as a question's."""
    problems = validate_record(value)
    if problems:
        raise QuestionFileError(where, line, "text", problems[0])
    split = value.get("split")
    if split is not None and split not in SPLITS:
        raise QuestionFileError(where, line, "split", f"{split!r} is not one of {list(SPLITS)}")
    key = question_of(value)
    return {**value, "id": value.get("id", f"{where}:{line}"), "split": split or split_of(key)}


def question_of(record: dict[str, Any]) -> str:
    """A record's question: its `meta.question`, else its whole text (what the split hashes)."""
    meta = record.get("meta")
    question = meta.get("question") if isinstance(meta, dict) else None
    return question if isinstance(question, str) else str(record["text"])


#: suite tasks whose answer is a value a question line can hold (abduction and induction are
#: checked by running the answered program against the record's own: contract records)
VALUE_TASKS = ("add", "sub", "mul", "code_deduction")


def question_line(record: dict[str, Any]) -> dict[str, Any]:
    """A task-suite record as a question-file line: id, question, answer, task, difficulty (no
    trace, no split: a file of them is split by the questions' hash)."""
    task = str(record["task"])
    if task not in VALUE_TASKS:
        raise ValueError(f"{task}: its answers are programs or inputs; use contract records")
    meta = record["meta"]
    line = {"id": record["id"], "question": meta["question"], "answer": meta["answer"]}
    line["task"] = task
    if "difficulty_bin" in record:
        line["difficulty"] = record["difficulty_bin"]
    return line


def write_questions(path: str | Path, lines: list[dict[str, Any]]) -> int:
    """Write question lines atomically (each checked as `read_questions` would); the count."""
    for number, line in enumerate(lines, start=1):
        problems = schema_problems(str(path), line, SCHEMA)
        if problems:
            raise QuestionFileError(str(path), number, problems[0].field, problems[0].message)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return len(lines)


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a question file (see module docstring); the first bad line, blank lines
    aside, is a `QuestionFileError`; a file with no question at all is one too."""
    where = str(path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QuestionFileError(where, 0, "(file)", f"cannot read: {exc}") from None
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            value = parse_strict_json(text)
        except ValueError as exc:
            raise QuestionFileError(where, number, "(json)", str(exc)) from None
        if not isinstance(value, dict):
            raise QuestionFileError(where, number, "(root)", "expected a JSON object")
        if "text" in value:
            record = _contract_line(value, where, number)
        else:
            problems = schema_problems(where, value, SCHEMA)
            if problems:
                first = problems[0]
                missing = _REQUIRED.match(first.message)
                field = missing.group(1) if missing else first.field
                raise QuestionFileError(where, number, field, first.message)
            record = _question_record(value, where, number)
        rid = str(record["id"])
        if rid in seen:
            raise QuestionFileError(
                where, number, "id", f"{rid!r} is already the id of line {seen[rid]}"
            )
        seen[rid] = number
        records.append(record)
    if not records:
        raise QuestionFileError(where, 0, "(file)", "holds no question")
    return records
