"""Evaluation metrics on hand-made cases, and slicing by label."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tina.eval.metrics import (
    SUMMARY_KEYS,
    auroc,
    average_ranks,
    brier,
    budget_error,
    by,
    ece,
    exact_match,
    leakage_rate,
    plan_accuracy,
    reliability_bins,
    summarize,
    token_f1,
)


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("82", "82", 1.0, 1.0),
        ("The Cat.", "cat", 1.0, 1.0),  # case, punctuation and articles are normalised away
        ("x y z", "y z w", 0.0, 2 / 3),
        ("x x y", "x y y", 0.0, 2 / 3),  # multiset overlap: one x and one y in common
        ("x", "x x", 0.0, 2 / 3),  # precision 1, recall 1/2
        ("", "", 1.0, 1.0),
        ("", "x", 0.0, 0.0),
        ("82", "83", 0.0, 0.0),
    ],
    ids=[
        "equal",
        "normalised",
        "partial",
        "multiset",
        "repeated-gold",
        "both-empty",
        "empty",
        "no",
    ],
)
def test_exact_match_and_token_f1(prediction, gold, em, f1):
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_ece_by_hand_and_bin_count_matters():
    conf, labels = [0.1, 0.4, 0.7, 0.9], [0, 1, 0, 1]
    # 10 bins: one item each: (|0-.1| + |1-.4| + |0-.7| + |1-.9|) / 4
    assert ece(conf, labels, n_bins=10) == pytest.approx((0.1 + 0.6 + 0.7 + 0.1) / 4)
    # 2 bins: [0, .5): conf .25 acc .5; [.5, 1]: conf .8 acc .5
    assert ece(conf, labels, n_bins=2) == pytest.approx(0.5 * 0.25 + 0.5 * 0.3)
    # 1 bin: mean confidence .525 against accuracy .5
    assert ece(conf, labels, n_bins=1) == pytest.approx(0.025)


def test_ece_is_zero_when_calibrated_and_nan_when_empty():
    assert ece([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    assert math.isnan(ece([], []))


def test_reliability_bins_edges_and_top_edge():
    bins = reliability_bins([0.0, 0.5, 0.99, 1.0], [0, 1, 1, 1], n_bins=4)
    assert [b["count"] for b in bins] == [1, 0, 1, 2]  # 1.0 falls in the last, closed bin
    assert (bins[3]["lo"], bins[3]["hi"]) == (0.75, 1.0)
    assert bins[3]["confidence"] == pytest.approx(0.995) and bins[3]["accuracy"] == 1.0
    assert math.isnan(bins[1]["accuracy"])


def test_brier_by_hand():
    assert brier([1.0, 0.0, 0.5], [1, 1, 0]) == pytest.approx((0 + 1 + 0.25) / 3)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1], 0.875),  # the tie counts half
        ([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0], 0.5),
    ],
    ids=["perfect", "reversed", "classic", "tie", "all-tied"],
)
def test_auroc_by_hand(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_equals_pairwise_count_on_random_data():
    rng = random.Random(0)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.8]) for _ in range(60)]
    labels = [int(rng.random() < 0.3 + 0.5 * s) for s in scores]
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    pairs = [(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)]
    assert auroc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))


def test_auroc_with_one_class_is_nan():
    assert math.isnan(auroc([0.1, 0.9], [1, 1]))


def test_average_ranks_share_ties():
    assert average_ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]


def test_budget_error_plan_accuracy_leakage():
    assert budget_error([10, 20], [12, 16]) == pytest.approx((3.0, 3.0 / 14))
    mae, rel = budget_error([3, 0], [0, 0])
    assert mae == 1.5 and math.isnan(rel)
    assert plan_accuracy(["direct", "compute", "trace"], ["direct", "trace", "trace"]) == (
        pytest.approx(2 / 3)
    )
    assert leakage_rate([False, True, False, False]) == 0.25


@pytest.mark.parametrize(
    "call",
    [
        lambda: ece([0.5], [1, 0]),
        lambda: ece([1.5], [1]),
        lambda: brier([0.5, 0.5], [1]),
        lambda: auroc([0.5], [1, 0]),
        lambda: budget_error([1], []),
        lambda: reliability_bins([0.5], [1], n_bins=0),
    ],
    ids=["length", "range", "brier-length", "auroc-length", "budget-length", "no-bins"],
)
def test_bad_inputs_are_errors(call):
    with pytest.raises(ValueError):
        call()


def _item(task, correct, confidence=None, **extra):
    return {
        "task": task,
        "prediction": "1" if correct else "2",
        "gold": "1",
        "correct": float(correct),
        "confidence": confidence,
        "think_tokens": 10 if correct else 30,
        "leaked": False,
        **extra,
    }


def test_summarize_and_slices():
    items = [
        _item(
            "add",
            1,
            0.9,
            predicted_budget=10,
            target_budget=12,
            plan="compute",
            plan_gold="compute",
        ),
        _item(
            "add", 0, 0.2, predicted_budget=20, target_budget=16, plan="direct", plan_gold="compute"
        ),
        _item("sub", 1, 0.6),
        {"prediction": "x", "gold": "x", "correct": 1.0, "think_tokens": 0, "leaked": True},
    ]
    total = summarize(items)
    assert list(total) == list(SUMMARY_KEYS)
    assert total["n"] == 4 and total["exact_match"] == 0.75 and total["leakage_rate"] == 0.25
    assert total["avg_think_tokens"] == pytest.approx((10 + 30 + 10 + 0) / 4)
    assert total["auroc"] == 1.0  # confidence ranks the three scored items perfectly
    assert total["budget_mae"] == 3.0 and total["plan_accuracy"] == 0.5
    sliced = by(items, "task")
    assert list(sliced) == ["add", "sub", None]  # items without the field are grouped last
    assert sliced["add"]["n"] == 2 and sliced["add"]["exact_match"] == 0.5
    assert sliced["add"]["brier"] == pytest.approx((0.01 + 0.04) / 2)
    assert math.isnan(sliced["sub"]["auroc"]) and math.isnan(sliced["sub"]["budget_mae"])
    assert math.isnan(sliced[None]["ece"]) and sliced[None]["leakage_rate"] == 1.0


def test_by_sorts_integer_labels():
    items = [_item("add", 1, difficulty_bin=d) for d in (3, 1, 2, 1)]
    assert list(by(items, "difficulty_bin")) == [1, 2, 3]
    assert by(items, "difficulty_bin")[1]["n"] == 2
