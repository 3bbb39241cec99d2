"""Arithmetic tasks with digit-by-digit think traces: add, subtract, multiply.

Each step handles one digit, least significant first, and prepends that one digit to the running
partial result; a carry out of the top digit is a last step of its own, so the final answer is a
copy of the last partial:

    Add 71 and 949
    <think>1+9+0=10 r0;7+4+1=12 r20;0+9+1=10 r020;r1020;</think><answer>1020</answer>

- `add`, `sub` (a ≥ b; borrows `b1`): n digits, difficulty n; 1-digit ones need no thinking.
- `mul`: n-digit × 1-digit (difficulty n), the carry written out: `4*7=28+2=30 c3 r08;`.
- `mul2`: n-digit × 2-digit (difficulty n + 2): two partial products, then their sum.

The question's wording comes from `tina.data.tasks.phrasing`: the suite's own sentences by
default, or people's phrasings (words and symbols, either operand order, mixed lengths: the
trace pads the shorter operand with zeros).

What it does not do: scoring (see `tina.data.tasks.scoring`) or contract checks. The traces in
detail: docs/data.md.
"""

from __future__ import annotations

import random
from typing import Any

from tina.data.tasks.phrasing import phrase
from tina.data.tasks.record import build_record


def _digits(value: int, width: int) -> list[int]:
    """Decimal digits of `value`, least significant first, padded to `width`."""
    return [(value // 10**i) % 10 for i in range(width)]


def _number(rng: random.Random, n_digits: int) -> int:
    low = 0 if n_digits == 1 else 10 ** (n_digits - 1)
    return rng.randint(low, 10**n_digits - 1)


def _final_carry(steps: list[str], carry: int, partial: str) -> list[str]:
    """The carry out of the top digit as a step of its own: `r<carry><partial>;`."""
    return [*steps, f"r{carry}{partial};"] if carry else steps


def add_steps(a: int, b: int) -> list[str]:
    """Digit trace of a + b: `x+y+carry=sum r<partial>;` per digit, then the final carry."""
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    steps, carry, partial = [], 0, ""
    for i in range(width):
        total = da[i] + db[i] + carry
        partial = str(total % 10) + partial
        steps.append(f"{da[i]}+{db[i]}+{carry}={total} r{partial};")
        carry = total // 10
    return _final_carry(steps, carry, partial)


def sub_steps(a: int, b: int) -> list[str]:
    """Digit trace of a - b (a >= b): `x-y-borrow=digit b<borrow out> r<partial>;` per digit."""
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    steps, borrow, partial = [], 0, ""
    for i in range(width):
        diff = da[i] - db[i] - borrow
        borrow_out = 1 if diff < 0 else 0
        diff += 10 * borrow_out
        partial = str(diff) + partial
        steps.append(f"{da[i]}-{db[i]}-{borrow}={diff} b{borrow_out} r{partial};")
        borrow = borrow_out
    return steps


def mul_steps(a: int, m: int) -> list[str]:
    """Digit trace of a × m (m one digit): `x*m=product+carry=value c<carry out> r<partial>;` per
    digit, then the final carry (the product fact, the carry addition and the carry out are
    written apart: small steps learn faster)."""
    steps, carry, partial = [], 0, ""
    for d in _digits(a, len(str(a))):
        value = d * m + carry
        partial = str(value % 10) + partial
        carry_in, carry = carry, value // 10
        steps.append(f"{d}*{m}={d * m}+{carry_in}={value} c{carry} r{partial};")
    return _final_carry(steps, carry, partial)


def mul2_steps(a: int, b: int) -> list[str]:
    """Trace of a × b (b two digits): a × units, `|`, a × tens, `|`, then the sum of the two
    partial products (the second shifted by one digit) as an addition trace."""
    units, tens = b % 10, b // 10
    p1, p2 = a * units, a * tens * 10
    return [*mul_steps(a, units), "|", *mul_steps(a, tens), "|", *add_steps(p1, p2)]


def _rechecks(expression: str, result: int, last_step: str) -> list[str]:
    return [
        f"check {expression}={result};",
        f"verify r{result} ok;",
        f"wait, redo {last_step}",
        f"so {expression} is {result};",
    ]


def _shorter(rng: random.Random, n_digits: int) -> int:
    """A second operand of n digits half the time, else of 1..n digits (mixed lengths)."""
    return _number(rng, n_digits if rng.random() < 0.5 else rng.randint(1, n_digits))


def _varied_operands(task: str, rng: random.Random, difficulty: int) -> tuple[int, int, int, int]:
    """(x, y, a, b) for a varied-phrasing question: x, y in written order, a, b in the trace's
    order. Operand lengths mix; add and mul take either order (the trace multiplies the longer
    operand by the shorter one, written order on a tie), subtraction keeps a >= b."""
    if task == "add":
        x, y = _number(rng, difficulty), _shorter(rng, difficulty)
        if rng.random() < 0.5:
            x, y = y, x
        return x, y, x, y
    if task == "sub":
        a = _number(rng, difficulty)
        k = difficulty if rng.random() < 0.5 else rng.randint(1, difficulty)
        b = rng.randint(0 if k == 1 else 10 ** (k - 1), min(a, 10**k - 1))
        return a, b, a, b
    a, m = _number(rng, difficulty), rng.randint(2, 9) if task == "mul" else rng.randint(10, 99)
    x, y = (a, m) if rng.random() < 0.5 else (m, a)
    if len(str(a)) == len(str(m)):
        a, m = x, y
    return x, y, a, m


def generate_arithmetic(
    task: str,
    rng: random.Random,
    difficulty: int,
    style: str,
    phrasing: str = "canonical",
    **record_kwargs: Any,
) -> dict[str, Any]:
    """One arithmetic record of the given task and difficulty (digits of the first operand).

    `phrasing` picks the question's form set (`tina.data.tasks.phrasing`): `canonical` draws
    exactly what the suite always drew; `varied` and `heldout` mix operand lengths and orders.
    """
    if task not in ("add", "sub", "mul", "mul2"):
        raise ValueError(f"unknown arithmetic task {task!r}")
    if phrasing == "canonical":
        x, y, a, b = _canonical_operands(task, rng, difficulty)
    else:
        x, y, a, b = _varied_operands(task, rng, difficulty)
    question = phrase(task, x, y, rng, phrasing)
    if task == "add":
        expression, result = f"{x}+{y}", a + b
        steps = [] if difficulty == 1 else add_steps(a, b)
    elif task == "sub":
        expression, result = f"{a}-{b}", a - b
        steps = [] if difficulty == 1 else sub_steps(a, b)
    elif task == "mul":
        expression, result = f"{x}*{y}", a * b
        steps = mul_steps(a, b)
    else:
        expression, result = f"{x}*{y}", a * b
        steps = mul2_steps(a, b)
        difficulty += 2
    last = steps[-1] if steps else ""
    return build_record(
        rng=rng,
        task=task,
        question=question,
        steps=steps,
        answer=str(result),
        rechecks=_rechecks(expression, result, last),
        style=style,
        plan_class="compute" if steps else "direct",
        difficulty=difficulty,
        meta={"expression": expression},
        **record_kwargs,
    )


def _canonical_operands(
    task: str, rng: random.Random, difficulty: int
) -> tuple[int, int, int, int]:
    """(x, y, a, b) as the suite has always drawn them: equal lengths, the long one first."""
    if task == "add":
        a, b = _number(rng, difficulty), _number(rng, difficulty)
    elif task == "sub":
        a = _number(rng, difficulty)
        b = rng.randint(0, a)
    elif task == "mul":
        a, b = _number(rng, difficulty), rng.randint(2, 9)
    else:
        a, b = _number(rng, difficulty), rng.randint(10, 99)
    return a, b, a, b
