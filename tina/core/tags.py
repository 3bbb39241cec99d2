"""Reasoning tags: the one place that knows `<think>`, `<answer>` and their kin.

What it does:
- names the tags (`<think> </think> <answer> </answer> <reflect> </reflect> <program> </program>`)
  and the stop sequences every decoder uses;
- text level: `extract_answer` (the only answer extractor in Tina), `split_reasoning`
  (think text / answer text, for visible chain of thought), `strip_tags`, `text_question`
  (a contract text's question, for any model's chat template),
  `reasoning_structure_error` (the data contract's tag rule);
- token level: `ensure_reasoning_tokens` (each tag one id, round-trips; adds missing ones and
  resizes embeddings) and `segment_and_masks` (input ids plus loss/think/answer masks).

What it does not do: decoding, budgets or redaction (those live in their own modules and call
this one), nor reading JSONL (see `tina.data.contract`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
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

_TAG_RE = re.compile("|".join(re.escape(t) for t in REASONING_TAGS))
_THINK_TAGS = (THINK_OPEN, THINK_CLOSE)
_SIDE_PAIRS: tuple[tuple[str, str], ...] = (
    (REFLECT_OPEN, REFLECT_CLOSE),
    (PROGRAM_OPEN, PROGRAM_CLOSE),
)


def strip_tags(text: str) -> str:
    """Remove every reasoning tag string from `text` (the content between tags stays).

    Removal is repeated until no tag is left, so fragments that join into a tag once an inner
    tag is gone (`"<thi</think>nk>"`) are removed too: the result never contains a tag.
    """
    while True:
        stripped = _TAG_RE.sub("", text)
        if stripped == text:
            return text
        text = stripped


@dataclass(frozen=True)
class _Tag:
    start: int
    end: int
    tag: str


def _find_tags(text: str) -> list[_Tag]:
    return [_Tag(m.start(), m.end(), m.group()) for m in _TAG_RE.finditer(text)]


def _hidden_mask(text: str, tags: list[_Tag]) -> bytearray:
    """One byte per character of `text`: 1 where the character is hidden reasoning (or prompt).

    - Thinking: everything before the end of the last `</think>`. A completion may start inside
      thinking (the prompt ended with `<think>`), so text before a `</think>` is never known to
      be outside a think segment; this hides the content of every closed think segment, nested
      or doubled ones included.
    - `<reflect>`/`<program>`: from an outermost opening tag to its matching closing tag
      (nesting counted; a closing tag with nothing open is a stray tag, not a segment).
    - A segment opened but never closed (think tags counted with nesting and a stray
      `</think>` closing nothing, the outermost unclosed `<think>`; an unmatched
      `<reflect>`/`<program>`) runs up to the next `<answer>` not hidden by the rules above, or
      to the end of the text.
    """
    hidden = bytearray(len(text))

    def hide(a: int, b: int) -> None:
        hidden[a:b] = b"\x01" * (b - a)

    unclosed: list[int] = []
    closes = [t for t in tags if t.tag == THINK_CLOSE]
    thought_until = closes[-1].end if closes else 0
    hide(0, thought_until)
    depth, outermost_open = 0, 0
    for t in tags:
        if t.tag == THINK_OPEN:
            if depth == 0:
                outermost_open = t.start
            depth += 1
        elif t.tag == THINK_CLOSE:
            depth = max(depth - 1, 0)  # a stray `</think>` closes a segment the prompt opened
    if depth > 0:
        unclosed.append(outermost_open)
    for open_tag, close_tag in _SIDE_PAIRS:
        stack: list[int] = []
        for t in tags:
            if t.tag == open_tag:
                stack.append(t.start)
            elif t.tag == close_tag and stack:
                outermost = stack[0]
                stack.pop()
                if not stack:
                    hide(outermost, t.end)
        if stack:
            unclosed.append(stack[0])
    # Ends are computed before any unclosed run is hidden, so the order of runs is irrelevant.
    runs = []
    for s in unclosed:
        end = next(
            (t.start for t in tags if t.tag == ANSWER_OPEN and t.start > s and not hidden[t.start]),
            len(text),
        )
        runs.append((s, end))
    for s, end in runs:
        hide(s, end)
    return hidden


def _visible_text(text: str, drop: bytearray, a: int, b: int) -> str:
    """The characters of `text[a:b]` whose `drop` byte is 0, in order."""
    parts = []
    i = a
    while i < b:
        j = drop.find(b"\x01", i, b)
        if j < 0:
            j = b
        parts.append(text[i:j])
        k = drop.find(b"\x00", j, b)
        i = b if k < 0 else k
    return "".join(parts)


def extract_answer(text: str) -> str:
    """The user-visible answer in a completion. Every caller in Tina uses this function.

    Hidden reasoning is found first (see below); tags inside it do not count. Then:
    1. If a `<answer>` occurs outside hidden reasoning (so after the last `</think>`), the
       answer is the text after the first such one up to the next such `</answer>` (or the end
       of the text when the answer was cut off before closing).
    2. Else, if any think tag occurs, the answer is the text after the last `</think>`
       (empty when thinking never closed: everything was thinking).
    3. Else the whole text is the answer.
    Hidden reasoning inside the chosen span is dropped, tag strings are removed, and surrounding
    whitespace is stripped. The result never contains a reasoning tag, and never contains the
    content of a closed think segment (not even a `<answer>` written inside one).

    Hidden reasoning: everything before the last `</think>` (a completion may start inside
    thinking when the prompt ended with `<think>`); each `<reflect>`/`<program>` segment
    (nesting counted); and a segment left open (a `<think>` never balanced by a `</think>`,
    counting nesting; an unmatched `<reflect>`/`<program>`), which runs up to the next
    `<answer>` outside hidden reasoning, or to the end of the text.
    """
    tags = _find_tags(text)
    if not tags:
        return text.strip()
    hidden = _hidden_mask(text, tags)
    visible_tags = [t for t in tags if not hidden[t.start]]
    answer_open = next((t for t in visible_tags if t.tag == ANSWER_OPEN), None)
    if answer_open is not None:
        a = answer_open.end
        b = next(
            (t.start for t in visible_tags if t.tag == ANSWER_CLOSE and t.start >= a), len(text)
        )
    elif any(t.tag in _THINK_TAGS for t in tags):
        closes = [t for t in tags if t.tag == THINK_CLOSE]
        a = closes[-1].end if closes else len(text)
        b = len(text)
    else:
        a, b = 0, len(text)
    for t in tags:
        hidden[t.start : t.end] = b"\x01" * (t.end - t.start)
    return strip_tags(_visible_text(text, hidden, a, b)).strip()


def text_question(text: str) -> str:
    """The question of a contract text: everything before its first `<think>`, less the one
    newline the embedded template puts there (ValueError without `<think>`). Rendered by a
    tokenizer's chat template (`tina.core.models.render_prompt`) it is what that model's engine
    prefills; for the embedded template the rendering gives the text's own prompt back."""
    if THINK_OPEN not in text:
        raise ValueError(f"cannot segment text: no {THINK_OPEN!r} tag")
    prompt = text.split(THINK_OPEN, 1)[0]
    return prompt[:-1] if prompt.endswith("\n") else prompt


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a completion into (think text, answer text) for visible chain of thought.

    The think text is the content of the first think segment: from the first `<think>` to the
    next `</think>`; when no `</think>` follows, up to the next `<answer>` (the answer opened
    without closing the think) or the end of the text. When a `</think>` comes before any
    `<think>` (the prompt ended with `<think>`), it is the text before that `</think>`.
    The answer is `extract_answer(text)`. Both are stripped of tags and surrounding whitespace.
    """
    think = ""
    first = next((t for t in _find_tags(text) if t.tag in _THINK_TAGS), None)
    if first is not None and first.tag == THINK_CLOSE:
        think = text[: first.start]
    elif first is not None:
        body = text[first.end :]
        end = body.find(THINK_CLOSE)
        if end < 0:
            end = body.find(ANSWER_OPEN)
        think = body if end < 0 else body[:end]
    return strip_tags(think).strip(), extract_answer(text)


def reasoning_structure_error(text: str) -> str | None:
    """The data contract's tag rule; None when `text` satisfies it, else the broken rule.

    A record's text holds exactly one `<think>`, one `</think>`, one `<answer>` and one
    `</answer>`, in the order `<think> … </think> … <answer> … </answer>`, and the answer is not
    empty (whitespace only counts as empty). Optional `<reflect>`/`<program>` pairs must be
    closed in order where they appear: a segment does not nest inside one of its own kind,
    closes the innermost open segment, and lies inside one think/answer region (no think or
    answer tag between its opening and closing tags).
    """
    counts = {tag: text.count(tag) for tag in REASONING_TAGS}
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        if counts[tag] != 1:
            return f"expected exactly one {tag}, found {counts[tag]}"
    t0, t1 = text.index(THINK_OPEN), text.index(THINK_CLOSE)
    a0, a1 = text.index(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if not t0 < t1 < a0 < a1:
        return "tags out of order: expected <think> … </think> … <answer> … </answer>"
    closing = {close_tag: open_tag for open_tag, close_tag in _SIDE_PAIRS}
    stack: list[str] = []
    for t in _find_tags(text):
        if t.tag in closing:
            if not stack or stack[-1] != closing[t.tag]:
                return f"{t.tag} closes a segment that is not the innermost open one"
            stack.pop()
        elif t.tag in (REFLECT_OPEN, PROGRAM_OPEN):
            if t.tag in stack:
                return f"{t.tag} segments must not nest"
            stack.append(t.tag)
        elif stack:
            return f"{stack[-1]} segment crosses {t.tag}: close it first"
    if stack:
        return f"unclosed {stack[-1]}"
    if not extract_answer(text):
        return "empty <answer> segment"
    return None


# --- token level ----------------------------------------------------------------------------


@dataclass
class SegmentedExample:
    """Token ids of one contract text and its masks (all lists of the same length).

    `loss_mask` is 1 on the completion: every token after `<think>` (the prompt, including
    `<think>` itself, is context). `think_mask` is 1 strictly between `<think>` and `</think>`;
    `answer_mask` strictly between `<answer>` and `</answer>`. These are the positions where
    the side adapters act (think) and where answer cross-entropy is taken (answer).
    `reflect_mask` / `program_mask` are 1 strictly inside every `<reflect>…</reflect>` /
    `<program>…</program>` pair (the reflection and program CE positions; all 0 when absent).
    """

    input_ids: list[int]
    attention_mask: list[int]
    loss_mask: list[int]
    think_mask: list[int]
    answer_mask: list[int]
    reflect_mask: list[int] = field(default_factory=list)
    program_mask: list[int] = field(default_factory=list)


def _inside(input_ids: list[int], open_id: int, close_id: int) -> list[int]:
    """1 strictly inside each (possibly nested) open…close pair of tag ids, else 0."""
    depth, mask = 0, []
    for token in input_ids:
        if token == close_id:
            depth = max(0, depth - 1)
        mask.append(1 if depth > 0 and token != open_id else 0)
        if token == open_id:
            depth += 1
    return mask


def ends_step(token_text: str) -> bool:
    """Whether a think token's text ends a reasoning step: a `;` or a `. ` at its end, or a
    newline in it. The engine closes thinking at the step end nearest a row's budget (before
    its soft cap), so a cut never falls in the middle of a step (a half-written
    `6+6+0=1` makes the answer that follows it wrong)."""
    return "\n" in token_text or token_text.endswith((";", ". "))


def tag_ids(tokenizer: Any) -> dict[str, int]:
    """The single token id of each reasoning tag; raises ValueError naming a tag that is not
    exactly one id or does not round-trip."""
    ids: dict[str, int] = {}
    for tag in REASONING_TAGS:
        encoded = list(tokenizer.encode(tag, add_special_tokens=False))
        if len(encoded) != 1:
            raise ValueError(
                f"reasoning tag {tag!r} encodes to {len(encoded)} ids {encoded}, expected exactly"
                " 1 (call ensure_reasoning_tokens on this tokenizer)"
            )
        decoded = tokenizer.decode(encoded, skip_special_tokens=False)
        if decoded != tag:
            raise ValueError(f"reasoning tag {tag!r} does not round-trip: decodes to {decoded!r}")
        ids[tag] = int(encoded[0])
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"reasoning tags share token ids: {ids}")
    return ids


def _is_added_token(tokenizer: Any, tag: str) -> bool:
    """Whether `tag` is already an added token (matched before the model splits the text, so
    one id in any context). Tokenizers without an added-token table fall back to the vocab."""
    added = getattr(tokenizer, "added_tokens_encoder", None)
    if isinstance(added, dict):
        return tag in added
    return tag in tokenizer.get_vocab()


def knows_thinking_tags(tokenizer: Any) -> bool:
    """Whether the tokenizer carried `<think>` and `</think>` before Tina added any: a model
    trained with them (DeepSeek-R1-Distill, the embedded model, a Tina adapter's tokenizer)."""
    return all(_is_added_token(tokenizer, tag) for tag in (THINK_OPEN, THINK_CLOSE))


def ensure_reasoning_tokens(tokenizer: Any, model: Any = None) -> dict[str, int]:
    """Make every reasoning tag a single token id; returns {tag: id}.

    Tags the tokenizer already carries as added tokens (DeepSeek-R1-Distill carries
    `<think>`/`</think>`) keep their ids and flags. The others are added as special tokens, in
    `REASONING_TAGS` order; one that is a plain vocabulary entry keeps its id but becomes an
    added token, so it is never merged with its neighbours. Existing extra special tokens are
    kept. Each tag is then checked to encode to exactly one id and to decode back to itself; a
    tag that does not gets a ValueError naming it.

    With a model, its input embeddings (and the tied or untied output embeddings) are resized
    to `len(tokenizer)` when they have fewer rows than that; a larger, padded embedding matrix
    (as Qwen checkpoints ship) is left as it is.
    """
    missing = [tag for tag in REASONING_TAGS if not _is_added_token(tokenizer, tag)]
    if missing:
        tokenizer.add_special_tokens(
            {"extra_special_tokens": missing}, replace_extra_special_tokens=False
        )
    ids = tag_ids(tokenizer)
    if model is not None:
        rows = int(model.get_input_embeddings().weight.shape[0])
        if rows < len(tokenizer):
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # its note on how new rows are initialised
            try:
                model.resize_token_embeddings(len(tokenizer))
            finally:
                hf_logging.set_verbosity(verbosity)
            rows = int(model.get_input_embeddings().weight.shape[0])
        too_big = {tag: i for tag, i in ids.items() if i >= rows}
        if too_big:
            raise ValueError(f"reasoning tag ids {too_big} exceed the model's {rows} embeddings")
    return ids


def segment_and_masks(tokenizer: Any, text: str, max_length: int | None = None) -> SegmentedExample:
    """Tokenize a contract text (prompt + `<think>…</think><answer>…</answer>` + optional eos)
    and build its masks; see `SegmentedExample` for what each mask means.

    The text is encoded whole, without the tokenizer's own special tokens (add them to the text
    when wanted). It must satisfy `reasoning_structure_error`; a ValueError says which rule it
    breaks. Each think/answer tag must come out as its single id (see `ensure_reasoning_tokens`),
    else a ValueError names it. With `max_length`, a longer example is a ValueError (cutting
    would drop the answer).
    """
    problem = reasoning_structure_error(text)
    if problem is not None:
        raise ValueError(f"cannot segment text: {problem}")
    ids = tag_ids(tokenizer)
    input_ids = [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]
    if max_length is not None and len(input_ids) > max_length:
        raise ValueError(f"example has {len(input_ids)} tokens, more than max_length={max_length}")
    positions = []
    for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE):
        found = [i for i, token in enumerate(input_ids) if token == ids[tag]]
        if len(found) != 1:
            raise ValueError(
                f"reasoning tag {tag!r} (id {ids[tag]}) occurs {len(found)} times in the token"
                " ids instead of once: the tokenizer split or merged it in context"
            )
        positions.append(found[0])
    t0, t1, a0, a1 = positions
    n = len(input_ids)
    return SegmentedExample(
        input_ids=input_ids,
        attention_mask=[1] * n,
        loss_mask=[1 if i > t0 else 0 for i in range(n)],
        think_mask=[1 if t0 < i < t1 else 0 for i in range(n)],
        answer_mask=[1 if a0 < i < a1 else 0 for i in range(n)],
        reflect_mask=_inside(input_ids, ids[REFLECT_OPEN], ids[REFLECT_CLOSE]),
        program_mask=_inside(input_ids, ids[PROGRAM_OPEN], ids[PROGRAM_CLOSE]),
    )


def leaks_reasoning(shown: str, think_text: str, min_span: int = 16) -> bool:
    """True when `shown` (hidden-CoT output) contains a reasoning tag, or any `min_span`-character
    span of `think_text` (the hidden thinking). Short spans are not counted: an answer is often
    also the last number of its trace."""
    if _TAG_RE.search(shown):
        return True
    think = think_text.strip()
    if len(think) < min_span or len(shown) < min_span:
        return False
    spans = {think[i : i + min_span] for i in range(len(think) - min_span + 1)}
    return any(shown[i : i + min_span] in spans for i in range(len(shown) - min_span + 1))
