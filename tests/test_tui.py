"""The training TUI: its pure helpers (form → config, checks, metrics tail, ETA) and, headless at
80×24, a real tiny training launched, watched and stopped from the form."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.train.config import load_train_config
from tina.tui_state import (
    GENERAL,
    LineTail,
    config_from_form,
    eta_seconds,
    field_problem,
    form_from_config,
    parse_taps,
    read_metrics,
    status_lines,
    trainer_has_mode,
    validate_form,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_contract_jsonl(path, generate_records("add", 16, seed=3, difficulties=[1, 2]))
    return path


@pytest.fixture
def base_config(tmp_path, data_file) -> Path:
    """A tiny train config the form is prefilled from: batch 4, a metrics line every step."""
    raw = {
        "train_data": str(data_file),
        "output_dir": str(tmp_path / "prefilled"),
        "steps": 3,
        "batch_size": 4,
        "save_every": 100,
        "log_every": 1,
        "warmup_steps": 1,
        "tensorboard": False,
        "introspection": {"heads": {"taps": [0.5, 1.0], "b_max": 128}},
        "phases": [{"name": "A", "until_step": 10**6, "train": ["heads", "adapters"]}],
    }
    path = tmp_path / "train_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- pure helpers ------------------------------------------------------------------------------


def test_form_prefilled_from_the_shipped_config_builds_a_config_the_trainer_loads(tmp_path):
    base = yaml.safe_load((ROOT / "train_config.yaml").read_text())
    form = form_from_config(base)
    assert (form["steps"], form["save_every"], form["taps"]) == ("300", "100", "0.5, 1.0")
    assert form["per_layer"] is False and form["mode"] == "supervised"
    data = tmp_path / "d.jsonl"
    data.write_text("")
    form.update(train_data=str(data), steps="40", taps="1, -1", per_layer=True, output_dir="out")
    config = config_from_form(base, form)
    assert config["phases"] == base["phases"] and config["lr"] == base["lr"]  # kept from the YAML
    assert config["model"] == {}  # no base: the embedded model
    assert Path(config["output_dir"]).is_absolute() and config["train_data"] == str(data)
    assert config["introspection"]["heads"] == {
        "taps": [1, -1],
        "b_max": 256,
        "pooling": "mean",
        "per_layer": True,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_train_config(path)
    assert loaded.steps == 40 and loaded.output_dir == str((Path.cwd() / "out").resolve())
    assert validate_form(base, form) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5, 1.0", [0.5, 1.0]), ("3,-1", [3, -1]), (" 1.0 ,", [1.0]), ("1e-1", [0.1])],
    ids=["fractions", "indices", "trailing-comma", "exponent"],
)
def test_parse_taps(text, expected):
    assert parse_taps(text) == expected


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", "ten", "expected a whole number, got 'ten'"),
        ("save_every", "1.5", "expected a whole number"),
        ("taps", "0.5, 1.5", "fraction 1.5 outside (0, 1]"),
        ("taps", "half", "neither a fraction"),
        ("taps", " , ", "at least one tap"),
        ("train_data", "", "no training data given"),
        ("train_data", "nope.jsonl", "no such file: nope.jsonl"),
        ("base", "NoSuchModel", "no such directory"),
        ("output_dir", "", "an output directory is needed"),
    ],
    ids=[
        "steps-word",
        "save-every-float",
        "tap-fraction-too-big",
        "tap-word",
        "taps-empty",
        "data-empty",
        "data-missing",
        "base-missing",
        "output-empty",
    ],
)
def test_each_field_is_checked_on_its_own(field, value, message, base_config):
    form = form_from_config(yaml.safe_load(base_config.read_text()))
    assert field_problem(field, form) is None
    form[field] = value
    assert message in (field_problem(field, form) or "")


def test_adapter_needs_a_base_and_mode_needs_the_self_play_trainer(base_config):
    form = form_from_config(yaml.safe_load(base_config.read_text()))
    form["adapter"] = "Tina"
    assert field_problem("base", form) == "an adapter needs its base model"
    form["mode"] = "self_play"
    problem = field_problem("mode", form)
    assert (problem is None) == trainer_has_mode()


def test_mode_is_written_only_once_the_trainer_has_it(base_config, monkeypatch):
    import tina.tui_state as state

    base = yaml.safe_load(base_config.read_text())
    form = form_from_config(base)
    form["mode"] = "hybrid"
    monkeypatch.setattr(state, "trainer_has_mode", lambda: False)
    assert "mode" not in config_from_form(base, form) and field_problem("mode", form)
    monkeypatch.setattr(state, "trainer_has_mode", lambda: True)
    assert config_from_form(base, form)["mode"] == "hybrid"
    assert field_problem("mode", form) is None and state.mode_choices() == state.TRAIN_MODES


def test_whole_config_errors_come_from_the_trainer_and_land_on_their_fields(base_config):
    base = yaml.safe_load(base_config.read_text())
    form = form_from_config(base)
    form.update(steps="0", eval_every="-2")
    base["lr"] = {"brain": 0.1}  # not a field of the form: a general problem
    problems = validate_form(base, form)
    assert problems["steps"].startswith("steps: must be >= 1, got 0")
    assert problems["eval_every"].startswith("eval_every: must be >= 0, got -2")
    assert "lr.brain: unknown group" in problems[GENERAL]
    assert set(problems) == {"steps", "eval_every", GENERAL}


def test_line_tail_returns_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "total": 2.0}\n')
    tail = LineTail(path, from_end=True)  # a run reads only its own lines
    assert read_metrics(tail) == []
    with path.open("a") as handle:
        handle.write('{"step": 2, "total": 1.5}\n{"step": 3, "to')
    assert [r["step"] for r in read_metrics(tail)] == [2]
    with path.open("a") as handle:
        handle.write('tal": 1.0}\nnot json\n')
    assert read_metrics(tail) == [{"step": 3, "total": 1.0}]
    assert LineTail(tmp_path / "missing").read() == []
    path.write_text('{"step": 1}\n')  # rewritten shorter: read from the start again
    assert read_metrics(tail) == [{"step": 1}]


def test_eta_from_steps_per_second_and_status_lines():
    assert eta_seconds([(0.0, 1)], 100) is None
    assert eta_seconds([(0.0, 10), (5.0, 10)], 100) is None
    assert eta_seconds([(10.0, 10), (12.0, 20), (20.0, 60)], 100) == pytest.approx(8.0)
    record = {
        "step": 60,
        "phase": "A",
        "total": 1.25,
        "answer_ce": 1.0,
        "plan_ce": 0.25,
        "think_tokens_used": 12.5,
        "budget_error": 3.0,
        "plan_accuracy": 0.5,
        "tokens_per_s": 812.4,
    }
    lines = status_lines(record, 100, 8.0)
    assert lines[0] == "step 60/100  phase A  ETA 8s"
    text = "\n".join(lines)
    for part in ("loss 1.250", "answer_ce 1.000", "plan_ce 0.250", "think tokens 12.5"):
        assert part in text
    assert "budget error 3.0" in text and "plan accuracy 0.50" in text and "tokens/s 812" in text
    assert max(len(line) for line in lines) <= 36
    assert status_lines(record, 100, None, finished=True)[0] == "step 60/100  phase A"
    assert status_lines(None, 100, None) == ["waiting for the first metrics line…"]


def test_cli_has_tui_and_importing_it_loads_no_textual():
    code = (
        "import sys; from tina.cli import build_parser; build_parser(); "
        "assert 'textual' not in sys.modules and 'tina.tui' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-m", "tina", "tui", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--train-config" in out and "training run" in out


# --- the app, headless -------------------------------------------------------------------------


async def _wait_for(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.2)


def _status_text(app) -> str:
    from textual.widgets import Static

    return str(app.query_one("#status", Static).content)


@pytest.mark.anyio
async def test_invalid_input_shows_its_message_and_starts_nothing(base_config, tmp_path):
    from textual.widgets import Input, OptionList, Select, Static

    from tina.tui import TrainingApp

    app = TrainingApp(base_config, poll_s=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.problems == {}
        modes = app.query_one("#field-mode", Select).query_one(OptionList)
        disabled = [modes.get_option_at_index(i).disabled for i in range(modes.option_count)]
        assert disabled == [False, not trainer_has_mode(), not trainer_has_mode()]
        output = tmp_path / "never"
        app.query_one("#field-output_dir", Input).value = str(output)
        steps = app.query_one("#field-steps", Input)
        steps.value = ""
        await pilot.click("#field-steps")
        await pilot.press("1", "x")  # typed: checked as it is typed
        await pilot.pause()
        error = app.query_one("#error-steps", Static)
        assert str(error.content) == "expected a whole number, got '1x'"
        assert error.display and error.region.height > 0
        await pilot.press("backspace", "0")
        await pilot.pause()
        assert "steps" not in app.problems and not error.display
        steps.value = "0"  # a rule of the whole config: the trainer's own message
        await pilot.pause()
        assert str(error.content).startswith("steps: must be >= 1, got 0")
        await pilot.click("#run")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert app.current is None and not output.exists()
        assert "Not started" in _status_text(app)


@pytest.mark.anyio
async def test_run_watch_and_stop_a_real_training_keeps_its_checkpoint(base_config, tmp_path):
    from textual.widgets import Input, Log, Sparkline, Switch

    from tina.tui import TrainingApp

    app = TrainingApp(base_config, poll_s=0.2, stop_timeout_s=60)
    run_dir = tmp_path / "run"
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one("#field-steps", Input).value = "100000"
        app.query_one("#field-save_every", Input).value = "50000"
        app.query_one("#field-taps", Input).value = "1.0"
        app.query_one("#field-per_layer", Switch).value = True
        app.query_one("#field-output_dir", Input).value = str(run_dir)
        await pilot.pause()
        assert app.problems == {}
        await pilot.click("#run")
        run = app.current
        assert run is not None and run.running
        written = load_train_config(run_dir / "train_config.yaml")
        assert (written.steps, written.save_every, written.batch_size) == (100000, 50000, 4)
        assert written.introspection["heads"]["taps"] == [1.0]
        assert written.introspection["heads"]["per_layer"] is True

        await _wait_for(pilot, lambda: run.last is not None, 90, "the first metrics line")
        assert _status_text(app).startswith(f"step {run.last['step']}/100000  phase A")
        await _wait_for(pilot, lambda: len(run.losses) >= 2, 30, "a second metrics line")
        assert "ETA" in _status_text(app) and "loss " in _status_text(app)

        await pilot.press("ctrl+t")
        await _wait_for(pilot, lambda: app.current is None, 90, "the run to stop")
        assert run.process.returncode == 0
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1])
        assert last["stopped"] == "SIGTERM" and last["step"] < 100000
        checkpoint = run_dir / f"checkpoint-{last['step']}"
        assert (checkpoint / "introspection.safetensors").is_file()
        status = _status_text(app)
        assert "stopped (SIGTERM)" in status and f"checkpoint: {checkpoint}" in status
        assert list(app.query_one("#loss", Sparkline).data or []) == run.losses
        log_lines = app.query_one("#log", Log).lines
        assert log_lines[0] == f"$ tina train --train-config {run_dir / 'train_config.yaml'}"
        assert any(line.startswith("done: {'step': " + str(last["step"])) for line in log_lines)


@pytest.mark.anyio
async def test_a_missing_data_file_can_be_generated_from_the_form(tmp_path):
    """A fresh clone has no data/train.jsonl, which the shipped config names: Generate writes
    task-suite records there and the form is ready to run."""
    from textual.widgets import Button, Static

    from tina.data.contract import read_contract_jsonl
    from tina.tui import TrainingApp
    from tina.tui_state import GENERATED_PER_TASK

    shipped = yaml.safe_load((ROOT / "train_config.yaml").read_text())
    missing = tmp_path / "data" / "train.jsonl"
    config = tmp_path / "train_config.yaml"
    config.write_text(yaml.safe_dump({**shipped, "train_data": str(missing)}))
    app = TrainingApp(config, poll_s=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        assert "no such file" in str(app.query_one("#error-train_data", Static).content)
        assert not app.query_one("#generate", Button).disabled
        await pilot.click("#generate")
        await pilot.pause()
        assert len(read_contract_jsonl(missing).records) == 7 * GENERATED_PER_TASK
        assert "train_data" not in app.problems
        assert app.query_one("#generate", Button).disabled
