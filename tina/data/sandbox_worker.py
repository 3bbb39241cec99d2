"""The program that runs inside the sandbox's child process (see `tina.data.sandbox`).

What it does: started as `python -I -S -B sandbox_worker.py` in a fresh empty directory, it reads
one JSON request from stdin (limits, the allowlisted modules the programs import, then calls:
source, entry function, arguments as a `repr` of a list of literals), locks itself down, then
runs the calls one after another and writes one JSON line per call to its original stdout:
`{"status", "value" (`encode_value` text), "stdout", "message"}` (plus `"restart": true` on the
last line when a call changed shared library state and the worker quit, see below).

Lock-down, in this order, before any untrusted code runs:
1. every module it needs is imported first (ctypes only for step 2, then dropped), and so are the
   requested modules of `PURE_MODULES` (only those: importing all of them would add tens of
   milliseconds to every worker): after step 4 nothing can be imported (no descriptor can be
   opened, and as `nobody` the interpreter's files may be unreadable);
2. a new network namespace (`unshare(CLONE_NEWNET)`, as root, else with a user namespace) when
   asked; best-effort: where the kernel refuses, the worker goes on and says so in its hello line;
3. rlimits: no core dumps, no file may grow (RLIMIT_FSIZE 0), no new process or thread
   (RLIMIT_NPROC 0), address space `memory_mb`, CPU `cpu_s` per call (the soft limit is moved
   up before each call; past it the kernel kills the worker with SIGXCPU);
4. no new file descriptor (RLIMIT_NOFILE 3: only stdin, stdout and stderr stay open), so no
   file, pipe or socket can be opened even if the AST rules were bypassed;
5. when started as root: drop to uid/gid 65534 (`nobody`) with no supplementary groups.
`sys.stdout` is then replaced by a sink, so library code that prints (`re.DEBUG`) cannot write
into the protocol. Each call runs in a fresh namespace (`__name__` is `"__sandbox__"`, so an
`if __name__ == "__main__":` block does not run, as when a module is imported) whose
`__builtins__` is `SAFE_BUILTINS` plus a `print` that captures at most `max_output_bytes`, an
`__import__` that returns, for a name of `PURE_MODULES` loaded in step 1, a fresh namespace
holding only that module's allowed attributes (anything else, relative imports included, is an
ImportError), and a `__build_class__` that refuses class keywords (`metaclass=`). Arguments are
rebuilt from their repr for every call, so one call cannot change another's input; `random` is
reseeded (0) and the `decimal` context replaced before every call.

State shared between calls: the modules' namespaces are fresh per call, but their classes and
functions are the real, shared objects. After a call that imported anything, the worker checks
(by identity) the `__dict__` of every Python-level class and function reachable from the loaded
modules' allowed attributes (classes with their MRO and the functions in their dicts, typing
aliases' origins, enum members); when one changed, that call is an error and the worker quits,
so the next call starts in a new worker. Mutations of mutable values held inside those dicts, of
C-level state (an ABC's registry: `register` is refused by the AST rules), or of a library's
private caches are not checked.

Values cross back as `encode_value` text: Python source for None, bool, int (up to the
interpreter's digit limit, 4300 digits, past which `repr` fails here and in the self-play
prompts alike: such a result is an error), float (`float('nan')`, `float('inf')`), complex, str,
bytes, and list, tuple, dict, set and frozenset of them, by exact type; set elements are sorted
by their text, so equal sets give equal text in every process. The parent reads it back with
`tina.data.sandbox.read_value` (a few node kinds, never `eval`).

What it does not do: validate the source (the parent does, with
`tina.data.sandbox.validate_program`, before anything reaches this process), import anything
from Tina (it must run with `-I -S`), or pickle anything. `literal_problem` (what arguments may
be), `encode_value` and `PURE_MODULES` are also imported by the parent, so that both sides share
one definition.
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

#: The builtins a program may use: pure functions over values, the value types, what classes
#: need (`object`, `super`, `property`, ...), and the exception types it may raise or catch. No
#: I/O, no reflection, no code loading, no `type`. (`__import__` and `__build_class__` are added
#: per call, restricted: see the module docstring.)
SAFE_BUILTIN_NAMES: tuple[str, ...] = (
    "abs", "all", "any", "bin", "bool", "bytes", "callable", "chr", "classmethod", "complex",
    "dict", "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int",
    "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "object",
    "oct", "ord", "pow", "property", "range", "repr", "reversed", "round", "set", "slice",
    "sorted", "staticmethod", "str", "sum", "super", "tuple", "zip", "NotImplemented",
    "Ellipsis",
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "Exception",
    "ImportError", "IndexError", "KeyError", "LookupError", "NameError", "NotImplementedError",
    "OverflowError", "RecursionError", "RuntimeError", "StopIteration", "TypeError",
    "UnboundLocalError", "ValueError", "ZeroDivisionError",
)  # fmt: skip
SAFE_BUILTINS: dict[str, Any] = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}

#: The standard modules a program may import, each with the attributes it may use: pure
#: computations on values. Left out, because they reach objects or code by name or evaluate
#: strings: `typing.get_type_hints` (evaluates annotation strings in a function's globals),
#: `typing.ForwardRef`/`overload` (evaluation, a shared registry), `functools.singledispatch`
#: (calls `get_type_hints`), `functools.wraps`/`update_wrapper` (getattr/setattr by name),
#: `operator.attrgetter`/`methodcaller` (getattr by name: `attrgetter('__class__')`),
#: `string.Formatter`/`Template` (`get_field` walks attributes), `re.DEBUG`/`template`,
#: `decimal.DefaultContext`/`BasicContext`/`ExtendedContext` (templates shared by every new
#: context), `random.SystemRandom` (not reproducible), `hashlib.new`/`file_digest`/`scrypt`
#: (any OpenSSL name, file objects, memory-hard).
PURE_MODULES: dict[str, frozenset[str]] = {
    name: frozenset(attributes.split())
    for name, attributes in {
        "math": """acos acosh asin asinh atan atan2 atanh cbrt ceil comb copysign cos cosh degrees
            dist e erf erfc exp exp2 expm1 fabs factorial floor fmod frexp fsum gamma gcd hypot
            inf isclose isfinite isinf isnan isqrt lcm ldexp lgamma log log10 log1p log2 modf nan
            nextafter perm pi pow prod radians remainder sin sinh sqrt tan tanh tau trunc ulp""",
        "cmath": """acos acosh asin asinh atan atanh cos cosh e exp inf infj isclose isfinite isinf
            isnan log log10 nan nanj phase pi polar rect sin sinh sqrt tan tanh tau""",
        "itertools": """accumulate batched chain combinations combinations_with_replacement
            compress count cycle dropwhile filterfalse groupby islice pairwise permutations
            product repeat starmap takewhile tee zip_longest""",
        "functools": """reduce partial partialmethod lru_cache cache cached_property cmp_to_key
            total_ordering""",
        "collections": "ChainMap Counter OrderedDict defaultdict deque namedtuple",
        "string": """ascii_letters ascii_lowercase ascii_uppercase capwords digits hexdigits
            octdigits printable punctuation whitespace""",
        "re": """compile search match fullmatch findall finditer split sub subn escape error
            Pattern Match A ASCII I IGNORECASE L LOCALE M MULTILINE S DOTALL U UNICODE X
            VERBOSE NOFLAG""",
        "heapq": "heapify heappop heappush heappushpop heapreplace merge nlargest nsmallest",
        "bisect": "bisect bisect_left bisect_right insort insort_left insort_right",
        "typing": """AbstractSet Any Callable ChainMap ClassVar Collection Container Counter
            DefaultDict Deque Dict Final FrozenSet Generator Generic Hashable Iterable Iterator
            List Literal Mapping MutableMapping MutableSequence MutableSet NamedTuple NoReturn
            Optional OrderedDict Reversible Sequence Set Sized SupportsAbs SupportsFloat
            SupportsIndex SupportsInt SupportsRound Tuple Type TypeVar TYPE_CHECKING Union cast""",
        "operator": """abs add and_ call concat contains countOf delitem eq floordiv ge getitem gt
            iadd iand iconcat ifloordiv ilshift imatmul imod imul index indexOf inv invert ior
            ipow irshift is_ is_not isub itemgetter itruediv ixor le length_hint lshift lt
            matmul mod mul ne neg not_ or_ pos pow rshift setitem sub truediv truth xor""",
        "fractions": "Fraction",
        "decimal": """Decimal Context getcontext setcontext DecimalException Clamped
            DivisionByZero Inexact InvalidOperation Overflow Rounded Subnormal Underflow
            FloatOperation ROUND_CEILING ROUND_DOWN ROUND_FLOOR ROUND_HALF_DOWN ROUND_HALF_EVEN
            ROUND_HALF_UP ROUND_UP ROUND_05UP MAX_PREC MAX_EMAX MIN_EMIN""",
        "statistics": """correlation covariance fmean geometric_mean harmonic_mean
            linear_regression mean median median_grouped median_high median_low mode multimode
            pstdev pvariance quantiles stdev variance NormalDist StatisticsError""",
        "random": """Random betavariate choice choices expovariate gauss getrandbits getstate
            lognormvariate normalvariate paretovariate randbytes randint random randrange
            sample seed setstate shuffle triangular uniform vonmisesvariate weibullvariate""",
        "hashlib": """md5 sha1 sha224 sha256 sha384 sha512 sha3_224 sha3_256 sha3_384 sha3_512
            blake2b blake2s""",
    }.items()
}
RANDOM_SEED = 0  #: `random` is reseeded with it before every call
#: Modules that functions of PURE_MODULES import when called (`Counter.most_common` imports
#: heapq, a named escape in a pattern unicodedata): loaded with them, since nothing can be
#: imported after the lock-down. They are not handed to programs.
LAZY_IMPORTS: dict[str, tuple[str, ...]] = {
    "collections": ("heapq",),
    "re": ("unicodedata",),
    "fractions": ("decimal",),
}


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


def encode_value(value: Any, max_bytes: int | None = None) -> str:
    """The text of a result (see the module docstring); NotLiteral with the reason when `value`
    is not one, or "too large" when the text would exceed `max_bytes` characters."""
    budget = [max_bytes if max_bytes is not None else -1]
    return _encode(value, 0, budget)


def _encode(value: Any, depth: int, budget: list[int]) -> str:
    if depth > MAX_LITERAL_DEPTH:
        raise NotLiteral(f"nests deeper than {MAX_LITERAL_DEPTH}")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str or kind is bytes:
        text = repr(value)  # an int past the interpreter's digit limit raises ValueError
    elif kind is float:
        text = repr(value) if math.isfinite(value) else f"float('{value!r}')"
    elif kind is complex:
        parts = _encode(value.real, depth, budget), _encode(value.imag, depth, budget)
        text = f"complex({parts[0]}, {parts[1]})"
    elif kind is list:
        text = "[" + ", ".join([_encode(x, depth + 1, budget) for x in value]) + "]"
    elif kind is tuple:
        items = [_encode(x, depth + 1, budget) for x in value]
        text = "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    elif kind is dict:
        pairs = [
            _encode(k, depth + 1, budget) + ": " + _encode(x, depth + 1, budget)
            for k, x in value.items()
        ]
        text = "{" + ", ".join(pairs) + "}"
    elif kind is set or kind is frozenset:
        items = sorted([_encode(x, depth + 1, budget) for x in value])
        text = "{" + ", ".join(items) + "}" if items else "set()"
        if kind is frozenset:
            text = f"frozenset({text})" if items else "frozenset()"
    else:
        raise NotLiteral(f"a value of type {kind.__name__} is not a literal")
    if budget[0] >= 0:
        budget[0] -= len(text) if kind not in (list, tuple, dict, set, frozenset) else 2
        if budget[0] < 0:
            raise NotLiteral("too large")
    return text


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


class Modules:
    """The allowlisted modules loaded in this worker: their allowed attributes, and the shared
    Python-level objects reachable from them, each with a copy of its `__dict__`."""

    def __init__(self, names: list[str]) -> None:
        self.attributes: dict[str, dict[str, Any]] = {}
        for name in names:
            if name in PURE_MODULES and name not in self.attributes:
                module = __import__(name)
                for extra in LAZY_IMPORTS.get(name, ()):
                    __import__(extra)
                allowed = PURE_MODULES[name]
                present = [a for a in allowed if hasattr(module, a)]
                self.attributes[name] = {a: getattr(module, a) for a in present}
        for constructor in self.attributes.get("hashlib", {}).values():
            constructor(b"")  # OpenSSL may load what it needs lazily: before the lock-down
        self.shared = _shared_objects(self.attributes)

    def reset(self) -> None:
        """Module state a call may set and the next one read, back to its start."""
        if "random" in self.attributes:
            self.attributes["random"]["seed"](RANDOM_SEED)
        if "decimal" in self.attributes:
            decimal = self.attributes["decimal"]
            decimal["setcontext"](decimal["Context"]())

    def changed(self) -> str:
        """The name of a shared object whose `__dict__` differs from its copy ("" if none)."""
        for name, obj, copy in self.shared:
            current = vars(obj)
            if len(current) != len(copy) or any(
                current.get(k, _MISSING) is not v for k, v in copy.items()
            ):
                return name
        return ""


_MISSING = object()


def _shared_objects(attributes: dict[str, dict[str, Any]]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, object, copy of its __dict__) for the Python-level classes and functions reachable
    from the modules' allowed attributes (see the module docstring)."""
    seen: set[int] = set()
    found: list[tuple[str, Any, dict[str, Any]]] = []

    def add(name: str, obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (type, types.FunctionType)):
            name = f"{obj.__module__}.{obj.__qualname__}"
        if isinstance(obj, type):
            if obj.__flags__ & (1 << 8):  # Py_TPFLAGS_IMMUTABLETYPE: C types
                return
            found.append((name, obj, dict(vars(obj))))
            for base in obj.__mro__[1:]:
                add(name, base)
            for value in list(vars(obj).values()):
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if isinstance(value, (types.FunctionType, type)):
                    add(name, value)
            return
        own = getattr(obj, "__dict__", None)
        if type(own) is dict:
            found.append((name, obj, dict(own)))
        origin = getattr(obj, "__origin__", None)
        if isinstance(origin, type):
            add(name, origin)

    for module, values in attributes.items():
        for key, value in values.items():
            add(f"{module}.{key}", value)
    return found


