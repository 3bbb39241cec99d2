"""Tests for people's phrasings and the out-of-scope prompts: the held-out sets are disjoint from
the training grammar, the canonical stream is unchanged, traces stay exact for mixed lengths."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tina.cli import main
from tina.data.contract import read_contract_jsonl
from tina.data.tasks import generate_records
from tina.data.tasks.arithmetic import add_steps, mul_steps, sub_steps
from tina.data.tasks.out_of_scope import (
    HELDOUT_PROMPTS,
    REFUSAL,
    heldout_records,
    is_refusal,
    out_of_scope_question,
    training_prompts,
)
from tina.data.tasks.phrasing import (
    FILLER_WORDS,
    HELDOUT,
    heldout_vocabulary,
    normalise,
    phrase,
    training_forms,
)
from tina.data.tasks.scoring import score_answer


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_heldout_forms_are_never_produced_by_the_training_grammar(op: str) -> None:
    forms = training_forms(op)
    assert len(HELDOUT[op]) >= 10
    assert not [f for f in HELDOUT[op] if normalise(f) in forms]


def test_heldout_out_of_scope_prompts_are_never_produced_by_the_training_grammar() -> None:
    assert len(HELDOUT_PROMPTS) == 50
    assert not [p for p in HELDOUT_PROMPTS if normalise(p) in training_prompts()]
    rng = random.Random(0)
    drawn = {normalise(out_of_scope_question(rng)) for _ in range(500)}
    assert drawn <= training_prompts()


def test_canonical_records_are_the_suites_own_sentences() -> None:
    questions = [r["meta"]["question"] for r in generate_records("add", 20, seed=5)]
    assert all(q.startswith("Add ") and " and " in q for q in questions)
    subs = [r["meta"]["question"] for r in generate_records("sub", 20, seed=5)]
    assert all(q.startswith("Subtract ") and " from " in q for q in subs)


@pytest.mark.parametrize("phrasing", ["varied", "heldout"])
@pytest.mark.parametrize("task", ["add", "sub", "mul", "mul2"])
def test_phrased_records_score_one_and_mix_operand_lengths(task: str, phrasing: str) -> None:
    records = generate_records(task, 120, seed=11, phrasing=phrasing)
    assert len({r["meta"]["question"] for r in records}) > 100
    for record in records:
        assert score_answer(record["meta"]["answer"], task, record["meta"]) == 1.0
    lengths = set()
    for record in records:
        x, y = record["meta"]["expression"].replace("-", "+").replace("*", "+").split("+")
        lengths.add(len(x) == len(y))
    assert lengths == {True, False}


def test_mixed_length_traces_pad_the_shorter_operand() -> None:
    assert add_steps(903, 98)[-1].endswith("r1001;")
    assert add_steps(7, 45) == add_steps(7, 45)
    assert sub_steps(1000, 1)[-1].endswith("r0999;") or sub_steps(1000, 1)[-1].endswith("r999;")
    assert mul_steps(123, 7)[-1].endswith("r861;")


def test_phrase_rejects_an_unknown_form_set() -> None:
    with pytest.raises(ValueError, match="unknown phrasing"):
        phrase("add", 1, 2, random.Random(0), "shouted")
    with pytest.raises(ValueError, match="arithmetic"):
        generate_records("code_deduction", 2, phrasing="varied")


def test_heldout_out_of_scope_records_score_the_refusal() -> None:
    records = heldout_records()
    assert len(records) == 50
    assert all(score_answer(REFUSAL, r["task"], r["meta"]) == 1.0 for r in records)
    assert is_refusal(" " + REFUSAL) and not is_refusal("I can")


def test_cli_data_phrasing_option(tmp_path: Path) -> None:
    out = tmp_path / "add.jsonl"
    code = main(
        [
            "data",
            "--task",
            "add",
            "--n",
            "30",
            "--seed",
            "9",
            "--phrasing",
            "varied",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    records = read_contract_jsonl(out).records
    assert len(records) == 30
    assert sum(not r["meta"]["question"].startswith("Add ") for r in records) > 10


def test_bootstrap_stream_is_seeded_and_mixes_phrasings_and_refusals() -> None:
    from itertools import islice

    from tina.train.bootstrap import BootstrapConfig, record_stream

    config = BootstrapConfig(seed=3)
    first = list(islice(record_stream(config), 400))
    assert first == list(islice(record_stream(config), 400))
    questions = [t.split("\n<think>", 1)[0] for t in first]
    assert any(REFUSAL in t for t in first)
    phrased = [q for q in questions if "+" in q or "plus" in q.lower() or "×" in q]
    assert len(phrased) > 10
    plain = BootstrapConfig(seed=3, phrasing_share=0.0, mix={"add": (1.0, (2,), (1.0,))})
    assert all(t.startswith("Add ") for t in islice(record_stream(plain), 100))


def test_seen_questions_of_reads_a_config_from_before_phrasings(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    from tina.train.bootstrap import BootstrapConfig, seen_questions_of, training_questions

    config = BootstrapConfig(steps=16, phrasing_share=0.0, mix={"sub": (1.0, (2,), (1.0,))})
    payload = asdict(config)
    del payload["phrasing_share"]
    (tmp_path / "bootstrap_config.json").write_text(json.dumps({"config": payload}))
    assert seen_questions_of(tmp_path) == training_questions(config)


def test_tiny_bootstrap_is_deterministic(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from tina.train.bootstrap import BootstrapConfig, bootstrap

    config = BootstrapConfig(
        steps=3,
        batch_size=4,
        pool_batches=2,
        hidden_size=32,
        layers=1,
        heads=2,
        kv_heads=1,
        intermediate_size=64,
        warmup_steps=1,
        log_every=100,
    )
    bootstrap(config, tmp_path / "a", log=lambda _: None)
    bootstrap(config, tmp_path / "b", log=lambda _: None)
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("extra", [["--no-introspection", "--budget", "48"], ["--budget", "auto"]])
def test_cli_phrasings_writes_its_table_and_json(tmp_path: Path, extra: list[str]) -> None:
    import json

    code = main(["phrasings", "--n", "1", "--out", str(tmp_path), *extra])
    assert code == 0
    report = json.loads((tmp_path / "phrasings.json").read_text())
    assert len(report["rows"]) == 11 + 50  # one per task and difficulty of the groups, 50 prompts
    assert "held-out phrasings" in (tmp_path / "phrasings.md").read_text()
    assert {g["group"] for g in report["groups"]} >= {"add 1-3 digits", "sub 4 digits"}
    assert report["out_of_scope"]["n"] == 50


def test_cli_phrasings_rejects_a_bad_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phrasings", "--budget", "lots"]) == 2
    assert "--budget" in capsys.readouterr().err


def test_filler_words_never_occur_in_a_heldout_form() -> None:
    assert not set(FILLER_WORDS) & heldout_vocabulary()
    rng = random.Random(0)
    questions = [phrase("add", 12, 34, rng, "varied") for _ in range(2000)]
    words = {w for q in questions for w in re.findall(r"[a-z]+", q.lower())}
    assert not words & (heldout_vocabulary() - grammar_vocabulary("add"))
    assert len(words - grammar_vocabulary("add")) > 300  # made-up words among the fillers


def grammar_vocabulary(op: str) -> set[str]:
    """The words of the training grammar's templates and filler list."""
    return {w for f in training_forms(op) for w in re.findall(r"[a-z]+", f)} | set(FILLER_WORDS)
