"""Self-play proposer, solver, policy update and the trainer's self_play / hybrid modes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SELF_PLAY_SMALL

from tina.cli import main
from tina.core.introspection import IntrospectionConfig, attach_introspection
from tina.core.tags import ANSWER_OPEN, THINK_CLOSE
from tina.data.contract import write_contract_jsonl
from tina.data.sandbox import SandboxConfig
from tina.data.tasks import generate_records
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.selfplay.loop import new_state, policy_loss, self_play_iteration
from tina.selfplay.proposer import compose_task, parse_proposal, proposer_prompt
from tina.selfplay.solver import sample_rollouts
from tina.selfplay.tasks import Deduction, Induction, check_proposals, mode_of
from tina.train.config import TrainConfigError, load_train_config
from tina.train.selfplay_config import SelfPlayConfig, SelfPlayConfigError

SANDBOX = SandboxConfig()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("text", "inputs", "reason"),
    [
        pytest.param("def f(x):\n  return x + 1\nf(3)", [(3,)], "", id="one-call"),
        pytest.param(
            "def g(a, b):\n  return a * b\ng(2, 3)\ng(4, 5)",
            [(2, 3), (4, 5)],
            "",
            id="two-calls-two-args",
        ),
        pytest.param("def f(x):\n  return x", None, "no input call", id="no-call"),
        pytest.param("def f(x):\n  return x\nf(y)", None, "non-literal", id="name-argument"),
        pytest.param("def f(x):\n  return x\nh(1)", None, "defines no function", id="wrong-name"),
        pytest.param("x=3+4=7;", None, "no input call", id="a-trace-not-a-program"),
    ],
)
def test_parse_proposal(text, inputs, reason):
    proposal, why = parse_proposal(text)
    if inputs is None:
        assert proposal is None and reason in why
    else:
        assert proposal is not None and why == "" and list(proposal.inputs) == inputs


@pytest.mark.parametrize("mode", ["deduction", "abduction", "induction"])
def test_composed_tasks_pass_the_sandbox_checks(mode):
    rng = random.Random(3)
    for _ in range(3):
        task, _ = compose_task(rng, mode, SANDBOX, n_heldout=2, max_statements=3)
        assert mode_of(task) == mode
        inputs = (
            [a for a, _ in (*task.shown, *task.heldout)]
            if isinstance(task, Induction)
            else [task.args]
        )
        (check,) = check_proposals(
            [parse_proposal(f"{task.program}\n" + "\n".join(f"f({a[0]})" for a in inputs))[0]],
            SANDBOX,
        )
        assert check.accepted


def test_proposer_prompt_shows_reference_programs_and_calls():
    ref = Deduction("def f(x):\n  x = x + 2\n  return x", "f", (5,), 7)
    prompt = proposer_prompt("deduction", [ref])
    assert "deduction" in prompt and ref.program in prompt and "f(5)" in prompt


def _rollout_on(tiny, think_gate: float):
    model, tokenizer = tiny
    intro = attach_introspection(
        model,
        IntrospectionConfig.from_dict(
            {"adapter_layers": [0, 1], "adapter": {"rank": 4, "init_global_gate": think_gate}}
        ),
    )
    engine = Engine(model, tokenizer, intro, EngineConfig(slack_ratio=0.0, budget_cap=8))
    (rollout,) = sample_rollouts(engine, ["What does f(3) return?"], 8, 4, 1.0, 1.0, [7])
    return model, tokenizer, intro, engine, rollout


def test_rollout_masks_mark_think_tokens_and_forced_tags(tiny_fresh):
    _, _, _, engine, r = _rollout_on(tiny_fresh, 0.0)
    ids = r.completion_ids
    close = ids.index(engine.ids[THINK_CLOSE])
    assert r.think[:close] == [True] * close and not any(r.think[close:])
    assert ids[close + 1] == engine.ids[ANSWER_OPEN] and not r.sampled[close + 1]
    assert r.telemetry.forced_think_close == (not r.sampled[close])  # random model hits the cap


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive-advantage", "negative-advantage"])
def test_policy_gradient_moves_the_sampled_sequence_log_prob_with_the_advantage(tiny_fresh, sign):
    torch.manual_seed(0)
    model, tokenizer, intro, _, rollout = _rollout_on(tiny_fresh, 0.5)
    params = list(intro.adapters.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.eval()

    def seq_logp() -> float:
        loss, _ = policy_loss(model, [rollout], [1.0], 0.0, tokenizer)
        return -float(loss.detach())  # with advantage 1 and no KL, the loss is −token-mean log-prob

    before = seq_logp()
    optimizer = torch.optim.SGD(params, lr=0.5)
    loss, stats = policy_loss(model, [rollout], [sign], 0.0, tokenizer)
    loss.backward()
    optimizer.step()
    after = seq_logp()
    assert stats["tokens"] > 0
    assert (after - before) * sign > 1e-4


def test_kl_to_the_reference_is_zero_while_adapters_are_closed(tiny_fresh):
    model, tokenizer, intro, _, rollout = _rollout_on(tiny_fresh, 0.0)
    _, stats = policy_loss(model, [rollout], [1.0], 1.0, tokenizer)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for adapter in intro.adapters.values():
            adapter.global_gate.fill_(2.0)
    _, opened = policy_loss(model, [rollout], [1.0], 1.0, tokenizer)
    assert opened["kl"] > 1e-6


def test_config_names_bad_and_unknown_keys():
    with pytest.raises(SelfPlayConfigError) as err:
        SelfPlayConfig.from_dict({"num_mc_rollouts": 0, "bogus": 1, "task_types": ["poetry"]})
    text = str(err.value)
    assert "bogus: unknown key" in text and "num_mc_rollouts" in text and "poetry" in text


@pytest.fixture(scope="module")
def embedded_parts():
    from tina.core.models import load_model

    model, tokenizer = load_model(device="cpu")
    intro = attach_introspection(model, IntrospectionConfig())
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer, intro


def test_one_iteration_on_the_embedded_model_updates_only_the_adapters(embedded_parts):
    model, tokenizer, intro = embedded_parts
    config = SelfPlayConfig(
        task_types=["deduction", "abduction"],
        num_propose=2,
        num_solve=2,
        num_mc_rollouts=4,
        seed_tasks_per_mode=8,
        solve_budget=64,
        propose_budget=8,
        propose_answer_tokens=96,
        lr=1e-2,
    )
    state = new_state(model, tokenizer, intro, config)
    adapters = {k: v.clone() for k, v in intro.adapters.state_dict().items()}
    heads = {k: v.clone() for k, v in intro.heads.state_dict().items()}
    base = model.model.layers[0].mlp.up_proj.weight.clone()
    size = len(state.buffer)
    metrics = self_play_iteration(state)
    propose, solve = metrics["propose"], metrics["solve"]
    assert propose["proposals"] == 2 and 0.0 <= propose["invalid_proposal_rate"] <= 1.0
    assert propose["buffer_size"] == size + propose["new_tasks_added"]
    assert sum(propose["learnability_hist"]) == solve["tasks_solved_for"] == 4
    assert 0.0 <= solve["solve_rate"] <= 1.0 and solve["updated_rows"] > 0
    changed = [k for k, v in intro.adapters.state_dict().items() if not torch.equal(v, adapters[k])]
    assert changed, "the update moved no adapter parameter"
    assert all(torch.equal(v, heads[k]) for k, v in intro.heads.state_dict().items())
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, base)


# --- trainer modes -------------------------------------------------------------------------------

SMALL = {**SELF_PLAY_SMALL, "iterations": 2}


def _write(tmp_path: Path, **raw) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = {
        "output_dir": str(tmp_path / "run"),
        "save_every": 1,
        "log_every": 1,
        "tensorboard": False,
        **raw,
    }
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _lines(tmp_path: Path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_tina_train_self_play_mode_writes_role_metrics_and_checkpoints(tmp_path):
    path = _write(tmp_path, mode="self_play", self_play=SMALL)
    assert main(["train", "--train-config", str(path), "--no-progress"]) == 0
    lines = _lines(tmp_path)
    assert {(x["mode"], x["role"]) for x in lines} == {
        ("self_play", "propose"),
        ("self_play", "solve"),
    }
    assert [x["iteration"] for x in lines if x["role"] == "solve"] == [1, 2]
    assert (tmp_path / "run" / "checkpoint-2" / "introspection.safetensors").is_file()
    state = torch.load(tmp_path / "run" / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and len(state["buffer"]) >= 3


def test_tina_train_hybrid_mode_interleaves_supervised_steps_and_self_play(tmp_path):
    data = tmp_path / "train.jsonl"
    write_contract_jsonl(data, generate_records("code_deduction", 8, seed=11, difficulties=[1]))
    path = _write(
        tmp_path,
        mode="hybrid",
        train_data=str(data),
        steps=2,
        batch_size=4,
        save_every=2,
        self_play={**SMALL, "iterations": 1},
        hybrid_schedule={"supervised_steps": 1, "self_play_iters": 1},
    )
    assert main(["train", "--train-config", str(path), "--no-progress"]) == 0
    lines = _lines(tmp_path)
    kinds = [(x["mode"], x.get("role")) for x in lines]
    assert kinds == [
        ("self_play", "propose"),
        ("self_play", "solve"),
        ("supervised", None),
        ("self_play", "propose"),
        ("self_play", "solve"),
        ("supervised", None),
    ]
    assert (tmp_path / "run" / "checkpoint-2" / "introspection.safetensors").is_file()


def test_train_config_errors_name_mode_and_self_play_keys(tmp_path):
    path = _write(
        tmp_path,
        mode="dreaming",
        self_play={"bogus": 1, "num_mc_rollouts": 0},
        hybrid_schedule={"supervised_steps": 0, "every": 3},
    )
    with pytest.raises(TrainConfigError) as err:
        load_train_config(path)
    text = str(err.value)
    for needle in (
        "mode: expected one of",
        "self_play.bogus: unknown key",
        "self_play.num_mc_rollouts",
        "hybrid_schedule.supervised_steps",
        "hybrid_schedule.every: unknown key",
    ):
        assert needle in text, needle


def test_a_resumed_self_play_run_ends_where_a_straight_one_does(tmp_path):
    from safetensors.torch import load_file

    from tina.training import run

    straight = _write(tmp_path / "a", mode="self_play", self_play=SMALL)
    run(load_train_config(straight), progress=False)
    first = _write(tmp_path / "b", mode="self_play", self_play={**SMALL, "iterations": 1})
    run(load_train_config(first), progress=False)
    second = _write(tmp_path / "b", mode="self_play", self_play=SMALL)
    run(load_train_config(second), resume=True, progress=False)
    a = load_file(tmp_path / "a" / "run" / "checkpoint-2" / "introspection.safetensors")
    b = load_file(tmp_path / "b" / "run" / "checkpoint-2" / "introspection.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(
        not torch.equal(
            a[k],
            load_file(tmp_path / "b" / "run" / "checkpoint-1" / "introspection.safetensors")[k],
        )
        for k in a
    )
