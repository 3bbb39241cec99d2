"""Shared pytest fixtures and helpers (`GatedEngine`, `wait_until`: tests import them with
`from conftest import ...`).

Tokenizers are built offline with the `tokenizers` library (no downloads): a byte-level "char"
tokenizer, one id per byte, no merges.
"""

from __future__ import annotations

import threading
import time

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BYTE_CHAR_SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>")


def _byte_char_tokenizer(with_think: bool) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 ByteLevel symbols with no merges, plus `<|endoftext|>` and
    `<|pad|>`; with `with_think`, `<think>`/`</think>` are added (non-special) tokens right
    after them, as DeepSeek-R1-Distill's tokenizer carries them."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(BYTE_CHAR_SPECIAL_TOKENS))
    if with_think:
        backend.add_tokens(
            [
                AddedToken(tag, single_word=False, lstrip=False, rstrip=False, normalized=False)
                for tag in ("<think>", "</think>")
            ]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )


@pytest.fixture
def byte_char_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level char tokenizer carrying no reasoning tag (fresh per test: tests add tags)."""
    return _byte_char_tokenizer(with_think=False)


@pytest.fixture
def byte_char_tokenizer_with_think() -> PreTrainedTokenizerFast:
    """Byte-level char tokenizer already carrying `<think>`/`</think>` as added tokens, like
    DeepSeek-R1-Distill's (fresh per test)."""
    return _byte_char_tokenizer(with_think=True)


@pytest.fixture(scope="session")
def embedded():
    """(model, tokenizer) of the embedded model, loaded once per test session."""
    from tina.core.models import load_model

    return load_model(device="cpu")


#: a ChatML chat template with a default system prompt, as SmolLM2's and Qwen2.5's have
CHATML = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_qwen_with_tags():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tina.core.tags import ensure_reasoning_tokens

    tokenizer = _byte_char_tokenizer(with_think=False)
    ensure_reasoning_tokens(tokenizer)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2ForCausalLM(config).eval(), tokenizer


@pytest.fixture
def one_torch_thread():
    """Decode on one torch thread for the test: tiny models gain nothing from two, and on a
    loaded 2-core machine two threads contend and run about ten times slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_random_model():
    """(model, tokenizer): a random-init 2-layer Qwen2 over the byte tokenizer with all tags,
    shared by the session: do not attach anything to it."""
    return _tiny_qwen_with_tags()


@pytest.fixture
def tiny_fresh():
    """Like `tiny_random_model`, but built per test, so introspection parts may be attached."""
    return _tiny_qwen_with_tags()


# --- helpers of the serving tests ---------------------------------------------------------------


class GatedEngine:
    """The engine behind a gate: `generate` and each decode `step` wait for the gate (open
    unless a test closes it), so a test can hold a running batch while others queue up; with
    `fail`, they raise instead."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def generate(self, requests, on_token=None):
        if not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")
        if self.fail:
            raise RuntimeError("engine failure for the test")
        return self.engine.generate(requests, on_token=on_token)

    def step(self, batch, on_token=None):
        if not self.gate.wait(timeout=60):
            raise TimeoutError("the test never opened the gate")
        if self.fail:
            raise RuntimeError("engine failure for the test")
        return self.engine.step(batch, on_token)


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll `condition` (a bounded wait for a state, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


#: the smallest self-play run the trainer tests use: one deduction proposal and solve
SELF_PLAY_SMALL = {
    "iterations": 1,
    "task_types": ["deduction"],
    "num_propose": 1,
    "num_solve": 1,
    "num_mc_rollouts": 2,
    "seed_tasks_per_mode": 4,
    "solve_budget": 24,
    "propose_budget": 4,
    "propose_answer_tokens": 48,
}
