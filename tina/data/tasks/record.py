"""Build one contract record from a task instance: prompt, trace steps, answer, labels.

What it does: joins concise trace steps into the think text, appends the *verbose* style's
redundant re-checks (0–4 of them, chosen by the caller's RNG: they restate what the trace already
established and change nothing, the way R1-distilled models overthink), and fills the contract's
label fields (`plan_class`, `target_budget` = think tokens of the concise trace, `difficulty_bin`).

What it does not do: generate task instances (see `arithmetic.py`, `code.py`) or check the
contract (see `tina.data.contract`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

STYLES: tuple[str, ...] = ("concise", "verbose")
MAX_RECHECKS = 4
#: Probability of 0, 1, 2, 3, 4 re-checks in the verbose style. Skewed high, with the re-check
#: lines in a fixed order, so that a model trained on it overthinks even when decoding greedily
#: (after j re-checks, stopping is always less likely than going on, until the fourth).
RECHECK_WEIGHTS: tuple[float, ...] = (0.1, 0.1, 0.15, 0.25, 0.4)


def byte_token_count(text: str) -> int:
    """Token count under Tina's embedded byte-level tokenizer: one token per UTF-8 byte."""
    return len(text.encode("utf-8"))


def prompt_text(question: str) -> str:
    """The prompt as the embedded model's chat template renders it (question, newline)."""
    return question + "\n"


def build_record(
    *,
    rng: random.Random,
    task: str,
    question: str,
    steps: Sequence[str],
    answer: str,
    rechecks: Sequence[str],
    style: str,
    plan_class: str,
    difficulty: int,
    meta: dict[str, Any],
    count_tokens: Callable[[str], int] = byte_token_count,
) -> dict[str, Any]:
    """One contract record. `steps` is the concise trace (may be empty: no thinking needed);
    `rechecks` are the task's re-check lines, of which the verbose style appends the first
    0–4 (cycling), the count drawn with `RECHECK_WEIGHTS`."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    concise = "".join(steps)
    think = concise
    if style == "verbose" and steps:
        k = rng.choices(range(MAX_RECHECKS + 1), RECHECK_WEIGHTS)[0]
        think += "".join(rechecks[i % len(rechecks)] for i in range(k))
    text = (
        prompt_text(question)
        + f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    )
    return {
        "text": text,
        "task": task,
        "style": style,
        "difficulty_bin": difficulty,
        "plan_class": plan_class,
        "target_budget": count_tokens(concise),
        "think_tokens_used": count_tokens(think),
        "meta": {"question": question, "answer": answer, **meta},
    }
