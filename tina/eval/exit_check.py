"""The exit check's threshold: how ready the heads must read a step end before thinking closes.

The engine's exit check reads the heads' readiness (their exit output, else the raw confidence)
at the step end where the heads' budget would close thinking, and thinks on to the next step end
while it is below the calibration's `exit_threshold`.

What it does: `fit_exit_threshold(engine, items, thresholds, lam)` decodes the items at the
heads' budget (`auto`) once per candidate threshold (None: no check), scores them, and picks by
mean `budget_reward` (correct − λ · think tokens, no over-budget term); candidates within
`tolerance` of the best (default 1 / n) are a tie, which goes to the highest threshold. Why
this rule: docs/calibration.md.

What it does not do: train the heads, or write the calibration file (the caller sets
`exit_threshold` and saves it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tina.core.calibration import Calibration
from tina.engine.loop import Engine
from tina.eval.metrics import budget_reward
from tina.eval.sweep import AUTO, EvalItem, decode_items


def fit_exit_threshold(
    engine: Engine,
    items: Sequence[EvalItem],
    thresholds: Sequence[float | None],
    lam: float,
    batch_size: int = 64,
    tolerance: float | None = None,
) -> tuple[float | None, list[dict[str, Any]]]:
    """The best threshold of `thresholds` on `items` (see module docstring) and one row per
    candidate: threshold, exact_match, avg_think_tokens, reward, exit_checks (mean per item).
    The engine's calibration is restored afterwards."""
    if not thresholds:
        raise ValueError("no exit thresholds to try")
    if not items:
        raise ValueError("no items to fit the exit threshold on")
    if any(t is not None and not 0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"exit thresholds must lie in [0, 1], got {list(thresholds)}")
    original = engine.calibration
    base = original or Calibration()
    rows: list[dict[str, Any]] = []
    try:
        for threshold in thresholds:
            engine.calibration = replace(base, exit_threshold=threshold)
            decoded, results = decode_items(engine, items, AUTO, batch_size)
            n = len(decoded)
            rows.append(
                {
                    "threshold": threshold,
                    "exact_match": sum(r["correct"] for r in decoded) / n,
                    "avg_think_tokens": sum(r["think_tokens"] for r in decoded) / n,
                    "reward": sum(
                        budget_reward(r["correct"], r["think_tokens"], 0, lam, 0.0) for r in decoded
                    )
                    / n,
                    "exit_checks": sum(res.telemetry.exit_checks for res in results) / n,
                }
            )
    finally:
        engine.calibration = original
    margin = 1.0 / len(items) if tolerance is None else tolerance
    top = max(r["reward"] for r in rows)
    tied = [r["threshold"] for r in rows if r["reward"] >= top - margin - 1e-12]
    return max(tied, key=lambda t: -1.0 if t is None else t), rows
