"""Phased training of the introspection parts from contract JSONL, under Hugging Face Accelerate.

What it does:
- `TrainConfig` (`tina.train.config`: read from `train_config.yaml` by `load_train_config`,
  which reports every bad key or value before anything trains): model, data, introspection
  parts, optimizer, loss weights, and the phases;
- phases run in order, each until its `until_step`, each with its own loss weights (merged over
  the top-level ones) and trainable groups among `heads`, `adapters`, `base_top` (the top
  `unfreeze_top_k` decoder layers of the base): phase A trains heads and adapters on a frozen
  base; phase B adds think CE and the consistency term; phase C (`on_policy`) replaces each
  batch's thinks by the model's own, sampled through the engine (`tina.train.on_policy`: think CE
  only
  where the sampled think led to a correct answer, confidence against that correctness, budget
  against the tokens that sufficed) and may unfreeze the top-k base layers; phase D calibrates
  (`calibrate`: the calibration JSON from `eval_data`, `tina.eval.calibrate`) and prunes dead gates
  (`prune_gates_below`, `tina.train.pruning`) at its end;
- optimizer parameter groups {heads, adapters, base_top} with their own learning rates, linear
  warmup, gradient clipping; heads compute in float32; seeds set everywhere;
- checkpoints at the save interval in `output_dir/checkpoint-<step>/`, written atomically
  (a temp directory renamed into place): the introspection parts (plus the base weights a
  partial unfreeze changed), the optimizer, scheduler, data position and RNG states;
  `resume=True` continues from the newest one to the same result as an uninterrupted run;
  SIGTERM/SIGINT end the run cleanly after the current step with a final checkpoint;
- metrics to `output_dir/metrics.jsonl` and TensorBoard (`output_dir/tensorboard`): every loss
  part, think tokens, budget error, plan accuracy, gate activity/coverage, tokens/s; a rich
  progress bar with ETA.

The same code runs in one process or under `accelerate launch --num_processes N`: batches are
sharded by rank and gradients are averaged by Accelerate.

What it does not do: the budget policy's reinforcement learning or self-play (their modules
build on this one), or multi-node launch details (Accelerate's).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch

from tina.core.calibration import CALIBRATION_FILE
from tina.core.introspection import (
    INTROSPECTION_PREFIX,
    Introspection,
    inner_model,
)
from tina.core.metacog_heads import record_taps
from tina.core.side_adapters import SideAdapter, decoder_layers, gate_stats, think_mask_context
from tina.train.checkpoints import (
    StopFlag,
    latest_checkpoint,
    load_checkpoint,
    load_parts,
    save_checkpoint,
    seed_everything,
    write_metrics,
)
from tina.train.config import (
    ENGINE_KEYS,
    GROUPS,
    PhaseConfig,
    TrainConfig,
)
from tina.train.data import Example, batch_order, collate, example_from_record, load_examples
from tina.train.losses import (
    answer_ce,
    answer_logprob,
    budget_loss,
    combine_losses,
    confidence_bce,
    constraint_bce,
    gate_sparsity,
    over_budget_penalty,
    plan_ce,
    quiet_star_consistency,
    rewrite_consistency,
    segment_ce,
    style_invariance_kl,
    think_ce,
)
from tina.train.on_policy import OnPolicyConfig, sample_records
from tina.train.pruning import prune_dead_adapters

# --- the run -----------------------------------------------------------------------------------


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


def _without_think(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with the think segment's tokens removed (the `<think></think>` tags stay),
    right-padded again: the think-free input of `quiet_star_consistency`."""
    keep = (batch["attention_mask"] != 0) & (batch["think_mask"] == 0)
    width = int(keep.sum(1).max())
    out = {
        "input_ids": torch.zeros(
            keep.shape[0], width, dtype=torch.long, device=batch["input_ids"].device
        ),
    }
    out["attention_mask"] = torch.zeros_like(out["input_ids"])
    out["answer_mask"] = torch.zeros_like(out["input_ids"])
    for b in range(keep.shape[0]):
        row = keep[b]
        n = int(row.sum())
        out["input_ids"][b, :n] = batch["input_ids"][b][row]
        out["attention_mask"][b, :n] = 1
        out["answer_mask"][b, :n] = batch["answer_mask"][b][row]
    return out


