"""The `tina` command line: help text, chat one-shot, argument errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tina.cli import build_parser, main


def test_help_lists_every_subcommand_with_a_description():
    out = subprocess.run(
        [sys.executable, "-m", "tina", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("data", "bootstrap", "chat", "quality"):
        assert name in out
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for choice in sub._choices_actions:
        assert choice.help and choice.help.endswith(".")


def test_chat_prompt_prints_the_answer_only(capsys):
    assert main(["chat", "--prompt", "Add 37 and 45", "--no-stream"]) == 0
    assert capsys.readouterr().out.strip() == "82"


def test_chat_streamed_prints_the_same_answer(capsys):
    assert main(["chat", "--prompt", "Add 37 and 45"]) == 0
    assert capsys.readouterr().out.strip() == "82"


def test_chat_visible_cot_shows_thinking(capsys):
    assert main(["chat", "--prompt", "Add 37 and 45", "--no-stream", "--visible-cot"]) == 0
    out = capsys.readouterr().out
    assert "[thinking] 7+5+0=12 r2;" in out
    assert out.strip().endswith("[answer] 82")


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["chat", "--no-such-flag"])
    assert exc.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_chat_json_gives_answer_and_telemetry(capsys):
    import json

    assert main(["chat", "--prompt", "Add 37 and 45", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["answer"] == "82"
    telemetry = payload["telemetry"]
    for key in (
        "plan",
        "predicted_budget",
        "budget",
        "think_tokens",
        "answer_tokens",
        "confidence_before",
        "confidence_after",
        "gate_activity",
        "gate_coverage",
        "latency_s",
        "tokens_per_s",
        "leaked",
    ):
        assert key in telemetry
    assert telemetry["think_tokens"] > 0 and telemetry["leaked"] is False


def test_chat_fixed_budget_zero_skips_thinking(capsys):
    import json

    assert main(["chat", "--prompt", "Add 3 and 4", "--json", "--budget", "0"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["telemetry"]["think_tokens"] == 0 and payload["answer"] == "7"


def test_chat_missing_calibration_file_is_an_error(tmp_path, capsys):
    code = main(["chat", "--prompt", "x", "--calibration", str(tmp_path / "nope.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and "file not found" in err and "Traceback" not in err


def test_chat_missing_model_directory_is_an_error(tmp_path, capsys):
    assert main(["chat", "--prompt", "x", "--models-root", str(tmp_path), "--base", "Nope"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_chat_uses_the_shipped_introspection_parts_and_calibration_by_default(capsys):
    """The recipe's result ships in the embedded model's `introspection/`: chat's default
    engine plans, budgets and reports a calibrated confidence; `--no-introspection` is the
    model alone (no heads: the budget cap, no plan)."""
    import json

    from tina.core.calibration import load_calibration
    from tina.core.models import embedded_model_dir

    shipped = embedded_model_dir() / "introspection"
    calibration = load_calibration(shipped / "metacog_calibration.json")
    assert main(["chat", "--prompt", "Add 37 and 45", "--json"]) == 0
    with_heads = json.loads(capsys.readouterr().out)
    t = with_heads["telemetry"]
    assert with_heads["answer"] == "82"
    assert t["plan"] == "compute" and 0 < t["budget"] <= (calibration.budget_max or 10**9)
    assert t["think_tokens"] < 100  # the free-thinking model spends ~90 on this question
    assert t["exit_checks"] == 1 and calibration.exit_threshold is not None
    assert main(["chat", "--prompt", "Add 37 and 45", "--json", "--no-exit-check"]) == 0
    unchecked = json.loads(capsys.readouterr().out)["telemetry"]
    assert unchecked["exit_checks"] == 0 and unchecked["budget"] == t["budget"]
    assert main(["chat", "--prompt", "Add 37 and 45", "--json", "--no-introspection"]) == 0
    alone = json.loads(capsys.readouterr().out)["telemetry"]
    assert alone["plan"] is None and alone["confidence_before"] is None


@pytest.mark.parametrize(
    ("stops", "printed"),
    [(["2"], "8"), (["82"], ""), (["2x"], "82"), (["x", "82"], "")],
    ids=["cut", "whole-answer", "held-then-printed", "second-stop"],
)
def test_chat_streams_the_answer_up_to_a_stop_string(capsys, stops, printed):
    """Streaming prints a tail that might begin a stop string only once it cannot: "8" of
    "82" is never printed under the stop "82", and "2" of "82" is printed under "2x"."""
    flags = [arg for stop in stops for arg in ("--stop", stop)]
    assert main(["chat", "--prompt", "Add 37 and 45", *flags]) == 0
    assert capsys.readouterr().out == printed + "\n"


# --- optional extras ----------------------------------------------------------------------------

#: (command line, the module that is not installed, modules to forget, the extra it needs)
MISSING_EXTRAS = [
    ("serve-fastapi", ["serve"], "fastapi", ["tina.serve.app"], "serve"),
    ("serve-uvicorn", ["serve"], "uvicorn", [], "serve"),
    ("tui-textual", ["tui"], "textual", ["tina.tui"], "tui"),
    ("plot-matplotlib", ["plot", "--csv", "sweep.csv"], "matplotlib", ["tina.eval.plots"], "plots"),
]


def _uninstall(monkeypatch, module: str, forget: list[str]) -> None:
    """Make `import module` fail as if it were not installed; `forget` are modules that imported
    it already (so their next import runs again)."""
    for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    for name in forget:
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(
    ("argv", "module", "forget", "extra"),
    [m[1:] for m in MISSING_EXTRAS],
    ids=[m[0] for m in MISSING_EXTRAS],
)
def test_a_missing_extra_is_one_line_and_exit_2(monkeypatch, capsys, argv, module, forget, extra):
    _uninstall(monkeypatch, module, forget)
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = f"tina {argv[0]}: needs the '{extra}' extra: pip install 'tina[{extra}]'"
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_training_without_tensorboard_names_its_extra(monkeypatch, capsys):
    """The trainer imports TensorBoard only when the config asks for it (`tensorboard: true`);
    the command then says which extra to install."""
    import tina.cli

    def train_with_tensorboard(args):
        """Train with TensorBoard metrics."""
        from torch.utils.tensorboard import SummaryWriter  # what the trainer imports

        return 0 if SummaryWriter else 1

    _uninstall(monkeypatch, "tensorboard", ["torch.utils.tensorboard"])
    monkeypatch.setattr(tina.cli, "cmd_train", train_with_tensorboard)
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err == "tina train: needs the 'tensorboard' extra: pip install 'tina[tensorboard]'\n"


def test_a_missing_module_of_no_extra_is_a_bug_and_raised(monkeypatch):
    import tina.cli

    def broken(args):
        """Plot with a bug."""
        raise ModuleNotFoundError("No module named 'nonexistent'", name="nonexistent")

    monkeypatch.setattr(tina.cli, "cmd_plot", broken)
    with pytest.raises(ModuleNotFoundError, match="nonexistent"):
        main(["plot", "--csv", "sweep.csv"])


def test_help_and_other_commands_need_no_serve_extra(monkeypatch, capsys):
    _uninstall(monkeypatch, "fastapi", ["tina.serve.app"])
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    assert "--max-queue" in capsys.readouterr().out  # the serve flags, without FastAPI
    assert main(["chat", "--prompt", "Add 37 and 45", "--no-stream"]) == 0
    assert capsys.readouterr().out.strip() == "82"
    assert "tina.serve.app" not in sys.modules


def test_interactive_chat_starts_with_one_line_about_the_model(capsys, monkeypatch):
    answers = iter(["Add 2 and 3", "exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["chat", "--no-stream"]) == 0
    first, *rest = capsys.readouterr().out.splitlines()
    assert first.startswith("Tina chat, the embedded model (")
    assert "parameters, with its introspection parts)" in first
    assert "arithmetic" in first and "--base NAME" in first and "'exit'" in first
    assert rest == ["5"]
