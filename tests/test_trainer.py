"""The phased trainer: config errors up front, what trains and what stays frozen, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tina.cli import main
from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.train.checkpoints import latest_checkpoint
from tina.train.config import TrainConfigError, load_train_config
from tina.train.trainer import train


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    records = []
    for task in ("add", "sub", "code_deduction"):
        records += generate_records(task, 16, seed=11, difficulties=[1, 2, 3])
    for i, record in enumerate(records):
        record["correct"] = i % 3 != 0  # confidence targets, so the confidence head trains too
    write_contract_jsonl(path, records)
    return path


def _config(tmp_path: Path, data: Path, **extra) -> Path:
    raw = {
        "train_data": str(data),
        "output_dir": str(tmp_path / "run"),
        "steps": 6,
        "batch_size": 8,
        "save_every": 3,
        "log_every": 1,
        "warmup_steps": 2,
        "introspection": {"heads": {"taps": [0.5, 1.0], "b_max": 128}},
        "phases": [
            {"name": "A", "until_step": 4, "train": ["heads", "adapters"]},
            {
                "name": "B",
                "until_step": 6,
                "train": ["heads", "adapters"],
                "loss_weights": {"think_ce": 0.5},
            },
        ],
        **extra,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_bad_config_reports_every_problem_before_training(tmp_path, data_file):
    path = _config(
        tmp_path,
        data_file,
        stepz=3,
        lr={"heads": -1, "brain": 0.1},
        loss_weights={"answer_cee": 1.0},
        phases=[{"name": "A", "until_step": 0, "train": ["everything"]}],
    )
    with pytest.raises(TrainConfigError) as info:
        load_train_config(path)
    message = str(info.value)
    for expected in (
        "stepz: unknown key",
        "lr.heads",
        "lr.brain: unknown group",
        "loss_weights.answer_cee: unknown loss",
        "phases[0].until_step",
        "phases[0].train: unknown group 'everything'",
    ):
        assert expected in message
    assert not (tmp_path / "run").exists()
    assert main(["train", "--train-config", str(path)]) == 2


def test_trainable_parameters_change_and_frozen_ones_do_not(tmp_path, data_file):
    from tina.core.models import load_model

    config = load_train_config(_config(tmp_path, data_file))
    base_before = {k: v.clone() for k, v in load_model()[0].state_dict().items()}
    train(config, progress=False)
    ckpt = latest_checkpoint(Path(config.output_dir))
    assert ckpt is not None and ckpt.name == "checkpoint-6"
    trained = load_file(str(ckpt / "introspection.safetensors"))
    from tina.core.introspection import IntrospectionConfig, attach_introspection

    torch.manual_seed(config.seed)
    fresh_model = load_model()[0]
    initial = attach_introspection(
        fresh_model, IntrospectionConfig.from_dict(config.introspection)
    ).state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    # Every head and adapter tensor moved (extension heads are off, so none is idle).
    assert changed == set(trained)
    # The base model on disk and in a fresh load is untouched: training never writes it.
    base_after = load_model()[0].state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    lines = [
        json.loads(line)
        for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert [r["phase"] for r in lines] == ["A"] * 4 + ["B"] * 2
    assert "think_ce" not in lines[0] and "think_ce" in lines[-1]
    for key in (
        "answer_ce",
        "plan_ce",
        "budget_loss",
        "plan_accuracy",
        "budget_error",
        "gate_activity",
        "gate_coverage",
        "think_tokens_used",
        "tokens_per_s",
        "total",
    ):
        assert key in lines[-1]


def test_resume_gives_the_same_result_as_a_straight_run(tmp_path, data_file):
    straight = load_train_config(_config(tmp_path / "a", data_file))
    train(straight, progress=False)
    interrupted = load_train_config(_config(tmp_path / "b", data_file, steps=3))
    train(
        interrupted, progress=False
    )  # "killed" after step 3: its checkpoint-3 is all that is left
    resumed = load_train_config(_config(tmp_path / "b", data_file))
    train(resumed, resume=True, progress=False)
    a = load_file(str(Path(straight.output_dir) / "checkpoint-6" / "introspection.safetensors"))
    b = load_file(str(Path(resumed.output_dir) / "checkpoint-6" / "introspection.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_cycle_smoke_from_the_cli(tmp_path, data_file, capsys):
    code = main(
        [
            "train",
            "--train-config",
            str(_config(tmp_path, data_file)),
            "--one-cycle",
            "--data",
            str(data_file),
            "--steps",
            "3",
            "--output-dir",
            str(tmp_path / "smoke"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert (tmp_path / "smoke" / "checkpoint-3" / "introspection.safetensors").is_file()
    assert "done:" in capsys.readouterr().out


def test_exit_bce_reads_the_last_think_token_against_correct_after(tiny_fresh):
    from torch.nn import functional as F

    from tina.core.introspection import attach_introspection
    from tina.core.metacog_heads import record_taps
    from tina.train.data import collate, example_from_record
    from tina.train.trainer import training_step_losses

    model, tokenizer = tiny_fresh
    intro = attach_introspection(model)
    records = generate_records("add", 3, seed=5, difficulties=[2])
    records[0]["correct_after"] = True
    records[1]["correct_after"] = False
    prompt = records[2]["text"].split("<think>")[0]
    records[2]["text"] = prompt + "<think></think><answer>1</answer>"
    records[2]["correct_after"] = False  # no think: nothing to read, the row is ignored
    examples = [example_from_record(tokenizer, r) for r in records]
    batch = collate(examples, tokenizer.pad_token_id)
    _, parts, _ = training_step_losses(model, intro, batch, {"exit_bce": 1.0})
    with record_taps() as taps:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = []
    for i, ex in enumerate(examples[:2]):
        mask = torch.zeros_like(batch["prompt_mask"][i : i + 1])
        mask[0, ex.prompt_length + sum(ex.think_mask) - 1] = 1  # the last think token
        assert tokenizer.decode(batch["input_ids"][i][mask[0] == 1]) == ";"  # a step end
        row = {k: v[i : i + 1] for k, v in taps.items()}
        logits.append(intro.heads(row, mask).confidence_logit)
    expected = F.binary_cross_entropy_with_logits(torch.cat(logits), torch.tensor([1.0, 0.0]))
    assert parts["exit_bce"] == pytest.approx(float(expected.detach()), rel=1e-4)
    intro.detach()
