"""The three Absolute-Zero task modes over sandboxed Python functions, their prompts and checks.

- `Deduction`: program + input → output (the solver answers a Python literal);
- `Abduction`: program + output → an input (any input giving the output is correct);
- `Induction`: input/output pairs, some held out → a program (a `def entry(...)` or a bare
  expression that must reproduce every held-out pair).

A proposal becomes tasks only after `check_proposals` accepts it (it parses, passes the
sandbox's AST rules, runs on every input deterministically, outputs under the size cap; each
rejection says why). Outputs are always computed by the sandbox, never taken from the proposer;
prompts reuse the code tasks' question formats; answers compare by strict value equality
(`same_value`: 1, 1.0 and True differ).

What it does not do: store tasks (see `tina.selfplay.buffer`), generate proposals, or compute
proposer rewards (learnability); those belong to the self-play training loop.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from tina.core.tags import extract_answer
from tina.data.sandbox import Call, SandboxConfig, Verdict, read_value, run_batch
from tina.data.sandbox_worker import literal_problem
from tina.data.tasks.code import (
    abduction_question,
    deduction_question,
    induction_question,
)

Args = tuple[Any, ...]
Pair = tuple[Args, Any]
MAX_ANSWER_CHARS = 10_000


@dataclass(frozen=True)
class Deduction:
    """Program + input → output."""

    program: str  #: Python source defining `entry`
    entry: str  #: the function called
    args: Args  #: the input, as positional arguments
    output: Any  #: entry(*args), as the sandbox computed it (the gold answer)


@dataclass(frozen=True)
class Abduction:
    """Program + output → an input."""

    program: str  #: Python source defining `entry`
    entry: str  #: the function called
    output: Any  #: what the solver's input must make `entry` return
    args: Args  #: one input known to give `output` (never shown; any correct input scores)


@dataclass(frozen=True)
class Induction:
    """Input/output pairs → a program; scored on the held-out pairs."""

    program: str  #: a reference program that produced the pairs (never shown)
    entry: str  #: the function the solver must write
    shown: tuple[Pair, ...]  #: pairs in the prompt
    heldout: tuple[Pair, ...]  #: pairs the answer must also reproduce, never shown
    message: str = ""  #: the proposer's hint, shown after the pairs when not empty

    def __post_init__(self) -> None:
        if not self.shown or not self.heldout:
            raise ValueError("an induction task needs shown and held-out pairs")


Task = Deduction | Abduction | Induction


def mode_of(task: Task) -> str:
    """ "deduction", "abduction" or "induction"."""
    return {Deduction: "deduction", Abduction: "abduction", Induction: "induction"}[type(task)]


def parameters(program: str, entry: str) -> list[str]:
    """Names of the positional parameters of the top-level function `entry` in `program`."""
    for node in ast.parse(program).body:
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            return [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    raise ValueError(f"the program defines no top-level function {entry!r}")


def render_call(entry: str, args: Args) -> str:
    """`f(4)`, `f('ab', [1, 2])`: a call written with the arguments' reprs."""
    return f"{entry}({', '.join(repr(a) for a in args)})"


def task_question(task: Task) -> str:
    """The question the solver sees (the code tasks' formats; see the module docstring)."""
    if isinstance(task, Deduction):
        return deduction_question(task.program, render_call(task.entry, task.args))
    if isinstance(task, Abduction):
        names = parameters(task.program, task.entry)
        return abduction_question(task.program, task.entry, names, repr(task.output))
    pairs = [(", ".join(repr(a) for a in args), repr(out)) for args, out in task.shown]
    question = induction_question(task.entry, pairs)
    return f"{question}\n{task.message}" if task.message else question


def task_from_record(record: dict[str, Any]) -> Task:
    """The self-play task of a code-task suite record (`code_deduction`, `code_abduction`,
    `code_induction`), built from its `meta`."""
    task, meta = record["task"], record["meta"]
    if task == "code_deduction":
        return Deduction(meta["program"], "f", (meta["input"],), meta["output"])
    if task == "code_abduction":
        return Abduction(meta["program"], "f", meta["output"], (meta["input"],))
    if task == "code_induction":
        shown = tuple(((x,), y) for x, y in meta["pairs"])
        heldout = tuple(((x,), y) for x, y in meta["heldout"])
        return Induction(meta["program"], "f", shown, heldout)
    raise ValueError(f"record of task {task!r} is not a code task")


def same_value(a: Any, b: Any) -> bool:
    """Equality of literals that also requires equal types, all the way down; a float nan
    equals a nan (the output `float('nan')` is answered `nan`)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, complex):
        return same_value(a.real, b.real) and same_value(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


# --- proposals ------------------------------------------------------------------------------


class Proposal(NamedTuple):
    """A proposer's program and the inputs to run it on (each a tuple of arguments)."""

    program: str
    entry: str
    inputs: Sequence[Args]


@dataclass(frozen=True)
class ProposalCheck:
    """The outcome of checking one proposal."""

    outputs: tuple[Any, ...] = ()  #: one output per input, when accepted
    reason: str = ""  #: empty when accepted, else `status: message` of the first failure

    @property
    def accepted(self) -> bool:
        return not self.reason


