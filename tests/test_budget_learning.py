"""Budget learning: the minimal-budget search, the reward, the policy update's gradient sign,
and the recipe's config errors and result table."""

from __future__ import annotations

import pytest
import torch

from tina.core.checks import ConfigError
from tina.data.tasks import generate_records
from tina.engine.types import Request, Result, Telemetry
from tina.eval.budget_result import dev_line, result_table
from tina.eval.metrics import budget_reward
from tina.eval.sweep import AUTO, item_from_record
from tina.recipe import RecipeConfig, build_splits, load_recipe_config
from tina.train.budget_policy import BudgetPolicy, leave_one_out_baseline, reinforce_loss
from tina.train.budget_search import (
    BudgetFound,
    BudgetSearchConfig,
    budget_records,
    minimal_budgets,
)


def _telemetry(think: int, budget: int) -> Telemetry:
    return Telemetry(
        plan=None,
        plan_probs={},
        predicted_budget=None,
        budget=budget,
        soft_cap=budget,
        think_tokens=think,
        answer_tokens=1,
        confidence_before=None,
        confidence_after=None,
        extended=False,
        forced_think_close=think < 100,
        forced_answer_close=False,
        gate_activity=0.0,
        gate_coverage=0.0,
        latency_s=0.0,
        tokens_per_s=0.0,
        leaked=False,
    )


class ScriptedEngine:
    """An engine whose item i answers correctly iff it thinks `need[i]` tokens (None: never; a
    set: exactly those think lengths, or 100 = free); past a budget it finishes its step (3
    more tokens); thinking freely it thinks 100 tokens."""

    def __init__(self, items, need):
        self.by_prompt = {it.prompt: (it.gold, n) for it, n in zip(items, need, strict=True)}
        self.budgets: list[int] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        out = []
        for r in requests:
            gold, need = self.by_prompt[r.prompt]
            assert r.budget is not None
            self.budgets.append(r.budget)
            think = min(r.budget + 3 if r.budget else 0, 100)
            ok = (
                think in need or think == 100
                if isinstance(need, set)
                else (need is not None and think >= need)
            )
            answer = gold if ok else "-1"
            completion = "t" * think + f"</think><answer>{answer}</answer>"
            out.append(Result(answer, answer, "t" * think, completion, _telemetry(think, r.budget)))
        return out


@pytest.fixture
def items():
    records = generate_records("add", 5, seed=9, difficulties=[2])
    return [item_from_record(r, ("t", i + 1)) for i, r in enumerate(records)]


