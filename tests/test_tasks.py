"""Tests for `tina.data.tasks`: seeded generators, contract-valid records, exact traces and labels.

Every generated record is checked against the data contract and scored with the task's own
scorer; traces are replayed step by step by independent checkers written here (not by the
generators' code), and the label fields are recomputed from the record.
"""

from __future__ import annotations

import ast
import operator
import random
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tina.cli import main
from tina.core.tags import THINK_CLOSE, THINK_OPEN, extract_answer
from tina.data.contract import read_contract_jsonl, validate_record
from tina.data.tasks import ALL_TASKS, TASKS, generate_records, task_seed
from tina.data.tasks.arithmetic import add_steps, mul2_steps, mul_steps, sub_steps
from tina.data.tasks.minipy import run_function
from tina.data.tasks.record import MAX_RECHECKS, STYLES, build_record, byte_token_count
from tina.data.tasks.scoring import score_answer, task_reward

N_PER_TASK = 200
ARITHMETIC = ("add", "sub", "mul", "mul2")
CODE = ("code_deduction", "code_abduction", "code_induction")
PLAN_OF_TASK = {
    "add": "compute",
    "sub": "compute",
    "mul": "compute",
    "mul2": "compute",
    "code_deduction": "trace",
    "code_abduction": "search",
    "code_induction": "search",
}
TASK_LEVELS = [(task, level) for task in ALL_TASKS for level in TASKS[task].difficulties]
RECHECK_SPLIT = re.compile(r"(?=check |verify |wait, redo |so )")
OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "%": operator.mod,
}


@cache
def suite(task: str, style: str) -> tuple[dict[str, Any], ...]:
    """N_PER_TASK records of `task` in `style` (seed 7), generated once per test session."""
    return tuple(generate_records(task, N_PER_TASK, seed=7, style=style))


def think_of(record: dict[str, Any]) -> str:
    text = record["text"]
    return str(text[text.index(THINK_OPEN) + len(THINK_OPEN) : text.index(THINK_CLOSE)])


def split_steps(trace: str) -> list[str]:
    """`a;b;c;` -> ['a', 'b', 'c'] (a trace is a run of `;`-terminated steps)."""
    assert trace.endswith(";"), trace
    return trace[:-1].split(";")


def program_body(source: str) -> list[ast.stmt]:
    """The statements of the generated `def f(x):` before its final `return x`."""
    (fn,) = ast.parse(source).body
    assert isinstance(fn, ast.FunctionDef)
    assert ast.unparse(fn.body[-1]) == "return x"
    return fn.body[:-1]


# --- independent trace checkers ----------------------------------------------------------------


def expected_arithmetic_steps(task: str, expression: str, difficulty_bin: int) -> list[str]:
    """The concise trace of an arithmetic record, rebuilt from its `meta['expression']`."""
    match = re.fullmatch(r"(\d+)[-+*](\d+)", expression)
    assert match, expression
    a, b = int(match[1]), int(match[2])
    if task == "add":
        return [] if difficulty_bin == 1 else add_steps(a, b)
    if task == "sub":
        return [] if difficulty_bin == 1 else sub_steps(a, b)
    if task == "mul":
        return mul_steps(a, b)
    return mul2_steps(a, b)


