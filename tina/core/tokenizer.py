"""The embedded model's tokenizer: byte-level symbols, reasoning tags as single ids.

What it does: trains a `tokenizers` BPE on a text corpus with the 256 ByteLevel symbols as its
alphabet and no merges (every UTF-8 byte is one token, so digits are always single tokens and any
text encodes), adds `<|endoftext|>`, `<|pad|>` and the reasoning tags as special tokens, sets the
chat template (the question, a newline, then `<think>`), and wraps it as a transformers fast
tokenizer. No merges, so that transformers' `Qwen2Tokenizer` swap gives the same ids (why:
docs/embedded_model.md).

What it does not do: tag checks (see `tina.core.tags.ensure_reasoning_tokens`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tina.core.tags import ANSWER_CLOSE, ANSWER_OPEN, REASONING_TAGS, THINK_OPEN

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

#: Jinja chat template of Tina's tokenizers (the embedded model's `chat_template.jinja` is this,
#: saved): system and user turns as their text and a newline, earlier assistant turns as their
#: answer inside `<answer>…</answer>` and a newline; the generation prompt opens `<think>`.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] in ('system', 'user') %}"
    "{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}"
    + ANSWER_OPEN
    + "{{ message['content'] }}"
    + ANSWER_CLOSE
    + "\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}" + THINK_OPEN + "{% endif %}"
)


def train_byte_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """Train the merge-free byte-level tokenizer on `corpus`; tags and specials are single ids."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = [EOS_TOKEN, PAD_TOKEN, *REASONING_TAGS]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + len(specials),
        initial_alphabet=alphabet,
        special_tokens=specials,
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer=trainer)
    if core.get_vocab_size() != len(alphabet) + len(specials):
        raise RuntimeError(f"byte tokenizer has {core.get_vocab_size()} tokens, expected 266")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(REASONING_TAGS),
        padding_side="left",
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
