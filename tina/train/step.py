"""One supervised training step's forward and loss: `training_step_losses`, and `StepModule`,
the model with its introspection parts as one `nn.Module` whose forward computes the loss.

What it does: one forward with the data's think mask and the taps recorded; the heads read at
the prompt, at `</think>` and at the last think token; every weighted loss part of
`tina.train.losses` (optional parts only when their weight is set and the batch has their
fields). `StepModule` is what the trainer hands to `accelerator.prepare`: all of this runs
inside its forward, so a DDP wrapper sees every parameter the loss reaches, heads included.
`batch_metrics`: the numbers a metrics line reports about the step's batch.
What it does not do: the backward, the optimizer, phases or data order (`tina.train.trainer`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tina.core.introspection import Introspection
from tina.core.metacog_heads import MetacogOutput, record_taps
from tina.core.side_adapters import SideAdapter, gate_stats, think_mask_context
from tina.eval.metrics import budget_error, plan_accuracy
from tina.train.losses import (
    answer_ce,
    answer_logprob,
    budget_loss,
    combine_losses,
    confidence_bce,
    constraint_bce,
    gate_sparsity,
    over_budget_penalty,
    plan_ce,
    quiet_star_consistency,
    rewrite_consistency,
    segment_ce,
    style_invariance_kl,
    think_ce,
)


def _without_think(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with the think segment's tokens removed (the `<think></think>` tags stay),
    right-padded again: the think-free input of `quiet_star_consistency`."""
    keep = (batch["attention_mask"] != 0) & (batch["think_mask"] == 0)
    width = int(keep.sum(1).max())
    out = {
        "input_ids": torch.zeros(
            keep.shape[0], width, dtype=torch.long, device=batch["input_ids"].device
        ),
    }
    out["attention_mask"] = torch.zeros_like(out["input_ids"])
    out["answer_mask"] = torch.zeros_like(out["input_ids"])
    for b in range(keep.shape[0]):
        row = keep[b]
        n = int(row.sum())
        out["input_ids"][b, :n] = batch["input_ids"][b][row]
        out["attention_mask"][b, :n] = 1
        out["answer_mask"][b, :n] = batch["answer_mask"][b][row]
    return out


def _heads_at_think_close(
    intro: Introspection, taps: Any, batch: dict[str, torch.Tensor], offset: int = 0
) -> MetacogOutput:
    """The heads read at the `</think>` position, as the engine reads them when thinking closes
    (confidence after thinking): `</think>` sits right after the prompt and the think tokens.
    `offset` −1 reads the last think token instead (the engine's exit check)."""
    close = (batch["prompt_mask"].sum(1) + batch["think_mask"].sum(1) + offset).clamp(
        min=0, max=batch["input_ids"].shape[1] - 1
    )
    mask = torch.zeros_like(batch["prompt_mask"])
    mask[torch.arange(mask.shape[0], device=mask.device), close] = 1
    out: MetacogOutput = intro.heads(taps, mask)
    return out


