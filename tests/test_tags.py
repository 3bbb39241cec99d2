"""Tests for `tina.core.tags`: tag atomicity, embedding resize, masks, and answer extraction."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from tina.core.tags import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    REASONING_TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    SegmentedExample,
    ensure_reasoning_tokens,
    extract_answer,
    reasoning_structure_error,
    segment_and_masks,
    split_reasoning,
    strip_tags,
    tag_ids,
)

NEW_TAGS = REASONING_TAGS[2:]  # what a tokenizer carrying <think>/</think> still lacks
TAG_PATTERN = re.compile("|".join(re.escape(t) for t in REASONING_TAGS))
SETTINGS = settings(max_examples=150, deadline=None)
# The tokenizer fixture is built once per test, not per example; ensure_reasoning_tokens is
# idempotent, so examples sharing it is fine.
TOKENIZER_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def contains_tag(text: str) -> bool:
    return TAG_PATTERN.search(text) is not None


def decode(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def tiny_qwen2(vocab_size: int) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=vocab_size,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


# --- token level: ensure_reasoning_tokens --------------------------------------------------


def assert_tags_atomic(tokenizer: Any, ids: dict[str, int]) -> None:
    assert list(ids) == list(REASONING_TAGS)
    assert len(set(ids.values())) == len(REASONING_TAGS)
    for tag, tag_id in ids.items():
        assert tokenizer.encode(tag, add_special_tokens=False) == [tag_id], tag
        assert decode(tokenizer, [tag_id]) == tag
        # one id in context too, glued to neighbouring text
        glued = tokenizer.encode(f"x{tag}y", add_special_tokens=False)
        assert glued.count(tag_id) == 1, tag
        assert decode(tokenizer, glued) == f"x{tag}y"


def test_adds_all_tags_to_tokenizer_without_any(byte_char_tokenizer: Any) -> None:
    before = len(byte_char_tokenizer)
    assert not any(tag in byte_char_tokenizer.get_vocab() for tag in REASONING_TAGS)
    ids = ensure_reasoning_tokens(byte_char_tokenizer)
    assert len(byte_char_tokenizer) == before + len(REASONING_TAGS)
    assert list(ids.values()) == list(range(before, before + len(REASONING_TAGS)))
    assert_tags_atomic(byte_char_tokenizer, ids)


def test_keeps_existing_think_ids_and_adds_the_other_six(
    byte_char_tokenizer_with_think: Any,
) -> None:
    tokenizer = byte_char_tokenizer_with_think
    vocab = tokenizer.get_vocab()
    think_ids = {THINK_OPEN: vocab[THINK_OPEN], THINK_CLOSE: vocab[THINK_CLOSE]}
    before = len(tokenizer)
    ids = ensure_reasoning_tokens(tokenizer)
    assert {tag: ids[tag] for tag in think_ids} == think_ids
    assert len(tokenizer) == before + len(NEW_TAGS)
    assert [ids[tag] for tag in NEW_TAGS] == list(range(before, before + len(NEW_TAGS)))
    assert_tags_atomic(tokenizer, ids)
    # the pre-existing tags keep their flags: still plain added tokens, not made special
    assert THINK_OPEN not in tokenizer.all_special_tokens
    assert decode(tokenizer, [ids[THINK_OPEN]]) == THINK_OPEN


def test_is_idempotent(byte_char_tokenizer_with_think: Any) -> None:
    first = ensure_reasoning_tokens(byte_char_tokenizer_with_think)
    size = len(byte_char_tokenizer_with_think)
    assert ensure_reasoning_tokens(byte_char_tokenizer_with_think) == first
    assert len(byte_char_tokenizer_with_think) == size


def test_keeps_existing_extra_special_tokens(byte_char_tokenizer: Any) -> None:
    byte_char_tokenizer.add_special_tokens({"extra_special_tokens": ["<|tool|>"]})
    tool_id = byte_char_tokenizer.convert_tokens_to_ids("<|tool|>")
    ensure_reasoning_tokens(byte_char_tokenizer)
    extra = byte_char_tokenizer.extra_special_tokens
    assert "<|tool|>" in extra
    assert all(tag in extra for tag in REASONING_TAGS)
    assert byte_char_tokenizer.encode("<|tool|>", add_special_tokens=False) == [tool_id]


def test_tag_in_base_vocab_keeps_its_id_and_becomes_atomic() -> None:
    """A tag that is a plain BPE vocabulary entry (reached by merges) keeps its id."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    for prefix_len in range(1, len(ANSWER_OPEN)):
        left, right = ANSWER_OPEN[:prefix_len], ANSWER_OPEN[prefix_len]
        merges.append((left, right))
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    answer_id = vocab[ANSWER_OPEN]
    before = len(tokenizer)
    ids = ensure_reasoning_tokens(tokenizer)
    assert ids[ANSWER_OPEN] == answer_id
    assert len(tokenizer) == before + len(REASONING_TAGS) - 1
    assert_tags_atomic(tokenizer, ids)


