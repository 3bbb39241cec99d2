"""The train config: `TrainConfig` and its phases, read from `train_config.yaml` by
`load_train_config`, which reports every bad key or value with its dotted path (file: key:
problem) before anything trains.

What it does: the dataclasses and their documented fields, the checks (keys, types, ranges,
loss names, trainable groups, the on-policy and self-play blocks, the introspection section),
and `read_config_yaml` (train and recipe configs are read there).
What it does not do: train (`tina.train.trainer`), or check the data files (the trainer reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tina.core.introspection import IntrospectionConfig
from tina.train.losses import LOSS_NAMES
from tina.train.on_policy import OnPolicyConfig

GROUPS = ("heads", "adapters", "base_top")  #: the trainable parameter groups
ENGINE_KEYS = ("budget_cap", "max_answer_tokens")  #: on_policy keys that go to the engine
TRAIN_MODES = ("supervised", "self_play", "hybrid")  #: `TrainConfig.mode`


class TrainConfigError(ValueError):
    """A train config with bad keys or values; the message lists every one."""


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
    )  #: models_root/base/adapter/subfolder (empty: embedded)
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
    )  #: base weights of the loss parts (see `tina.train.losses.LOSS_NAMES`)
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
    hybrid_schedule: dict[str, int] = field(
        default_factory=lambda: {"supervised_steps": 100, "self_play_iters": 10}
    )


def _problems(raw: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(raw, dict):
        return ["(top level): expected a mapping"]
    known = {f.name for f in fields(TrainConfig)}
    problems += [f"{k}: unknown key" for k in raw if k not in known]
    for key in ("steps", "batch_size", "save_every", "log_every", "max_length"):
        if key in raw and (
            not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1
        ):
            problems.append(f"{key}: expected a positive integer, got {raw[key]!r}")
    for key in ("eval_every", "warmup_steps", "seed"):
        if key in raw and (not isinstance(raw[key], int) or raw[key] < 0):
            problems.append(f"{key}: expected an integer >= 0, got {raw[key]!r}")
    if "tensorboard" in raw and not isinstance(raw["tensorboard"], bool):
        problems.append(f"tensorboard: expected true or false, got {raw['tensorboard']!r}")
    for key in ("grad_clip", "weight_decay"):
        if key in raw and (not isinstance(raw[key], (int, float)) or raw[key] < 0):
            problems.append(f"{key}: expected a number >= 0, got {raw[key]!r}")
    if "lr" in raw:
        if not isinstance(raw["lr"], dict):
            problems.append("lr: expected a mapping of group -> learning rate")
        else:
            problems += [
                f"lr.{k}: unknown group (expected one of {GROUPS})"
                for k in raw["lr"]
                if k not in GROUPS
            ]
            problems += [
                f"lr.{k}: expected a positive number, got {v!r}"
                for k, v in raw["lr"].items()
                if not isinstance(v, (int, float)) or v <= 0
            ]
    weights = [("loss_weights", raw.get("loss_weights", {}))]
    for i, phase in enumerate(raw.get("phases", []) or []):
        where = f"phases[{i}]"
        if not isinstance(phase, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        pknown = {f.name for f in fields(PhaseConfig)}
        problems += [f"{where}.{k}: unknown key" for k in phase if k not in pknown]
        if not isinstance(phase.get("until_step"), int) or phase["until_step"] < 1:
            problems.append(
                f"{where}.until_step: expected a positive integer, got {phase.get('until_step')!r}"
            )
        problems += [
            f"{where}.train: unknown group {g!r}" for g in phase.get("train", []) if g not in GROUPS
        ]
        weights.append((f"{where}.loss_weights", phase.get("loss_weights", {})))
        problems += _on_policy_problems(f"{where}.on_policy", phase.get("on_policy"))
        if phase.get("unfreeze_top_k") is not None and (
            not isinstance(phase["unfreeze_top_k"], int) or phase["unfreeze_top_k"] < 0
        ):
            problems.append(
                f"{where}.unfreeze_top_k: expected an integer >= 0, got {phase['unfreeze_top_k']!r}"
            )
        threshold = phase.get("prune_gates_below")
        if threshold is not None and (
            not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or threshold < 0
        ):
            problems.append(f"{where}.prune_gates_below: expected a number >= 0, got {threshold!r}")
        if not isinstance(phase.get("calibrate", False), bool):
            problems.append(f"{where}.calibrate: expected true or false")
        if phase.get("calibrate") and not raw.get("eval_data"):
            problems.append(f"{where}.calibrate: needs eval_data (the items to calibrate on)")
    for where, mapping in weights:
        if not isinstance(mapping, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        problems += [
            f"{where}.{k}: unknown loss (expected one of {LOSS_NAMES})"
            for k in mapping
            if k not in LOSS_NAMES
        ]
        problems += [
            f"{where}.{k}: expected a number >= 0, got {v!r}"
            for k, v in mapping.items()
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
        ]
    problems += _self_play_problems(raw)
    if "introspection" in raw:
        try:
            IntrospectionConfig.from_dict(raw["introspection"] or {})
        except (TypeError, ValueError) as exc:
            problems.append(f"introspection: {exc}")
    return problems


def _self_play_problems(raw: dict[str, Any]) -> list[str]:
    """`mode`, the `self_play` block (keys and values of `SelfPlayConfig`), `hybrid_schedule`."""
    from tina.train.selfplay_config import SelfPlayConfig, SelfPlayConfigError

    problems = []
    if raw.get("mode", "supervised") not in TRAIN_MODES:
        problems.append(f"mode: expected one of {TRAIN_MODES}, got {raw['mode']!r}")
    block = raw.get("self_play") or {}
    if not isinstance(block, dict):
        problems.append("self_play: expected a mapping")
    else:
        try:
            SelfPlayConfig.from_dict(block)
        except SelfPlayConfigError as exc:
            problems += [f"self_play.{p}" for p in exc.problems]
    schedule = raw.get("hybrid_schedule") or {}
    if not isinstance(schedule, dict):
        problems.append("hybrid_schedule: expected a mapping")
    else:
        for k, v in schedule.items():
            if k not in ("supervised_steps", "self_play_iters"):
                problems.append(f"hybrid_schedule.{k}: unknown key")
            elif not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"hybrid_schedule.{k}: expected a positive integer, got {v!r}")
    return problems


def _on_policy_problems(where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [f"{where}: expected a mapping (or null)"]
    known = {f.name for f in fields(OnPolicyConfig)} | set(ENGINE_KEYS)
    problems = [
        f"{where}.{k}: unknown key (expected one of {sorted(known)})"
        for k in value
        if k not in known
    ]
    for key in ("temperature", "slack_ratio"):
        v = value.get(key)
        if v is not None and (not isinstance(v, (int, float)) or v < 0):
            problems.append(f"{where}.{key}: expected a number >= 0, got {v!r}")
    top_p = value.get("top_p")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        problems.append(f"{where}.top_p: expected a number in (0, 1], got {top_p!r}")
    for key in ("budget", *ENGINE_KEYS):
        v = value.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            problems.append(f"{where}.{key}: expected an integer >= 0, got {v!r}")
    return problems


def read_config_yaml(path: str | Path) -> Any:
    """The YAML document in `path` (empty: {}); TrainConfigError naming the file when it is
    missing or not YAML. Train and recipe configs are read here."""
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise TrainConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: invalid YAML: {exc}") from None


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The train config in a YAML file (plus `overrides`); every problem reported at once."""
    raw = read_config_yaml(path)
    if isinstance(raw, dict):
        raw.update(overrides or {})
    problems = _problems(raw)
    if problems:
        raise TrainConfigError("\n".join(f"{path}: {p}" for p in problems))
    phases = [PhaseConfig(**p) for p in raw.pop("phases", [])] or [
        PhaseConfig(name="A", until_step=10**9)
    ]
    lr = {**TrainConfig().lr, **raw.pop("lr", {})}
    return TrainConfig(**raw, phases=phases, lr=lr)
