"""Training losses as pure functions: tensors in, one scalar tensor out, weighted by the trainer.

What it does:
- token losses on a causal LM's logits, all built on ONE shift helper,
  `shifted_token_logprobs`: `answer_ce`, `think_ce` (with the `anneal_weight` schedule),
  `segment_ce` (any segment: `<reflect>`, `<program>`, the whole completion), `answer_logprob`
  (per-row sum, input of `quiet_star_consistency`);
- paired-sequence losses that align answer positions of two differently long sequences:
  `rewrite_consistency` (symmetric KL) and `style_invariance_kl` (one-directional, detached
  target);
- metacognitive head losses: `plan_ce`, `budget_loss`, `confidence_bce`, `constraint_bce`, and
  `over_budget_penalty`;
- the side adapters' `gate_sparsity`;
- `combine_losses`: the weighted sum of the parts whose weight is set (the weights come from
  the `losses` section of `train_config.yaml`; `LOSS_NAMES` lists every known part).

Conventions shared by every function here:
- Masks are over INPUT positions, as `tina.core.tags.segment_and_masks` builds them: `mask[b, j] =
1`
  means token `input_ids[b, j]` is scored. A causal LM's logits at position `t` predict token
  `t + 1`, so token `j` is scored by `logits[b, j - 1]`; position 0 is never scored (nothing
  predicts it). The shift is done in `shifted_token_logprobs` and nowhere else.
- `answer_mask` from `segment_and_masks` is strictly inside `<answer>…</answer>`: answer losses
  do not score `</answer>` (nor eos). To teach the model to close its answer, score the
  completion with `segment_ce(logits, input_ids, loss_mask)` (every token after `<think>`,
  closing tags included), or widen the mask yourself:
  `answer_mask | (input_ids == tag_ids(tokenizer)["</answer>"])`.
- Masks may be bool or numeric (non-zero = on) and may live on another device than the logits.
- Token means are over all scored tokens of the batch (a long answer weighs more than a short
  one), not a mean of per-row means. Row losses are means over the rows that are kept.
- Log-probabilities are computed in float32 whatever the logits' dtype.
- Nothing to average (an empty mask, every row ignored, an empty batch) gives a finite 0.0 that
  still carries a `grad_fn` when an input requires grad (its gradient is zero), so
  `loss.backward()` never fails and never produces NaN.

What it does not do: run the model (the trainer runs the forwards, including the think-free
forward `quiet_star_consistency` needs), build masks (`tina.core.tags`), read records or configs,
schedule anything but a linear anneal, or log anywhere (`combine_losses` only returns floats).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: Every part `combine_losses` knows, by the name used in `train_config.yaml` weights and logs,
#: with the function that computes it:
#: answer_ce, think_ce, plan_ce, budget_loss, confidence_bce, over_budget_penalty,
#: gate_sparsity, quiet_star_consistency, rewrite_consistency, style_invariance_kl,
#: constraint_bce — the function of that name; exit_bce — `confidence_bce` read at the last
#: think token (the engine's exit check) against the record's `correct_after`; reflect_ce,
#: program_ce — `segment_ce` with the `<reflect>` / `<program>` segment mask; strategy_ce —
#: `plan_ce` on `strategy_logits`; cog_ops_bce — `constraint_bce` on `cog_ops_logits` (multi-label).
LOSS_NAMES: tuple[str, ...] = (
    "answer_ce",
    "think_ce",
    "plan_ce",
    "budget_loss",
    "confidence_bce",
    "exit_bce",
    "over_budget_penalty",
    "gate_sparsity",
    "quiet_star_consistency",
    "rewrite_consistency",
    "style_invariance_kl",
    "reflect_ce",
    "program_ce",
    "constraint_bce",
    "strategy_ce",
    "cog_ops_bce",
)


# --- helpers ------------------------------------------------------------------------------------


def _empty_zero(*tensors: Tensor) -> Tensor:
    """A float32 0.0 connected to every float input that requires grad (zero gradient, no NaN:
    it sums an empty slice, so even non-finite inputs give 0)."""
    zero: Tensor | None = None
    for t in tensors:
        if t.is_floating_point():
            part = t.reshape(-1)[:0].float().sum()
            zero = part if zero is None else zero + part
    if zero is None:
        device = tensors[0].device if tensors else None
        zero = torch.zeros((), dtype=torch.float32, device=device)
    return zero


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of `values` where `keep` (bool, same shape) is True; 0.0 with a grad_fn when none
    is. Values outside `keep` are replaced (not multiplied) by 0, so they may be non-finite."""
    kept = torch.where(keep, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / keep.sum().clamp(min=1).to(values.dtype)


def _bool_mask(mask: Tensor, like: Tensor, name: str) -> Tensor:
    """`mask != 0` on `like`'s device; ValueError unless it has `like`'s shape."""
    if mask.shape != like.shape:
        raise ValueError(f"{name}: shape {tuple(mask.shape)}, expected {tuple(like.shape)}")
    return mask.to(like.device) != 0


def _check_lm(logits: Tensor, input_ids: Tensor) -> None:
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, T, V) and input_ids (B, T); got {tuple(logits.shape)} and "
            f"{tuple(input_ids.shape)}"
        )


