"""The train config: `TrainConfig`, its phases and the hybrid schedule, read from
`train_config.yaml` by `load_train_config`, which reports every bad key or value at once, each a
`tina.core.checks.Problem` (`file: dotted.field: message`), before anything trains.

What it does: the dataclasses and their documented fields, the checks (keys, types, ranges,
loss names, trainable groups, the on-policy and self-play blocks, the introspection section;
the value checks of `tina.core.checks`, where a bool is never a number), and `read_config_yaml`
(train and recipe configs are read there).
What it does not do: train (`tina.training`), or read the data files (`tina.train.data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tina.core.checks import (
    FILE_FIELD,
    ROOT_FIELD,
    ConfigError,
    Problem,
    bool_problem,
    int_problem,
    number_problem,
    raise_if,
    str_problem,
)
from tina.core.introspection import IntrospectionConfig
from tina.train.losses import LOSS_NAMES
from tina.train.on_policy import OnPolicyConfig
from tina.train.selfplay_config import SelfPlayConfig, positive_number_problem

GROUPS = ("heads", "adapters", "base_top")  #: the trainable parameter groups
ENGINE_KEYS = ("budget_cap", "max_answer_tokens")  #: on_policy keys that go to the engine
TRAIN_MODES = ("supervised", "self_play", "hybrid")  #: `TrainConfig.mode`


class TrainConfigError(ConfigError):
    """A train config's problems, all at once: a `ConfigError` whose problems name the file and
    the dotted field (`phases[0].until_step`)."""


@dataclass
class HybridScheduleConfig:
    """`hybrid` mode's schedule (`hybrid_schedule:`): self-play rounds between supervised steps."""

    supervised_steps: int = 100  #: supervised steps between two self-play rounds
    self_play_iters: int = 10  #: self-play iterations of a round

    def __post_init__(self) -> None:
        raise_if(
            "HybridScheduleConfig",
            [(f.name, int_problem(getattr(self, f.name), 1)) for f in fields(self)],
        )


@dataclass
class PhaseConfig:
    """One training phase."""

    name: str  #: e.g. "A"
    until_step: int  #: the phase runs while step < until_step
    train: list[str] = field(default_factory=lambda: ["heads", "adapters"])  #: trainable groups
    unfreeze_top_k: int = 0  #: base decoder layers (from the top) trained when `base_top` is on
    loss_weights: dict[str, float] = field(default_factory=dict)  #: overrides for this phase
    #: sample each batch's thinks through the engine (`tina.train.on_policy.OnPolicyConfig` fields:
    #: temperature, top_p, budget, slack_ratio; plus budget_cap, max_answer_tokens); None: off
    on_policy: dict[str, Any] | None = None
    prune_gates_below: float | None = None  #: at the phase's end, prune adapters scoring below
    calibrate: bool = False  #: at the phase's end, write `metacog_calibration.json` (eval_data)


@dataclass
class TrainConfig:
    """Everything a training run needs (the YAML file's sections)."""

    model: dict[str, Any] = field(
        default_factory=dict
    )  #: models_root/base/adapter/subfolder (empty: embedded); `parts`: start from the
    #: introspection parts in this directory (a run's checkpoint) instead of the model's own
    train_data: str = ""  #: contract JSONL file
    eval_data: str | None = None  #: held-out contract JSONL file for evaluation metrics
    strict_data: bool = True  #: stop at the first bad record (else skip and count)
    max_length: int = 512  #: longest tokenized example
    introspection: dict[str, Any] = field(default_factory=dict)  #: IntrospectionConfig fields
    output_dir: str = "runs/tina"  #: checkpoints and metrics go here
    steps: int = 200  #: optimizer steps in total
    batch_size: int = 16  #: examples per step (per process)
    seed: int = 0  #: seeds data order, initial weights and sampling
    save_every: int = 100  #: steps between checkpoints (and one at the end)
    eval_every: int = 0  #: steps between evaluations on `eval_data` (0: only at the end)
    log_every: int = 10  #: steps between metrics lines
    grad_clip: float = 1.0  #: gradient norm clip
    warmup_steps: int = 10  #: linear learning-rate warmup
    lr: dict[str, float] = field(
        default_factory=lambda: {"heads": 3e-3, "adapters": 1e-3, "base_top": 1e-5}
    )  #: per group
    weight_decay: float = 0.0  #: AdamW weight decay
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {
            "answer_ce": 1.0,
            "plan_ce": 1.0,
            "budget_loss": 1.0,
            "confidence_bce": 0.5,
            "gate_sparsity": 0.01,
        }
    )  #: base weights of the loss parts (see `tina.train.losses.LOSS_NAMES`); a mapping given
    #: in the config replaces these as a whole (a part it leaves out has weight 0)
    phases: list[PhaseConfig] = field(
        default_factory=lambda: [PhaseConfig(name="A", until_step=10**9)]
    )  #: in order
    tensorboard: bool = True  #: also write metrics as TensorBoard scalars
    #: "supervised" (the phases), "self_play" (`tina.selfplay.loop`: `self_play.iterations`
    #: iterations, no train_data needed) or "hybrid" (supervised steps with self-play
    #: iterations interleaved per `hybrid_schedule`)
    mode: str = "supervised"
    #: `tina.train.selfplay_config.SelfPlayConfig` fields (iterations, num_mc_rollouts, λ weights,
    #: …)
    self_play: dict[str, Any] = field(default_factory=dict)
    #: hybrid mode: after every `supervised_steps` steps, run `self_play_iters` iterations
    hybrid_schedule: HybridScheduleConfig = field(default_factory=HybridScheduleConfig)


