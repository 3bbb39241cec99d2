"""Run untrusted Python functions (self-play's proposals and answers) and say what happened.

What it covers, in layers: the first refuses every escape the tests try; the others bound what
a program that got past it could do (the tests also run such a program past the first layer).
1. AST validation before anything runs (`validate_program`): a whitelist of syntax (no
   `import`, `class`, `with`, `async`, `match`, `try/except*`), no dunder identifiers anywhere,
   no attribute outside `SAFE_ATTRIBUTES` (so no `__subclasses__` walks, no `gi_frame`,
   `f_back`, `f_globals`, no `str.format`/`format_map` field lookups), and no name in
   `FORBIDDEN_NAMES` (`exec`, `eval`, `open`, `getattr`, `globals`, `__import__`, …). Every
   problem is reported as `line N: rule: detail`.
2. A separate process per batch: `python -I -S -B tina/selfplay/sandbox_worker.py` (isolated
   mode: no environment, no site, no user paths), its own session (process group), a fresh
   temporary working directory that is removed afterwards, and a minimal environment. The
   worker locks itself down before running anything (see `tina.selfplay.sandbox_worker`):
   builtins restricted to `SAFE_BUILTINS` (no `__import__`, `open`, `type`, …), RLIMIT_CPU per
   call, RLIMIT_AS, RLIMIT_FSIZE 0, RLIMIT_NPROC 0, no core dumps, RLIMIT_NOFILE 3 (no file,
   pipe or socket can be opened), and, when started as root, uid/gid `nobody`.
3. Network: nothing can import `socket`, and no descriptor can be opened; on top of that the
   worker asks for an empty network namespace (`unshare(CLONE_NEWNET)`; as a non-root user via a
   user namespace). That last step is best-effort: kernels that forbid unprivileged user
   namespaces refuse it, and then only the first two layers stand.
4. A wall-clock deadline per call: past it the whole process group is killed with SIGKILL.
5. Values cross the boundary as literals only (None, bool, int, finite float, str, and lists,
   tuples and dicts of them): arguments as a `repr` the worker reads with `ast.literal_eval`,
   results as a `repr` the parent reads the same way; nothing is ever unpickled. Printed text
   and results are capped at `max_output_bytes`; the parent also stops reading a worker that
   writes more than a bounded amount.
6. Determinism: with `check_determinism`, every call that finished is run again in a second
   worker (a new process, so a new string-hash seed and new addresses) and must give the same
   status, value, printed text and message; otherwise the verdict is `nondeterministic`.

What it does not cover: it is not a security boundary against a determined attacker with a
CPython memory-corruption bug or a way past the AST rules. Past them, the worker is an ordinary
process of the same kernel: no seccomp filter, no chroot, no mount or PID namespace. Started by
a non-root user it runs as that user, so it could signal that user's other processes
(`os.kill`); RLIMIT_NPROC does not bind root, which is why a root parent drops the worker to
`nobody` (with `drop_privileges=False` a root worker could fork). Network isolation without
root rests on user namespaces being allowed. A program may use up to `cpu_s` of CPU and
`memory_mb` of memory per call, and the determinism check doubles the cost of every call that
finishes. It runs only the Python subset above: no classes, imports, or sets as results.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tina.selfplay.sandbox_worker import literal_problem

STATUSES: tuple[str, ...] = (
    "ok",
    "refused",
    "timeout",
    "memory",
    "error",
    "nondeterministic",
    "output_too_large",
)
WORKER_PATH = Path(__file__).with_name("sandbox_worker.py")

#: Names a program may not mention at all: each is a way out of the subset (code loading,
#: reflection, I/O, the interpreter's state), refused by name so the message says why.
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "exec", "eval", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "globals",
        "locals", "vars", "dir", "input", "breakpoint", "help", "exit", "quit", "memoryview",
        "type", "object", "super", "classmethod", "staticmethod", "property", "id", "hash",
        "importlib", "builtins", "os", "sys", "subprocess", "socket", "signal", "ctypes",
        "pathlib", "io", "shutil", "time", "resource", "gc", "inspect", "code", "pickle",
    }
)  # fmt: skip

#: The only attributes a program may read: methods of str, list, dict, set, tuple, int and
#: float that compute on values, and an exception's `args`. Everything else (frames, code
#: objects, `format`, `mro`, `gi_frame`, `f_back`, …) is refused.
SAFE_ATTRIBUTES: frozenset[str] = frozenset(
    {
        # str
        "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "index",
        "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower",
        "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
        "lstrip", "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind",
        "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines",
        "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
        # list, dict, set
        "append", "clear", "copy", "extend", "insert", "pop", "remove", "reverse", "sort",
        "fromkeys", "get", "items", "keys", "popitem", "setdefault", "update", "values", "add",
        "difference", "difference_update", "discard", "intersection", "intersection_update",
        "isdisjoint", "issubset", "issuperset", "symmetric_difference",
        "symmetric_difference_update", "union",
        # numbers, exceptions
        "bit_length", "bit_count", "conjugate", "denominator", "numerator", "real", "imag",
        "as_integer_ratio", "is_integer", "args",
    }
)  # fmt: skip

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.FunctionDef, ast.Lambda, ast.arguments, ast.arg, ast.Return, ast.Delete,
    ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If, ast.Raise, ast.Try,
    ast.ExceptHandler, ast.Assert, ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.Global,
    ast.Nonlocal, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Dict, ast.Set,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Yield,
    ast.YieldFrom, ast.Compare, ast.Call, ast.keyword, ast.FormattedValue, ast.JoinedStr,
    ast.Constant, ast.Attribute, ast.Subscript, ast.Starred, ast.Name, ast.List, ast.Tuple,
    ast.Slice, ast.NamedExpr, ast.expr_context, ast.operator, ast.boolop, ast.unaryop,
    ast.cmpop,
)  # fmt: skip


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed call (a batch applies them to each of its calls)."""

    timeout_s: float = 5.0  #: wall-clock seconds one call may take before the worker is killed
    cpu_s: int = 2  #: CPU seconds one call may use (RLIMIT_CPU, whole seconds)
    memory_mb: int = 256  #: address space of the worker process (RLIMIT_AS), in MiB
    max_output_bytes: int = 65_536  #: cap on printed text and on the result's repr, each
    check_determinism: bool = True  #: run each finished call again in a second worker
    max_source_bytes: int = 20_000  #: longer sources are refused before parsing
    startup_timeout_s: float = 30.0  #: wall-clock seconds a worker may take to start
    network_namespace: bool = True  #: ask for an empty network namespace (best-effort)
    drop_privileges: bool = True  #: a worker started as root becomes uid/gid 65534 (nobody)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.startup_timeout_s <= 0:
            raise ValueError("timeout_s and startup_timeout_s must be positive")
        if self.cpu_s < 1:
            raise ValueError("cpu_s must be at least 1 (RLIMIT_CPU counts whole seconds)")
        if self.memory_mb < 64:
            raise ValueError("memory_mb must be at least 64: the interpreter itself needs it")
        if self.max_output_bytes < 1 or self.max_source_bytes < 1:
            raise ValueError("max_output_bytes and max_source_bytes must be positive")


