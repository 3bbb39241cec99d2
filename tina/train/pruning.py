"""Pruning dead side adapters (the last training phase): measure, then remove.

What it does:
- `adapter_scores(model, intro, examples, pad_id)`: for each side adapter, its mean gate `z`
  over the think tokens of `examples` (eval mode: deterministic gates), times `|g|` (its global
  gate). The adapter adds `g · z_t · B(A(h_t))` to a think token's state, so this score bounds how
  much, on average, it can change a think state relative to the size of its own delta;
- `prune_dead_adapters(...)`: removes (hooks, weights, config entry) every adapter whose score is
  below `threshold` and returns the removed layer keys. A saved and reloaded copy has exactly the
  kept adapters (`Introspection.prune_adapters`).

What it does not do: prune inside an adapter (ranks, rows) or touch the heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tina.core.introspection import Introspection
from tina.core.side_adapters import SideAdapter, think_mask_context
from tina.train.data import Example, collate


@torch.no_grad()
def adapter_scores(
    model: Any,
    intro: Introspection,
    examples: Sequence[Example],
    pad_id: int,
    batch_size: int = 32,
) -> dict[str, float]:
    """{layer key: mean think-token gate × |global gate|} over `examples` (see module docstring)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums = {k: 0.0 for k in intro.adapters}
    count = 0.0
    try:
        for start in range(0, len(examples), batch_size):
            batch = collate(list(examples[start : start + batch_size]), pad_id)
            mask = batch["think_mask"].to(device)
            with think_mask_context(mask):
                model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                )
            count += float(mask.sum())
            for key, adapter in intro.adapters.items():
                if isinstance(adapter, SideAdapter) and adapter.last_rows is not None:
                    sums[key] += float(adapter.last_rows[0].sum())
    finally:
        model.train(was_training)
    return {
        key: (sums[key] / count if count else 0.0) * abs(float(adapter.global_gate))
        for key, adapter in intro.adapters.items()
        if isinstance(adapter, SideAdapter)
    }


def prune_dead_adapters(
    model: Any,
    intro: Introspection,
    examples: Sequence[Example],
    pad_id: int,
    threshold: float,
) -> tuple[list[str], dict[str, float]]:
    """Remove the adapters scoring below `threshold`; returns (removed keys, every score)."""
    scores = adapter_scores(model, intro, examples, pad_id)
    dead = sorted((k for k, v in scores.items() if v < threshold), key=int)
    if dead:
        intro.prune_adapters(dead)
    return dead, scores