def test_save_and_reload_keeps_tag_ids(byte_char_tokenizer_with_think: Any, tmp_path: Any) -> None:
    ids = ensure_reasoning_tokens(byte_char_tokenizer_with_think)
    byte_char_tokenizer_with_think.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == len(byte_char_tokenizer_with_think)
    assert tag_ids(reloaded) == ids
    assert ensure_reasoning_tokens(reloaded) == ids
    assert len(reloaded) == len(byte_char_tokenizer_with_think)
    text = "Q?<think>a</think><answer>b</answer><|endoftext|>"
    assert (
        segment_and_masks(reloaded, text).input_ids
        == segment_and_masks(byte_char_tokenizer_with_think, text).input_ids
    )


@pytest.mark.parametrize("with_think", [False, True], ids=["no-tags", "r1-like"])
def test_resizes_tied_embeddings_of_tiny_qwen2(
    with_think: bool, byte_char_tokenizer: Any, byte_char_tokenizer_with_think: Any
) -> None:
    tokenizer = byte_char_tokenizer_with_think if with_think else byte_char_tokenizer
    model = tiny_qwen2(vocab_size=len(tokenizer))  # exactly as big as the tokenizer, no room
    ids = ensure_reasoning_tokens(tokenizer, model)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 32)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.vocab_size == len(tokenizer)
    example = segment_and_masks(tokenizer, "Q<think>t</think><answer>a</answer>")
    input_ids = torch.tensor([[*example.input_ids, *ids.values()]])
    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.shape == (1, input_ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_padded_embeddings_are_not_shrunk(byte_char_tokenizer: Any) -> None:
    model = tiny_qwen2(vocab_size=300)  # padded beyond the tokenizer, as Qwen checkpoints are
    ids = ensure_reasoning_tokens(byte_char_tokenizer, model)
    assert len(byte_char_tokenizer) < 300
    assert model.get_input_embeddings().weight.shape[0] == 300
    with torch.no_grad():
        logits = model(torch.tensor([list(ids.values())])).logits
    assert logits.shape[-1] == 300 >= len(byte_char_tokenizer)


class SplittingTokenizer:
    """Stub whose encoder splits one tag into two ids and cannot learn it as a token."""

    def __init__(self, split_tag: str) -> None:
        self.split_tag = split_tag
        self.vocab = {tag: i for i, tag in enumerate(REASONING_TAGS)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def add_special_tokens(self, tokens: dict[str, list[str]], **kwargs: Any) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if text == self.split_tag:
            return [100, 101]
        return [self.vocab[text]]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        names = {i: tag for tag, i in self.vocab.items()}
        return "".join(names.get(i, "?") for i in ids)


@pytest.mark.parametrize("tag", [ANSWER_CLOSE, THINK_OPEN], ids=["answer-close", "think-open"])
def test_error_names_tag_that_is_not_one_id(tag: str) -> None:
    stub = SplittingTokenizer(tag)
    with pytest.raises(ValueError, match=re.escape(repr(tag)) + r" encodes to 2 ids"):
        ensure_reasoning_tokens(stub)


def test_segment_and_masks_names_missing_tag(byte_char_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(THINK_OPEN))):
        segment_and_masks(byte_char_tokenizer, "<think>t</think><answer>a</answer>")


# --- token level: segment_and_masks ---------------------------------------------------------


def test_segment_and_masks_small_example(byte_char_tokenizer_with_think: Any) -> None:
    tokenizer = byte_char_tokenizer_with_think
    ids = ensure_reasoning_tokens(tokenizer)
    example = segment_and_masks(tokenizer, "Q<think>ab</think><answer>c</answer><|endoftext|>")
    eos = tokenizer.eos_token_id
    q, a, b, c = (tokenizer.encode(ch, add_special_tokens=False)[0] for ch in "Qabc")
    tid = ids
    assert example == SegmentedExample(
        input_ids=[
            q,
            tid[THINK_OPEN],
            a,
            b,
            tid[THINK_CLOSE],
            tid[ANSWER_OPEN],
            c,
            tid[ANSWER_CLOSE],
            eos,
        ],
        attention_mask=[1] * 9,
        loss_mask=[0, 0, 1, 1, 1, 1, 1, 1, 1],
        think_mask=[0, 0, 1, 1, 0, 0, 0, 0, 0],
        answer_mask=[0, 0, 0, 0, 0, 0, 1, 0, 0],
        reflect_mask=[0] * 9,
        program_mask=[0] * 9,
    )


def test_segment_and_masks_marks_reflect_and_program_segments(
    byte_char_tokenizer_with_think: Any,
) -> None:
    tokenizer = byte_char_tokenizer_with_think
    ensure_reasoning_tokens(tokenizer)
    text = "Q<think>a<reflect>bc</reflect><program>d</program>e</think><answer>f</answer>"
    example = segment_and_masks(tokenizer, text)
    chars = [tokenizer.decode([i]) for i in example.input_ids]
    inside_reflect = [c for c, m in zip(chars, example.reflect_mask, strict=True) if m]
    inside_program = [c for c, m in zip(chars, example.program_mask, strict=True) if m]
    assert inside_reflect == ["b", "c"]
    assert inside_program == ["d"]


def test_segment_and_masks_max_length(byte_char_tokenizer: Any) -> None:
    ensure_reasoning_tokens(byte_char_tokenizer)
    text = "Q<think>ab</think><answer>c</answer>"  # 8 tokens
    assert len(segment_and_masks(byte_char_tokenizer, text, max_length=8).input_ids) == 8
    with pytest.raises(ValueError, match="max_length=7"):
        segment_and_masks(byte_char_tokenizer, text, max_length=7)


# Tag-free text: biased towards tag fragments, whitespace and multi-byte characters.
_FRAGMENTS = st.sampled_from(
    ["<", ">", "/", "think", "answer", "reflect", "<think", "answer>", "</", " ", "\n", "é", "😀"]
)
_CHUNK = st.lists(_FRAGMENTS | st.text(max_size=4), max_size=6).map("".join)
TAG_FREE = _CHUNK.filter(lambda s: not contains_tag(s))
NONBLANK_TAG_FREE = TAG_FREE.filter(lambda s: bool(s.strip()))
EOS = st.sampled_from(["", "<|endoftext|>"])


@TOKENIZER_SETTINGS
@given(prompt=TAG_FREE, think=TAG_FREE, answer=NONBLANK_TAG_FREE, eos=EOS)
def test_masks_decode_to_think_and_answer(
    byte_char_tokenizer_with_think: Any, prompt: str, think: str, answer: str, eos: str
) -> None:
    tokenizer = byte_char_tokenizer_with_think
    ids = ensure_reasoning_tokens(tokenizer)
    text = f"{prompt}<think>{think}</think><answer>{answer}</answer>{eos}"
    example = segment_and_masks(tokenizer, text)
    n = len(example.input_ids)
    masks = (example.attention_mask, example.loss_mask, example.think_mask, example.answer_mask)
    assert all(len(mask) == n for mask in masks)
    assert all(set(mask) <= {0, 1} for mask in masks)
    assert example.attention_mask == [1] * n
    assert decode(tokenizer, example.input_ids) == text

    def masked(mask: list[int]) -> str:
        return decode(tokenizer, [i for i, m in zip(example.input_ids, mask, strict=True) if m])

    assert masked(example.think_mask) == think
    assert masked(example.answer_mask) == answer
    t0 = example.input_ids.index(ids[THINK_OPEN])
    assert example.loss_mask == [0] * (t0 + 1) + [1] * (n - t0 - 1)
    assert masked(example.loss_mask) == text[len(prompt) + len(THINK_OPEN) :]


# --- text level: properties -------------------------------------------------------------------


_ANY_TAG = st.sampled_from(REASONING_TAGS)
MIXED = st.lists(_ANY_TAG | TAG_FREE, max_size=12).map("".join)


@SETTINGS
@given(text=MIXED | st.text())
def test_results_never_contain_a_tag(text: str) -> None:
    answer = extract_answer(text)
    think, answer_again = split_reasoning(text)
    assert not contains_tag(answer)
    assert not contains_tag(think)
    assert answer_again == answer
    assert not contains_tag(strip_tags(text))
    assert answer == answer.strip()


@SETTINGS
@given(prompt=TAG_FREE, think=TAG_FREE, answer=TAG_FREE, eos=EOS)
def test_well_formed_completion(prompt: str, think: str, answer: str, eos: str) -> None:
    text = f"{prompt}<think>{think}</think><answer>{answer}</answer>{eos}"
    assert extract_answer(text) == answer.strip()
    assert split_reasoning(text) == (think.strip(), answer.strip())
    # the same completion generated after a prompt that ended with <think>
    completion = f"{think}</think><answer>{answer}</answer>{eos}"
    assert split_reasoning(completion) == (think.strip(), answer.strip())
    if answer.strip():
        assert reasoning_structure_error(text) is None


SECRET = "§"  # never produced by MIXED_NO_SECRET, so finding it in an answer is a leak
MIXED_NO_SECRET = MIXED.filter(lambda s: SECRET not in s)


@SETTINGS
@given(
    before=MIXED_NO_SECRET,
    inside=MIXED_NO_SECRET,
    after=MIXED_NO_SECRET,
    secret=st.text(max_size=6),
    opened=st.booleans(),
)
def test_closed_think_content_never_leaks(
    before: str, inside: str, after: str, secret: str, opened: bool
) -> None:
    """Whatever tags surround it, text inside a closed think segment is not in the answer,
    even when the think segment itself holds `<answer>` tags."""
    start = f"{before}<think>" if opened else ""  # not opened: the prompt ended with <think>
    for text in (
        f"{start}{SECRET}{secret}{inside}</think>{after}",
        f"{start}{inside}<answer>{SECRET}{secret}</answer>{inside}</think>{after}",
    ):
        assert SECRET not in extract_answer(text)


# --- text level: table ----------------------------------------------------------------------

# (id, text, extract_answer(text), substring of reasoning_structure_error(text) or None)
CASES = [
    ("well-formed", "Q?<think>t</think><answer>42</answer>", "42", None),
    ("well-formed-eos", "Q?<think>t</think>\n<answer> 42 </answer><|endoftext|>", "42", None),
    ("missing-answer-tags", "<think>t</think> 42", "42", "exactly one <answer>, found 0"),
    ("missing-answer-close", "<think>t</think><answer>42", "42", "one </answer>, found 0"),
    ("stray-answer-close", "<think>t</think>42</answer>", "42", "one <answer>, found 0"),
    ("missing-think-tags", "<answer>42</answer>", "42", "exactly one <think>, found 0"),
    ("doubled-answer", "<think>t</think><answer>1</answer><answer>2</answer>", "1", "found 2"),
    ("doubled-think", "<think>a</think><think>b</think><answer>x</answer>", "x", "found 2"),
    ("nested-answer", "<think>t</think><answer><answer>x</answer></answer>", "x", "found 2"),
    ("nested-think", "<think><think>a</think>b</think><answer>x</answer>", "x", "found 2"),
    ("nested-think-unclosed", "<think><think>a</think>b", "", "one <think>, found 2"),
    ("unclosed-think", "<think>still thinking", "", "one </think>, found 0"),
    ("unclosed-think-then-answer", "<think>t<answer>42</answer>", "42", "</think>, found 0"),
    ("answer-before-think", "<answer>x</answer><think>t</think>", "", "out of order"),
    (
        "answer-inside-think",
        "<think>a<answer>1</answer>b</think><answer>2</answer>",
        "2",
        "one <answer>, found 2",
    ),
    ("answer-only-inside-think", "<think>a<answer>1</answer>b</think>", "", "out of order"),
    (
        "answer-between-thinks",
        "<think>a</think><answer>x</answer><think>b</think>",
        "",
        "one <think>, found 2",
    ),
    ("think-after-answer", "<think>a</think><answer>x</answer><think>b", "x", "found 2"),
    ("empty-answer", "<think>t</think><answer></answer>", "", "empty <answer>"),
    ("blank-answer", "<think>t</think><answer> \n </answer>", "", "empty <answer>"),
    ("only-close-think", "reasoning</think><answer>42</answer>", "42", "one <think>, found 0"),
    ("only-close-think-no-answer", "reasoning</think> 42", "42", "one <think>, found 0"),
    ("no-tags", "  just 42 \n", "just 42", "exactly one <think>, found 0"),
    ("empty-text", "", "", "exactly one <think>, found 0"),
    ("reflect-in-answer", "<think>t</think><answer>4<reflect>r</reflect>2</answer>", "42", None),
    ("program-in-think", "<think><program>p</program></think><answer>1</answer>", "1", None),
    (
        "reflect-then-program",
        "<think><reflect><program>p</program></reflect></think><answer>1</answer>",
        "1",
        None,
    ),
    ("unclosed-reflect", "<think>t</think><answer>x</answer><reflect>r", "x", "unclosed <reflect>"),
    (
        "reflect-crosses-answer-close",
        "<think>t</think><answer>42<reflect>hmm</answer>",
        "42",
        "crosses </answer>",
    ),
    (
        "unclosed-reflect-before-answer",
        "<think>t</think><reflect>r<answer>4</answer>",
        "4",
        "crosses",
    ),
    (
        "nested-reflect",
        "<think><reflect><reflect>a</reflect></reflect></think><answer>x</answer>",
        "x",
        "must not nest",
    ),
    (
        "stray-reflect-close",
        "<think>t</think><answer>x</reflect></answer>",
        "x",
        "not the innermost",
    ),
    (
        "interleaved-side-tags",
        "<think><reflect><program></reflect></program></think><answer>x</answer>",
        "x",
        "innermost",
    ),
    (
        "reflect-crosses-think",
        "<think><reflect></think><answer></reflect>x</answer>",
        "x",
        "crosses </think>",
    ),
    ("reflect-only", "a <reflect>r</reflect> b", "a  b", "exactly one <think>"),
    (
        "tag-formed-by-removal",
        "<think>t</think><answer>a<thi<reflect>r</reflect>nk>b</answer>",
        "ab",
        None,
    ),
    ("tag-fragments-kept", "<think>t</think><answer>x < y/think></answer>", "x < y/think>", None),
]


@pytest.mark.parametrize(
    ("text", "answer", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_table(text: str, answer: str, error: str | None) -> None:
    assert extract_answer(text) == answer
    problem = reasoning_structure_error(text)
    if error is None:
        assert problem is None
    else:
        assert problem is not None and error in problem, problem


@pytest.mark.parametrize(
    ("text", "error"),
    [(c[1], c[3]) for c in CASES if c[3] is not None],
    ids=[c[0] for c in CASES if c[3] is not None],
)
def test_segment_and_masks_rejects_malformed(
    byte_char_tokenizer: Any, text: str, error: str
) -> None:
    ensure_reasoning_tokens(byte_char_tokenizer)
    with pytest.raises(ValueError, match="cannot segment text") as info:
        segment_and_masks(byte_char_tokenizer, text)
    assert error in str(info.value)


SPLIT_CASES = [
    ("well-formed", "<think> t </think><answer>a</answer>", ("t", "a")),
    ("prompt-ended-with-think", " t </think><answer>a</answer>", ("t", "a")),
    ("unclosed-think", "<think> t", ("t", "")),
    ("unclosed-think-then-answer", "<think>t<answer>a</answer>", ("t", "a")),
    ("answer-inside-think", "<think>t<answer>x</answer>u</think><answer>a</answer>", ("txu", "a")),
    ("doubled-think-first-wins", "<think>t</think><think>u</think><answer>a</answer>", ("t", "a")),
    (
        "reflect-shown-in-think",
        "<think>t<reflect>r</reflect></think><answer>a</answer>",
        ("tr", "a"),
    ),
    ("no-tags", "a", ("", "a")),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES]
)
def test_split_reasoning_table(text: str, expected: tuple[str, str]) -> None:
    assert split_reasoning(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a<think>b</think>c", "abc"), ("<thi</think>nk>", ""), ("<<answer>/answer>x", "x")],
    ids=["plain", "joined-fragments", "joined-close"],
)
def test_strip_tags(text: str, expected: str) -> None:
    assert strip_tags(text) == expected
