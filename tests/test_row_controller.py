"""The row controller's rules, driven by scripted token sequences: no model, no tokenizer.

Tokens are written as words: `w` a think token inside a step, `.` one that ends a step, `a` `b`
`c` answer tokens, and the tags. A script is what the "model" samples; the controller decides
what is fed (forced tags come from its queue, never from the script), and the heads' readings
at a pending position come from a list of floats.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from tina.engine.controller import (
    Prediction,
    Row,
    Vocab,
    advance,
    closes_at_step_end,
    new_row,
    next_token,
    read_exit_check,
    read_soft_cap,
)
from tina.engine.types import ANSWER, DONE, THINK, EngineConfig, Request

IDS = {"w": 1, ".": 2, "a": 11, "b": 12, "c": 13, "</think>": 90, "<answer>": 91}
IDS |= {"</answer>": 92, "EOS": 93}
WORDS = {i: w for w, i in IDS.items()}


def _encode(text: str) -> list[int]:
    return [IDS[ch] for ch in text]


VOCAB = Vocab(
    think_close=IDS["</think>"],
    answer_open=IDS["<answer>"],
    answer_close=IDS["</answer>"],
    eos=IDS["EOS"],
    ends_step=lambda token: token == IDS["."],
    decode=lambda ids: "".join(WORDS[i] for i in ids),
    encode=_encode,
)


def ids(words: str) -> list[int]:
    return [IDS[w] for w in words.split()]


def words(token_ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in token_ids)


def drive(row: Row, script: str, readings: tuple[float, ...] = ()) -> list[int]:
    """Decode `row` to its end: the script supplies each sampled token, `readings` each heads'
    reading the row waits for (readiness at an exit check, confidence at the soft cap). Returns
    the fed tokens; every reading must be used."""
    sampled, reads = iter(ids(script)), iter(readings)

    def sample() -> int:
        token = next(sampled, None)
        assert token is not None, "the row sampled past the script"
        return token

    fed = []
    for _ in range(200):
        if row.phase == DONE:
            break
        token, _ = advance(row, next_token(row, sample))
        fed.append(token)
        if row.pending_exit:
            read_exit_check(row, next(reads))
        elif row.pending_assess:
            read_soft_cap(row, next(reads))
    assert row.phase == DONE
    assert next(reads, None) is None, "a reading was never asked for"
    return fed


def row_for(
    request: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    prediction: Prediction | None = None,
    exit_threshold: float | None = None,
) -> Row:
    return new_row(
        Request("q", **(request or {})),
        EngineConfig(**(config or {})),
        VOCAB,
        prediction=prediction,
        has_heads=prediction is not None,
        exit_threshold=exit_threshold,
    )


# --- budget and soft cap -----------------------------------------------------------------


@dataclass
class Budget:
    request: dict[str, Any]
    config: dict[str, Any]
    prediction: Prediction | None
    budget: int
    soft_cap: int


BUDGETS = {
    "fixed-budget-wins-over-the-heads": Budget(
        {"budget": 5}, {}, Prediction(direct=True, budget=50.0), 5, 7
    ),
    "negative-fixed-budget-is-0": Budget({"budget": -3}, {}, None, 0, 0),
    "direct-plan-gives-0": Budget({}, {}, Prediction(direct=True, budget=50.0), 0, 0),
    "heads-budget-rounded": Budget(
        {}, {"slack_ratio": 0.0}, Prediction(direct=False, budget=11.6), 12, 12
    ),
    "heads-budget-raised-to-min-think": Budget(
        {}, {"min_think": 8}, Prediction(direct=False, budget=2.4), 8, 12
    ),
    "heads-budget-lowered-to-budget-cap": Budget(
        {}, {"budget_cap": 20}, Prediction(direct=False, budget=500.0), 20, 30
    ),
    "heads-budget-lowered-to-request-cap": Budget(
        {"budget_cap": 9}, {"budget_cap": 20}, Prediction(direct=False, budget=500.0), 9, 13
    ),
    "no-heads-gives-budget-cap": Budget({}, {"budget_cap": 40}, None, 40, 60),
    "soft-cap-is-floor-of-budget-times-one-plus-slack": Budget(
        {"budget": 7, "slack_ratio": 0.3}, {}, None, 7, 9
    ),
    "max-tokens-bounds-the-soft-cap": Budget({"budget": 10, "max_tokens": 6}, {}, None, 10, 5),
}


@pytest.mark.parametrize("case", BUDGETS.values(), ids=BUDGETS.keys())
def test_budget_and_soft_cap(case: Budget) -> None:
    row = row_for(case.request, case.config, case.prediction)
    assert (row.budget, row.soft_cap) == (case.budget, case.soft_cap)


# --- per-token rules -----------------------------------------------------------------------


@dataclass
class Rule:
    script: str  #: what the model samples, in order
    completion: str  #: what the row records (tags included)
    request: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    prediction: Prediction | None = None  #: the heads' reading (None: no heads)
    exit_threshold: float | None = None
    readings: tuple[float, ...] = ()  #: readiness / confidence, in the order asked
    flags: dict[str, Any] = field(default_factory=dict)  #: row attributes expected at the end


HEADS_3 = Prediction(direct=False, budget=3.0)
HEADS_4 = Prediction(direct=False, budget=4.0)

RULES = {
    "closes-at-the-step-end-that-spends-the-budget": Rule(
        "w w . w w . a </answer>",
        "w w . w w . </think> <answer> a </answer>",
        request={"budget": 6},
        flags={"forced_think_close": True, "steps": 2},
    ),
    "closes-at-a-step-end-before-the-budget-when-nearer": Rule(
        "w w . w w . a </answer>",
        "w w . w w . </think> <answer> a </answer>",
        request={"budget": 7},  # 1 left, the mean step is 3: stopping now is nearer
    ),
    "thinks-on-to-the-next-step-end-when-nearer": Rule(
        "w w . w w . w w . a </answer>",
        "w w . w w . w w . </think> <answer> a </answer>",
        request={"budget": 8},  # 2 left of a 3-token step: the next step end is nearer
    ),
    "soft-cap-forces-think-close": Rule(
        "w w w w w w a </answer>",
        "w w w w w w </think> <answer> a </answer>",
        request={"budget": 4, "slack_ratio": 0.5},
        flags={"soft_cap": 6, "forced_think_close": True},
    ),
    "exit-check-not-ready-thinks-on-then-ready-closes": Rule(
        "w w . w . a </answer>",
        "w w . w . </think> <answer> a </answer>",
        config={"slack_ratio": 1.0},
        prediction=HEADS_3,
        exit_threshold=0.5,
        readings=(0.2, 0.9),
        flags={"exit_checks": 2, "budget": 3},
    ),
    "exit-check-at-the-threshold-closes": Rule(
        "w w . a </answer>",
        "w w . </think> <answer> a </answer>",
        prediction=HEADS_3,
        exit_threshold=0.5,
        readings=(0.5,),
        flags={"exit_checks": 1},
    ),
    "exit-check-skips-a-fixed-budget": Rule(
        "w w . a </answer>",
        "w w . </think> <answer> a </answer>",
        request={"budget": 3},
        prediction=HEADS_3,
        exit_threshold=0.5,
        flags={"exit_checks": 0},
    ),
    "exit-check-at-a-fixed-budget-when-asked": Rule(
        "w w . w . a </answer>",
        "w w . w . </think> <answer> a </answer>",
        request={"budget": 3, "exit_check": True},
        config={"slack_ratio": 1.0},
        prediction=HEADS_3,
        exit_threshold=0.5,
        readings=(0.1, 0.7),
        flags={"exit_checks": 2},
    ),
    "exit-check-needs-heads": Rule(
        "w w . a </answer>",
        "w w . </think> <answer> a </answer>",
        exit_threshold=0.5,
        request={"budget_cap": 3},
        flags={"exit_checks": 0},
    ),
    "not-ready-is-not-cut-mid-step-at-the-soft-cap": Rule(
        "w w w . w w . a </answer>",
        "w w w . w w . </think> <answer> a </answer>",
        config={"slack_ratio": 0.5},
        prediction=HEADS_4,
        exit_threshold=0.5,
        readings=(0.1,),
        flags={"soft_cap": 6, "exit_checks": 1, "forced_think_close": True},
    ),
    "not-ready-ends-its-step-by-budget-times-one-plus-twice-slack": Rule(
        "w w w . w w w w a </answer>",
        "w w w . w w w w </think> <answer> a </answer>",
        config={"slack_ratio": 0.5},
        prediction=HEADS_4,
        exit_threshold=0.5,
        readings=(0.1,),
        flags={"step_cap": 8, "forced_think_close": True},
    ),
    "max-tokens-bounds-think-and-answer": Rule(
        "w w w w a b c",
        "w w w w </think> <answer> a </answer>",
        request={"budget": 10, "max_tokens": 5},
        flags={"soft_cap": 4, "answer_cap": 1, "forced_answer_close": True},
    ),
    "max-tokens-left-by-short-thinking-shrinks-the-answer-cap": Rule(
        "w . a b c a b c",
        "w . </think> <answer> a b c </answer>",
        request={"budget": 2, "max_tokens": 5, "max_answer_tokens": 8},
        flags={"answer_cap": 3, "forced_answer_close": True},
    ),
    "low-confidence-at-the-soft-cap-extends-once": Rule(
        "w w w w w w a </answer>",
        "w w w w w w </think> <answer> a </answer>",
        request={"budget": 3, "slack_ratio": 0.0},
        config={"extend_on_low_confidence": True, "extension_ratio": 1.0},
        prediction=HEADS_3,
        readings=(0.2,),
        flags={"extended": True, "soft_cap": 6, "forced_think_close": True},
    ),
    "confident-at-the-soft-cap-closes": Rule(
        "w w w a </answer>",
        "w w w </think> <answer> a </answer>",
        request={"budget": 3, "slack_ratio": 0.0},
        config={"extend_on_low_confidence": True, "extension_ratio": 1.0},
        prediction=HEADS_3,
        readings=(0.8,),
        flags={"extended": False, "soft_cap": 3},
    ),
    "extension-stays-within-max-tokens": Rule(
        "w w w w a </answer>",
        "w w w w </think> <answer> a </answer>",
        request={"budget": 3, "slack_ratio": 0.0, "max_tokens": 5},
        config={"extend_on_low_confidence": True, "extension_ratio": 1.0},
        prediction=HEADS_3,
        readings=(0.2,),
        flags={"extended": True, "soft_cap": 4},
    ),
    "no-extension-without-heads": Rule(
        "w w w a </answer>",
        "w w w </think> <answer> a </answer>",
        request={"budget": 3, "slack_ratio": 0.0},
        config={"extend_on_low_confidence": True},
        flags={"extended": False},
    ),
    "answer-open-is-forced-after-think-close": Rule(
        "w </think> a b </answer>",
        "w </think> <answer> a b </answer>",
        request={"budget": 5},
        flags={"forced_think_close": False, "answer_ids": ids("a b")},
    ),
    "eos-while-thinking-becomes-think-close": Rule(
        "w EOS a </answer>",
        "w </think> <answer> a </answer>",
        request={"budget": 5},
        flags={"forced_think_close": True},
    ),
    "answer-open-while-thinking-becomes-think-close": Rule(
        "w <answer> a </answer>",
        "w </think> <answer> a </answer>",
        request={"budget": 5},
        flags={"forced_think_close": True},
    ),
    "answer-close-while-thinking-becomes-think-close": Rule(
        "w </answer> a </answer>",
        "w </think> <answer> a </answer>",
        request={"budget": 5},
        flags={"forced_think_close": True},
    ),
    "stray-think-close-in-the-answer-ends-it": Rule(
        "w </think> a </think> b",
        "w </think> <answer> a </answer>",
        request={"budget": 5},
        flags={"answer_ids": ids("a"), "forced_answer_close": False},
    ),
    "eos-in-the-answer-ends-it": Rule(
        "w </think> a EOS b",
        "w </think> <answer> a </answer>",
        request={"budget": 5},
        flags={"answer_ids": ids("a")},
    ),
    "stop-string-cuts-the-answer-before-it": Rule(
        "w </think> a b c a",
        "w </think> <answer> a </answer>",
        request={"budget": 5, "stop": ("bc",)},
        flags={"answer_ids": ids("a"), "forced_answer_close": False},
    ),
    "stop-string-at-the-answer-start-leaves-it-empty": Rule(
        "</think> b c a",
        "</think> <answer> </answer>",
        request={"budget": 5, "stop": ("b",)},
        flags={"answer_ids": []},
    ),
    "stop-strings-never-cut-the-thinking": Rule(
        "w w . a </answer>",
        "w w . </think> <answer> a </answer>",
        request={"budget": 3, "stop": ("w",)},
        flags={"think_ids": ids("w w .")},
    ),
    "answer-cap-forces-answer-close": Rule(
        "</think> a b c",
        "</think> <answer> a b </answer>",
        request={"budget": 5, "max_answer_tokens": 2},
        flags={"forced_answer_close": True},
    ),
    "soft-cap-zero-forces-think-close-first": Rule(
        "a </answer>",
        "</think> <answer> a </answer>",
        request={"budget": 0},
        flags={"forced_think_close": True, "think_ids": []},
    ),
}


@pytest.mark.parametrize("case", RULES.values(), ids=RULES.keys())
def test_rule(case: Rule) -> None:
    row = row_for(case.request, case.config, case.prediction, case.exit_threshold)
    drive(row, case.script, case.readings)
    assert words(row.completion_ids) == words(ids(case.completion))
    for name, expected in case.flags.items():
        assert getattr(row, name) == expected, name


def test_the_fed_tokens_are_the_completion_but_for_a_stop_cut() -> None:
    row = row_for({"budget": 2})
    assert words(drive(row, "w </think> a b </answer>")) == words(row.completion_ids)
    row = row_for({"budget": 2, "stop": ("bc",)})
    # the model was fed `b` before the stop string showed; the row records the cut answer
    assert words(drive(row, "</think> a b c")) == "</think> <answer> a b </answer>"
    assert words(row.completion_ids) == "</think> <answer> a </answer>"


def test_a_forced_tag_is_fed_without_sampling() -> None:
    row = row_for({"budget": 0})

    def never() -> int:
        raise AssertionError("sampled while a tag was queued")

    assert next_token(row, never) == IDS["</think>"]
    assert advance(row, IDS["</think>"]) == (IDS["</think>"], False)
    assert next_token(row, never) == IDS["<answer>"]
    assert advance(row, IDS["<answer>"]) == (IDS["<answer>"], False)
    assert next_token(row, lambda: IDS["a"]) == IDS["a"]


def test_phases_and_think_flags() -> None:
    row = row_for({"budget": 5})
    assert row.phase == THINK
    assert advance(row, IDS["w"]) == (IDS["w"], True)
    assert advance(row, IDS["EOS"]) == (IDS["</think>"], False)
    assert row.phase == ANSWER
    assert advance(row, next_token(row, lambda: IDS["c"])) == (IDS["<answer>"], False)
    assert advance(row, IDS["a"]) == (IDS["a"], False)
    assert advance(row, IDS["</answer>"]) == (IDS["</answer>"], False)
    assert row.phase == DONE
    with pytest.raises(ValueError, match="done"):
        advance(row, IDS["a"])


@pytest.mark.parametrize(
    ("used", "steps", "budget", "closes"),
    [
        (40, 3, 40, True),
        (52, 4, 40, True),
        (38, 3, 44, True),
        (38, 3, 45, False),
        (10, 0, 20, False),
        (0, 0, 0, True),
    ],
    ids=["spent", "past", "less-than-half-a-step-left", "more-than-half", "no-step", "zero"],
)
def test_closes_at_step_end(used: int, steps: int, budget: int, closes: bool) -> None:
    assert closes_at_step_end(used, steps, budget) is closes


def test_the_controller_loads_no_model_code() -> None:
    code = (
        "import sys, tina.engine.controller, tina.engine.types\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- a model with no reasoning format ------------------------------------------------------

DEFAULT_CAP = EngineConfig().budget_cap + EngineConfig().max_answer_tokens  #: answer cap, no format


@pytest.mark.parametrize(
    "request_fields, script, fed, answer_cap",
    [
        ({}, "a b EOS", "a b </answer>", DEFAULT_CAP),
        ({"max_tokens": 2}, "a b c", "a b </answer>", 2),
        ({"budget": 32}, "w . a EOS", "w . a </answer>", DEFAULT_CAP),
    ],
    ids=["ends-at-eos", "max-tokens-caps-the-answer", "a-budget-changes-nothing"],
)
def test_without_reasoning_the_row_answers_at_once(request_fields, script, fed, answer_cap):
    row = new_row(Request("q", **request_fields), EngineConfig(), VOCAB, reasoning=False)
    assert (row.phase, row.budget, row.soft_cap, row.answer_cap) == (ANSWER, 0, 0, answer_cap)
    assert words(drive(row, script)) == fed
    assert row.think_ids == [] and not row.forced_think_close
