"""Tina's synthetic task suite: seeded generators of contract records, with exact scorers.

`TASKS` maps each task name to its generator and its difficulty range; `generate_records`
draws n records deterministically from a seed. Scorers live in `tina.data.tasks.scoring`.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tina.data.tasks.arithmetic import generate_arithmetic
from tina.data.tasks.code import generate_code
from tina.data.tasks.out_of_scope import TASK as OUT_OF_SCOPE
from tina.data.tasks.out_of_scope import generate_out_of_scope
from tina.data.tasks.phrasing import PHRASINGS
from tina.data.tasks.record import byte_token_count


@dataclass(frozen=True)
class TaskSpec:
    """A task of the suite."""

    generate: Callable[..., dict[str, Any]]  #: (task, rng, difficulty, style, **kw) -> record
    difficulties: tuple[int, ...]  #: the difficulty levels the generator accepts


TASKS: dict[str, TaskSpec] = {
    "add": TaskSpec(generate_arithmetic, (1, 2, 3, 4, 5)),
    "sub": TaskSpec(generate_arithmetic, (1, 2, 3, 4, 5)),
    "mul": TaskSpec(generate_arithmetic, (1, 2, 3, 4)),
    "mul2": TaskSpec(generate_arithmetic, (1, 2, 3)),
    "code_deduction": TaskSpec(generate_code, (1, 2, 3, 4)),
    "code_abduction": TaskSpec(generate_code, (1, 2, 3)),
    "code_induction": TaskSpec(generate_code, (1, 2)),
    OUT_OF_SCOPE: TaskSpec(generate_out_of_scope, (1,)),
}

#: What `--task all` means: every task with an answer to compute (not the out-of-scope prompts).
ALL_TASKS: tuple[str, ...] = tuple(t for t in TASKS if t != OUT_OF_SCOPE)

#: The tasks whose questions come in people's phrasings (`tina.data.tasks.phrasing`).
ARITHMETIC: tuple[str, ...] = ("add", "sub", "mul", "mul2")


def task_seed(task: str, seed: int) -> int:
    """A per-task seed that is stable across processes (never `hash(str)`)."""
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % (2**32)


def generate_records(
    task: str,
    n: int,
    seed: int = 0,
    style: str = "concise",
    difficulties: Sequence[int] | None = None,
    count_tokens: Callable[[str], int] = byte_token_count,
    phrasing: str = "canonical",
) -> list[dict[str, Any]]:
    """n records of `task`, difficulties cycled evenly, identical for identical arguments.

    Each record gets an `id` of the form `<task>-<seed>-<index>`. `phrasing` (arithmetic tasks
    only) picks the question forms: `canonical`, `varied` or `heldout` (`phrasing.PHRASINGS`).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    spec = TASKS[task]
    levels = tuple(difficulties) if difficulties else spec.difficulties
    bad = [d for d in levels if d not in spec.difficulties]
    if bad:
        raise ValueError(f"task {task!r} has no difficulty {bad}; it has {spec.difficulties}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}; expected one of {PHRASINGS}")
    options: dict[str, Any] = {"count_tokens": count_tokens}
    if phrasing != "canonical":
        if task not in ARITHMETIC:
            raise ValueError(f"phrasing {phrasing!r} is for the arithmetic tasks {ARITHMETIC}")
        options["phrasing"] = phrasing
    rng = random.Random(task_seed(task, seed))
    records = []
    for i in range(n):
        record = spec.generate(task, rng, levels[i % len(levels)], style, **options)
        records.append({"id": f"{task}-{seed}-{i}", **record})
    return records