def run_call(
    code: types.CodeType,
    entry: str,
    args_repr: str,
    max_output_bytes: int,
    modules: Modules | None = None,
) -> dict[str, Any]:
    """Run `entry(*args)` of one compiled program in a fresh namespace; the result line (with
    `"restart": True` when the call changed shared library state)."""
    printed: list[str] = []
    print_, overflow = _capturing_print(printed, max_output_bytes)
    modules = modules or Modules([])
    import_, imported = _importer(modules)
    namespace: dict[str, Any] = {
        "__builtins__": {
            **SAFE_BUILTINS,
            "print": print_,
            "__import__": import_,
            "__build_class__": _build_class,
        },
        "__name__": "__sandbox__",
    }
    status, value, message = "ok", None, ""
    modules.reset()
    try:
        args = ast.literal_eval(args_repr)
        exec(code, namespace)
        function = namespace.get(entry)
        if not callable(function):
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
        try:
            value = encode_value(result, max_output_bytes)
        except NotLiteral as exc:
            if str(exc) == "too large":
                status, message = "output_too_large", f"the result exceeds {max_output_bytes} bytes"
            else:
                status, message = "error", f"the result is not a literal: {exc}"
        except BaseException as exc:
            status, message = "error", f"the result cannot be written: {_describe(exc)}"
        if value is not None and len(value.encode("utf-8", "surrogatepass")) > max_output_bytes:
            status, value = "output_too_large", None
            message = f"the result exceeds {max_output_bytes} bytes"
        if status != "ok":
            value = None
    if overflow[0] and status != "memory":
        status, value = "output_too_large", None
        message = f"printed more than {max_output_bytes} bytes"
    line: dict[str, Any] = {
        "status": status,
        "value": value,
        "stdout": "".join(printed),
        "message": message,
    }
    changed = modules.changed() if imported else ""
    if changed:
        line.update(status="error", value=None, restart=True)
        line["message"] = f"the program changed a shared library object ({changed})"
    return line