@dataclass(frozen=True)
class Verdict:
    """What happened to one call. `value` is the returned literal when status is "ok"."""

    status: str  #: one of STATUSES
    value: Any = None  #: the result (None unless ok)
    stdout: str = ""  #: what the program printed (capped)
    message: str = ""  #: why it was refused or failed: the rule and line, or the exception

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Call(NamedTuple):
    """One call of a batch: `entry(*args)` of the program `source`."""

    source: str
    entry: str
    args: Sequence[Any]


def _is_dunder(name: str) -> bool:
    return name.startswith("__")


def _identifiers(node: ast.AST) -> list[tuple[str, str]]:
    """(kind, identifier) pairs a node introduces or reads."""
    if isinstance(node, ast.Name):
        return [("name", node.id)]
    if isinstance(node, ast.Attribute):
        return [("attribute", node.attr)]
    if isinstance(node, ast.FunctionDef):
        return [("function", node.name)]
    if isinstance(node, ast.arg):
        return [("argument", node.arg)]
    if isinstance(node, ast.keyword) and node.arg is not None:
        return [("keyword", node.arg)]
    if isinstance(node, ast.ExceptHandler) and node.name is not None:
        return [("name", node.name)]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [("name", name) for name in node.names]
    return []


def validate_program(
    source: str, entry: str | None = None, max_source_bytes: int = 20_000
) -> list[str]:
    """Every reason to refuse `source`, each `line N: rule: detail`; [] when it may run.

    With `entry`, the program must also define that function at its top level."""
    if len(source.encode("utf-8", "surrogatepass")) > max_source_bytes:
        return [f"line 1: size: the source exceeds {max_source_bytes} bytes"]
    try:
        module = ast.parse(source)
    except SyntaxError as exc:
        return [f"line {exc.lineno or 1}: syntax: {exc.msg}"]
    except (RecursionError, MemoryError, ValueError) as exc:
        return [f"line 1: syntax: the source cannot be parsed ({type(exc).__name__})"]
    problems = []
    for node in ast.walk(module):
        line = getattr(node, "lineno", 1)
        if not isinstance(node, _ALLOWED_NODES):
            # Other node kinds (alias, withitem, match_case, patterns) only occur inside a
            # statement refused here already.
            if isinstance(node, (ast.stmt, ast.expr)):
                problems.append(f"line {line}: construct: {type(node).__name__} is not allowed")
            continue
        for kind, name in _identifiers(node):
            if _is_dunder(name):
                problems.append(f"line {line}: dunder: {kind} {name!r} is not allowed")
            elif kind == "attribute" and name not in SAFE_ATTRIBUTES:
                problems.append(f"line {line}: attribute: {name!r} is not allowed")
            elif kind != "attribute" and name in FORBIDDEN_NAMES:
                problems.append(f"line {line}: forbidden-name: {name!r} is not allowed")
    if entry is not None and not problems:
        defined = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
        if entry not in defined:
            problems.append(f"line 1: entry: no top-level function {entry!r}")
    return problems


