"""Prompt-prefix reuse for the engine's prefill: the tokens prompts share are run once.

What it does: `Prefix` holds the KV cache (one row) and the tapped layers' outputs of a run of
prompt tokens; `shared_length` is the longest prefix a set of token lists has in common;
`crop` keeps a prefix's first tokens (exact: a causal model's KV at a position depends only on
the tokens up to it); `to_cache` repeats a prefix over a batch as a fresh `DynamicCache` the
rest of the prompts are prefilled on; `take_row` cuts one row's prompt out of a prefilled cache
to keep for the next admission; `weights_key` names the state of the weights a prefix was
computed under (each parameter's storage and version counter), so a prefix is never reused
after training steps or a reload changed them. The engine keeps one `Prefix` (the last
prompt it prefilled) and extends the one a batch shares: with a chat template's system prompt
in front of every question, that is most of a short prompt. Why and what it saves: docs/engine.md.

What it does not do: decide when a prefix pays for its own forward, run the model, or know
about side adapters (they act only on think tokens, never in a prefill): `tina.engine.loop`.
Only full-attention `DynamicLayer` caches (as `tina.engine.batch`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tina.engine.batch import kv_layers


@dataclass
class Prefix:
    """A run of prompt tokens prefilled once: its KV (batch 1) and tapped outputs."""

    tokens: tuple[int, ...]  #: the token ids, from the prompt's first
    keys: list[torch.Tensor]  #: per decoder layer, (1, kv heads, len(tokens), head dim)
    values: list[torch.Tensor]  #: as `keys`
    taps: dict[int, torch.Tensor] = field(default_factory=dict)  #: layer → (1, len(tokens), D)
    weights: tuple[tuple[int, int], ...] = ()  #: `weights_key` when it was computed

    def __len__(self) -> int:
        return len(self.tokens)


def shared_length(sequences: Sequence[Sequence[int]]) -> int:
    """The length of the longest prefix every sequence starts with (0 for none given)."""
    if not sequences:
        return 0
    first, length = sequences[0], min(len(s) for s in sequences)
    for other in sequences[1:]:
        n = 0
        while n < length and other[n] == first[n]:
            n += 1
        length = n
    return length


def weights_key(parameters: Iterable[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """Each parameter's storage address and in-place version: changes when any weight does."""
    return tuple((p.data_ptr(), p._version) for p in parameters)


def crop(prefix: Prefix, length: int) -> Prefix:
    """The prefix's first `length` tokens (views, no copy)."""
    if length > len(prefix):
        raise ValueError(f"cannot crop a {len(prefix)}-token prefix to {length} tokens")
    return Prefix(
        tokens=prefix.tokens[:length],
        keys=[k[:, :, :length] for k in prefix.keys],
        values=[v[:, :, :length] for v in prefix.values],
        taps={layer: t[:, :length] for layer, t in prefix.taps.items()},
        weights=prefix.weights,
    )


def to_cache(prefix: Prefix | None, batch: int) -> DynamicCache:
    """A new cache holding `prefix` in each of `batch` rows (an empty cache for None)."""
    cache = DynamicCache()
    if prefix is None or len(prefix) == 0:
        return cache
    for index, (keys, values) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
        cache.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1), index)
    return cache


def take_row(
    cache: DynamicCache,
    row: int,
    tokens: Sequence[int],
    taps: dict[int, torch.Tensor],
    weights: tuple[tuple[int, int], ...],
) -> Prefix:
    """Row `row` of a prefilled cache whose last `len(tokens)` columns are that row's prompt
    (`taps`: layer → (B, same columns, D)), copied out so the batch's tensors can go."""
    n = len(tokens)
    keys, values = [], []
    for layer in kv_layers(cache):
        assert layer.keys is not None and layer.values is not None
        keys.append(layer.keys[row : row + 1, :, -n:].clone())
        values.append(layer.values[row : row + 1, :, -n:].clone())
    kept = {layer: t[row : row + 1, -n:].clone() for layer, t in taps.items()}
    return Prefix(tuple(tokens), keys, values, kept, weights)
