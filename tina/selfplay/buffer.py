"""A bounded buffer of self-play tasks, deduplicated, seeded from the code-task suite.

What it does: keeps at most `BufferConfig.capacity` tasks of any mode. When full, `fifo` drops
the oldest task and `reservoir` keeps a uniform sample of every distinct task ever added
(Algorithm R, with the buffer's own seeded RNG). A task whose key (`task_key`: its mode, its
program normalized by `ast.dump`, so layout and comments do not matter, and the reprs of its
inputs) matches one in the buffer is not added again; a task that was dropped may come back.
`seed_buffer` fills it with the suite's code tasks (`tina.data.tasks.generate_records`).

What it does not do: check tasks (the proposals were checked by
`tina.selfplay.tasks.check_proposals`, the suite's tasks by their generators), or weigh tasks
by learnability; sampling is uniform.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from tina.data.sandbox import normalized_program
from tina.data.tasks import generate_records
from tina.selfplay.tasks import Abduction, Deduction, Induction, Task, mode_of, task_from_record

POLICIES: tuple[str, ...] = ("fifo", "reservoir")
SUITE_TASKS = {
    "deduction": "code_deduction",
    "abduction": "code_abduction",
    "induction": "code_induction",
}


@dataclass(frozen=True)
class BufferConfig:
    """Size and replacement policy of a task buffer."""

    capacity: int = 4096  #: the most tasks kept at once
    policy: str = "fifo"  #: "fifo" (drop the oldest) or "reservoir" (uniform over all added)
    seed: int = 0  #: seeds the reservoir's replacement draws

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")


def task_key(task: Task) -> str:
    """The deduplication key: mode, normalized program, and the inputs' reprs."""
    try:
        program = normalized_program(task.program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        program = task.program
    if isinstance(task, (Deduction, Abduction)):
        inputs = repr(task.args)
    else:
        assert isinstance(task, Induction)
        inputs = repr([args for args, _ in (*task.shown, *task.heldout)])
    return f"{mode_of(task)}\n{program}\n{inputs}"


class TaskBuffer:
    """Tasks of any mode, at most `config.capacity`, one per key."""

    def __init__(self, config: BufferConfig | None = None) -> None:
        self.config = config or BufferConfig()
        self._entries: deque[tuple[str, Task]] = deque()
        self._keys: set[str] = set()
        self._rng = random.Random(self.config.seed)
        self.added = 0  #: distinct tasks ever added (the reservoir's stream length)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Task]:
        return (task for _, task in self._entries)

    def __contains__(self, task: Task) -> bool:
        return task_key(task) in self._keys

    def add(self, task: Task) -> bool:
        """Offer one task; True when it is in the buffer afterwards as a new entry."""
        key = task_key(task)
        if key in self._keys:
            return False
        self.added += 1
        if len(self._entries) < self.config.capacity:
            self._entries.append((key, task))
        elif self.config.policy == "fifo":
            old, _ = self._entries.popleft()
            self._keys.discard(old)
            self._entries.append((key, task))
        else:
            slot = self._rng.randrange(self.added)
            if slot >= self.config.capacity:
                return False
            old, _ = self._entries[slot]
            self._keys.discard(old)
            self._entries[slot] = (key, task)
        self._keys.add(key)
        return True

    def extend(self, tasks: list[Task]) -> int:
        """Offer many tasks; how many became new entries."""
        return sum(self.add(task) for task in tasks)

    def sample(self, n: int, rng: random.Random, mode: str | None = None) -> list[Task]:
        """n tasks drawn uniformly without replacement (of one mode if given); fewer when the
        buffer holds fewer."""
        pool = [task for _, task in self._entries if mode is None or mode_of(task) == mode]
        return rng.sample(pool, min(n, len(pool)))


def seed_buffer(buffer: TaskBuffer, n_per_mode: int, seed: int = 0) -> int:
    """Add `n_per_mode` suite code tasks of each mode (`generate_records`, all difficulties);
    how many became new entries (duplicates in the suite are skipped)."""
    added = 0
    for suite_task in SUITE_TASKS.values():
        records = generate_records(suite_task, n_per_mode, seed=seed)
        added += buffer.extend([task_from_record(r) for r in records])
    return added