def test_minimal_budget_is_the_smallest_grid_budget_that_still_answers(items):
    # item 4 is right by luck at budget 8 (11 tokens), wrong at 16 and 32, right from 64 on
    engine = ScriptedEngine(items, [0, 10, 50, None, {11, 67}])
    config = BudgetSearchConfig(grid=[0, 8, 16, 32, 64], free_budget=384, batch_size=3)
    found = minimal_budgets(engine, items, config)  # type: ignore[arg-type]
    assert [f.minimal_budget for f in found] == [0, 8, 64, None, 64]
    assert [f.minimal_used for f in found] == [0, 11, 67, None, 67]
    assert [f.free_correct for f in found] == [True, True, True, False, True]
    assert all(f.free_think_tokens == 100 for f in found)
    # The search runs down the grid and stops at an item's first failure; never-solved items
    # are not searched at all.
    assert found[0].tried == [64, 32, 16, 8, 0] and found[1].tried == [64, 32, 16, 8, 0]
    assert found[2].tried == [64, 32] and found[3].tried == [] and found[4].tried == [64, 32]
    records = [r for r in budget_records(items, found) if not r["id"].startswith(items[4].id)]
    cut = [r for r in records if r["id"].endswith("-cut")]
    exits = [r for r in records if "-exit" in r["id"]]
    records = [r for r in records if not r["id"].endswith("-cut") and "-exit" not in r["id"]]
    # every other decoded exit teaches only the confidence read after thinking
    assert [r["id"] for r in exits] == [
        *(f"{items[0].id}-exit{b}" for b in (8, 16)),  # the two nearest above the minimal
        *(f"{items[1].id}-exit{b}" for b in (16, 32)),
        f"{items[2].id}-exit384",
    ]
    assert all(r["correct_after"] is True and r["lm_weight"] == 0.0 for r in exits)
    assert not any({"correct", "target_budget", "plan_class"} & set(r) for r in exits)
    assert exits[1]["text"].endswith("t" * 19 + f"</think><answer>{items[0].gold}</answer>")
    # the budget that fell short below the minimal one is a negative: its cut think, wrong
    assert [r["id"] for r in cut] == [f"{items[1].id}-cut", f"{items[2].id}-cut"]
    assert all(r["correct"] is False and r["lm_weight"] == 0.0 for r in cut)
    assert cut[0]["text"].endswith(f"<think></think><answer>{items[1].gold}</answer>")  # budget 0
    assert cut[1]["target_budget"] == 67
    # the budget target is where the sufficient thinking ended (the step end past the budget)
    assert [r["target_budget"] for r in records[:3]] == [0, 11, 67]
    assert records[3]["target_budget"] == items[3].record["target_budget"]  # unsolved: concise
    assert records[0]["plan_class"] == "direct" and records[1]["plan_class"] == "compute"
    assert [r["correct"] for r in records] == [True, True, True, False]
    assert records[3]["lm_weight"] == 0.0 and "lm_weight" not in records[1]
    # the record's think is the model's own at the minimal budget, closed by the gold answer
    assert records[1]["text"].endswith("t" * 11 + f"</think><answer>{items[1].gold}</answer>")


def test_budget_reward_prices_tokens_and_overruns():
    assert budget_reward(1.0, 0, 0, lam=0.01, over_budget_weight=1.0) == 1.0
    assert budget_reward(1.0, 50, 50, lam=0.01, over_budget_weight=1.0) == pytest.approx(0.5)
    assert budget_reward(0.0, 60, 40, lam=0.0, over_budget_weight=1.0) == pytest.approx(-0.5)
    # at equal correctness, fewer tokens earn more
    assert budget_reward(1.0, 20, 40, 0.01, 0.5) > budget_reward(1.0, 40, 40, 0.01, 0.5)


@pytest.mark.parametrize(("reward", "sign"), [(1.0, 1.0), (-1.0, -1.0)])
def test_policy_update_moves_the_budget_towards_rewarded_samples(reward, sign):
    """A sample above the mean with a positive advantage pulls the head's budget up (a
    gradient-descent step raises it); with a negative advantage, down."""
    policy = BudgetPolicy(init_log_std=-1.0)
    head = torch.tensor([20.0], requires_grad=True)
    sample = torch.log1p(torch.tensor([40.0]))  # above the mean log(21)
    loss = reinforce_loss(policy.log_prob(head, sample), torch.tensor([reward]), baseline=0.0)
    loss.backward()
    assert head.grad is not None
    assert float(-head.grad) * sign > 0  # descent direction raises (or lowers) the budget
    # the baseline removes the update when the reward equals it
    head.grad = None
    zero = reinforce_loss(policy.log_prob(head, sample), torch.tensor([0.3]), baseline=0.3)
    zero.backward()
    assert float(head.grad) == 0.0


def test_leave_one_out_baseline_compares_budgets_of_the_same_item():
    # two items, three budgets each: a cheap item (rewards near 1) and a costly one (near 0.4)
    rewards = torch.tensor([0.9, 1.0, 0.8, 0.3, 0.5, 0.4])
    baseline = leave_one_out_baseline(rewards, group=3)
    assert baseline.tolist() == pytest.approx([0.9, 0.85, 0.95, 0.45, 0.35, 0.4])
    advantage = rewards - baseline
    # the costly item's best budget is pushed up although its reward is below the batch mean
    assert float(advantage[4]) > 0 > float(rewards[4] - rewards.mean())
    assert float(advantage[:3].sum()) == pytest.approx(0.0, abs=1e-6)
    assert leave_one_out_baseline(rewards, group=1).tolist() == pytest.approx([0.65] * 6)
    with pytest.raises(ValueError, match="groups of 4"):
        leave_one_out_baseline(rewards, group=4)