def normalized_program(source: str) -> str:
    """A key equal for programs that differ only in layout and comments (`ast.dump`)."""
    return ast.dump(ast.parse(source))


# --- running workers ------------------------------------------------------------------------


@dataclass
class _Worker:
    """One worker process and what has been read from it."""

    process: subprocess.Popen[bytes]
    workdir: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytes = b""
    killed_for: str = ""  #: "timeout" or "output_too_large" when the parent killed it


def _request(calls: Sequence[Call], config: SandboxConfig) -> bytes:
    limits = {
        "cpu_s": config.cpu_s,
        "memory_mb": config.memory_mb,
        "max_output_bytes": config.max_output_bytes,
        "network_namespace": config.network_namespace,
        "drop_privileges": config.drop_privileges,
    }
    body = [{"source": c.source, "entry": c.entry, "args": repr(list(c.args))} for c in calls]
    return json.dumps({"limits": limits, "calls": body}).encode()


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group (its session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _run_worker(calls: Sequence[Call], config: SandboxConfig) -> _Worker:
    """Start a worker on `calls` and read its hello line and result lines until it ends, dies,
    or misses a deadline (then it is killed)."""
    workdir = tempfile.mkdtemp(prefix="tina-sandbox-")
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(WORKER_PATH)],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        worker = _Worker(process, workdir)
        try:
            _exchange(worker, _request(calls, config), len(calls), config)
            if not worker.killed_for and len(worker.lines) < len(calls) + 1:
                # Its output ended early: let it finish dying, so its exit status says why.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=config.timeout_s)
        finally:
            _kill(process)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        return worker
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _exchange(worker: _Worker, request: bytes, n_calls: int, config: SandboxConfig) -> None:
    process = worker.process
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        process.stdin.write(request)
        process.stdin.close()
    except BrokenPipeError:
        pass  # the worker died at once; its exit status tells why
    # A result line holds a repr and printed text of at most max_output_bytes each; JSON can
    # escape each byte into at most 6 (\uXXXX): `line_cap` below. Longer is not an honest worker.
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)
    try:
        _read_lines(worker, selector, n_calls, config)
    finally:
        selector.close()


