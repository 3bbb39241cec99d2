"""The introspection parts as one unit: attach to a model, find trainables, save, load.

What it does: `IntrospectionConfig` (saved as `introspection_config.json`: where side adapters
go, where the heads tap, their hyper-parameters); `attach_introspection(model, config)` hooks
side adapters and metacognitive heads into the decoder layers (adapters first, then taps, so the
heads see the adapted states) under the one submodule `tina_introspection`, so every trainable
parameter is found by `INTROSPECTION_PREFIX` (`trainable_parameters`, `freeze_base`);
`save_introspection` / `load_introspection` (only these weights, `introspection.safetensors`,
plus changed base parameters in `base_top.safetensors`; atomic; errors name the file);
`Introspection.prune_adapters`; and `load_introspective_model(models_root, base, adapter,
subfolder)`: a local base, a PEFT LoRA adapter on top (merged into the weights), the
introspection parts when present
(docs/architecture.md says where each is looked for).

What it does not do: decoding (the engine) or training.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tina.core.atomic import atomic_write
from tina.core.metacog_heads import HeadsConfig, MetacogHeads, attach_taps, resolve_taps
from tina.core.models import load_model
from tina.core.side_adapters import AdapterConfig, attach_side_adapters, decoder_layers

INTROSPECTION_PREFIX = "tina_introspection."
WEIGHTS_NAME = "introspection.safetensors"
CONFIG_NAME = "introspection_config.json"
BASE_WEIGHTS_NAME = "base_top.safetensors"  #: base weights changed by training (partial unfreeze)


@dataclass
class IntrospectionConfig:
    """Where and how the introspection parts attach."""

    adapter_layers: list[float] = field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0]
    )  #: depth fractions or layer indices
    adapter: AdapterConfig = field(default_factory=AdapterConfig)  #: side adapter settings
    heads: HeadsConfig = field(default_factory=HeadsConfig)  #: metacognitive head settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> IntrospectionConfig:
        known = {"adapter_layers", "adapter", "heads"}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(f"unknown introspection config keys {unknown}")
        return cls(
            adapter_layers=list(payload.get("adapter_layers", [0.25, 0.5, 0.75, 1.0])),
            adapter=AdapterConfig(**payload.get("adapter", {})),
            heads=HeadsConfig(**payload.get("heads", {})),
        )


class Introspection(nn.Module):
    """Side adapters + metacognitive heads attached to one model (see module docstring)."""

    def __init__(self, model: Any, config: IntrospectionConfig) -> None:
        super().__init__()
        self.config = config
        n_layers = len(decoder_layers(model))
        self.adapter_layers = resolve_taps(config.adapter_layers, n_layers)
        self.tap_layers = resolve_taps(config.heads.taps, n_layers)
        adapters, adapter_handles = attach_side_adapters(model, self.adapter_layers, config.adapter)
        self.adapters = adapters
        device = next(model.parameters()).device
        self.heads = MetacogHeads(int(model.config.hidden_size), self.tap_layers, config.heads).to(
            device
        )
        self._adapter_handles = dict(zip(adapters.keys(), adapter_handles, strict=True))
        self._handles = attach_taps(model, self.tap_layers)

    def detach(self) -> None:
        """Remove the hooks: the model behaves as if nothing had been attached."""
        for handle in [*self._adapter_handles.values(), *self._handles]:
            handle.remove()
        self._adapter_handles, self._handles = {}, []

    def prune_adapters(self, keys: list[str]) -> None:
        """Remove the side adapters on these layers (keys of `self.adapters`): their hooks go,
        their weights go, and the config lists only the layers kept (as indices), so a saved
        and reloaded copy has exactly the kept adapters."""
        unknown = [k for k in keys if k not in self.adapters]
        if unknown:
            raise KeyError(f"no side adapter on layers {unknown}")
        for key in keys:
            self._adapter_handles.pop(key).remove()
            del self.adapters[key]
        self.adapter_layers = [i for i in self.adapter_layers if str(i) not in keys]
        self.config.adapter_layers = [int(i) for i in self.adapter_layers]


def inner_model(model: Any) -> Any:
    """The model under a PEFT wrapper (the model itself when unwrapped): where the
    introspection parts and the base parameters are registered."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def remove_introspection(model: Any) -> None:
    """Detach and unregister the introspection parts attached to `model`."""
    inner = inner_model(model)
    inner.tina_introspection.detach()
    delattr(inner, "tina_introspection")


