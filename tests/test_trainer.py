"""The phased trainer: config errors up front, what trains and what stays frozen, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SELF_PLAY_SMALL
from safetensors.torch import load_file

from tina.cli import main
from tina.core.checks import ConfigError
from tina.core.introspection import INTROSPECTION_PREFIX
from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.eval.metrics import spearman
from tina.recipe import load_recipe_config
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


class _WatchBase:
    """An `interleave` that keeps the trainer's own model and a copy of its base weights as they
    were before the first step."""

    def __init__(self, model, tokenizer, intro) -> None:
        self.model = model
        self.before = {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if not n.startswith(INTROSPECTION_PREFIX)
        }
        self.steps: list[int] = []

    def after_step(self, done, write) -> None:
        self.steps.append(done)


def test_trainable_parameters_change_and_frozen_ones_do_not(tmp_path, data_file):
    from tina.core.models import load_model

    config = load_train_config(_config(tmp_path, data_file))
    watched: list[_WatchBase] = []

    def watch(model, tokenizer, intro) -> _WatchBase:
        watched.append(_WatchBase(model, tokenizer, intro))
        return watched[-1]

    train(config, progress=False, interleave=watch)
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
    # The base the trainer trained stayed frozen: in memory, its weights are those it began with.
    (watch,) = watched
    assert watch.steps == [1, 2, 3, 4, 5, 6] and len(watch.before) > 0
    after = dict(watch.model.named_parameters())
    assert all(torch.equal(after[n], before) for n, before in watch.before.items())
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
    from tina.train.step import training_step_losses

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


@pytest.mark.parametrize(
    ("kind", "key", "message"),
    [
        pytest.param("train", "seed", "expected an integer, got True", id="train-seed"),
        pytest.param("train", "grad_clip", "expected a number, got True", id="train-grad_clip"),
        pytest.param("train", "eval_every", "expected an integer, got True", id="train-eval_every"),
        pytest.param("recipe", "n_train", "expected an integer, got True", id="recipe-n_train"),
    ],
)
def test_true_is_not_a_number_in_any_config(tmp_path, data_file, capsys, kind, key, message):
    if kind == "train":
        path = _config(tmp_path, data_file, **{key: True})
        load, argv = load_train_config, ["train", "--train-config", str(path)]
    else:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({key: True, "output_dir": str(tmp_path / "run")}))
        load, argv = load_recipe_config, ["recipe", "--config", str(path)]
    with pytest.raises(ConfigError) as info:
        load(path)
    assert [(p.file, p.field, p.message) for p in info.value.problems] == [
        (str(path), key, message)
    ]
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {path}: {key}: {message}\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "content",
    [pytest.param("", id="empty-file"), pytest.param("\n\n", id="blank-lines")],
)
def test_one_cycle_on_a_file_without_records_is_one_line_and_creates_nothing(
    tmp_path, data_file, capsys, content
):
    empty = tmp_path / "EMPTY.jsonl"
    empty.write_text(content)
    output = tmp_path / "smoke"
    argv = ["train", "--train-config", str(_config(tmp_path, data_file)), "--one-cycle"]
    code = main([*argv, "--data", str(empty), "--output-dir", str(output), "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {empty}: no records to train on\n"
    assert not output.exists()


@pytest.mark.parametrize(
    ("written", "resumed"),
    [
        pytest.param("supervised", "self_play", id="supervised-resumed-as-self_play"),
        pytest.param("self_play", "supervised", id="self_play-resumed-as-supervised"),
    ],
)
def test_resuming_in_another_mode_names_both_modes_and_the_checkpoint(
    tmp_path, data_file, capsys, written, resumed
):
    def write_config(mode: str) -> Path:
        return _config(
            tmp_path, data_file, mode=mode, steps=1, save_every=1, self_play=SELF_PLAY_SMALL
        )

    assert main(["train", "--train-config", str(write_config(written)), "--no-progress"]) == 0
    output = tmp_path / "run"
    checkpoint = output / "checkpoint-1"
    assert (checkpoint / "trainer_state.pt").is_file()
    before = sorted(p.name for p in output.iterdir())
    metrics = (output / "metrics.jsonl").read_text()
    capsys.readouterr()
    argv = ["train", "--train-config", str(write_config(resumed)), "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {checkpoint} was written by a {written!r} run; this run's mode is {resumed!r}: "
        "resume it in its own mode, or start a new output_dir\n"
    )
    assert sorted(p.name for p in output.iterdir()) == before  # nothing written
    assert (output / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param([1, 2, 3, 4], [10, 20, 30, 40], 1.0, id="same-order"),
        pytest.param([1, 2, 3, 4], [4, 3, 2, 1], -1.0, id="reversed"),
        pytest.param([1, 2, 3], [5, 9, 7], 0.5, id="one-swap"),
        pytest.param([1, 1, 2], [1, 2, 3], 0.8660254037844387, id="ties-average-ranks"),
    ],
)
def test_spearman_is_the_correlation_of_average_ranks(a, b, expected):
    assert spearman(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("a", "b"),
    [pytest.param([3.0], [1.0], id="one-pair"), pytest.param([1, 2, 3], [7, 7, 7], id="constant")],
)
def test_spearman_without_a_ranking_is_nan(a, b):
    assert math.isnan(spearman(a, b))
