"""Self-play on a model without side adapters: the self-play LoRA, the proposer's
demonstrations, invalid proposals by category, held-out evaluation per mode and `best/`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SELF_PLAY_SMALL
from safetensors.torch import load_file

from tina.core.introspection import IntrospectionConfig, attach_introspection
from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE
from tina.data.sandbox import SandboxConfig
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.selfplay.buffer import BufferConfig, TaskBuffer, seed_buffer
from tina.selfplay.loop import cold_start, new_state, policy_loss, self_play_iteration
from tina.selfplay.lora import (
    WEIGHTS_FILE,
    add_selfplay_lora,
    load_lora,
    lora_parameters,
    reference_policy,
    save_lora,
)
from tina.selfplay.proposer import (
    INVALID_CATEGORIES,
    compose_proposal,
    invalid_category,
    parse_proposal,
    propose,
    render_proposal,
    trivial_reason,
)
from tina.selfplay.solver import sample_rollouts
from tina.selfplay.tasks import Proposal, check_proposals
from tina.train.config import load_train_config
from tina.train.selfplay_config import SelfPlayConfig
from tina.training import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SANDBOX = SandboxConfig()


def _no_adapters(model):
    return attach_introspection(model, IntrospectionConfig.from_dict({"adapter_layers": []}))


# --- the LoRA -------------------------------------------------------------------------------------


def test_the_lora_starts_as_the_model_and_the_reference_switches_it_off(tiny_fresh):
    model, _ = tiny_fresh
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    settings = add_selfplay_lora(model, rank=4, alpha=8, top_layers=1)
    last = model.config.num_hidden_layers - 1
    assert settings["layers_to_transform"] == [last]
    params = lora_parameters(model)
    assert params and all(p.requires_grad for p in params)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)  # lora_B starts at zero
        for p in params:
            p.add_(0.05)
        moved = model(input_ids=ids).logits
        with reference_policy(model):
            off = model(input_ids=ids).logits
        again = model(input_ids=ids).logits
    assert not torch.allclose(moved, before)
    assert torch.allclose(off, before, atol=1e-6) and torch.equal(again, moved)


def test_lora_weights_round_trip_through_a_directory(tmp_path):
    from conftest import _tiny_qwen_with_tags as tiny_random_model_factory

    model, _ = tiny_random_model_factory()
    settings = add_selfplay_lora(model, rank=2, alpha=4)
    with torch.no_grad():
        for i, p in enumerate(lora_parameters(model)):
            p.fill_(0.01 * (i + 1))
    save_lora(model, settings, tmp_path)
    other, _ = tiny_random_model_factory()
    assert load_lora(other, tmp_path) == settings
    mine = dict(model.named_parameters())
    assert all(torch.equal(p, mine[n]) for n, p in other.named_parameters() if "selfplay" in n)
    broken = load_file(tmp_path / WEIGHTS_FILE)
    broken = {k: v[:1] for k, v in broken.items()}
    from safetensors.torch import save_file

    save_file(broken, tmp_path / WEIGHTS_FILE)
    third, _ = tiny_random_model_factory()
    with pytest.raises(ValueError, match=WEIGHTS_FILE):
        load_lora(third, tmp_path)


def test_the_update_trains_the_lora_and_nothing_else(tiny_fresh):
    model, tokenizer = tiny_fresh
    intro = _no_adapters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    add_selfplay_lora(model, rank=4, alpha=8)
    for p in lora_parameters(model):
        p.requires_grad_(False)
    config = SelfPlayConfig(**{**SELF_PLAY_SMALL, "lr": 1e-2, "num_mc_rollouts": 4})
    state = new_state(model, tokenizer, intro, config)
    frozen = {n: p.clone() for n, p in model.named_parameters() if "selfplay" not in n}
    lora = {n: p.clone() for n, p in model.named_parameters() if "selfplay" in n}
    engine = Engine(model, tokenizer, intro, EngineConfig(slack_ratio=0.0, budget_cap=8))
    rollouts = sample_rollouts(engine, ["What does f(3) return?"] * 2, 8, 4, 1.0, 1.0, [1, 2])
    from tina.selfplay.loop import update

    stats = update(state, rollouts, [1.0, -1.0])
    assert stats["updated_rows"] == 2
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in frozen.items())
    assert any(not torch.equal(now[n], v) for n, v in lora.items())


def test_kl_to_the_reference_is_zero_until_the_lora_moves(tiny_fresh):
    model, tokenizer = tiny_fresh
    intro = _no_adapters(model)
    add_selfplay_lora(model, rank=4, alpha=8)
    engine = Engine(model, tokenizer, intro, EngineConfig(slack_ratio=0.0, budget_cap=8))
    (rollout,) = sample_rollouts(engine, ["What does f(3) return?"], 8, 4, 1.0, 1.0, [7])
    _, stats = policy_loss(model, [rollout], [1.0], 1.0, tokenizer)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(0.05)
    _, moved = policy_loss(model, [rollout], [1.0], 1.0, tokenizer)
    assert moved["kl"] > 1e-6


def test_nothing_to_train_is_an_error_that_says_so(tiny_fresh):
    model, tokenizer = tiny_fresh
    intro = _no_adapters(model)
    with pytest.raises(ValueError, match="lora_r"):
        new_state(model, tokenizer, intro, SelfPlayConfig(**SELF_PLAY_SMALL))


# --- proposals ------------------------------------------------------------------------------------


def test_a_fenced_proposal_parses_like_a_bare_one():
    bare = "def f(x):\n    return x * 2\nf(3)\nf(4)"
    fenced = f"```python\n{bare}\n```\n"
    assert parse_proposal(fenced) == parse_proposal(bare)
    assert parse_proposal(bare)[0] is not None


def test_a_repeated_call_is_kept_once_in_its_first_place():
    proposal, why = parse_proposal("def f(x):\n  return x % 3\nf(3)\nf(1)\nf(3)\nf(2)\nf(1)")
    assert why == "" and list(proposal.inputs) == [(3,), (1,), (2,)]


def test_an_answer_cut_at_its_cap_loses_only_its_last_line():
    text = "def f(x):\n    return x * 2\nf(3)\nf(4)\nf(1"
    assert parse_proposal(text)[0] is None  # the cut call is not a call
    proposal, why = parse_proposal(text, cut=True)
    assert why == "" and list(proposal.inputs) == [(3,), (4,)]


@pytest.mark.parametrize("mode", ["deduction", "abduction", "induction"])
def test_a_rendered_proposal_parses_back_to_itself(mode):
    proposal = compose_proposal(random.Random(3), mode, 3)
    assert parse_proposal(render_proposal(proposal)) == (proposal, "")


@pytest.mark.parametrize(
    ("mode", "program", "inputs", "trivial"),
    [
        pytest.param("deduction", "def f(x):\n    return x", [(4,)], True, id="identity"),
        pytest.param("deduction", "def f(x):\n    return x + 1", [(4,)], False, id="add-one"),
        pytest.param("induction", "def f(x):\n    return 7", [(1,), (2,), (3,)], True, id="const"),
        pytest.param(
            "induction", "def f(x):\n    return x % 2", [(1,), (2,), (3,)], False, id="parity"
        ),
    ],
)
def test_trivial_proposals_are_named(mode, program, inputs, trivial):
    proposal = Proposal(program, "f", inputs)
    (check,) = check_proposals([proposal], SANDBOX)
    assert check.accepted
    reason = trivial_reason(mode, proposal, check.outputs)
    assert bool(reason) == trivial and (not reason or invalid_category(reason) == "trivial")


@pytest.mark.parametrize(
    ("program", "category"),
    [
        pytest.param("x=3+4=7;", "format", id="a-trace"),
        pytest.param("def f(x):\n    return (x +\nf(1)", "syntax", id="syntax"),
        pytest.param("def f(x):\n    return open('a').read()\nf(1)", "refused", id="open"),
        pytest.param("def f(x):\n    while True:\n        x += 1\nf(1)", "timeout", id="loop"),
        pytest.param("def f(x):\n    return 1 // 0\nf(1)", "error", id="zero-division"),
    ],
)
def test_invalid_proposals_are_counted_by_category(program, category):
    proposal, reason = parse_proposal(program)
    if proposal is not None:
        (check,) = check_proposals([proposal], SandboxConfig(timeout_s=1.0))
        reason = check.reason
    assert reason and invalid_category(reason) == category
    assert category in INVALID_CATEGORIES


def test_a_demonstration_is_the_composed_proposal_as_credited_answer_tokens(tiny_fresh):
    model, tokenizer = tiny_fresh
    intro = _no_adapters(model)
    engine = Engine(model, tokenizer, intro, EngineConfig(slack_ratio=0.0, budget_cap=8))
    buffer = TaskBuffer(BufferConfig(64, "fifo", 0))
    seed_buffer(buffer, 4, seed=0)
    rng = random.Random(0)
    (slot,) = propose(
        engine, buffer, ["deduction"], rng, 1, 0, 24, 1.0, 1.0, 5, SANDBOX, 2, 3, True
    )
    assert slot.composed and slot.reason  # a random model writes no valid program
    shown = slot.demonstration
    assert shown is not None and shown.prompt == slot.rollout.prompt
    assert parse_proposal(shown.answer)[0].program == slot.task.program
    ids = shown.completion_ids
    assert ids[:2] == [engine.ids[THINK_CLOSE], engine.ids[ANSWER_OPEN]]
    assert ids[-1] == engine.ids[ANSWER_CLOSE]
    assert tokenizer.decode(ids[2:-1]) == shown.answer
    assert shown.sampled == [False, False, *[True] * (len(ids) - 3), False]
    assert not any(shown.think)


# --- runs -----------------------------------------------------------------------------------------


def _config(tmp_path: Path, **self_play) -> Path:
    raw = {
        "mode": "self_play",
        "output_dir": str(tmp_path / "run"),
        "save_every": 1,
        "tensorboard": False,
        "introspection": {"adapter_layers": []},
        "self_play": {
            **SELF_PLAY_SMALL,
            "iterations": 2,
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_layers": 1,
            "demonstrate": True,
            "eval_every": 1,
            "eval_tasks": 3,
            "eval_modes": ["deduction", "abduction"],
            **self_play,
        },
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _lines(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_a_lora_run_evaluates_before_training_and_keeps_the_best(tmp_path):
    run(load_train_config(_config(tmp_path)), progress=False)
    lines = _lines(tmp_path)
    evals = [x for x in lines if x["role"] == "eval"]
    assert [x["iteration"] for x in evals] == [0, 1, 2]
    for x in evals:
        rates = [x["heldout_solve_rate_deduction"], x["heldout_solve_rate_abduction"]]
        assert x["heldout_solve_rate"] == pytest.approx(sum(rates) / 2)
    propose_lines = [x for x in lines if x["role"] == "propose"]
    for x in propose_lines:
        assert set(x["invalid_reasons"]) == set(INVALID_CATEGORIES)
        assert sum(x["invalid_reasons"].values()) == round(x["invalid_proposal_rate"])
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    top = max(x["heldout_solve_rate"] for x in evals)
    first_top = next(x for x in evals if x["heldout_solve_rate"] == top)
    assert best["iteration"] == first_top["iteration"] and best["heldout_solve_rate"] == top
    assert (tmp_path / "run" / "best" / WEIGHTS_FILE).is_file()
    assert (tmp_path / "run" / "checkpoint-2" / WEIGHTS_FILE).is_file()


def test_a_resumed_lora_run_ends_where_a_straight_one_does(tmp_path):
    run(load_train_config(_config(tmp_path / "a")), progress=False)
    run(load_train_config(_config(tmp_path / "b", iterations=1)), progress=False)
    run(load_train_config(_config(tmp_path / "b")), resume=True, progress=False)
    a = load_file(tmp_path / "a" / "run" / "checkpoint-2" / WEIGHTS_FILE)
    b = load_file(tmp_path / "b" / "run" / "checkpoint-2" / WEIGHTS_FILE)
    one = load_file(tmp_path / "b" / "run" / "checkpoint-1" / WEIGHTS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], one[k]) for k in a)
    assert [x for x in _lines(tmp_path / "a") if x["role"] == "eval"] == [
        x for x in _lines(tmp_path / "b") if x["role"] == "eval"
    ]


@pytest.mark.parametrize("demonstrate", [False, True], ids=["alone", "with-demonstrations"])
def test_demonstrations_give_all_invalid_proposals_a_gradient(demonstrate):
    from conftest import _tiny_qwen_with_tags

    model, tokenizer = _tiny_qwen_with_tags()
    intro = _no_adapters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    add_selfplay_lora(model, rank=4, alpha=8)
    config = SelfPlayConfig(
        **{**SELF_PLAY_SMALL, "num_propose": 2, "num_solve": 0, "demonstrate": demonstrate}
    )
    state = new_state(model, tokenizer, intro, config)
    metrics = self_play_iteration(state)
    propose_metrics, solve_metrics = metrics["propose"], metrics["solve"]
    assert propose_metrics["invalid_proposal_rate"] == 1.0  # a random model writes no program
    assert sum(propose_metrics["invalid_reasons"].values()) == 2
    # a group of equal rewards (every proposal invalid) has no advantage; with the
    # demonstrations beside them, both the invalid rows and the demonstrations move
    solver_rows = solve_metrics["updated_rows"] - (4 if demonstrate else 0)
    assert solver_rows == 0  # a random model solves nothing either: equal rewards


def test_the_cold_start_teaches_the_proposal_format():
    from tina.core.models import load_model

    model, tokenizer = load_model(device="cpu")  # the embedded model: it has read programs
    intro = _no_adapters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    add_selfplay_lora(model, rank=8, alpha=16)
    config = SelfPlayConfig(**{**SELF_PLAY_SMALL, "cold_start_lr": 1e-2})
    state = new_state(model, tokenizer, intro, config)
    losses = cold_start(state, steps=12, batch=4)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3  # the demonstrations' NLL falls
    assert all(g["lr"] == config.lr for g in state.optimizer.param_groups)  # back to RL's
    asked = []
    stopped = cold_start(
        state, steps=12, batch=2, should_stop=lambda: asked.append(1) or len(asked) > 2
    )
    assert len(stopped) == 2  # a signal between steps ends it there


def test_a_run_with_a_cold_start_evaluates_before_and_after_it(tmp_path):
    run(load_train_config(_config(tmp_path, iterations=1, cold_start_steps=2)), progress=False)
    lines = _lines(tmp_path)
    roles = [(x["role"], x.get("stage")) for x in lines]
    assert roles[:3] == [("eval", "before_cold_start"), ("cold_start", None), ("eval", None)]
    assert lines[1]["steps"] == 2