def attach_introspection(model: Any, config: IntrospectionConfig | None = None) -> Introspection:
    """Attach fresh introspection parts to `model` (see module docstring); returns them."""
    inner = inner_model(model)
    if hasattr(inner, "tina_introspection"):
        raise ValueError("this model already has introspection parts attached")
    intro = Introspection(model, config or IntrospectionConfig())
    intro.train(inner.training)  # follow the model's mode: eval gates are deterministic
    inner.add_module("tina_introspection", intro)
    return intro


def trainable_parameters(model: Any) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of every introspection parameter: those under the one prefix."""
    return [
        (n, p)
        for n, p in inner_model(model).named_parameters()
        if n.startswith(INTROSPECTION_PREFIX)
    ]


def freeze_base(model: Any) -> None:
    """requires_grad only for introspection parameters; everything else is frozen."""
    for name, param in inner_model(model).named_parameters():
        param.requires_grad_(name.startswith(INTROSPECTION_PREFIX))


def save_introspection(
    intro: Introspection,
    directory: str | Path,
    base_weights: dict[str, Any] | None = None,
) -> None:
    """Write `introspection.safetensors` and `introspection_config.json` (only these weights),
    and, when training changed some base parameters (`base_weights`: name -> tensor, names as in
    the base model's `named_parameters()`), `base_top.safetensors` with exactly those."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if base_weights:
        base = {k: v.detach().cpu().contiguous() for k, v in base_weights.items()}
        atomic_write(
            directory / BASE_WEIGHTS_NAME,
            lambda tmp: save_file(base, tmp, metadata={"format": "pt"}),
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in intro.state_dict().items()}
    atomic_write(
        directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    )
    payload = json.dumps(intro.config.to_dict(), indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(payload))


def load_introspection(model: Any, directory: str | Path) -> Introspection:
    """Attach the introspection parts saved in `directory` to `model`."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (introspection parts need both files)")
    try:
        config = IntrospectionConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{config_path}: invalid introspection config: {exc}") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights_path}: cannot read safetensors: {exc}") from None
    base_path = directory / BASE_WEIGHTS_NAME
    if base_path.is_file():
        _load_base_weights(model, base_path)
    intro = attach_introspection(model, config)
    try:
        intro.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        remove_introspection(model)
        raise ValueError(f"{weights_path}: weights do not match {config_path}: {exc}") from None
    return intro


def _load_base_weights(model: Any, path: Path) -> None:
    """Copy `base_top.safetensors` into the base model's parameters of the same names."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: cannot read safetensors: {exc}") from None
    params = dict(inner_model(model).named_parameters())
    for name, tensor in state.items():
        if name not in params or params[name].shape != tensor.shape:
            raise ValueError(f"{path}: {name!r} is not a parameter of this base model's shape")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))


def load_introspective_model(
    models_root: str | Path,
    base: str,
    adapter: str | None = None,
    subfolder: str | None = None,
    device: str | None = None,
    parts: str | Path | None = None,
) -> tuple[Any, Any, Introspection | None]:
    """(model, tokenizer, introspection or None) from local directories; see module docstring.
    `parts`: load the introspection parts from this directory instead of looking for them
    beside the adapter and the base (a run's checkpoint, a recipe's `final/`)."""
    root = Path(models_root)
    base_dir = root / base
    model, tokenizer = load_model(base_dir, device=device)
    search = [base_dir]
    if adapter is not None:
        adapter_dir = root / adapter / subfolder if subfolder else root / adapter
        if not adapter_dir.is_dir():
            raise FileNotFoundError(f"{adapter_dir}: adapter directory not found")
        if (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 renamed
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
                peft_model: Any = PeftModel.from_pretrained(
                    model, str(adapter_dir), is_trainable=False
                )
                # merged for inference, as llama.cpp and vLLM serve LoRAs: unmerged, PEFT's
                # trainable tokens rebuild the 49k-row tied embedding at every forward
                model = peft_model.merge_and_unload().eval()
            model.tina_reasoning_format = True  # an adapter Tina trained knows the tags
        elif not (adapter_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{adapter_dir}: holds neither adapter_config.json (PEFT LoRA) nor {CONFIG_NAME}"
            )
        search.insert(0, adapter_dir)
    intro = None
    if parts is not None:
        search = [Path(parts)]
        if not (search[0] / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{parts}: holds no introspection parts ({CONFIG_NAME})")
    for directory in search:
        if (directory / CONFIG_NAME).is_file() or (directory / WEIGHTS_NAME).is_file():
            intro = load_introspection(model, directory)
            break
    if intro is not None:
        intro.to(next(model.parameters()).device)
        intro.eval()
    return model, tokenizer, intro
