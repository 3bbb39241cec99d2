"""Tests for `tina.data.tasks.scoring`: exact rewards on hand-made completions, in TRL's
convention."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tina.data.tasks import ALL_TASKS, generate_records
from tina.data.tasks.minipy import run_function
from tina.data.tasks.scoring import score_answer, task_reward

ADD_META: dict[str, Any] = {"question": "Add 71 and 949", "answer": "1020", "expression": "71+949"}
ADD_TRACE = "1+9+0=10 r0;7+4+1=12 r20;0+9+1=10 r1020;"

# f(x) = (x % 5) + 3: every x with x % 5 == 2 gives 5, so many inputs are right.
ABDUCTION_META: dict[str, Any] = {
    "question": "Find x so that f(x) returns 5.",
    "answer": "7",
    "program": "def f(x):\n  x = x % 5\n  x = x + 3\n  return x",
    "output": 5,
    "input": 7,
}
# f(x) = 2x + 3; JSON-shaped pairs (lists), as records read back from a file carry them.
INDUCTION_META: dict[str, Any] = {
    "question": "Write f so that f(0) = 3, f(1) = 5, f(4) = 11.",
    "answer": "def f(x): return x * 2 + 3",
    "pairs": [[0, 3], [1, 5], [4, 11]],
    "heldout": [[6, 15], [9, 21]],
    "program": "def f(x): return x * 2 + 3",
}
FITS_SHOWN_ONLY = "def f(x): return x * 2 + 3 if x <= 4 else 0"


def reward(completion: str, task: str, meta: dict[str, Any]) -> float:
    (score,) = task_reward([completion], task=[task], meta=[meta])
    return score


ADD_CASES = {
    "full_completion": (f"<think>{ADD_TRACE}</think><answer>1020</answer>", 1.0),
    "completion_after_prompt_think": (f"{ADD_TRACE}</think><answer>1020</answer>", 1.0),
    "bare_answer": ("1020", 1.0),
    "surrounding_whitespace": ("  \n1020\t ", 1.0),
    "whitespace_inside_tags": (f"<think>{ADD_TRACE}</think><answer> 1020 \n</answer>", 1.0),
    "answer_cut_off_before_close": (f"<think>{ADD_TRACE}</think><answer>1020", 1.0),
    "after_think_without_answer_tags": (f"<think>{ADD_TRACE}</think>1020", 1.0),
    "thousands_separator": ("<answer>1,020</answer>", 1.0),
    "wrong_number": (f"<think>{ADD_TRACE}</think><answer>1021</answer>", 0.0),
    "negative": ("<answer>-1020</answer>", 0.0),
    "words": ("<answer>one thousand twenty</answer>", 0.0),
    "number_with_words": ("<answer>1020 apples</answer>", 0.0),
    "trailing_dot": ("<answer>1020.</answer>", 0.0),
    "two_numbers": ("<answer>1020 1021</answer>", 0.0),
    "empty_answer": (f"<think>{ADD_TRACE}</think><answer></answer>", 0.0),
    "empty_completion": ("", 0.0),
    "answer_only_in_think": ("<think>so 71+949 is 1020</think><answer>1000</answer>", 0.0),
    "answer_only_in_think_no_answer": ("<think>so 71+949 is 1020</think>", 0.0),
    "answer_tag_inside_think": ("<think><answer>1020</answer></think><answer>7</answer>", 0.0),
    "thinking_never_closed": (f"<think>{ADD_TRACE} so 1020", 0.0),
    "answer_inside_reflect": ("<think>x</think><answer><reflect>1020</reflect></answer>", 0.0),
}


@pytest.mark.parametrize(("completion", "expected"), ADD_CASES.values(), ids=ADD_CASES.keys())
def test_add_reward(completion: str, expected: float) -> None:
    assert reward(completion, "add", ADD_META) == expected


ABDUCTION_CASES = {
    "canonical_input": ("<think>x=5;x=5-3=2;check f(7)=5;</think><answer>7</answer>", 1.0),
    "smallest_input": ("<answer>2</answer>", 1.0),
    "larger_input": ("12", 1.0),
    "negative_input": (" -3 ", 1.0),  # Python: -3 % 5 == 2
    "wrong_input": ("<answer>3</answer>", 0.0),
    "the_output_itself": ("<answer>5</answer>", 0.0),
    "float": ("<answer>7.0</answer>", 0.0),
    "expression": ("<answer>2+5</answer>", 0.0),
    "assignment": ("<answer>x=7</answer>", 0.0),
    "word": ("<answer>seven</answer>", 0.0),
    "empty": ("<think>7</think><answer></answer>", 0.0),
    "beyond_magnitude_limit": ("9" * 30, 0.0),
}


@pytest.mark.parametrize(
    ("completion", "expected"), ABDUCTION_CASES.values(), ids=ABDUCTION_CASES.keys()
)
def test_abduction_reward_accepts_any_valid_input(completion: str, expected: float) -> None:
    assert reward(completion, "code_abduction", ABDUCTION_META) == expected


def test_abduction_input_that_crashes_the_program_scores_zero() -> None:
    meta = {**ABDUCTION_META, "program": "def f(x):\n  return 10 // x", "output": 5}
    assert reward("2", "code_abduction", meta) == 1.0
    assert reward("0", "code_abduction", meta) == 0.0  # division by zero inside minipy


def test_abduction_with_max_accepts_every_input_below_the_floor() -> None:
    meta = {**ABDUCTION_META, "program": "def f(x):\n  x = max(x, 10)\n  return x", "output": 10}
    assert [reward(a, "code_abduction", meta) for a in ("-50", "0", "10", "11")] == [1, 1, 1, 0]


INDUCTION_CASES = {
    "canonical": ("<answer>def f(x): return x * 2 + 3</answer>", 1.0),
    "terms_swapped": ("<answer>def f(x): return 3 + x * 2</answer>", 1.0),
    "bare_expression": ("x*2+3", 1.0),
    "bare_expression_in_tags": ("<think>a=2 b=3</think><answer>2 * x + 3</answer>", 1.0),
    "multi_line_body": ("def f(x):\n  y = x + x\n  return y + 3", 1.0),
    "other_names": ("def g(n): return n + n + 3", 1.0),
    "with_a_loop": ("def f(x):\n  y = 3\n  for i in range(x):\n    y += 2\n  return y", 1.0),
    "wrong_slope": ("def f(x): return x + 3", 0.0),
    "fits_shown_not_heldout": (FITS_SHOWN_ONLY, 0.0),
    "malicious_import": ("def f(x): return __import__('os').system('ls')", 0.0),
    "eval": ("def f(x): return eval('2*x+3')", 0.0),
    "lambda": ("lambda x: 2*x+3", 0.0),
    "math_notation": ("f(x) = 2x + 3", 0.0),
    "two_functions": ("def f(x): return 2*x+3\ndef g(x): return x", 0.0),
    "while_true": ("def f(x):\n  while True:\n    pass", 0.0),
    "step_limit": ("def f(x):\n  for i in range(10000000):\n    x = x\n  return 2*x+3", 0.0),
    "max_of_one_argument": ("max(x)", 0.0),  # a TypeError in Python: refused, not a crash
    "deeply_nested": ("-" * 100_000 + "x", 0.0),
    "syntax_error": ("def f(x) return 2*x+3", 0.0),
    "empty": ("<answer></answer>", 0.0),
    "answer_only_in_think": ("<think>def f(x): return x * 2 + 3</think><answer>x</answer>", 0.0),
}


@pytest.mark.parametrize(
    ("completion", "expected"), INDUCTION_CASES.values(), ids=INDUCTION_CASES.keys()
)
def test_induction_reward(completion: str, expected: float) -> None:
    assert reward(completion, "code_induction", INDUCTION_META) == expected


def test_fits_shown_only_really_fits_the_shown_pairs() -> None:
    for x, y in INDUCTION_META["pairs"]:
        assert run_function(FITS_SHOWN_ONLY, x) == y


def test_malicious_program_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def fake_system(*args: Any) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(os, "system", fake_system)
    completion = "<answer>def f(x): return __import__('os').system('ls')</answer>"
    assert reward(completion, "code_induction", INDUCTION_META) == 0.0
    assert reward("__import__('os').system('ls')", "code_abduction", ABDUCTION_META) == 0.0
    assert calls == []


def test_deduction_reward() -> None:
    meta = {"answer": "25", "program": "def f(x):\n  return x * 3 - 2", "input": 9, "output": 25}
    assert (
        reward("<think>x=9;x=9*3=27;x=27-2=25;</think><answer>25</answer>", "code_deduction", meta)
        == 1
    )
    assert reward("<answer>27</answer>", "code_deduction", meta) == 0


def test_batch_of_mixed_tasks_follows_trl_convention() -> None:
    completions = ["1020", "<answer>12</answer>", "x*2+3", "1021", "4", "x+3"]
    tasks = ["add", "code_abduction", "code_induction", "add", "code_abduction", "code_induction"]
    metas = [ADD_META, ABDUCTION_META, INDUCTION_META] * 2
    scores = task_reward(
        completions, task=tasks, meta=metas, prompts=["p"] * 6, completion_ids=[[1]] * 6
    )
    assert scores == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert all(type(s) is float for s in scores)
    assert task_reward([], task=[], meta=[]) == []


@pytest.mark.parametrize(
    ("n_completions", "n_tasks", "n_metas"),
    [(1, 2, 2), (2, 1, 2), (2, 2, 1), (0, 1, 1)],
    ids=["fewer_completions", "fewer_tasks", "fewer_metas", "no_completions"],
)
def test_length_mismatch_raises(n_completions: int, n_tasks: int, n_metas: int) -> None:
    with pytest.raises(ValueError, match="same length"):
        task_reward(["1020"] * n_completions, task=["add"] * n_tasks, meta=[ADD_META] * n_metas)


@pytest.mark.parametrize("task", [t for t in ALL_TASKS if t != "code_induction"])
def test_off_by_one_answers_of_generated_records_score_zero(task: str) -> None:
    """Gold answers score 1 and gold + 1 scores 0 (abduction programs are injective)."""
    records = generate_records(task, 60, seed=21)
    for record in records:
        gold = int(record["meta"]["answer"])
        assert score_answer(str(gold), task, record["meta"]) == 1.0
        assert score_answer(str(gold + 1), task, record["meta"]) == 0.0


def test_out_of_scope_scores_the_refusal_and_nothing_else() -> None:
    from tina.data.tasks.out_of_scope import REFUSAL

    meta = generate_records("out_of_scope", 1, seed=3)[0]["meta"]
    assert score_answer(REFUSAL, "out_of_scope", meta) == 1.0
    assert score_answer("52", "out_of_scope", meta) == 0.0
    assert score_answer("", "out_of_scope", meta) == 0.0
