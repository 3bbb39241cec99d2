"""Tests for `tina.selfplay`: task modes, prompts, proposal checks, verifiers, and the buffer.

Seeded suite records are the fixed points: a task built from a record renders exactly the
record's question, and its gold answer verifies through the sandbox. Sandbox work is batched
so the whole file stays fast on a loaded 2-core machine; no test asserts a duration.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tina.data.sandbox import SandboxConfig
from tina.data.tasks import generate_records
from tina.selfplay.buffer import BufferConfig, TaskBuffer, seed_buffer, task_key
from tina.selfplay.tasks import (
    Abduction,
    Deduction,
    Induction,
    Proposal,
    Task,
    check_proposals,
    make_induction,
    mode_of,
    parameters,
    same_value,
    selfplay_reward,
    task_from_record,
    task_question,
    verify_answers,
)

CONFIG = SandboxConfig(timeout_s=60.0, cpu_s=1, memory_mb=256, max_output_bytes=4096)
MOD5 = "def f(x):\n    return x % 5"
PAIR_SUM = "def f(a, b):\n    return [a + b, a * b]"


def suite_tasks(n: int = 12, seed: int = 3) -> list[tuple[dict[str, Any], Task]]:
    records = [
        r
        for name in ("code_deduction", "code_abduction", "code_induction")
        for r in generate_records(name, n, seed=seed)
    ]
    return [(r, task_from_record(r)) for r in records]


def test_suite_records_render_their_own_questions() -> None:
    pairs = suite_tasks()
    assert {mode_of(t) for _, t in pairs} == {"deduction", "abduction", "induction"}
    for record, task in pairs:
        assert task_question(task) == record["meta"]["question"]


def test_gold_answers_of_suite_tasks_verify_in_the_sandbox() -> None:
    pairs = suite_tasks()
    answers = [record["meta"]["answer"] for record, _ in pairs]
    assert verify_answers([t for _, t in pairs], answers, CONFIG) == [True] * len(pairs)


def test_prompts_for_general_values() -> None:
    deduction = Deduction(PAIR_SUM, "f", ("ab", [1]), None)
    assert task_question(deduction) == f"What does f('ab', [1]) return?\n{PAIR_SUM}"
    abduction = Abduction(PAIR_SUM, "f", [5, 6], (2, 3))
    assert task_question(abduction) == f"Find a, b so that f(a, b) returns [5, 6].\n{PAIR_SUM}"
    induction = Induction(PAIR_SUM, "f", (((1, 2), [3, 2]),), (((0, 0), [0, 0]),), "sum, product")
    assert task_question(induction) == "Write f so that f(1, 2) = [3, 2].\nsum, product"
    assert parameters(PAIR_SUM, "f") == ["a", "b"]


def test_same_value_is_strict_about_types() -> None:
    assert same_value([1, (2, "a")], [1, (2, "a")])
    assert not same_value(1, 1.0) and not same_value(1, True) and not same_value([1], (1,))
    assert same_value({"a": [1]}, {"a": [1]}) and not same_value({"a": 1}, {"a": 1.0})


def test_outputs_beyond_plain_literals_are_answered_as_repr_writes_them() -> None:
    programs = {
        "def f(x):\n    return x * float('nan')": "nan",
        "def f(x):\n    return frozenset({x, 2})": "frozenset({1, 2})",
        "def f(x):\n    return set()": "set()",
        "def f(x):\n    return complex(x, 2)": "(1+2j)",
        "def f(x):\n    return -float(x) * 1e999": "-inf",
    }
    outputs = {
        "nan": float("nan"),
        "frozenset({1, 2})": frozenset({1, 2}),
        "set()": set(),
        "(1+2j)": complex(1, 2),
        "-inf": float("-inf"),
    }
    tasks: list[Task] = [Deduction(p, "f", (1,), outputs[a]) for p, a in programs.items()]
    tasks += [Abduction(p, "f", outputs[a], (1,)) for p, a in programs.items()]
    answers = [*programs.values(), *["1"] * len(programs)]
    assert verify_answers(tasks, answers, CONFIG) == [True] * len(tasks)
    assert verify_answers(tasks[:2], ["inf", "{1, 2}"], CONFIG) == [False, False]
    assert same_value(float("nan"), float("nan")) and not same_value(float("nan"), 1.0)


def test_verifiers_of_each_mode() -> None:
    deduction = Deduction(MOD5, "f", (12,), 2)
    abduction = Abduction(MOD5, "f", 2, (12,))
    induction = Induction(
        "def f(x):\n    return 2 * x + 1", "f", (((0,), 1), ((1,), 3)), (((5,), 11), ((9,), 19))
    )
    cases = [
        (deduction, "2", True),
        (deduction, " 2 ", True),
        (deduction, "2.0", False),
        (deduction, "3", False),
        (deduction, "two", False),
        (abduction, "7", True),  # any input that gives the output, not only the reference one
        (abduction, "12", True),
        (abduction, "3", False),
        (abduction, "'a'", False),  # the program raises: not a solution
        (abduction, "1, 2", False),  # wrong number of arguments
        (abduction, "import os", False),
        (induction, "def f(x):\n    return x + x + 1", True),
        (induction, "2 * x + 1", True),  # a bare expression over the reference parameters
        (induction, "x * x + 1 if x < 2 else 0", False),  # fits the shown pairs only
        (induction, "def g(x):\n    return 2 * x + 1", False),  # not the entry function
        (induction, "__import__('os').getpid()", False),
        (induction, "", False),
    ]
    got = verify_answers([c[0] for c in cases], [c[1] for c in cases], CONFIG)
    assert got == [c[2] for c in cases]


def test_selfplay_reward_reads_the_answer_span() -> None:
    tasks: list[Task] = [Deduction(MOD5, "f", (12,), 2), Abduction(MOD5, "f", 2, (12,))]
    completions = ["<think>12%5=2</think><answer>2</answer>", "<think>x</think><answer>8</answer>"]
    assert selfplay_reward(completions, selfplay_task=tasks, sandbox_config=CONFIG) == [1.0, 0.0]


def test_check_proposals_accepts_and_says_why_it_rejects() -> None:
    proposals = {
        "accepted": Proposal(PAIR_SUM, "f", [(1, 2), (3, 4)]),
        "syntax": Proposal("def f(x) return x", "f", [(1,)]),
        "import": Proposal("import os\ndef f(x):\n    return x", "f", [(1,)]),
        "dunder": Proposal("def f(x):\n    return x.__class__", "f", [(1,)]),
        "raises": Proposal("def f(x):\n    return 10 // x", "f", [(1,), (0,)]),
        "nondeterministic": Proposal(
            "def f(s):\n    return ''.join(set(s))", "f", [("abcdefghijklmnopqrstuvwxyz",)]
        ),
        "too_large": Proposal("def f(n):\n    return 'a' * n", "f", [(10**5,)]),
        "not_literal": Proposal(MOD5, "f", [(object(),)]),
        "no_inputs": Proposal(MOD5, "f", []),
    }
    checks = dict(zip(proposals, check_proposals(list(proposals.values()), CONFIG), strict=True))
    assert checks["accepted"].accepted and checks["accepted"].outputs == ([3, 2], [7, 12])
    expected_reasons = {
        "syntax": "refused: line 1: syntax",
        "import": "refused: line 1: construct: Import",
        "dunder": "refused: line 2: dunder",
        "raises": "error: ZeroDivisionError",
        "nondeterministic": "nondeterministic",
        "too_large": "output_too_large",
        "not_literal": "input: input 0",
        "no_inputs": "input: no inputs",
    }
    for name, prefix in expected_reasons.items():
        assert not checks[name].accepted and checks[name].reason.startswith(prefix), (
            name,
            checks[name],
        )


def test_check_proposals_always_checks_determinism() -> None:
    config = SandboxConfig(timeout_s=60.0, cpu_s=1, check_determinism=False)
    (check,) = check_proposals(
        [Proposal("def f():\n    return repr(lambda: 0)", "f", [()])], config
    )
    assert check.reason.startswith("nondeterministic")


def test_make_induction_holds_out_a_seeded_split() -> None:
    pairs = [((x,), 2 * x) for x in range(6)]
    task = make_induction("def f(x):\n    return 2 * x", "f", pairs, 2, random.Random(0))
    again = make_induction("def f(x):\n    return 2 * x", "f", pairs, 2, random.Random(0))
    assert task == again and len(task.heldout) == 2 and len(task.shown) == 4
    assert sorted([*task.shown, *task.heldout]) == pairs
    with pytest.raises(ValueError, match="distinct"):
        make_induction(MOD5, "f", [((1,), 1), ((1,), 1)], 1, random.Random(0))
    with pytest.raises(ValueError, match="n_heldout"):
        make_induction(MOD5, "f", pairs, 6, random.Random(0))


# --- buffer -----------------------------------------------------------------------------------


def deduction(i: int) -> Deduction:
    return Deduction(f"def f(x):\n    return x + {i}", "f", (1,), 1 + i)


def test_buffer_deduplicates_by_normalized_program_and_input() -> None:
    buffer = TaskBuffer(BufferConfig(capacity=10))
    assert buffer.add(Deduction("def f(x):\n    return x+1", "f", (1,), 2))
    same = Deduction("def f( x ):  # one more\n\n    return (x + 1)", "f", (1,), 2)
    assert task_key(same) == task_key(Deduction("def f(x):\n    return x+1", "f", (1,), 2))
    assert not buffer.add(same) and same in buffer
    assert buffer.add(Deduction("def f(x):\n    return x+1", "f", (2,), 3))  # another input
    assert buffer.add(Abduction("def f(x):\n    return x+1", "f", 2, (1,)))  # another mode
    assert len(buffer) == 3


def test_fifo_buffer_drops_the_oldest() -> None:
    buffer = TaskBuffer(BufferConfig(capacity=3, policy="fifo"))
    assert buffer.extend([deduction(i) for i in range(5)]) == 5
    assert [t.output for t in buffer] == [3, 4, 5]
    assert buffer.add(deduction(0))  # a dropped task may come back


def test_reservoir_buffer_is_seeded_and_uniform() -> None:
    stream = [deduction(i) for i in range(300)]

    def kept(seed: int) -> list[int]:
        buffer = TaskBuffer(BufferConfig(capacity=10, policy="reservoir", seed=seed))
        buffer.extend(stream)
        assert len(buffer) == 10 and buffer.added == 300
        return [t.output - 1 for t in buffer]  # type: ignore[union-attr]

    assert kept(1) == kept(1) and kept(1) != kept(2)
    indices = [i for seed in range(50) for i in kept(seed)]  # 500 draws of an index in 0..299
    mean = sum(indices) / len(indices)
    assert 130 < mean < 170  # uniform: 149.5; a FIFO would keep 290..299, a no-op 0..9
    assert 150 < sum(i < 150 for i in indices) < 350


def test_seed_buffer_fills_every_mode_and_samples_by_mode() -> None:
    buffer = TaskBuffer(BufferConfig(capacity=1000))
    added = seed_buffer(buffer, n_per_mode=30, seed=5)
    assert added == len(buffer) and 60 < added <= 90
    assert {mode_of(t) for t in buffer} == {"deduction", "abduction", "induction"}
    assert seed_buffer(buffer, n_per_mode=30, seed=5) == 0  # the same tasks again: all dupes
    picked = buffer.sample(5, random.Random(0), mode="induction")
    assert len(picked) == 5 and all(isinstance(t, Induction) for t in picked)
    assert buffer.sample(5, random.Random(0), mode="induction") == picked
    assert len(buffer.sample(10_000, random.Random(0))) == len(buffer)


@pytest.mark.parametrize("bad", [{"capacity": 0}, {"policy": "lifo"}])
def test_buffer_config_checks_its_fields(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BufferConfig(**bad)
