"""GGUF in: a llama.cpp / Ollama / LM Studio model file as a Hugging Face model.

What it does: `load_gguf(file)` dequantizes a `.gguf` file through transformers' own GGUF reader
(`from_pretrained(..., gguf_file=)`, needs the `gguf` package) into a float32 causal LM and its
tokenizer (with the file's chat template), and makes the model serializable again (the GGUF
quantizer is dropped: the weights are plain tensors now); `convert_gguf(file, out)` writes that
as a plain HF model directory (safetensors, tokenizer, chat template, generation config),
atomically, which `AutoModelForCausalLM.from_pretrained(out)` loads offline in seconds. An
architecture or quantization transformers cannot read is a `GGUFError` naming it.

What it does not do: write GGUF, keep the quantized weights, or add Tina's tags (loading the
directory through `tina.core.models.load_model` does that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tina.core.atomic import atomic_directory

GGUF_SUFFIX = ".gguf"


class GGUFError(ValueError):
    """A GGUF file Tina cannot read: missing, not GGUF, or an unsupported architecture or
    quantization (the message names it and the file)."""


@contextmanager
def _quiet() -> Iterator[None]:
    """No progress bar per tensor (transformers' GGUF reader uses tqdm directly) or per shard."""
    from functools import partial

    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils as reader
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), reader.tqdm
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    reader.tqdm = partial(tqdm, disable=True)
    try:
        yield
    finally:
        reader.tqdm = bar
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a GGUF file (by its suffix)."""
    return str(path).lower().endswith(GGUF_SUFFIX)


def load_gguf(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, dequantized to float32, in eval mode."""
    file = Path(path)
    if not file.is_file():
        raise GGUFError(f"{file}: file not found")
    with file.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise GGUFError(f"{file}: not a GGUF file (no GGUF magic)")
    import gguf  # noqa: F401  (transformers reads GGUF through it: the `gguf` extra)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            model: Any = AutoModelForCausalLM.from_pretrained(
                str(file.parent), gguf_file=file.name, dtype=torch.float32
            )
    except (ValueError, KeyError, NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GGUFError(f"{file}: {reason}") from None
    model.hf_quantizer = None  # dequantized: plain float32 tensors from here on
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model.to(device).eval(), tokenizer


def convert_gguf(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the GGUF file at `path` as an HF model directory `out` (replaced as a whole)."""
    model, tokenizer = load_gguf(path)
    target = Path(out)
    with atomic_directory(target) as tmp, _quiet():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
    return target
