"""Phased training of the introspection parts from contract JSONL, under Hugging Face Accelerate.

What it does:
- `TrainConfig` (read from `train_config.yaml` by `load_train_config`, which reports every bad
  key or value, with its dotted path, before anything trains): model, data, introspection parts,
  optimizer, loss weights, and the phases;
- phases run in order, each until its `until_step`, each with its own loss weights (merged over
  the top-level ones) and trainable groups among `heads`, `adapters`, `base_top` (the top
  `unfreeze_top_k` decoder layers of the base): phase A trains heads and adapters on a frozen
  base; phase B adds think CE;
- optimizer parameter groups {heads, adapters, base_top} with their own learning rates, linear
  warmup, gradient clipping; heads compute in float32; seeds set everywhere;
- checkpoints at the save interval in `output_dir/checkpoint-<step>/`, written atomically
  (a temp directory renamed into place): the introspection parts, the optimizer, scheduler,
  data position and RNG states; `resume=True` continues from the newest one to the same result
  as an uninterrupted run;
- metrics to `output_dir/metrics.jsonl` (every loss part, think tokens, budget error, plan
  accuracy, gate activity/coverage, tokens/s) and a rich progress bar with ETA.

The same code runs in one process or under `accelerate launch --num_processes N`: batches are
sharded by rank and gradients are averaged by Accelerate.

What it does not do (yet): on-policy sampling through the engine and calibration/pruning
phases (C and D of the seeds), TensorBoard logging.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from tina.introspection import (
    INTROSPECTION_PREFIX,
    Introspection,
    IntrospectionConfig,
    attach_introspection,
    load_introspection,
    save_introspection,
)
from tina.losses import (
    LOSS_NAMES,
    answer_ce,
    budget_loss,
    combine_losses,
    confidence_bce,
    gate_sparsity,
    plan_ce,
    rewrite_consistency,
    think_ce,
)
from tina.metacog_heads import record_taps
from tina.models import embedded_model_dir, load_model
from tina.side_adapters import SideAdapter, decoder_layers, think_mask_context
from tina.train_data import Example, batch_order, collate, load_examples

GROUPS = ("heads", "adapters", "base_top")


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
    )  #: base weights of the loss parts (see `tina.losses.LOSS_NAMES`)
    phases: list[PhaseConfig] = field(
        default_factory=lambda: [PhaseConfig(name="A", until_step=10**9)]
    )  #: in order


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
    if "introspection" in raw:
        try:
            IntrospectionConfig.from_dict(raw["introspection"] or {})
        except (TypeError, ValueError) as exc:
            problems.append(f"introspection: {exc}")
    return problems


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The train config in a YAML file (plus `overrides`); every problem reported at once."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise TrainConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: invalid YAML: {exc}") from None
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


# --- the run -----------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _phase_at(config: TrainConfig, step: int) -> PhaseConfig:
    for phase in config.phases:
        if step < phase.until_step:
            return phase
    return config.phases[-1]


def _groups(model: Any, intro: Introspection) -> dict[str, list[torch.nn.Parameter]]:
    layers = decoder_layers(model)
    groups: dict[str, list[torch.nn.Parameter]] = {
        "heads": list(intro.heads.parameters()),
        "adapters": list(intro.adapters.parameters()),
        "base_top": [],
    }
    for k, layer in enumerate(reversed(layers)):
        for p in layer.parameters():
            p.base_top_rank = k  # type: ignore[attr-defined]  # distance from the top layer
            groups["base_top"].append(p)
    return groups


def _apply_phase(
    model: Any, groups: dict[str, list[torch.nn.Parameter]], phase: PhaseConfig
) -> None:
    """requires_grad per the phase: chosen groups on, the base frozen except its top k layers."""
    for name, param in model.named_parameters():
        if not name.startswith(INTROSPECTION_PREFIX):
            param.requires_grad_(False)
    for group, params in groups.items():
        for p in params:
            if group == "base_top":
                rank: int = getattr(p, "base_top_rank", 0)  # distance from the top layer
                p.requires_grad_("base_top" in phase.train and rank < phase.unfreeze_top_k)
            else:
                p.requires_grad_(group in phase.train)


def training_step_losses(
    model: Any, intro: Introspection, batch: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float], Any]:
    """One forward (think mask from the data; taps recorded) and every weighted loss part."""
    with think_mask_context(batch["think_mask"]), record_taps() as taps:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits
    heads = intro.heads(taps, batch["prompt_mask"])
    parts: dict[str, torch.Tensor | None] = {
        "answer_ce": answer_ce(logits, batch["input_ids"], batch["answer_mask"]),
        "think_ce": think_ce(logits, batch["input_ids"], batch["think_mask"])
        if weights.get("think_ce")
        else None,
        "plan_ce": plan_ce(heads.plan_logits, batch["plan_targets"]),
        "budget_loss": budget_loss(heads.budget, batch["budget_targets"]),
        "confidence_bce": confidence_bce(heads.confidence_logit, batch["correct"]),
        "gate_sparsity": gate_sparsity(
            [a.last_expected_l0 for a in intro.adapters.values() if isinstance(a, SideAdapter)]
        ),
    }
    pairs = batch["pair_index"]
    if weights.get("rewrite_consistency") and bool((pairs >= 0).any()):
        rows = torch.nonzero(pairs >= 0).squeeze(-1)
        first = rows[rows < pairs[rows]]
        second = pairs[first]
        parts["rewrite_consistency"] = rewrite_consistency(
            logits[first], batch["answer_mask"][first], logits[second], batch["answer_mask"][second]
        )
    total, logged = combine_losses(parts, weights)
    return total, logged, heads


def _checkpoint(output: Path, step: int, intro: Introspection, state: dict[str, Any]) -> Path:
    """Write `checkpoint-<step>` atomically: a temp directory renamed into place."""
    final = output / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.", dir=output))
    try:
        save_introspection(intro, tmp)
        torch.save(state, tmp / "trainer_state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def latest_checkpoint(output: Path) -> Path | None:
    """The checkpoint with the highest step in `output`, if any."""
    found = [
        p for p in output.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _metrics(
    logged: dict[str, float], heads: Any, batch: dict[str, torch.Tensor], intro: Introspection
) -> dict[str, float]:
    known = batch["plan_targets"] >= 0
    plan_acc = (
        float((heads.plan_logits.argmax(-1)[known] == batch["plan_targets"][known]).float().mean())
        if known.any()
        else float("nan")
    )
    has_budget = batch["budget_targets"] >= 0
    budget_err = (
        float((heads.budget[has_budget] - batch["budget_targets"][has_budget]).abs().mean())
        if has_budget.any()
        else float("nan")
    )
    adapters = [a for a in intro.adapters.values() if isinstance(a, SideAdapter)]
    return {
        **logged,
        "plan_accuracy": plan_acc,
        "budget_error": budget_err,
        "think_tokens_used": float(batch["think_mask"].sum(1).float().mean()),
        "gate_activity": sum(a.last_activity for a in adapters) / max(1, len(adapters)),
        "gate_coverage": sum(a.last_coverage for a in adapters) / max(1, len(adapters)),
    }


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties get their average rank)."""

    def ranks(values: Sequence[float]) -> torch.Tensor:
        x = torch.tensor(values, dtype=torch.float64)
        order = torch.argsort(x)
        r = torch.empty_like(x)
        r[order] = torch.arange(len(x), dtype=torch.float64)
        for v in torch.unique(x):  # average ranks of ties
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float((ra.square().sum() * rb.square().sum()).sqrt())
    return float((ra * rb).sum()) / denominator if denominator > 0 else float("nan")


