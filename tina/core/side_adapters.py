"""Side adapters: gated low-rank residual deltas on decoder layers, active only on think tokens.

What it does: for each chosen decoder layer, a forward hook rewrites the layer's output as
`h + g · z_t · B(A(h)) · think_mask_t`: `A`, `B` a rank-r pair, `g` a global gate that starts
at 0 (an untrained adapter leaves every output bit-identical), `z_t` a per-token Hard-Concrete
gate (Louizos et al., 2018) whose expected L0 is exposed for the sparsity loss (the formulas:
docs/architecture.md). The think mask reaches the hooks through a context variable
(`think_mask_context`), so concurrent requests never see each other's; with no mask, or an
all-zero one, the adapters do nothing. Each adapter records per forward its gate activity,
coverage and expected L0.

What it does not do: decide where the mask is 1 (the data's `<think>` span in training, the row's
phase in decoding), nor train anything; metacognitive heads live in `tina.core.metacog_heads`.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_THINK_MASK: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "tina_think_mask", default=None
)


@contextmanager
def think_mask_context(mask: torch.Tensor | None) -> Iterator[None]:
    """Within the block, side adapters act where `mask` (B, T) is 1 for this context only."""
    token = _THINK_MASK.set(mask)
    try:
        yield
    finally:
        _THINK_MASK.reset(token)


def current_think_mask() -> torch.Tensor | None:
    """The think mask of the current context (None outside `think_mask_context`)."""
    return _THINK_MASK.get()


@dataclass
class AdapterConfig:
    """Side adapter hyper-parameters."""

    rank: int = 8  #: rank r of the A/B pair
    beta: float = 2.0 / 3.0  #: Hard-Concrete temperature
    gamma: float = -0.1  #: lower stretch limit (< 0)
    zeta: float = 1.1  #: upper stretch limit (> 1)
    init_log_alpha: float = 2.0  #: initial gate bias: gates start mostly open
    init_global_gate: float = 0.0  #: g at init; 0 keeps the base model's outputs bit-identical

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank: must be >= 1, got {self.rank}")
        if not self.gamma < 0 < 1 < self.zeta:
            raise ValueError(
                f"gamma/zeta: need gamma < 0 and zeta > 1, got {self.gamma}, {self.zeta}"
            )
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")


class HardConcreteGate(nn.Module):
    """Per-token Hard-Concrete gate z_t in [0, 1] with log_alpha_t = w·h_t + b."""

    def __init__(self, hidden_size: int, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        self.log_alpha = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.log_alpha.weight)
        nn.init.constant_(self.log_alpha.bias, config.init_log_alpha)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, expected_l0), each (..., 1): sampled in training, deterministic in eval."""
        c = self.config
        log_alpha = self.log_alpha(h)
        if self.training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / c.beta)
        else:
            s = torch.sigmoid(log_alpha)
        z = (s * (c.zeta - c.gamma) + c.gamma).clamp(0.0, 1.0)
        expected_l0 = torch.sigmoid(log_alpha - c.beta * math.log(-c.gamma / c.zeta))
        return z, expected_l0


class SideAdapter(nn.Module):
    """`h + g · z_t · B(A(h)) · mask_t` for one decoder layer (see module docstring)."""

    def __init__(self, hidden_size: int, config: AdapterConfig) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, config.rank, bias=False)  # A
        self.up = nn.Linear(config.rank, hidden_size, bias=False)  # B
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.normal_(self.up.weight, std=1.0 / config.rank)
        self.global_gate = nn.Parameter(torch.tensor(float(config.init_global_gate)))
        self.gate = HardConcreteGate(hidden_size, config)
        self.last_activity = 0.0  #: mean z over think tokens in the last forward
        self.last_coverage = 0.0  #: share of think tokens with z > 0 in the last forward
        self.last_expected_l0: torch.Tensor | None = None  #: mean expected L0 (differentiable)
        #: per row of the last forward: (sum of z, count of z > 0, count) over think tokens
        self.last_rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h (B, T, D), mask (B, T) of 0/1 → h with the gated delta on masked positions."""
        mask_f = mask.to(device=h.device, dtype=torch.float32).unsqueeze(-1)  # (B, T, 1)
        x = h.float()
        z, expected_l0 = self.gate(x)  # (B, T, 1) each
        delta = self.up(self.down(x.to(self.down.weight.dtype))).float()  # (B, T, D)
        out = h + (self.global_gate * z * mask_f * delta).to(h.dtype)
        n = mask_f.sum().clamp(min=1.0)
        with torch.no_grad():
            zm = (z * mask_f).squeeze(-1)  # (B, T)
            opened = ((z > 0).float() * mask_f).squeeze(-1)  # (B, T)
            self.last_rows = (zm.sum(1), opened.sum(1), mask_f.squeeze(-1).sum(1))
            self.last_activity = float(zm.sum() / n)
            self.last_coverage = float(opened.sum() / n)
        self.last_expected_l0 = (expected_l0 * mask_f).sum() / n
        return out


def decoder_layers(model: Any) -> nn.ModuleList:
    """The decoder layers of a Qwen2/Llama/Mistral-family model (`model.model.layers`), through
    a PEFT wrapper if present; ValueError naming the architecture otherwise."""
    inner = model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    layers = getattr(getattr(inner, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        arch = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise ValueError(
            f"unsupported architecture {arch!r}: side adapters need decoder layers at "
            "model.model.layers (Qwen2, Llama and Mistral families)"
        )
    return layers


def _hook(adapter: SideAdapter) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        mask = _THINK_MASK.get()
        if mask is None:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        if mask.shape != hidden.shape[:2]:
            raise ValueError(
                f"think mask shape {tuple(mask.shape)} does not match "
                f"hidden states {tuple(hidden.shape[:2])}"
            )
        if not bool(mask.any()):
            adapter.last_activity = adapter.last_coverage = 0.0
            adapter.last_rows = None
            adapter.last_expected_l0 = None  # nothing ran: no sparsity term from this forward
            return None
        new = adapter(hidden, mask)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def attach_side_adapters(
    model: Any,
    layer_indices: Sequence[int],
    config: AdapterConfig,
    adapters: nn.ModuleDict | None = None,
) -> tuple[nn.ModuleDict, list[Any]]:
    """Attach adapters to `model`'s decoder layers by forward hooks.

    Returns the adapters (keyed by layer index as a string; created in the model's device and
    float32 unless `adapters` is given) and the hook handles (call `.remove()` to detach).
    """
    layers = decoder_layers(model)
    bad = [i for i in layer_indices if not -len(layers) <= i < len(layers)]
    if bad:
        raise ValueError(f"adapter layers {bad} out of range for a model with {len(layers)} layers")
    hidden_size = int(model.config.hidden_size)
    device = next(model.parameters()).device
    if adapters is None:
        adapters = nn.ModuleDict(
            {str(i % len(layers)): SideAdapter(hidden_size, config) for i in layer_indices}
        ).to(device)
    handles = [
        layers[int(key)].register_forward_hook(_hook(adapter))
        for key, adapter in adapters.items()
        if isinstance(adapter, SideAdapter)
    ]
    return adapters, handles


def gate_stats(adapters: nn.ModuleDict) -> dict[str, float]:
    """Mean gate activity and coverage over adapters, from their last forward."""
    if len(adapters) == 0:
        return {"gate_activity": 0.0, "gate_coverage": 0.0}
    values = [a for a in adapters.values() if isinstance(a, SideAdapter)]
    return {
        "gate_activity": sum(a.last_activity for a in values) / len(values),
        "gate_coverage": sum(a.last_coverage for a in values) / len(values),
    }
