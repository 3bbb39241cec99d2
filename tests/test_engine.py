"""The engine's decode loop: caps, forced tags, sampling seeds, batching."""

from __future__ import annotations

import pytest

from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, reasoning_structure_error
from tina.engine.loop import decode

PROMPTS = ["Add 37 and 45\n<think>", "Multiply 12 by 3\n<think>", "hello\n<think>"]


def _assert_well_formed(text: str) -> None:
    # The completion plus the prompt's <think> satisfies the contract's tag rule, whatever the
    # model sampled (stray tags in the answer would break it, so answers must be non-empty).
    assert text.count(THINK_CLOSE) >= 1
    assert text.endswith(ANSWER_CLOSE)
    head = text[: text.index(THINK_CLOSE) + len(THINK_CLOSE)]
    assert head.count(THINK_CLOSE) == 1
    assert text[len(head) :].startswith(ANSWER_OPEN)


@pytest.mark.parametrize("cap", [0, 1, 5, 17], ids=lambda c: f"cap{c}")
def test_think_cap_forces_close_then_answer(tiny_random_model, cap):
    model, tokenizer = tiny_random_model
    results = decode(
        model, tokenizer, PROMPTS, think_caps=cap, answer_cap=6, temperature=1.0, seed=1
    )
    for r in results:
        assert r.telemetry.think_tokens <= cap
        _assert_well_formed(r.completion)
        assert r.telemetry.answer_tokens <= 6
    at_cap = [r for r in results if r.telemetry.think_tokens == cap]
    assert at_cap  # seeded: some row thinks up to the cap, so the next line checks something
    assert all(r.telemetry.forced_think_close for r in at_cap)


def test_zero_cap_skips_thinking(tiny_random_model):
    model, tokenizer = tiny_random_model
    (r,) = decode(model, tokenizer, PROMPTS[:1], think_caps=0, answer_cap=4)
    assert r.completion.startswith(THINK_CLOSE + ANSWER_OPEN)
    assert r.telemetry.think_tokens == 0 and r.think_text == ""
    assert r.telemetry.forced_think_close


def test_answer_cap_forces_close(tiny_random_model):
    model, tokenizer = tiny_random_model
    results = decode(model, tokenizer, PROMPTS, think_caps=3, answer_cap=2, temperature=1.0, seed=2)
    for r in results:
        assert r.telemetry.answer_tokens <= 2
        assert r.completion.endswith(ANSWER_CLOSE)
    assert any(r.telemetry.forced_answer_close for r in results)


def test_per_row_caps(tiny_random_model):
    model, tokenizer = tiny_random_model
    results = decode(
        model, tokenizer, PROMPTS, think_caps=[0, 3, 9], answer_cap=3, temperature=1.0, seed=0
    )
    assert [r.telemetry.think_tokens <= c for r, c in zip(results, [0, 3, 9], strict=True)] == [
        True
    ] * 3
    with pytest.raises(ValueError, match="think caps"):
        decode(model, tokenizer, PROMPTS, think_caps=[1, 2])


def test_sampling_is_reproducible_by_seed(tiny_random_model):
    model, tokenizer = tiny_random_model

    def run(seed: int) -> list[str]:
        results = decode(
            model, tokenizer, PROMPTS, think_caps=12, temperature=1.0, top_p=0.9, seed=seed
        )
        return [r.completion for r in results]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_on_token_sees_every_emitted_token(tiny_random_model):
    model, tokenizer = tiny_random_model
    seen: dict[int, list[int]] = {}
    results = decode(
        model,
        tokenizer,
        PROMPTS,
        think_caps=4,
        answer_cap=3,
        temperature=1.0,
        seed=3,
        on_token=lambda row, phase, token: seen.setdefault(row, []).append(token),
    )
    for row, r in enumerate(results):
        assert tokenizer.decode(seen[row], skip_special_tokens=False) == r.completion


def test_contract_shape_of_prompt_plus_completion(embedded):
    model, tokenizer = embedded
    (r,) = decode(model, tokenizer, ["Add 37 and 45\n<think>"])
    assert reasoning_structure_error("Add 37 and 45\n<think>" + r.completion) is None
    assert r.answer == "82"


def test_batch_equals_single_rows_greedy(embedded):
    model, tokenizer = embedded
    prompts = [
        "Add 371 and 45\n<think>",
        "Subtract 19 from 802\n<think>",
        "Multiply 77 by 6\n<think>",
        "What does f(3) return?\ndef f(x):\n  x = x * 2\n  return x\n<think>",
    ]
    batch = [r.completion for r in decode(model, tokenizer, prompts, think_caps=[200, 200, 8, 200])]
    single = [
        decode(model, tokenizer, [p], think_caps=c)[0].completion
        for p, c in zip(prompts, [200, 200, 8, 200], strict=True)
    ]
    assert batch == single