def check_proposals(proposals: Sequence[Proposal], config: SandboxConfig) -> list[ProposalCheck]:
    """Check many proposals with one sandbox batch (always with the determinism check)."""
    config = dataclasses.replace(config, check_determinism=True)
    checks: list[ProposalCheck | None] = [None] * len(proposals)
    calls: list[Call] = []
    owners: list[int] = []
    for i, proposal in enumerate(proposals):
        problem = _inputs_problem(proposal.inputs, config.max_output_bytes)
        if problem:
            checks[i] = ProposalCheck(reason=f"input: {problem}")
            continue
        for args in proposal.inputs:
            calls.append(Call(proposal.program, proposal.entry, tuple(args)))
            owners.append(i)
    outputs: dict[int, list[Any]] = {}
    for owner, verdict in zip(owners, run_batch(calls, config), strict=True):
        if checks[owner] is not None:
            continue
        if not verdict.ok:
            checks[owner] = ProposalCheck(reason=f"{verdict.status}: {verdict.message}")
        else:
            outputs.setdefault(owner, []).append(verdict.value)
    return [
        check if check is not None else ProposalCheck(outputs=tuple(outputs[i]))
        for i, check in enumerate(checks)
    ]


def _inputs_problem(inputs: Sequence[Args], max_bytes: int) -> str:
    if not inputs:
        return "no inputs"
    for n, args in enumerate(inputs):
        if not isinstance(args, (tuple, list)):
            return f"input {n} is not a tuple of arguments"
        problem = literal_problem(list(args), max_bytes)
        if problem is not None:
            return f"input {n}: {problem}"
    return ""


def make_induction(
    program: str,
    entry: str,
    pairs: Sequence[Pair],
    n_heldout: int,
    rng: random.Random,
    message: str = "",
) -> Induction:
    """An induction task from checked pairs: `n_heldout` of them, drawn by `rng`, held out.
    The inputs must be distinct (a repeated input would reveal a held-out pair)."""
    keys = [repr(args) for args, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("induction inputs must be distinct")
    if not 1 <= n_heldout < len(pairs):
        raise ValueError(f"n_heldout must be in [1, {len(pairs) - 1}], got {n_heldout}")
    order = list(range(len(pairs)))
    rng.shuffle(order)
    chosen = [(tuple(pairs[i][0]), pairs[i][1]) for i in order]
    return Induction(program, entry, tuple(chosen[n_heldout:]), tuple(chosen[:n_heldout]), message)


# --- answers --------------------------------------------------------------------------------


#: floats as Python's repr writes them, which are names, not literals
_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def parse_value(text: str) -> tuple[bool, Any]:
    """(True, the value) when `text` is one value as the sandbox reads results
    (`tina.data.sandbox.read_value`: literals, `set()`, `frozenset({...})`, `complex(a, b)`,
    `float('nan')`), as `repr` writes a float (`nan`, `inf`, `-inf`) or as `ast.literal_eval`
    reads it (`(1+2j)`); else (False, None)."""
    text = text.strip()
    if len(text) > MAX_ANSWER_CHARS:
        return False, None
    if text in _FLOAT_NAMES:
        return True, _FLOAT_NAMES[text]
    for read in (read_value, ast.literal_eval):
        try:
            return True, read(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return False, None


def _answer_calls(task: Task, answer: str) -> list[Call] | None:
    """The sandbox calls that verify `answer` (none for deduction); None when it is malformed."""
    if isinstance(task, Abduction):
        ok, value = parse_value(f"[{answer}]")
        if not ok or len(value) != len(parameters(task.program, task.entry)):
            return None
        return [Call(task.program, task.entry, tuple(value))]
    if isinstance(task, Induction):
        answer = answer.strip()
        if not answer or len(answer) > MAX_ANSWER_CHARS:
            return None
        if not answer.startswith("def "):
            names = ", ".join(parameters(task.program, task.entry))
            answer = f"def {task.entry}({names}):\n    return {answer}"
        return [Call(answer, task.entry, args) for args, _ in task.heldout]
    return []


def _expected(task: Task) -> list[Any]:
    if isinstance(task, Abduction):
        return [task.output]
    if isinstance(task, Induction):
        return [out for _, out in task.heldout]
    return []


def verify_answers(
    tasks: Sequence[Task], answers: Sequence[str], config: SandboxConfig
) -> list[bool]:
    """Whether each answer (the bare answer text) solves its task; all sandbox runs share one
    batch. Deduction: the answer equals the output. Abduction: the program returns the output
    on the answered arguments. Induction: the answered program reproduces every held-out pair."""
    if len(tasks) != len(answers):
        raise ValueError("tasks and answers must have the same length")
    solved = [False] * len(tasks)
    calls: list[Call] = []
    owners: list[int] = []
    for i, (task, answer) in enumerate(zip(tasks, answers, strict=True)):
        if isinstance(task, Deduction):
            ok, value = parse_value(answer)
            solved[i] = ok and same_value(value, task.output)
            continue
        task_calls = _answer_calls(task, answer)
        if task_calls is None:
            continue
        solved[i] = True  # until a call fails
        calls += task_calls
        owners += [i] * len(task_calls)
    verdicts: dict[int, list[Verdict]] = {}
    for owner, verdict in zip(owners, run_batch(calls, config), strict=True):
        verdicts.setdefault(owner, []).append(verdict)
    for owner, got in verdicts.items():
        wanted = _expected(tasks[owner])
        solved[owner] = all(
            v.ok and same_value(v.value, w) for v, w in zip(got, wanted, strict=True)
        )
    return solved


def selfplay_reward(
    completions: Sequence[str],
    selfplay_task: Sequence[Task],
    sandbox_config: SandboxConfig | None = None,
    **kwargs: Any,
) -> list[float]:
    """Solver reward (1.0 or 0.0) for each completion, in the TRL convention: the answer is
    taken with `tina.core.tags.extract_answer` and checked by `verify_answers`."""
    answers = [extract_answer(c) for c in completions]
    config = sandbox_config or SandboxConfig()
    return [float(s) for s in verify_answers(selfplay_task, answers, config)]
