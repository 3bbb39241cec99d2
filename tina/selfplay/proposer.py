"""The proposer role of self-play: the model writes new tasks; a small grammar fills in.

What it does: `proposer_prompt(mode, references)` (the mode, reference programs from the buffer
with their input calls, the answer format); `parse_proposal(text)` (a program, then one `f(…)`
call per line: a `Proposal`, or why it is not one); `compose_proposal(rng, mode,
max_statements)` (a random program of the code-task grammar, values in [0, 99], used when the
model's proposal is invalid); `task_of` (the task a checked proposal becomes); and
`propose(engine, buffer, modes, …)`: one engine batch of proposals, each parsed and checked in
the sandbox (`check_proposals`) and for triviality (`trivial_reason`), an invalid one replaced by
a composed task, the sample keeping why it failed (`invalid_category`: format, syntax, refused,
nondeterministic, timeout, trivial, error); with `demonstrate`, the composed task is also
written as the answer the proposer should have given (`demonstration`: the same prompt, the
proposal text as forced-then-credited answer tokens), a row the update can learn the format
from when the model writes no valid proposal at all; `cold_start_rows`: such rows for fresh
prompts, the supervised cold start before the first iteration.

What it does not do: rewards (the proposer's learnability comes from the solver's rollouts, in
`tina.selfplay.loop`) or the buffer's deduplication (`tina.selfplay.buffer`).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE
from tina.data.sandbox import SandboxConfig
from tina.data.tasks.code import _statement, execute, render
from tina.engine.loop import Engine
from tina.engine.types import Telemetry
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
    same_value,
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


def parse_proposal(text: str, cut: bool = False) -> tuple[Proposal | None, str]:
    """(the proposal, "") or (None, why): the trailing `name(args)` lines are the inputs, the
    lines before them the program, which must define `name`; a call repeated tells nothing new
    and is kept once. `cut`: the text ended at the answer cap, so its last line may be cut
    short and is dropped."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if cut and len(lines) > 1:
        lines.pop()
    lines = [line for line in lines if not line.lstrip().startswith("```")]  # markdown fences
    while lines and not lines[-1].strip():
        lines.pop()
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
    distinct: dict[str, Args] = {}
    for args in inputs:
        distinct.setdefault(repr(args), args)
    inputs = list(distinct.values())
    program = "\n".join(lines).strip()
    if not re.search(rf"^def {re.escape(entry)}\(", program, re.MULTILINE):
        return None, f"format: the program defines no function {entry!r}"
    return Proposal(program, entry, inputs), ""


def render_proposal(proposal: Proposal) -> str:
    """The text of a proposal as `parse_proposal` reads it: the program, then one call a line."""
    calls = [render_call(proposal.entry, tuple(args)) for args in proposal.inputs]
    return "\n".join([proposal.program.rstrip(), *calls])


def trivial_reason(mode: str, proposal: Proposal, outputs: Sequence[object]) -> str:
    """Why an accepted proposal teaches nothing ("" when it does): every output equal to its
    input (the identity), or, for induction, one output for every input (a constant)."""
    args = [tuple(a) for a in proposal.inputs]
    if all(len(a) == 1 and same_value(a[0], o) for a, o in zip(args, outputs, strict=True)):
        return "trivial: the program returns its input unchanged"
    if mode == "induction" and all(same_value(o, outputs[0]) for o in outputs[1:]):
        return "trivial: the program returns the same value for every input"
    return ""


#: The categories of invalid proposals, as `invalid_category` names them.
INVALID_CATEGORIES = (
    "format", "syntax", "refused", "nondeterministic", "timeout", "trivial", "error",
)  # fmt: skip


