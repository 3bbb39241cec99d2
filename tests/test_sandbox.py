"""Tests for `tina.data.sandbox`: each attack targets one property and must be refused by the
AST
rules or contained at run time, leaving no trace on the host; ordinary programs (and every
program the code-task generators write) must compute what real Python / minipy compute.

Every test runs with a private temporary directory and working directory (`no_trace`), checked
empty afterwards, and checks that no child process outlived it. Limits are generous (a loaded
2-core machine): nothing asserts a duration.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tina.data.sandbox import (
    FORBIDDEN_NAMES,
    STATUSES,
    Call,
    SandboxConfig,
    Verdict,
    _run_calls,
    normalized_program,
    run_batch,
    run_program,
    validate_program,
)
from tina.data.tasks import generate_records
from tina.data.tasks.minipy import MiniPyError, run_function

CONFIG = SandboxConfig(timeout_s=60.0, cpu_s=1, memory_mb=256, max_output_bytes=4096)


def child_pids() -> set[int]:
    """Processes whose parent is this test process."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid():
                pids.add(int(entry.name))
    return pids


@pytest.fixture(autouse=True)
def no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private temp root and cwd for the test, both empty at the end; no child left over."""
    temp_root, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp_root.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    monkeypatch.chdir(cwd)
    before = child_pids()
    yield
    assert list(temp_root.iterdir()) == [], "a sandbox working directory was left behind"
    assert list(cwd.iterdir()) == [], "something was written to the working directory"
    assert child_pids() - before == set(), "a sandbox process outlived its run"


def run(source: str, *args: Any, config: SandboxConfig = CONFIG) -> Verdict:
    return run_program(source, "f", list(args), config)


# --- refused by the AST rules -------------------------------------------------------------

REFUSED = {
    "import": ("import os\ndef f():\n    return 1", "line 1: construct: Import"),
    "import_inside_function": ("def f():\n    import os\n    return 1", "line 2: construct"),
    "from_import": ("from os import path\ndef f():\n    return 1", "construct: ImportFrom"),
    "dunder_import": ("def f():\n    return __import__('os')", "dunder: name '__import__'"),
    "importlib_name": ("def f():\n    return importlib.import_module('os')", "'importlib'"),
    "builtins_dict_import": (
        "def f():\n    return __builtins__['__import__']('os')",
        "dunder: name '__builtins__'",
    ),
    "subclasses_walk": (
        "def f():\n    return ().__class__.__bases__[0].__subclasses__()",
        "dunder: attribute '__class__'",
    ),
    "mro_walk": ("def f():\n    return (1).mro()", "attribute: 'mro'"),
    "function_globals": ("def f():\n    return f.__globals__", "dunder: attribute '__globals__'"),
    "generator_frame": (
        "def g():\n    yield 1\ndef f():\n    return g().gi_frame.f_back.f_globals",
        "attribute: 'gi_frame'",
    ),
    "frame_globals": ("def f(x):\n    return x.f_globals", "attribute: 'f_globals'"),
    "frame_back": ("def f(x):\n    return x.f_back", "attribute: 'f_back'"),
    "traceback_frame": (
        "def f():\n    try:\n        1 // 0\n    except Exception as e:\n        return e.tb_frame",
        "attribute: 'tb_frame'",
    ),
    "format_field_attribute": (
        "def f(x):\n    return '{0.__class__}'.format(x)",
        "attribute: 'format'",
    ),
    "format_via_str_type": (
        "def f(x):\n    return str.format('{0.__class__}', x)",
        "attribute: 'format'",
    ),
    "format_map": ("def f(x):\n    return '{a.real}'.format_map({'a': x})", "'format_map'"),
    "fstring_attribute": ("def f(x):\n    return f'{x.__class__}'", "dunder: attribute"),
    "open_read": ("def f():\n    return open('/etc/passwd').read()", "forbidden-name: 'open'"),
    "open_write": ("def f():\n    open('x.txt', 'w').write('x')", "forbidden-name: 'open'"),
    "pathlib": (
        "from pathlib import Path\ndef f():\n    return Path('/etc/passwd').read_text()",
        "construct: ImportFrom",
    ),
    "pathlib_by_name": ("def f():\n    return pathlib.Path('x')", "forbidden-name: 'pathlib'"),
    "socket": (
        "import socket\ndef f():\n    return socket.create_connection(('1.1.1.1', 80))",
        "construct: Import",
    ),
    "fork": ("import os\ndef f():\n    return os.fork()", "construct: Import"),
    "fork_by_name": ("def f():\n    return os.fork()", "forbidden-name: 'os'"),
    "kill": ("import os, signal\ndef f():\n    os.kill(1, signal.SIGKILL)", "construct"),
    "sleep": ("import time\ndef f():\n    time.sleep(100)", "construct: Import"),
    "exec": ("def f():\n    exec('import os')", "forbidden-name: 'exec'"),
    "eval": ("def f():\n    return eval('1')", "forbidden-name: 'eval'"),
    "compile": ("def f():\n    return compile('1', 'x', 'eval')", "'compile'"),
    "getattr": ("def f(x):\n    return getattr(x, '__class__')", "forbidden-name: 'getattr'"),
    "setattr": ("def f(x):\n    setattr(f, 'y', 1)", "forbidden-name: 'setattr'"),
    "globals": ("def f():\n    return globals()", "forbidden-name: 'globals'"),
    "locals": ("def f():\n    return locals()", "forbidden-name: 'locals'"),
    "vars": ("def f():\n    return vars()", "forbidden-name: 'vars'"),
    "input": ("def f():\n    return input()", "forbidden-name: 'input'"),
    "breakpoint": ("def f():\n    breakpoint()", "forbidden-name: 'breakpoint'"),
    "type_builtin": ("def f():\n    return type('A', (), {})", "forbidden-name: 'type'"),
    "class_metaclass": (
        "class M:\n    pass\nclass A(metaclass=M):\n    pass\ndef f():\n    return 1",
        "construct: class keywords",
    ),
    "class_keyword_to_init_subclass": (
        "class A(x=1):\n    pass\ndef f():\n    return 1",
        "construct: class keywords",
    ),
    "class_getattr_hook": (
        "class A:\n    def __getattr__(self, n):\n        return n\ndef f():\n    return 1",
        "dunder: function '__getattr__'",
    ),
    "class_init_subclass_hook": (
        "class A:\n    def __init_subclass__(cls):\n        pass\ndef f():\n    return 1",
        "dunder: function '__init_subclass__'",
    ),
    "class_getattribute_hook": (
        "class A:\n    def __getattribute__(self, n):\n        return n\ndef f():\n    return 1",
        "dunder: function '__getattribute__'",
    ),
    "class_slots": ("class A:\n    __slots__ = ()\ndef f():\n    return 1", "dunder: name"),
    "dunder_function_outside_class": (
        "def __init__():\n    pass\ndef f():\n    return 1",
        "dunder",
    ),
    "dunder_method_access": (
        "class A:\n    def __init__(self):\n        self.x = 1\ndef f():\n    return A().__init__",
        "dunder: attribute '__init__'",
    ),
    "super_getattribute": (
        "class A:\n    def m(self):\n        return super().__getattribute__('x')\n"
        "def f():\n    return 1",
        "dunder: attribute '__getattribute__'",
    ),
    "object_mro": ("def f():\n    return object.mro()", "attribute: 'mro'"),
    "typing_get_type_hints": (
        "import typing\ndef f():\n    return typing.get_type_hints(f)",
        "attribute: 'get_type_hints'",
    ),
    "typing_get_type_hints_from": (
        "from typing import get_type_hints\ndef f():\n    return 1",
        "import: 'get_type_hints' of module 'typing'",
    ),
    "typing_forward_ref": (
        "import typing\ndef f():\n    return typing.ForwardRef('x')",
        "attribute: 'ForwardRef' of module 'typing'",
    ),
    "typing_abc_register": (
        "import typing\ndef f():\n    typing.Sequence.register(int)",
        "attribute: 'register'",
    ),
    "functools_singledispatch": (
        "from functools import singledispatch\ndef f():\n    return 1",
        "import: 'singledispatch'",
    ),
    "functools_update_wrapper": (
        "import functools\ndef f(x):\n    return functools.update_wrapper(x, f, ('__globals__',))",
        "attribute: 'update_wrapper' of module 'functools'",
    ),
    "operator_attrgetter": (
        "import operator\ndef f(x):\n    return operator.attrgetter('__class__')(x)",
        "attribute: 'attrgetter'",
    ),
    "operator_methodcaller_from": (
        "from operator import methodcaller\ndef f():\n    return 1",
        "import: 'methodcaller'",
    ),
    "string_formatter_get_field": (
        "import string\ndef f(x):\n    return string.Formatter().get_field('0.__class__', [x], {})",
        "attribute: 'Formatter' of module 'string'",
    ),
    "string_template_from": ("from string import Template\ndef f():\n    return 1", "import"),
    "re_internals": ("import re\ndef f():\n    return re._compiler", "attribute: '_compiler'"),
    "re_debug_flag": (
        "import re\ndef f():\n    return re.compile('a', re.DEBUG)",
        "attribute: 'DEBUG' of module 're'",
    ),
    "random_internals": (
        "import random\ndef f():\n    return random.Random()._randbelow(3)",
        "attribute: '_randbelow'",
    ),
    "random_system": (
        "import random\ndef f():\n    return random.SystemRandom().random()",
        "attribute: 'SystemRandom' of module 'random'",
    ),
    "hashlib_new": (
        "import hashlib\ndef f():\n    return hashlib.new('md5').hexdigest()",
        "attribute: 'new' of module 'hashlib'",
    ),
    "decimal_default_context": (
        "import decimal\ndef f():\n    decimal.DefaultContext.prec = 3",
        "attribute: 'DefaultContext' of module 'decimal'",
    ),
    "import_submodule": ("import collections.abc\ndef f():\n    return 1", "construct: Import"),
    "import_star": ("from math import *\ndef f():\n    return 1", "import: '*'"),
    "relative_import": ("from . import x\ndef f():\n    return 1", "construct: ImportFrom"),
    "import_as_dunder": ("import math as __builtins__\ndef f():\n    return 1", "dunder"),
    "name_global_dunder": ("def f():\n    global __name__\n    return 1", "dunder: name"),
    "name_attribute_walk": ("def f():\n    return __name__.__class__", "dunder: attribute"),
    "deleted_global_reaches_builtin": (
        "eval = 1\ndel eval\ndef f():\n    return eval('1')",
        "forbidden-name: 'eval'",
    ),
    "class_scope_reaches_builtin": (
        "class A:\n    input = 1\n    del input\n    x = input()\ndef f():\n    return 1",
        "forbidden-name: 'input'",
    ),
    "conditional_global_reaches_builtin": (
        "if False:\n    open = 1\ndef f():\n    return open('x')",
        "forbidden-name: 'open'",
    ),
    "format_index_field": ("def f(x):\n    return '{0[0]}'.format(x)", "attribute: 'format'"),
    "format_nested_field": (
        "def f(x):\n    return '{0:{1.real}}'.format(x, 1)",
        "attribute: 'format'",
    ),
    "format_non_literal": (
        "def f(x):\n    s = '{0.__class__}'\n    return s.format(x)",
        "attribute: 'format'",
    ),
    "with": ("def f():\n    with x:\n        pass", "construct: With"),
    "async": ("async def f():\n    return 1", "construct: AsyncFunctionDef"),
    "match": (
        "def f(x):\n    match x:\n        case int(real=r):\n            return r",
        "construct: Match",
    ),
    "dunder_assignment": ("def f():\n    __name__ = 1\n    return 1", "dunder: name '__name__'"),
    "dunder_argument": ("def f(__x):\n    return __x", "dunder: argument '__x'"),
    "private_attribute": ("def f(x):\n    return x._private", "attribute: '_private'"),
    "syntax_error": ("def f(:\n    return 1", "syntax"),
    "missing_entry": ("def g():\n    return 1", "entry: no top-level function 'f'"),
    "oversized_source": ("def f():\n    return 1\n" + "#" * 30_000, "size"),
}


@pytest.mark.parametrize("source,rule", REFUSED.values(), ids=list(REFUSED))
def test_refused_before_running(source: str, rule: str) -> None:
    problems = validate_program(source, "f")
    assert problems and any(rule in p for p in problems), problems
    verdict = run(source)
    assert verdict.status == "refused" and rule in verdict.message


def test_validation_reports_every_problem_with_its_line() -> None:
    source = "def f(x):\n    y = x.__class__\n    import os\n    return eval('1')"
    problems = validate_program(source, "f")
    assert sorted(problems) == [
        "line 2: dunder: attribute '__class__' is not allowed",
        "line 3: construct: Import of 'os' is not allowed",
        "line 4: forbidden-name: 'eval' is not allowed",
    ]


def test_forbidden_names_are_not_in_the_workers_builtins() -> None:
    from tina.data.sandbox_worker import SAFE_BUILTINS

    assert not FORBIDDEN_NAMES & set(SAFE_BUILTINS)
    assert "__import__" not in SAFE_BUILTINS and "open" not in SAFE_BUILTINS


def test_non_literal_arguments_are_refused() -> None:
    assert run("def f(x):\n    return 1", object()).status == "refused"
    assert run("def f(x):\n    return 1", float("nan")).status == "refused"
    assert run("def f(x):\n    return 1", {1, 2}).status == "refused"


# --- contained at run time --------------------------------------------------------------------


def test_builtins_outside_the_whitelist_do_not_exist_at_run_time() -> None:
    # Passes validation (not a forbidden name) but is not a builtin in the worker.
    verdict = run("def f():\n    return bytearray(3)")
    assert verdict.status == "error" and "NameError" in verdict.message
    assert "line 2" in verdict.message


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    return [0] * 10**10",
        "def f():\n    return 'a' * 10**10",
        "def f():\n    x = []\n    while True:\n        x.append([0] * 100000)",
    ],
    ids=["list_bomb", "string_bomb", "growing_list"],
)
def test_memory_bombs_are_contained(source: str) -> None:
    verdict = run(source)
    assert verdict.status == "memory", verdict


def test_infinite_loop_hits_the_cpu_limit() -> None:
    verdict = run("def f():\n    while True:\n        pass")
    assert verdict.status == "timeout" and "CPU" in verdict.message


def test_busy_wait_hits_the_cpu_limit() -> None:
    verdict = run(
        "def f():\n    n = 0\n    while n >= 0:\n        n = (n + 1) % 1000\n    return n"
    )
    assert verdict.status == "timeout"


def test_wall_clock_deadline_kills_the_process_group() -> None:
    config = SandboxConfig(timeout_s=1.0, cpu_s=600, check_determinism=False)
    verdict = run("def f():\n    while True:\n        pass", config=config)
    assert verdict.status == "timeout" and "wall-clock" in verdict.message


def test_a_caught_cpu_limit_is_still_a_timeout() -> None:
    source = (
        "def f():\n    while True:\n        try:\n            while True:\n"
        "                pass\n        except:\n            pass"
    )
    assert validate_program(source, "f") == []
    assert run(source).status == "timeout"


def test_deep_recursion_is_an_error_not_a_crash() -> None:
    verdict = run("def f(n):\n    return f(n + 1)", 0)
    assert verdict.status == "error" and "RecursionError" in verdict.message


def test_deeply_nested_result_is_an_error() -> None:
    verdict = run("def f():\n    x = []\n    for i in range(500):\n        x = [x]\n    return x")
    assert verdict.status == "error" and "nests deeper" in verdict.message


def test_printing_in_a_loop_is_capped() -> None:
    verdict = run("def f():\n    while True:\n        print('spam' * 100)")
    assert verdict.status == "output_too_large"
    assert len(verdict.stdout.encode()) <= CONFIG.max_output_bytes


def test_catching_the_print_cap_does_not_hide_it() -> None:
    source = (
        "def f():\n    for i in range(1000):\n        try:\n            print('x' * 100)\n"
        "        except:\n            pass\n    return 1"
    )
    assert run(source).status == "output_too_large"


def test_huge_return_value_is_refused() -> None:
    verdict = run("def f():\n    return 'a' * 10**6")
    assert verdict.status == "output_too_large" and verdict.value is None
    verdict = run("def f():\n    return list(range(10**6))")
    assert verdict.status == "output_too_large"


def test_non_literal_results_are_errors() -> None:
    assert run("def f():\n    return lambda: 0").status == "error"
    assert run("class A:\n    pass\ndef f():\n    return A()").status == "error"
    assert run("class L(list):\n    pass\ndef f():\n    return L()").status == "error"
    verdict = run("def f():\n    return 10 ** 5000")  # past the digit limit of int -> str
    assert verdict.status == "error" and "cannot be written" in verdict.message
    verdict = run("def f():\n    x = []\n    x.append(x)\n    return x")
    assert verdict.status == "error"


def test_sets_bytes_and_special_floats_cross_back() -> None:
    source = (
        "def f():\n    return ({'b', 'a', 'c'}, frozenset({(1, 2)}), set(), frozenset(),"
        " float('nan'), float('-inf'), b'\\x00', 2 ** 12000, complex(1, float('inf')))"
    )
    verdict = run(source)  # with the determinism check: set order does not matter, nan == nan
    assert verdict.ok, verdict.message
    value = verdict.value
    assert value[:4] == ({"a", "b", "c"}, frozenset({(1, 2)}), set(), frozenset())
    assert value[4] != value[4] and value[5] == float("-inf") and value[6] == b"\x00"
    assert value[7] == 2**12000 and value[8] == complex(1, float("inf"))


def test_nondeterminism_across_processes_is_caught() -> None:
    # String hashes are seeded per process, so set iteration order differs between the runs.
    source = "def f():\n    return ''.join(set('abcdefghijklmnopqrstuvwxyz'))"
    assert run(source).status == "nondeterministic"
    once = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    assert run(source, config=once).status == "ok"
    assert run("def f():\n    return repr(lambda: 0)").status == "nondeterministic"


def test_escape_past_validation_still_meets_the_os_limits() -> None:
    """Suppose the AST rules were bypassed and the program reached `os` through a subclass
    walk: it still cannot open a file or socket, fork, or (as root) signal the parent."""
    attack = (
        "def f(target, parent):\n"
        "    c = [c for c in ().__class__.__base__.__subclasses__()"
        " if c.__name__ == '_wrap_close'][0]\n"
        "    g = c.__init__.__globals__\n"
        "    out = {}\n"
        "    def attempt(name, fn):\n"
        "        try:\n"
        "            fn()\n"
        "            out[name] = 'done'\n"
        "        except Exception as e:\n"
        "            out[name] = e.__class__.__name__\n"
        "    attempt('write', lambda: g['open'](target, g['O_WRONLY'] | g['O_CREAT']))\n"
        "    attempt('read', lambda: g['open']('/etc/hostname', g['O_RDONLY']))\n"
        "    attempt('fork', lambda: g['fork']())\n"
        "    attempt('kill', lambda: g['kill'](parent, 0))\n"
        "    attempt('import', lambda: g['__builtins__']['__import__']('socket'))\n"
        "    return out\n"
    )
    assert validate_program(attack, "f")  # the rules alone refuse it
    target = Path(tempfile.gettempdir()) / "escaped.txt"
    config = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    (verdict,) = _run_calls([Call(attack, "f", (str(target), os.getpid()))], config)
    assert verdict.ok, verdict
    assert verdict.value["write"] != "done" and verdict.value["read"] != "done"
    assert verdict.value["fork"] != "done" and verdict.value["import"] != "done"
    if os.geteuid() == 0:  # the worker dropped to nobody: no signal to root's processes
        assert verdict.value["kill"] == "PermissionError"
    assert not target.exists()


def test_import_past_validation_finds_no_import_machinery() -> None:
    config = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    source = "def f():\n    import os\n    return 1"
    (verdict,) = _run_calls([Call(source, "f", ())], config)
    assert verdict.status == "error" and "ImportError" in verdict.message
    (verdict,) = _run_calls([Call("def f():\n    return open('x', 'w')", "f", ())], config)
    assert verdict.status == "error" and "NameError" in verdict.message


def once(calls: list[Call]) -> list[Verdict]:
    """Run calls past the AST rules (as if they had been bypassed), in one worker."""
    config = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    return _run_calls(calls, config)


@pytest.mark.parametrize(
    "source,error",
    [
        ("from collections import abc\ndef f():\n    return 1", "ImportError"),
        ("import string\ndef f():\n    return string.Formatter", "AttributeError"),
        ("import typing\ndef f():\n    return typing.get_type_hints", "AttributeError"),
        ("import operator\ndef f():\n    return operator.attrgetter", "AttributeError"),
        ("import random\ndef f():\n    return random.SystemRandom", "AttributeError"),
        ("from . import math\ndef f():\n    return 1", "ImportError"),
        ("class M:\n    pass\nclass A(metaclass=M):\n    pass\ndef f():\n    pass", "TypeError"),
        ("def f():\n    eval = 1\n    del eval\n    return eval('1')", "UnboundLocalError"),
    ],
    ids=["submodule", "formatter", "get_type_hints", "attrgetter", "system_random", "relative",
         "metaclass", "deleted_local"],
)  # fmt: skip
def test_new_allowances_past_validation_reach_nothing(source: str, error: str) -> None:
    (verdict,) = once([Call(source, "f", ())])
    assert verdict.status == "error" and error in verdict.message, verdict


def test_a_local_deleted_to_reach_a_builtin_passes_the_rules_but_finds_none() -> None:
    source = "def f():\n    eval = 1\n    del eval\n    return eval('1')"
    assert validate_program(source, "f") == []  # a function local: never the builtin
    assert run(source).status == "error"


def test_library_code_that_prints_cannot_write_into_the_protocol() -> None:
    # re.DEBUG (128) dumps the parsed pattern to sys.stdout, which the worker replaced.
    source = "import re\ndef f():\n    return re.compile('a|b', 128).pattern"
    assert validate_program(source, "f") == []
    verdicts = run_batch([Call(source, "f", ())] * 2, CONFIG)
    assert [(v.status, v.value, v.stdout) for v in verdicts] == [("ok", "a|b", "")] * 2


def test_changing_a_shared_library_class_is_an_error_and_does_not_leak() -> None:
    poison = (
        "import collections\ndef f():\n"
        "    collections.Counter.most_common = lambda self, n=None: 'poisoned'\n    return 1"
    )
    use = "from collections import Counter\ndef f():\n    return Counter('aab').most_common(1)"
    attribute = "import fractions\ndef f():\n    fractions.Fraction.limit_denominator.x = 1"
    config = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    verdicts = run_batch([Call(poison, "f", ()), Call(use, "f", ()), Call(attribute, "f", ()),
                          Call(use, "f", ())], config)  # fmt: skip
    assert [v.status for v in verdicts] == ["error", "ok", "error", "ok"]
    assert "shared library object" in verdicts[0].message
    assert verdicts[1].value == verdicts[3].value == [("a", 2)]


def test_module_namespaces_are_fresh_per_call() -> None:
    source = (
        "import math\ndef f():\n    old = math.floor(2.5)\n    math.floor = len\n    return old"
    )
    verdicts = run_batch([Call(source, "f", ())] * 2, CONFIG)
    assert [(v.status, v.value) for v in verdicts] == [("ok", 2)] * 2


def test_random_and_decimal_state_are_reset_per_call() -> None:
    rand = "import random\ndef f():\n    return random.random(), random.randint(1, 10**9)"
    prec = (
        "import decimal\ndef f(p):\n    decimal.getcontext().prec = p\n"
        "    return str(decimal.Decimal(1) / decimal.Decimal(3))"
    )
    calls = [Call(rand, "f", ()), Call(prec, "f", (3,)), Call(rand, "f", ()),
             Call(prec, "f", (30,))]  # fmt: skip
    verdicts = run_batch(calls, CONFIG)
    assert all(v.ok for v in verdicts), verdicts
    assert verdicts[0].value == verdicts[2].value
    assert verdicts[1].value == "0.333" and verdicts[3].value == "0." + "3" * 30


def test_main_block_does_not_run() -> None:
    source = (
        "def f():\n    return __name__\nif __name__ == '__main__':\n    print('main')\n    f = 1"
    )
    verdict = run(source)
    assert (verdict.status, verdict.value, verdict.stdout) == ("ok", "__sandbox__", "")


def test_hashlib_objects_compute_and_stay_contained() -> None:
    source = (
        "import hashlib\ndef f(s):\n    h = hashlib.sha256(s.encode())\n    c = h.copy()\n"
        "    c.update(b'x')\n    return h.hexdigest(), c.digest_size, hashlib.md5(b'').hexdigest()"
    )
    import hashlib

    verdict = run(source, "abc")
    assert verdict.ok, verdict.message
    assert verdict.value[0] == hashlib.sha256(b"abc").hexdigest()
    assert verdict.value[2] == hashlib.md5(b"").hexdigest()


# --- ordinary programs ----------------------------------------------------------------------


def program(*lines: str) -> str:
    """Source from its lines (keeps the table below readable)."""
    return "\n".join(lines)


VALID: dict[str, tuple[str, tuple[Any, ...]]] = {
    "loop": (
        program(
            "def f(n):",
            "    s = 0",
            "    for i in range(n):",
            "        s += i * i",
            "    return s",
        ),
        (10,),
    ),
    "while": (
        program(
            "def f(n):",
            "    k = 0",
            "    while n > 1:",
            "        n //= 2",
            "        k += 1",
            "    return k",
        ),
        (1000,),
    ),
    "list_comprehension": (
        program(
            "def f(xs):",
            "    return [x * 2 for x in xs if x % 2]",
        ),
        ([1, 2, 3, 5],),
    ),
    "dict_comprehension": (
        program(
            "def f(s):",
            "    return {c: s.count(c) for c in sorted(set(s))}",
        ),
        ("banana",),
    ),
    "recursion": (
        program(
            "def f(n):",
            "    return n if n < 2 else f(n - 1) + f(n - 2)",
        ),
        (15,),
    ),
    "nested_function": (
        program(
            "def f(a, b):",
            "    def g(x):",
            "        return x + a",
            "    return [g(i) for i in range(b)]",
        ),
        (3, 4),
    ),
    "closure_nonlocal": (
        program(
            "def f(n):",
            "    t = 0",
            "    def add(k):",
            "        nonlocal t",
            "        t += k",
            "    for i in range(n):",
            "        add(i)",
            "    return t",
        ),
        (7,),
    ),
    "dict_ops": (
        program(
            "def f(words):",
            "    d = {}",
            "    for w in words:",
            "        d[w] = d.get(w, 0) + 1",
            "    return sorted(d.items())",
        ),
        (["a", "b", "a"],),
    ),
    "strings": (
        program(
            "def f(s):",
            "    return '-'.join(s.upper().split()) + s[::-1].strip()",
        ),
        ("ab cd ",),
    ),
    "fstring": (
        program(
            "def f(x, y):",
            "    return f'{x}+{y}={x + y:05d}'",
        ),
        (3, 4),
    ),
    "sorted_key": (
        program(
            "def f(xs):",
            "    return sorted(xs, key=lambda p: (-p[1], p[0]))",
        ),
        ([("a", 1), ("b", 3), ("c", 3)],),
    ),
    "sum_min_max": (
        program(
            "def f(xs):",
            "    return (sum(xs), min(xs), max(xs), abs(min(xs)))",
        ),
        ([4, -2, 9],),
    ),
    "enumerate_zip": (
        program(
            "def f(a, b):",
            "    return [(i, x, y) for i, (x, y) in enumerate(zip(a, b))]",
        ),
        ([1, 2], "xy"),
    ),
    "generator": (
        program(
            "def g(n):",
            "    for i in range(n):",
            "        yield i * i",
            "def f(n):",
            "    return sum(g(n))",
        ),
        (6,),
    ),
    "try_except": (
        program(
            "def f(xs):",
            "    try:",
            "        return xs[10]",
            "    except IndexError:",
            "        return -1",
        ),
        ([1],),
    ),
    "float_math": (
        program(
            "def f(x):",
            "    return round(x / 3, 4), divmod(17, 5), pow(2, 10, 1000)",
        ),
        (10.0,),
    ),
    "set_ops_sorted": (
        program(
            "def f(a, b):",
            "    return sorted(set(a) & set(b))",
        ),
        ([1, 2, 3, 4], [3, 4, 5]),
    ),
    "none_and_bool": (
        program(
            "def f(x):",
            "    return None if x else (x == 0, not x)",
        ),
        (0,),
    ),
    "slices_and_unpacking": (
        program(
            "def f(xs):",
            "    a, *rest = xs",
            "    return rest[::2], xs[-1], a",
        ),
        ([1, 2, 3, 4, 5],),
    ),
    "walrus_any_all": (
        program(
            "def f(xs):",
            "    return any((y := x) > 3 for x in xs), all(xs), y",
        ),
        ([1, 5, 2],),
    ),
    "bit_methods": (
        program(
            "def f(n):",
            "    return n.bit_length(), bin(n), hex(n), chr(65 + n % 26), ord('a')",
        ),
        (37,),
    ),
    "dict_input_output": (
        program(
            "def f(d):",
            "    return {k: v * 2 for k, v in d.items()}",
        ),
        ({"a": 1, 2: [3]},),
    ),
    "print_and_return": (
        program(
            "def f(n):",
            "    for i in range(n):",
            "        print(i, end=',')",
            "    print()",
            "    return n",
        ),
        (3,),
    ),
    "raise": (
        program(
            "def f(x):",
            "    if x < 0:",
            "        raise ValueError('negative')",
            "    return x",
        ),
        (-1,),
    ),
}


def python_oracle(source: str, args: tuple[Any, ...]) -> tuple[str, Any, str]:
    """(status, value, stdout) from real Python for a trusted literal program (test-only)."""
    import contextlib
    import io

    namespace: dict[str, Any] = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(source, namespace)
        try:
            value = namespace["f"](*args)
        except Exception:
            return "error", None, printed.getvalue()
    return "ok", value, printed.getvalue()


@pytest.fixture(scope="module")
def valid_verdicts() -> dict[str, Verdict]:
    """All valid programs in one batch (one worker, plus one for the determinism run)."""
    names = list(VALID)
    verdicts = run_batch([Call(VALID[n][0], "f", VALID[n][1]) for n in names], CONFIG)
    return dict(zip(names, verdicts, strict=True))


@pytest.mark.parametrize("name", list(VALID))
def test_valid_programs_compute_what_python_computes(
    name: str, valid_verdicts: dict[str, Verdict]
) -> None:
    source, args = VALID[name]
    assert validate_program(source, "f") == []
    status, value, printed = python_oracle(source, args)
    verdict = valid_verdicts[name]
    assert verdict.status == status, verdict
    assert verdict.value == value and type(verdict.value) is type(value)
    assert verdict.stdout == printed


def test_a_batch_survives_a_call_that_kills_its_worker() -> None:
    calls = [
        Call("def f(x):\n    return x + 1", "f", (1,)),
        Call("def f(x):\n    while True:\n        pass", "f", (2,)),
        Call("import os\ndef f(x):\n    return 0", "f", (3,)),
        Call("def f(x):\n    return [0] * 10**10", "f", (4,)),
        Call("def f(x):\n    return x * 3", "f", (5,)),
    ]
    verdicts = run_batch(calls, CONFIG)
    assert [v.status for v in verdicts] == ["ok", "timeout", "refused", "memory", "ok"]
    assert verdicts[0].value == 2 and verdicts[4].value == 15


def test_calls_in_a_batch_do_not_share_state() -> None:
    source = (
        "seen = []\ndef f(xs):\n    xs.append(1)\n    seen.append(1)\n    return len(xs), len(seen)"
    )
    verdicts = run_batch([Call(source, "f", ([0],))] * 3, CONFIG)
    assert [v.value for v in verdicts] == [(2, 1)] * 3


def test_every_status_is_known() -> None:
    assert {"ok", "refused", "timeout", "memory", "error"} <= set(STATUSES)
    assert {"nondeterministic", "output_too_large"} <= set(STATUSES)


@pytest.mark.parametrize("bad", [{"timeout_s": 0}, {"cpu_s": 0}, {"memory_mb": 8}])
def test_config_checks_its_fields(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(**bad)


def test_normalized_program_ignores_layout_and_comments() -> None:
    a = "def f(x):\n    return x+1"
    b = "def f( x ):  # add one\n\n    return (x + 1)"
    assert normalized_program(a) == normalized_program(b)
    assert normalized_program(a) != normalized_program("def f(x):\n    return x+2")


def test_generated_code_task_programs_match_minipy() -> None:
    """Every program the code-task generators write, on its own input and on more inputs,
    gives in the sandbox what `tina.data.tasks.minipy` gives."""
    programs = []
    for task in ("code_deduction", "code_abduction", "code_induction"):
        for record in generate_records(task, 40, seed=11):
            programs.append(record["meta"]["program"])
    calls, expected = [], []
    for source in programs:
        for x in (-7, 0, 1, 2, 5, 13, 40):
            try:
                y = run_function(source, x)
            except MiniPyError:
                continue
            calls.append(Call(source, "f", (x,)))
            expected.append(y)
    assert len(calls) > 500
    verdicts = run_batch(calls, CONFIG)
    mismatches = [
        (c.source, c.args, v, y)
        for c, v, y in zip(calls, verdicts, expected, strict=True)
        if not (v.ok and v.value == y)
    ]
    assert mismatches == []


def test_a_worker_that_does_not_start_in_time_fails_the_batch_once() -> None:
    config = SandboxConfig(startup_timeout_s=0.001, check_determinism=False)
    verdicts = run_batch([Call("def f(x):\n    return x", "f", (i,)) for i in range(3)], config)
    assert [v.status for v in verdicts] == ["timeout"] * 3
    assert all("did not start" in v.message for v in verdicts)