def replay_deduction(trace: str, x0: int) -> int:
    """Check every step of a deduction trace (its arithmetic and that each step starts from the
    current value); returns the final value."""
    steps = split_steps(trace)
    assert steps[0] == f"x={x0}"
    x, loop_i = x0, -1
    for step in steps[1:]:
        if m := re.fullmatch(r"x=(\d+)(\+|-|\*|//|%)(\d+)=(-?\d+)", step):
            a, op, c, value = int(m[1]), m[2], int(m[3]), int(m[4])
            assert a == x and OPS[op](a, c) == value, step
        elif m := re.fullmatch(r"x=max\((\d+),(\d+)\)=(\d+)", step):
            a, c, value = int(m[1]), int(m[2]), int(m[3])
            assert a == x and max(a, c) == value, step
        elif m := re.fullmatch(r"(\d+)>(\d+) yes x=(\d+)-(\d+)=(-?\d+)", step):
            a, c, a2, d, value = (int(g) for g in m.groups())
            assert a == a2 == x and a > c and a - d == value, step
        elif m := re.fullmatch(r"(\d+)>(\d+) no", step):
            a, c = int(m[1]), int(m[2])
            assert a == x and not a > c, step
            value = x
        elif m := re.fullmatch(r"i=(\d+) x=(\d+)\+(\d+)=(\d+)", step):
            i, a, i2, value = (int(g) for g in m.groups())
            assert i == i2 and i in (0, loop_i + 1) and a == x and a + i == value, step
            loop_i = i
        else:
            raise AssertionError(f"unknown deduction step {step!r}")
        x = value
    return x


def replay_abduction(trace: str, program: str, output: int) -> int:
    """Check an abduction trace: it undoes the program's statements in reverse order, exactly,
    starting from the output, and ends with `check f(<input>)=<output>;`. Returns the input."""
    inverse = {"+": "-", "-": "+", "*": "//"}
    undo = []
    for stmt in reversed(program_body(program)):
        m = re.fullmatch(r"x = x ([-+*]) (\d+)", ast.unparse(stmt))
        assert m, ast.unparse(stmt)
        undo.append((inverse[m[1]], int(m[2])))
    steps = split_steps(trace)
    assert steps[0] == f"x={output}"
    assert len(steps) == len(undo) + 2
    x = output
    for step, (op, c) in zip(steps[1:-1], undo, strict=True):
        m = re.fullmatch(r"x=(-?\d+)(\+|-|//)(\d+)=(-?\d+)", step)
        assert m, step
        assert (int(m[1]), m[2], int(m[3])) == (x, op, c), step
        assert OPS[op](x, c) == int(m[4]), step
        x = int(m[4])
    assert steps[-1] == f"check f({x})={output}"
    return x


def replay_induction(trace: str, pairs: list[Any], answer: str) -> None:
    """Check an induction trace: the slope from two neighbouring shown inputs, the offset from
    the first, a check on the third, all agreeing with the pairs and the answered program."""
    (xa, ya), (xb, yb), (xc, yc) = pairs
    assert xb == xa + 1
    s1, s2, s3 = split_steps(trace)
    m1 = re.fullmatch(r"f\((\d+)\)-f\((\d+)\)=(\d+)-(\d+)=(\d+) a=(\d+)", s1)
    assert m1 and [int(g) for g in m1.groups()] == [xb, xa, yb, ya, yb - ya, yb - ya], s1
    a = yb - ya
    m2 = re.fullmatch(r"f\((\d+)\)-(\d+)\*(\d+)=(\d+)-(\d+)=(\d+) b=(\d+)", s2)
    b = ya - xa * a
    assert m2 and [int(g) for g in m2.groups()] == [xa, xa, a, ya, xa * a, b, b], s2
    assert s3 == f"check f({xc})={xc}*{a}+{b}={yc}" and xc * a + b == yc
    body = "x" if a == 1 else f"x * {a}"
    assert answer == f"def f(x): return {body} + {b}"


def concise_trace_problem(record: dict[str, Any], trace: str) -> str | None:
    """None when `trace` is a correct concise trace of `record`'s item, else what is wrong."""
    task, meta = record["task"], record["meta"]
    try:
        if task in ARITHMETIC:
            expected = expected_arithmetic_steps(task, meta["expression"], record["difficulty_bin"])
            assert trace == "".join(expected), (trace, expected)
        elif task == "code_deduction":
            assert replay_deduction(trace, meta["input"]) == meta["output"]
        elif task == "code_abduction":
            assert replay_abduction(trace, meta["program"], meta["output"]) == int(meta["answer"])
        else:
            replay_induction(trace, meta["pairs"], meta["answer"])
    except AssertionError as exc:
        return f"{record['id']}: {exc!r}"
    return None


