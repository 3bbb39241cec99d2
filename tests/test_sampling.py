"""Choosing a token from logits: greedy, seeded temperature / top-p sampling, checked settings."""

from __future__ import annotations

import math

import pytest
import torch

from tina.engine.sampling import check_sampling, sample_next_token, seeded_generator

LOGITS = torch.tensor([0.1, 2.0, -1.0, 1.5, 0.0, 1.9])


def draws(n: int, seed: int, **settings: float) -> list[int]:
    generator = seeded_generator(seed)
    return [sample_next_token(LOGITS, generator=generator, **settings) for _ in range(n)]


def test_greedy_is_the_argmax() -> None:
    assert sample_next_token(LOGITS, temperature=0.0) == 1
    assert sample_next_token(-LOGITS, temperature=0.0) == 2
    # greedy ignores the generator and the nucleus
    assert sample_next_token(LOGITS, temperature=0, top_p=0.1, generator=seeded_generator(3)) == 1


@pytest.mark.parametrize("settings", [{"temperature": 1.0}, {"temperature": 0.7, "top_p": 0.8}])
def test_sampling_is_reproducible_by_seed(settings: dict[str, float]) -> None:
    assert draws(50, 7, **settings) == draws(50, 7, **settings)
    assert draws(50, 7, **settings) != draws(50, 8, **settings)
    assert len(set(draws(50, 7, **settings))) > 1  # it does sample, not argmax


def test_top_p_keeps_the_nucleus_only() -> None:
    probs = torch.softmax(LOGITS, -1)
    order = probs.argsort(descending=True).tolist()  # 1, 5, 3, 0, 4, 2
    top_p = float(probs[order[0]] + probs[order[1]]) - 1e-3  # needs the two most likely
    drawn = set(draws(400, 0, temperature=1.0, top_p=top_p))
    assert drawn == set(order[:2])
    # a nucleus smaller than the top token's mass is the top token alone
    assert set(draws(100, 1, temperature=1.0, top_p=float(probs[order[0]]) / 2)) == {order[0]}
    # top_p = 1 keeps every token
    assert set(draws(2000, 2, temperature=1.0)) == set(range(len(LOGITS)))


def test_temperature_sharpens_the_draws() -> None:
    # the top token's probability is 0.59 at temperature 0.2, 0.21 at 5
    cold = draws(400, 5, temperature=0.2).count(1)
    hot = draws(400, 5, temperature=5.0).count(1)
    assert cold > 200 > 140 > hot


@pytest.mark.parametrize(
    ("temperature", "top_p", "message"),
    [
        (-0.1, 1.0, "temperature"),
        (math.nan, 1.0, "temperature"),
        (math.inf, 1.0, "temperature"),
        (True, 1.0, "temperature"),
        (1.0, 0.0, "top_p"),
        (1.0, -0.5, "top_p"),
        (1.0, 1.01, "top_p"),
        (1.0, math.nan, "top_p"),
        (0.0, 0.0, "top_p"),
    ],
    ids=[
        "negative-temperature",
        "nan-temperature",
        "inf-temperature",
        "bool-temperature",
        "top-p-zero",
        "top-p-negative",
        "top-p-above-one",
        "top-p-nan",
        "top-p-zero-greedy",
    ],
)
def test_bad_settings_are_value_errors(temperature: float, top_p: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_next_token(LOGITS, temperature=temperature, top_p=top_p)
    with pytest.raises(ValueError, match=message):
        check_sampling(temperature, top_p)


def test_settings_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        sample_next_token(LOGITS, 1.0)  # type: ignore[misc]