def _importer(modules: Modules) -> tuple[Callable[..., Any], dict[str, Any]]:
    """A per-call `__import__` over the loaded allowlisted modules, and what it handed out."""
    handed: dict[str, Any] = {}

    def import_(
        name: Any, globals: Any = None, locals: Any = None, fromlist: Any = (), level: Any = 0
    ) -> Any:
        if type(name) is not str or level != 0 or name not in modules.attributes:
            raise ImportError(f"module {name!r} is not available in the sandbox")
        if name not in handed:
            handed[name] = types.SimpleNamespace(**modules.attributes[name])
        return handed[name]

    return import_, handed


def _build_class(function: Any, name: Any, *bases: Any, **keywords: Any) -> Any:
    """`__build_class__` without class keywords (no `metaclass=`, no `__init_subclass__`
    arguments)."""
    if keywords:
        raise TypeError("class keywords are not allowed in the sandbox")
    return builtins.__build_class__(function, name, *bases)


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


def _write(stream: Any, line: dict[str, Any]) -> None:
    stream.write(json.dumps(line) + "\n")
    stream.flush()


class _Sink:
    """Stands in for `sys.stdout` while programs run: what library code prints is dropped."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def main() -> None:
    """Read the request, lock down, say hello, run every call, one result line each."""
    warnings.simplefilter("ignore")  # SyntaxWarnings from compile() would only clutter stderr
    request = json.loads(sys.stdin.read())
    limits, calls = request["limits"], request["calls"]
    modules = Modules(list(request.get("modules", [])))
    protocol, sys.stdout = sys.stdout, _Sink()
    _write(protocol, _lock_down(limits, len(calls)))
    compiled: dict[str, types.CodeType] = {}
    for call in calls:
        _set_cpu_budget(limits["cpu_s"])
        source = call["source"]
        try:
            if source not in compiled:
                compiled[source] = compile(source, PROGRAM_FILENAME, "exec", dont_inherit=True)
        except BaseException as exc:
            line = {"status": "error", "value": None, "stdout": "", "message": _describe(exc)}
            _write(protocol, line)
            continue
        line = run_call(
            compiled[source], call["entry"], call["args"], limits["max_output_bytes"], modules
        )
        _write(protocol, line)
        if line.get("restart"):
            return


if __name__ == "__main__":
    main()
