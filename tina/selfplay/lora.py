"""The self-play LoRA: what self-play trains on a pretrained model besides the side adapters.

A pretrained base whose Tina LoRA from `tina sft` is merged at load (`tina.core.introspection`)
has no side adapters to train, and side adapters act on think tokens only, while a proposal is
written in the answer. `add_selfplay_lora(model, rank, alpha, top_layers)` adds a fresh LoRA
with PEFT's `inject_adapter_in_model` (the model keeps its class, so the engine and the
introspection hooks see the same modules): every linear layer of the top
`top_layers` decoder layers (0: all), `lora_B` at zero, so training starts from the model as
loaded. `reference_policy(model)` is a context with the LoRA switched off: the policy the KL term
measures against (the merged SFT model, as TRL's PEFT reference). `lora_state`, `save_lora`,
`load_lora` and `load_lora_weights` are its weights by parameter name (checkpoints write them
beside the introspection parts: `selfplay_lora.safetensors`, `selfplay_lora.json`).

What it does not do: train (`tina.selfplay.loop`), or load a self-play LoRA for serving (it sits
on the merged SFT weights, not on the base a PEFT adapter directory names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tina.core.atomic import atomic_write, atomic_write_json

ADAPTER_NAME = "selfplay"  #: the PEFT adapter name of the self-play LoRA
WEIGHTS_FILE = "selfplay_lora.safetensors"  #: its weights in a checkpoint
CONFIG_FILE = "selfplay_lora.json"  #: its LoRA settings in a checkpoint


def has_selfplay_lora(model: Any) -> bool:
    """Whether `add_selfplay_lora` ran on `model`."""
    return getattr(model, "tina_selfplay_lora", None) is not None


def add_selfplay_lora(model: Any, rank: int, alpha: int, top_layers: int = 0) -> dict[str, Any]:
    """Add the self-play LoRA (module docstring) and return its settings (what `CONFIG_FILE`
    holds). Its parameters are trainable; everything else keeps its `requires_grad`."""
    from peft import LoraConfig, inject_adapter_in_model

    n_layers = int(model.config.num_hidden_layers)
    top = n_layers if top_layers <= 0 else min(top_layers, n_layers)
    layers = list(range(n_layers - top, n_layers))
    settings: dict[str, Any] = {
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": linear_kinds(model),
        "layers_to_transform": layers,
        "lora_dropout": 0.0,
    }
    inject_adapter_in_model(LoraConfig(**settings), model, adapter_name=ADAPTER_NAME)
    for p in _named_lora_parameters(model).values():
        p.requires_grad_(True)
    model.tina_selfplay_lora = settings
    return settings


def linear_kinds(model: Any) -> list[str]:
    """The names of the linear layers inside a decoder layer (`q_proj` … `down_proj` on Llama
    and Qwen2): PEFT's `all-linear`, spelled out, since it cannot be combined with a layer list."""
    layer = model.get_decoder().layers[0]
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in layer.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    )


def lora_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The self-play LoRA's parameters (none when it was not added)."""
    return list(_named_lora_parameters(model).values()) if has_selfplay_lora(model) else []


def _named_lora_parameters(model: Any) -> dict[str, torch.nn.Parameter]:
    """The parameters PEFT registered under the self-play adapter's name, by name."""
    return {n: p for n, p in model.named_parameters() if f".{ADAPTER_NAME}." in f"{n}."}


def _lora_layers(model: Any) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextmanager
def reference_policy(model: Any) -> Iterator[None]:
    """The model with the self-play LoRA off inside the context (a no-op without one)."""
    if not has_selfplay_lora(model):
        yield
        return
    layers = _lora_layers(model)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    """The self-play LoRA's weights by parameter name."""
    return {n: p.detach().cpu().contiguous() for n, p in _named_lora_parameters(model).items()}


def save_lora(model: Any, settings: dict[str, Any], directory: Path) -> None:
    """Write the self-play LoRA's weights and settings into `directory`."""
    state = lora_state(model)
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    atomic_write_json(directory / CONFIG_FILE, settings)


def load_lora(model: Any, directory: Path) -> dict[str, Any]:
    """Add the LoRA saved in `directory` (settings and weights) to `model`; its settings.
    A ValueError names the file when a weight does not fit the model."""
    settings = json.loads((directory / CONFIG_FILE).read_text())
    top = len(settings["layers_to_transform"])
    add_selfplay_lora(model, settings["r"], settings["lora_alpha"], top)
    load_lora_weights(model, directory)
    return settings


def load_lora_weights(model: Any, directory: Path) -> None:
    """Copy the LoRA weights saved in `directory` into the self-play LoRA `model` already has
    (another checkpoint of the same run). A ValueError names the file when one does not fit."""
    params = _named_lora_parameters(model)
    path = directory / WEIGHTS_FILE
    with torch.no_grad():
        for name, tensor in load_file(str(path)).items():
            if name not in params or params[name].shape != tensor.shape:
                raise ValueError(f"{path}: {name!r} is not a self-play LoRA weight of this model")
            params[name].copy_(tensor.to(params[name].dtype))