def _read_lines(
    worker: _Worker, selector: selectors.BaseSelector, n_calls: int, config: SandboxConfig
) -> None:
    """Collect result lines until all came, the output ended, or a deadline or cap broke."""
    process = worker.process
    line_cap = 12 * config.max_output_bytes + 4096
    pending = b""
    deadline = time.monotonic() + config.startup_timeout_s
    open_streams = 2
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            worker.killed_for = "timeout"
            return
        for key, _ in selector.select(remaining):
            chunk = os.read(key.fd, 65_536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
            elif key.fileobj is process.stderr:
                worker.stderr = (worker.stderr + chunk)[-4096:]
            else:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    try:
                        worker.lines.append(json.loads(raw))
                    except ValueError:
                        worker.killed_for = "garbled"
                        return
                    deadline = time.monotonic() + config.timeout_s
                if len(pending) > line_cap:
                    worker.killed_for = "output_too_large"
                    return
                if len(worker.lines) == n_calls + 1:  # hello + one line per call
                    return


def _death_verdict(worker: _Worker, config: SandboxConfig) -> Verdict:
    """The verdict of the call a worker was running when it died or was killed."""
    code = worker.process.returncode
    stderr = worker.stderr.decode("utf-8", "replace").strip()
    if worker.killed_for == "timeout":
        started = "the worker did not start" if not worker.lines else "the call did not finish"
        return Verdict("timeout", message=f"{started} within the wall-clock limit")
    if worker.killed_for == "output_too_large":
        return Verdict("output_too_large", message="the worker wrote more than allowed")
    if worker.killed_for == "garbled":
        return Verdict("error", message="the worker wrote a line that is not JSON")
    if code == -signal.SIGXCPU:
        return Verdict("timeout", message=f"CPU limit of {config.cpu_s} s")
    if "MemoryError" in stderr or "memory" in stderr.lower() or code == -signal.SIGKILL:
        return Verdict("memory", message=f"the worker ran out of memory (exit {code})")
    return Verdict("error", message=f"the worker exited with {code}: {stderr[-300:]}")


def _verdict(line: dict[str, Any]) -> Verdict:
    """The verdict of one result line; the value is read back with `ast.literal_eval` only."""
    try:
        value = ast.literal_eval(line["value"]) if line["status"] == "ok" else None
        verdict = Verdict(line["status"], value, str(line["stdout"]), str(line["message"]))
    except (KeyError, TypeError, ValueError, SyntaxError, MemoryError, RecursionError):
        return Verdict("error", message="the worker wrote an unreadable result")
    if verdict.status not in STATUSES:
        return Verdict("error", message=f"the worker wrote an unknown status {verdict.status!r}")
    return verdict


def _run_calls(calls: Sequence[Call], config: SandboxConfig) -> list[Verdict]:
    """Verdicts of calls already validated, in as few workers as deaths allow: a call that
    kills its worker gets the death's verdict, and a new worker takes the calls after it."""
    verdicts: list[Verdict] = []
    while len(verdicts) < len(calls):
        rest = calls[len(verdicts) :]
        worker = _run_worker(rest, config)
        hello, results = worker.lines[:1], worker.lines[1:]
        verdicts += [_verdict(line) for line in results]
        if len(results) < len(rest):
            verdicts.append(_death_verdict(worker, config))
            if not hello:  # no worker starts (or not in time): do not retry for each call
                verdicts += [verdicts[-1]] * (len(calls) - len(verdicts))
    return verdicts


def _same(a: Verdict, b: Verdict) -> bool:
    return (a.status, repr(a.value), a.stdout, a.message) == (
        b.status,
        repr(b.value),
        b.stdout,
        b.message,
    )


def run_batch(
    batch: Sequence[Call | tuple[str, str, Sequence[Any]]], config: SandboxConfig
) -> list[Verdict]:
    """One verdict per call, in order. Calls are validated here (refused ones never run); the
    rest run in one worker process (more only when a call kills its worker), and, with
    `check_determinism`, once more in a second worker."""
    calls = [Call(*c) for c in batch]
    verdicts: list[Verdict | None] = [None] * len(calls)
    problems_of: dict[tuple[str, str], list[str]] = {}
    runnable: list[int] = []
    for i, call in enumerate(calls):
        key = (call.source, call.entry)
        if key not in problems_of:
            problems_of[key] = validate_program(call.source, call.entry, config.max_source_bytes)
        arg_problem = literal_problem(list(call.args), config.max_output_bytes)
        if problems_of[key]:
            verdicts[i] = Verdict("refused", message="; ".join(problems_of[key]))
        elif arg_problem is not None:
            verdicts[i] = Verdict("refused", message=f"arguments: {arg_problem}")
        else:
            runnable.append(i)
    first = _run_calls([calls[i] for i in runnable], config)
    for i, verdict in zip(runnable, first, strict=True):
        verdicts[i] = verdict
    if config.check_determinism:
        again = [i for i, v in zip(runnable, first, strict=True) if v.status in ("ok", "error")]
        second = _run_calls([calls[i] for i in again], config)
        for i, repeat in zip(again, second, strict=True):
            earlier = verdicts[i]
            assert earlier is not None
            if repeat.status in ("timeout", "memory", "output_too_large"):
                verdicts[i] = repeat  # a limit broken once is broken
            elif not _same(earlier, repeat):
                verdicts[i] = Verdict(
                    "nondeterministic",
                    message=f"two runs differ: {_summary(earlier)} vs {_summary(repeat)}",
                )
    return [v for v in verdicts if v is not None]


def _summary(verdict: Verdict) -> str:
    shown = repr(verdict.value) if verdict.ok else verdict.message
    return f"{verdict.status} {shown[:100]}"


def run_program(
    source: str, entry: str, args: Sequence[Any], config: SandboxConfig | None = None
) -> Verdict:
    """The verdict of `entry(*args)` in the program `source` (see the module docstring)."""
    return run_batch([Call(source, entry, args)], config or SandboxConfig())[0]
