"""The think-less result: the reference thinking freely against Tina at its own budget and at
fixed budgets, as the recipe reports it.

What it does: `result_table` (the Markdown table and the figures the issue's goals are read
from: accuracy gap, token ratio, whether Tina's point lies on or above the fixed-budget curve,
adherence) and `dev_line` (the same comparison on the calibration split, one line).
What it does not do: decode anything (`tina.eval.sweep`, `tina.recipe` run the engine), or decide
correctness (`tina.data.tasks.scoring`).
"""

from __future__ import annotations

from typing import Any

from tina.eval.sweep import AUTO


def result_table(
    reference: dict[str, float], sweep_rows: list[dict[str, Any]], adherence: dict[str, float]
) -> tuple[str, dict[str, Any]]:
    """The result (Markdown) and its figures: reference vs Tina at its budget, the fixed-budget
    curve, and whether Tina's point lies on or above it (linear interpolation of the curve's
    exact match at Tina's average think tokens)."""
    auto = next(r for r in sweep_rows if r["budget"] == AUTO)
    fixed = sorted(
        (r for r in sweep_rows if r["budget"] != AUTO), key=lambda r: r["avg_think_tokens"]
    )
    x, y = auto["avg_think_tokens"], auto["exact_match"]
    below = [r for r in fixed if r["avg_think_tokens"] <= x]
    above = [r for r in fixed if r["avg_think_tokens"] > x]
    if below and above:
        a, b = below[-1], above[0]
        t = (x - a["avg_think_tokens"]) / (b["avg_think_tokens"] - a["avg_think_tokens"])
        curve = a["exact_match"] + t * (b["exact_match"] - a["exact_match"])
    else:
        curve = (below or above)[-1 if below else 0]["exact_match"]
    summary = {
        "reference_exact_match": reference["exact_match"],
        "reference_think_tokens": reference["avg_think_tokens"],
        "tina_exact_match": y,
        "tina_think_tokens": x,
        "accuracy_gap_points": 100 * (reference["exact_match"] - y),
        "token_ratio": x / reference["avg_think_tokens"] if reference["avg_think_tokens"] else 0,
        "curve_exact_match_at_tina_tokens": curve,
        "on_or_above_curve": y >= curve - 1e-9,
        **adherence,
        "n": auto["n"],
    }
    lines = [
        "| run | exact match | avg think tokens | tokens vs reference |",
        "| --- | --- | --- | --- |",
        f"| reference: adapters off, thinking freely (budget ≤ {reference['budget']}) | "
        f"{reference['exact_match']:.3f} | {reference['avg_think_tokens']:.1f} | 100% |",
        f"| **Tina at its predicted budget** | **{y:.3f}** | **{x:.1f}** | "
        f"**{100 * summary['token_ratio']:.0f}%** |",
    ]
    lines += [
        f"| Tina at fixed budget {r['budget']} | {r['exact_match']:.3f} | "
        f"{r['avg_think_tokens']:.1f} | "
        f"{100 * r['avg_think_tokens'] / max(reference['avg_think_tokens'], 1e-9):.0f}% |"
        for r in sorted(fixed, key=lambda r: int(r["budget"]))
    ]
    lines += [
        "",
        f"- accuracy gap (reference − Tina): {summary['accuracy_gap_points']:+.1f} points "
        f"(goal: within 1)",
        f"- Tina's think tokens: {100 * summary['token_ratio']:.0f}% of the reference's "
        f"(goal: ≤ 50%)",
        f"- fixed-budget curve at Tina's tokens: {curve:.3f} exact match; Tina "
        f"{'on or above' if summary['on_or_above_curve'] else 'BELOW'} the curve",
        f"- budget adherence: median |used − predicted| / predicted = "
        f"{100 * adherence['adherence_median']:.1f}% (goal: ≤ 10%); empty answers: "
        f"{int(adherence['empty_answers'])}",
        f"- n = {int(auto['n'])} held-out items over every task and difficulty",
    ]
    return "\n".join(lines) + "\n", summary


def dev_line(dev: dict[str, Any]) -> str:
    """The result on the calibration split (it fits the calibration file and the exit
    threshold, never the heads or the policy), as a Markdown bullet."""
    gap = 100 * (dev["reference_exact_match"] - dev["tina_exact_match"])
    ratio = dev["tina_think_tokens"] / max(dev["reference_think_tokens"], 1e-9)
    return (
        f"- calibration split (n = {dev['n']}; it fits the calibration and the exit threshold "
        f"{dev['exit_threshold']}): reference {dev['reference_exact_match']:.3f} at "
        f"{dev['reference_think_tokens']:.1f} think tokens, Tina {dev['tina_exact_match']:.3f} at "
        f"{dev['tina_think_tokens']:.1f} ({100 * ratio:.0f}%), gap {gap:+.1f} points\n"
    )
