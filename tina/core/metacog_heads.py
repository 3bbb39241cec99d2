"""Metacognitive heads: plan, think budget and confidence, read from hidden states already computed.

What it does: forward hooks on the tapped decoder layers record their outputs during a forward
the caller runs anyway (the engine's prefill, a training forward) — no extra pass. The heads pool
each tapped layer over the prompt (`mean` or `last`) and predict, in float32 whatever the base
dtype: `plan_logits` (B, 4) over `tina.core.plans.PLAN_CLASSES`, `budget` (B,) in [0, B_max],
`confidence_logit` / `confidence` (B,), and with `exit_head` an `exit_logit` (B,) read at a
think's step end, from a trunk of its own. One shared trunk over the concatenated taps, or
`per_layer` trunks mixed by an attention aggregator; optional extension heads (strategy,
cognitive ops, constraints). Each output and layout is described in docs/architecture.md.

What it does not do: calibration (temperature, thresholds, clip: applied by the engine) or
losses (training).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tina.core.plans import PLAN_CLASSES
from tina.core.side_adapters import decoder_layers

_RECORDING: contextvars.ContextVar[dict[int, torch.Tensor] | None] = contextvars.ContextVar(
    "tina_tap_recording", default=None
)


@dataclass
class HeadsConfig:
    """Metacognitive head hyper-parameters."""

    taps: list[float] = field(
        default_factory=lambda: [0.5, 1.0]
    )  #: depth fractions (0, 1] or layer indices (ints)
    pooling: str = "mean"  #: "mean" over the pooling mask, or "last" token
    hidden: int = 64  #: trunk width
    b_max: int = 512  #: the largest budget the head can predict
    per_layer: bool = False  #: one trunk per tap, mixed by the attention aggregator
    strategy_classes: int = 0  #: size of the optional strategy head (0 = off)
    cog_ops: int = 0  #: size of the optional multi-label cognitive-ops head (0 = off)
    constraint_dim: int = 0  #: size of the optional constraint-vector head (0 = off)
    #: a readiness output of its own for the engine's exit check (read at step ends); off: the
    #: exit check reads the confidence output, which then learns both positions
    exit_head: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "last"):
            raise ValueError(f"pooling: expected 'mean' or 'last', got {self.pooling!r}")
        if not self.taps:
            raise ValueError("taps: at least one tapped layer is needed")
        if self.b_max < 1 or self.hidden < 1:
            raise ValueError("b_max and hidden must be positive")


def resolve_taps(taps: Sequence[float], n_layers: int) -> list[int]:
    """Decoder-layer indices of `taps`: floats in (0, 1] are fractions of depth (1.0 = the last
    layer), ints are indices (negative from the end). Duplicates are dropped, order kept."""
    out: list[int] = []
    for tap in taps:
        if isinstance(tap, float):
            if not 0 < tap <= 1:
                raise ValueError(f"taps: fraction {tap} outside (0, 1]")
            index = max(0, math.ceil(tap * n_layers) - 1)
        else:
            index = int(tap)
            if not -n_layers <= index < n_layers:
                raise ValueError(f"taps: layer {index} out of range for {n_layers} layers")
            index %= n_layers
        if index not in out:
            out.append(index)
    return out


@contextmanager
def record_taps() -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, tapped layers store their outputs (B, T, D) in the yielded dict."""
    store: dict[int, torch.Tensor] = {}
    token = _RECORDING.set(store)
    try:
        yield store
    finally:
        _RECORDING.reset(token)


