"""Exact scorers for the task suite, as reward functions `(completions, **kwargs) -> list[float]`.

The same functions serve evaluation (exact match) and RL (rewards), in the TRL convention:
`completions` is a list of model outputs (full completions or bare answers: the answer is always
taken with `tina.core.tags.extract_answer`), and every other argument is a list with one entry per
completion, taken from the records (`task`, `meta`). A score is 1.0 or 0.0.

- arithmetic and code deduction: the answer, as an integer, equals the gold one;
- code abduction: the program run on the answered input gives the required output;
- code induction: the answered program (a `def f(x): ...` or a bare expression in x) reproduces
  every shown and held-out pair.
Programs run under `tina.data.tasks.minipy` only. What this module does not do: format rewards or
penalties (they belong to training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tina.core.tags import extract_answer
from tina.data.tasks.minipy import MiniPyError, run_function


def _as_int(text: str) -> int | None:
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        return None


def score_answer(answer: str, task: str, meta: dict[str, Any]) -> float:
    """1.0 when the extracted `answer` solves the record's task, else 0.0."""
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


def score_record(answer: str, record: dict[str, Any]) -> float:
    """1.0 when `answer` solves a contract record: through its task's scorer when the record
    carries its `task` and `meta` (`score_answer`), else by exact match with the gold answer in
    the record's text (both stripped). Used by on-policy sampling and evaluation alike."""
    meta = record.get("meta")
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
