"""The late training phases: on-policy thinking (C), partial unfreeze, pruning (D), a clean stop
on SIGTERM, TensorBoard, and the optional loss parts wired into a step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CHATML
from safetensors.torch import load_file

from tina.core.introspection import (
    IntrospectionConfig,
    attach_introspection,
    load_introspection,
    save_introspection,
)
from tina.core.models import load_model, render_prompt
from tina.core.side_adapters import decoder_layers, think_mask_context
from tina.core.tags import reasoning_structure_error
from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.data.tasks.scoring import score_record
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.eval.sweep import item_from_record
from tina.train.config import TrainConfigError, load_train_config
from tina.train.data import collate, example_from_record
from tina.train.on_policy import OnPolicyConfig, record_prompt, sample_records
from tina.train.pruning import prune_dead_adapters
from tina.train.trainer import train


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for task in ("add", "sub"):
        out += generate_records(task, 8, seed=5, difficulties=[1, 2])
    return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, records) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_contract_jsonl(path, records)
    return path


def _write(tmp_path: Path, data: Path, **extra) -> Path:
    raw = {
        "train_data": str(data),
        "output_dir": str(tmp_path / "run"),
        "steps": 4,
        "batch_size": 8,
        "save_every": 2,
        "log_every": 1,
        "warmup_steps": 1,
        "introspection": {"heads": {"taps": [0.5, 1.0], "b_max": 128}},
        **extra,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _lines(output: Path) -> list[dict]:
    return [json.loads(x) for x in (output / "metrics.jsonl").read_text().splitlines()]


def test_sample_records_scores_the_models_own_thinks(embedded, records):
    model, tokenizer = embedded
    engine = Engine(model, tokenizer, None, EngineConfig(budget_cap=96, max_answer_tokens=16))
    config = OnPolicyConfig(temperature=0.8, budget=96)
    first, stats = sample_records(engine, records[:6], config, seed=3)
    again, _ = sample_records(engine, records[:6], config, seed=3)
    assert first == again  # seeded per row: a resumed run draws the same samples
    assert 0.0 <= stats["on_policy_correct"] <= 1.0 and stats["on_policy_invalid"] == 0.0
    for source, new in zip(records[:6], first, strict=True):
        assert new["text"].startswith(record_prompt(source))
        assert reasoning_structure_error(new["text"]) is None
        assert new["correct"] == bool(score_record(new["sampled_answer"], source))
        assert new["lm_weight"] == (1.0 if new["correct"] else 0.0)
        assert ("think_tokens_used" in new) == new["correct"]
        example_from_record(tokenizer, new)  # trainable as is
    # The gold answer closes every sampled think, whatever the model answered.
    assert all(
        n["text"].endswith(f"<answer>{s['meta']['answer']}</answer>")
        for s, n in zip(records, first, strict=False)
    )


def test_on_policy_and_eval_prompts_go_through_the_models_chat_template(
    tiny_fresh, one_torch_thread
):
    model, tokenizer = tiny_fresh
    tokenizer.chat_template = CHATML
    engine = Engine(model, tokenizer, None, EngineConfig(budget_cap=4, max_answer_tokens=2))
    sent = []
    generate = engine.generate
    engine.generate = lambda requests, **kw: sent.extend(requests) or generate(requests, **kw)
    records = generate_records("add", 2, seed=3, difficulties=[2])
    out, _ = sample_records(engine, records, OnPolicyConfig(temperature=0.0, budget=4), seed=0)
    questions = [r["meta"]["question"] for r in records]
    assert [(q.prompt, q.rendered) for q in sent] == [(q, False) for q in questions]
    assert render_prompt(tokenizer, questions[0]).startswith("<|im_start|>system\n")
    assert all(n["text"].startswith(f"{q}\n<think>") for q, n in zip(questions, out, strict=True))
    bare = {k: v for k, v in records[0].items() if k != "meta"}  # a record with no meta
    item = item_from_record(bare, ("x.jsonl", 1))
    assert (item.prompt, item.rendered) == (questions[0], False)


def test_phase_c_samples_on_policy_and_unfreezes_only_the_top_layer(tmp_path, data_file):
    path = _write(
        tmp_path,
        data_file,
        loss_weights={
            "answer_ce": 1.0,
            "plan_ce": 1.0,
            "budget_loss": 1.0,
            "confidence_bce": 0.5,
            "over_budget_penalty": 0.1,
            "quiet_star_consistency": 0.1,
        },
        phases=[
            {"name": "A", "until_step": 1, "train": ["heads", "adapters"]},
            {
                "name": "C",
                "until_step": 4,
                "train": ["heads", "adapters", "base_top"],
                "unfreeze_top_k": 1,
                "on_policy": {"temperature": 0.7, "budget_cap": 64, "max_answer_tokens": 12},
                "loss_weights": {"think_ce": 0.5},
            },
        ],
        lr={"heads": 0.003, "adapters": 0.001, "base_top": 0.001},
    )
    config = load_train_config(path)
    train(config, progress=False)
    lines = _lines(Path(config.output_dir))
    assert [r["phase"] for r in lines] == ["A", "C", "C", "C"]
    assert "on_policy_correct" not in lines[0]
    for r in lines[1:]:
        assert 0.0 <= r["on_policy_correct"] <= 1.0 and r["on_policy_think_tokens"] > 0
    for key in ("over_budget_penalty", "quiet_star_consistency", "think_ce"):
        assert key in lines[-1]

    ckpt = Path(config.output_dir) / "checkpoint-4"
    base = load_file(str(ckpt / "base_top.safetensors"))
    original, _ = load_model()
    n_layers = len(decoder_layers(original))
    top = f"model.layers.{n_layers - 1}."
    assert base and all(k.startswith(top) for k in base)
    state = original.state_dict()
    assert any(not torch.equal(base[k], state[k]) for k in base)  # the top layer trained
    # Loading the checkpoint onto a fresh base changes exactly the top layer.
    fresh, _ = load_model()
    load_introspection(fresh, ckpt)
    after = {k: v for k, v in fresh.state_dict().items() if not k.startswith("tina_")}
    for k, v in after.items():
        assert torch.equal(v, base[k] if k in base else state[k]), k


def test_pruning_removes_exactly_the_dead_adapters_and_survives_a_reload(
    tmp_path, embedded, records
):
    model, tokenizer = load_model()
    torch.manual_seed(0)
    intro = attach_introspection(model, IntrospectionConfig(adapter_layers=[0, 1, 2, 3]))
    with torch.no_grad():
        for key, adapter in intro.adapters.items():
            adapter.global_gate.fill_(0.0 if key == "1" else 1.0)
    examples = [example_from_record(tokenizer, r) for r in records]
    pruned, scores = prune_dead_adapters(model, intro, examples, tokenizer.pad_token_id, 1e-6)
    assert pruned == ["1"] and scores["1"] == 0.0
    assert all(scores[k] > 1e-6 for k in ("0", "2", "3"))
    assert sorted(intro.adapters) == ["0", "2", "3"] and intro.config.adapter_layers == [0, 2, 3]
    batch = collate(examples[:4], tokenizer.pad_token_id)
    model.eval()

    def forward(m):
        with think_mask_context(batch["think_mask"]):
            return m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    expected = forward(model)
    save_introspection(intro, tmp_path)
    reloaded, _ = load_model()
    again = load_introspection(reloaded, tmp_path)
    reloaded.eval()
    assert sorted(again.adapters) == ["0", "2", "3"]
    assert torch.allclose(forward(reloaded), expected, atol=1e-6)


def test_phase_d_prunes_at_its_end_and_tensorboard_gets_the_scalars(tmp_path, data_file):
    path = _write(
        tmp_path,
        data_file,
        steps=3,
        save_every=3,
        phases=[
            {"name": "A", "until_step": 2, "train": ["heads", "adapters"]},
            {"name": "D", "until_step": 3, "train": ["heads"], "prune_gates_below": 10.0},
        ],
    )
    config = load_train_config(path)
    train(config, progress=False)
    last = _lines(Path(config.output_dir))[-1]
    assert last["phase"] == "D" and last["pruned_adapters"] == ["0", "1", "2", "3"]
    ckpt = Path(config.output_dir) / "checkpoint-3"
    assert json.loads((ckpt / "introspection_config.json").read_text())["adapter_layers"] == []
    intro = load_introspection(load_model()[0], ckpt)
    assert len(intro.adapters) == 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(config.output_dir) / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/answer_ce", "train/plan_accuracy", "train/tokens_per_s"} <= set(tags)
    assert [e.step for e in events.Scalars("train/answer_ce")] == [1, 2, 3]


def test_bad_phase_options_are_named(tmp_path, data_file):
    path = _write(
        tmp_path,
        data_file,
        phases=[
            {
                "name": "C",
                "until_step": 4,
                "unfreeze_top_k": -1,
                "on_policy": {"tempreature": 0.7, "top_p": 2},
                "prune_gates_below": "x",
                "calibrate": True,
            }
        ],
    )
    with pytest.raises(TrainConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    for expected in (
        "phases[0].on_policy.tempreature: unknown key",
        "phases[0].on_policy.top_p",
        "phases[0].unfreeze_top_k",
        "phases[0].prune_gates_below",
        "phases[0].calibrate: needs eval_data",
    ):
        assert expected in message


def test_sigterm_ends_the_run_cleanly_with_a_final_checkpoint(tmp_path, data_file):
    path = _write(tmp_path, data_file, steps=10_000, save_every=10_000, log_every=1)
    output = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tina", "train", "--train-config", str(path), "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    metrics = output / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    last = _lines(output)[-1]
    assert last["stopped"] == "SIGTERM"
    step = last["step"]
    assert 2 <= step < 10_000
    assert (output / f"checkpoint-{step}" / "trainer_state.pt").is_file()
    state = torch.load(output / f"checkpoint-{step}" / "trainer_state.pt", weights_only=False)
    assert state["step"] == step
    assert not [p for p in output.iterdir() if p.name.startswith(".checkpoint")]  # no temp left


def test_two_processes_under_accelerate_launch(tmp_path, data_file):
    """The same command under `accelerate launch --num_processes 2` (CPU, gloo): each process
    takes half of every global batch, Accelerate's DDP averages the gradients (prepared again
    when phase B freezes the adapters), weights stay identical (the trainer checks), only the
    main process writes metrics and checkpoints, and the result is one process's on the same
    global batches: the heads to 1e-5, the adapters (own gate noise per process) to 1e-2."""
    phases = [
        {"name": "A", "until_step": 2, "train": ["heads", "adapters"]},
        {"name": "B", "until_step": 3, "train": ["heads"], "loss_weights": {"think_ce": 0.5}},
    ]
    settings = {"steps": 3, "save_every": 3, "tensorboard": False, "phases": phases}
    path = _write(tmp_path, data_file, batch_size=4, **settings)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--multi_gpu",  # the torchrun launcher; without CUDA the trainer runs it on CPU
            "-m",
            "tina",
            "train",
            "--train-config",
            str(path),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1 and "'processes': 2" in proc.stdout
    lines = _lines(tmp_path / "run")
    assert [r["step"] for r in lines] == [1, 2, 3]  # written once, by the main process
    assert [r["phase"] for r in lines] == ["A", "A", "B"]
    two = load_file(str(tmp_path / "run" / "checkpoint-3" / "introspection.safetensors"))
    one_process = load_train_config(_write(tmp_path / "one", data_file, batch_size=8, **settings))
    train(one_process, progress=False)
    one = load_file(
        str(Path(one_process.output_dir) / "checkpoint-3" / "introspection.safetensors")
    )
    assert one.keys() == two.keys()
    for part, tolerance in (("heads.", 1e-5), ("adapters.", 1e-2)):
        keys = [k for k in one if k.startswith(part)]
        assert keys and max(float((one[k] - two[k]).abs().max()) for k in keys) < tolerance, part


def test_phase_d_calibrates_on_eval_data_and_keeps_the_file_in_the_checkpoint(
    tmp_path, data_file, records
):
    eval_path = tmp_path / "eval.jsonl"
    write_contract_jsonl(eval_path, records[:6])
    path = _write(
        tmp_path,
        data_file,
        steps=2,
        save_every=2,
        eval_data=str(eval_path),
        introspection={"heads": {"taps": [0.5, 1.0], "b_max": 24}},
        phases=[{"name": "D", "until_step": 2, "train": ["heads"], "calibrate": True}],
    )
    config = load_train_config(path)
    train(config, progress=False)
    from tina.core.calibration import load_calibration

    output = Path(config.output_dir)
    calibration = load_calibration(output / "metacog_calibration.json")
    assert (output / "checkpoint-2" / "metacog_calibration.json").is_file()
    last = _lines(output)[-1]
    assert last["calibration_temperature"] == pytest.approx(calibration.confidence_temperature)
    assert "calibration_ece_before" in last and "calibration_ece_after" in last
