"""Evaluation metrics as pure functions over plain numbers and strings, plus slicing by label.

What it does: answer quality (`exact_match`, `token_f1` with SQuAD's normalisation); confidence
(`ece` and `reliability_bins` over equal-width bins, `brier`, `auroc`: rank-based, average ranks
for ties); thinking (`mean`, `leakage_rate`, `budget_error`: MAE and relative, `plan_accuracy`);
`summarize(items)`: every metric over per-item dicts (keys in `ITEM_FIELDS`), and
`by(items, field)`: the same summary per value of any label field (task, difficulty_bin, style…).
Each metric's definition: docs/evaluation.md.

A metric with nothing to measure (no items, no confidences, one class only for AUROC) is NaN,
never a made-up number. What this module does not do: decide correctness (that is
`tina.data.tasks.scoring`), decode, or write files.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NAN = float("nan")

#: Per-item keys `summarize` reads (any may be missing or None: its metrics are then NaN).
ITEM_FIELDS: dict[str, str] = {
    "prediction": "the answer the engine gave (str)",
    "gold": "the reference answer (str)",
    "correct": "1.0 / 0.0 from tina.data.tasks.scoring",
    "confidence": "the engine's confidence in [0, 1]",
    "think_tokens": "think tokens spent",
    "leaked": "hidden output leaked reasoning (bool)",
    "predicted_budget": "the heads' budget",
    "target_budget": "the gold budget (think tokens of the concise trace)",
    "plan": "the chosen plan class",
    "plan_gold": "the gold plan class",
}

#: The keys of `summarize`'s result, in table order.
SUMMARY_KEYS: tuple[str, ...] = (
    "n",
    "exact_match",
    "token_f1",
    "avg_think_tokens",
    "leakage_rate",
    "ece",
    "brier",
    "auroc",
    "budget_mae",
    "budget_rel_error",
    "plan_accuracy",
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1: whitespace tokens of the normalised strings, multiset overlap. Two empty
    answers agree (1.0); one empty answer against a non-empty one scores 0.0."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values."""
    values = list(values)
    return sum(values) / len(values) if values else NAN


def leakage_rate(leaked: Iterable[bool]) -> float:
    """Share of outputs that leaked reasoning."""
    return mean(float(bool(v)) for v in leaked)


def _check_pairs(confidences: Sequence[float], labels: Sequence[float]) -> None:
    if len(confidences) != len(labels):
        raise ValueError(f"{len(confidences)} confidences for {len(labels)} labels")
    for c in confidences:
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} outside [0, 1]")


def reliability_bins(
    confidences: Sequence[float], labels: Sequence[float], n_bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1] (`[k/n, (k+1)/n)`, the last one closed): per bin its edges,
    count, mean confidence and accuracy (NaN for an empty bin)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    _check_pairs(confidences, labels)
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, c in enumerate(confidences):
        members[min(int(c * n_bins), n_bins - 1)].append(i)
    return [
        {
            "lo": k / n_bins,
            "hi": (k + 1) / n_bins,
            "count": float(len(m)),
            "confidence": mean(confidences[i] for i in m),
            "accuracy": mean(float(labels[i]) for i in m),
        }
        for k, m in enumerate(members)
    ]


def ece(confidences: Sequence[float], labels: Sequence[float], n_bins: int = 10) -> float:
    """Expected calibration error: Σ_bins |bin| / N · |accuracy − mean confidence|."""
    if not confidences:
        _check_pairs(confidences, labels)
        return NAN
    total = len(confidences)
    return sum(
        b["count"] / total * abs(b["accuracy"] - b["confidence"])
        for b in reliability_bins(confidences, labels, n_bins)
        if b["count"]
    )


