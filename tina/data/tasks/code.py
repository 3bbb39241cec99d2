"""Code-reasoning tasks on tiny integer Python programs, in the three modes of self-play.

- `code_deduction`: program + input → output, one statement per step (`x=4;x=4+3=7;`).
- `code_abduction`: program + output → an input: invertible steps undone from the output, then
  checked (`check f(4)=14;`); any input that gives the output is correct.
- `code_induction`: input/output pairs → program (`f(x) = x*a + b`); two more pairs are held out
  for scoring.

Programs are rendered as ordinary Python (`def f(x):`, two-space indent) and always run under
`tina.data.tasks.minipy`, never `exec`; values stay in [0, 99]. Difficulties and traces in
detail: docs/data.md.

What it does not do: score answers (see `tina.data.tasks.scoring`) or sandbox arbitrary code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tina.data.tasks.minipy import run_function
from tina.data.tasks.record import build_record

MAX_VALUE = 99
Statement = tuple[str, int, int]  # (kind, constant, second constant)

_SIMPLE = {"add": "+", "sub": "-", "mul": "*", "div": "//", "mod": "%"}


def render(statements: list[Statement]) -> str:
    """Python source of `def f(x):` running `statements` in order, then `return x`."""
    lines = ["def f(x):"]
    for kind, c, d in statements:
        if kind in _SIMPLE:
            lines.append(f"  x = x {_SIMPLE[kind]} {c}")
        elif kind == "max":
            lines.append(f"  x = max(x, {c})")
        elif kind == "if":
            lines += [f"  if x > {c}:", f"    x = x - {d}"]
        elif kind == "loop":
            lines += [f"  for i in range({c}):", "    x = x + i"]
        else:
            raise ValueError(f"unknown statement kind {kind!r}")
    lines.append("  return x")
    return "\n".join(lines)


def deduction_question(program: str, call: str) -> str:
    """The deduction question: what `call` (e.g. `f(4)`) returns, the program below it."""
    return f"What does {call} return?\n{program}"


def abduction_question(program: str, entry: str, params: Sequence[str], output: str) -> str:
    """The abduction question: inputs named `params` for which `entry` returns `output`."""
    names = ", ".join(params)
    return f"Find {names} so that {entry}({names}) returns {output}.\n{program}"


def induction_question(entry: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The induction question: write `entry` given (arguments, output) pairs, as text."""
    shown = ", ".join(f"{entry}({args}) = {output}" for args, output in pairs)
    return f"Write {entry} so that {shown}."


