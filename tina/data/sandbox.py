"""Run untrusted Python functions (self-play's proposals and answers) and say what happened.

What it covers, in layers: the first refuses every escape the tests try; the others bound what
a program that got past it could do (the tests also run such a program past the first layer).
1. AST validation before anything runs (`validate_program`), every problem reported as
   `line N: rule: detail`:
   - syntax: a whitelist (no `with`, `async`, `match`, `try/except*`); classes without class
     keywords (no `metaclass=`);
   - imports: only modules of `PURE_MODULES` (math, cmath, itertools, functools, collections,
     string, re, heapq, bisect, typing, operator, fractions, decimal, statistics, random,
     hashlib), by their own name (no submodule, no relative import, no `*`), and from each only
     its allowed attributes (`from typing import List`; `math.floor`);
   - dunders: no dunder identifier, except reading `__name__`, defining a method of
     `DUNDER_METHODS` (`__init__`, `__eq__`, `__lt__`, `__hash__`, `__iter__`, ...) in a class
     body, and `super().<such method>`; so no `__class__`, `__subclasses__`, `__globals__`,
     `__dict__`, `__mro__`, `__builtins__`, `__getattr__` or `__init_subclass__` hooks;
   - attributes, whatever the object: none that starts with `_`, nor frame, code, generator,
     coroutine or traceback internals (`gi_*`, `f_*`, `tb_*`, `co_*`, ...), `mro`, an ABC's
     `register`, `format_map`; `.format` only on a literal string whose fields are positions or
     names (`'{} items'.format(n)`, `'{0:>5}'`), not lookups (`'{0.__class__}'`, `'{0[x]}'`);
   - names (`FORBIDDEN_NAMES`): judged by what they are, not by spelling. Binding any name is
     fine (a parameter `input`, a local `time` or `code`); reading `exec`, `eval`, `open`,
     `getattr`, `globals`, `type`, ... is refused wherever it would reach the builtin (anything
     but a local or closure variable of a function, as `symtable` resolves it: so binding a
     global and deleting it, or a class-body or conditional binding, does not help, and a
     deleted function local is an UnboundLocalError, never the builtin). Module names (`os`,
     `sys`, ...) may not be read unless the program binds them.
   Threat model of the allowed modules (what their attributes could reach, and why those are
   left out) is in `tina.data.sandbox_worker.PURE_MODULES`: `typing.get_type_hints`
   evaluates annotation strings, `functools.singledispatch` calls it, `wraps`/`update_wrapper`
   and `operator.attrgetter`/`methodcaller` get attributes by name, `string.Formatter`'s
   `get_field` walks them, `re.DEBUG` prints, `decimal.DefaultContext` is shared by every new
   context, `random.SystemRandom` is not reproducible, `hashlib.new` takes any OpenSSL name.
2. A separate process per batch: `python -I -S -B tina/data/sandbox_worker.py` (isolated
   mode: no environment, no site, no user paths), its own session (process group), a fresh
   temporary working directory that is removed afterwards, and a minimal environment. The
   worker locks itself down before running anything (see `tina.data.sandbox_worker`):
   builtins restricted to `SAFE_BUILTINS` (no `open`, `type`, …; `__import__` and
   `__build_class__` only in restricted forms: allowlisted modules, no class keywords),
   RLIMIT_CPU per call, RLIMIT_AS, RLIMIT_FSIZE 0, RLIMIT_NPROC 0, no core dumps, RLIMIT_NOFILE 3
   (no file, pipe or socket can be opened), and, when started as root, uid/gid `nobody`.
3. Network: nothing can import `socket`, and no descriptor can be opened; on top of that the
   worker asks for an empty network namespace (`unshare(CLONE_NEWNET)`; as a non-root user via a
   user namespace). That last step is best-effort: kernels that forbid unprivileged user
   namespaces refuse it, and then only the first two layers stand.
4. A wall-clock deadline per call: past it the whole process group is killed with SIGKILL.
5. Values cross the boundary as text, never pickled. Arguments are literals (None, bool, int,
   finite float, str, and lists, tuples and dicts of them) written as a `repr` that the worker
   reads with `ast.literal_eval`. Results may also be sets, frozensets, bytes, complex numbers,
   nan and infinities, and ints up to 4300 digits: the worker writes `encode_value` text (Python
   literal syntax plus `set()`, `frozenset(...)`, `float('nan')`, `complex(a, b)`; set elements
   sorted by their text) and the parent reads it with `read_value`, which builds values from a
   few AST node kinds only. Printed text and results are capped at `max_output_bytes`; the
   parent also stops reading a worker that writes more than a bounded amount.
6. Determinism: with `check_determinism`, every call that finished is run again in a second
   worker (a new process, so a new string-hash seed and new addresses) and must give the same
   status, value, printed text and message (values compared by their `encode_value` text: a set
   in another order is the same, nan equals nan, 1 and True differ); otherwise the verdict is
   `nondeterministic`. `random` is reseeded before every call, so seeded or not it repeats.
7. Calls of one worker share no state a program can reach: module namespaces are fresh per
   call, `random` and the `decimal` context are reset, and a call that changes a shared library
   class or function (`collections.Counter.most_common = ...`) is an error, after which the
   worker quits and the next call gets a new one (see `tina.data.sandbox_worker`).

What it does not cover: it is not a security boundary against a determined attacker with a
CPython memory-corruption bug or a way past the AST rules. Past them, the worker is an ordinary
process of the same kernel: no seccomp filter, no chroot, no mount or PID namespace. Started by
a non-root user it runs as that user, so it could signal that user's other processes
(`os.kill`); RLIMIT_NPROC does not bind root, which is why a root parent drops the worker to
`nobody` (with `drop_privileges=False` a root worker could fork). Network isolation without
root rests on user namespaces being allowed. A program may use up to `cpu_s` of CPU and
`memory_mb` of memory per call, and the determinism check doubles the cost of every call that
finishes. It runs only the Python subset above: no `with`, no other module, no attribute
starting with `_` (so no `self._x` in a class), no `__getattr__`-style hooks, and the entry
function's arguments are plain literals (no sets). `if __name__ == "__main__":` blocks do not
run: `__name__` is `"__sandbox__"`, as for an imported module. Layer 7 compares attributes by
identity: it does not see a change inside a mutable value that a library object holds (none is
reachable through a public attribute name today) or in C-level state, and it costs up to about
a millisecond after each call that imports modules.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import os
import selectors
import shutil
import signal
import string
import subprocess
import symtable
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tina.data.sandbox_worker import PURE_MODULES, encode_value, literal_problem

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

#: Names a program may not read unless it binds them itself: builtins that are a way out of the
#: subset (code loading, reflection, I/O, the interpreter's state) and modules it cannot import.
#: A read is refused when it would reach the builtin or global (for the builtins of
#: `ESCAPING_BUILTINS`: whenever it is not a local or closure variable of a function; for the
#: others: when the program binds the name nowhere at its top level), so a parameter `input` or
#: a local `code` is fine, and deleting a local to reach the builtin finds nothing.
FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "exec", "eval", "compile", "open", "getattr", "setattr", "delattr", "hasattr", "globals",
        "locals", "vars", "dir", "input", "breakpoint", "help", "exit", "quit", "memoryview",
        "type", "id", "copyright", "credits", "license", "aiter", "anext",
        "importlib", "builtins", "os", "sys", "subprocess", "socket", "signal", "ctypes",
        "pathlib", "io", "shutil", "time", "resource", "gc", "inspect", "code", "pickle",
    }
)  # fmt: skip
ESCAPING_BUILTINS: frozenset[str] = frozenset(n for n in FORBIDDEN_NAMES if hasattr(builtins, n))

#: Attributes no program may read or write whatever the object: frames, code objects,
#: generator, coroutine and traceback internals (by prefix), the MRO, an ABC's registry, and
#: the format methods that look fields up by name (`str.format` is allowed on a literal string
#: whose fields are plain positions or names: `_format_problem`). Every name that starts with
#: `_` is refused too (dunders with the exceptions of `_dunder_problem`).
REFUSED_ATTRIBUTES: frozenset[str] = frozenset(
    {"mro", "register", "format_map", "vformat", "get_field", "get_value", "attrgetter",
     "methodcaller", "get_type_hints"}
)  # fmt: skip
REFUSED_ATTRIBUTE_PREFIXES: tuple[str, ...] = ("gi_", "cr_", "ag_", "f_", "tb_", "co_")

#: Dunder methods a class of the program may define (and `super().<name>` may reach). Not
#: among them: `__getattr__`, `__getattribute__`, `__setattr__`, `__delattr__`, `__new__`,
#: `__init_subclass__`, `__class_getitem__`, `__set_name__`, `__get__`, `__set__`, `__del__`,
#: `__reduce__`, `__format__`: hooks into attribute lookup, class creation, descriptors, GC.
DUNDER_METHODS: frozenset[str] = frozenset(
    f"__{name}__"
    for name in (
        "init", "repr", "str", "eq", "ne", "lt", "le", "gt", "ge", "hash", "bool", "len", "iter",
        "next", "reversed", "contains", "getitem", "setitem", "delitem", "missing", "call",
        "index", "int", "float", "complex", "round", "trunc", "floor", "ceil", "abs", "neg", "pos",
        "invert", "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow",
        "lshift", "rshift", "and", "or", "xor", "radd", "rsub", "rmul", "rmatmul", "rtruediv",
        "rfloordiv", "rmod", "rdivmod", "rpow", "rlshift", "rrshift", "rand", "ror", "rxor",
        "iadd", "isub", "imul", "imatmul", "itruediv", "ifloordiv", "imod", "ipow", "ilshift",
        "irshift", "iand", "ior", "ixor",
    )
)  # fmt: skip

_ALLOWED_NODES: tuple[type, ...] = (
    ast.Module, ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.alias, ast.Lambda,
    ast.arguments, ast.arg, ast.Return, ast.Delete, ast.Assign, ast.AugAssign, ast.AnnAssign,
    ast.For, ast.While, ast.If, ast.Raise, ast.Try, ast.ExceptHandler, ast.Assert, ast.Expr,
    ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal, ast.BoolOp, ast.BinOp,
    ast.UnaryOp, ast.IfExp, ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp,
    ast.GeneratorExp, ast.comprehension, ast.Yield, ast.YieldFrom, ast.Compare, ast.Call,
    ast.keyword, ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Attribute, ast.Subscript,
    ast.Starred, ast.Name, ast.List, ast.Tuple, ast.Slice, ast.NamedExpr, ast.expr_context,
    ast.operator, ast.boolop, ast.unaryop, ast.cmpop,
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
    """(kind, identifier) pairs a node introduces or reads, attributes aside."""
    if isinstance(node, ast.Name):
        return [("name", node.id)]
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [("function" if isinstance(node, ast.FunctionDef) else "class", node.name)]
    if isinstance(node, ast.arg):
        return [("argument", node.arg)]
    if isinstance(node, ast.keyword) and node.arg is not None:
        return [("keyword", node.arg)]
    if isinstance(node, ast.ExceptHandler) and node.name is not None:
        return [("name", node.name)]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return [("name", name) for name in node.names]
    if isinstance(node, ast.alias) and node.asname is not None:
        return [("name", node.asname)]
    return []


def _dunder_problem(node: ast.AST, kind: str, name: str, methods: set[int]) -> str:
    """Why a dunder identifier is refused ("" when it is one of the allowed uses): reading
    `__name__`, defining a method of DUNDER_METHODS in a class body, `super().<such method>`."""
    if name == "__name__" and isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        return ""
    if kind == "function" and name in DUNDER_METHODS and id(node) in methods:
        return ""
    if kind == "attribute" and name in DUNDER_METHODS and isinstance(node, ast.Attribute):
        value = node.value
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "super"
            and isinstance(node.ctx, ast.Load)
        ):
            return ""
    return f"dunder: {kind} {name!r} is not allowed"


def _format_fields(text: str, depth: int = 0) -> list[str]:
    """The field names of a format string, those of nested format specs included."""
    if depth > 2:
        raise ValueError("format specs nest too deep")
    fields = []
    for _, name, spec, _ in string.Formatter().parse(text):
        if name is not None:
            fields.append(name)
            fields += _format_fields(spec or "", depth + 1)
    return fields


def _format_problem(node: ast.Attribute) -> str:
    """Why `node` (a `.format` attribute) is refused; "" when it is `<literal string>.format`
    whose fields are positions or names."""
    literal = node.value
    if not (isinstance(literal, ast.Constant) and type(literal.value) is str):
        return "attribute: 'format' is allowed only on a literal string"
    try:
        fields = _format_fields(literal.value)
    except ValueError as exc:
        return f"attribute: 'format' of an invalid format string ({exc})"
    for name in fields:
        if not (name == "" or name.isdecimal() or name.isidentifier()):
            return f"attribute: 'format' with the field {{{name}}} (a lookup) is not allowed"
    return ""


def _attribute_problem(node: ast.Attribute, module_names: dict[str, str]) -> str:
    name = node.attr
    if name.startswith("_") or name in REFUSED_ATTRIBUTES:
        return f"attribute: {name!r} is not allowed"
    if name.startswith(REFUSED_ATTRIBUTE_PREFIXES):
        return f"attribute: {name!r} is not allowed"
    if name == "format":
        return _format_problem(node)
    base = node.value
    if isinstance(base, ast.Name) and base.id in module_names:
        module = module_names[base.id]
        if name not in PURE_MODULES[module]:
            return f"attribute: {name!r} of module {module!r} is not allowed"
    return ""


def _import_problems(node: ast.Import | ast.ImportFrom) -> list[str]:
    kind = type(node).__name__
    if isinstance(node, ast.Import):
        return [
            f"construct: {kind} of {alias.name!r} is not allowed"
            for alias in node.names
            if alias.name not in PURE_MODULES
        ]
    if node.level or node.module not in PURE_MODULES:
        return [f"construct: {kind} of {node.module or '.'!r} is not allowed"]
    allowed = PURE_MODULES[node.module]
    return [
        f"import: {alias.name!r} of module {node.module!r} is not allowed"
        for alias in node.names
        if alias.name not in allowed
    ]


def _forbidden_reads(source: str, module: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of reads of FORBIDDEN_NAMES that would reach a builtin or a global (scopes
    as the compiler sees them: `symtable`)."""
    table = symtable.symtable(source, "<program>", "exec")
    top_level = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    refused: dict[str, int] = {}
    stack = [table]
    while stack:
        scope = stack.pop()
        stack += scope.get_children()
        for symbol in scope.get_symbols():
            name = symbol.get_name()
            if name not in FORBIDDEN_NAMES or not symbol.is_referenced():
                continue
            if scope.get_type() == "function" and not symbol.is_global():
                continue  # a local or closure variable: never the builtin
            if name not in ESCAPING_BUILTINS and name in top_level:
                continue  # a global the program defines; not a builtin of the worker anyway
            refused[name] = min(refused.get(name, 1 << 30), scope.get_lineno())
    reads = []
    for node in ast.walk(module):
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id in refused
            and node.lineno >= refused[node.id]
        ):
            reads.append((node.lineno, node.id))
    return sorted(set(reads))


