"""Training batches from contract JSONL: token ids, masks, labels and metacognitive targets.

What it does:
- `load_examples` reads a contract file (`tina.data.contract.read_contract_jsonl`, strict by
  default), renders each record's prompt through the model's chat template (`chat_text`: a
  pretrained model sees its system prompt and turn markers, as in serving) and tokenizes it with
  `tina.core.tags.segment_and_masks` (the one place that knows where think and answer are),
  keeping the head targets: plan class index, budget target (`think_tokens_used` when present — the
  on-policy measurement — else `target_budget`), correctness, constraint vector, and the
  `rewrite_pair_id`; a file that is missing, breaks the contract (strict) or holds no record is
  a `TrainDataError` naming it;
- `batch_order` groups examples into batches, keeping paraphrase pairs (records sharing a
  `rewrite_pair_id`) in the same batch and next to each other, seeded;
- `length_grouped_batches`: seeded batches of rows of like length (less padding);
- `collate` right-pads a batch into tensors: `input_ids`, `attention_mask`, `labels` (-100
  outside the completion), `loss_mask`, `think_mask`, `answer_mask`, `prompt_mask` (the prompt
  up to and including `<think>`: what the heads pool, exactly the positions the engine's
  prefill sees), `plan_targets` (-100 unknown), `budget_targets` (-1 unknown), `correct`
  (-1 unknown), `lm_weight` (0 drops the row from think and answer CE), `pair_index` (the
  batch row of each row's paraphrase partner, -1 if none),
  `style_pair` (the partner is the same item in another reasoning style: a style-invariance pair
  rather than a paraphrase), and, when some row has them, `reflect_mask`/`program_mask` and
  `constraint_targets`/`constraint_present`.

What it does not do: losses, model forwards or distributed sharding (the trainer and
Accelerate do those).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tina.core.models import render_prompt
from tina.core.plans import plan_index
from tina.core.tags import THINK_OPEN, segment_and_masks, text_question
from tina.data.contract import ContractError, read_contract_jsonl


class TrainDataError(ValueError):
    """A training data file that cannot be trained on (missing, a bad record, no records);
    `str()` is one line naming the file."""


@dataclass
class Example:
    """One tokenized record with its targets."""

    input_ids: list[int]
    loss_mask: list[int]
    think_mask: list[int]
    answer_mask: list[int]
    prompt_length: int  #: tokens of the prompt including `<think>`
    plan: int = -100  #: plan class index, -100 unknown
    budget: float = -1.0  #: think-token budget target, -1 unknown
    correct: float = -1.0  #: 1 correct, 0 wrong, -1 unknown
    #: correctness of an answer given right after this record's think (record `correct_after`,
    #: else `correct`): what the confidence read at `</think>` and at the last think token learns
    correct_after: float = -1.0
    constraint: list[float] | None = None  #: constraint vector, if the record has one
    pair_id: str | None = None  #: `rewrite_pair_id`, if any
    style: str | None = None  #: the record's reasoning `style`, if any
    lm_weight: float = 1.0  #: 0: no think/answer CE on this row (record `lm_weight`)
    reflect_mask: list[int] | None = None  #: inside `<reflect>` segments (None: no segment)
    program_mask: list[int] | None = None  #: inside `<program>` segments (None: no segment)
    record: dict[str, Any] = field(default_factory=dict)  #: the source record


def chat_text(tokenizer: Any, text: str, eos: bool = False) -> str:
    """A contract text as the model sees it: its question (`tina.core.tags.text_question`)
    rendered by the tokenizer's chat template
    (`tina.core.models.render_prompt`, ending with `<think>`), then the record's think and
    answer as written, then the tokenizer's eos when `eos` (the end of the assistant turn). For
    the embedded model's template the text comes back unchanged."""
    question = text_question(text)  # the ValueError for a text without `<think>`
    rendered = render_prompt(tokenizer, question) + text.split(THINK_OPEN, 1)[1]
    return rendered + tokenizer.eos_token if eos and tokenizer.eos_token else rendered


def example_from_record(
    tokenizer: Any, record: dict[str, Any], max_length: int | None = None, eos: bool = False
) -> Example:
    """Tokenize one contract record, its prompt through the tokenizer's chat template
    (`chat_text`; see module docstring for the targets)."""
    text = chat_text(tokenizer, record["text"], eos)
    seg = segment_and_masks(tokenizer, text, max_length=max_length)
    prompt_length = seg.loss_mask.index(1) if 1 in seg.loss_mask else len(seg.input_ids)
    budget = record.get("think_tokens_used", record.get("target_budget", -1))
    correct = record.get("correct")
    after = record.get("correct_after", correct)
    pair = record.get("rewrite_pair_id")
    return Example(
        input_ids=seg.input_ids,
        loss_mask=seg.loss_mask,
        think_mask=seg.think_mask,
        answer_mask=seg.answer_mask,
        prompt_length=prompt_length,
        plan=plan_index(record["plan_class"]) if "plan_class" in record else -100,
        budget=float(budget),
        correct=-1.0 if correct is None else float(bool(correct)),
        correct_after=-1.0 if after is None else float(bool(after)),
        constraint=[float(v) for v in record["constraint_vec"]]
        if "constraint_vec" in record
        else None,
        pair_id=None if pair is None else str(pair),
        style=record.get("style"),
        lm_weight=float(record.get("lm_weight", 1.0)),
        reflect_mask=seg.reflect_mask if any(seg.reflect_mask) else None,
        program_mask=seg.program_mask if any(seg.program_mask) else None,
        record=record,
    )


