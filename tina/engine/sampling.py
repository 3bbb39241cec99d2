"""Choosing one token from a row's logits: greedy, or temperature / top-p sampling.

What it does: `sample_next_token` (argmax at temperature 0; else a draw from the softmax at
that temperature, cut to the top-p nucleus, with the request's own generator so a request's
samples do not depend on its batch), `check_sampling` (the settings' rules, as a
`ValueError`) and `seeded_generator` (a request's generator).

What it does not do: decide when to sample (forced tags come first: `tina.engine.controller`)
or run the model.
"""

from __future__ import annotations

import math

import torch


def check_sampling(temperature: float, top_p: float) -> None:
    """`ValueError` unless `temperature >= 0` and `0 < top_p <= 1` (finite numbers, not bools)."""
    if not _number(temperature) or temperature < 0:
        raise ValueError(f"temperature: expected a number >= 0, got {temperature!r}")
    if not _number(top_p) or not 0 < top_p <= 1:
        raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded with `seed` (0 when None)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else seed)
    return generator


def sample_next_token(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from `logits` (shape (V,)): the argmax at temperature 0, else drawn from
    `softmax(logits / temperature)` restricted to the smallest set of most likely tokens whose
    mass reaches `top_p` (the nucleus; the rest are never drawn)."""
    check_sampling(temperature, top_p)
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return int(torch.multinomial(probs, 1, generator=generator))
