"""`tina.train.losses`: values on hand-made cases, where gradients go, empty inputs, the causal
shift,
the anneal schedule and `combine_losses` semantics. Tiny CPU tensors only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tina.train.losses import (
    LOSS_NAMES,
    anneal_weight,
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
    shifted_token_logprobs,
    style_invariance_kl,
    think_ce,
)

V = 7  # vocabulary size of every toy LM


def _logits(b: int, t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, V, generator=g).requires_grad_(True)


# Two rows of 6 tokens; masks over input positions.
IDS = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
MASK = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]])


def _ref_token_nlls(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> list[Any]:
    """NLL of token j under logits[j - 1], for every masked j >= 1, by a plain loop."""
    out = []
    for b in range(ids.shape[0]):
        for j in range(1, ids.shape[1]):
            if mask[b, j]:
                out.append(-torch.log_softmax(logits[b, j - 1], -1)[ids[b, j]])
    return out


# --- the causal shift ---------------------------------------------------------------------------


def _peaked(ids: torch.Tensor, shift: int) -> torch.Tensor:
    """Logits at position t put (almost) all mass on token ids[t + shift]."""
    b, t = ids.shape
    logits = torch.full((b, t, V), -30.0)
    for i in range(b):
        for j in range(t):
            logits[i, j, ids[i, min(j + shift, t - 1)]] = 30.0
    return logits


TOKEN_LOSSES: list[Any] = [
    pytest.param(lambda lg, ids, m: answer_ce(lg, ids, m), id="answer_ce"),
    pytest.param(lambda lg, ids, m: think_ce(lg, ids, m), id="think_ce"),
    pytest.param(lambda lg, ids, m: segment_ce(lg, ids, m), id="segment_ce"),
    pytest.param(lambda lg, ids, m: -answer_logprob(lg, ids, m).sum(), id="answer_logprob"),
]


@pytest.mark.parametrize("loss", TOKEN_LOSSES)
def test_mass_on_true_next_token_gives_zero_loss(loss: Callable[..., torch.Tensor]) -> None:
    assert loss(_peaked(IDS, shift=1), IDS, MASK).item() < 1e-6


@pytest.mark.parametrize("loss", TOKEN_LOSSES)
def test_mass_on_current_token_gives_large_loss(loss: Callable[..., torch.Tensor]) -> None:
    assert loss(_peaked(IDS, shift=0), IDS, MASK).item() > 50.0


def test_shifted_token_logprobs_column_t_scores_token_t_plus_1() -> None:
    logits = _logits(2, 6)
    out = shifted_token_logprobs(logits, IDS)
    assert out.shape == (2, 5)
    expected = torch.log_softmax(logits[1, 2], -1)[IDS[1, 3]]
    assert torch.allclose(out[1, 2], expected)


# --- values on hand-made cases ------------------------------------------------------------------


def test_token_losses_match_a_plain_loop() -> None:
    logits = _logits(2, 6)
    ref = _ref_token_nlls(logits, IDS, MASK)
    mean = torch.stack(ref).mean()
    assert torch.allclose(answer_ce(logits, IDS, MASK), mean)
    assert torch.allclose(segment_ce(logits, IDS, MASK.bool()), mean)
    assert torch.allclose(think_ce(logits, IDS, MASK, weight_schedule_step=0.25), 0.25 * mean)
    rows = answer_logprob(logits, IDS, MASK)
    assert torch.allclose(rows[0], -(ref[0] + ref[1]))
    assert torch.allclose(rows[1], -(ref[2] + ref[3] + ref[4]))


def test_token_mask_at_position_zero_is_never_scored() -> None:
    logits = _logits(1, 3)
    ids = torch.tensor([[1, 2, 3]])
    only_first = torch.tensor([[1, 0, 0]])
    assert answer_ce(logits, ids, only_first).item() == 0.0
    both = torch.tensor([[1, 1, 0]])
    expected = -torch.log_softmax(logits[0, 0], -1)[2]
    assert torch.allclose(answer_ce(logits, ids, both), expected)


def _pair_ref(
    la: torch.Tensor, ma: torch.Tensor, lb: torch.Tensor, mb: torch.Tensor, symmetric: bool
) -> torch.Tensor:
    """Aligned KL by a plain loop over rows and answer indices."""
    terms = []
    for b in range(la.shape[0]):
        pa = [j - 1 for j in range(1, la.shape[1]) if ma[b, j]]
        pb = [j - 1 for j in range(1, lb.shape[1]) if mb[b, j]]
        for ia, ib in zip(pa, pb, strict=False):
            lpa = torch.log_softmax(la[b, ia], -1)
            lpb = torch.log_softmax(lb[b, ib], -1)
            kl_ab = (lpa.exp() * (lpa - lpb)).sum()
            kl_ba = (lpb.exp() * (lpb - lpa)).sum()
            terms.append(0.5 * (kl_ab + kl_ba) if symmetric else kl_ab)
    return torch.stack(terms).mean()


# Row 0: 3 answer tokens in A vs 5 in B; row 1: A has none (contributes nothing).
PAIR_MA = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
PAIR_MB = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize(
    ("fn", "symmetric"),
    [
        pytest.param(rewrite_consistency, True, id="rewrite_symmetric"),
        pytest.param(style_invariance_kl, False, id="style_one_directional"),
    ],
)
def test_paired_losses_align_3_vs_5_and_skip_empty_rows(
    fn: Callable[..., torch.Tensor], symmetric: bool
) -> None:
    la, lb = _logits(2, 6, seed=1), _logits(2, 8, seed=2)
    got = fn(la, PAIR_MA, lb, PAIR_MB)
    assert torch.allclose(got, _pair_ref(la, PAIR_MA, lb, PAIR_MB, symmetric), atol=1e-6)


def test_rewrite_consistency_is_symmetric_and_zero_on_identical_answers() -> None:
    la, lb = _logits(2, 6, seed=1), _logits(2, 8, seed=2)
    ab = rewrite_consistency(la, PAIR_MA, lb, PAIR_MB)
    # swap the sides: row 1 of B has answers but row 1 of A none, so only row 0 counts either way
    ba = rewrite_consistency(lb, PAIR_MB, la, PAIR_MA)
    assert torch.allclose(ab, ba, atol=1e-6)
    same = rewrite_consistency(la, PAIR_MA, la.detach().clone(), PAIR_MA)
    assert same.item() < 1e-6


ROW_CASES: list[Any] = [
    pytest.param(
        lambda: plan_ce(
            torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]]),
            torch.tensor([0, 3, -100]),
        ),
        (
            F.cross_entropy(torch.tensor([[2.0, 0.0, 0.0, 0.0]]), torch.tensor([0]))
            + F.cross_entropy(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([3]))
        )
        / 2,
        id="plan_ce_ignores_-100",
    ),
    pytest.param(
        lambda: budget_loss(torch.tensor([3.0, 0.0]), torch.tensor([7, -1])),
        0.5 * math.log(2.0) ** 2,  # |log 4 - log 8| = log 2 < delta: quadratic branch
        id="budget_huber_quadratic_ignores_negative",
    ),
    pytest.param(
        lambda: budget_loss(torch.tensor([0.0]), torch.tensor([math.exp(3.0) - 1.0])),
        3.0 - 0.5,  # |0 - 3| > delta = 1: linear branch, delta * (|d| - delta / 2)
        id="budget_huber_linear",
    ),
    pytest.param(
        lambda: confidence_bce(torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, -1.0, 0.0])),
        (math.log(2.0) + math.log1p(math.exp(-1.0))) / 2,
        id="confidence_bce_ignores_unknown",
    ),
    pytest.param(
        lambda: confidence_bce(torch.tensor([0.0, 3.0]), torch.tensor([True, False])),
        (math.log(2.0) + math.log1p(math.exp(3.0))) / 2,
        id="confidence_bce_bool_targets",
    ),
    pytest.param(
        lambda: over_budget_penalty(
            torch.tensor([150, 50, 10, -1]), torch.tensor([100.0, 100.0, 0.0, 5.0]), scale=2.0
        ),
        2.0 * (0.5 + 0.0 + 10.0) / 3,  # budget 0 floors at 1; used < 0 ignored
        id="over_budget_normalised_by_budget",
    ),
    pytest.param(
        lambda: gate_sparsity([torch.tensor(0.2), None, torch.tensor([0.4])]),
        0.3,
        id="gate_sparsity_mean_skips_none",
    ),
    pytest.param(
        lambda: quiet_star_consistency(
            torch.tensor([-1.0, -5.0]), torch.tensor([-2.0, -3.0]), margin=0.5
        ),
        (0.0 + 2.5) / 2,  # gains +1 (past the margin) and -2 (hinge 0.5 + 2)
        id="quiet_star_hinge",
    ),
    pytest.param(
        lambda: constraint_bce(
            torch.tensor([[0.0, 1.0], [2.0, 2.0]]),
            torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
            torch.tensor([1, 0]),
        ),
        (math.log(2.0) + math.log1p(math.exp(1.0))) / 2,
        id="constraint_bce_row_mask",
    ),
    pytest.param(
        lambda: constraint_bce(
            torch.tensor([[0.0, 1.0], [2.0, 2.0]]),
            torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
            torch.tensor([[1, 0], [0, 1]]),
        ),
        (math.log(2.0) + math.log1p(math.exp(-2.0))) / 2,
        id="constraint_bce_entry_mask",
    ),
]


@pytest.mark.parametrize(("compute", "expected"), ROW_CASES)
def test_row_loss_values(compute: Callable[[], torch.Tensor], expected: Any) -> None:
    got = compute()
    assert got.dim() == 0
    assert math.isclose(got.item(), float(expected), rel_tol=1e-5, abs_tol=1e-6)


# --- where gradients go -------------------------------------------------------------------------


def test_answer_ce_grad_only_at_predicting_positions() -> None:
    logits = _logits(2, 6)
    answer_ce(logits, IDS, MASK).backward()
    assert logits.grad is not None
    nonzero = logits.grad.abs().sum(-1) > 0
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[:, :-1] = MASK[:, 1:].bool()  # token j is predicted at j - 1
    assert torch.equal(nonzero, expected)


def test_rewrite_consistency_grad_only_on_compared_positions() -> None:
    la, lb = _logits(2, 6, seed=1), _logits(2, 8, seed=2)
    rewrite_consistency(la, PAIR_MA, lb, PAIR_MB).backward()
    assert la.grad is not None and lb.grad is not None
    # row 0: A's 3 answer tokens (j = 1, 2, 3 -> positions 0, 1, 2) against B's first 3
    # (j = 2, 3, 4 -> positions 1, 2, 3); B's last 2 and all of row 1 get nothing
    assert (la.grad.abs().sum(-1)[0] > 0).tolist() == [True, True, True, False, False, False]
    assert (lb.grad.abs().sum(-1)[0] > 0).tolist() == [False, True, True, True] + [False] * 4
    assert float(la.grad[1].abs().sum()) == 0.0 and float(lb.grad[1].abs().sum()) == 0.0


def test_style_invariance_kl_no_grad_to_detached_side() -> None:
    la, lb = _logits(2, 6, seed=1), _logits(2, 8, seed=2)
    style_invariance_kl(la, PAIR_MA, lb, PAIR_MB).backward()
    assert la.grad is None or float(la.grad.abs().sum()) == 0.0
    assert lb.grad is not None and float(lb.grad.abs().sum()) > 0.0


ROW_GRAD_CASES: list[Any] = [
    pytest.param(
        lambda x: confidence_bce(x[:, 0], torch.tensor([1.0, -1.0, 0.0])),
        [True, False, True],
        id="confidence_bce",
    ),
    pytest.param(
        lambda x: plan_ce(x, torch.tensor([-100, 2, 1])), [False, True, True], id="plan_ce"
    ),
    pytest.param(
        lambda x: budget_loss(x[:, 0].exp() * 10, torch.tensor([5, 20, -1])),
        [True, True, False],
        id="budget_loss",
    ),
    pytest.param(
        lambda x: over_budget_penalty(torch.tensor([-1, 50, 50]), x[:, 0].exp()),
        [False, True, True],
        id="over_budget_penalty",
    ),
    pytest.param(
        lambda x: constraint_bce(x, torch.ones(3, 4), torch.tensor([0, 1, 1])),
        [False, True, True],
        id="constraint_bce",
    ),
]


@pytest.mark.parametrize(("loss", "rows_with_grad"), ROW_GRAD_CASES)
def test_ignored_rows_get_no_gradient(
    loss: Callable[[torch.Tensor], torch.Tensor], rows_with_grad: list[bool]
) -> None:
    x = torch.tensor(
        [[0.3, -0.2, 0.1, 0.5], [0.1, 0.4, -0.3, 0.2], [-0.5, 0.2, 0.6, -0.1]],
        requires_grad=True,
    )
    loss(x).backward()
    assert x.grad is not None
    assert (x.grad.abs().sum(-1) > 0).tolist() == rows_with_grad


# --- empty inputs -------------------------------------------------------------------------------

_ZERO_MASK = torch.zeros(2, 6, dtype=torch.long)
EMPTY_CASES: list[Any] = [
    pytest.param(lambda x: answer_ce(x, IDS, _ZERO_MASK), id="answer_ce"),
    pytest.param(lambda x: think_ce(x, IDS, _ZERO_MASK, 0.5), id="think_ce"),
    pytest.param(lambda x: segment_ce(x, IDS, _ZERO_MASK), id="segment_ce"),
    pytest.param(lambda x: answer_logprob(x, IDS, _ZERO_MASK).sum(), id="answer_logprob"),
    pytest.param(lambda x: rewrite_consistency(x, _ZERO_MASK, x, MASK), id="rewrite_empty_a"),
    pytest.param(lambda x: style_invariance_kl(x, MASK, x, _ZERO_MASK), id="style_empty_b"),
    pytest.param(lambda x: plan_ce(x[:, 0, :4], torch.full((2,), -100)), id="plan_ce_all_ignored"),
    pytest.param(lambda x: budget_loss(x[:, 0, 0].exp(), torch.tensor([-1, -1])), id="budget"),
    pytest.param(
        lambda x: confidence_bce(x[:, 0, 0], torch.tensor([-1.0, float("nan")])),
        id="confidence_all_unknown",
    ),
    pytest.param(
        lambda x: over_budget_penalty(torch.tensor([-1, -1]), x[:, 0, 0]), id="over_budget"
    ),
    pytest.param(
        lambda x: constraint_bce(x[:, 0], torch.ones(2, V), torch.zeros(2)), id="constraint"
    ),
    pytest.param(
        lambda x: quiet_star_consistency(x[:0, 0, 0], x[:0, 0, 1]), id="quiet_star_empty_batch"
    ),
    pytest.param(lambda x: combine_losses({"answer_ce": x.sum()}, {})[0], id="combine_all_off"),
]


@pytest.mark.parametrize("loss", EMPTY_CASES)
def test_empty_inputs_give_finite_zero_with_grad(
    loss: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    x = _logits(2, 6)
    out = loss(x)
    assert out.dim() == 0 and out.item() == 0.0
    assert out.requires_grad and out.grad_fn is not None
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) == 0


def test_empty_inputs_without_grad() -> None:
    assert float(gate_sparsity([])) == 0.0
    assert float(gate_sparsity([None])) == 0.0
    assert (
        float(
            rewrite_consistency(
                torch.zeros(0, 4, V), torch.zeros(0, 4), torch.zeros(0, 5, V), torch.zeros(0, 5)
            )
        )
        == 0.0
    )
    assert float(answer_ce(torch.zeros(1, 1, V), torch.zeros(1, 1), torch.ones(1, 1))) == 0.0


# --- anneal schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        pytest.param(-5, 1.0, id="before_start"),
        pytest.param(10, 1.0, id="at_start"),
        pytest.param(15, 0.6, id="midway"),
        pytest.param(20, 0.2, id="at_end"),
        pytest.param(1000, 0.2, id="after_end"),
    ],
)
def test_anneal_weight(step: int, expected: float) -> None:
    assert math.isclose(anneal_weight(step, 10, 20, 1.0, 0.2), expected)


def test_anneal_weight_step_and_bad_range() -> None:
    assert anneal_weight(4, 5, 5, 1.0, 0.0) == 1.0
    assert anneal_weight(5, 5, 5, 1.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="before start"):
        anneal_weight(0, 10, 5, 1.0, 0.0)


# --- combine_losses -----------------------------------------------------------------------------


def test_combine_losses_on_off_semantics() -> None:
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    c = torch.tensor(5.0, requires_grad=True)
    parts = {"answer_ce": a, "think_ce": b, "plan_ce": c, "budget_loss": None}
    weights = {"answer_ce": 1.0, "think_ce": 0.0, "budget_loss": 4.0}
    total, logged = combine_losses(parts, weights)
    # answer_ce on; think_ce weight 0; plan_ce no weight; budget_loss weight but no value
    assert total.item() == 2.0
    assert logged == {"answer_ce": 2.0, "think_ce": 3.0, "plan_ce": 5.0, "total": 2.0}
    total.backward()
    assert a.grad is not None and float(a.grad) == 1.0
    assert b.grad is None and c.grad is None


def test_combine_losses_weighted_sum() -> None:
    parts = {"gate_sparsity": torch.tensor(0.5), "confidence_bce": torch.tensor(2.0)}
    total, logged = combine_losses(parts, {"gate_sparsity": 0.1, "confidence_bce": 2.0})
    assert math.isclose(total.item(), 0.05 + 4.0, rel_tol=1e-6)
    assert math.isclose(logged["total"], 4.05, rel_tol=1e-6)


@pytest.mark.parametrize(
    ("parts", "weights", "match"),
    [
        pytest.param({}, {"answer_cee": 1.0}, "'answer_cee'", id="unknown_weight_key"),
        pytest.param({"kl": torch.tensor(1.0)}, {}, "'kl'", id="unknown_part_key"),
        pytest.param({}, {"plan_ce": -1.0}, "'plan_ce'", id="negative_weight"),
        pytest.param({}, {"plan_ce": float("nan")}, "'plan_ce'", id="nan_weight"),
        pytest.param({"plan_ce": torch.ones(2)}, {}, "'plan_ce'", id="non_scalar_part"),
    ],
)
def test_combine_losses_rejects(parts: Any, weights: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        combine_losses(parts, weights)


def test_loss_names_are_unique() -> None:
    assert len(set(LOSS_NAMES)) == len(LOSS_NAMES)


def test_plan_ce_rejects_out_of_range_target() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        plan_ce(torch.zeros(2, 4), torch.tensor([4, 0]))
