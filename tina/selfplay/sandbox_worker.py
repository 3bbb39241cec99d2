"""The program that runs inside the sandbox's child process (see `tina.selfplay.sandbox`).

What it does: started as `python -I -S -B sandbox_worker.py` in a fresh empty directory, it reads
one JSON request from stdin (limits, then calls: source, entry function, arguments as a `repr`
of a list of literals), locks itself down, then runs the calls one after another and writes one
JSON line per call to stdout: `{"status", "value" (a repr), "stdout", "message"}`.

Lock-down, in this order, before any untrusted code runs:
1. every module it needs is imported first (ctypes only for step 2, then dropped): after step 4
   nothing can be imported (no descriptor can be opened, and as `nobody` the interpreter's
   files may be unreadable);
2. a new network namespace (`unshare(CLONE_NEWNET)`, as root, else with a user namespace) when
   asked; best-effort: where the kernel refuses, the worker goes on and says so in its hello line;
3. rlimits: no core dumps, no file may grow (RLIMIT_FSIZE 0), no new process or thread
   (RLIMIT_NPROC 0), address space `memory_mb`, CPU `cpu_s` per call (the soft limit is moved
   up before each call; past it the kernel kills the worker with SIGXCPU);
4. no new file descriptor (RLIMIT_NOFILE 3: only stdin, stdout and stderr stay open), so no
   file, pipe or socket can be opened even if the AST rules were bypassed;
5. when started as root: drop to uid/gid 65534 (`nobody`) with no supplementary groups.
Each call then runs in a fresh namespace whose `__builtins__` is `SAFE_BUILTINS` plus a `print`
that captures at most `max_output_bytes`; arguments are rebuilt from their repr for every call,
so one call cannot change another's input.

What it does not do: validate the source (the parent does, with
`tina.selfplay.sandbox.validate_program`, before anything reaches this process), import anything
from Tina (it must run with `-I -S`), or pickle anything. `literal_problem` is also imported by
the parent, so that the parent and the worker share one definition of a literal value.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import resource
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any

PROGRAM_FILENAME = "<program>"
MAX_LITERAL_DEPTH = 100
MAX_MESSAGE_CHARS = 500
NOBODY = 65534
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000

#: The builtins a program may use: pure functions over values, the value types, and the
#: exception types it may raise or catch. No I/O, no reflection, no code loading, no `type`.
SAFE_BUILTIN_NAMES: tuple[str, ...] = (
    "abs", "all", "any", "bin", "bool", "callable", "chr", "dict", "divmod", "enumerate",
    "filter", "float", "frozenset", "hex", "int", "isinstance", "issubclass", "iter", "len",
    "list", "map", "max", "min", "next", "oct", "ord", "pow", "range", "repr", "reversed",
    "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
    "ArithmeticError", "AssertionError", "Exception", "IndexError", "KeyError", "LookupError",
    "OverflowError", "RecursionError", "StopIteration", "TypeError", "ValueError",
    "ZeroDivisionError",
)  # fmt: skip
SAFE_BUILTINS: dict[str, Any] = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}


class NotLiteral(ValueError):
    """A value outside the literals that cross the process boundary."""


class _OutputLimit(BaseException):
    """Raised by the captured `print` past its cap (a BaseException: `except Exception` in the
    program does not swallow it; a bare `except` may, but the overflow is recorded anyway)."""


def literal_problem(value: Any, max_bytes: int | None = None) -> str | None:
    """Why `value` cannot cross the process boundary, or None when it can.

    Literals are None, bool, int, finite float, str, and list, tuple and dict of literals (dict
    keys: hashable literals), nested at most MAX_LITERAL_DEPTH deep, by exact type (subclasses
    are not literals). With `max_bytes`, "too large" when its repr would clearly exceed it
    (a cheap estimate: the caller still measures the real repr)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    size = 0
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if depth > MAX_LITERAL_DEPTH:
            return f"nests deeper than {MAX_LITERAL_DEPTH}"
        if item is None or kind is bool:
            size += 5
        elif kind is int:
            size += item.bit_length() * 3 // 10 + 2
        elif kind is float:
            if not math.isfinite(item):
                return f"float {item!r} is not finite"
            size += 8
        elif kind is str:
            size += len(item) + 2
        elif kind is list or kind is tuple:
            size += 2 + 2 * len(item)
            stack.extend((x, depth + 1) for x in item)
        elif kind is dict:
            size += 2 + 4 * len(item)
            for key, x in item.items():
                if type(key) not in (type(None), bool, int, float, str, tuple):
                    return f"dict key of type {type(key).__name__} is not a literal"
                stack.append((key, depth + 1))
                stack.append((x, depth + 1))
        else:
            return f"a value of type {kind.__name__} is not a literal"
        if max_bytes is not None and size > max_bytes:
            return "too large"
    return None