def _rows(name: str, tensor: Tensor) -> None:
    if tensor.dim() != 1:
        raise ValueError(f"{name}: expected shape (B,), got {tuple(tensor.shape)}")


# --- token losses -------------------------------------------------------------------------------


def shifted_token_logprobs(logits: Tensor, input_ids: Tensor) -> Tensor:
    """Log-probability of each next token: (B, T, V), (B, T) → (B, T − 1) float32.

    `out[b, t] = log_softmax(logits[b, t])[input_ids[b, t + 1]]`: column `t` holds the
    log-likelihood of token `t + 1` (the label at position `t` is token `t + 1`). To score the
    tokens where an input-position mask is 1, use `mask[:, 1:]` on this output.
    """
    _check_lm(logits, input_ids)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = input_ids[:, 1:].to(device=logits.device, dtype=torch.long)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def segment_ce(logits: Tensor, input_ids: Tensor, segment_mask: Tensor) -> Tensor:
    """Mean negative log-likelihood of the tokens `input_ids[b, j]` with `segment_mask[b, j]`
    = 1, each predicted by `logits[b, j − 1]`; 0.0 when the mask is empty (or only at j = 0).

    Used for any segment: the reflection CE (`<reflect>` segment mask), the program CE
    (`<program>` segment mask), or the whole completion (`loss_mask`). The mean is over all
    scored tokens of the batch.
    """
    logp = shifted_token_logprobs(logits, input_ids)
    keep = _bool_mask(segment_mask, input_ids, "segment_mask")[:, 1:].to(logp.device)
    return _masked_mean(-logp, keep)


