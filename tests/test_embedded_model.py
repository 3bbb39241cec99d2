"""The shipped model: a plain HF model directory that loads offline and answers correctly."""

from __future__ import annotations

import argparse
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from tina.core.models import embedded_model_dir, render_prompt
from tina.core.tags import REASONING_TAGS, tag_ids
from tina.data.tasks import generate_records
from tina.data.tasks.scoring import score_answer
from tina.engine.loop import decode
from tina.eval.phrasings import GROUPS, phrasing_items
from tina.eval.sweep import AUTO, decode_items
from tina.serve.runtime import add_model_arguments, load_engine


def test_is_a_plain_hf_model_directory():
    directory = embedded_model_dir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (directory / name).is_file(), name
    assert (directory / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "qwen2"


def test_loads_with_auto_classes_and_tags_are_single_ids():
    directory = embedded_model_dir()
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    ids = tag_ids(tokenizer)
    assert set(ids) == set(REASONING_TAGS)
    assert max(ids.values()) < model.get_input_embeddings().weight.shape[0]
    text = "Add 1 and 2\n<think>é 日本 \n\t</think><answer>3</answer>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert render_prompt(tokenizer, "Add 1 and 2") == "Add 1 and 2\n<think>"


@pytest.mark.parametrize(
    ("task", "difficulty", "at_least"),
    [
        ("add", 2, 11),
        ("add", 3, 11),
        ("add", 4, 11),
        ("sub", 2, 11),
        ("sub", 3, 11),
        ("mul", 2, 11),
        ("mul", 3, 11),
        ("code_deduction", 1, 8),
    ],
    ids=lambda v: str(v),
)
def test_answers_held_out_problems(embedded, task, difficulty, at_least):
    model, tokenizer = embedded
    # Seed 777 is far from the bootstrap stream's seeds; the problems are fresh draws.
    items = generate_records(task, 12, seed=777, difficulties=[difficulty])
    prompts = [render_prompt(tokenizer, r["meta"]["question"]) for r in items]
    results = decode(model, tokenizer, prompts, think_caps=384)
    scores = [score_answer(c.answer, task, r["meta"]) for c, r in zip(results, items, strict=True)]
    assert sum(scores) >= at_least, [
        (r["meta"]["question"], c.answer) for c, r in zip(results, items, strict=True)
    ]


def test_the_shipped_chat_template_is_the_one_bootstrap_writes():
    from tina.core.models import embedded_model_dir
    from tina.core.tokenizer import CHAT_TEMPLATE

    shipped = (embedded_model_dir() / "chat_template.jinja").read_text(encoding="utf-8")
    assert shipped == CHAT_TEMPLATE


def test_answers_heldout_phrasings_on_the_default_chat_path():
    """What a new user types (forms no training corpus holds), through the engine as `tina
    chat` builds it by default: the shipped parts, the heads' budget, the exit check."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)  # the flags `tina chat` takes, at their defaults
    engine, _ = load_engine(parser.parse_args(["--device", "cpu"]))
    assert engine.introspection is not None  # the shipped parts are on
    short = {name for name, _, difficulties in GROUPS if max(difficulties) <= 3}
    items = [i for i in phrasing_items(4) if i.labels["group"] in short]
    rows, _ = decode_items(engine, items, AUTO, len(items))
    right = sum(r["correct"] for r in rows)
    assert len(items) == 36 and right >= 33, [
        (i.prompt, r["prediction"]) for i, r in zip(items, rows, strict=True) if not r["correct"]
    ]