def _error_line(exc: BaseException) -> int | None:
    """The last line of the program in the exception's traceback."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _describe(exc: BaseException) -> str:
    line = _error_line(exc)
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception:
        text = type(exc).__name__
    where = f" (line {line})" if line is not None else ""
    return text[:MAX_MESSAGE_CHARS] + where


def _capturing_print(out: list[str], cap: int) -> tuple[Callable[..., None], list[bool]]:
    """A `print(*values, sep=" ", end="\\n")` that appends to `out`, at most `cap` bytes."""
    overflow = [False]
    used = [0]

    def print_(*values: Any, sep: Any = " ", end: Any = "\n") -> None:
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if type(sep) is not str or type(end) is not str:
            raise TypeError("sep and end must be strings")
        text = sep.join(str(v) for v in values) + end
        used[0] += len(text.encode("utf-8", "surrogatepass"))
        if used[0] > cap:
            overflow[0] = True
            raise _OutputLimit
        out.append(text)

    return print_, overflow


def run_call(
    code: types.CodeType, entry: str, args_repr: str, max_output_bytes: int
) -> dict[str, Any]:
    """Run `entry(*args)` of one compiled program in a fresh namespace; the result line."""
    printed: list[str] = []
    print_, overflow = _capturing_print(printed, max_output_bytes)
    namespace: dict[str, Any] = {
        "__builtins__": {**SAFE_BUILTINS, "print": print_},
        "__name__": "__sandbox__",
    }
    status, value, message = "ok", None, ""
    try:
        args = ast.literal_eval(args_repr)
        exec(code, namespace)
        function = namespace.get(entry)
        if type(function) is not types.FunctionType:
            raise NameError(f"the program defines no function {entry!r}")
        result = function(*args)
    except _OutputLimit:
        status, message = "output_too_large", f"printed more than {max_output_bytes} bytes"
    except MemoryError as exc:
        namespace.clear()  # free what the program held before describing the failure
        status, message = "memory", _describe(exc)
    except BaseException as exc:
        status, message = "error", _describe(exc)
    else:
        problem = literal_problem(result, max_output_bytes)
        if problem == "too large":
            status, message = "output_too_large", f"the result exceeds {max_output_bytes} bytes"
        elif problem is not None:
            status, message = "error", f"the result is not a literal: {problem}"
        else:
            try:
                value = repr(result)
            except BaseException as exc:  # e.g. an int past the digit limit of int->str
                status, message = "error", f"the result cannot be written: {_describe(exc)}"
            else:
                if len(value.encode("utf-8", "surrogatepass")) > max_output_bytes:
                    status, value = "output_too_large", None
                    message = f"the result exceeds {max_output_bytes} bytes"
    if overflow[0] and status != "memory":
        status, value = "output_too_large", None
        message = f"printed more than {max_output_bytes} bytes"
    return {"status": status, "value": value, "stdout": "".join(printed), "message": message}


def _unshare_network() -> bool:
    """Move into a new, empty network namespace; False where the kernel refuses. ctypes is
    imported only here, and dropped from `sys.modules` afterwards."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
        return bool(libc.unshare(flags) == 0)
    except (ImportError, OSError, AttributeError):
        return False
    finally:
        sys.modules.pop("ctypes", None)


def _lock_down(limits: dict[str, Any], n_calls: int) -> dict[str, Any]:
    """Steps 2–5 of the module docstring; what was achieved, for the hello line."""
    network = _unshare_network() if limits["network_namespace"] else False
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = math.ceil(used.ru_utime + used.ru_stime)
    cpu_hard = spent + limits["cpu_s"] * (n_calls + 1) + 1
    memory = limits["memory_mb"] * 2**20
    for name, value in (
        ("RLIMIT_CORE", 0),
        ("RLIMIT_FSIZE", 0),
        ("RLIMIT_NPROC", 0),
        ("RLIMIT_AS", memory),
        ("RLIMIT_CPU", cpu_hard),
        ("RLIMIT_NOFILE", 3),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    dropped = False
    if limits["drop_privileges"] and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        dropped = True
    return {"ready": True, "network_namespace": network, "dropped_privileges": dropped}


def _set_cpu_budget(cpu_s: int) -> None:
    """Soft CPU limit = CPU spent so far + cpu_s (the hard limit was fixed at lock-down)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(used.ru_utime + used.ru_stime) + cpu_s
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft, hard), hard))


def _write(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def main() -> None:
    """Read the request, lock down, say hello, run every call, one result line each."""
    warnings.simplefilter("ignore")  # SyntaxWarnings from compile() would only clutter stderr
    request = json.loads(sys.stdin.read())
    limits, calls = request["limits"], request["calls"]
    _write(_lock_down(limits, len(calls)))
    compiled: dict[str, types.CodeType] = {}
    for call in calls:
        _set_cpu_budget(limits["cpu_s"])
        source = call["source"]
        try:
            if source not in compiled:
                compiled[source] = compile(source, PROGRAM_FILENAME, "exec", dont_inherit=True)
        except BaseException as exc:
            _write({"status": "error", "value": None, "stdout": "", "message": _describe(exc)})
            continue
        _write(run_call(compiled[source], call["entry"], call["args"], limits["max_output_bytes"]))


if __name__ == "__main__":
    main()
