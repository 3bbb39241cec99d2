"""The `tina sft` config: `SFTConfig` (a pretrained model, its LoRA, the data and the loop), read
from YAML by `load_sft_config`, which reports every bad key or value at once, each a
`tina.core.checks.Problem` (`file: dotted.field: message`), before anything loads.

What it does: the dataclass and its documented fields, the checks (keys, types, ranges, the task
mix against the suite's tasks and difficulties). What it does not do: train (`tina.train.sft`),
or read the data (`tina.train.data`, `tina.data.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tina.core.checks import (
    ROOT_FIELD,
    ConfigError,
    Problem,
    bool_problem,
    int_problem,
    number_problem,
    str_problem,
)
from tina.data.tasks import TASKS
from tina.train.config import read_config_yaml
from tina.train.selfplay_config import positive_number_problem

SAVE_DTYPES = ("float32", "bfloat16")  #: `SFTConfig.save_dtype`


class SFTConfigError(ConfigError):
    """An sft config's problems, all at once (each names the file and the dotted field)."""


@dataclass
class SFTConfig:
    """Everything a `tina sft` run needs (the YAML file's keys)."""

    models_root: str = "models"  #: where `base` is looked up
    base: str = "SmolLM2-135M-Instruct"  #: the base model: a directory (or `.gguf`) in models_root
    #: contract JSONL files to train on (each record's prompt is re-rendered through the base
    #: model's chat template); may be empty when `tasks` gives the data
    train_data: list[str] = field(default_factory=list)
    #: records drawn from the task suite (`tina.data.tasks`): task -> {n, difficulties, style}
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_seed: int = 0  #: seed of the suite records drawn for `tasks`
    eval_data: str | None = None  #: held-out contract JSONL: its loss is logged at each save
    max_length: int = 512  #: longest tokenized example (a longer one is an error, or skipped)
    strict_data: bool = True  #: stop at the first bad record (else skip it)
    output_dir: str = "models/Tina"  #: `checkpoint-<step>/` (PEFT adapter dirs) and metrics
    lora_r: int = 16  #: LoRA rank
    lora_alpha: int = 32  #: LoRA scaling numerator (scale = alpha / r)
    lora_dropout: float = 0.0  #: dropout on the LoRA input
    #: modules that get LoRA ("all-linear": every linear layer of the decoder, PEFT's shorthand)
    target_modules: str | list[str] = "all-linear"
    train_tag_embeddings: bool = True  #: train the reasoning tags' embedding rows
    steps: int = 600  #: optimizer steps
    batch_size: int = 16  #: examples per step (per process)
    group_by_length: bool = True  #: batch rows of like length together (less padding)
    lr: float = 1e-3  #: peak learning rate (AdamW), reached after warmup, then linear decay to 0
    warmup_steps: int = 20  #: linear warmup
    weight_decay: float = 0.0  #: AdamW weight decay
    grad_clip: float = 1.0  #: gradient norm clip
    seed: int = 0  #: seeds LoRA init and the batch order
    save_every: int = 100  #: steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2  #: newest checkpoints kept (0: all)
    log_every: int = 10  #: steps between metrics lines
    tensorboard: bool = False  #: also write metrics as TensorBoard scalars
    save_dtype: str = "float32"  #: dtype of the saved adapter weights (`SAVE_DTYPES`)


_INTS = {
    "max_length": 1,
    "lora_r": 1,
    "lora_alpha": 1,
    "steps": 1,
    "batch_size": 1,
    "warmup_steps": 0,
    "seed": 0,
    "data_seed": 0,
    "save_every": 1,
    "keep_checkpoints": 0,
    "log_every": 1,
}
_NUMBERS = {"weight_decay": 0, "grad_clip": 0}
_BOOLS = ("strict_data", "train_tag_embeddings", "tensorboard", "group_by_length")
_TASK_KEYS = ("n", "difficulties", "style")

Found = list[tuple[str, str | None]]


def _task_problems(tasks: Any) -> Found:
    if not isinstance(tasks, dict):
        return [("tasks", "expected a mapping of task -> {n, difficulties, style}")]
    found: Found = []
    for name, spec in tasks.items():
        where = f"tasks.{name}"
        if name not in TASKS:
            found.append((where, f"unknown task (expected one of {sorted(TASKS)})"))
            continue
        if not isinstance(spec, dict):
            found.append((where, "expected a mapping with n (and difficulties, style)"))
            continue
        found += [(f"{where}.{k}", "unknown key") for k in spec if k not in _TASK_KEYS]
        found.append((f"{where}.n", int_problem(spec.get("n"), 1)))
        levels = spec.get("difficulties", list(TASKS[name].difficulties))
        if not isinstance(levels, list) or not levels:
            found.append((f"{where}.difficulties", "expected a non-empty list of levels"))
        else:
            found += [
                (f"{where}.difficulties", f"task has no difficulty {d!r}; it has "
                 f"{list(TASKS[name].difficulties)}")
                for d in levels
                if d not in TASKS[name].difficulties
            ]  # fmt: skip
        if spec.get("style", "concise") not in ("concise", "verbose"):
            found.append((f"{where}.style", "expected 'concise' or 'verbose'"))
    return found


def _problems(raw: Any) -> Found:
    if not isinstance(raw, dict):
        return [(ROOT_FIELD, f"expected a mapping, got {type(raw).__name__}")]
    known = {f.name for f in fields(SFTConfig)}
    found: Found = [(str(k), "unknown key") for k in raw if k not in known]
    found += [(k, int_problem(raw[k], low)) for k, low in _INTS.items() if k in raw]
    found += [(k, number_problem(raw[k], low)) for k, low in _NUMBERS.items() if k in raw]
    found += [(k, bool_problem(raw[k])) for k in _BOOLS if k in raw]
    found += [(k, str_problem(raw[k])) for k in ("models_root", "base", "output_dir") if k in raw]
    if "eval_data" in raw:
        found.append(("eval_data", str_problem(raw["eval_data"], optional=True)))
    if "lr" in raw:
        found.append(("lr", positive_number_problem(raw["lr"])))
    if "lora_dropout" in raw:
        found.append(("lora_dropout", number_problem(raw["lora_dropout"], 0, 1)))
    if raw.get("save_dtype", "float32") not in SAVE_DTYPES:
        found.append(("save_dtype", f"expected one of {SAVE_DTYPES}, got {raw['save_dtype']!r}"))
    data = raw.get("train_data", [])
    if not isinstance(data, list) or any(str_problem(p) for p in data):
        found.append(("train_data", "expected a list of contract JSONL paths"))
    targets = raw.get("target_modules", "all-linear")
    if not (isinstance(targets, str) and targets) and not (
        isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)
    ):
        found.append(("target_modules", "expected 'all-linear' or a list of module names"))
    found += _task_problems(raw.get("tasks", {}) or {})
    if not data and not raw.get("tasks"):
        found.append(("train_data", "no data: give train_data files or tasks"))
    return found


def load_sft_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SFTConfig:
    """The sft config in a YAML file (plus `overrides`, e.g. the command line's); an
    `SFTConfigError` listing every problem, each naming the file and the field."""
    try:
        raw = read_config_yaml(path)
    except ConfigError as exc:
        raise SFTConfigError(exc.problems) from None
    if isinstance(raw, dict):
        raw.update(overrides or {})
        if isinstance(raw.get("train_data"), str):
            raw["train_data"] = [raw["train_data"]]
    problems = [Problem(str(path), name, message) for name, message in _problems(raw) if message]
    if problems:
        raise SFTConfigError(problems)
    return SFTConfig(**raw)
