"""Arithmetic tasks with digit-by-digit think traces: add, subtract, multiply.

Each step handles one digit, least significant first, and prepends that one digit to the running
partial result; a carry out of the top digit is a last step of its own, so the final answer is a
copy of the last partial:

    Add 71 and 949
    <think>1+9+0=10 r0;7+4+1=12 r20;0+9+1=10 r020;r1020;</think><answer>1020</answer>

- `add`, `sub` (a ≥ b; borrows `b1`): n digits, difficulty n; 1-digit ones need no thinking.
- `mul`: n-digit × 1-digit (difficulty n), the carry written out: `4*7=28+2=30 c3 r08;`.
- `mul2`: n-digit × 2-digit (difficulty n + 2): two partial products, then their sum.

What it does not do: scoring (see `tina.data.tasks.scoring`) or contract checks. The traces in
detail: docs/data.md.
"""

from __future__ import annotations

import random
from typing import Any

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


def generate_arithmetic(
    task: str, rng: random.Random, difficulty: int, style: str, **record_kwargs: Any
) -> dict[str, Any]:
    """One arithmetic record of the given task and difficulty (digits of the first operand)."""
    if task == "add":
        a, b = _number(rng, difficulty), _number(rng, difficulty)
        question, expression, result = f"Add {a} and {b}", f"{a}+{b}", a + b
        steps = [] if difficulty == 1 else add_steps(a, b)
    elif task == "sub":
        a = _number(rng, difficulty)
        b = rng.randint(0, a)
        question, expression, result = f"Subtract {b} from {a}", f"{a}-{b}", a - b
        steps = [] if difficulty == 1 else sub_steps(a, b)
    elif task == "mul":
        a, m = _number(rng, difficulty), rng.randint(2, 9)
        question, expression, result = f"Multiply {a} by {m}", f"{a}*{m}", a * m
        steps = mul_steps(a, m)
    elif task == "mul2":
        a, b = _number(rng, difficulty), rng.randint(10, 99)
        question, expression, result = f"Multiply {a} by {b}", f"{a}*{b}", a * b
        steps = mul2_steps(a, b)
        difficulty += 2
    else:
        raise ValueError(f"unknown arithmetic task {task!r}")
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