@torch.no_grad()
def evaluate_heads(
    model: Any, intro: Introspection, examples: Sequence[Example], pad_id: int, batch_size: int = 64
) -> dict[str, float]:
    """Plan accuracy, budget Spearman ρ and mean absolute budget error of the heads on
    `examples` (the heads read the prompt only, as in serving)."""
    was_training = model.training
    model.eval()
    plans, plan_targets, budgets, budget_targets = [], [], [], []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        batch = {
            k: v.to(next(model.parameters()).device) for k, v in collate(chunk, pad_id).items()
        }
        with record_taps() as taps:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        heads = intro.heads(taps, batch["prompt_mask"])
        plans += heads.plan_logits.argmax(-1).tolist()
        plan_targets += batch["plan_targets"].tolist()
        budgets += heads.budget.tolist()
        budget_targets += batch["budget_targets"].tolist()
    model.train(was_training)
    known = [(p, t) for p, t in zip(plans, plan_targets, strict=True) if t >= 0]
    pairs = [(b, t) for b, t in zip(budgets, budget_targets, strict=True) if t >= 0]
    return {
        "eval_plan_accuracy": sum(p == t for p, t in known) / len(known) if known else float("nan"),
        "eval_budget_spearman": spearman([b for b, _ in pairs], [t for _, t in pairs])
        if len(pairs) > 1
        else float("nan"),
        "eval_budget_mae": sum(abs(b - t) for b, t in pairs) / len(pairs)
        if pairs
        else float("nan"),
        "eval_n": float(len(examples)),
    }


