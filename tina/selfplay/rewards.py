"""Self-play rewards and advantages as plain functions over lists of numbers.

What it does: `learnability(solve_rates)` (Absolute Zero's proposer reward: `1 − p` for a
Monte-Carlo solve rate `p` strictly between 0 and 1, else 0); `metacog_boost` (optional guidance:
learnability × (1 + boost) where the heads predict low confidence, a tiny budget or the `direct`
plan); `proposer_rewards` (λ_learn · learnability, −λ_format when invalid); `solver_rewards`
(λ_solver · correct, minus λ_format when malformed); `normalized_advantages` ((r − mean) / std
within each (mode, role) group, 0 for a group of one or with no spread); `histogram` (equal bins
over [0, 1]). Each in detail: docs/selfplay.md.

What it does not do: run the model or the sandbox (the solver and proposer modules do).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from tina.core.plans import PLAN_CLASSES

DIRECT = "direct"  #: the no-thinking plan class
assert DIRECT in PLAN_CLASSES


def learnability(solve_rates: Sequence[float]) -> list[float]:
    """`1 − p` per task with solve rate `p` in (0, 1); 0 when p is 0 or 1."""
    return [1.0 - p if 0.0 < p < 1.0 else 0.0 for p in solve_rates]


def solve_rates(solved: Sequence[bool], num_rollouts: int) -> list[float]:
    """Per-task solve rates from rollouts laid out task-major (`num_rollouts` per task)."""
    if num_rollouts < 1 or len(solved) % num_rollouts:
        raise ValueError(f"{len(solved)} rollouts do not split into groups of {num_rollouts}")
    return [
        sum(solved[i : i + num_rollouts]) / num_rollouts
        for i in range(0, len(solved), num_rollouts)
    ]


def hard_task_flags(
    confidence: Sequence[float],
    budget: Sequence[float],
    plan: Sequence[str],
    low_confidence: float,
    tiny_budget: float,
) -> list[bool]:
    """Where the heads flag a task as one to explore: confidence below `low_confidence`, a
    budget below `tiny_budget` tokens, or the `direct` (no thinking) plan."""
    return [
        c < low_confidence or b < tiny_budget or p == DIRECT
        for c, b, p in zip(confidence, budget, plan, strict=True)
    ]


def metacog_boost(values: Sequence[float], flags: Sequence[bool], boost: float) -> list[float]:
    """`value × (1 + boost)` where flagged, unchanged elsewhere (0 stays 0)."""
    return [v * (1.0 + boost) if f else v for v, f in zip(values, flags, strict=True)]


def proposer_rewards(
    learn: Sequence[float],
    valid: Sequence[bool],
    lambda_learnability: float,
    lambda_format: float,
) -> list[float]:
    """λ_learn · learnability for a valid proposal; −λ_format for an invalid one."""
    return [
        lambda_learnability * value if ok else -lambda_format
        for value, ok in zip(learn, valid, strict=True)
    ]


def solver_rewards(
    correct: Sequence[bool],
    well_formed: Sequence[bool],
    lambda_solver: float,
    lambda_format: float,
) -> list[float]:
    """λ_solver · correct − λ_format · (answer malformed)."""
    return [
        lambda_solver * float(ok) - (0.0 if formed else lambda_format)
        for ok, formed in zip(correct, well_formed, strict=True)
    ]


def normalized_advantages(
    rewards: Sequence[float], groups: Sequence[Hashable], eps: float = 1e-6
) -> list[float]:
    """(r − group mean) / (group std + eps) within each group; 0 for a group of one or one
    whose rewards are all equal (nothing to prefer)."""
    if len(rewards) != len(groups):
        raise ValueError("rewards and groups must have the same length")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    out = [0.0] * len(rewards)
    for idx in members.values():
        values = [rewards[i] for i in idx]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        if len(idx) < 2 or std < eps:
            continue
        for i in idx:
            out[i] = (rewards[i] - mean) / (std + eps)
    return out


def histogram(values: Sequence[float], bins: int = 5) -> list[int]:
    """Counts of `values` in `bins` equal bins over [0, 1] (1.0 falls in the last bin)."""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    return counts
