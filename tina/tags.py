"""Reasoning tags: the one place that knows `<think>`, `<answer>` and their kin.

What it does:
- names the tags (`<think> </think> <answer> </answer> <reflect> </reflect> <program> </program>`)
  and the stop sequences every decoder uses;
- text level: `extract_answer` (the only answer extractor in Tina), `split_reasoning`
  (think text / answer text, for visible chain of thought), `strip_tags`,
  `reasoning_structure_error` (the data contract's tag rule);
- token level: `ensure_reasoning_tokens` (each tag one id, round-trips; adds missing ones and
  resizes embeddings) and `segment_and_masks` (input ids plus loss/think/answer masks).

What it does not do: decoding, budgets or redaction (those live in their own modules and call
this one), nor reading JSONL (see `tina.contract`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
REFLECT_OPEN, REFLECT_CLOSE = "<reflect>", "</reflect>"
PROGRAM_OPEN, PROGRAM_CLOSE = "<program>", "</program>"

#: Every reasoning tag, in a fixed order (ids are assigned in this order when added).
REASONING_TAGS: tuple[str, ...] = (
    THINK_OPEN,
    THINK_CLOSE,
    ANSWER_OPEN,
    ANSWER_CLOSE,
    REFLECT_OPEN,
    REFLECT_CLOSE,
    PROGRAM_OPEN,
    PROGRAM_CLOSE,
)

#: Decoding stops on these: `</think>` ends the think phase, `</answer>` ends the request.
STOP_SEQUENCES: tuple[str, ...] = (THINK_CLOSE, ANSWER_CLOSE)

#: Hidden segments: their content is never shown in hidden-CoT mode.
_HIDDEN_PAIRS: tuple[tuple[str, str], ...] = (
    (THINK_OPEN, THINK_CLOSE),
    (REFLECT_OPEN, REFLECT_CLOSE),
    (PROGRAM_OPEN, PROGRAM_CLOSE),
)

_TAG_RE = re.compile("|".join(re.escape(t) for t in REASONING_TAGS))


def strip_tags(text: str) -> str:
    """Remove every reasoning tag string from `text` (the content between tags stays)."""
    return _TAG_RE.sub("", text)


def _drop_hidden_spans(text: str) -> str:
    """Remove hidden segments (think/reflect/program) with their content; an unclosed one
    runs to the end of the text and is removed too."""
    out = text
    for open_tag, close_tag in _HIDDEN_PAIRS:
        pattern = re.compile(re.escape(open_tag) + ".*?(?:" + re.escape(close_tag) + "|$)", re.S)
        out = pattern.sub("", out)
    return out


def extract_answer(text: str) -> str:
    """The user-visible answer in a completion. Every caller in Tina uses this function.

    Rules, in order:
    1. If `<answer>` occurs, the answer is the text after its first occurrence up to the next
       `</answer>` (or the end of the text when the answer was cut off before closing).
    2. Else, if any hidden tag occurs, the answer is the text after the last `</think>`
       (empty when thinking never closed: everything was thinking).
    3. Else (no tags at all) the whole text is the answer.
    Hidden segments inside the chosen span are dropped, remaining tag strings are removed, and
    surrounding whitespace is stripped. The result never contains a reasoning tag.
    """
    start = text.find(ANSWER_OPEN)
    if start >= 0:
        body = text[start + len(ANSWER_OPEN) :]
        end = body.find(ANSWER_CLOSE)
        span = body if end < 0 else body[:end]
    elif _TAG_RE.search(text):
        last_close = text.rfind(THINK_CLOSE)
        span = "" if last_close < 0 else text[last_close + len(THINK_CLOSE) :]
    else:
        span = text
    return strip_tags(_drop_hidden_spans(span)).strip()


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a completion into (think text, answer text) for visible chain of thought.

    The think text is the content of the first `<think>` segment (to the end of the text when
    it never closed, or up to `<answer>` when the answer opened without closing the think);
    the answer is `extract_answer(text)`. Both are stripped of tags and surrounding whitespace.
    """
    think = ""
    start = text.find(THINK_OPEN)
    if start >= 0:
        body = text[start + len(THINK_OPEN) :]
        ends = [i for i in (body.find(THINK_CLOSE), body.find(ANSWER_OPEN)) if i >= 0]
        think = body[: min(ends)] if ends else body
    elif THINK_CLOSE in text:
        # Prompts that end with "<think>" leave only the closing tag in the completion.
        think = text[: text.find(THINK_CLOSE)]
    return strip_tags(think).strip(), extract_answer(text)