def answer_ce(logits: Tensor, input_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """Mean NLL of the answer tokens: `segment_ce` with `answer_mask` (token j scored by
    `logits[:, j − 1]`). With `segment_and_masks`' mask these are the tokens strictly between
    `<answer>` and `</answer>`: `</answer>` itself is not scored (see the module docstring)."""
    return segment_ce(logits, input_ids, answer_mask)


def anneal_weight(
    step: float, start: float, end: float, start_weight: float, end_weight: float
) -> float:
    """Linear anneal, clamped: `start_weight` up to `start`, `end_weight` from `end` on, linear
    in between. With `start == end` it steps at `start` (`end_weight` for `step >= start`).
    `end < start` is a ValueError."""
    if end < start:
        raise ValueError(f"anneal: end ({end}) is before start ({start})")
    if step >= end:
        return float(end_weight)
    if step <= start:
        return float(start_weight)
    frac = (step - start) / (end - start)
    return float(start_weight + frac * (end_weight - start_weight))


def think_ce(
    logits: Tensor,
    input_ids: Tensor,
    think_mask: Tensor,
    weight_schedule_step: float | None = None,
) -> Tensor:
    """Mean NLL of the think tokens (`segment_ce` with `think_mask`: strictly between `<think>`
    and `</think>`, token j scored by `logits[:, j − 1]`), times `weight_schedule_step`.

    `weight_schedule_step` is the schedule's factor at the current step, typically
    `anneal_weight(step, ...)` (fade the think CE out as training goes on); None means 1.0.
    It multiplies the returned (and so the logged) value, on top of `combine_losses`' weight.
    """
    loss = segment_ce(logits, input_ids, think_mask)
    if weight_schedule_step is None:
        return loss
    return loss * float(weight_schedule_step)


def answer_logprob(logits: Tensor, input_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """Per-row SUM of the answer tokens' log-likelihoods, (B,) float32 (token j scored by
    `logits[:, j − 1]`); 0.0 for a row without answer tokens. Input of
    `quiet_star_consistency`."""
    logp = shifted_token_logprobs(logits, input_ids)
    keep = _bool_mask(answer_mask, input_ids, "answer_mask")[:, 1:].to(logp.device)
    return torch.where(keep, logp, torch.zeros((), dtype=logp.dtype, device=logp.device)).sum(1)


def quiet_star_consistency(
    answer_logprob_with_think: Tensor, answer_logprob_without_think: Tensor, margin: float = 0.0
) -> Tensor:
    """Thinking must help the answer: `mean_b relu(margin − (logp_with[b] − logp_without[b]))`.

    `logp_with[b]` / `logp_without[b]` (B,) are row b's summed log-likelihood of its answer
    tokens (`answer_logprob`) from a forward with the think segment present and from a forward
    of the same example with the think segment removed; the trainer runs both. The hinge is 0
    once thinking raises the answer's log-likelihood by at least `margin` nats. Gradients flow
    into both arguments as given (detach `logp_without` to only push the think path).

    The name is ours: inspired by Quiet-STaR (Zelikman et al., 2024), which rewards thoughts that
    raise the likelihood of what follows; this hinge is not Quiet-STaR's objective. 0.0 for an
    empty batch.
    """
    _rows("answer_logprob_with_think", answer_logprob_with_think)
    if answer_logprob_without_think.shape != answer_logprob_with_think.shape:
        raise ValueError(
            f"answer_logprob_without_think: shape {tuple(answer_logprob_without_think.shape)}, "
            f"expected {tuple(answer_logprob_with_think.shape)}"
        )
    gain = answer_logprob_with_think.float() - answer_logprob_without_think.float()
    hinge = torch.relu(margin - gain)
    if hinge.numel() == 0:
        return _empty_zero(answer_logprob_with_think, answer_logprob_without_think)
    return hinge.mean()


# --- paired sequences ---------------------------------------------------------------------------


def _aligned_answer_logprobs(
    logits_a: Tensor, mask_a: Tensor, logits_b: Tensor, mask_b: Tensor
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Log-distributions predicting the k-th answer token of row b in A and in B, aligned by k.

    Row b's answer tokens are the positions j with `mask[b, j] = 1`, in order; the k-th one is
    predicted by `logits[b, j_k − 1]`. Returns (logp_a, logp_b, valid), (B, K, V), (B, K, V),
    (B, K) with `valid[b, k] = k < min(n_a[b], n_b[b])`, or None when no row has a pair.
    """
    for name, logits, mask in (("a", logits_a, mask_a), ("b", logits_b, mask_b)):
        if logits.dim() != 3 or mask.shape != logits.shape[:2]:
            raise ValueError(
                f"logits_{name} must be (B, T, V) and mask_{name} (B, T); got "
                f"{tuple(logits.shape)} and {tuple(mask.shape)}"
            )
    if logits_a.shape[0] != logits_b.shape[0] or logits_a.shape[2] != logits_b.shape[2]:
        raise ValueError(
            f"paired logits must share batch and vocabulary sizes; got {tuple(logits_a.shape)} "
            f"and {tuple(logits_b.shape)}"
        )
    # Predicting positions: t with mask[t + 1] = 1 (the shift), listed first, in order.
    pred_a = mask_a.to(logits_a.device)[:, 1:] != 0
    pred_b = mask_b.to(logits_a.device)[:, 1:] != 0
    n = torch.minimum(pred_a.sum(1), pred_b.sum(1))  # (B,)
    k = int(n.max()) if n.numel() else 0
    if k == 0:
        return None

    def take(logits: Tensor, pred: Tensor) -> Tensor:
        order = torch.argsort((~pred).to(torch.int8), dim=1, stable=True)[:, :k]
        order = order.to(logits.device)
        picked = logits.gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        return torch.log_softmax(picked.float(), dim=-1)

    logp_a = take(logits_a, pred_a)
    logp_b = take(logits_b, pred_b).to(logp_a.device)
    valid = torch.arange(k, device=logp_a.device).unsqueeze(0) < n.to(logp_a.device).unsqueeze(1)
    return logp_a, logp_b, valid


def _kl(logp: Tensor, logq: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_v p (log p − log q) over the last axis, from log-probabilities."""
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


def rewrite_consistency(
    logits_a: Tensor, mask_a: Tensor, logits_b: Tensor, mask_b: Tensor
) -> Tensor:
    """Paraphrases should answer alike: symmetric KL between aligned answer distributions.

    Row b of A (B, T_a, V) and row b of B (B, T_b, V) are a rewrite pair (same
    `rewrite_pair_id`); `mask_a` (B, T_a) / `mask_b` (B, T_b) mark their answer tokens (input
    positions, as `answer_mask`). The k-th answer token of a row is predicted by the logits one
    position before it; the distributions predicting the k-th answer token in A and in B are
    compared for k < min(n_a, n_b) (aligned by index from the start of the answer; the longer
    answer's tail is not compared). Each compared position contributes
    `½ (KL(p_a ‖ p_b) + KL(p_b ‖ p_a))`; the result is the mean over all compared positions of
    the batch. Rows where either side has no answer token contribute nothing; 0.0 when none is
    compared. Gradients reach both sides.
    """
    aligned = _aligned_answer_logprobs(logits_a, mask_a, logits_b, mask_b)
    if aligned is None:
        return _empty_zero(logits_a, logits_b)
    logp_a, logp_b, valid = aligned
    sym = 0.5 * (_kl(logp_a, logp_b) + _kl(logp_b, logp_a))
    return _masked_mean(sym, valid)


def style_invariance_kl(
    logits_a: Tensor, mask_a: Tensor, logits_b: Tensor, mask_b: Tensor
) -> Tensor:
    """The answer should not depend on the reasoning style: `KL(p_a ‖ p_b)` with `p_a` detached.

    Same pairing and alignment as `rewrite_consistency` (row b of A and of B are the same
    example in two styles; answer positions compared by index for k < min(n_a, n_b)), but
    one-directional: A is the reference style, its distributions `p_a` are a fixed target
    (detached, no gradient reaches `logits_a`), and only `logits_b` is pulled towards it. Mean
    over compared positions; 0.0 when none is compared.
    """
    aligned = _aligned_answer_logprobs(logits_a, mask_a, logits_b, mask_b)
    if aligned is None:
        return _empty_zero(logits_b)
    logp_a, logp_b, valid = aligned
    return _masked_mean(_kl(logp_a.detach(), logp_b), valid)


# --- metacognitive heads ------------------------------------------------------------------------


def plan_ce(plan_logits: Tensor, plan_targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Cross-entropy of the plan head, (B, C) logits vs (B,) class indices (`PLAN_CLASSES`
    order), mean over rows whose target is not `ignore_index`; 0.0 when every row is ignored.
    A target outside 0..C−1 (other than `ignore_index`) is a ValueError. Also used for the
    optional `strategy_logits` head (`strategy_ce`)."""
    if plan_logits.dim() != 2:
        raise ValueError(f"plan_logits: expected shape (B, C), got {tuple(plan_logits.shape)}")
    targets = plan_targets.to(device=plan_logits.device, dtype=torch.long)
    _rows("plan_targets", targets)
    if targets.shape[0] != plan_logits.shape[0]:
        raise ValueError(f"plan_targets: {targets.shape[0]} rows, logits {plan_logits.shape[0]}")
    keep = targets != ignore_index
    n_classes = plan_logits.shape[1]
    bad = keep & ((targets < 0) | (targets >= n_classes))
    if bool(bad.any()):
        raise ValueError(
            f"plan_targets: values outside 0..{n_classes - 1}: {targets[bad].tolist()}"
        )
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    per_row = F.cross_entropy(plan_logits.float(), safe, reduction="none")
    return _masked_mean(per_row, keep)


def budget_loss(pred_budget: Tensor, target_budget: Tensor, delta: float = 1.0) -> Tensor:
    """Huber loss (threshold `delta`, in log space) between `log1p(pred_budget)` and
    `log1p(target_budget)`, both in think tokens, (B,) each; mean over rows with
    `target_budget >= 0` (a negative or NaN target means unknown: the row is ignored).

    Log space makes an error of 10 tokens on a budget of 20 count like 100 on 200. The
    prediction is clamped at 0 before `log1p` (the head's output is already in [0, B_max]).
    """
    _rows("pred_budget", pred_budget)
    target = target_budget.to(device=pred_budget.device, dtype=torch.float32)
    if target.shape != pred_budget.shape:
        raise ValueError(f"target_budget: shape {tuple(target.shape)}, expected (B,)")
    keep = target >= 0
    log_pred = torch.log1p(pred_budget.float().clamp(min=0))
    log_target = torch.log1p(torch.where(keep, target, torch.zeros_like(target)))
    per_row = F.huber_loss(log_pred, log_target, reduction="none", delta=delta)
    return _masked_mean(per_row, keep)


def confidence_bce(confidence_logit: Tensor, correct: Tensor) -> Tensor:
    """Binary cross-entropy with logits of the confidence head (B,) against `correct` (B,)
    (1 right, 0 wrong; bool allowed; soft targets in [0, 1] work too), mean over rows with
    `correct >= 0` (a negative or NaN value means unknown: the row is ignored, no gradient)."""
    _rows("confidence_logit", confidence_logit)
    target = correct.to(device=confidence_logit.device, dtype=torch.float32)
    if target.shape != confidence_logit.shape:
        raise ValueError(f"correct: shape {tuple(target.shape)}, expected (B,)")
    keep = target >= 0
    safe = torch.where(keep, target, torch.zeros_like(target))
    per_row = F.binary_cross_entropy_with_logits(confidence_logit.float(), safe, reduction="none")
    return _masked_mean(per_row, keep)


def constraint_bce(
    constraint_logits: Tensor, constraint_targets: Tensor, present_mask: Tensor
) -> Tensor:
    """Binary cross-entropy with logits of the constraint head, (B, K) logits vs (B, K)
    targets in [0, 1] (a record's `constraint_vec`), mean over present entries.

    `present_mask` is (B,) (row has a constraint vector) or (B, K) (per entry); non-zero means
    present. Absent entries get no gradient; 0.0 when nothing is present. Also used for the
    optional multi-label `cog_ops_logits` head (`cog_ops_bce`).
    """
    if constraint_logits.dim() != 2:
        raise ValueError(
            f"constraint_logits: expected shape (B, K), got {tuple(constraint_logits.shape)}"
        )
    target = constraint_targets.to(device=constraint_logits.device, dtype=torch.float32)
    if target.shape != constraint_logits.shape:
        raise ValueError(
            f"constraint_targets: shape {tuple(target.shape)}, "
            f"expected {tuple(constraint_logits.shape)}"
        )
    present = present_mask.to(constraint_logits.device) != 0
    if present.shape == constraint_logits.shape[:1]:
        present = present.unsqueeze(1).expand_as(target)
    elif present.shape != constraint_logits.shape:
        raise ValueError(
            f"present_mask: shape {tuple(present_mask.shape)}, expected (B,) or (B, K)"
        )
    keep = present & ~torch.isnan(target)
    safe = torch.where(keep, target, torch.zeros_like(target))
    per_entry = F.binary_cross_entropy_with_logits(
        constraint_logits.float(), safe, reduction="none"
    )
    return _masked_mean(per_entry, keep)


def over_budget_penalty(think_tokens_used: Tensor, budget: Tensor, scale: float = 1.0) -> Tensor:
    """Think overrun relative to the budget: `scale · mean_b relu(used_b − budget_b) /
    max(budget_b, 1)`, (B,) each, in tokens.

    The overrun is normalised by the budget (floored at 1 token, so a 0 budget cannot divide by
    zero): 50 tokens over a budget of 100 costs 0.5, over a budget of 0 costs 50. Rows with
    `think_tokens_used < 0` (unknown) are ignored. Gradients flow into whichever argument
    requires grad, through the denominator too.
    """
    _rows("budget", budget)
    used = think_tokens_used.to(device=budget.device, dtype=torch.float32)
    if used.shape != budget.shape:
        raise ValueError(f"think_tokens_used: shape {tuple(used.shape)}, expected (B,)")
    keep = used >= 0
    b = budget.float()
    per_row = torch.relu(used - b) / b.clamp(min=1.0)
    return _masked_mean(per_row, keep) * float(scale)


# --- side adapters ------------------------------------------------------------------------------


def gate_sparsity(expected_l0s: Sequence[Tensor | None]) -> Tensor:
    """Mean of the side adapters' expected L0 (`SideAdapter.last_expected_l0`: each the mean,
    over think tokens, of the probability that the token's gate is open). Scalar entries;
    None entries (an adapter that has not run) are skipped; 0.0 when none is left."""
    values = [v for v in expected_l0s if v is not None]
    for v in values:
        if v.numel() != 1:
            raise ValueError(f"expected_l0s: scalars expected, got shape {tuple(v.shape)}")
    if not values:
        return torch.zeros((), dtype=torch.float32)
    device = values[0].device
    return torch.stack([v.reshape(()).float().to(device) for v in values]).mean()


# --- combination --------------------------------------------------------------------------------


def check_loss_names(names: Iterable[str], what: str = "loss weights") -> None:
    """ValueError naming the first name that is not in `LOSS_NAMES` (the one place this is
    checked: weights from `train_config.yaml` and part names alike)."""
    for name in names:
        if name not in LOSS_NAMES:
            raise ValueError(
                f"{what}: unknown loss {name!r}, expected one of {', '.join(LOSS_NAMES)}"
            )


def combine_losses(
    parts: Mapping[str, Tensor | None], weights: Mapping[str, float]
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of loss parts: `total = Σ weights[name] · parts[name]`.

    Optional terms are off unless their weight is set and their fields are present: a part
    contributes only when `weights` gives it a non-zero weight AND its value is not None (the
    trainer passes None when the batch lacks the fields it needs). Every key of `weights` and
    `parts` must be in `LOSS_NAMES` (ValueError naming the key); a weight must be finite and
    >= 0; a part must be a scalar tensor.

    Returns `(total, logged)`: `logged` maps every part that was computed (not None, whatever
    its weight) to its unweighted float value, plus `"total"`. When nothing contributes, total
    is 0.0, still connected to the graph of any part that requires grad.
    """
    check_loss_names(weights, "loss weights")
    check_loss_names(parts, "loss parts")
    for name, w in weights.items():
        if not math.isfinite(float(w)) or float(w) < 0:
            raise ValueError(f"loss weights: {name!r} must be finite and >= 0, got {w!r}")
    present = {name: value for name, value in parts.items() if value is not None}
    for name, value in present.items():
        if value.numel() != 1:
            raise ValueError(f"loss parts: {name!r} must be a scalar, got {tuple(value.shape)}")
    total: Tensor | None = None
    for name, value in present.items():
        w = float(weights.get(name, 0.0))
        if w == 0.0:
            continue
        term = value.reshape(()).float() * w
        total = term if total is None else total + term.to(total.device)
    if total is None:
        total = _empty_zero(*present.values())
    logged = {name: float(value.detach().float()) for name, value in present.items()}
    logged["total"] = float(total.detach())
    return total, logged
