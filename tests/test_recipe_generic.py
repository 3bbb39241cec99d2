"""The think-less recipe on any model and any question file: a tiny random Qwen2 + a LoRA and a
12-question file end to end, the embedded model on a small question file, and a bad question
file named before any model loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import CHATML

from tina.cli import main
from tina.core.calibration import CALIBRATION_FILE
from tina.core.introspection import CONFIG_NAME, load_introspective_model
from tina.data.tasks import generate_records
from tina.recipe import STAGES, RecipeConfig, question_splits, run_recipe
from tina.serve.runtime import add_model_arguments, load_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "seed": 1,
    "free_budget": 24,
    "phase_a": {
        "steps": 2,
        "batch_size": 4,
        "save_every": 2,
        "log_every": 1,
        "introspection": {"adapter_layers": [], "heads": {"taps": [1.0], "b_max": 32}},
        "phases": [{"name": "A", "until_step": 10**9, "train": ["heads"]}],
    },
    "phase_c": {"steps": 1, "batch_size": 4, "save_every": 1, "log_every": 1},
    "search": {"grid": [0, 8, 16]},
    "policy": {"iterations": 1, "batch_size": 2, "samples_per_item": 2},
    "sweep_budgets": [0, 8],
    "batch_size": 8,
    "exit_thresholds": [0.5],
}


def question_file(path: Path, n: int, seed: int) -> Path:
    """n task-suite questions as a user would write them (question, answer, split), no traces."""
    records = generate_records("add", n, seed=seed, difficulties=[1])
    splits = ["train", "train", "dev", "test"]
    lines = [
        json.dumps(
            {
                "question": r["meta"]["question"],
                "answer": r["meta"]["answer"],
                "split": splits[i % 4],
                "task": "add",
            }
        )
        for i, r in enumerate(records)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_root(tmp_path, tiny_fresh):
    """models/tiny (a random Qwen2 with a ChatML template) and models/Tina/checkpoint-1 (a LoRA)."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny_fresh
    tokenizer.chat_template = CHATML
    root = tmp_path / "models"
    model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    lora.save_pretrained(root / "Tina" / "checkpoint-1")
    return root


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_any_model_and_question_file_end_to_end(tmp_path, tiny_root, capsys):
    questions = question_file(tmp_path / "questions.jsonl", 12, seed=5)
    model = {
        "models_root": str(tiny_root),
        "base": "tiny",
        "adapter": "Tina",
        "subfolder": "checkpoint-1",
    }
    config = RecipeConfig(
        output_dir=str(tmp_path / "run"),
        model=model,
        questions=str(questions),
        n_train=0,
        n_search=0,
        n_dev=0,
        n_test=0,
        **TINY,
    )
    splits = question_splits(config)
    assert {k: len(v) for k, v in splits.items()} == {"test": 3, "dev": 3, "search": 3, "train": 3}
    summary = run_recipe(config, log=lambda line: None, progress=True)
    run = Path(config.output_dir)
    assert list(summary["timings_s"]) == list(STAGES)
    shown = capsys.readouterr().out  # a bar per stage: the trainer's, then the engine's
    for stage in ("search", "calibration", "evaluation"):
        assert stage in shown
    assert "items/s" in shown and f"{3 * (2 + len(TINY['sweep_budgets'])) + 3}/" in shown
    assert summary["n"] == 3 and (run / "artifacts" / "budget_result.md").is_file()
    # phase A had no traces to learn from: it sampled the model's own thinks
    phase_a = (run / "phase_a_config.yaml").read_text()
    assert "on_policy" in phase_a and "parts" not in phase_a
    assert "parts:" in (run / "phase_c_config.yaml").read_text()
    # the result sits beside the LoRA, where `tina chat --adapter` finds it
    adapter = tiny_root / "Tina" / "checkpoint-1"
    assert (adapter / CONFIG_NAME).is_file() and (adapter / CALIBRATION_FILE).is_file()
    assert (adapter / "adapter_config.json").is_file()  # the LoRA is still there
    _, _, intro = load_introspective_model(tiny_root, "tiny", "Tina", "checkpoint-1", "cpu")
    assert intro is not None
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    flags = ["--models-root", str(tiny_root), "--base", "tiny", "--adapter", "Tina"]
    engine, _ = load_engine(parser.parse_args([*flags, "--subfolder", "checkpoint-1"]))
    assert engine.introspection is not None and engine.calibration is not None
    expected = json.loads((adapter / CALIBRATION_FILE).read_text())["confidence_temperature"]
    assert engine.calibration.confidence_temperature == expected


def test_the_embedded_model_on_a_question_file(tmp_path):
    questions = question_file(tmp_path / "questions.jsonl", 16, seed=9)
    config = RecipeConfig(
        output_dir=str(tmp_path / "run"),
        questions=str(questions),
        out=str(tmp_path / "parts"),
        n_train=0,
        n_search=0,
        n_dev=0,
        n_test=0,
        **TINY,
    )
    summary = run_recipe(config, log=lambda line: None)
    assert summary["n"] == 4
    assert 0.0 <= summary["reference_exact_match"] <= 1.0
    assert (tmp_path / "parts" / CONFIG_NAME).is_file()


def test_a_bad_question_file_is_named_before_a_model_loads(tmp_path, capsys):
    path = tmp_path / "questions.jsonl"
    path.write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": "2 + 2?"}\n')
    code = main(
        [
            "recipe",
            "--questions",
            str(path),
            "--base",
            "no-such-model",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert f"{path}:2: answer:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_signal_in_a_phase_ends_the_run_there(tmp_path, monkeypatch):
    """SIGTERM during phase A: the trainer saves and returns; the recipe must not go on to
    search with a half-trained phase A."""
    import tina.recipe as recipe

    monkeypatch.setattr(recipe, "train", lambda *a, **k: {"step": 1, "stopped": "SIGTERM"})
    questions = question_file(tmp_path / "questions.jsonl", 8, seed=2)
    config = RecipeConfig(output_dir=str(tmp_path / "run"), questions=str(questions), **TINY)
    with pytest.raises(recipe.RecipeStopped, match=r"phase_a stopped by SIGTERM.*--from phase_a"):
        run_recipe(config, log=lambda line: None)
    assert not (tmp_path / "run" / "minimal_budgets.json").exists()