def _program_problems(source: str, module: ast.Module) -> list[str]:
    methods = {
        id(item)
        for node in ast.walk(module)
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.FunctionDef)
    }
    module_names = {
        alias.asname or alias.name: alias.name
        for node in ast.walk(module)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name in PURE_MODULES
    }
    problems = []
    for node in ast.walk(module):
        line = getattr(node, "lineno", 1)
        if not isinstance(node, _ALLOWED_NODES):
            # Other node kinds (withitem, match_case, patterns) only occur inside a statement
            # refused here already.
            if isinstance(node, (ast.stmt, ast.expr)):
                problems.append(f"line {line}: construct: {type(node).__name__} is not allowed")
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            problems += [f"line {line}: {p}" for p in _import_problems(node)]
        if isinstance(node, ast.ClassDef) and node.keywords:
            problems.append(f"line {line}: construct: class keywords are not allowed")
        if isinstance(node, ast.Attribute):
            kind_name = [("attribute", node.attr)]
        else:
            kind_name = _identifiers(node)
        for kind, name in kind_name:
            if _is_dunder(name):
                problem = _dunder_problem(node, kind, name, methods)
            elif isinstance(node, ast.Attribute):
                problem = _attribute_problem(node, module_names)
            else:
                problem = ""
            if problem:
                problems.append(f"line {line}: {problem}")
    try:
        reads = _forbidden_reads(source, module)
    except SyntaxError as exc:
        return [*problems, f"line {exc.lineno or 1}: syntax: {exc.msg}"]
    problems += [f"line {line}: forbidden-name: {name!r} is not allowed" for line, name in reads]
    return problems


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
    try:
        problems = _program_problems(source, module)
    except (RecursionError, MemoryError) as exc:
        return [f"line 1: syntax: the source cannot be checked ({type(exc).__name__})"]
    if entry is not None and not problems:
        defined = {n.name for n in module.body if isinstance(n, ast.FunctionDef)}
        if entry not in defined:
            problems.append(f"line 1: entry: no top-level function {entry!r}")
    return problems