def _heads_at_think_close(
    intro: Introspection, taps: Any, batch: dict[str, torch.Tensor], offset: int = 0
) -> Any:
    """The heads read at the `</think>` position, as the engine reads them when thinking closes
    (confidence after thinking): `</think>` sits right after the prompt and the think tokens.
    `offset` −1 reads the last think token instead (the engine's exit check)."""
    close = (batch["prompt_mask"].sum(1) + batch["think_mask"].sum(1) + offset).clamp(
        min=0, max=batch["input_ids"].shape[1] - 1
    )
    mask = torch.zeros_like(batch["prompt_mask"])
    mask[torch.arange(mask.shape[0], device=mask.device), close] = 1
    return intro.heads(taps, mask)


def training_step_losses(
    model: Any, intro: Introspection, batch: dict[str, torch.Tensor], weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float], Any]:
    """One forward (think mask from the data; taps recorded) and every weighted loss part.

    Rows with `lm_weight` 0 (on-policy thinks that failed) get no think or answer CE. Optional
    parts run only when their weight is set and the batch has their fields: think CE,
    over-budget penalty (the data's think length against the predicted budget), the consistency
    term (a second, think-free forward), rewrite consistency (paraphrase pairs) and style
    invariance (style pairs), reflection/program CE (`<reflect>`/`<program>` masks), constraint
    BCE (a constraint head and `constraint_vec` targets)."""
    with think_mask_context(batch["think_mask"]), record_taps() as taps:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits
    heads = intro.heads(taps, batch["prompt_mask"])
    used = batch["think_mask"].sum(1).float()
    imitate = (batch["lm_weight"] > 0).to(batch["think_mask"].dtype)[:, None]
    think_rows = batch["think_mask"] * imitate
    answer_rows = batch["answer_mask"] * imitate
    on = {k for k, v in weights.items() if v}
    parts: dict[str, torch.Tensor | None] = {
        "answer_ce": answer_ce(logits, batch["input_ids"], answer_rows),
        "think_ce": think_ce(logits, batch["input_ids"], think_rows) if "think_ce" in on else None,
        "plan_ce": plan_ce(heads.plan_logits, batch["plan_targets"]),
        "budget_loss": budget_loss(heads.budget, batch["budget_targets"]),
        "confidence_bce": 0.5
        * (
            confidence_bce(heads.confidence_logit, batch["correct"])
            + confidence_bce(
                _heads_at_think_close(intro, taps, batch).confidence_logit, batch["correct_after"]
            )
        ),
        "exit_bce": confidence_bce(
            _heads_at_think_close(intro, taps, batch, offset=-1).readiness_logit(),
            torch.where(batch["think_mask"].sum(1) > 0, batch["correct_after"], -1.0),
        )
        if "exit_bce" in on
        else None,
        "over_budget_penalty": over_budget_penalty(used, heads.budget)
        if "over_budget_penalty" in on
        else None,
        "gate_sparsity": gate_sparsity(
            [a.last_expected_l0 for a in intro.adapters.values() if isinstance(a, SideAdapter)]
        ),
    }
    if "quiet_star_consistency" in on and bool(batch["think_mask"].any()):
        free = _without_think(batch)
        free_logits = model(
            input_ids=free["input_ids"], attention_mask=free["attention_mask"]
        ).logits
        parts["quiet_star_consistency"] = quiet_star_consistency(
            answer_logprob(logits, batch["input_ids"], batch["answer_mask"]),
            answer_logprob(free_logits, free["input_ids"], free["answer_mask"]).detach(),
        )
    for name, key in (("reflect_ce", "reflect_mask"), ("program_ce", "program_mask")):
        if name in on and key in batch:
            parts[name] = segment_ce(logits, batch["input_ids"], batch[key])
    constraint_logits = heads.extensions.get("constraint_logits")
    if "constraint_bce" in on and constraint_logits is not None and "constraint_targets" in batch:
        parts["constraint_bce"] = constraint_bce(
            constraint_logits, batch["constraint_targets"], batch["constraint_present"]
        )
    pairs = batch["pair_index"]
    for name, style in (("rewrite_consistency", False), ("style_invariance_kl", True)):
        if name not in on:
            continue
        rows = torch.nonzero((pairs >= 0) & (batch["style_pair"] == style)).squeeze(-1)
        first = rows[rows < pairs[rows]]
        if len(first) == 0:
            continue
        second = pairs[first]
        loss_fn = style_invariance_kl if style else rewrite_consistency
        parts[name] = loss_fn(
            logits[first], batch["answer_mask"][first], logits[second], batch["answer_mask"][second]
        )
    total, logged = combine_losses(parts, weights)
    return total, logged, heads


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
        float(
            (heads.budget.detach()[has_budget] - batch["budget_targets"][has_budget]).abs().mean()
        )
        if has_budget.any()
        else float("nan")
    )
    return {
        **logged,
        "plan_accuracy": plan_acc,
        "budget_error": budget_err,
        "think_tokens_used": float(batch["think_mask"].sum(1).float().mean()),
        **gate_stats(intro.adapters),
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


def _optimizer(
    config: TrainConfig, groups: dict[str, list[torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [{"params": groups[g], "lr": config.lr[g], "name": g} for g in GROUPS if groups[g]],
        weight_decay=config.weight_decay,
    )


def _base_top_names(model: Any, config: TrainConfig) -> list[str]:
    """Names of the base parameters some phase may train (its top `unfreeze_top_k` layers)."""
    k = max((p.unfreeze_top_k for p in config.phases if "base_top" in p.train), default=0)
    if k == 0:
        return []
    inner = inner_model(model)
    top = {id(p) for layer in list(decoder_layers(model))[-k:] for p in layer.parameters()}
    return [n for n, p in inner.named_parameters() if id(p) in top]


def _on_policy_batch(
    model: Any,
    tokenizer: Any,
    intro: Introspection,
    chosen: list[Example],
    options: dict[str, Any],
    seed: int,
    max_length: int,
) -> tuple[list[Example], dict[str, float]]:
    """The batch's examples with their thinks replaced by the model's own
    (`tina.train.on_policy`)."""
    from tina.engine.loop import Engine, EngineConfig

    engine_options = {k: options[k] for k in ENGINE_KEYS if options.get(k) is not None}
    sampling = OnPolicyConfig(**{k: v for k, v in options.items() if k not in ENGINE_KEYS})
    engine = Engine(model, tokenizer, intro, EngineConfig(**engine_options))
    was_training = model.training
    model.eval()
    try:
        records, stats = sample_records(engine, [ex.record for ex in chosen], sampling, seed)
    finally:
        model.train(was_training)
    out = []
    for ex, record in zip(chosen, records, strict=True):
        try:
            out.append(example_from_record(tokenizer, record, max_length))
        except ValueError:  # too long or unsegmentable: keep the offline example
            out.append(ex)
    return out, stats


def _calibrate(
    model: Any, tokenizer: Any, intro: Introspection, eval_path: str, out_path: Path
) -> dict[str, float]:
    """Fit the calibration on the eval items through the engine; write it to `out_path`."""
    from tina.data.contract import read_contract_jsonl
    from tina.engine.loop import Engine
    from tina.eval.calibrate import calibrate_on_records

    records = read_contract_jsonl(eval_path).records
    was_training = model.training
    model.eval()
    try:
        return calibrate_on_records(Engine(model, tokenizer, intro), records, out_path)
    finally:
        model.train(was_training)


class Interleave(Protocol):
    """Builds what runs between supervised steps (hybrid mode's self-play schedule)."""

    def __call__(self, model: Any, tokenizer: Any, intro: Introspection) -> Any: ...


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    interleave: Interleave | None = None,
) -> dict[str, Any]:
    """Run (or resume) the supervised phases; returns a summary with the final metrics
    (`stopped` names the signal when SIGTERM/SIGINT ended it early). `interleave(model,
    tokenizer, intro)`, when given, builds what runs after each step (`after_step(done,
    write)`: hybrid mode's self-play iterations, `tina.selfplay.loop.HybridSchedule`)."""
    from accelerate import Accelerator
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # Under a multi-process launch (torchrun sets LOCAL_RANK) on a machine without CUDA, run the
    # processes on CPU with gloo; Accelerate would otherwise fall back to one lone process.
    on_cpu = "LOCAL_RANK" in os.environ and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=on_cpu)
    seed_everything(config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output) if resume else None
    model, tokenizer, intro = load_parts(config, str(accelerator.device), checkpoint)
    model.train()
    groups = _groups(model, intro)
    optimizer = _optimizer(config, groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
    )
    base_names = _base_top_names(model, config)
    inner_params = dict(inner_model(model).named_parameters())
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
        state = load_checkpoint(checkpoint, config.mode)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, epoch, index = state["step"], state["epoch"], state["index"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        if (checkpoint / CALIBRATION_FILE).is_file():
            shutil.copy2(checkpoint / CALIBRATION_FILE, output / CALIBRATION_FILE)
    rank, world = accelerator.process_index, accelerator.num_processes
    epoch_batches = batch_order(examples, config.batch_size * world, config.seed + epoch)
    metrics_path = output / "metrics.jsonl"
    writer = None
    if config.tensorboard and accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)
    summary: dict[str, Any] = {}
    hybrid = interleave(model, tokenizer, intro) if interleave is not None else None
    started = time.perf_counter()
    tokens = 0
    columns = [
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with (
        StopFlag() as stop,
        Progress(*columns, disable=not (progress and accelerator.is_main_process)) as bar,
    ):
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
            chosen = [examples[i] for i in epoch_batches[index][rank::world]]
            index += 1
            extra: dict[str, Any] = {}
            if phase.on_policy is not None:
                chosen, extra = _on_policy_batch(
                    model,
                    tokenizer,
                    intro,
                    chosen,
                    phase.on_policy,
                    (config.seed * 1_000_003 + step) * 64 + rank,
                    config.max_length,
                )
            batch = {
                k: v.to(accelerator.device)
                for k, v in collate(chosen, tokenizer.pad_token_id).items()
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
            if hybrid is not None:
                hybrid.after_step(
                    done,
                    lambda r: (
                        write_metrics(metrics_path, r, writer)
                        if accelerator.is_main_process
                        else None
                    ),
                )
            phase_end = done in (phase.until_step, config.steps)
            if phase_end and phase.prune_gates_below is not None:
                pruned, scores = prune_dead_adapters(
                    model,
                    intro,
                    eval_examples or examples[:256],
                    tokenizer.pad_token_id,
                    float(phase.prune_gates_below),
                )
                extra["pruned_adapters"] = pruned
                extra.update({f"gate_score_{k}": v for k, v in scores.items()})
                if pruned:  # the optimizer keeps the state of what is left
                    old_state = optimizer.state
                    groups = _groups(model, intro)
                    optimizer = _optimizer(config, groups)
                    for p in (p for g in groups.values() for p in g):
                        if p in old_state:
                            optimizer.state[p] = old_state[p]
                    scheduler.optimizer = optimizer
            if phase_end and phase.calibrate and accelerator.is_main_process:
                assert config.eval_data is not None  # checked by load_train_config
                extra.update(
                    _calibrate(model, tokenizer, intro, config.eval_data, output / CALIBRATION_FILE)
                )
            stopping = stop.signal is not None
            evaluate = eval_examples and (
                done == config.steps
                or stopping
                or (config.eval_every and done % config.eval_every == 0)
            )
            if accelerator.is_main_process and (
                done % config.log_every == 0
                or done == config.steps
                or evaluate
                or extra
                or stopping
            ):
                record = {
                    "step": done,
                    "phase": phase.name,
                    "mode": "supervised",
                    **_metrics(logged, heads, batch, intro),
                    **extra,
                }
                if evaluate:
                    record.update(
                        evaluate_heads(model, intro, eval_examples, tokenizer.pad_token_id)
                    )
                record["tokens_per_s"] = tokens / (time.perf_counter() - started)
                if stopping:
                    record["stopped"] = signal.Signals(stop.signal or 0).name
                write_metrics(metrics_path, record, writer)
                summary = record
            if accelerator.is_main_process and (
                done % config.save_every == 0 or done == config.steps or stopping
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
                base = {n: inner_params[n] for n in base_names}
                save_checkpoint(output, done, intro, state, config.mode, base)
            if stopping:
                break
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    if world > 1:  # every process must hold the same weights: they took the same averaged steps
        checksum = torch.stack([p.detach().double().sum() for p in intro.parameters()]).sum()
        gathered = accelerator.gather(checksum.reshape(1).to(accelerator.device))
        if not torch.allclose(gathered, gathered[:1].expand_as(gathered)):
            raise RuntimeError(f"processes diverged: parameter checksums {gathered.tolist()}")
        if accelerator.is_main_process:
            summary["processes"] = world
        # Close the process group before the interpreter exits: left to teardown, gloo's threads
        # can abort a rank ("terminate called without an active exception").
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return summary