def reasoning_structure_error(text: str) -> str | None:
    """The data contract's tag rule; None when `text` satisfies it, else the broken rule.

    A record's text holds exactly one `<think>`, one `</think>`, one `<answer>` and one
    `</answer>`, in the order `<think> … </think> … <answer> … </answer>`. Optional
    `<reflect>`/`<program>` pairs must be balanced and closed in order where they appear.
    """
    counts = {tag: text.count(tag) for tag in REASONING_TAGS}
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if counts[tag] != 1:
            return f"expected exactly one {tag}, found {counts[tag]}"
    t0, t1 = text.index(THINK_OPEN), text.index(THINK_CLOSE)
    a0, a1 = text.index(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if not t0 < t1 <= a0 < a1:
        return "tags out of order: expected <think> … </think> … <answer> … </answer>"
    for open_tag, close_tag in ((REFLECT_OPEN, REFLECT_CLOSE), (PROGRAM_OPEN, PROGRAM_CLOSE)):
        depth = 0
        for match in re.finditer(re.escape(open_tag) + "|" + re.escape(close_tag), text):
            depth += 1 if match.group() == open_tag else -1
            if depth not in (0, 1):
                return f"{open_tag} segments must not nest or close before opening"
        if depth != 0:
            return f"unclosed {open_tag}"
    return None


# --- token level ----------------------------------------------------------------------------


@dataclass
class SegmentedExample:
    """Token ids of one contract text and its masks (all lists of the same length).

    `loss_mask` is 1 on the completion: every token after `<think>` (the prompt, including
    `<think>` itself, is context). `think_mask` is 1 strictly between `<think>` and `</think>`;
    `answer_mask` strictly between `<answer>` and `</answer>`. These are the positions where
    the side adapters act (think) and where answer cross-entropy is taken (answer).
    """

    input_ids: list[int]
    attention_mask: list[int]
    loss_mask: list[int]
    think_mask: list[int]
    answer_mask: list[int]


def tag_ids(tokenizer: Any) -> dict[str, int]:
    """The single token id of each reasoning tag; raises ValueError naming a tag that is not
    exactly one id or does not round-trip."""
    ids: dict[str, int] = {}
    for tag in REASONING_TAGS:
        encoded = tokenizer.encode(tag, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(
                f"reasoning tag {tag!r} encodes to {len(encoded)} ids {encoded}, expected exactly 1"
            )
        decoded = tokenizer.decode(encoded, skip_special_tokens=False)
        if decoded != tag:
            raise ValueError(f"reasoning tag {tag!r} does not round-trip: decodes to {decoded!r}")
        ids[tag] = encoded[0]
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"reasoning tags share token ids: {ids}")
    return ids


def ensure_reasoning_tokens(tokenizer: Any, model: Any = None) -> dict[str, int]:
    """Make every reasoning tag a single token id; returns {tag: id}.

    Tags the vocabulary already has (DeepSeek-R1-Distill carries `<think>`/`</think>`) are kept;
    the missing ones are added as special tokens. When tokens were added and a model is given,
    its input (and tied output) embeddings are resized to the new vocabulary. Finally each tag is
    checked to encode to exactly one id and to decode back to itself; a tag that does not gets a
    ValueError naming it.
    """
    vocab = tokenizer.get_vocab()
    missing = [tag for tag in REASONING_TAGS if tag not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = tag_ids(tokenizer)
    if model is not None:
        embeddings = model.get_input_embeddings()
        if embeddings.num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
    return ids


def segment_and_masks(
    tokenizer: Any, text: str, max_length: int | None = None
) -> SegmentedExample:
    """Tokenize a contract text (prompt + `<think>…</think><answer>…</answer>` + optional eos)
    and build its masks; see `SegmentedExample` for what each mask means.

    The text must satisfy `reasoning_structure_error`; a ValueError says which rule it breaks.
    With `max_length`, a longer example is a ValueError (cutting would drop the answer).
    """
    problem = reasoning_structure_error(text)
    if problem is not None:
        raise ValueError(f"cannot segment text: {problem}")
    ids = tag_ids(tokenizer)
    input_ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    if max_length is not None and len(input_ids) > max_length:
        raise ValueError(f"example has {len(input_ids)} tokens, more than max_length={max_length}")
    t0 = input_ids.index(ids[THINK_OPEN])
    t1 = input_ids.index(ids[THINK_CLOSE])
    a0 = input_ids.index(ids[ANSWER_OPEN])
    a1 = input_ids.index(ids[ANSWER_CLOSE])
    n = len(input_ids)
    return SegmentedExample(
        input_ids=input_ids,
        attention_mask=[1] * n,
        loss_mask=[1 if i > t0 else 0 for i in range(n)],
        think_mask=[1 if t0 < i < t1 else 0 for i in range(n)],
        answer_mask=[1 if a0 < i < a1 else 0 for i in range(n)],
    )
