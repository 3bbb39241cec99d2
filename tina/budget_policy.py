"""The budget policy, learned by reinforcement: how many think tokens to grant each question.

What it does:
- the policy is a Gaussian over log(1 + budget): its mean is `log(1 + b)` for the budget head's
  prediction `b` (differentiable: the heads read the prompt's tapped states), its log standard
  deviation a learned scalar (`BudgetPolicy`);
- `budget_reward(correct, think_tokens, budget, lam, over_budget_weight)`: correctness − λ ·
  think tokens − the over-budget penalty (the normalised overrun `tina.losses.over_budget_penalty`
  charges in training), a plain function shared with evaluation;
- `reinforce_loss(log_probs, rewards, baseline)`: REINFORCE with a baseline,
  `−mean((r − baseline) · log π(b))`;
- `train_budget_policy(engine, items, config)`: each iteration samples budgets for a batch of
  items, serves each item through the engine at its sampled budget (the serving rule: past the
  budget thinking closes at the first step end, at the soft cap at the latest), scores the answers
  (`tina.sweep.score_item`), and takes one optimizer step on the budget head's output layer and
  the policy's log std, with the batch's mean reward as the baseline.

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

from tina.engine import Engine, Request
from tina.metacog_heads import record_taps
from tina.sweep import EvalItem, score_item


@dataclass
class BudgetPolicyConfig:
    """REINFORCE settings of the budget policy."""

    iterations: int = 30  #: policy updates
    batch_size: int = 64  #: items per update
    init_log_std: float = -1.0  #: initial log std of log(1 + budget) (σ ≈ 0.37)
    lam: float = 0.002  #: reward cost per think token
    over_budget_weight: float = 0.5  #: weight of the normalised overrun in the reward
    lr: float = 0.003  #: Adam learning rate (budget output layer and log std)
    seed: int = 0  #: item order and budget samples


def budget_reward(
    correct: float, think_tokens: int, budget: int, lam: float, over_budget_weight: float
) -> float:
    """correct − lam · think_tokens − over_budget_weight · max(0, used − budget) / max(budget,
    1): the reward of one served request."""
    overrun = max(0, think_tokens - budget) / max(budget, 1)
    return float(correct) - lam * think_tokens - over_budget_weight * overrun


def reinforce_loss(log_probs: torch.Tensor, rewards: torch.Tensor, baseline: float) -> torch.Tensor:
    """−mean((r − baseline) · log π): its gradient raises the log-probability of samples whose
    reward beats the baseline and lowers the others'."""
    advantage = (rewards - baseline).detach()
    return -(advantage * log_probs).mean()


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
    input_ids, attention = engine._left_pad(prompts)
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
    policy = BudgetPolicy(config.init_log_std).to(engine.device)
    params: list[Any] = [*intro.heads.outputs.budget.parameters(), policy.log_std]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    cap = engine.config.budget_cap
    history = []
    prompts = [it.prompt if it.rendered else engine.render(it.prompt) for it in items]
    for iteration in range(config.iterations):
        chosen = rng.sample(range(len(items)), min(config.batch_size, len(items)))
        head = head_budgets(engine, [prompts[i] for i in chosen])
        with torch.no_grad():
            noise = torch.randn(len(chosen), generator=generator).to(head.device)
            sample = torch.log1p(head.clamp(min=0)) + policy.log_std.exp() * noise
        budgets = [min(cap, max(0, round(math.expm1(float(s))))) for s in sample]
        results = engine.generate(
            [
                Request(prompts[i], rendered=True, budget=b, visible_cot=False)
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
        loss = reinforce_loss(log_probs, rewards.to(head.device), float(rewards.mean()))
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
