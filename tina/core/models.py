"""Where models come from: the embedded default model, or any local HF model directory.

What it does: locates the embedded model shipped inside the package, loads a causal LM and its
tokenizer from a directory or a `.gguf` file (`tina.core.gguf`; offline, on CPU by default, in
eval mode), and makes sure every
reasoning tag is one token id (`tina.core.tags.ensure_reasoning_tokens`, resizing embeddings if tags
had to be added); renders a question or a whole conversation through the chat template, ending
with `<think>` (`render_prompt`, `render_messages`).

What it does not do: PEFT adapters or introspection parts (the introspection loader builds on
this), nor downloads — a path that is not a local directory or GGUF file is an error.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from tina.core.gguf import is_gguf, load_gguf
from tina.core.tags import THINK_OPEN, ensure_reasoning_tokens, extract_answer, knows_thinking_tags
from tina.core.tokenizer import CHAT_TEMPLATE


def embedded_model_dir() -> Path:
    """The embedded model's directory inside the installed package."""
    return Path(str(resources.files("tina") / "embedded"))


def load_model(path: str | Path | None = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local HF model directory (default: the embedded model), or
    from a `.gguf` file (dequantized in memory: `tina convert` makes the next load fast)."""
    directory = Path(path) if path is not None else embedded_model_dir()
    model: Any
    if is_gguf(directory) and directory.is_file():
        print(
            f"{directory}: GGUF, dequantized in memory; `tina convert {directory} --out DIR` "
            "makes the next load fast",
            file=sys.stderr,
        )
        model, tokenizer = load_gguf(directory)
    elif not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
    else:
        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    model.tina_reasoning_format = knows_thinking_tags(tokenizer)  # read by the engine
    ensure_reasoning_tokens(tokenizer, model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    model.eval()
    return model, tokenizer


def render_prompt(tokenizer: Any, question: str) -> str:
    """One question rendered by the tokenizer's chat template, ending with `<think>`: the
    one-user-message case of `render_messages`."""
    return render_messages(tokenizer, [{"role": "user", "content": question}])


def render_messages(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], think: bool = True
) -> str:
    """A conversation (`role`: system, user or assistant; `content`: text) rendered by the
    tokenizer's chat template, ending with `<think>`.

    Earlier assistant turns enter without their thinking: their content is cut to
    `extract_answer` of it (no think span, no tag), and every field but `role` and `content`
    (a `reasoning_content` or `reasoning` sent back) is dropped. Templates that do not open
    `<think>` themselves get it appended; tokenizers with no template get the embedded
    model's (`chat_template.jinja`: each turn's text and a newline, assistant turns inside
    `<answer>…</answer>`, then `<think>`). `think=False`: the template's own generation
    prompt, nothing appended (a model with no reasoning format).
    """
    turns = [
        {
            "role": m["role"],
            "content": extract_answer(m["content"]) if m["role"] == "assistant" else m["content"],
        }
        for m in messages
    ]
    template = getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
    text = str(
        tokenizer.apply_chat_template(
            turns, chat_template=template, add_generation_prompt=True, tokenize=False
        )
    )
    if think and not text.rstrip().endswith(THINK_OPEN):
        text += THINK_OPEN
    return text
