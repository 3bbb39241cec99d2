"""The proposer role of self-play: the model writes new tasks; a small grammar fills in.

What it does: `proposer_prompt(mode, references)` (the mode, reference programs from the buffer
with their input calls, the answer format); `parse_proposal(text)` (a program, then one `f(…)`
call per line: a `Proposal`, or why it is not one); `compose_proposal(rng, mode,
max_statements)` (a random program of the code-task grammar, values in [0, 99], used when the
model's proposal is invalid); `task_of` (the task a checked proposal becomes); and
`propose(engine, buffer, modes, …)`: one engine batch of proposals, each parsed and checked in
the sandbox (`check_proposals`), an invalid one replaced by a composed task, the sample keeping
why it failed.

What it does not do: rewards (the proposer's learnability comes from the solver's rollouts, in
`tina.selfplay.loop`) or the buffer's deduplication (`tina.selfplay.buffer`).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tina.data.sandbox import SandboxConfig
from tina.data.tasks.code import _statement, execute, render
from tina.engine.loop import Engine
from tina.selfplay.buffer import TaskBuffer
from tina.selfplay.solver import Rollout, sample_rollouts
from tina.selfplay.tasks import (
    Abduction,
    Args,
    Deduction,
    Induction,
    Proposal,
    Task,
    check_proposals,
    make_induction,
    render_call,
)

#: Statement kinds of the grammar per mode (abduction keeps to invertible steps).
GRAMMAR: dict[str, tuple[str, ...]] = {
    "deduction": ("add", "sub", "mul", "div", "mod", "max", "if", "loop"),
    "abduction": ("add", "sub", "mul"),
    "induction": ("add", "sub", "mul", "max", "mod"),
}
INDUCTION_INPUTS = 5  #: inputs of a composed induction task (shown + held out)
COMPOSE_TRIES = 5  #: composed programs tried before the sandbox is deemed broken
_CALL = re.compile(r"^([A-Za-z_]\w*)\((.*)\)$")


def _inputs_of(task: Task) -> list[Args]:
    if isinstance(task, Induction):
        return [args for args, _ in (*task.shown, *task.heldout)]
    return [task.args]


def proposer_prompt(mode: str, references: Sequence[Task]) -> str:
    """The proposer's question: write a new `mode` task like the references (see module
    docstring). Induction asks for several inputs, the other modes for one."""
    lines = [f"Propose a new {mode} task: a program, then its inputs as calls."]
    for task in references:
        lines.append(task.program)
        lines += [render_call(task.entry, args) for args in _inputs_of(task)]
    return "\n".join(lines)


def parse_proposal(text: str) -> tuple[Proposal | None, str]:
    """(the proposal, "") or (None, why): the trailing `name(args)` lines are the inputs, the
    lines before them the program, which must define `name`."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    inputs: list[Args] = []
    entry = ""
    while lines and (match := _CALL.match(lines[-1].strip())):
        if entry and match.group(1) != entry:
            return None, "format: the calls name different functions"
        entry = match.group(1)
        try:
            value = ast.literal_eval(f"[{match.group(2)}]")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None, f"format: the call {lines[-1].strip()!r} has non-literal arguments"
        inputs.insert(0, tuple(value))
        lines.pop()
    if not inputs:
        return None, "format: no input call after the program"
    program = "\n".join(lines).strip()
    if not re.search(rf"^def {re.escape(entry)}\(", program, re.MULTILINE):
        return None, f"format: the program defines no function {entry!r}"
    return Proposal(program, entry, inputs), ""


def compose_proposal(rng: random.Random, mode: str, max_statements: int) -> Proposal:
    """A random program of the grammar (1 to `max_statements` statements) with inputs that keep
    every value in [0, 99]: one input, or `INDUCTION_INPUTS` distinct ones for induction."""
    kinds = GRAMMAR[mode]
    n_inputs = INDUCTION_INPUTS if mode == "induction" else 1
    while True:
        statements = [_statement(rng, kinds) for _ in range(rng.randint(1, max_statements))]
        candidates = rng.sample(range(16), 16)
        inputs = []
        for x in candidates:
            try:
                execute(statements, x)
            except ValueError:
                continue
            inputs.append((x,))
            if len(inputs) == n_inputs:
                return Proposal(render(statements), "f", inputs)


