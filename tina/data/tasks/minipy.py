"""A tiny, safe interpreter for the integer Python subset of Tina's code tasks.

What it does: parses source with `ast` and *interprets* it node by node — one function
`def f(x): ...` over integers with assignments, augmented assignments, `if`/`else`,
`for i in range(k)`, `return`, the operators `+ - * // %`, unary minus, comparisons, conditional
expressions, `and`/`or`/`not`, and calls to `min`, `max`, `abs`. Anything else is refused with a
`MiniPyError` naming the construct. Nothing is ever handed to `exec`/`eval`, so there is nothing
to escape from; a step limit and a magnitude limit bound time and memory.

What it does not do: run general Python. Self-play's sandboxed executor (a separate process with
rlimits) is a different module; this one only scores the task suite's answers exactly.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

MAX_STEPS = 10_000
MAX_MAGNITUDE = 10**12


class MiniPyError(ValueError):
    """A program outside the subset, or one that broke a limit while running."""


_BINOPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[int, int], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_CALLS: dict[str, Callable[..., int]] = {"min": min, "max": max, "abs": abs}


class _Return(Exception):
    def __init__(self, value: int) -> None:
        self.value = value


class _Machine:
    def __init__(self) -> None:
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise MiniPyError(f"program ran more than {MAX_STEPS} steps")

    def expr(self, node: ast.expr, env: dict[str, int]) -> int:
        self.tick()
        value: Any
        if isinstance(node, ast.Constant) and isinstance(node.value, int):  # bool is an int
            value = int(node.value)
        elif isinstance(node, ast.Name):
            if node.id not in env:
                raise MiniPyError(f"name {node.id!r} is not defined")
            value = env[node.id]
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.expr(node.left, env), self.expr(node.right, env)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
                raise MiniPyError("division by zero")
            value = _BINOPS[type(node.op)](left, right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = -self.expr(node.operand, env)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            value = int(not self.expr(node.operand, env))
        elif isinstance(node, ast.BoolOp):
            # Python semantics: short-circuit, and the value is the deciding operand's.
            is_and = isinstance(node.op, ast.And)
            for operand in node.values:
                value = self.expr(operand, env)
                if bool(value) != is_and:
                    break
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise MiniPyError(f"comparison {type(op).__name__} is not supported")
            left, value = self.expr(node.left, env), 1
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.expr(comparator, env)
                if not _CMPOPS[type(op)](left, right):
                    value = 0  # a chain stops at its first false link, like Python's
                    break
                left = right
        elif isinstance(node, ast.IfExp):
            branch = node.body if self.expr(node.test, env) else node.orelse
            value = self.expr(branch, env)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _CALLS
            and not node.keywords
        ):
            # Checked here: min/max of one int (it would be iterated) or abs(a, b) is a TypeError.
            name, count = node.func.id, len(node.args)
            if (count != 1) if name == "abs" else (count < 2):
                need = "exactly one argument" if name == "abs" else "two or more arguments"
                raise MiniPyError(f"{name}() takes {need} here")
            value = _CALLS[node.func.id](*(self.expr(a, env) for a in node.args))
        else:
            raise MiniPyError(f"expression {type(node).__name__} is not supported")
        if abs(value) > MAX_MAGNITUDE:
            raise MiniPyError(f"value exceeds {MAX_MAGNITUDE}")
        return int(value)

    def block(self, body: list[ast.stmt], env: dict[str, int]) -> None:
        for stmt in body:
            self.stmt(stmt, env)

    def stmt(self, node: ast.stmt, env: dict[str, int]) -> None:
        self.tick()
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise MiniPyError("only `name = expression` assignments are supported")
            env[node.targets[0].id] = self.expr(node.value, env)
        elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOPS:
            if not isinstance(node.target, ast.Name):
                raise MiniPyError("only `name op= expression` is supported")
            combined = ast.BinOp(left=ast.Name(id=node.target.id), op=node.op, right=node.value)
            env[node.target.id] = self.expr(combined, env)
        elif isinstance(node, ast.Return):
            if node.value is None:
                raise MiniPyError("return needs a value")
            raise _Return(self.expr(node.value, env))
        elif isinstance(node, ast.If):
            self.block(node.body if self.expr(node.test, env) else node.orelse, env)
        elif isinstance(node, ast.For):
            if not (
                isinstance(node.target, ast.Name)
                and isinstance(node.iter, ast.Call)
                and isinstance(node.iter.func, ast.Name)
                and node.iter.func.id == "range"
                and 1 <= len(node.iter.args) <= 2
                and not node.orelse
            ):
                raise MiniPyError("only `for name in range(...)` loops are supported")
            bounds = [self.expr(a, env) for a in node.iter.args]
            for i in range(*bounds):
                env[node.target.id] = i
                self.block(node.body, env)
        elif isinstance(node, ast.Pass):
            pass
        else:
            raise MiniPyError(f"statement {type(node).__name__} is not supported")


def parse_function(source: str) -> ast.FunctionDef:
    """The single one-argument function `f` in `source`; MiniPyError otherwise."""
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        raise MiniPyError(f"syntax error: {exc.msg} (line {exc.lineno})") from None
    except (RecursionError, MemoryError, ValueError):
        # CPython's parser signals too-deep nesting with these (e.g. 10**5 unary minuses).
        raise MiniPyError("source nests too deeply to parse") from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.FunctionDef):
        raise MiniPyError("source must hold exactly one function definition")
    fn = module.body[0]
    args = fn.args
    if (
        len(args.args) != 1
        or args.vararg
        or args.kwarg
        or args.kwonlyargs
        or args.posonlyargs
        or args.defaults
        or fn.decorator_list
    ):
        raise MiniPyError("the function must take exactly one plain argument")
    return fn


def run_function(source: str, argument: int) -> int:
    """Interpret `source` (one function of one int) on `argument`; the returned int."""
    fn = parse_function(source)
    machine = _Machine()
    try:
        machine.block(fn.body, {fn.args.args[0].arg: int(argument)})
    except _Return as done:
        return done.value
    except RecursionError:
        raise MiniPyError("program nests too deeply") from None
    raise MiniPyError("function ended without returning a value")