def test_recipe_config_errors_are_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "n_tests: 3\nn_train: 0\nsearch: {grids: [1]}\nsuite: {divide: [1]}\n"
        "exit_thresholds: [0.5, 2]\npolicy_exit_threshold: yes\n"
    )
    with pytest.raises(ConfigError) as info:
        load_recipe_config(path)
    message = str(info.value)
    for expected in (
        "n_tests: unknown key",
        "n_train: must be >= 1, got 0",
        "search.grids: unknown key",
        "suite.divide: unknown task",
        "exit_thresholds[1]: must be in [0, 1], got 2",
        "policy_exit_threshold: expected a number, got True",
    ):
        assert expected in message


def test_result_table_interpolates_the_fixed_budget_curve():
    rows = [
        {"budget": "0", "exact_match": 0.2, "avg_think_tokens": 0.0, "n": 10},
        {"budget": "32", "exact_match": 0.6, "avg_think_tokens": 30.0, "n": 10},
        {"budget": "64", "exact_match": 0.9, "avg_think_tokens": 60.0, "n": 10},
        {"budget": AUTO, "exact_match": 0.8, "avg_think_tokens": 40.0, "n": 10},
    ]
    reference = {"budget": 384, "exact_match": 0.85, "avg_think_tokens": 100.0}
    table, summary = result_table(reference, rows, {"adherence_median": 0.05, "empty_answers": 0.0})
    assert summary["curve_exact_match_at_tina_tokens"] == pytest.approx(0.7)
    assert summary["on_or_above_curve"] and summary["token_ratio"] == pytest.approx(0.4)
    assert summary["accuracy_gap_points"] == pytest.approx(5.0)
    assert "| **Tina at its predicted budget** | **0.800** | **40.0** | **40%** |" in table
    worse = [dict(r) for r in rows]
    worse[-1]["exact_match"] = 0.65
    assert not result_table(reference, worse, {"adherence_median": 0.0, "empty_answers": 0.0})[1][
        "on_or_above_curve"
    ]


def test_dev_line_reports_the_calibration_split_gap():
    dev = {
        "n": 552,
        "reference_exact_match": 0.7627,
        "reference_think_tokens": 104.8,
        "tina_exact_match": 0.7536,
        "tina_think_tokens": 48.8,
        "exit_threshold": 0.5,
    }
    line = dev_line(dev)
    assert "n = 552" in line and "exit threshold 0.5" in line
    assert "Tina 0.754 at 48.8 (47%), gap +0.9 points" in line


def test_recipe_splits_have_unique_ids_and_a_separate_test_set():
    config = RecipeConfig(
        suite={"add": [1, 2], "code_deduction": [1, 2]}, n_train=6, n_search=5, n_dev=3, n_test=4
    )
    splits = build_splits(config)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"test": 16, "train": 24, "search": 20, "dev": 12}
    for records in splits.values():
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids)  # the cells' ids no longer collide across difficulties
    assert splits["test"][4]["id"].startswith("add-d2-")
    held = {r["meta"]["question"] for r in splits["test"]}
    assert not held & {r["meta"]["question"] for k in ("train", "search", "dev") for r in splits[k]}