def _average_gradients(accelerator: Any, params: list[torch.nn.Parameter]) -> None:
    """Mean of each trainable gradient over processes (the heads run outside the model's
    forward, so DDP's hooks would not see them; one all-reduce per parameter does)."""
    if accelerator.num_processes == 1:
        return
    for p in params:
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad = accelerator.reduce(grad, reduction="mean")


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the configured training; returns a summary with the final metrics."""
    from accelerate import Accelerator
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    accelerator = Accelerator()
    _seed_everything(config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    m = config.model
    if m.get("base"):
        from tina.introspection import load_introspective_model

        model, tokenizer, intro = load_introspective_model(
            m.get("models_root") or ".",
            m["base"],
            m.get("adapter"),
            m.get("subfolder"),
            device=str(accelerator.device),
        )
    else:
        model, tokenizer = load_model(embedded_model_dir(), device=str(accelerator.device))
        intro = None
    checkpoint = latest_checkpoint(output) if resume else None
    if intro is None:
        intro = (
            load_introspection(model, checkpoint)
            if checkpoint
            else attach_introspection(model, IntrospectionConfig.from_dict(config.introspection))
        )
    elif checkpoint:
        intro.load_state_dict(load_introspection(model, checkpoint).state_dict())
    model.train()
    groups = _groups(model, intro)
    optimizer = torch.optim.AdamW(
        [{"params": groups[g], "lr": config.lr[g], "name": g} for g in GROUPS if groups[g]],
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
    )
    examples: list[Example] = load_examples(
        tokenizer, config.train_data, config.strict_data, config.max_length
    )
    eval_examples = (
        load_examples(tokenizer, config.eval_data, config.strict_data, config.max_length)
        if config.eval_data
        else []
    )
    start_step, epoch, index = 0, 0, 0
    if checkpoint is not None:
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, epoch, index = state["step"], state["epoch"], state["index"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
    rank, world = accelerator.process_index, accelerator.num_processes
    epoch_batches = batch_order(examples, config.batch_size * world, config.seed + epoch)
    metrics_path = output / "metrics.jsonl"
    summary: dict[str, Any] = {}
    started = time.perf_counter()
    tokens = 0
    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not (progress and accelerator.is_main_process)) as bar:
        task = bar.add_task("train", total=config.steps, completed=start_step)
        for step in range(start_step, config.steps):
            phase = _phase_at(config, step)
            _apply_phase(model, groups, phase)
            weights = {**config.loss_weights, **phase.loss_weights}
            if index >= len(epoch_batches) or len(epoch_batches[index]) < world:  # next epoch
                epoch, index = epoch + 1, 0
                epoch_batches = batch_order(
                    examples, config.batch_size * world, config.seed + epoch
                )
            indices = epoch_batches[index][rank::world]
            index += 1
            batch = {
                k: v.to(accelerator.device)
                for k, v in collate([examples[i] for i in indices], tokenizer.pad_token_id).items()
            }
            total, logged, heads = training_step_losses(model, intro, batch, weights)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(total)
            trainable = [p for g in GROUPS for p in groups[g] if p.requires_grad]
            _average_gradients(accelerator, trainable)
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            tokens += int(batch["attention_mask"].sum())
            bar.advance(task)
            done = step + 1
            evaluate = eval_examples and (
                done == config.steps or (config.eval_every and done % config.eval_every == 0)
            )
            if accelerator.is_main_process and (
                done % config.log_every == 0 or done == config.steps or evaluate
            ):
                record = {
                    "step": done,
                    "phase": phase.name,
                    **_metrics(logged, heads, batch, intro),
                }
                if evaluate:
                    record.update(
                        evaluate_heads(model, intro, eval_examples, tokenizer.pad_token_id)
                    )
                record["tokens_per_s"] = tokens / (time.perf_counter() - started)
                with metrics_path.open("a") as handle:
                    handle.write(
                        json.dumps(
                            {
                                k: (None if isinstance(v, float) and math.isnan(v) else v)
                                for k, v in record.items()
                            }
                        )
                        + "\n"
                    )
                summary = record
            if accelerator.is_main_process and (
                done % config.save_every == 0 or done == config.steps
            ):
                state = {
                    "step": done,
                    "epoch": epoch,
                    "index": index,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "python_rng": random.getstate(),
                    "torch_rng": torch.get_rng_state(),
                    "config": asdict(config),
                }
                _checkpoint(output, done, intro, state)
    accelerator.wait_for_everyone()
    return summary