Found = list[tuple[str, str | None]]  # (dotted field, problem or None)

#: integer fields and their lowest value
_INTS = {
    "steps": 1,
    "batch_size": 1,
    "save_every": 1,
    "log_every": 1,
    "max_length": 1,
    "eval_every": 0,
    "warmup_steps": 0,
    "seed": 0,
}
_NUMBERS = {"grad_clip": 0, "weight_decay": 0}  #: number fields and their lowest value
_BOOLS = ("strict_data", "tensorboard")
_MODEL_KEYS = ("models_root", "base", "adapter", "subfolder", "parts")


def _problems(raw: Any) -> Found:
    """Every problem of a train config mapping, as (dotted field, message)."""
    if not isinstance(raw, dict):
        return [(ROOT_FIELD, f"expected a mapping, got {type(raw).__name__}")]
    known = {f.name for f in fields(TrainConfig)}
    found: Found = [(str(k), "unknown key") for k in raw if k not in known]
    found += [(k, int_problem(raw[k], low)) for k, low in _INTS.items() if k in raw]
    found += [(k, number_problem(raw[k], low)) for k, low in _NUMBERS.items() if k in raw]
    found += [(k, bool_problem(raw[k])) for k in _BOOLS if k in raw]
    if "output_dir" in raw:
        found.append(("output_dir", str_problem(raw["output_dir"])))
    if "eval_data" in raw:
        found.append(("eval_data", str_problem(raw["eval_data"], optional=True)))
    if raw.get("train_data") not in (None, ""):  # none given: `tina train` names it (or --data)
        found.append(("train_data", str_problem(raw["train_data"])))
    if raw.get("mode", TRAIN_MODES[0]) not in TRAIN_MODES:
        found.append(("mode", f"expected one of {TRAIN_MODES}, got {raw['mode']!r}"))
    found += _model_problems(raw.get("model") or {})
    found += _lr_problems(raw.get("lr", {}))
    found += _weight_problems("loss_weights", raw.get("loss_weights", {}))
    found += _phase_problems(raw.get("phases", []) or [], bool(raw.get("eval_data")))
    found += _block_problems(raw)
    if "introspection" in raw:
        try:
            IntrospectionConfig.from_dict(raw["introspection"] or {})
        except (TypeError, ValueError) as exc:
            found.append(("introspection", str(exc)))
    return found


def _model_problems(model: Any) -> Found:
    if not isinstance(model, dict):
        return [("model", f"expected a mapping of {_MODEL_KEYS}, got {model!r}")]
    found: Found = [(f"model.{k}", "unknown key") for k in model if k not in _MODEL_KEYS]
    found += [(f"model.{k}", str_problem(v, optional=True)) for k, v in model.items()]
    return found


def _lr_problems(lr: Any) -> Found:
    if not isinstance(lr, dict):
        return [("lr", "expected a mapping of group -> learning rate")]
    found: Found = [
        (f"lr.{k}", f"unknown group (expected one of {GROUPS})") for k in lr if k not in GROUPS
    ]
    found += [(f"lr.{k}", positive_number_problem(v)) for k, v in lr.items()]
    return found


def _weight_problems(where: str, weights: Any) -> Found:
    if not isinstance(weights, dict):
        return [(where, "expected a mapping of loss name -> weight")]
    found: Found = [
        (f"{where}.{k}", f"unknown loss (expected one of {LOSS_NAMES})")
        for k in weights
        if k not in LOSS_NAMES
    ]
    found += [(f"{where}.{k}", number_problem(v, 0)) for k, v in weights.items()]
    return found


