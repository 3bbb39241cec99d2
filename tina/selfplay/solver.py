"""The solver role of self-play: the model answers tasks through the engine; the sandbox judges.

What it does: `sample_rollouts(engine, prompts, ...)` (one engine batch, the serving decode loop,
that also keeps per row the completion's token ids, which were think tokens — the policy
update's think mask — and which were sampled rather than forced: the tokens a policy gradient
may credit); `solve(engine, tasks, ...)` (`num_rollouts` sampled solutions per task,
task-major, each verified by `tina.selfplay.tasks.verify_answers`, plus whether it was well
formed); `solved_greedy` / `evaluate_solve_rate` (greedy solutions of a fixed task set);
`heldout_tasks` (a fixed evaluation set of a mode drawn from the suite with its own seed).

What it does not do: rewards (`tina.selfplay.rewards`) or weight updates (`tina.selfplay.loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE
from tina.data.sandbox import SandboxConfig
from tina.data.tasks import generate_records
from tina.engine.loop import Engine
from tina.engine.types import THINK, Request, Telemetry
from tina.selfplay.buffer import task_key
from tina.selfplay.tasks import (
    Abduction,
    Deduction,
    Task,
    parameters,
    parse_value,
    task_from_record,
    task_question,
    verify_answers,
)


@dataclass
class Rollout:
    """One sampled completion, with what the policy update needs."""

    prompt: str  #: the rendered prompt (ends with `<think>`)
    completion_ids: list[int]  #: every completion token, tags included
    think: list[bool]  #: per completion token: a think token (adapters on when it was fed)
    sampled: list[bool]  #: per completion token: chosen by the model, not forced
    answer: str  #: the text inside `<answer>…</answer>`
    completion: str  #: the decoded completion
    #: the engine's report (heads' plan/budget/confidence among it); None on a row the
    #: engine did not decode (a proposer's demonstration)
    telemetry: Telemetry | None
    mode: str = ""  #: the task mode it belongs to
    role: str = ""  #: "solve" or "propose"
    extra: dict[str, Any] = field(default_factory=dict)  #: role-specific data


def sample_rollouts(
    engine: Engine,
    prompts: Sequence[str],
    budget: int,
    answer_tokens: int,
    temperature: float,
    top_p: float,
    seeds: Sequence[int],
) -> list[Rollout]:
    """Questions through the engine with a fixed think budget (no slack), sampled with the
    per-row seeds; each result with its token ids and masks (see module docstring)."""
    ids: list[list[int]] = [[] for _ in prompts]
    think: list[list[bool]] = [[] for _ in prompts]
    think_close = engine.ids[THINK_CLOSE]

    def on_token(row: int, phase: str, token: int) -> None:
        ids[row].append(token)
        think[row].append(phase == THINK and token != think_close)

    requests = [
        Request(
            prompt=engine.render(p),
            rendered=True,
            budget=budget,
            slack_ratio=0.0,
            budget_cap=budget,
            max_answer_tokens=answer_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=s,
        )
        for p, s in zip(prompts, seeds, strict=True)
    ]
    results = engine.generate(requests, on_token=on_token)
    out = []
    for i, (request, result) in enumerate(zip(requests, results, strict=True)):
        out.append(
            Rollout(
                prompt=request.prompt,
                completion_ids=ids[i],
                think=think[i],
                sampled=_sampled_mask(engine, ids[i], result.telemetry),
                answer=result.answer,
                completion=result.completion,
                telemetry=result.telemetry,
            )
        )
    return out


def _sampled_mask(engine: Engine, ids: list[int], telemetry: Telemetry) -> list[bool]:
    """False on the tokens the engine forced: `<answer>` after `</think>`, the `</think>` of a
    forced close, the `</answer>` of an answer at its cap."""
    sampled = [True] * len(ids)
    tc, ao, ac = engine.ids[THINK_CLOSE], engine.ids[ANSWER_OPEN], engine.ids[ANSWER_CLOSE]
    for k, token in enumerate(ids):
        forced_open = token == ao and k > 0 and ids[k - 1] == tc
        if forced_open or (token == tc and telemetry.forced_think_close):
            sampled[k] = False
    if telemetry.forced_answer_close and ids and ids[-1] == ac:
        sampled[-1] = False
    return sampled


def answer_well_formed(task: Task, answer: str) -> bool:
    """Whether the answer has the shape its mode asks for (a literal; arguments of the right
    count; a non-empty program or expression), right or wrong."""
    if isinstance(task, Deduction):
        return parse_value(answer)[0]
    if isinstance(task, Abduction):
        ok, value = parse_value(f"[{answer}]")
        return ok and len(value) == len(parameters(task.program, task.entry))
    return bool(answer.strip())


def solve(
    engine: Engine,
    tasks: Sequence[Task],
    num_rollouts: int,
    budget: int,
    answer_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    sandbox: SandboxConfig,
) -> tuple[list[Rollout], list[bool]]:
    """`num_rollouts` sampled solutions per task, task-major, and whether each is correct.
    Each rollout's `extra` holds its `task` and `well_formed`."""
    prompts = [task_question(t) for t in tasks for _ in range(num_rollouts)]
    seeds = [(seed * 1_000_003 + i) % (2**63) for i in range(len(prompts))]
    rollouts = sample_rollouts(engine, prompts, budget, answer_tokens, temperature, top_p, seeds)
    repeated = [t for t in tasks for _ in range(num_rollouts)]
    correct = verify_answers(repeated, [r.answer for r in rollouts], sandbox)
    for task, rollout in zip(repeated, rollouts, strict=True):
        rollout.role = "solve"
        rollout.extra = {"task": task, "well_formed": answer_well_formed(task, rollout.answer)}
    return rollouts, correct


def solved_greedy(
    engine: Engine,
    tasks: Sequence[Task],
    budget: int,
    answer_tokens: int,
    sandbox: SandboxConfig,
    batch_size: int = 50,
) -> list[bool]:
    """Whether greedy decoding at a fixed think budget solves each task."""
    solved: list[bool] = []
    for start in range(0, len(tasks), batch_size):
        chunk = list(tasks[start : start + batch_size])
        prompts = [task_question(t) for t in chunk]
        rollouts = sample_rollouts(
            engine, prompts, budget, answer_tokens, 0.0, 1.0, [0] * len(chunk)
        )
        solved += verify_answers(chunk, [r.answer for r in rollouts], sandbox)
    return solved


def evaluate_solve_rate(
    engine: Engine,
    tasks: Sequence[Task],
    budget: int,
    answer_tokens: int,
    sandbox: SandboxConfig,
    batch_size: int = 50,
) -> float:
    """Share of `tasks` solved by greedy decoding at a fixed think budget."""
    solved = solved_greedy(engine, tasks, budget, answer_tokens, sandbox, batch_size)
    return sum(solved) / max(1, len(solved))


def heldout_tasks(mode: str, n: int, seed: int, exclude: Sequence[Task] = ()) -> list[Task]:
    """n suite tasks of `mode` (`deduction`, `abduction`, `induction`; all difficulties,
    cycled) drawn with `seed`, none equal to a task in `exclude` (e.g. the buffer's seed
    tasks)."""
    seen = {task_key(t) for t in exclude}
    out: list[Task] = []
    batch_seed = seed
    while len(out) < n:
        for record in generate_records(f"code_{mode}", 2 * n, seed=batch_seed):
            task = task_from_record(record)
            key = task_key(task)
            if key not in seen and len(out) < n:
                seen.add(key)
                out.append(task)
        batch_seed += 1
    return out