def training_step_losses(
    model: Any, intro: Introspection, batch: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float], MetacogOutput]:
    """One forward (think mask from the data; taps recorded) and every weighted loss part:
    (total, every computed part as a float, the heads' output at the prompt).

    Rows with `lm_weight` 0 (on-policy thinks that failed) get no think or answer CE. Optional
    parts run only when their weight is set and the batch has their fields: think CE,
    over-budget penalty (the data's think length against the predicted budget), the consistency
    term (a second, think-free forward without gradient), rewrite consistency (paraphrase pairs)
    and style invariance (style pairs), reflection/program CE (`<reflect>`/`<program>` masks),
    constraint BCE (a constraint head and `constraint_vec` targets)."""
    with think_mask_context(batch["think_mask"]), record_taps() as taps:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits
    heads = intro.heads(taps, batch["prompt_mask"])
    used = batch["think_mask"].sum(1).float()
    imitate = (batch["lm_weight"] > 0).to(batch["think_mask"].dtype)[:, None]
    think_rows = batch["think_mask"] * imitate
    answer_rows = batch["answer_mask"] * imitate
    on = {k for k, v in weights.items() if v}
    parts: dict[str, torch.Tensor | None] = {
        "answer_ce": answer_ce(logits, batch["input_ids"], answer_rows),
        "think_ce": think_ce(logits, batch["input_ids"], think_rows) if "think_ce" in on else None,
        "plan_ce": plan_ce(heads.plan_logits, batch["plan_targets"]),
        "budget_loss": budget_loss(heads.budget, batch["budget_targets"]),
        "confidence_bce": 0.5
        * (
            confidence_bce(heads.confidence_logit, batch["correct"])
            + confidence_bce(
                _heads_at_think_close(intro, taps, batch).confidence_logit, batch["correct_after"]
            )
        ),
        "exit_bce": confidence_bce(
            _heads_at_think_close(intro, taps, batch, offset=-1).readiness_logit(),
            torch.where(batch["think_mask"].sum(1) > 0, batch["correct_after"], -1.0),
        )
        if "exit_bce" in on
        else None,
        "over_budget_penalty": over_budget_penalty(used, heads.budget)
        if "over_budget_penalty" in on
        else None,
        "gate_sparsity": gate_sparsity(
            [a.last_expected_l0 for a in intro.adapters.values() if isinstance(a, SideAdapter)]
        ),
    }
    if "quiet_star_consistency" in on and bool(batch["think_mask"].any()):
        free = _without_think(batch)
        with torch.no_grad():  # the think-free side is the target: no gradient through it
            free_logits = model(
                input_ids=free["input_ids"], attention_mask=free["attention_mask"]
            ).logits
        parts["quiet_star_consistency"] = quiet_star_consistency(
            answer_logprob(logits, batch["input_ids"], batch["answer_mask"]),
            answer_logprob(free_logits, free["input_ids"], free["answer_mask"]),
        )
    for name, key in (("reflect_ce", "reflect_mask"), ("program_ce", "program_mask")):
        if name in on and key in batch:
            parts[name] = segment_ce(logits, batch["input_ids"], batch[key])
    constraint_logits = heads.extensions.get("constraint_logits")
    if "constraint_bce" in on and constraint_logits is not None and "constraint_targets" in batch:
        parts["constraint_bce"] = constraint_bce(
            constraint_logits, batch["constraint_targets"], batch["constraint_present"]
        )
    pairs = batch["pair_index"]
    for name, style in (("rewrite_consistency", False), ("style_invariance_kl", True)):
        if name not in on:
            continue
        rows = torch.nonzero((pairs >= 0) & (batch["style_pair"] == style)).squeeze(-1)
        first = rows[rows < pairs[rows]]
        if len(first) == 0:
            continue
        second = pairs[first]
        loss_fn = style_invariance_kl if style else rewrite_consistency
        parts[name] = loss_fn(
            logits[first], batch["answer_mask"][first], logits[second], batch["answer_mask"][second]
        )
    total, logged = combine_losses(parts, weights)
    return total, logged, heads


class StepModule(nn.Module):
    """The model (its introspection parts attached) as the one module Accelerate prepares:
    `forward(batch, weights)` is `training_step_losses`, returning (total loss, the parts as
    floats, the prompt heads' plan logits and budgets, detached). Only the loss carries a graph,
    so DDP's search for unused parameters starts from exactly what the backward reaches."""

    intro: Introspection  #: the model's introspection parts (not registered a second time)

    def __init__(self, model: Any, intro: Introspection) -> None:
        super().__init__()
        self.model = model  # the introspection parts are registered inside it
        self.__dict__["intro"] = intro

    def forward(
        self, batch: dict[str, torch.Tensor], weights: dict[str, float]
    ) -> tuple[torch.Tensor, dict[str, float], dict[str, torch.Tensor]]:
        total, logged, heads = training_step_losses(self.model, self.intro, batch, weights)
        return (
            total,
            logged,
            {"plan_logits": heads.plan_logits.detach(), "budget": heads.budget.detach()},
        )


def batch_metrics(
    logged: dict[str, float],
    heads: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    intro: Introspection,
) -> dict[str, float]:
    """The loss parts plus the batch's plan accuracy, budget error (MAE), mean think tokens and
    the adapters' gate activity/coverage (`tina.eval.metrics`; NaN where no row has a target)."""
    known = batch["plan_targets"] >= 0
    budgeted = batch["budget_targets"] >= 0
    return {
        **logged,
        "plan_accuracy": plan_accuracy(
            heads["plan_logits"].argmax(-1)[known].tolist(), batch["plan_targets"][known].tolist()
        ),
        "budget_error": budget_error(
            heads["budget"][budgeted].tolist(), batch["budget_targets"][budgeted].tolist()
        )[0],
        "think_tokens_used": float(batch["think_mask"].sum(1).float().mean()),
        **gate_stats(intro.adapters),
    }
