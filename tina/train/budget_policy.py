"""The budget policy, learned by reinforcement: how many think tokens to grant each question.

What it does:
- the policy is a Gaussian over log(1 + budget): its mean is `log(1 + b)` for the budget head's
  prediction `b` (differentiable: the heads read the prompt's tapped states), its log standard
  deviation a learned scalar (`BudgetPolicy`);
- `budget_reward(correct, think_tokens, budget, lam, over_budget_weight)`: correctness − λ ·
  think tokens − the over-budget penalty (the normalised overrun
  `tina.train.losses.over_budget_penalty`
  charges in training), a plain function shared with evaluation;
- `reinforce_loss(log_probs, rewards, baseline)`: REINFORCE with a baseline,
  `−mean((r − baseline) · log π(b))`;
- `leave_one_out_baseline(rewards, group)`: each sample's baseline is the mean reward of the
  other samples of its item (RLOO; the group baseline of GRPO without the std scaling): items
  differ far more in what they cost (0 to 150+ think tokens) than budgets of one item do, and a
  batch-mean baseline would drown the budget's effect in that spread;
- `train_budget_policy(engine, items, config)`: each iteration samples `samples_per_item`
  budgets for each of a batch of items, serves each through the engine at its sampled budget
  (the serving rule: thinking closes at the step end nearest the budget, at the soft cap at
  the latest, and the engine's exit check runs there as it does at the heads' budget when
  its calibration sets a threshold), scores the answers (`tina.eval.sweep.score_item`), and takes
  one optimizer step on the budget head's output layer and the policy's log std, with the
  leave-one-out baseline (the batch mean with one sample per item).

The reference is the model with adapters off thinking freely: the items given to the policy are
those the reference answers correctly (the recipe filters them with the minimal-budget search),
since no budget can make a question the model cannot solve come out right, and a reward on them
only teaches "spend nothing".

What it does not do: train the plan or confidence heads, or the adapters (the phased trainer).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tina.core.metacog_heads import record_taps
from tina.engine.loop import Engine
from tina.engine.types import Request
from tina.eval.metrics import budget_reward
from tina.eval.sweep import EvalItem, score_item


@dataclass
class BudgetPolicyConfig:
    """REINFORCE settings of the budget policy."""

    iterations: int = 30  #: policy updates
    batch_size: int = 64  #: items per update
    samples_per_item: int = 4  #: budgets sampled per item (the leave-one-out baseline's group)
    #: initial log std of log(1 + budget) (σ ≈ 0.14: ±14% budgets; a wide policy must put
    #: its mean far above what an item needs for most samples to suffice, and the mean is
    #: what serves)
    init_log_std: float = -2.0
    lam: float = 0.002  #: reward cost per think token
    over_budget_weight: float = 0.5  #: weight of the normalised overrun in the reward
    lr: float = 0.003  #: Adam learning rate (budget output layer and log std)
    seed: int = 0  #: item order and budget samples


def reinforce_loss(
    log_probs: torch.Tensor, rewards: torch.Tensor, baseline: float | torch.Tensor
) -> torch.Tensor:
    """−mean((r − baseline) · log π): its gradient raises the log-probability of samples whose
    reward beats the baseline and lowers the others'. `baseline`: one number, or one per
    sample."""
    advantage = (rewards - baseline).detach()
    return -(advantage * log_probs).mean()


def leave_one_out_baseline(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """Per-sample baseline: the mean reward of the other `group − 1` samples of the same item.
    `rewards` (N,) holds the items' samples consecutively (N a multiple of `group`); with
    `group` 1 it is the batch mean."""
    if group < 1 or rewards.numel() % group:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group}")
    if group == 1:
        return rewards.mean().expand_as(rewards)
    by_item = rewards.view(-1, group)
    others = (by_item.sum(dim=1, keepdim=True) - by_item) / (group - 1)
    return others.reshape(-1)


class BudgetPolicy(nn.Module):
    """The Gaussian over log(1 + budget) around the budget head (see module docstring)."""

    def __init__(self, init_log_std: float) -> None:
        super().__init__()
        self.log_std = nn.Parameter(torch.tensor(float(init_log_std)))

    def log_prob(self, head_budget: torch.Tensor, log_budget: torch.Tensor) -> torch.Tensor:
        """log π(sample) for samples `log_budget` = log(1 + b), mean log(1 + head budget)."""
        mean = torch.log1p(head_budget.clamp(min=0))
        dist = torch.distributions.Normal(mean, self.log_std.exp())
        return dist.log_prob(log_budget)


def head_budgets(engine: Engine, prompts: Sequence[str]) -> torch.Tensor:
    """The budget head's predictions for rendered prompts, with gradient into the heads (the
    base forward runs without gradient: only the heads read its taps)."""
    intro = engine.introspection
    if intro is None:
        raise ValueError("the budget policy needs metacognitive heads (no introspection parts)")
    input_ids, attention = engine.prompt_batch(prompts)
    with torch.no_grad(), record_taps() as taps:
        engine.model(input_ids=input_ids, attention_mask=attention)
    taps = {k: v.detach() for k, v in taps.items()}
    return intro.heads(taps, attention).budget


def train_budget_policy(
    engine: Engine,
    items: Sequence[EvalItem],
    config: BudgetPolicyConfig,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """REINFORCE on the budget head (see module docstring); returns one metrics dict per
    iteration (mean reward, accuracy, think tokens, mean sampled budget, std)."""
    intro = engine.introspection
    if intro is None:
        raise ValueError("the budget policy needs metacognitive heads (no introspection parts)")
    if not items:
        raise ValueError("no items to train the budget policy on")
    if config.samples_per_item < 1:
        raise ValueError(f"samples_per_item must be positive, got {config.samples_per_item}")
    policy = BudgetPolicy(config.init_log_std).to(engine.device)
    params: list[Any] = [*intro.heads.outputs.budget.parameters(), policy.log_std]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    cap = engine.config.budget_cap
    history = []
    prompts = [it.prompt if it.rendered else engine.render(it.prompt) for it in items]
    group = config.samples_per_item
    for iteration in range(config.iterations):
        picked = rng.sample(range(len(items)), min(config.batch_size, len(items)))
        chosen = [i for i in picked for _ in range(group)]  # each item's samples side by side
        head = head_budgets(engine, [prompts[i] for i in picked]).repeat_interleave(group)
        with torch.no_grad():
            noise = torch.randn(len(chosen), generator=generator).to(head.device)
            sample = torch.log1p(head.clamp(min=0)) + policy.log_std.exp() * noise
        budgets = [min(cap, max(0, round(math.expm1(float(s))))) for s in sample]
        results = engine.generate(
            [
                Request(prompts[i], rendered=True, budget=b, visible_cot=False, exit_check=True)
                for i, b in zip(chosen, budgets, strict=True)
            ]
        )
        correct = [score_item(items[i], r.answer) for i, r in zip(chosen, results, strict=True)]
        used = [r.telemetry.think_tokens for r in results]
        rewards = torch.tensor(
            [
                budget_reward(c, u, b, config.lam, config.over_budget_weight)
                for c, u, b in zip(correct, used, budgets, strict=True)
            ]
        )
        log_probs = policy.log_prob(head, sample)
        rewards = rewards.to(head.device)
        loss = reinforce_loss(log_probs, rewards, leave_one_out_baseline(rewards, group))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record = {
            "iteration": float(iteration + 1),
            "reward": float(rewards.mean()),
            "accuracy": sum(correct) / len(correct),
            "think_tokens": sum(used) / len(used),
            "budget": sum(budgets) / len(budgets),
            "head_budget": float(head.detach().mean()),
            "std": float(policy.log_std.detach().exp()),
        }
        history.append(record)
        if on_iteration is not None:
            on_iteration(record)
    return history