def test_exit_threshold_is_the_one_with_the_best_reward(items):
    from tina.core.calibration import Calibration
    from tina.eval.exit_check import fit_exit_threshold

    class ThresholdEngine:
        """Without a check half the items fail at 40 tokens; a check at 0.5 thinks 10 more and
        fixes them; one at 0.9 thinks far too long."""

        introspection = object()

        def __init__(self):
            self.calibration = Calibration(budget_min=8, budget_max=8)

        def generate(self, requests):
            threshold = self.calibration.exit_threshold
            think = {None: 40, 0.5: 50, 0.7: 60, 0.9: 400}[threshold]
            out = []
            for k, r in enumerate(requests):
                gold = next(it.gold for it in items if it.prompt == r.prompt)
                answer = gold if threshold is not None or k % 2 == 0 else "-1"
                telemetry = _telemetry(think, 8)
                telemetry.exit_checks = 0 if threshold is None else 2
                out.append(Result(answer, answer, "t" * think, "", telemetry))
            return out

    engine = ThresholdEngine()
    original = engine.calibration
    best, rows = fit_exit_threshold(engine, items, [None, 0.5, 0.9], lam=0.003, batch_size=2)  # type: ignore[arg-type]
    assert best == 0.5
    assert [r["threshold"] for r in rows] == [None, 0.5, 0.9]
    assert rows[0]["exact_match"] == pytest.approx(0.6)  # rows 0 and 2 of batch 1, 0 of batch 3
    assert rows[1]["reward"] == pytest.approx(1 - 0.003 * 50)
    assert rows[2]["exit_checks"] == 2
    assert engine.calibration is original and original.exit_threshold is None
    # rewards within one item's answer (1 / 5 here) of the best are a tie: the highest
    # threshold wins it (0.7 thinks 10 tokens more than 0.5 for the same answers)
    best, rows = fit_exit_threshold(engine, items, [None, 0.5, 0.7], lam=0.003)  # type: ignore[arg-type]
    assert rows[2]["reward"] == pytest.approx(rows[1]["reward"] - 0.03)
    assert best == 0.7
    assert fit_exit_threshold(engine, items, [None, 0.5, 0.7], 0.003, tolerance=0.0)[0] == 0.5  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_exit_threshold(engine, items, [1.5], lam=0.003)  # type: ignore[arg-type]


def test_a_question_without_a_plan_gets_one_from_its_minimal_budget():
    """A question file's record has no plan label: the search gives it `direct` when no
    thinking was needed and `compute` when some was (else the plan head learns only
    `direct` and the engine never thinks at the heads' budget)."""
    records = [
        {
            "id": f"q{i}",
            "text": f"What is {i} + 1?\n<think></think><answer>{i + 1}</answer>",
            "meta": {"question": f"What is {i} + 1?", "answer": str(i + 1), "scorer": "numeric"},
        }
        for i in range(3)
    ]
    items = [item_from_record(r, ("q.jsonl", i + 1)) for i, r in enumerate(records)]
    found = [
        BudgetFound(
            id=it.id,
            free_correct=ok,
            free_think_tokens=20,
            minimal_budget=need,
            minimal_used=need,
            completion=f"t</think><answer>{it.gold}</answer>",
        )
        for it, ok, need in zip(items, (True, True, False), (0, 12, None), strict=True)
    ]
    plans = [r.get("plan_class") for r in budget_records(items, found)]
    assert plans == ["direct", "compute", "compute"]


def test_recipe_splits_mix_phrasings_into_the_arithmetic_cells_but_not_the_test_split():
    import re

    config = RecipeConfig(
        suite={"add": [2], "code_deduction": [1]},
        n_train=8,
        n_search=4,
        n_dev=4,
        n_test=4,
        phrasing_share=0.5,
    )
    splits = build_splits(config)

    def phrased(records):  # not the suite's own "Add A and B" (a varied form may be it too)
        questions = [r["meta"]["question"] for r in records if r["id"].startswith("add-")]
        return sum(not re.fullmatch(r"Add \d+ and \d+", q) for q in questions)

    assert 3 <= phrased(splits["train"]) <= 4 and 1 <= phrased(splits["dev"]) <= 2
    assert phrased(splits["test"]) == 0
    assert {k: len(v) for k, v in splits.items()} == {"test": 8, "dev": 8, "search": 8, "train": 16}
    for records in splits.values():
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids)