def imported_modules(source: str) -> set[str]:
    """The allowlisted modules `source` imports (the worker loads only those)."""
    if "import" not in source:
        return set()
    try:
        module = ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return set()
    names = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names & set(PURE_MODULES)


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
    modules: set[str] = set()
    for source in {c.source for c in calls}:
        modules |= imported_modules(source)
    return json.dumps({"limits": limits, "modules": sorted(modules), "calls": body}).encode()


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


def read_value(text: str) -> Any:
    """The value of an `encode_value` text (Python literals, `set()`, `frozenset(...)`,
    `float('nan')` / `'inf'` / `'-inf'`, `complex(a, b)`); ValueError for anything else."""
    return _value_of(ast.parse(text, mode="eval").body)


def _value_of(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str, bytes, bool):
        return node.value
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        operand = node.operand
        number = operand.value if isinstance(operand, ast.Constant) else None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            return -number
    if isinstance(node, ast.List):
        return [_value_of(x) for x in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_value_of(x) for x in node.elts)
    if isinstance(node, ast.Set):
        return {_value_of(x) for x in node.elts}
    if isinstance(node, ast.Dict):
        value = {}
        for key, item in zip(node.keys, node.values, strict=True):
            if key is None:
                raise ValueError("not a value: a ** in a dict")
            value[_value_of(key)] = _value_of(item)
        return value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, node.args
        if name in ("set", "frozenset") and not args:
            return set() if name == "set" else frozenset()
        if name == "frozenset" and len(args) == 1 and isinstance(args[0], ast.Set):
            return frozenset(_value_of(args[0]))
        if (
            name == "float"
            and len(args) == 1
            and isinstance(args[0], ast.Constant)
            and args[0].value in ("nan", "inf", "-inf")
        ):
            return float(args[0].value)
        if name == "complex" and len(args) == 2:
            real, imag = _value_of(args[0]), _value_of(args[1])
            if type(real) is float and type(imag) is float:
                return complex(real, imag)
    raise ValueError(f"not a value: {ast.dump(node)[:100]}")