def recheck_problem(record: dict[str, Any], concise: str, piece: str) -> str | None:
    """None when `piece` (one verbose re-check line) restates what the trace established."""
    task, meta, answer = record["task"], record["meta"], record["meta"]["answer"]
    ok = piece.endswith(";")
    if piece.startswith("wait, redo "):
        ok = ok and piece.removeprefix("wait, redo ") in concise
    elif task == "code_induction":
        shown = {(int(x), int(y)) for x, y in meta["pairs"]}
        if m := re.fullmatch(r"(?:check|verify) f\((\d+)\)=(\d+)(?: ok)?;", piece):
            ok = ok and (int(m[1]), int(m[2])) in shown
        elif m := re.fullmatch(r"so a=(\d+) b=(\d+);", piece):
            ok = ok and f"a={m[1]};" in concise and f"b={m[2]};" in concise
        else:
            ok = False
    else:
        ok = ok and re.search(rf"(?<![\d-]){re.escape(answer)}(?!\d)", piece) is not None
    return None if ok else f"{record['id']}: bad re-check {piece!r}"


# --- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", list(TASKS))
def test_same_arguments_give_identical_records(task: str, style: str) -> None:
    first = generate_records(task, 40, seed=11, style=style)
    again = generate_records(task, 40, seed=11, style=style)
    other = generate_records(task, 40, seed=12, style=style)
    assert first == again
    assert first != other
    assert [r["id"] for r in first] == [f"{task}-11-{i}" for i in range(40)]
    assert [r["id"] for r in other] == [f"{task}-12-{i}" for i in range(40)]


def test_task_seed_is_stable_and_distinct_per_task() -> None:
    seeds = {task: task_seed(task, 3) for task in TASKS}
    assert len(set(seeds.values())) == len(TASKS)
    assert all(0 <= s < 2**32 for s in seeds.values())
    assert task_seed("add", 0) == 4_246_369_255  # zlib.crc32(b"add"): no per-process hashing
    assert task_seed("add", 1) != task_seed("add", 0)


def test_a_prefix_of_n_records_is_the_first_records_of_more() -> None:
    assert generate_records("sub", 10, seed=4) == generate_records("sub", 25, seed=4)[:10]


# --- every record keeps the contract and its own answer is right -------------------------------


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", list(TASKS))
def test_records_keep_the_contract_and_score_one(task: str, style: str) -> None:
    records = suite(task, style)
    problems = {r["id"]: validate_record(r) for r in records if validate_record(r)}
    assert problems == {}
    answers = [extract_answer(r["text"]) for r in records]
    assert [score_answer(a, task, r["meta"]) for a, r in zip(answers, records, strict=True)] == [
        1.0
    ] * len(records)
    rewards = task_reward(
        [r["text"] for r in records],
        task=[r["task"] for r in records],
        meta=[r["meta"] for r in records],
    )
    assert rewards == [1.0] * len(records)
    for record, answer in zip(records, answers, strict=True):
        assert (record["task"], record["style"]) == (task, style)
        assert answer == record["meta"]["answer"]
        assert record["text"].startswith(record["meta"]["question"] + "\n" + THINK_OPEN)
        assert record["text"].endswith(f"<answer>{answer}</answer>")


@pytest.mark.parametrize("task", list(ALL_TASKS))
def test_concise_traces_are_exact(task: str) -> None:
    records = suite(task, "concise")
    problems = [p for r in records if (p := concise_trace_problem(r, think_of(r)))]
    assert problems == []


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "level"), TASK_LEVELS, ids=[f"{t}-d{d}" for t, d in TASK_LEVELS])
def test_difficulty_labels_match_the_item(task: str, level: int) -> None:
    records = generate_records(task, 30, seed=3, difficulties=[level])
    for record in records:
        meta = record["meta"]
        if task in ARITHMETIC:
            a, b = (int(v) for v in re.split(r"[-+*]", meta["expression"]))
            assert len(str(a)) == level
            assert record["difficulty_bin"] == (level + 2 if task == "mul2" else level)
            if task == "add":
                assert len(str(b)) == level
            elif task == "sub":
                assert 0 <= b <= a
            elif task == "mul":
                assert 2 <= b <= 9
            else:
                assert 10 <= b <= 99
        elif task in ("code_deduction", "code_abduction"):
            assert record["difficulty_bin"] == level
            assert len(program_body(meta["program"])) == level
        else:
            assert record["difficulty_bin"] == level
            slope = re.search(r"return (x|x \* (\d+)) \+", meta["answer"])
            assert slope is not None
            assert (slope[2] is None) == (level == 1)


