"""Exact scorers for the task suite, as reward functions `(completions, **kwargs) -> list[float]`.

The same functions serve evaluation (exact match) and RL (rewards), in the TRL convention:
`completions` is a list of model outputs (full completions or bare answers: the answer is always
taken with `tina.core.tags.extract_answer`), and every other argument is a list with one entry per
completion, taken from the records (`task`, `meta`). A score is 1.0 or 0.0.

- arithmetic and code deduction: the answer, as an integer, equals the gold one;
- code abduction: the program run on the answered input gives the required output;
- out-of-scope prompts: the answer declines (`tina.data.tasks.out_of_scope.is_refusal`);
- code induction: the answered program (a `def f(x): ...` or a bare expression in x) reproduces
  every shown and held-out pair.
Programs of the suite run under `tina.data.tasks.minipy` only.

The questions of a question file (`tina.data.questions`) name their scorer (`score_question`):
- `exact`: equal after stripping, case folding and collapsing spaces (a final period dropped);
- `numeric`: the number the answer states (`parse_number`: the whole answer when it is one,
  `$`/`€`/`£` signs, thousands commas and a trailing `%` or period ignored, else the last
  number in it) equals the gold one to a relative 1e-9: `82`, `82.0`, `$82`, `The sum is 82.`
  all score on 82, as `1,000` on 1000;
- `choice`: the option letter the answer names (`A`, `(b)`, `C)`, `Answer: D`, or an option's
  text) is the gold one;
- `code`: the answer is a program defining `f` (or an expression in `x`), run in
  `tina.data.sandbox` on the question's `input`; it scores when it returns the gold value (the
  answer read as a Python literal). What this module does not do: format rewards or
penalties (they belong to training).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from tina.core.tags import extract_answer
from tina.data.sandbox import encode_value, read_value, run_program
from tina.data.tasks.minipy import MiniPyError, run_function
from tina.data.tasks.out_of_scope import TASK as OUT_OF_SCOPE
from tina.data.tasks.out_of_scope import is_refusal


def _as_int(text: str) -> int | None:
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        return None


def score_answer(answer: str, task: str, meta: dict[str, Any]) -> float:
    """1.0 when the extracted `answer` solves the record's task, else 0.0."""
    if task == OUT_OF_SCOPE:
        return float(is_refusal(answer))
    if task == "code_abduction":
        x = _as_int(answer)
        if x is None:
            return 0.0
        try:
            return float(run_function(meta["program"], x) == meta["output"])
        except MiniPyError:
            return 0.0
    if task == "code_induction":
        source = answer if answer.lstrip().startswith("def ") else f"def f(x): return {answer}"
        try:
            return float(
                all(run_function(source, x) == y for x, y in [*meta["pairs"], *meta["heldout"]])
            )
        except MiniPyError:
            return 0.0
    gold = _as_int(str(meta["answer"]))
    return float(gold is not None and _as_int(answer) == gold)


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_CURRENCY = "$€£"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER = re.compile(r"^(?:answer\s*(?:is)?\s*:?\s*)?\(?([A-Za-z])\)?[.):]?(?:\s.*)?$", re.I | re.S)


def parse_number(text: str) -> Decimal | None:
    """The number an answer states (see module docstring: `numeric`), or None."""
    cleaned = text.strip().rstrip(".").strip()
    cleaned = cleaned.lstrip(_CURRENCY).rstrip("%").replace(",", "").strip()
    for candidate in (cleaned, *reversed(_NUMBER.findall(text))):
        try:
            value = Decimal(candidate.replace(",", ""))
        except (InvalidOperation, ValueError):
            continue
        if value.is_finite():
            return value
    return None


def choice_letter(answer: str, choices: Sequence[str] | None) -> str | None:
    """The option letter `answer` names (see module docstring: `choice`), or None."""
    text = answer.strip()
    for i, option in enumerate(choices or []):
        if " ".join(option.split()).casefold() == " ".join(text.split()).casefold():
            return LETTERS[i]
    match = _LETTER.match(text)
    if match is None:
        return None
    letter = match.group(1).upper()
    return letter if letter in LETTERS[: len(choices) if choices else 26] else None


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold().removesuffix(".")


def _code_value(answer: str, argument: Any) -> tuple[bool, Any]:
    """(ran, value) of the answered program's `f(argument)` in the sandbox."""
    source = answer if "def f" in answer else f"def f(x):\n    return {answer.strip()}\n"
    verdict = run_program(source, "f", [argument])
    return verdict.ok, verdict.value


def score_question(answer: str, meta: dict[str, Any]) -> float:
    """1.0 when `answer` is right for a question-file question (`meta`: its `answer`, `scorer`,
    `choices`, `input`; see module docstring), else 0.0."""
    gold, scorer = str(meta["answer"]), meta.get("scorer", "exact")
    if scorer == "numeric":
        mine, theirs = parse_number(answer), parse_number(gold)
        if mine is None or theirs is None:
            return 0.0
        return float(math.isclose(float(mine), float(theirs), rel_tol=1e-9, abs_tol=0.0))
    if scorer == "choice":
        letter = choice_letter(answer, meta.get("choices"))
        return float(letter is not None and letter == choice_letter(gold, meta.get("choices")))
    if scorer == "code":
        ran, value = _code_value(answer, meta.get("input"))
        return float(ran and encode_value(value) == encode_value(read_value(gold)))
    if scorer == "exact":
        return float(_plain(answer) == _plain(gold))
    raise ValueError(f"unknown scorer {scorer!r}")


def score_record(answer: str, record: dict[str, Any]) -> float:
    """1.0 when `answer` solves a contract record: by its question's scorer when `meta` names
    one (a question file's record), through its task's scorer when the record
    carries its `task` and `meta` (`score_answer`), else by exact match with the gold answer in
    the record's text (both stripped). Used by on-policy sampling and evaluation alike."""
    meta = record.get("meta")
    if isinstance(meta, dict) and "scorer" in meta:
        return score_question(answer, meta)
    if isinstance(meta, dict) and record.get("task"):
        try:
            return score_answer(answer, str(record["task"]), meta)
        except KeyError:
            pass  # a task of another suite: fall back to the gold text
    return float(answer.strip() == extract_answer(str(record["text"])).strip())


def task_reward(
    completions: Sequence[str], task: Sequence[str], meta: Sequence[dict[str, Any]], **kwargs: Any
) -> list[float]:
    """Correctness reward for each completion of any suite task (see module docstring)."""
    if not len(completions) == len(task) == len(meta):
        raise ValueError("completions, task and meta must have the same length")
    return [
        score_answer(extract_answer(c), t, m)
        for c, t, m in zip(completions, task, meta, strict=True)
    ]
