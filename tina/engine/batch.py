"""The running batch of the decode loop and the shape changes continuous batching needs.

What it does: `DecodeBatch` holds the rows decoding together: their shared KV cache
(transformers' `DynamicCache`), attention mask, each row's next position and the logits its
next token is chosen from, plus the engine's per-row state (`rows`, opaque here). `join` adds
rows prefilled in a forward of their own (the cache and mask of the shorter side left-padded
to the common length, then concatenated along the batch axis); `select` keeps some rows (an
index select: the cache's own `batch_select_indices`, the mask, positions, logits); `trim`
drops the leading columns that no row attends to. Each row keeps its own position ids, so a
row's padding (what it joined and when) never moves its positions.

What it does not do: run the model, choose tokens or know what a row is for
(`tina.engine.loop`). Only full-attention `DynamicLayer`s are handled (no sliding window).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


@dataclass
class DecodeBatch:
    """The rows decoding together (see module docstring); empty until the first `join`."""

    cache: DynamicCache | None = None  #: the shared KV cache, one batch row per row
    attention: torch.Tensor | None = None  #: (B, T) 1 where a row attends, 0 on its padding
    positions: torch.Tensor | None = None  #: (B,) the position id of each row's next token
    logits: torch.Tensor | None = None  #: (B, V) what each row's next token is chosen from
    rows: list[Any] = field(default_factory=list)  #: the engine's state of each row, in order
    next_id: int = 0  #: the id the next admitted row gets

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return len(self.rows)


def join(
    batch: DecodeBatch,
    cache: DynamicCache,
    attention: torch.Tensor,
    positions: torch.Tensor,
    logits: torch.Tensor,
    rows: list[Any],
) -> None:
    """Append rows prefilled on `cache` (with their `attention`, next `positions`, `logits`)."""
    if batch.cache is None or not batch.rows:
        batch.cache, batch.attention, batch.positions, batch.logits = (
            cache,
            attention,
            positions,
            logits,
        )
        batch.rows = list(rows)
        return
    assert batch.attention is not None and batch.positions is not None
    assert batch.logits is not None
    width = max(batch.attention.shape[1], attention.shape[1])
    for old, new in zip(kv_layers(batch.cache), kv_layers(cache), strict=True):
        old.keys, old.values = (
            torch.cat([_pad_left(mine, width, 2), _pad_left(theirs, width, 2)])
            for mine, theirs in zip(_kv(old), _kv(new), strict=True)
        )
    batch.attention = torch.cat(
        [_pad_left(batch.attention, width, 1), _pad_left(attention, width, 1)]
    )
    batch.positions = torch.cat([batch.positions, positions])
    batch.logits = torch.cat([batch.logits, logits])
    batch.rows.extend(rows)


def select(batch: DecodeBatch, keep: list[int]) -> None:
    """Keep the rows at indices `keep` (in that order); the batch empties when none is kept."""
    if not keep:
        batch.cache = batch.attention = batch.positions = batch.logits = None
        batch.rows = []
        return
    if keep == list(range(batch.size)):
        return
    assert batch.cache is not None and batch.attention is not None
    assert batch.positions is not None and batch.logits is not None
    index = torch.tensor(keep, device=batch.attention.device)
    batch.cache.batch_select_indices(index)
    batch.attention = batch.attention[index]
    batch.positions = batch.positions[index]
    batch.logits = batch.logits[index]
    batch.rows = [batch.rows[i] for i in keep]
    trim(batch)


def trim(batch: DecodeBatch) -> None:
    """Drop the leading columns that every row has as padding (from the cache and the mask)."""
    if batch.cache is None or batch.attention is None:
        return
    unused = int((batch.attention.cumsum(1) == 0).sum(1).min())
    if unused == 0:
        return
    batch.attention = batch.attention[:, unused:]
    for layer in kv_layers(batch.cache):
        keys, values = _kv(layer)
        layer.keys, layer.values = keys[:, :, unused:], values[:, :, unused:]


def kv_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers, which must be full-attention `DynamicLayer`s."""
    layers = []
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or isinstance(layer, DynamicSlidingWindowLayer):
            raise TypeError(f"continuous batching needs DynamicLayer caches, got {type(layer)}")
        layers.append(layer)
    return layers


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's keys and values, (B, heads, T, head dim) each."""
    if layer.keys is None or layer.values is None:
        raise ValueError("a cache layer holds no keys: run a forward first")
    return layer.keys, layer.values


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`tensor` with zeros before its dimension `dim` up to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim)