def test_difficulties_cycle_evenly_in_order() -> None:
    records = generate_records("mul", 12, seed=0, difficulties=[4, 2])
    assert [r["difficulty_bin"] for r in records] == [4, 2] * 6
    default = generate_records("code_deduction", 8, seed=0)
    assert [r["difficulty_bin"] for r in default] == [1, 2, 3, 4] * 2


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", ["add", "sub"])
def test_one_digit_add_and_sub_answer_directly(task: str, style: str) -> None:
    records = generate_records(task, 30, seed=2, style=style, difficulties=[1])
    for record in records:
        assert record["plan_class"] == "direct"
        assert record["target_budget"] == record["think_tokens_used"] == 0
        assert think_of(record) == ""
        assert validate_record(record) == []


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", list(ALL_TASKS))
def test_plan_class_and_budgets(task: str, style: str) -> None:
    for record in suite(task, style):
        think = think_of(record)
        assert think.isascii()  # so byte offsets and character offsets agree below
        assert record["think_tokens_used"] == byte_token_count(think) == len(think.encode())
        direct = task in ("add", "sub") and record["difficulty_bin"] == 1
        assert record["plan_class"] == ("direct" if direct else PLAN_OF_TASK[task])
        if direct:
            assert record["target_budget"] == 0
            continue
        assert record["target_budget"] > 0
        if style == "concise":
            assert record["target_budget"] == record["think_tokens_used"]
        else:
            assert record["think_tokens_used"] >= record["target_budget"]


@pytest.mark.parametrize("task", list(ALL_TASKS))
def test_verbose_think_starts_with_a_correct_concise_trace(task: str) -> None:
    """The first `target_budget` bytes of a verbose think are the item's concise trace; the rest
    are 0–4 re-check lines that restate what the trace established."""
    counts = set()
    for record in suite(task, "verbose"):
        think, budget = think_of(record), record["target_budget"]
        concise, extra = think[:budget], think[budget:]
        assert concise_trace_problem(record, concise) is None
        pieces = [p for p in RECHECK_SPLIT.split(extra) if p]
        assert "".join(pieces) == extra
        assert 0 <= len(pieces) <= MAX_RECHECKS
        if not concise:
            assert pieces == []
            continue
        counts.add(len(pieces))
        assert [p for piece in pieces if (p := recheck_problem(record, concise, piece))] == []
    assert counts == set(range(MAX_RECHECKS + 1))  # every re-check count occurs in 200 records


@pytest.mark.parametrize(("task", "level"), TASK_LEVELS, ids=[f"{t}-d{d}" for t, d in TASK_LEVELS])
def test_verbose_extends_the_concise_record_of_the_same_item(task: str, level: int) -> None:
    """One item drawn from the same RNG state in both styles: verbose = concise + re-checks.

    (Item draws come before re-check draws, so this holds per item; in `generate_records` the
    re-check draws shift the shared RNG, so the two styles' later items differ.)"""
    spec = TASKS[task]
    for i in range(15):
        concise = spec.generate(task, random.Random(i), level, "concise")
        verbose = spec.generate(task, random.Random(i), level, "verbose")
        assert verbose["meta"] == concise["meta"]
        assert think_of(verbose).startswith(think_of(concise))
        assert verbose["target_budget"] == concise["target_budget"]
        assert concise["target_budget"] == len(think_of(concise).encode())
        for key in ("plan_class", "difficulty_bin"):
            assert verbose[key] == concise[key]


