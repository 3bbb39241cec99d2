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