def invalid_category(reason: str) -> str:
    """The category of a rejection reason (`INVALID_CATEGORIES`): the parser's `format`, the
    sandbox's statuses (a parse failure is its `refused` with `syntax` in the message; memory
    and output size count as `timeout`, a resource limit), `trivial`, else `error`."""
    status, _, message = reason.partition(":")
    if status in ("format", "input"):
        return "format"
    if status == "refused":
        return "syntax" if ": syntax:" in f":{message}" else "refused"
    if status in ("timeout", "memory", "output_too_large"):
        return "timeout"
    if status in ("nondeterministic", "trivial"):
        return status
    return "error"


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
    #: the composed task written as the proposer's answer (`demonstration`), when asked for
    demonstration: Rollout | None = None


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
    demonstrate: bool = False,
) -> list[ProposedTask]:
    """One proposal per entry of `modes`, sampled from the model (one engine batch), checked in
    the sandbox; an invalid one is replaced by a composed task (checked too), written as a
    `demonstration` too when `demonstrate`."""
    prompts = [proposer_prompt(m, buffer.sample(num_references, rng, m)) for m in modes]
    seeds = [(seed * 1_000_003 + i) % (2**63) for i in range(len(prompts))]
    rollouts = sample_rollouts(engine, prompts, budget, answer_tokens, temperature, top_p, seeds)
    parsed = [
        parse_proposal(r.answer, cut=r.telemetry is not None and r.telemetry.forced_answer_close)
        for r in rollouts
    ]
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
                reason = trivial_reason(mode, proposal, check.outputs)
            if not reason:
                try:
                    task = task_of(mode, proposal, check.outputs, rng, n_heldout)
                except ValueError as exc:
                    reason = f"format: {exc}"
        if task is not None:
            out.append(ProposedTask(mode, task, False, "", rollout))
            continue
        composed, text = compose_task(rng, mode, sandbox, n_heldout, max_statements)
        shown = (
            demonstration(engine, rollout.prompt, text, rollout.telemetry, mode)
            if demonstrate
            else None
        )
        out.append(ProposedTask(mode, composed, True, reason, rollout, shown))
    return out


def demonstration(
    engine: Engine, prompt: str, text: str, telemetry: Telemetry | None, mode: str
) -> Rollout:
    """The proposer's row for a composed proposal: the rendered `prompt`, then
    `</think><answer>` (forced), `text` (credited as if sampled) and `</answer>` (forced); no
    think tokens."""
    tc, ao, ac = (engine.ids[t] for t in (THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
    body = engine.tokenizer.encode(text, add_special_tokens=False)
    ids = [tc, ao, *body, ac]
    return Rollout(
        prompt=prompt,
        completion_ids=ids,
        think=[False] * len(ids),
        sampled=[False, False, *([True] * len(body)), False],
        answer=text,
        completion=f"{THINK_CLOSE}{ANSWER_OPEN}{text}{ANSWER_CLOSE}",
        telemetry=telemetry,
        mode=mode,
        role="propose",
        extra={"demonstration": True},
    )


def cold_start_rows(
    engine: Engine,
    buffer: TaskBuffer,
    modes: Sequence[str],
    rng: random.Random,
    num_references: int,
    sandbox: SandboxConfig,
    n_heldout: int,
    max_statements: int,
) -> list[Rollout]:
    """One `demonstration` per entry of `modes`: the proposer's prompt (references from the
    buffer) answered by a composed task of that mode; the cold start's supervised rows."""
    rows = []
    for mode in modes:
        prompt = engine.render(proposer_prompt(mode, buffer.sample(num_references, rng, mode)))
        _, text = compose_task(rng, mode, sandbox, n_heldout, max_statements)
        rows.append(demonstration(engine, prompt, text, None, mode))
    return rows


def compose_task(
    rng: random.Random, mode: str, sandbox: SandboxConfig, n_heldout: int, max_statements: int
) -> tuple[Task, str]:
    """A composed task of `mode`, its outputs computed by the sandbox, and its proposal's text.
    Composed programs stay in range by construction, so a rejection means the sandbox itself
    fails: RuntimeError after a few tries, with the sandbox's reason."""
    reason = ""
    for _ in range(COMPOSE_TRIES):
        proposal = compose_proposal(rng, mode, max_statements)
        (check,) = check_proposals([proposal], sandbox)
        if check.accepted:
            task = task_of(mode, proposal, check.outputs, rng, n_heldout)
            return task, render_proposal(proposal)
        reason = check.reason
    raise RuntimeError(f"the sandbox rejected {COMPOSE_TRIES} composed programs: {reason}")
