"""Fitting the calibration the engine applies: confidence temperature, plan thresholds, budget clip.

What it does: `fit_confidence` (Platt scaling: the (T, bias) of least NLL, then the isotonic
`fit_confidence_map`), `fit_temperature` (T alone), `fit_plan_thresholds` (coordinate ascent on
plan accuracy; never worse than the defaults on the fitting data) and `fit_budget_clip` (the
gold budgets' range; never raises the budget MAE on the fitting data);
`export_calibration_from_eval` (all three, metrics before and after, saved with
`tina.core.calibration.save_calibration`); `run_calibration` / `calibrate_on_records` (evaluate
through the one engine, then export; at `auto` in two passes); `gather_calibration_eval` (per
item: the confidence before thinking, its correctness, plan probabilities, predicted budget;
logits recovered by running the heads under `PROBE_TEMPERATURE`). How each fit works and why:
docs/calibration.md.

What it does not do: decide correctness (`tina.data.tasks.scoring`), define the file format
(`tina.core.calibration`), or evaluate held-out data (run `tina sweep --calibration FILE` for that).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tina.core.calibration import (
    DEFAULT_PLAN_THRESHOLD,
    Calibration,
    apply_budget,
    apply_confidence,
    apply_plan,
    save_calibration,
)
from tina.core.checks import json_safe
from tina.core.plans import PLAN_CLASSES, plan_index
from tina.engine.loop import Engine
from tina.eval.metrics import auroc, brier, budget_error, ece, mean, plan_accuracy
from tina.eval.sweep import (
    AUTO,
    Budget,
    EvalItem,
    decode_items,
    item_confidence,
    item_from_record,
    progress_bar,
    require_heads,
)

#: Temperature the evaluation runs the heads under, so that logits up to about ±130 survive the
#: float32 sigmoid and can be read back from the reported confidence.
PROBE_TEMPERATURE = 8.0
T_MIN, T_MAX = 0.01, 100.0  #: the calibration schema's range for the temperature
_EPS = 1e-12

#: Thresholds tried per class: 0.25 · 2^(k/4), k = −16 … 8 (0.016 … 1.0).
THRESHOLD_GRID: tuple[float, ...] = tuple(
    DEFAULT_PLAN_THRESHOLD * 2 ** (k / 4) for k in range(-16, 9)
)


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def calibrated(logits: Sequence[float], temperature: float, bias: float = 0.0) -> list[float]:
    """sigmoid(logit / T + bias) for each logit (what `tina.core.calibration.apply_confidence`
    computes)."""
    return [_sigmoid(z / temperature + bias) for z in logits]


def confidence_nll(
    logits: Sequence[float], labels: Sequence[float], temperature: float, bias: float = 0.0
) -> float:
    """Mean negative log-likelihood of 0/1 `labels` under sigmoid(logit / T + bias), computed
    stably."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return mean(
        _softplus(z / temperature + bias) - float(y) * (z / temperature + bias)
        for z, y in zip(logits, labels, strict=True)
    )