# --- the engine with introspection parts -----------------------------------------------------


def _introspective_engine(model, tokenizer, **config):
    import torch

    from tina.core.introspection import attach_introspection
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig

    intro = attach_introspection(model)
    with torch.no_grad():
        for adapter in intro.adapters.values():
            adapter.global_gate.fill_(1.0)
    return Engine(model, tokenizer, intro, EngineConfig(**config)), intro


def test_one_prefill_then_one_forward_per_token(tiny_fresh):
    from tina.engine.types import Request

    model, tokenizer = tiny_fresh
    engine, _ = _introspective_engine(model, tokenizer, slack_ratio=0.0, max_answer_tokens=5)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    emitted_ids: list[int] = []
    engine.generate(
        [Request("Add 1 and 2", budget=7, temperature=1.0, seed=4)],
        on_token=lambda row, phase, token: emitted_ids.append(token),
    )
    handle.remove()
    emitted = len(emitted_ids)
    # prefill + one forward per emitted token except the last (</answer> is never fed back)
    assert len(calls) == engine.forward_calls == 1 + emitted - 1


def test_heads_drive_plan_budget_and_telemetry(tiny_fresh):
    from tina.engine.types import Request

    model, tokenizer = tiny_fresh
    engine, intro = _introspective_engine(model, tokenizer, budget_cap=40, slack_ratio=0.25)
    (r,) = engine.generate([Request("Add 12 and 30", temperature=1.0, seed=1)])
    t = r.telemetry
    assert t.plan in ("direct", "compute", "trace", "search")
    assert abs(sum(t.plan_probs.values()) - 1) < 1e-5
    assert 0 <= t.predicted_budget <= intro.heads.config.b_max
    expected_budget = 0 if t.plan == "direct" else min(40, round(t.predicted_budget))
    assert t.budget == expected_budget
    assert t.soft_cap == int(expected_budget * 1.25)
    assert t.think_tokens <= t.soft_cap
    assert 0 < t.confidence_before < 1 and 0 < t.confidence_after < 1
    assert t.plan != "direct" and t.think_tokens > 0  # seeded heads: it thinks, gates are read
    assert 0 < t.gate_activity <= 1 and 0 < t.gate_coverage <= 1


def test_fixed_budget_overrides_heads(tiny_fresh):
    from tina.engine.types import Request

    model, tokenizer = tiny_fresh
    engine, _ = _introspective_engine(model, tokenizer, slack_ratio=0.0)
    results = engine.generate([Request("x", budget=b, temperature=1.0, seed=b) for b in (0, 3, 11)])
    assert [r.telemetry.budget for r in results] == [0, 3, 11]
    assert all(r.telemetry.think_tokens <= b for r, b in zip(results, (0, 3, 11), strict=True))


def test_adapters_act_only_on_think_tokens(tiny_fresh):
    """With a fixed budget of 0 nothing is a think token: the adapters never run, so the result
    equals the bare model's; with thinking they change the decode."""
    import torch

    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig, Request

    model, tokenizer = tiny_fresh
    no_thinking = Request("Add 1 and 2", budget=0)
    thinking = Request("Add 1 and 2", budget=20, slack_ratio=0.0)
    bare = Engine(model, tokenizer, config=EngineConfig()).generate([no_thinking, thinking])
    engine, intro = _introspective_engine(model, tokenizer)
    with torch.no_grad():  # adapters strong enough to move the tiny model's greedy choice
        for adapter in intro.adapters.values():
            adapter.up.weight.mul_(10.0)
    (r,) = engine.generate([no_thinking])
    assert r.completion == bare[0].completion
    assert r.telemetry.gate_coverage == 0.0
    # ...while thinking does change the decode (the adapters are awake)
    (thought,) = engine.generate([thinking])
    assert thought.telemetry.think_tokens > 0
    assert thought.telemetry.gate_coverage > 0 and thought.telemetry.gate_activity > 0
    assert thought.think_text != bare[1].think_text


def test_low_confidence_extends_the_budget_once(tiny_fresh):
    from tina.engine.types import Request

    model, tokenizer = tiny_fresh
    engine, _ = _introspective_engine(
        model,
        tokenizer,
        slack_ratio=0.0,
        extend_on_low_confidence=True,
        extension_threshold=1.01,
        extension_ratio=1.0,
    )
    (r,) = engine.generate([Request("Add 1 and 2", budget=6, temperature=1.0, seed=9)])
    assert r.telemetry.extended and r.telemetry.soft_cap == 12
    assert 6 < r.telemetry.think_tokens <= 12  # thought past the first cap
    engine.config.extension_threshold = -1.0  # never low: no extension
    (r,) = engine.generate([Request("Add 1 and 2", budget=6, temperature=1.0, seed=9)])
    assert not r.telemetry.extended and r.telemetry.soft_cap == 6
