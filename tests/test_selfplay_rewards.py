"""Self-play rewards on hand-made cases: learnability, guidance, proposer/solver rewards,
per-(mode, role) advantages, the histogram."""

from __future__ import annotations

import math

import pytest

from tina.selfplay.rewards import (
    hard_task_flags,
    histogram,
    learnability,
    metacog_boost,
    normalized_advantages,
    proposer_rewards,
    solve_rates,
    solver_rewards,
)


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        pytest.param([0.0], [0.0], id="never-solved-teaches-nothing"),
        pytest.param([1.0], [0.0], id="always-solved-teaches-nothing"),
        pytest.param([0.25], [0.75], id="hard-but-solvable"),
        pytest.param([0.75, 0.5], [0.25, 0.5], id="easier-is-less-learnable"),
    ],
)
def test_learnability_is_one_minus_solve_rate_strictly_inside(rates, expected):
    assert learnability(rates) == pytest.approx(expected)


def test_solve_rates_group_rollouts_task_major():
    assert solve_rates([True, False, False, False, True, True, True, True], 4) == [0.25, 1.0]
    with pytest.raises(ValueError, match="groups of 3"):
        solve_rates([True, False], 3)


def test_metacog_boost_raises_flagged_tasks_and_keeps_zero_at_zero():
    flags = hard_task_flags(
        confidence=[0.9, 0.2, 0.9, 0.9, 0.1],
        budget=[50.0, 50.0, 3.0, 50.0, 50.0],
        plan=["trace", "trace", "trace", "direct", "trace"],
        low_confidence=0.5,
        tiny_budget=8.0,
    )
    assert flags == [False, True, True, True, True]
    boosted = metacog_boost([0.5, 0.5, 0.5, 0.5, 0.0], flags, boost=1.0)
    assert boosted == [0.5, 1.0, 1.0, 1.0, 0.0]


def test_proposer_rewards_learnability_or_format_penalty():
    assert proposer_rewards([0.75, 0.0, 0.9], [True, True, False], 2.0, 0.1) == pytest.approx(
        [1.5, 0.0, -0.1]
    )


def test_solver_rewards_correctness_minus_format_penalty():
    assert solver_rewards([True, False, False], [True, True, False], 1.0, 0.2) == pytest.approx(
        [1.0, 0.0, -0.2]
    )


def test_advantages_are_normalised_within_each_mode_and_role():
    rewards = [1.0, 0.0, 10.0, 20.0, 5.0]
    groups = [
        ("deduction", "solve"),
        ("deduction", "solve"),
        ("deduction", "propose"),
        ("deduction", "propose"),
        ("abduction", "solve"),
    ]
    adv = normalized_advantages(rewards, groups)
    assert adv[0] == pytest.approx(1.0, abs=1e-4) and adv[1] == pytest.approx(-1.0, abs=1e-4)
    # a different scale in another group gives the same normalised values
    assert adv[2] == pytest.approx(-1.0, abs=1e-4) and adv[3] == pytest.approx(1.0, abs=1e-4)
    assert adv[4] == 0.0  # a group of one has no baseline to compare with


def test_advantages_are_zero_without_spread():
    assert normalized_advantages([0.5, 0.5, 0.5], ["g", "g", "g"]) == [0.0, 0.0, 0.0]
    adv = normalized_advantages([0.0, 0.0, 1.0], ["g"] * 3)
    assert sum(adv) == pytest.approx(0.0, abs=1e-6) and adv[2] > 0 > adv[0]
    assert math.isclose(sum(a * a for a in adv) / 3, 1.0, rel_tol=1e-4)


def test_histogram_bins_over_unit_interval():
    assert histogram([0.0, 0.1, 0.25, 0.5, 0.99, 1.0], bins=4) == [2, 1, 1, 2]
    assert histogram([], bins=3) == [0, 0, 0]