def attach_taps(model: Any, layer_indices: Sequence[int]) -> list[Any]:
    """Forward hooks that record the tapped layers' outputs inside `record_taps`; returns handles.

    Register these after the side adapters' hooks, so the recorded states include their deltas.
    """
    layers = decoder_layers(model)

    def make(index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            store = _RECORDING.get()
            if store is not None:
                store[index] = output[0] if isinstance(output, tuple) else output

        return hook

    return [layers[i].register_forward_hook(make(i)) for i in layer_indices]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, D), mask (B, T) → (B, D) float32: mean over masked positions, or the last one."""
    hidden = hidden.float()
    mask_f = mask.to(hidden.device, torch.float32)
    if how == "mean":
        return (hidden * mask_f.unsqueeze(-1)).sum(1) / mask_f.sum(1, keepdim=True).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=hidden.device)
    last = (positions * (mask_f > 0)).argmax(dim=1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass
class MetacogOutput:
    """What the heads predict for a batch (all float32)."""

    plan_logits: torch.Tensor  #: (B, 4)
    budget: torch.Tensor  #: (B,) tokens in [0, b_max]
    confidence_logit: torch.Tensor  #: (B,)
    confidence: torch.Tensor  #: (B,) in (0, 1)
    per_layer: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  #: per tap
    mix_weights: torch.Tensor | None = None  #: (B, n_taps) aggregator attention
    extensions: dict[str, torch.Tensor] = field(default_factory=dict)  #: optional heads
    exit_logit: torch.Tensor | None = None  #: (B,) readiness to stop thinking (`exit_head`)

    def readiness_logit(self) -> torch.Tensor:
        """(B,) the logit of `readiness` (what training's `exit_bce` fits)."""
        return self.confidence_logit if self.exit_logit is None else self.exit_logit

    def readiness(self) -> torch.Tensor:
        """(B,) the chance that an answer given at the position read is right: the exit
        output's when the heads have one, else the confidence."""
        return torch.sigmoid(self.readiness_logit())


class _Outputs(nn.Module):
    """The output layers shared by every trunk feature (so per-layer outputs are comparable)."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.b_max = config.b_max
        self.plan = nn.Linear(config.hidden, len(PLAN_CLASSES))
        self.budget = nn.Linear(config.hidden, 1)
        self.confidence = nn.Linear(config.hidden, 1)
        self.extensions = nn.ModuleDict()
        if config.strategy_classes:
            self.extensions["strategy_logits"] = nn.Linear(config.hidden, config.strategy_classes)
        if config.cog_ops:
            self.extensions["cog_ops_logits"] = nn.Linear(config.hidden, config.cog_ops)
        if config.constraint_dim:
            self.extensions["constraint_logits"] = nn.Linear(config.hidden, config.constraint_dim)

    def forward(self, feature: torch.Tensor) -> dict[str, torch.Tensor]:
        conf_logit = self.confidence(feature).squeeze(-1)
        out = {
            "plan_logits": self.plan(feature),
            "budget": self.b_max * torch.sigmoid(self.budget(feature).squeeze(-1)),
            "confidence_logit": conf_logit,
            "confidence": torch.sigmoid(conf_logit),
        }
        for name, layer in self.extensions.items():
            out[name] = layer(feature)
        return out


def _trunk(d_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(d_in), nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
    )


class MetacogHeads(nn.Module):
    """Plan / budget / confidence heads over tapped layers (see module docstring)."""

    def __init__(self, hidden_size: int, layer_indices: Sequence[int], config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.layer_indices = list(layer_indices)
        n = len(self.layer_indices)
        if config.per_layer:
            self.trunks = nn.ModuleList(_trunk(hidden_size, config.hidden) for _ in range(n))
            self.query = nn.Parameter(torch.zeros(config.hidden))
            self.key = nn.Linear(config.hidden, config.hidden, bias=False)
        else:
            self.trunks = nn.ModuleList([_trunk(hidden_size * n, config.hidden)])
        self.outputs = _Outputs(config)
        # the exit output has a trunk of its own: its training (at step ends) would otherwise
        # move the features the prompt's confidence reads
        self.exit_trunk = _trunk(hidden_size * n, config.hidden) if config.exit_head else None
        self.exit = nn.Linear(config.hidden, 1) if config.exit_head else None
        self.float()

    def forward(self, taps: dict[int, torch.Tensor], pool_mask: torch.Tensor) -> MetacogOutput:
        """`taps` {layer: (B, T, D)} recorded by `record_taps`; `pool_mask` (B, T) marks the
        prompt positions to pool."""
        missing = [i for i in self.layer_indices if i not in taps]
        if missing:
            raise ValueError(f"tapped layers {missing} were not recorded in this forward")
        pooled = [
            pool(taps[i], pool_mask, self.config.pooling) for i in self.layer_indices
        ]  # n × (B, D)
        joined = torch.cat(pooled, dim=-1)  # (B, n·D)
        exit_logit = None
        if self.exit_trunk is not None and self.exit is not None:
            exit_logit = self.exit(self.exit_trunk(joined)).squeeze(-1)
        if not self.config.per_layer:
            result = _to_output(self.outputs(self.trunks[0](joined)))
            result.exit_logit = exit_logit
            return result
        features = torch.stack(
            [t(p) for t, p in zip(self.trunks, pooled, strict=True)], dim=1
        )  # (B, n, H)
        scores = self.key(features) @ self.query / self.config.hidden**0.5  # (B, n)
        weights = torch.softmax(scores, dim=-1)
        mixed = (weights.unsqueeze(-1) * features).sum(dim=1)  # (B, H)
        result = _to_output(self.outputs(mixed))
        result.exit_logit = exit_logit
        result.mix_weights = weights
        result.per_layer = {
            layer: self.outputs(features[:, k]) for k, layer in enumerate(self.layer_indices)
        }
        return result


def _to_output(out: dict[str, torch.Tensor]) -> MetacogOutput:
    core = {"plan_logits", "budget", "confidence_logit", "confidence"}
    return MetacogOutput(
        plan_logits=out["plan_logits"],
        budget=out["budget"],
        confidence_logit=out["confidence_logit"],
        confidence=out["confidence"],
        extensions={k: v for k, v in out.items() if k not in core},
    )
