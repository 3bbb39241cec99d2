"""On-policy thinking: the model's own thinks, sampled through the engine, as training records.

What it does:
- `record_prompt(record)`: a contract record's prompt in contract form, up to and including
  `<think>` (the records it writes stay in contract form; training renders them through the
  model's chat template);
- `with_own_think(record, completion, gold)`: the record's prompt, a completion's think and the
  gold answer — the text every on-policy record (here and in `tina.train.budget_search`) trains on;
- `sample_records(engine, records, config, seed)`: one engine batch (the same decode loop as
  serving: heads' plan and budget, soft cap, adapters on think tokens) over the records'
  questions, each rendered by the model's own chat template (as serving renders it);
  each sample becomes a new record whose text is the prompt, the model's own think and the GOLD
  answer, with `correct` (the sampled answer scored by `tina.data.tasks.scoring.score_record`),
  `think_tokens_used` (the engine's count; kept only when the answer was correct, so the budget
  head learns the length that sufficed), `lm_weight` (1 when correct, else 0: only thinks
  that led to a correct answer are imitated, think and answer, as in STaR; a wrong one still
  teaches the heads its plan, and the confidence head that it failed) and `sampled_answer`.
  A sample whose text breaks the reasoning structure (e.g. the model wrote `<answer>` inside
  its thinking) is replaced by its source record, counted in the returned stats.

Sampling seeds are a pure function of `seed` and the row, so a resumed run draws the same
samples as an uninterrupted one.

What it does not do: choose budgets per item (the minimal-budget search of the budget-learning
recipe builds on this), run losses or update weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tina.core.tags import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    THINK_CLOSE,
    THINK_OPEN,
    extract_answer,
    reasoning_structure_error,
    strip_tags,
    text_question,
)
from tina.data.tasks.scoring import score_record
from tina.engine.loop import Engine
from tina.engine.types import Request


@dataclass
class OnPolicyConfig:
    """How on-policy thinks are sampled."""

    temperature: float = 0.7  #: sampling temperature of the think (0 = greedy)
    top_p: float = 0.95  #: nucleus mass
    budget: int | None = None  #: fixed think budget; None: the heads' budget (engine default)
    slack_ratio: float | None = None  #: soft-cap slack; None: the engine's


def record_prompt(record: dict[str, Any]) -> str:
    """The record's text up to and including its first `<think>` (ValueError without one)."""
    text = str(record["text"])
    at = text.find(THINK_OPEN)
    if at < 0:
        raise ValueError(f"record {record.get('id', '?')}: text has no {THINK_OPEN}")
    return text[: at + len(THINK_OPEN)]


def with_own_think(record: dict[str, Any], completion: str, gold: str | None = None) -> str:
    """The record's prompt, the think of an engine `completion` (up to its `</think>`; empty
    when it has none; a stray tag the model wrote inside it removed), and the gold answer
    (default: the record's own)."""
    think = strip_tags(completion.split(THINK_CLOSE, 1)[0]) if THINK_CLOSE in completion else ""
    answer = extract_answer(str(record["text"])) if gold is None else gold
    return f"{record_prompt(record)}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def sample_records(
    engine: Engine,
    records: Sequence[dict[str, Any]],
    config: OnPolicyConfig,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """On-policy records for `records` (see module docstring) and stats: `on_policy_correct`
    (share of correct samples), `on_policy_think_tokens` (mean), `on_policy_invalid` (share
    replaced by their source)."""
    requests = [
        Request(
            prompt=text_question(str(r["text"])),  # rendered by the model's own chat template
            rendered=False,
            budget=config.budget,
            slack_ratio=config.slack_ratio,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=(seed * 1_000_003 + i) % (2**63),
        )
        for i, r in enumerate(records)
    ]
    results = engine.generate(requests)
    out: list[dict[str, Any]] = []
    correct = invalid = 0
    think_tokens = 0
    for record, result in zip(records, results, strict=True):
        text = with_own_think(record, result.completion)
        think_tokens += result.telemetry.think_tokens
        if reasoning_structure_error(text) is not None:
            invalid += 1
            out.append(dict(record))
            continue
        ok = bool(score_record(result.answer, record))
        correct += ok
        new = {k: v for k, v in record.items() if k != "think_tokens_used"}
        new.update(
            text=text,
            correct=ok,
            lm_weight=1.0 if ok else 0.0,
            sampled_answer=result.answer,
            on_policy=True,
        )
        if ok:
            new["think_tokens_used"] = result.telemetry.think_tokens
        out.append(new)
    n = max(1, len(records))
    return out, {
        "on_policy_correct": correct / n,
        "on_policy_think_tokens": think_tokens / n,
        "on_policy_invalid": invalid / n,
    }
