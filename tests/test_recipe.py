"""The think-less recipe end to end on the embedded model, at a toy size: every stage writes
what the next reads, a run started at a later stage gives what the full run gave, and a
missing stage output is named."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tina.cli import main
from tina.core.calibration import load_calibration
from tina.data.contract import write_contract_jsonl
from tina.recipe import STAGES, RecipeConfig, RecipeResumeError, build_splits, run_recipe

TOY = {
    "seed": 3,
    "suite": {"add": [2], "sub": [2]},
    "n_train": 6,
    "n_search": 3,
    "n_dev": 3,
    "n_test": 3,
    "free_budget": 64,
    "phase_a": {
        "steps": 2,
        "batch_size": 4,
        "save_every": 2,
        "log_every": 1,
        "introspection": {"heads": {"taps": [1.0], "b_max": 64, "exit_head": True}},
        "phases": [{"name": "A", "until_step": 10**9, "train": ["heads"]}],
    },
    "phase_c": {
        "steps": 2,
        "batch_size": 4,
        "save_every": 2,
        "log_every": 1,
        "phases": [
            {
                "name": "C",
                "until_step": 10**9,
                "train": ["heads"],
                "loss_weights": {"budget_loss": 4.0, "exit_bce": 1.0},
            }
        ],
    },
    "search": {"grid": [0, 16, 32]},
    "policy": {"iterations": 1, "batch_size": 4, "samples_per_item": 2},
    "sweep_budgets": [0, 16],
    "batch_size": 8,
    "exit_thresholds": [0.5],
}
RUN_ONLY = ("timings_s", "total_s", "started_at", "plots")  # how the run went, not what it found


def _toy(tmp_path) -> RecipeConfig:
    return RecipeConfig(output_dir=str(tmp_path / "run"), **TOY)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One whole toy run: its config, summary and the calibration file it wrote."""
    config = _toy(tmp_path_factory.mktemp("recipe"))
    summary = run_recipe(config, log=lambda line: None)
    calibration = Path(config.output_dir) / "final" / "metacog_calibration.json"
    return config, summary, json.loads(calibration.read_text())


def test_the_full_run_writes_every_stage_and_the_result(full_run):
    config, summary, calibration = full_run
    run = Path(config.output_dir)
    for name in ("test", "dev", "search", "train", "onpolicy"):
        assert (run / f"{name}.jsonl").is_file()
    found = json.loads((run / "minimal_budgets.json").read_text())
    assert len(found) == 2 * TOY["n_search"] and {"free_correct", "exits"} <= set(found[0])
    assert (run / "final" / "introspection_config.json").is_file()
    tried = calibration["fitted_on"]["exit_check"]
    assert [r["threshold"] for r in tried] == [None, 0.5]
    # on this toy dev set both candidates earn the same reward: a tie goes to the higher one
    assert tried[0]["reward"] == pytest.approx(tried[1]["reward"])
    assert calibration["exit_threshold"] == 0.5
    assert summary["n"] == 2 * TOY["n_test"] and summary["dev"]["n"] == 2 * TOY["n_dev"]
    assert list(summary["timings_s"]) == list(STAGES)
    assert (run / "artifacts" / "budget_result.md").read_text().startswith("| run |")


def _own_copy(full_run, tmp_path) -> RecipeConfig:
    """The full run's config on a copy of its output directory: a test that runs stages again
    changes its own copy only, so the tests do not depend on their order."""
    config = full_run[0]
    shutil.copytree(config.output_dir, tmp_path / "run")
    return dataclasses.replace(config, output_dir=str(tmp_path / "run"))


def test_a_run_from_the_calibration_gives_what_the_full_run_gave(full_run, tmp_path):
    _, summary, calibration = full_run
    config = _own_copy(full_run, tmp_path)
    resumed = run_recipe(config, log=lambda line: None, start="calibration")
    assert list(resumed["timings_s"]) == ["calibration", "evaluation"]
    assert resumed["started_at"] == "calibration"
    assert {k: v for k, v in resumed.items() if k not in RUN_ONLY} == {
        k: v for k, v in summary.items() if k not in RUN_ONLY
    }
    again = load_calibration(Path(config.output_dir) / "final" / "metacog_calibration.json")
    assert again.to_dict() == calibration


def test_a_run_from_the_search_retrains_phase_c_afresh(full_run, tmp_path):
    """Phase C's old checkpoints were trained on the old search's records: a run that redoes
    the search empties phase_c/ first (a run started at phase_c would resume from them)."""
    _, summary, _ = full_run
    config = _own_copy(full_run, tmp_path)
    stale = Path(config.output_dir) / "phase_c" / "checkpoint-999"
    stale.mkdir()
    (stale / "trainer_state.json").write_text("{}")
    resumed = run_recipe(config, log=lambda line: None, start="search")
    assert not stale.exists()
    assert list(resumed["timings_s"]) == list(STAGES[2:])
    assert {k: v for k, v in resumed.items() if k not in RUN_ONLY} == {
        k: v for k, v in summary.items() if k not in RUN_ONLY
    }


def test_a_missing_stage_output_is_named(tmp_path):
    config = _toy(tmp_path)
    with pytest.raises(RecipeResumeError, match=r"test\.jsonl: not there; the stage 'data'"):
        run_recipe(config, log=lambda line: None, start="search")
    run = tmp_path / "run"
    for name, records in build_splits(config).items():
        write_contract_jsonl(run / f"{name}.jsonl", records)
    with pytest.raises(RecipeResumeError, match=r"phase_a: not there; the stage 'phase_a'"):
        run_recipe(config, log=lambda line: None, start="search")
    with pytest.raises(
        RecipeResumeError, match=r"introspection_config\.json: not there; .*'policy'"
    ):
        run_recipe(config, log=lambda line: None, start="evaluation")
    with pytest.raises(ValueError, match="unknown stage 'phase_b'"):
        run_recipe(config, log=lambda line: None, start="phase_b")


def test_cli_names_a_bad_stage_and_a_missing_file(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(f"output_dir: {tmp_path / 'run'}\n")
    assert main(["recipe", "--config", str(path), "--from", "phase_b"]) == 2
    assert "--from: unknown stage 'phase_b'; one of data, phase_a" in capsys.readouterr().err
    assert main(["recipe", "--config", str(path), "--from", "evaluation"]) == 2
    assert "test.jsonl: not there; the stage 'data' writes it" in capsys.readouterr().err
