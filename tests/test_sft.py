"""`tina sft` on a tiny random Qwen2 with a ChatML-like template: the config's checks, the chat
rendering of records, the shared-prefix loss, the adapter it writes, and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CHATML
from safetensors.torch import load_file

from tina.core.introspection import load_introspective_model
from tina.core.tags import THINK_OPEN
from tina.data.tasks import generate_records
from tina.train.checkpoints import StopFlag
from tina.train.data import chat_text, collate, example_from_record, length_grouped_batches
from tina.train.sft import _peft_model, completion_loss, sft, sft_examples, shared_prefix_length
from tina.train.sft_config import SFTConfig, SFTConfigError, load_sft_config


@pytest.fixture
def models_root(tmp_path, tiny_fresh):
    model, tokenizer = tiny_fresh
    tokenizer.chat_template = CHATML
    model.save_pretrained(tmp_path / "models" / "tiny")
    tokenizer.save_pretrained(tmp_path / "models" / "tiny")
    return tmp_path / "models"


def _config(models_root: Path, out: Path, **changes) -> SFTConfig:
    base = {
        "models_root": str(models_root),
        "base": "tiny",
        "output_dir": str(out),
        "tasks": {"add": {"n": 24, "difficulties": [2]}},
        "lora_r": 4,
        "lora_alpha": 8,
        "steps": 6,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 0,
        "save_every": 3,
        "log_every": 1,
        "keep_checkpoints": 0,
    }
    return SFTConfig(**{**base, **changes})


def test_every_config_problem_is_named_at_once(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text(
        "steps: 0\nlr: -1\nsave_dtype: float8\nbogus: 1\n"
        "tasks:\n  add: {n: 4, difficulties: [9]}\n  nope: {n: 1}\n"
    )
    with pytest.raises(SFTConfigError) as info:
        load_sft_config(path)
    text = str(info.value)
    for field in ("steps", "lr", "save_dtype", "bogus", "tasks.add.difficulties", "tasks.nope"):
        assert f"{path}: {field}:" in text
    path.write_text("base: tiny\n")
    with pytest.raises(SFTConfigError, match="train_data: no data"):
        load_sft_config(path)


def test_records_are_rendered_through_the_models_chat_template(tiny_fresh):
    _, tokenizer = tiny_fresh
    record = generate_records("add", 1, seed=3, difficulties=[2])[0]
    # the embedded template: the record's text comes back as written
    assert chat_text(tokenizer, record["text"]) == record["text"]
    tokenizer.chat_template = CHATML
    text = chat_text(tokenizer, record["text"], eos=True)
    question = record["meta"]["question"]
    assert text.startswith("<|im_start|>system\nYou are a tiny test model.<|im_end|>\n")
    assert f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{THINK_OPEN}" in text
    assert text.endswith(record["text"].split(THINK_OPEN, 1)[1] + tokenizer.eos_token)


def test_the_shared_prefix_gives_the_same_loss_and_gradients(models_root, tmp_path):
    from tina.core.models import load_model

    model, tokenizer = load_model(models_root / "tiny", device="cpu")
    config = _config(models_root, tmp_path / "out")
    examples = sft_examples(tokenizer, config)[:6]
    batch = collate(examples, tokenizer.pad_token_id)
    shared = shared_prefix_length(batch)
    assert shared >= len("<|im_start|>system\nYou are a tiny test model.<|im_end|>\n")
    peft_model = _peft_model(model, tokenizer, config, None).train()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)

    def run(share: bool) -> tuple[float, torch.Tensor]:
        peft_model.zero_grad()
        loss, n = completion_loss(peft_model, batch, share_prefix=share)
        loss.backward()
        assert n == int((batch["labels"] != -100).sum())
        grads = [p.grad.flatten() for p in peft_model.parameters() if p.requires_grad]
        return float(loss.detach()), torch.cat(grads)

    (loss_a, grad_a), (loss_b, grad_b) = run(False), run(True)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert torch.allclose(grad_a, grad_b, atol=1e-5)
    # and it is the usual causal-LM loss over the labels
    full = peft_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    )
    assert float(full.loss.detach()) == pytest.approx(loss_a, rel=1e-5)


def test_sft_lowers_the_loss_and_writes_a_peft_adapter_that_loads(models_root, tmp_path):
    config = _config(models_root, tmp_path / "out", lr=3e-2, steps=16, save_every=8)
    summary = sft(config, progress=False)
    assert summary["step"] == 16
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == list(range(1, 17))
    checkpoint = tmp_path / "out" / "checkpoint-16"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (checkpoint / name).is_file(), name
    saved = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in saved) and any("trainable_tokens_delta" in k for k in saved)
    assert not any("base_layer" in k for k in saved)  # never the whole embedding matrix
    # the adapter loads the way chat and serve load it, and lowers the loss on its data
    trained, tokenizer, _ = load_introspective_model(
        models_root, "tiny", str(tmp_path / "out"), "checkpoint-16"
    )
    base, base_tokenizer, _ = load_introspective_model(models_root, "tiny")
    examples = sft_examples(tokenizer, config)
    batch = collate(examples[:16], tokenizer.pad_token_id)
    with torch.no_grad():
        after = float(completion_loss(trained, batch)[0])
        before = float(
            completion_loss(base, collate(examples[:16], base_tokenizer.pad_token_id))[0]
        )
    assert after < before - 0.3, (before, after)


class _TermAfterThree(StopFlag):
    """A SIGTERM that comes during the third step."""

    checks = 0

    @property
    def signal(self) -> int | None:
        _TermAfterThree.checks += 1
        return int(signal.SIGTERM) if _TermAfterThree.checks >= 3 else None

    @signal.setter
    def signal(self, value: int | None) -> None:
        pass


def test_a_run_stopped_by_sigterm_resumes_and_ends_where_a_straight_run_does(
    models_root, tmp_path, monkeypatch
):
    sft(_config(models_root, tmp_path / "straight"), progress=False)
    with monkeypatch.context() as patch:
        patch.setattr("tina.train.sft.StopFlag", _TermAfterThree)
        stopped = sft(_config(models_root, tmp_path / "split"), progress=False)
    assert stopped["step"] == 3 and stopped["stopped"] == "SIGTERM"
    state = torch.load(tmp_path / "split" / "checkpoint-3" / "trainer_state.pt", weights_only=False)
    assert state["mode"] == "sft" and state["step"] == 3
    sft(_config(models_root, tmp_path / "split"), resume=True, progress=False)
    a = load_file(str(tmp_path / "straight" / "checkpoint-6" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint-6" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_length_grouped_batches_cover_every_row_once_with_less_padding():
    lengths = [(i * 37) % 90 + 10 for i in range(400)]
    batches = length_grouped_batches(lengths, 8, seed=1, megabatch=10)
    assert sorted(i for b in batches for i in b) == list(range(400))
    assert batches == length_grouped_batches(lengths, 8, seed=1, megabatch=10)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = [list(range(s, s + 8)) for s in range(0, 400, 8)]
    assert padded < 0.8 * sum(len(b) * max(lengths[i] for i in b) for b in plain)


def test_the_cli_names_a_bad_config_and_exits_2(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("tasks: {add: {n: 0}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tina", "sft", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"error: {path}: tasks.add.n:" in done.stderr


def test_a_long_record_is_an_error_naming_the_task(models_root, tmp_path):
    from tina.core.models import load_model
    from tina.train.data import TrainDataError

    _, tokenizer = load_model(models_root / "tiny", device="cpu")
    with pytest.raises(TrainDataError, match=r"tasks\.add: record add-0-0: .*max_length=20"):
        sft_examples(tokenizer, _config(models_root, tmp_path, max_length=20))
    record = generate_records("add", 1, difficulties=[2])[0]
    assert example_from_record(tokenizer, record, eos=True).input_ids[-1] == tokenizer.eos_token_id
