"""Tests for `tina.data.tasks.minipy`: Python's results on the subset, refusals, and limits.

Real Python (`exec` of the literal programs below, in this test only) is the oracle for the
subset; minipy itself never executes anything.
"""

from __future__ import annotations

import ast
import os
import random
import re
import time
from typing import Any

import pytest

from tina.data.tasks import generate_records
from tina.data.tasks.minipy import (
    MAX_MAGNITUDE,
    MAX_STEPS,
    MiniPyError,
    parse_function,
    run_function,
)

INPUTS = (-7, -1, 0, 1, 2, 3, 5, 9, 13, 40)
QUICK_SECONDS = 5.0  # generous: the limits trip in milliseconds, but the machine may be loaded


def python_oracle(source: str, argument: int) -> int:
    """What real Python returns for a trusted literal program (test-only oracle)."""
    name = parse_function(source).name
    namespace: dict[str, Any] = {
        "__builtins__": {"min": min, "max": max, "abs": abs, "range": range}
    }
    exec(source, namespace)
    return int(namespace[name](argument))


PROGRAMS = {
    "assign": "def f(x):\n  y = x * 3 - 7\n  z = y + x\n  return z",
    "augassign": "def f(x):\n  x += 4\n  x *= 3\n  x -= 1\n  x //= 2\n  x %= 7\n  return x",
    "if_else": "def f(x):\n  if x > 5:\n    y = x - 5\n  else:\n    y = 5 - x\n  return y",
    "elif": (
        "def f(x):\n  if x < 0:\n    return -1\n  elif x == 0:\n    return 0\n  else:\n    return 1"
    ),
    "if_without_else": "def f(x):\n  y = 1\n  if x % 2 == 0:\n    y = 2\n  return y * x",
    "for_range": "def f(x):\n  s = 0\n  for i in range(x):\n    s += i\n  return s",
    "for_range_start_stop": (
        "def f(x):\n  s = 1\n  for i in range(2, 6):\n    s = s * i + x\n  return s"
    ),
    "for_range_expression_bounds": (
        "def f(x):\n  s = 0\n  for i in range(x - 3, x + 2):\n    s += i * i\n  return s"
    ),
    "nested": (
        "def f(x):\n  s = 0\n  for i in range(4):\n    for j in range(i):\n"
        "      if (i + j + x) % 2 == 0:\n        s += i * j\n      else:\n        s -= 1\n"
        "  return s"
    ),
    "return_inside_loop": (
        "def f(x):\n  for i in range(20):\n    if i * i > x:\n      return i\n  return -1"
    ),
    "loop_variable_survives": "def f(x):\n  for i in range(3):\n    pass\n  return i + x",
    "loop_rebinds_argument": "def f(x):\n  for x in range(x, x + 3):\n    pass\n  return x",
    "min_max_abs": (
        "def f(x):\n  return max(min(x, 10), -3) + abs(x - 4) + min(x, 2, 7) + max(1, x, 3)"
    ),
    "floor_div_mod_negative": "def f(x):\n  return (x - 7) // 3 * 10 + (x - 7) % 3 + (-x) // 4",
    "unary_minus": "def f(x):\n  y = -x\n  return -(-y + 3)",
    "compare_chain": (
        "def f(x):\n  return (0 <= x < 10) + (1 < x != 5 >= 2) * 2 + (x == x <= 9) * 4"
    ),
    "compare_chain_short_circuits": "def f(x):\n  return 0 < x < 100 // x",
    "conditional_expression": (
        "def f(x):\n  return x * 2 if x % 3 == 0 else (x - 1 if x > 2 else -x)"
    ),
    "bool_ops": "def f(x):\n  return (x > 2 and x < 9) + (x < 0 or x > 10) * 2 + (not x) * 4",
    "bool_ops_return_operands": (
        "def f(x):\n  return (x or 7) + (x and 5) * 10 + (x % 2 or 100) + (0 or 0)"
    ),
    "bool_ops_short_circuit": (
        "def f(x):\n  if x == 0 or 12 // x > 3:\n    return 1\n  return (x != 0 and 12 % x) or 2"
    ),
    "bool_constants": "def f(x):\n  return True + x * False",
    "other_names": "def g(n):\n  total = n\n  total *= n\n  return total",
    "pass_and_early_return": "def f(x):\n  pass\n  if x:\n    return x\n  return 99",
}