def _phase_problems(phases: Any, has_eval_data: bool) -> Found:
    if not isinstance(phases, list):
        return [("phases", "expected a list of phases")]
    found: Found = []
    known = {f.name for f in fields(PhaseConfig)}
    for i, phase in enumerate(phases):
        where = f"phases[{i}]"
        if not isinstance(phase, dict):
            found.append((where, "expected a mapping"))
            continue
        found += [(f"{where}.{k}", "unknown key") for k in phase if k not in known]
        found.append((f"{where}.name", str_problem(phase.get("name"))))
        found.append((f"{where}.until_step", int_problem(phase.get("until_step"), 1)))
        train = phase.get("train", [])
        if not isinstance(train, list):
            found.append((f"{where}.train", f"expected a list of groups among {GROUPS}"))
        else:
            found += [(f"{where}.train", f"unknown group {g!r}") for g in train if g not in GROUPS]
        if "unfreeze_top_k" in phase:
            found.append((f"{where}.unfreeze_top_k", int_problem(phase["unfreeze_top_k"], 0)))
        if phase.get("prune_gates_below") is not None:
            found.append(
                (f"{where}.prune_gates_below", number_problem(phase["prune_gates_below"], 0))
            )
        if "calibrate" in phase:
            found.append((f"{where}.calibrate", bool_problem(phase["calibrate"])))
        if phase.get("calibrate") is True and not has_eval_data:
            found.append((f"{where}.calibrate", "needs eval_data (the items to calibrate on)"))
        found += _weight_problems(f"{where}.loss_weights", phase.get("loss_weights", {}))
        found += _on_policy_problems(f"{where}.on_policy", phase.get("on_policy"))
    return found


def _on_policy_problems(where: str, value: Any) -> Found:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [(where, "expected a mapping (or null)")]
    known = {f.name for f in fields(OnPolicyConfig)} | set(ENGINE_KEYS)
    found: Found = [
        (f"{where}.{k}", f"unknown key (expected one of {sorted(known)})")
        for k in value
        if k not in known
    ]
    given = {k: v for k, v in value.items() if v is not None}
    found += [
        (f"{where}.{k}", number_problem(given[k], 0))
        for k in ("temperature", "slack_ratio")
        if k in given
    ]
    if "top_p" in given:
        found.append((f"{where}.top_p", positive_number_problem(given["top_p"], 1)))
    found += [
        (f"{where}.{k}", int_problem(given[k], 0)) for k in ("budget", *ENGINE_KEYS) if k in given
    ]
    return found


def _block_problems(raw: dict[str, Any]) -> Found:
    """The `self_play` block (`SelfPlayConfig`) and `hybrid_schedule` (`HybridScheduleConfig`),
    each checked by its dataclass, its problems filed under the block's key."""
    found: Found = []
    for key, cls in (("self_play", SelfPlayConfig), ("hybrid_schedule", HybridScheduleConfig)):
        block = raw.get(key) or {}
        if not isinstance(block, dict):
            found.append((key, "expected a mapping"))
            continue
        names = {f.name for f in fields(cls)}
        found += [(f"{key}.{k}", "unknown key") for k in block if k not in names]
        try:
            cls(**{k: v for k, v in block.items() if k in names})
        except ConfigError as exc:  # SelfPlayConfigError is one
            found += [(f"{key}.{p.field}", p.message) for p in exc.problems]
    return found


def read_config_yaml(path: str | Path) -> Any:
    """The YAML document in `path` (empty: {}); a `ConfigError` naming the file (field
    `(file)`) when it is missing, unreadable or not YAML. Train and recipe configs are read
    here."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        message = "file not found"
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read: {exc}"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1} column {mark.column + 1}"
        message = f"invalid YAML: {getattr(exc, 'problem', None) or exc}{where}"
    raise ConfigError([Problem(str(path), FILE_FIELD, message)])


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The train config in a YAML file (plus `overrides`, e.g. the command line's); a
    `TrainConfigError` listing every problem, each naming the file and the field."""
    try:
        raw = read_config_yaml(path)
    except ConfigError as exc:
        raise TrainConfigError(exc.problems) from None
    if isinstance(raw, dict):
        raw.update(overrides or {})
    problems = [Problem(str(path), name, message) for name, message in _problems(raw) if message]
    if problems:
        raise TrainConfigError(problems)
    phases = [PhaseConfig(**p) for p in raw.pop("phases", [])] or [
        PhaseConfig(name="A", until_step=10**9)
    ]
    lr = {**TrainConfig().lr, **raw.pop("lr", {})}
    schedule = HybridScheduleConfig(**(raw.pop("hybrid_schedule", None) or {}))
    return TrainConfig(**raw, phases=phases, lr=lr, hybrid_schedule=schedule)