def _verdict(line: dict[str, Any]) -> Verdict:
    """The verdict of one result line; the value is read back with `read_value` only."""
    try:
        value = read_value(line["value"]) if line["status"] == "ok" else None
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
        if results and isinstance(results[-1], dict) and results[-1].get("restart") is True:
            continue  # the worker quit after a call that changed shared state
        if len(results) < len(rest):
            verdicts.append(_death_verdict(worker, config))
            if not hello:  # no worker starts (or not in time): do not retry for each call
                verdicts += [verdicts[-1]] * (len(calls) - len(verdicts))
    return verdicts


def _same(a: Verdict, b: Verdict) -> bool:
    """Equal verdicts; values compared by their canonical text (sets in any order, nan equal
    to nan, 1 and True different)."""
    if (a.status, a.stdout, a.message) != (b.status, b.stdout, b.message):
        return False
    return a.value is b.value or encode_value(a.value) == encode_value(b.value)


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
    shown = encode_value(verdict.value) if verdict.ok else verdict.message
    return f"{verdict.status} {shown[:100]}"


def run_program(
    source: str, entry: str, args: Sequence[Any], config: SandboxConfig | None = None
) -> Verdict:
    """The verdict of `entry(*args)` in the program `source` (see the module docstring)."""
    return run_batch([Call(source, entry, args)], config or SandboxConfig())[0]