@pytest.mark.parametrize("source", PROGRAMS.values(), ids=PROGRAMS.keys())
def test_results_match_python(source: str) -> None:
    for x in INPUTS:
        assert run_function(source, x) == python_oracle(source, x), f"f({x})"


def test_results_are_plain_ints() -> None:
    result = run_function("def f(x):\n  return x > 1", 5)
    assert result == 1 and type(result) is int


def test_task_suite_programs_match_python() -> None:
    records = generate_records("code_deduction", 80, seed=5) + generate_records(
        "code_abduction", 30, seed=5
    )
    rng = random.Random(0)
    for record in records:
        program = record["meta"]["program"]
        for x in (record["meta"]["input"], rng.randint(-50, 250)):
            assert run_function(program, x) == python_oracle(program, x)


# --- refusals ------------------------------------------------------------------------------------

REFUSED = {
    "import_at_top": ("import os\ndef f(x):\n  return x", "exactly one function definition"),
    "import_inside": ("def f(x):\n  import os\n  return x", "statement Import"),
    "from_import_inside": (
        "def f(x):\n  from os import system\n  return x",
        "statement ImportFrom",
    ),
    "attribute_dunder": ("def f(x):\n  return x.__class__", "expression Attribute"),
    "attribute_call": ("def f(x):\n  return x.bit_length()", "expression Call"),
    "dunder_import": ("def f(x):\n  return __import__('os')", "expression Call"),
    "open": ("def f(x):\n  return open('/etc/passwd')", "expression Call"),
    "eval": ("def f(x):\n  return eval('x + 1')", "expression Call"),
    "exec": ("def f(x):\n  exec('y = 1')\n  return x", "statement Expr"),
    "getattr": ("def f(x):\n  return getattr(x, 'real')", "expression Call"),
    "print": ("def f(x):\n  print(x)\n  return x", "statement Expr"),
    "range_as_value": ("def f(x):\n  return range(3)", "expression Call"),
    "recursion": ("def f(x):\n  return f(x - 1)", "expression Call"),
    "min_with_keyword": ("def f(x):\n  return min(x, 1, key=abs)", "expression Call"),
    "max_one_argument": ("def f(x):\n  return max(x)", "two or more arguments"),
    "min_no_argument": ("def f(x):\n  return min()", "two or more arguments"),
    "abs_two_arguments": ("def f(x):\n  return abs(x, 1)", "exactly one argument"),
    "starred_argument": ("def f(x):\n  return max(*x, 1)", "expression Starred"),
    "lambda": ("def f(x):\n  g = lambda y: y\n  return x", "expression Lambda"),
    "list_comprehension": ("def f(x):\n  return [i for i in range(x)]", "expression ListComp"),
    "generator_expression": (
        "def f(x):\n  return max(0, (i for i in range(x)))",
        "expression GeneratorExp",
    ),
    "while_loop": ("def f(x):\n  while x > 0:\n    x -= 1\n  return x", "statement While"),
    "string": ("def f(x):\n  return 'x'", "expression Constant"),
    "float": ("def f(x):\n  return x + 1.5", "expression Constant"),
    "none": ("def f(x):\n  return None", "expression Constant"),
    "subscript": ("def f(x):\n  y = x\n  return y[0]", "expression Subscript"),
    "tuple": ("def f(x):\n  return (x, x)", "expression Tuple"),
    "walrus": ("def f(x):\n  return (y := x) + y", "expression NamedExpr"),
    "global": ("def f(x):\n  global y\n  y = x\n  return y", "statement Global"),
    "nonlocal": ("def f(x):\n  nonlocal y\n  return x", "statement Nonlocal"),
    "power": ("def f(x):\n  return x ** 2", "expression BinOp"),
    "true_division": ("def f(x):\n  return x / 2", "expression BinOp"),
    "shift": ("def f(x):\n  return x << 60", "expression BinOp"),
    "power_assign": ("def f(x):\n  x **= 2\n  return x", "statement AugAssign"),
    "unary_invert": ("def f(x):\n  return ~x", "expression UnaryOp"),
    "is_comparison": ("def f(x):\n  return x is 1", "comparison Is"),
    "in_after_false_link": ("def f(x):\n  return x < 0 in x", "comparison In"),
    "tuple_assignment": ("def f(x):\n  a, b = x, x\n  return a", "only `name = expression`"),
    "chained_assignment": ("def f(x):\n  a = b = x\n  return a", "only `name = expression`"),
    "annotated_assignment": ("def f(x):\n  y: int = x\n  return y", "statement AnnAssign"),
    "range_with_step": (
        "def f(x):\n  for i in range(0, 9, 2):\n    x += i\n  return x",
        "only `for",
    ),
    "for_over_tuple": ("def f(x):\n  for i in (1, 2):\n    x += i\n  return x", "only `for"),
    "for_else": (
        "def f(x):\n  for i in range(2):\n    pass\n  else:\n    x = 0\n  return x",
        "only `for",
    ),
    "try": ("def f(x):\n  try:\n    return x\n  except Exception:\n    return 0", "statement Try"),
    "with": ("def f(x):\n  with x:\n    return x", "statement With"),
    "raise": ("def f(x):\n  raise ValueError", "statement Raise"),
    "assert": ("def f(x):\n  assert x\n  return x", "statement Assert"),
    "delete": ("def f(x):\n  del x\n  return 1", "statement Delete"),
    "nested_function": (
        "def f(x):\n  def g(y):\n    return y\n  return x",
        "statement FunctionDef",
    ),
    "class_inside": ("def f(x):\n  class A:\n    pass\n  return x", "statement ClassDef"),
    "undefined_name": ("def f(x):\n  return y", "name 'y' is not defined"),
    "bare_return": ("def f(x):\n  return", "return needs a value"),
    "two_functions": (
        "def f(x):\n  return x\ndef g(x):\n  return x",
        "exactly one function definition",
    ),
    "class": ("class A:\n  pass", "exactly one function definition"),
    "async_function": ("async def f(x):\n  return x", "exactly one function definition"),
    "bare_expression": ("x + 1", "exactly one function definition"),
    "empty_source": ("", "exactly one function definition"),
    "two_arguments": ("def f(x, y):\n  return x", "exactly one plain argument"),
    "no_argument": ("def f():\n  return 1", "exactly one plain argument"),
    "default_argument": ("def f(x=1):\n  return x", "exactly one plain argument"),
    "varargs": ("def f(*x):\n  return 1", "exactly one plain argument"),
    "keyword_only": ("def f(x, *, y):\n  return x", "exactly one plain argument"),
    "kwargs": ("def f(x, **k):\n  return x", "exactly one plain argument"),
    "positional_only": ("def f(x, /):\n  return x", "exactly one plain argument"),
    "decorator": ("@staticmethod\ndef f(x):\n  return x", "exactly one plain argument"),
    "syntax_error": ("def f(x)\n  return x", "syntax error"),
    "bad_indentation": ("def f(x):\nreturn x", "syntax error"),
    "null_byte": ("def f(x):\n  return x\x00", "syntax error"),
    "too_many_digits": ("def f(x):\n  return " + "9" * 5000, "syntax error"),
    "deep_parentheses": ("def f(x):\n  return " + "(" * 300 + "x" + ")" * 300, "syntax error"),
    "deep_unary_minus": ("def f(x):\n  return " + "-" * 100_000 + "x", "nests too deeply"),
    "long_sum_chain": ("def f(x):\n  return " + "+".join(["x"] * 5000), "nests too deeply"),
}