def _apply(kind: str, c: int, d: int, x: int) -> tuple[int, str]:
    """Run one statement on x; returns (new x, its trace step)."""
    if kind in _SIMPLE:
        value = {"add": x + c, "sub": x - c, "mul": x * c, "div": x // c, "mod": x % c}[kind]
        return value, f"x={x}{_SIMPLE[kind]}{c}={value};"
    if kind == "max":
        value = max(x, c)
        return value, f"x=max({x},{c})={value};"
    if kind == "if":
        if x > c:
            return x - d, f"{x}>{c} yes x={x}-{d}={x - d};"
        return x, f"{x}>{c} no;"
    if kind == "loop":
        steps = []
        for i in range(c):
            steps.append(f"i={i} x={x}+{i}={x + i};")
            x += i
        return x, "".join(steps)
    raise ValueError(f"unknown statement kind {kind!r}")


def execute(statements: list[Statement], x: int) -> tuple[int, list[str]]:
    """Final value and the per-statement trace, or raises ValueError if a value leaves range."""
    steps = [f"x={x};"]
    for kind, c, d in statements:
        x, step = _apply(kind, c, d, x)
        if not 0 <= x <= MAX_VALUE:
            raise ValueError("value out of range")
        steps.append(step)
    return x, steps


def _statement(rng: random.Random, kinds: tuple[str, ...]) -> Statement:
    kind = rng.choice(kinds)
    if kind in ("add", "sub"):
        return kind, rng.randint(1, 9), 0
    if kind in ("mul", "div"):
        return kind, rng.randint(2, 3), 0
    if kind == "mod":
        return kind, rng.choice((2, 5, 10)), 0
    if kind == "max":
        return kind, rng.randint(5, 30), 0
    if kind == "if":
        return kind, rng.randint(3, 15), rng.randint(1, 9)
    return "loop", rng.randint(2, 4), 0


_DEDUCTION_KINDS = ("add", "sub", "mul", "div", "mod", "max", "if", "loop")
_ABDUCTION_KINDS = ("add", "sub", "mul")


def _program(
    rng: random.Random, n: int, kinds: tuple[str, ...]
) -> tuple[list[Statement], int, int, list[str]]:
    """A program of n statements and an input whose run stays in range."""
    while True:
        statements = [_statement(rng, kinds) for _ in range(n)]
        x0 = rng.randint(0, 15)
        try:
            y, steps = execute(statements, x0)
        except ValueError:
            continue
        return statements, x0, y, steps


def _deduction(
    rng: random.Random, difficulty: int
) -> tuple[str, list[str], str, list[str], dict[str, Any]]:
    statements, x0, y, steps = _program(rng, difficulty, _DEDUCTION_KINDS)
    source = render(statements)
    question = deduction_question(source, f"f({x0})")
    rechecks = [
        f"check f({x0})={y};",
        f"verify x={y} ok;",
        f"wait, redo {steps[-1]}",
        f"so f({x0}) is {y};",
    ]
    meta = {"program": source, "input": x0, "output": y}
    return question, steps, str(y), rechecks, meta


def _inverse_steps(statements: list[Statement], y: int) -> list[str]:
    steps, x = [f"x={y};"], y
    for kind, c, _ in reversed(statements):
        if kind == "add":
            steps.append(f"x={x}-{c}={x - c};")
            x -= c
        elif kind == "sub":
            steps.append(f"x={x}+{c}={x + c};")
            x += c
        else:
            steps.append(f"x={x}//{c}={x // c};")
            x //= c
    return steps


def _abduction(
    rng: random.Random, difficulty: int
) -> tuple[str, list[str], str, list[str], dict[str, Any]]:
    statements, x0, y, _ = _program(rng, difficulty, _ABDUCTION_KINDS)
    source = render(statements)
    question = abduction_question(source, "f", ["x"], str(y))
    steps = [*_inverse_steps(statements, y), f"check f({x0})={y};"]
    rechecks = [
        f"check f({x0})={y};",
        f"so x={x0};",
        f"verify f({x0})={y} ok;",
        f"so f({x0}) is {y};",
    ]
    meta = {"program": source, "output": y, "input": x0}
    return question, steps, str(x0), rechecks, meta


def _induction(
    rng: random.Random, difficulty: int
) -> tuple[str, list[str], str, list[str], dict[str, Any]]:
    a = 1 if difficulty <= 1 else rng.randint(2, 4)
    b = rng.randint(0, 9)
    x1 = rng.randint(0, 8)
    others = rng.sample([v for v in range(0, 12) if v not in (x1, x1 + 1)], 3)
    xs = [x1, x1 + 1, others[0]]
    shown = [(x, a * x + b) for x in xs]
    heldout = [(x, a * x + b) for x in others[1:]]
    (xa, ya), (xb, yb), (xc, yc) = shown
    question = induction_question("f", [(str(x), str(y)) for x, y in shown])
    body = "x" if a == 1 else f"x * {a}"
    answer = f"def f(x): return {body} + {b}"
    steps = [
        f"f({xb})-f({xa})={yb}-{ya}={a} a={a};",
        f"f({xa})-{xa}*{a}={ya}-{xa * a}={b} b={b};",
        f"check f({xc})={xc}*{a}+{b}={yc};",
    ]
    rechecks = [
        f"check f({xa})={ya};",
        f"so a={a} b={b};",
        f"verify f({xb})={yb} ok;",
        f"check f({xc})={yc};",
    ]
    meta = {"pairs": shown, "heldout": heldout, "program": answer}
    return question, steps, answer, rechecks, meta


#: the code task modes (`code_<mode>` in the suite; self-play proposes and solves each)
CODE_TASK_MODES: tuple[str, ...] = ("deduction", "abduction", "induction")

_MODES = {
    "code_deduction": (_deduction, "trace"),
    "code_abduction": (_abduction, "search"),
    "code_induction": (_induction, "search"),
}


def generate_code(
    task: str, rng: random.Random, difficulty: int, style: str, **record_kwargs: Any
) -> dict[str, Any]:
    """One code-reasoning record of the given mode and difficulty."""
    if task not in _MODES:
        raise ValueError(f"unknown code task {task!r}; expected one of {sorted(_MODES)}")
    make, plan_class = _MODES[task]
    question, steps, answer, rechecks, meta = make(rng, difficulty)
    if "program" in meta and task != "code_induction":
        # The rendered source and the trace come from one statement list; confirm they agree.
        expected = meta["output"]
        assert run_function(meta["program"], meta["input"]) == expected
    return build_record(
        rng=rng,
        task=task,
        question=question,
        steps=steps,
        answer=answer,
        rechecks=rechecks,
        style=style,
        plan_class=plan_class,
        difficulty=difficulty,
        meta=meta,
        **record_kwargs,
    )
