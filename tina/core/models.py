"""Where models come from: the embedded default model, or any local HF model directory.

What it does: locates the embedded model shipped inside the package, loads a causal LM and its
tokenizer from a directory (offline, on CPU by default, in eval mode), and makes sure every
reasoning tag is one token id (`tina.core.tags.ensure_reasoning_tokens`, resizing embeddings if tags
had to be added).

What it does not do: PEFT adapters or introspection parts (the introspection loader builds on
this), nor downloads — a path that is not a local directory is an error.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from tina.core.tags import THINK_OPEN, ensure_reasoning_tokens


def embedded_model_dir() -> Path:
    """The embedded model's directory inside the installed package."""
    return Path(str(resources.files("tina") / "embedded"))


def load_model(path: str | Path | None = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local HF model directory (default: the embedded model)."""
    directory = Path(path) if path is not None else embedded_model_dir()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: not a model directory (no config.json)")
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    ensure_reasoning_tokens(tokenizer, model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    model.eval()
    return model, tokenizer


def render_prompt(tokenizer: Any, question: str) -> str:
    """The question rendered by the tokenizer's chat template, ending with `<think>`.

    Tokenizers whose template does not open `<think>` itself get it appended; tokenizers with
    no template get the embedded model's (question, newline, `<think>`).
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return question + "\n" + THINK_OPEN  # the embedded model's template, as a default
    messages = [{"role": "user", "content": question}]
    text = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    if not text.rstrip().endswith(THINK_OPEN):
        text += THINK_OPEN
    return text