def test_count_tokens_sets_the_budget_unit() -> None:
    steps = generate_records(
        "sub", 6, seed=1, difficulties=[3], count_tokens=lambda s: s.count(";")
    )
    assert [r["target_budget"] for r in steps] == [3] * 6  # one step per digit


# --- build_record --------------------------------------------------------------------------------


def _record(style: str, seed: int, steps: list[str]) -> dict[str, Any]:
    return build_record(
        rng=random.Random(seed),
        task="demo",
        question="Q?",
        steps=steps,
        answer="42",
        rechecks=["A;", "B;"],
        style=style,
        plan_class="compute",
        difficulty=2,
        meta={"k": 1},
    )


def test_build_record_appends_zero_to_four_rechecks_in_verbose_style() -> None:
    counts = set()
    for seed in range(60):
        record = _record("verbose", seed, ["s1;", "s2;"])
        think = think_of(record)
        assert think.startswith("s1;s2;")
        extra = think.removeprefix("s1;s2;")
        assert re.fullmatch(r"(?:A;|B;){0,4}", extra), extra
        counts.add(len(extra) // 2)
        assert record["target_budget"] == 6
        assert record["think_tokens_used"] == 6 + len(extra)
    assert counts == set(range(MAX_RECHECKS + 1))
    concise = _record("concise", 0, ["s1;", "s2;"])
    assert concise["text"] == "Q?\n<think>s1;s2;</think><answer>42</answer>"
    assert concise["meta"] == {"question": "Q?", "answer": "42", "k": 1}
    assert think_of(_record("verbose", 0, [])) == ""  # nothing to re-check without a trace


# --- hand-made arithmetic traces -----------------------------------------------------------------


def test_add_trace_of_the_docstring_example() -> None:
    assert add_steps(71, 949) == ["1+9+0=10 r0;", "7+4+1=12 r20;", "0+9+1=10 r020;", "r1020;"]


TRACE_CASES: dict[str, tuple[Callable[[int, int], list[str]], int, int, int, str]] = {
    "add-71+949": (add_steps, 71, 949, 1020, "1+9+0=10 r0;7+4+1=12 r20;0+9+1=10 r020;r1020;"),
    "add-carry-chain": (add_steps, 999, 1, 1000, "9+1+0=10 r0;9+0+1=10 r00;9+0+1=10 r000;r1000;"),
    "add-one-digit-carry": (add_steps, 5, 7, 12, "5+7+0=12 r2;r12;"),
    "add-no-carry": (add_steps, 40, 13, 53, "0+3+0=3 r3;4+1+0=5 r53;"),
    "sub-1000-999-borrows": (
        sub_steps,
        1000,
        999,
        1,
        "0-9-0=1 b1 r1;0-9-1=0 b1 r01;0-9-1=0 b1 r001;1-0-1=0 b0 r0001;",
    ),
    "sub-one-borrow": (sub_steps, 83, 27, 56, "3-7-0=6 b1 r6;8-2-1=5 b0 r56;"),
    "sub-to-zero": (sub_steps, 52, 52, 0, "2-2-0=0 b0 r0;5-5-0=0 b0 r00;"),
    "sub-short-b": (sub_steps, 305, 7, 298, "5-7-0=8 b1 r8;0-0-1=9 b1 r98;3-0-1=2 b0 r298;"),
    "mul-final-carry": (mul_steps, 99, 9, 891, "9*9=81+0=81 c8 r1;9*9=81+8=89 c8 r91;r891;"),
    "mul-zeros": (
        mul_steps,
        125,
        8,
        1000,
        "5*8=40+0=40 c4 r0;2*8=16+4=20 c2 r00;1*8=8+2=10 c1 r000;r1000;",
    ),
    "mul-one-digit": (mul_steps, 3, 2, 6, "3*2=6+0=6 c0 r6;"),
    "mul2-12x34": (
        mul2_steps,
        12,
        34,
        408,
        "2*4=8+0=8 c0 r8;1*4=4+0=4 c0 r48;|2*3=6+0=6 c0 r6;1*3=3+0=3 c0 r36;|"
        "8+0+0=8 r8;4+6+0=10 r08;0+3+1=4 r408;",
    ),
}


def final_partial(steps: list[str]) -> str:
    m = re.search(r"(?:^| )r(\d+);$", steps[-1])
    assert m, steps[-1]
    return m[1]


@pytest.mark.parametrize(
    ("fn", "a", "b", "result", "trace"), TRACE_CASES.values(), ids=TRACE_CASES.keys()
)
def test_hand_made_traces(
    fn: Callable[[int, int], list[str]], a: int, b: int, result: int, trace: str
) -> None:
    steps = fn(a, b)
    assert "".join(steps) == trace
    assert all(step == "|" or re.fullmatch(r"[^;|]+;", step) for step in steps)
    partial = final_partial(steps)
    if fn is sub_steps:
        assert len(partial) == len(str(a))  # partials keep leading zeros …
        assert str(int(partial)) == str(result)  # … the answer drops them
    else:
        assert partial == str(result)


STEP_CHECKS: dict[str, tuple[str, Callable[..., bool]]] = {
    "add": (r"(\d)\+(\d)\+([01])=(\d+) r\d+", lambda x, y, c, t: x + y + c == t),
    "sub": (r"(\d)-(\d)-([01])=(\d) b([01]) r\d+", lambda x, y, c, d, o: x - y - c + 10 * o == d),
    "mul": (
        r"(\d)\*(\d)=(\d+)\+(\d)=(\d+) c(\d) r\d+",
        lambda x, m, p, c, v, o: x * m == p and p + c == v and o == v // 10,
    ),
}


@pytest.mark.parametrize("kind", ["add", "sub", "mul", "mul2"])
def test_random_traces_are_self_consistent_and_end_in_the_result(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(300):
        a = rng.randint(0, 10 ** rng.randint(1, 7))
        if kind == "add":
            b = rng.randint(0, 10**6)
            steps, result = add_steps(a, b), a + b
        elif kind == "sub":
            b = rng.randint(0, a)
            steps, result = sub_steps(a, b), a - b
        elif kind == "mul":
            b = rng.randint(1, 9)  # (a zero multiplier keeps a run of zeros: "r000")
            steps, result = mul_steps(a, b), a * b
        else:
            b = rng.randint(10, 99)
            steps, result = mul2_steps(a, b), a * b
            first, second, _ = "/".join(steps).split("/|/")
            assert int(final_partial(first.split("/"))) == a * (b % 10)
            assert int(final_partial(second.split("/"))) == a * (b // 10)
        assert int(final_partial(steps)) == result
        if kind != "sub":
            assert final_partial(steps) == str(result)
        for step in steps:
            if step == "|" or re.fullmatch(r"r\d+;", step):  # separators, final carries
                continue
            op = "mul" if "*" in step else ("sub" if kind == "sub" else "add")
            pattern, holds = STEP_CHECKS[op]
            m = re.fullmatch(pattern + ";", step)
            assert m, step
            assert holds(*(int(g) for g in m.groups())), step


# --- code tasks ----------------------------------------------------------------------------------


def test_deduction_trace_ends_on_the_output_that_minipy_computes() -> None:
    for record in suite("code_deduction", "concise"):
        meta = record["meta"]
        values = re.findall(r"x=[^;]*?(-?\d+);", think_of(record))
        assert int(values[-1]) == meta["output"]
        assert run_function(meta["program"], meta["input"]) == meta["output"]
        assert (
            record["meta"]["question"] == f"What does f({meta['input']}) return?\n{meta['program']}"
        )
        assert all(0 <= int(v) <= 199 for v in values)


def test_abduction_answer_runs_to_the_output() -> None:
    for record in suite("code_abduction", "concise"):
        meta = record["meta"]
        answer = int(extract_answer(record["text"]))
        assert run_function(meta["program"], answer) == meta["output"]
        assert f"returns {meta['output']}." in meta["question"]
        assert meta["program"] in meta["question"]


def test_induction_answer_reproduces_shown_and_held_out_pairs() -> None:
    for record in suite("code_induction", "concise"):
        meta = record["meta"]
        program = extract_answer(record["text"])
        shown, heldout = meta["pairs"], meta["heldout"]
        assert len(shown) == 3 and len(heldout) == 2
        assert len({x for x, _ in [*shown, *heldout]}) == 5  # held-out inputs are new
        for x, y in [*shown, *heldout]:
            assert run_function(program, x) == y
        for x, y in shown:
            assert f"f({x}) = {y}" in meta["question"]
        for x, _ in heldout:
            assert f"f({x})" not in meta["question"]


# --- errors --------------------------------------------------------------------------------------

BAD_CALLS = [
    pytest.param({"task": "div"}, r"unknown task 'div'; expected one of \[", id="unknown-task"),
    pytest.param(
        {"task": "add", "difficulties": [6]}, r"task 'add' has no difficulty \[6\]", id="add-d6"
    ),
    pytest.param({"task": "mul2", "difficulties": [1, 4]}, r"no difficulty \[4\]", id="mul2-d4"),
    pytest.param(
        {"task": "code_induction", "difficulties": [0]}, r"no difficulty \[0\]", id="induction-d0"
    ),
    pytest.param({"task": "add", "style": "terse"}, r"unknown style 'terse'", id="unknown-style"),
    pytest.param(
        {"task": "code_abduction", "style": "Verbose"}, r"unknown style 'Verbose'", id="style-case"
    ),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CALLS)
def test_bad_arguments_raise_value_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_records(n=3, **kwargs)


def test_generators_refuse_tasks_of_the_other_family() -> None:
    with pytest.raises(ValueError, match="unknown arithmetic task 'code_deduction'"):
        TASKS["add"].generate("code_deduction", random.Random(0), 1, "concise")
    with pytest.raises(ValueError, match="unknown code task 'add'"):
        TASKS["code_deduction"].generate("add", random.Random(0), 1, "concise")


def test_zero_records() -> None:
    assert generate_records("add", 0) == []


# --- the `tina data` command ---------------------------------------------------------------------


def test_cli_data_writes_contract_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.jsonl"
    argv = [
        "data",
        "--task",
        "add,code_deduction",
        "--n",
        "5",
        "--style",
        "verbose",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "wrote 10 records" in capsys.readouterr().out
    records = read_contract_jsonl(out, strict=True).records
    expected = generate_records("add", 5, style="verbose") + generate_records(
        "code_deduction", 5, style="verbose"
    )
    assert records == expected
    assert {r["style"] for r in records} == {"verbose"}
    assert (
        task_reward(
            [r["text"] for r in records],
            task=[r["task"] for r in records],
            meta=[r["meta"] for r in records],
        )
        == [1.0] * 10
    )


def test_cli_data_all_tasks_round_trip_and_still_score(tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert main(["data", "--task", "all", "--n", "4", "--seed", "9", "--out", str(out)]) == 0
    records = read_contract_jsonl(out, strict=True).records
    assert [r["task"] for r in records] == [t for t in ALL_TASKS for _ in range(4)]
    # JSON turns the induction pairs into lists; scoring must not care.
    assert task_reward(
        [r["text"] for r in records],
        task=[r["task"] for r in records],
        meta=[r["meta"] for r in records],
    ) == [1.0] * len(records)


def test_cli_data_difficulty_option(tmp_path: Path) -> None:
    out = tmp_path / "d2.jsonl"
    assert (
        main(["data", "--task", "sub", "--n", "6", "--difficulty", "2,3", "--out", str(out)]) == 0
    )
    records = read_contract_jsonl(out).records
    assert [r["difficulty_bin"] for r in records] == [2, 3] * 3


def test_cli_data_unknown_task_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.jsonl"
    assert main(["data", "--task", "add,nope", "--n", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown task" in err and "'nope'" in err
    assert not out.exists()