def task_of(
    mode: str, proposal: Proposal, outputs: Sequence[object], rng: random.Random, n_heldout: int
) -> Task:
    """The task a checked proposal becomes (ValueError when it cannot: e.g. an induction
    proposal with too few or repeated inputs)."""
    args = tuple(proposal.inputs[0])
    if mode == "deduction":
        return Deduction(proposal.program, proposal.entry, args, outputs[0])
    if mode == "abduction":
        return Abduction(proposal.program, proposal.entry, outputs[0], args)
    pairs = [(tuple(a), o) for a, o in zip(proposal.inputs, outputs, strict=True)]
    return make_induction(proposal.program, proposal.entry, pairs, n_heldout, rng)


@dataclass
class ProposedTask:
    """One proposal slot of an iteration."""

    mode: str  #: the mode asked for
    task: Task  #: the model's task when valid, else the composed one
    composed: bool  #: the model's proposal was invalid and the composer served
    reason: str  #: why the model's proposal was rejected ("" when valid)
    rollout: Rollout | None  #: the model's sampled proposal (None when nothing was sampled)


def propose(
    engine: Engine,
    buffer: TaskBuffer,
    modes: Sequence[str],
    rng: random.Random,
    num_references: int,
    budget: int,
    answer_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    sandbox: SandboxConfig,
    n_heldout: int,
    max_statements: int,
) -> list[ProposedTask]:
    """One proposal per entry of `modes`, sampled from the model (one engine batch), checked in
    the sandbox; an invalid one is replaced by a composed task (checked too)."""
    prompts = [proposer_prompt(m, buffer.sample(num_references, rng, m)) for m in modes]
    seeds = [(seed * 1_000_003 + i) % (2**63) for i in range(len(prompts))]
    rollouts = sample_rollouts(engine, prompts, budget, answer_tokens, temperature, top_p, seeds)
    parsed = [parse_proposal(r.answer) for r in rollouts]
    proposals = [p for p, _ in parsed if p is not None]
    checks = iter(check_proposals(proposals, sandbox))
    out: list[ProposedTask] = []
    for mode, rollout, (proposal, reason) in zip(modes, rollouts, parsed, strict=True):
        rollout.mode, rollout.role = mode, "propose"
        task: Task | None = None
        if proposal is not None:
            check = next(checks)
            reason = check.reason
            if check.accepted:
                try:
                    task = task_of(mode, proposal, check.outputs, rng, n_heldout)
                except ValueError as exc:
                    reason = f"task: {exc}"
        if task is not None:
            out.append(ProposedTask(mode, task, False, "", rollout))
        else:
            out.append(
                ProposedTask(
                    mode,
                    compose_task(rng, mode, sandbox, n_heldout, max_statements),
                    True,
                    reason,
                    rollout,
                )
            )
    return out


def compose_task(
    rng: random.Random, mode: str, sandbox: SandboxConfig, n_heldout: int, max_statements: int
) -> Task:
    """A composed task of `mode`, its outputs computed by the sandbox. Composed programs stay
    in range by construction, so a rejection means the sandbox itself fails: RuntimeError
    after a few tries, with the sandbox's reason."""
    reason = ""
    for _ in range(COMPOSE_TRIES):
        proposal = compose_proposal(rng, mode, max_statements)
        (check,) = check_proposals([proposal], sandbox)
        if check.accepted:
            return task_of(mode, proposal, check.outputs, rng, n_heldout)
        reason = check.reason
    raise RuntimeError(f"the sandbox rejected {COMPOSE_TRIES} composed programs: {reason}")
