"""The engine's prompt-prefix reuse: same outputs and heads readings as a whole prefill, fewer
prompt positions run, never reused across a weight change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from tina.core.introspection import attach_introspection
from tina.engine.loop import PREFIX_MIN_SAVED, Engine
from tina.engine.prefix import Prefix, crop, shared_length
from tina.engine.types import EngineConfig, Request

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a long instruction in front of every question, as a chat template's system prompt is
SYSTEM = "You are a careful assistant. Think step by step, then answer briefly. "
QUESTIONS = ["Add 37 and 45", "Subtract 8 from 91", "Multiply 12 by 7", "Add 5 and 3"]


def prompts(questions: list[str]) -> list[Request]:
    return [Request(SYSTEM + q, budget=8, temperature=0.7, seed=i) for i, q in enumerate(questions)]


@contextmanager
def prefill_widths(model) -> Iterator[list[int]]:
    """Within the block, records the width of every forward's input ids (a prefill's > 1)."""
    widths: list[int] = []

    def hook(module, args, kwargs):
        widths.append(int(kwargs["input_ids"].shape[1]))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield widths
    finally:
        handle.remove()


def tokens_of(eng: Engine, request: Request) -> list[int]:
    """The prompt tokens the engine prefills for `request`."""
    return eng.tokenizer.encode(eng.render(request.prompt), add_special_tokens=False)


def engine(model, tokenizer, intro=None, prefix_cache=True) -> Engine:
    config = EngineConfig(budget_cap=8, max_answer_tokens=6, prefix_cache=prefix_cache)
    return Engine(model, tokenizer, intro, config=config)


def readings(results) -> tuple[list[str], list[float]]:
    """(completions, the heads' confidence and budget of each row)."""
    numbers = []
    for r in results:
        numbers += [r.telemetry.confidence_before, r.telemetry.predicted_budget]
    return [r.completion for r in results], numbers


def test_shared_length_and_crop():
    assert shared_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_length([[5], [6]]) == 0
    assert shared_length([[1, 2, 3]]) == 3
    assert shared_length([]) == 0
    prefix = Prefix((1, 2, 3), [torch.zeros(1, 1, 3, 2)], [torch.ones(1, 1, 3, 2)])
    assert crop(prefix, 2).tokens == (1, 2) and crop(prefix, 2).keys[0].shape[2] == 2
    with pytest.raises(ValueError, match="cannot crop a 3-token prefix to 4"):
        crop(prefix, 4)


def test_a_batch_shares_its_prefix_and_reads_the_same(tiny_fresh):
    model, tokenizer = tiny_fresh
    intro = attach_introspection(model)
    with torch.no_grad():
        for adapter in intro.adapters.values():
            adapter.global_gate.fill_(0.5)
    requests = prompts(QUESTIONS * 2)
    whole = engine(model, tokenizer, intro, prefix_cache=False).generate(requests)
    eng = engine(model, tokenizer, intro)
    with prefill_widths(model) as widths:
        shared = eng.generate(requests)
    (texts, numbers), (texts_whole, numbers_whole) = readings(shared), readings(whole)
    assert texts == texts_whole
    assert numbers == pytest.approx(numbers_whole, rel=1e-4)
    tokens = [tokens_of(eng, r) for r in requests]
    common = shared_length(tokens)
    assert (len(requests) - 1) * common >= PREFIX_MIN_SAVED
    # the shared prefix ran once, on one row; the batch's prefill started after it
    assert widths[:2] == [common, max(len(t) for t in tokens) - common]


def test_the_next_admission_reuses_the_last_prompt(tiny_random_model):
    model, tokenizer = tiny_random_model
    eng = engine(model, tokenizer)
    alone = engine(model, tokenizer, prefix_cache=False)
    first, second = prompts(QUESTIONS[:2])
    eng.generate([first])
    with prefill_widths(model) as widths:
        result = eng.generate([second])[0]
    tokens = tokens_of(eng, second)
    # only what differs from the last prompt was run
    assert widths[0] == len(tokens) - shared_length([tokens, tokens_of(eng, first)])
    assert result.completion == alone.generate([second])[0].completion


def test_changed_weights_are_never_served_from_the_cache(tiny_fresh):
    model, tokenizer = tiny_fresh
    eng = engine(model, tokenizer)
    request = Request(SYSTEM + QUESTIONS[0], budget=8)
    eng.generate([request])
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)  # an optimizer step does this in place
    with prefill_widths(model) as widths:
        after = eng.generate([request])[0]
    assert widths[0] == len(tokens_of(eng, request))
    assert (
        after.completion
        == engine(model, tokenizer, prefix_cache=False).generate([request])[0].completion
    )