def brier(confidences: Sequence[float], labels: Sequence[float]) -> float:
    """Mean squared error of the confidence against the 0/1 label."""
    _check_pairs(confidences, labels)
    return mean((c - float(y)) ** 2 for c, y in zip(confidences, labels, strict=True))


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve of `scores` for the positive labels: the chance that a random
    positive outscores a random negative, ties counting half (Mann–Whitney). NaN when either
    class is absent."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    positives = [bool(y) for y in labels]
    n_pos = sum(positives)
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    rank_sum = sum(r for r, p in zip(average_ranks(scores), positives, strict=True) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks (ties share
    theirs). NaN with fewer than two pairs or when either side is constant."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}")
    if len(a) < 2:
        return NAN
    ra, rb = average_ranks(a), average_ranks(b)
    ma, mb = mean(ra), mean(rb)
    da, db = [r - ma for r in ra], [r - mb for r in rb]
    denominator = math.sqrt(sum(x * x for x in da) * sum(y * y for y in db))
    if denominator == 0:
        return NAN
    return sum(x * y for x, y in zip(da, db, strict=True)) / denominator


def budget_error(predicted: Sequence[float], gold: Sequence[float]) -> tuple[float, float]:
    """(mean absolute error, MAE / mean gold budget) of predicted think budgets. The relative
    error is NaN when the gold budgets average 0."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted budgets for {len(gold)} gold ones")
    mae = mean(abs(p - g) for p, g in zip(predicted, gold, strict=True))
    scale = mean(gold)
    return mae, (mae / scale if scale and scale > 0 else NAN)


def plan_accuracy(predicted: Sequence[Any], gold: Sequence[Any]) -> float:
    """Share of plan classes equal to the gold ones."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted plans for {len(gold)} gold ones")
    return mean(float(p == g) for p, g in zip(predicted, gold, strict=True))


def _present(items: Sequence[Mapping[str, Any]], *keys: str) -> list[Mapping[str, Any]]:
    return [it for it in items if all(it.get(k) is not None for k in keys)]


def summarize(items: Sequence[Mapping[str, Any]], n_bins: int = 10) -> dict[str, float]:
    """Every metric of `SUMMARY_KEYS` over per-item dicts (see `ITEM_FIELDS`). Each metric uses
    the items that carry its fields; a metric no item can feed is NaN."""
    with_answers = _present(items, "prediction", "gold")
    judged = _present(items, "correct")
    confident = _present(items, "correct", "confidence")
    budgets = _present(items, "predicted_budget", "target_budget")
    plans = _present(items, "plan", "plan_gold")
    confidences = [float(it["confidence"]) for it in confident]
    labels = [float(it["correct"]) for it in confident]
    mae, relative = budget_error(
        [float(it["predicted_budget"]) for it in budgets],
        [float(it["target_budget"]) for it in budgets],
    )
    return {
        "n": float(len(items)),
        "exact_match": mean(float(it["correct"]) for it in judged),
        "token_f1": mean(token_f1(it["prediction"], it["gold"]) for it in with_answers),
        "avg_think_tokens": mean(
            float(it["think_tokens"]) for it in _present(items, "think_tokens")
        ),
        "leakage_rate": leakage_rate(it["leaked"] for it in _present(items, "leaked")),
        "ece": ece(confidences, labels, n_bins),
        "brier": brier(confidences, labels),
        "auroc": auroc(confidences, labels),
        "budget_mae": mae,
        "budget_rel_error": relative,
        "plan_accuracy": plan_accuracy(
            [it["plan"] for it in plans], [it["plan_gold"] for it in plans]
        ),
    }


def by(
    items: Sequence[Mapping[str, Any]], field: str, n_bins: int = 10
) -> dict[Any, dict[str, float]]:
    """`summarize` per value of `field` (items lacking the field are grouped under None),
    values in sorted order (None last)."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for it in items:
        groups.setdefault(it.get(field), []).append(it)
    keys = sorted((k for k in groups if k is not None), key=lambda k: (str(type(k)), k))
    if None in groups:
        keys.append(None)
    return {k: summarize(groups[k], n_bins) for k in keys}


def budget_reward(
    correct: float, think_tokens: int, budget: int, lam: float, over_budget_weight: float
) -> float:
    """correct − lam · think_tokens − over_budget_weight · max(0, used − budget) / max(budget,
    1): the reward of one served request."""
    overrun = max(0, think_tokens - budget) / max(budget, 1)
    return float(correct) - lam * think_tokens - over_budget_weight * overrun
