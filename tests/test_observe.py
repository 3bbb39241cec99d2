"""`tina observe` and log redaction: what is redacted and what is not, the JSONL record, the
model seeing the raw prompt, per-layer heads, prompt files, appending."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tina.cli import build_parser, main
from tina.observe import append_jsonl, observation_record
from tina.serve.redact import redact, redact_record

RECORD_KEYS = {
    "ts",
    "prompt",
    "visible_cot",
    "sections",
    "output",
    "heads",
    "gates",
    "latency_s",
    "tokens_per_s",
    "leaked",
    "forced_think_close",
    "forced_answer_close",
}
HEADS_KEYS = {
    "plan",
    "plan_probs",
    "predicted_budget",
    "budget",
    "soft_cap",
    "confidence_before",
    "confidence_after",
    "extended",
    "exit_checks",
}

REDACTED = [
    ("mail bob@example.com now", "mail [EMAIL] now"),
    ("Bob.Smith+tag@mail.example.co.uk.", "[EMAIL]."),
    ("id john123456@example.com", "id [EMAIL]"),  # emails first: not [NUMBER]@…
    ("call +1 (555) 123-4567 today", "call [PHONE] today"),
    ("555-123-4567", "[PHONE]"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("(555) 123 4567", "[PHONE]"),
    ("555.123.4567", "[PHONE]"),
    ("dial 555-1234", "dial [PHONE]"),
    ("+15551234567", "[PHONE]"),  # phones before digit runs: not +[NUMBER]
    ("acct 123456", "acct [NUMBER]"),
    ("card 4111111111111111 ok", "card [NUMBER] ok"),
    ("x1234567y", "x[NUMBER]y"),
    ("Add 123456 and 7", "Add [NUMBER] and 7"),
    ("a@b.io, 555-123-4567, 9876543", "[EMAIL], [PHONE], [NUMBER]"),
]

NOT_REDACTED = [
    "12345",
    "99999 and 10000",
    "r1020",
    "1020",
    "82",
    "Add 37 and 45",
    "Subtract 19 from 802",
    "7+5+0=12 r2;4+3+1=8 r82;",
    "2026-11-22",
    "on 2026-11-22 at 12:30",
    "2026-11-22T10:11:12.345+00:00",
    "192.168.1.1",
    "3.14159",
    "Add 123 456",
    "user at example dot com",
    "def f(x):\n  x = x * 2\n  return x",
    "",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED, ids=[t for t, _ in REDACTED])
def test_redact_replaces_pii(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", NOT_REDACTED)
def test_redact_keeps_short_numbers_dates_and_code(text):
    assert redact(text) == text


@pytest.mark.parametrize("text", [t for t, _ in REDACTED] + NOT_REDACTED)
def test_redact_is_idempotent_on_the_table(text):
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789 .-+()@abxyz_:", max_size=40))
def test_redact_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


def test_redact_record_walks_nested_values_and_keeps_keys():
    record = {
        "bob@example.com": "555-123-4567",
        "nested": {"list": ["x 1234567", ("t@x.org", 3)], "n": 1234567, "none": None},
        "ok": True,
    }
    out = redact_record(record)
    assert out == {
        "bob@example.com": "[PHONE]",
        "nested": {"list": ["x [NUMBER]", ("[EMAIL]", 3)], "n": 1234567, "none": None},
        "ok": True,
    }
    assert record["nested"]["list"][0] == "x 1234567"  # a copy: the input is untouched


def test_append_jsonl_creates_dirs_and_appends(tmp_path):
    path = tmp_path / "a" / "b" / "obs.jsonl"
    assert append_jsonl(path, [{"n": 1}, {"n": 2}]) == 2
    assert append_jsonl(path, iter([{"n": 3}])) == 1
    assert append_jsonl(path, []) == 0
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], None),
        (["--visible-cot"], True),
        (["--visible-cot", "true"], True),
        (["--visible-cot", "false"], False),
        (["--visible-cot", "False", "--log-raw"], False),
    ],
)
def test_visible_cot_flag_forms(argv, expected):
    args = build_parser().parse_args(["observe", "--prompt", "x", *argv])
    assert args.visible_cot is expected
    assert args.jsonl_out == "logs/obs.jsonl" and args.batch_size == 8


def test_visible_cot_flag_rejects_other_words(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["observe", "--visible-cot", "maybe"])
    assert exc.value.code == 2
    assert "expected true or false" in capsys.readouterr().err


def test_missing_prompts_file_is_exit_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    out = tmp_path / "obs.jsonl"
    assert main(["observe", "--prompts-file", str(missing), "--jsonl-out", str(out)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists()


def test_no_prompts_is_exit_2(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    assert main(["observe", "--prompts-file", str(blank), "--jsonl-out", str(tmp_path / "o")]) == 2
    assert "no prompts" in capsys.readouterr().err


# --- through the engine ----------------------------------------------------------------------


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_observe_writes_one_full_record_hidden_cot(tmp_path, capsys):
    path = tmp_path / "logs" / "obs.jsonl"
    assert main(["observe", "--prompt", "Add 37 and 45", "--jsonl-out", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "82"
    (record,) = _lines(path)
    assert set(record) == RECORD_KEYS
    assert set(record["heads"]) == HEADS_KEYS
    assert set(record["gates"]) == {"activity", "coverage"}
    assert datetime.fromisoformat(record["ts"]).utcoffset() == timedelta(0)
    assert record["prompt"] == "Add 37 and 45"
    assert record["visible_cot"] is False
    assert record["output"] == "82"
    think, answer = record["sections"]["think"], record["sections"]["answer"]
    assert answer == {"text": "82", "tokens": answer["tokens"]} and answer["tokens"] > 0
    assert think["text"].startswith("7+5+0=12 r2;") and think["tokens"] > 0
    # hidden mode: no thinking, no tag in what the user was shown
    assert think["text"] not in record["output"]
    assert "r2;" not in record["output"] and "<" not in record["output"]
    assert record["leaked"] is False
    assert record["latency_s"] > 0 and record["tokens_per_s"] > 0


def test_model_sees_the_raw_prompt_and_only_the_log_is_redacted(embedded, tmp_path, capsys):
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig, Request
    from tina.serve.service_config import load_service_config

    model, tokenizer = embedded
    prompt = "Add 123456 and 7 (reply to bob@example.com)"
    engine = Engine(
        model, tokenizer, config=EngineConfig.from_service_config(load_service_config())
    )
    (direct,) = engine.generate([Request(prompt)])
    (fed_redacted,) = engine.generate([Request(redact(prompt))])
    # the prompt discriminates: feeding the redacted prompt would change the answer
    assert fed_redacted.answer != direct.answer

    path = tmp_path / "obs.jsonl"
    # the model alone on both sides (the shipped heads would pick their own budget)
    base = ["observe", "--no-introspection", "--prompt", prompt, "--jsonl-out", str(path)]
    assert main(base) == 0
    shown_default = capsys.readouterr().out.strip()
    assert main([*base, "--log-raw"]) == 0
    shown_raw = capsys.readouterr().out.strip()
    assert shown_default == shown_raw == direct.answer  # stdout is never redacted

    redacted_record, raw_record = _lines(path)  # two runs append: two lines
    assert redacted_record["prompt"] == "Add [NUMBER] and 7 (reply to [EMAIL])"
    assert raw_record["prompt"] == prompt
    assert raw_record["output"] == raw_record["sections"]["answer"]["text"] == direct.answer
    assert redacted_record["output"] == redact(direct.answer)
    assert raw_record["sections"]["think"]["text"] == direct.think_text


def test_debug_per_layer_with_prompts_file_and_batches(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Add 37 and 45\n\n  \nMultiply 12 by 3\nAdd 1 and 2\n")
    path = tmp_path / "obs.jsonl"
    argv = ["observe", "--prompts-file", str(prompts), "--jsonl-out", str(path)]
    flags = ["--batch-size", "2", "--debug-per-layer", "--budget", "8", "--no-introspection"]
    assert main([*argv, *flags]) == 0
    shown = capsys.readouterr().out.splitlines()
    records = _lines(path)
    assert [r["prompt"] for r in records] == ["Add 37 and 45", "Multiply 12 by 3", "Add 1 and 2"]
    assert shown == [r["output"] for r in records]
    for r in records:
        assert set(r) == RECORD_KEYS | {"per_layer"}
        assert r["per_layer"] == {}  # the model alone: no introspection parts
        assert (
            r["heads"]["budget"] == 8 and r["sections"]["think"]["tokens"] <= 12
        )  # soft cap: 8 · 1.5


def test_observation_record_per_layer_heads(tiny_fresh):
    from tina.core.introspection import IntrospectionConfig, attach_introspection
    from tina.core.metacog_heads import HeadsConfig
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig, Request

    model, tokenizer = tiny_fresh
    intro = attach_introspection(model, IntrospectionConfig(heads=HeadsConfig(per_layer=True)))
    engine = Engine(model, tokenizer, intro, EngineConfig(budget_cap=6, max_answer_tokens=4))
    requests = [
        Request("mail me at a@b.co", temperature=1.0, seed=1),
        Request("Add 1 and 2", budget=3, temperature=1.0, seed=2, visible_cot=True),
    ]
    hidden, visible = engine.generate(requests)

    record = observation_record(requests[0], hidden, debug_per_layer=True, raw=False)
    json.loads(json.dumps(record, allow_nan=False))  # JSON-serialisable as is
    assert set(record) == RECORD_KEYS | {"per_layer"}
    assert record["prompt"] == "mail me at [EMAIL]"
    assert record["visible_cot"] is False
    assert set(record["per_layer"]) == {str(i) for i in intro.tap_layers} and record["per_layer"]
    for values in record["per_layer"].values():
        assert set(values) == {"plan_probs", "budget", "confidence"}
        assert abs(sum(values["plan_probs"]) - 1) < 1e-5
    heads = record["heads"]
    assert heads["plan"] in heads["plan_probs"] and heads["confidence_before"] is not None

    record = observation_record(requests[1], visible, debug_per_layer=False, raw=True)
    assert "per_layer" not in record
    assert record["visible_cot"] is True and record["output"] == visible.completion
    assert record["heads"]["budget"] == 3
    # left to the engine's default (hidden), visibility is read off the result
    default = Request("Add 1 and 2", budget=3, temperature=1.0, seed=2)
    (result,) = engine.generate([default])
    assert (
        observation_record(default, result, debug_per_layer=False, raw=True)["visible_cot"] is False
    )