@pytest.mark.parametrize(("source", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_refusals_raise_minipy_error(source: str, message: str) -> None:
    with pytest.raises(MiniPyError, match=re.escape(message)):
        run_function(source, 3)


def test_minipy_error_is_a_value_error() -> None:
    assert issubclass(MiniPyError, ValueError)


def test_refused_calls_are_never_made(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def fake_system(*args: Any) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(os, "system", fake_system)
    for source in (
        "def f(x):\n  return __import__('os').system('echo pwned')",
        "def f(x):\n  return max(x, __import__('os').system('echo pwned'))",
        "def f(x):\n  if x:\n    return x\n  return os.system('echo pwned')",
    ):
        with pytest.raises(MiniPyError):
            run_function(source, 0)
    # Refusal happens when the construct is reached: an untaken branch is never looked at.
    assert run_function("def f(x):\n  if x:\n    return x\n  return os.system('ls')", 1) == 1
    assert calls == []


def test_parse_function_returns_the_function() -> None:
    fn = parse_function("def f(x):\n  return x")
    assert isinstance(fn, ast.FunctionDef) and fn.name == "f"


# --- limits --------------------------------------------------------------------------------------

LIMITED = {
    "huge_range": (
        "def f(x):\n  s = 0\n  for i in range(1000000000000):\n    s += 1\n  return s",
        3,
        "steps",
    ),
    "huge_range_from_argument": (
        "def f(x):\n  for i in range(x):\n    pass\n  return x",
        10**12,
        "steps",
    ),
    "nested_loops": (
        "def f(x):\n  for i in range(1000):\n    for j in range(1000):\n      x = x\n  return x",
        3,
        "steps",
    ),
    "repeated_squaring": (
        "def f(x):\n  for i in range(100):\n    x = x * x\n  return x",
        3,
        "exceeds",
    ),
    "growing_sum": ("def f(x):\n  for i in range(60):\n    x += x\n  return x", 1, "exceeds"),
    "negative_magnitude": (
        "def f(x):\n  for i in range(100):\n    x = x * -x\n  return x",
        3,
        "exceeds",
    ),
    "huge_literal": ("def f(x):\n  return 10000000000000 + x", 3, "exceeds"),
    "huge_argument": ("def f(x):\n  return x", MAX_MAGNITUDE + 1, "exceeds"),
    "floor_division_by_zero": ("def f(x):\n  return x // 0", 3, "division by zero"),
    "modulo_by_zero_at_runtime": ("def f(x):\n  return 10 % (x - 3)", 3, "division by zero"),
    "missing_return": ("def f(x):\n  y = x", 3, "without returning"),
    "missing_return_on_one_path": ("def f(x):\n  if x > 5:\n    return 1", 3, "without returning"),
    "deep_expression": (
        "def f(x):\n  return " + "-(" * 600 + "x" + ")" * 600,
        3,
        "nests too deeply|syntax",
    ),
}


@pytest.mark.parametrize(("source", "argument", "message"), LIMITED.values(), ids=LIMITED.keys())
def test_limits_raise_minipy_error_quickly(source: str, argument: int, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(MiniPyError, match=message):
        run_function(source, argument)
    assert time.perf_counter() - started < QUICK_SECONDS


def test_limits_leave_room_for_ordinary_programs() -> None:
    loop = "def f(x):\n  s = 0\n  for i in range(1000):\n    s += i\n  return s"
    assert run_function(loop, 0) == sum(range(1000))  # ~4,000 steps, under MAX_STEPS
    assert MAX_STEPS >= 5_000
    assert run_function("def f(x):\n  return x * x", 10**6) == MAX_MAGNITUDE  # at the limit: ok
    assert run_function("def f(x):\n  return " + "+".join(["x"] * 200), 2) == 400