def load_examples(
    tokenizer: Any,
    path: str | Path,
    strict: bool = True,
    max_length: int | None = None,
    eos: bool = False,
) -> list[Example]:
    """Every record of a contract JSONL file as an `Example`; a `TrainDataError` naming the file
    when it is missing or unreadable, when a record is bad (`strict`; else bad ones are skipped),
    or when no record is left to train on."""
    try:
        result = read_contract_jsonl(path, strict=strict)
    except FileNotFoundError:
        raise TrainDataError(f"{path}: file not found") from None
    except ContractError as exc:  # already `file:line: rule: detail`
        raise TrainDataError(str(exc)) from exc
    except OSError as exc:
        raise TrainDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    examples = []
    for line, record in zip(result.line_numbers, result.records, strict=True):
        try:
            examples.append(example_from_record(tokenizer, record, max_length, eos))
        except ValueError as exc:
            if strict:
                raise TrainDataError(f"{path}:{line}: {exc}") from None
    if not examples:
        skipped = len(result.records) + sum(result.skipped.values())
        why = f" ({skipped} bad records skipped)" if skipped else ""
        raise TrainDataError(f"{path}: no records to train on{why}")
    return examples


def batch_order(examples: Sequence[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Batches of example indices: shuffled by `seed`, paraphrase pairs kept together."""
    groups: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for i, ex in enumerate(examples):
        if ex.pair_id is None:
            units.append([i])
        else:
            groups.setdefault(ex.pair_id, []).append(i)
    units += list(groups.values())
    random.Random(seed).shuffle(units)
    batches: list[list[int]] = []
    current: list[int] = []
    for unit in units:
        if current and len(current) + len(unit) > batch_size:
            batches.append(current)
            current = []
        current += unit
    if current:
        batches.append(current)
    return batches


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, megabatch: int = 50
) -> list[list[int]]:
    """Batches of indices with rows of like length together (less padding), as transformers'
    `group_by_length`: shuffle by `seed`, sort each run of `megabatch` batches by length, cut
    it into batches, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    step = batch_size * megabatch
    for start in range(0, len(order), step):
        chunk = sorted(order[start : start + step], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors of a batch (see module docstring for each key)."""
    width = max(len(ex.input_ids) for ex in examples)
    n = len(examples)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)

    input_ids = pad([ex.input_ids for ex in examples], pad_id)
    loss_mask = pad([ex.loss_mask for ex in examples], 0)
    labels = input_ids.masked_fill(loss_mask == 0, -100)
    prompt_mask = torch.zeros(n, width, dtype=torch.long)
    for i, ex in enumerate(examples):
        prompt_mask[i, : ex.prompt_length] = 1
    pair_index = torch.full((n,), -1, dtype=torch.long)
    by_pair: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        if ex.pair_id is not None:
            by_pair.setdefault(ex.pair_id, []).append(i)
    for rows in by_pair.values():
        for a, b in zip(rows[0::2], rows[1::2], strict=False):
            pair_index[a], pair_index[b] = b, a
    batch = {
        "input_ids": input_ids,
        "attention_mask": pad([[1] * len(ex.input_ids) for ex in examples], 0),
        "labels": labels,
        "loss_mask": loss_mask,
        "think_mask": pad([ex.think_mask for ex in examples], 0),
        "answer_mask": pad([ex.answer_mask for ex in examples], 0),
        "prompt_mask": prompt_mask,
        "plan_targets": torch.tensor([ex.plan for ex in examples], dtype=torch.long),
        "budget_targets": torch.tensor([ex.budget for ex in examples], dtype=torch.float32),
        "correct": torch.tensor([ex.correct for ex in examples], dtype=torch.float32),
        "correct_after": torch.tensor([ex.correct_after for ex in examples], dtype=torch.float32),
        "pair_index": pair_index,
        "lm_weight": torch.tensor([ex.lm_weight for ex in examples], dtype=torch.float32),
    }
    batch["style_pair"] = torch.tensor(
        [
            int(pair_index[i]) >= 0 and examples[int(pair_index[i])].style != ex.style
            for i, ex in enumerate(examples)
        ]
    )
    for key in ("reflect_mask", "program_mask"):
        if any(getattr(ex, key) is not None for ex in examples):
            batch[key] = pad([getattr(ex, key) or [0] * len(ex.input_ids) for ex in examples], 0)
    if any(ex.constraint is not None for ex in examples):
        dim = max(len(ex.constraint or []) for ex in examples)
        batch["constraint_targets"] = torch.tensor(
            [(ex.constraint or []) + [0.0] * (dim - len(ex.constraint or [])) for ex in examples]
        )
        batch["constraint_present"] = torch.tensor([ex.constraint is not None for ex in examples])
    return batch