def _golden(loss: Any, lo: float, hi: float, iterations: int = 80) -> float:
    """The minimiser of a unimodal `loss` on [lo, hi] (golden-section search)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return (lo + hi) / 2


def fit_confidence(
    logits: Sequence[float], labels: Sequence[float], t_min: float = T_MIN, t_max: float = T_MAX
) -> tuple[float, float]:
    """Platt scaling: the (T, bias) with the least `confidence_nll`. The NLL is jointly convex
    in (1/T, bias) (a logistic regression on the logit), so its minimum over the bias is convex
    in 1/T: nested golden-section searches, on log T within [t_min, t_max] and on the bias
    within [-20, 20], find it. A temperature alone cannot move a confidence that is too low on
    average; the bias can."""
    if not logits:
        raise ValueError("no confidence logits to fit on")
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")

    def best_bias(t: float) -> float:
        return _golden(lambda b: confidence_nll(logits, labels, t, b), -20.0, 20.0, 50)

    log_t = _golden(
        lambda u: confidence_nll(logits, labels, math.exp(u), best_bias(math.exp(u))),
        math.log(t_min),
        math.log(t_max),
        50,
    )
    t = math.exp(log_t)
    return t, best_bias(t)


def fit_temperature(
    logits: Sequence[float],
    labels: Sequence[float],
    t_min: float = T_MIN,
    t_max: float = T_MAX,
    iterations: int = 120,
) -> float:
    """The temperature in [t_min, t_max] with the least `confidence_nll` (golden section on
    log T; the NLL is convex in 1/T, hence unimodal in log T). 1.0 when the logits are all 0."""
    if not logits:
        raise ValueError("no confidence logits to fit a temperature on")
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits for {len(labels)} labels")
    if all(z == 0 for z in logits):
        return 1.0

    def loss(u: float) -> float:
        return confidence_nll(logits, labels, math.exp(u))

    found = _golden(loss, math.log(t_min), math.log(t_max), iterations)
    candidates = [found, math.log(t_min), math.log(t_max)]
    return min(max(math.exp(min(candidates, key=loss)), t_min), t_max)


def _plan_targets(labels: Sequence[Any]) -> list[int]:
    """Class indices; -1 for unknown (None, negative)."""
    out = []
    for y in labels:
        if y is None or (isinstance(y, int) and not isinstance(y, bool) and y < 0):
            out.append(-1)
        else:
            out.append(plan_index(y))
    return out


def _plan_accuracy(probs: torch.Tensor, targets: torch.Tensor, thresholds: list[float]) -> float:
    calibration = Calibration(plan_thresholds=dict(zip(PLAN_CLASSES, thresholds, strict=True)))
    return plan_accuracy(apply_plan(probs, calibration).tolist(), targets.tolist())


def fit_plan_thresholds(
    plan_logits: Sequence[Sequence[float]],
    plan_labels: Sequence[Any],
    grid: Sequence[float] = THRESHOLD_GRID,
    rounds: int = 4,
) -> dict[str, float]:
    """Per-class thresholds for `apply_plan` that raise plan accuracy on these items (see module
    docstring); `{}` when no item has a gold plan. Labels are names or indices; None or a
    negative index is unknown and skipped."""
    targets = _plan_targets(plan_labels)
    keep = [i for i, t in enumerate(targets) if t >= 0]
    if not keep:
        return {}
    logits = torch.tensor([list(plan_logits[i]) for i in keep], dtype=torch.float64)
    if logits.shape[-1] != len(PLAN_CLASSES):
        raise ValueError(f"plan logits need {len(PLAN_CLASSES)} columns, got {logits.shape[-1]}")
    probs = torch.softmax(logits, dim=-1)
    gold = torch.tensor([targets[i] for i in keep])
    thresholds = [DEFAULT_PLAN_THRESHOLD] * len(PLAN_CLASSES)
    best = _plan_accuracy(probs, gold, thresholds)
    for _ in range(rounds):
        improved = False
        for k in range(len(PLAN_CLASSES)):
            for value in grid:
                trial = [*thresholds[:k], float(value), *thresholds[k + 1 :]]
                score = _plan_accuracy(probs, gold, trial)
                if score > best + 1e-12:
                    best, thresholds, improved = score, trial, True
        if not improved:
            break
    return {c: round(t, 6) for c, t in zip(PLAN_CLASSES, thresholds, strict=True)}


def fit_budget_clip(gold_budgets: Sequence[float | None]) -> tuple[int, int] | None:
    """[floor(min), ceil(max)] of the known gold budgets; None when there are none."""
    known = [float(g) for g in gold_budgets if g is not None and g >= 0]
    if not known:
        return None
    return math.floor(min(known)), math.ceil(max(known))


MAP_RISE = 1e-3  #: how much the isotonic map rises across one block (keeps the ranking)


def fit_confidence_map(
    probs: Sequence[float], labels: Sequence[float], n_groups: int = 20
) -> dict[str, list[float]]:
    """Isotonic recalibration knots for `tina.core.calibration.apply_confidence`'s map: the items
    sorted by confidence in `n_groups` equal-count groups, pooled adjacent violators (PAV)
    merge groups until the accuracy never decreases, and each block's value is its accuracy
    shrunk towards its mean confidence by one pseudo-item. A block spans its lowest to its
    highest confidence with two knots, at its value less and plus `MAP_RISE` (a block whose
    items share one confidence gets one knot): every item of the fitting data maps to its
    block's value (to within `MAP_RISE`), while distinct confidences stay distinct and in order
    (AUROC is kept up to ties). Between blocks the map is linear. Why not knots at the blocks'
    mean confidences: docs/calibration.md."""
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} confidences for {len(labels)} labels")
    if not probs:
        return {}
    order = sorted(range(len(probs)), key=lambda i: probs[i])
    size = max(1, math.ceil(len(order) / n_groups))
    blocks: list[list[float]] = []  # [sum p, sum y, n, lowest p, highest p]
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        blocks.append(
            [
                sum(probs[i] for i in chunk),
                sum(float(labels[i]) for i in chunk),
                len(chunk),
                probs[chunk[0]],
                probs[chunk[-1]],
            ]
        )
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [
                *(a + b for a, b in zip(blocks[-1][:3], last[:3], strict=True)),
                blocks[-1][3],
                last[4],
            ]
    xs: list[float] = []
    ys: list[float] = []
    for p, y, n, low, high in blocks:
        value = (y + p / n) / (n + 1)
        ends = [(low, value - MAP_RISE), (high, value + MAP_RISE)] if high > low else [(low, value)]
        for x, v in ends:
            if not xs or x > xs[-1]:  # a confidence split over two groups: one knot
                xs.append(x)
                ys.append(min(max(v, ys[-1] if ys else 0.0), 1.0))
    return {"x": xs, "y": ys}


def _confidence_metrics(
    logits: Sequence[float],
    labels: Sequence[float],
    calibration: Calibration,
    n_bins: int,
) -> dict[str, float]:
    conf = apply_confidence(torch.tensor(list(logits), dtype=torch.float64), calibration).tolist()
    eps = 1e-12
    nll = mean(
        -(float(y) * math.log(max(c, eps)) + (1 - float(y)) * math.log(max(1 - c, eps)))
        for c, y in zip(conf, labels, strict=True)
    )
    return {
        "ece": ece(conf, labels, n_bins),
        "brier": brier(conf, labels),
        "auroc": auroc(conf, labels),
        "nll": nll,
        "mean_confidence": mean(conf),
        "accuracy": mean(float(y) for y in labels),
    }


@dataclass
class CalibrationFit:
    """A fitted calibration, where it was saved, and what it changed on the fitting data."""

    calibration: Calibration
    path: Path
    before: dict[str, float]  #: metrics of the raw heads (T = 1, default thresholds, no clip)
    after: dict[str, float]  #: the same metrics with the fitted calibration


def export_calibration_from_eval(
    conf_logits: Sequence[float],
    conf_labels: Sequence[float],
    plan_logits: Sequence[Sequence[float]],
    plan_labels: Sequence[Any],
    pred_budgets: Sequence[float | None],
    gold_budgets: Sequence[float | None],
    out_path: str | os.PathLike[str],
    n_bins: int = 10,
    fitted_on: Mapping[str, Any] | None = None,
    confidence_map: bool = True,
    exit_threshold: float | None = None,
) -> CalibrationFit:
    """Fit temperature, plan thresholds and budget clip (module docstring) and save the
    calibration JSON the engine reads at `out_path`, carrying `exit_threshold` (the exit check
    the data was decoded under; not fitted here: `tina.eval.exit_check`); returns it with
    before/after metrics."""
    temperature, bias = fit_confidence(conf_logits, conf_labels)
    thresholds = fit_plan_thresholds(plan_logits, plan_labels)
    clip = fit_budget_clip(gold_budgets)
    calibration = Calibration(
        confidence_temperature=temperature,
        confidence_bias=bias,
        plan_thresholds=thresholds,
        budget_min=None if clip is None else clip[0],
        budget_max=None if clip is None else clip[1],
        confidence_map=fit_confidence_map(calibrated(conf_logits, temperature, bias), conf_labels)
        if confidence_map
        else {},
        exit_threshold=exit_threshold,
    )
    before = _confidence_metrics(conf_logits, conf_labels, Calibration(), n_bins)
    after = _confidence_metrics(conf_logits, conf_labels, calibration, n_bins)
    targets = _plan_targets(plan_labels)
    known = [i for i, t in enumerate(targets) if t >= 0]
    if known:
        probs = torch.softmax(
            torch.tensor([list(plan_logits[i]) for i in known], dtype=torch.float64), -1
        )
        gold = torch.tensor([targets[i] for i in known])
        default = [DEFAULT_PLAN_THRESHOLD] * len(PLAN_CLASSES)
        before["plan_accuracy"] = _plan_accuracy(probs, gold, default)
        after["plan_accuracy"] = _plan_accuracy(
            probs, gold, [thresholds.get(c, DEFAULT_PLAN_THRESHOLD) for c in PLAN_CLASSES]
        )
    pairs = [
        (float(p), float(g))
        for p, g in zip(pred_budgets, gold_budgets, strict=True)
        if p is not None and g is not None
    ]
    if pairs:
        predicted = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
        gold_b = torch.tensor([g for _, g in pairs], dtype=torch.float64)
        before["budget_mae"] = budget_error(predicted.tolist(), gold_b.tolist())[0]
        after["budget_mae"] = budget_error(
            apply_budget(predicted, calibration).tolist(), gold_b.tolist()
        )[0]
    calibration.fitted_on = {
        **dict(fitted_on or {}),
        "n": len(conf_logits),
        "n_bins": n_bins,
        "before": json_safe({k: round(v, 6) for k, v in before.items()}),
        "after": json_safe({k: round(v, 6) for k, v in after.items()}),
    }
    path = Path(out_path)
    save_calibration(calibration, path)
    return CalibrationFit(calibration=calibration, path=path, before=before, after=after)


# --- the evaluation through the engine ----------------------------------------------------------


@dataclass
class CalibrationEval:
    """What `export_calibration_from_eval` needs, per item (same order as the items)."""

    conf_logits: list[float] = field(default_factory=list)
    conf_labels: list[float] = field(default_factory=list)  #: correctness of the engine's answer
    plan_logits: list[list[float]] = field(default_factory=list)
    plan_labels: list[int] = field(default_factory=list)  #: gold plan index, -1 unknown
    pred_budgets: list[float | None] = field(default_factory=list)
    gold_budgets: list[float | None] = field(default_factory=list)
    think_tokens: list[int] = field(default_factory=list)  #: think tokens each item spent


def probe_engine(engine: Engine, policy: Calibration | None = None) -> Engine:
    """`engine`'s model, tokenizer and heads with the raw confidence readable (under
    `PROBE_TEMPERATURE`) and no budget extension; plan thresholds and budget clip from `policy`
    (none: the raw heads choose)."""
    policy = policy or Calibration()
    return Engine(
        engine.model,
        engine.tokenizer,
        engine.introspection,
        replace(engine.config, extend_on_low_confidence=False),
        replace(
            policy,
            confidence_temperature=PROBE_TEMPERATURE,
            confidence_bias=0.0,
            confidence_map={},
        ),
    )


def confidence_logit(confidence: float, temperature: float = PROBE_TEMPERATURE) -> float:
    """The logit behind a confidence reported under `temperature` (clamped when saturated)."""
    c = min(max(confidence, _EPS), 1.0 - 1e-7)
    return temperature * math.log(c / (1.0 - c))


def gather_calibration_eval(
    engine: Engine,
    items: Sequence[EvalItem],
    budget: Budget = AUTO,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    policy: Calibration | None = None,
) -> CalibrationEval:
    """Run `items` at `budget` through `engine`'s heads (`probe_engine`: raw confidence, plan
    thresholds and budget clip of `policy`) and collect what the export fits on."""
    require_heads(engine)
    probe = probe_engine(engine, policy)
    rows, results = decode_items(probe, items, budget, batch_size, on_batch)
    out = CalibrationEval()
    for item, row, result in zip(items, rows, results, strict=True):
        t = result.telemetry
        confidence = item_confidence(t)
        if confidence is None:  # heads present: the engine always reports one
            raise RuntimeError(f"item {item.id}: the engine reported no confidence")
        out.conf_logits.append(confidence_logit(confidence))
        out.conf_labels.append(float(row["correct"]))
        out.plan_logits.append([math.log(max(t.plan_probs[c], 1e-30)) for c in PLAN_CLASSES])
        out.plan_labels.append(-1 if item.plan_gold is None else plan_index(item.plan_gold))
        out.think_tokens.append(t.think_tokens)
        out.pred_budgets.append(t.predicted_budget)
        out.gold_budgets.append(None if item.target_budget is None else float(item.target_budget))
    return out


def run_calibration(
    engine: Engine,
    items: Sequence[EvalItem],
    out_path: str | os.PathLike[str],
    budget: Budget = AUTO,
    batch_size: int = 16,
    n_bins: int = 10,
    progress: bool = False,
    source: str | None = None,
) -> CalibrationFit:
    """The evaluation (`gather_calibration_eval`) then the export, with a progress bar.

    At `auto`, the plan and budget depend on the thresholds and clip being fitted, and so does
    correctness. Two passes then: the raw heads give plan and budget data, thresholds and clip
    are fitted on it, and a second pass under them gives the confidences and correctness the
    temperature is fitted on, as they will be served. Both passes run under the exit check
    `engine` serves with (its calibration's `exit_threshold`, unless its config turns the check
    off), which the written file keeps."""
    exit_threshold = None
    if engine.calibration is not None and engine.config.exit_check:
        exit_threshold = engine.calibration.exit_threshold
    passes = 2 if budget == AUTO else 1
    bar, task = progress_bar(progress, passes * len(items), f"calibration eval (budget {budget})")
    with bar:
        data = gather_calibration_eval(
            engine,
            items,
            budget,
            batch_size,
            lambda n: bar.advance(task, n),
            Calibration(exit_threshold=exit_threshold),
        )
        served_pass = False
        if budget == AUTO:
            clip = fit_budget_clip(data.gold_budgets)
            policy = Calibration(
                plan_thresholds=fit_plan_thresholds(data.plan_logits, data.plan_labels),
                budget_min=None if clip is None else clip[0],
                budget_max=None if clip is None else clip[1],
                exit_threshold=exit_threshold,
            )
            if policy.plan_thresholds or clip is not None:
                served = gather_calibration_eval(
                    engine, items, budget, batch_size, lambda n: bar.advance(task, n), policy
                )
                data.conf_logits, data.conf_labels = served.conf_logits, served.conf_labels
                data.think_tokens = served.think_tokens
                served_pass = True
    return export_calibration_from_eval(
        data.conf_logits,
        data.conf_labels,
        data.plan_logits,
        data.plan_labels,
        data.pred_budgets,
        data.gold_budgets,
        out_path,
        n_bins=n_bins,
        fitted_on={
            "data": source,
            "budget": str(budget),
            "probe_temperature": PROBE_TEMPERATURE,
            "confidence_under_fitted_plan_and_clip": served_pass,
            "avg_think_tokens": mean(float(t) for t in data.think_tokens),
        },
        exit_threshold=exit_threshold,
    )


def calibrate_on_records(
    engine: Engine,
    records: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike[str],
    budget: Budget = AUTO,
    batch_size: int = 16,
    n_bins: int = 10,
) -> dict[str, float]:
    """`run_calibration` over contract records (training's phase D calls this); returns flat
    metrics for a log: `calibration_temperature`, `calibration_<metric>_before/_after`."""
    items = [item_from_record(r, ("<records>", i + 1)) for i, r in enumerate(records)]
    fit = run_calibration(engine, items, out_path, budget, batch_size, n_bins)
    out = {
        "calibration_temperature": fit.calibration.confidence_temperature,
        "calibration_bias": fit.calibration.confidence_bias,
    }
    for key in fit.before:
        out[f"calibration_{key}_before"] = fit.before[key]
        out[f"calibration_{key}_after"] = fit.after[key]
    return out


def report_lines(fit: CalibrationFit) -> list[str]:
    """Before/after figures of a fit, for the terminal."""
    order = ("ece", "brier", "auroc", "nll", "plan_accuracy", "budget_mae")
    keys = [k for k in order if k in fit.before]
    width = max(len(k) for k in keys)

    def cell(v: float) -> str:
        return "–" if math.isnan(v) else f"{v:.4f}"

    lines = [
        f"confidence temperature T = {fit.calibration.confidence_temperature:.4f}, "
        f"bias = {fit.calibration.confidence_bias:+.4f}",
        f"{'':{width}}  {'before':>8}  {'after':>8}",
    ]
    lines += [f"{k:{width}}  {cell(fit.before[k]):>8}  {cell(fit.after[k]):>8}" for k in keys]
    if fit.calibration.plan_thresholds:
        lines.append(f"plan thresholds {fit.calibration.plan_thresholds}")
    if fit.calibration.budget_min is not None:
        lines.append(f"budget clip [{fit.calibration.budget_min}, {fit.calibration.budget_max}]")
    return lines
