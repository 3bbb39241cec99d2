"""The supervised trainer: the phases of a `TrainConfig` on contract JSONL, under Hugging Face
Accelerate, in one process or several (`accelerate launch --num_processes N`).

What it does: `train(config)` runs the phases in order (each with its trainable groups, loss
weights, optional on-policy thinks, and at its end pruning and calibration); AdamW per parameter
group, warmup, gradient clipping; seeded data order sharded by rank; atomic checkpoints and a
resume that ends where a straight run does (`tina.train.checkpoints`); a clean stop on
SIGTERM/SIGINT; metrics to `metrics.jsonl` and TensorBoard. The model with its introspection
parts goes to `accelerator.prepare` as one module (`tina.train.step.StepModule`), so gradients
are averaged by Accelerate's wrapper (DDP). `interleave` runs what hybrid mode puts between
steps. The whole story: docs/training.md.

What it does not do: read the config (`tina.train.config`), compute the losses
(`tina.train.step`), or self-play (`tina.selfplay.loop`; `tina.training` picks the mode).
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tina.core.calibration import CALIBRATION_FILE
from tina.core.introspection import INTROSPECTION_PREFIX, Introspection, inner_model
from tina.core.metacog_heads import record_taps
from tina.core.side_adapters import decoder_layers
from tina.eval.metrics import budget_error, plan_accuracy, spearman
from tina.train.checkpoints import (
    StopFlag,
    latest_checkpoint,
    load_checkpoint,
    load_parts,
    make_accelerator,
    progress_bar,
    save_checkpoint,
    seed_everything,
    write_metrics,
)
from tina.train.config import ENGINE_KEYS, GROUPS, PhaseConfig, TrainConfig
from tina.train.data import Example, batch_order, collate, example_from_record, load_examples
from tina.train.on_policy import OnPolicyConfig, sample_records
from tina.train.pruning import prune_dead_adapters
from tina.train.step import StepModule, batch_metrics

# --- phases and parameter groups ------------------------------------------------------------------


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


def _optimizer(
    config: TrainConfig, groups: dict[str, list[torch.nn.Parameter]]
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [{"params": groups[g], "lr": config.lr[g], "name": g} for g in GROUPS if groups[g]],
        weight_decay=config.weight_decay,
    )


def _scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, done: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps`, `done` steps in (a rebuilt optimizer goes on where the
    old one was)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)), last_epoch=done - 1
    )


def _base_top_names(model: Any, config: TrainConfig) -> list[str]:
    """Names of the base parameters some phase may train (its top `unfreeze_top_k` layers)."""
    k = max((p.unfreeze_top_k for p in config.phases if "base_top" in p.train), default=0)
    if k == 0:
        return []
    inner = inner_model(model)
    top = {id(p) for layer in list(decoder_layers(model))[-k:] for p in layer.parameters()}
    return [n for n, p in inner.named_parameters() if id(p) in top]


# --- what runs the model besides the step --------------------------------------------------------


@torch.no_grad()
def evaluate_heads(
    model: Any, intro: Introspection, examples: Sequence[Example], pad_id: int, batch_size: int = 64
) -> dict[str, float]:
    """Plan accuracy, budget Spearman ρ and mean absolute budget error of the heads on
    `examples` (the heads read the prompt only, as in serving; `tina.eval.metrics`)."""
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
    predicted, gold = [b for b, _ in pairs], [t for _, t in pairs]
    return {
        "eval_plan_accuracy": plan_accuracy([p for p, _ in known], [t for _, t in known]),
        "eval_budget_spearman": spearman(predicted, gold),
        "eval_budget_mae": budget_error(predicted, gold)[0],
        "eval_n": float(len(examples)),
    }


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
    from tina.engine.loop import Engine
    from tina.engine.types import EngineConfig

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


# --- one run, step by step ------------------------------------------------------------------------


class Interleave(Protocol):
    """Builds what runs between supervised steps (hybrid mode's self-play schedule)."""

    def __call__(self, model: Any, tokenizer: Any, intro: Introspection) -> Any: ...


@dataclass
class _Run:
    """What the steps of one run share."""

    config: TrainConfig
    accelerator: Any
    model: Any
    tokenizer: Any
    intro: Introspection
    examples: list[Example]
    eval_examples: list[Example]
    groups: dict[str, list[torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0  #: steps done
    epoch: int = 0
    index: int = 0  #: the epoch's next batch
    batches: list[list[int]] = field(default_factory=list)  #: the epoch's batches of indices
    writer: Any = None  #: TensorBoard's, on the main process
    hybrid: Any = None  #: what `interleave` built
    prepared: Any = None  #: the `StepModule` as Accelerate prepared it
    prepared_for: frozenset[int] = frozenset()  #: ids of the parameters that trained then
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def output(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def world(self) -> int:
        return int(self.accelerator.num_processes)

    def write(self, record: dict[str, Any]) -> None:
        """A metrics line (the main process writes them)."""
        if self.main:
            write_metrics(self.output / "metrics.jsonl", record, self.writer)


def _set_up(config: TrainConfig, resume: bool, interleave: Interleave | None) -> _Run:
    """Model, data, optimizer and the resumed state. A checkpoint of another mode
    (`CheckpointError`) or unusable data (`TrainDataError`) fails here, before anything is
    written."""
    accelerator = make_accelerator()
    seed_everything(config.seed)
    checkpoint = latest_checkpoint(Path(config.output_dir)) if resume else None
    state = load_checkpoint(checkpoint, config.mode) if checkpoint is not None else None
    model, tokenizer, intro = load_parts(config, str(accelerator.device), checkpoint)
    model.train()
    data = (config.strict_data, config.max_length)
    examples = load_examples(tokenizer, config.train_data, *data)
    eval_examples = load_examples(tokenizer, config.eval_data, *data) if config.eval_data else []
    groups = _groups(model, intro)
    optimizer = _optimizer(config, groups)
    scheduler = _scheduler(config, optimizer)
    run = _Run(
        config, accelerator, model, tokenizer, intro, examples, eval_examples, groups, optimizer,
        scheduler,
    )  # fmt: skip
    run.output.mkdir(parents=True, exist_ok=True)
    if state is not None:
        assert checkpoint is not None
        _resume(run, state, checkpoint)
    run.batches = batch_order(examples, config.batch_size * run.world, config.seed + run.epoch)
    if config.tensorboard and run.main:
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(run.output / "tensorboard"), purge_step=run.step + 1)
    run.hybrid = interleave(model, tokenizer, intro) if interleave is not None else None
    run.started = time.perf_counter()
    return run


def _resume(run: _Run, state: dict[str, Any], checkpoint: Path) -> None:
    """Optimizer, scheduler, data position and RNG states as the checkpoint saved them."""
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.epoch, run.index = state["step"], state["epoch"], state["index"]
    random.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    if (checkpoint / CALIBRATION_FILE).is_file():
        shutil.copy2(checkpoint / CALIBRATION_FILE, run.output / CALIBRATION_FILE)


def _next_examples(run: _Run) -> list[Example]:
    """This process's share of the next global batch (a new epoch when the batches run out)."""
    world, config = run.world, run.config
    if run.index >= len(run.batches) or len(run.batches[run.index]) < world:
        run.epoch, run.index = run.epoch + 1, 0
        run.batches = batch_order(run.examples, config.batch_size * world, config.seed + run.epoch)
    chosen = [
        run.examples[i] for i in run.batches[run.index][run.accelerator.process_index :: world]
    ]
    run.index += 1
    return chosen


def _prepared(run: _Run) -> Any:
    """The step module as Accelerate prepared it for the parameters that train now. DDP averages
    the gradients of the parameters that required grad when it was built, so when that set
    changes (a phase switched groups, pruning removed adapters) it is prepared again."""
    trainable = frozenset(id(p) for p in run.model.parameters() if p.requires_grad)
    if run.prepared is None or trainable != run.prepared_for:
        run.prepared = None
        run.accelerator.free_memory()  # lets the previous wrapper (and its gradient hooks) go
        run.prepared = run.accelerator.prepare(StepModule(run.model, run.intro))
        run.prepared_for = trainable
    return run.prepared


def _train_step(
    run: _Run, phase: PhaseConfig, step: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """One optimizer step of `phase`: (the batch's metrics, what on-policy sampling reports)."""
    config = run.config
    _apply_phase(run.model, run.groups, phase)
    chosen = _next_examples(run)
    extra: dict[str, Any] = {}
    if phase.on_policy is not None:
        seed = (config.seed * 1_000_003 + step) * 64 + run.accelerator.process_index
        chosen, extra = _on_policy_batch(
            run.model, run.tokenizer, run.intro, chosen, phase.on_policy, seed, config.max_length
        )
    device = run.accelerator.device
    batch = {k: v.to(device) for k, v in collate(chosen, run.tokenizer.pad_token_id).items()}
    total, logged, heads = _prepared(run)(batch, {**config.loss_weights, **phase.loss_weights})
    run.optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(total)  # the prepared module averages gradients over processes
    trainable = [p for g in GROUPS for p in run.groups[g] if p.requires_grad]
    run.accelerator.clip_grad_norm_(trainable, config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.tokens += int(batch["attention_mask"].sum())
    run.step = step + 1
    return batch_metrics(logged, heads, batch, run.intro), extra


def _end_phase(run: _Run, phase: PhaseConfig) -> dict[str, Any]:
    """At a phase's end: pruning of dead adapters (the optimizer keeps the state of what is
    left) and calibration, when the phase asks for them; returns what they report."""
    extra: dict[str, Any] = {}
    pad = run.tokenizer.pad_token_id
    if phase.prune_gates_below is not None:
        pruned, scores = prune_dead_adapters(
            run.model,
            run.intro,
            run.eval_examples or run.examples[:256],
            pad,
            float(phase.prune_gates_below),
        )
        extra["pruned_adapters"] = pruned
        extra.update({f"gate_score_{k}": v for k, v in scores.items()})
        if pruned:  # a new optimizer (a group may be gone) and scheduler, with the old state
            old_state = run.optimizer.state
            run.groups = _groups(run.model, run.intro)
            run.optimizer = _optimizer(run.config, run.groups)
            for p in (p for g in run.groups.values() for p in g):
                if p in old_state:
                    run.optimizer.state[p] = old_state[p]
            run.scheduler = _scheduler(run.config, run.optimizer, run.scheduler.last_epoch)
    if phase.calibrate and run.main:
        assert run.config.eval_data is not None  # checked by load_train_config
        out_path = run.output / CALIBRATION_FILE
        extra.update(
            _calibrate(run.model, run.tokenizer, run.intro, run.config.eval_data, out_path)
        )
    return extra


def _log(
    run: _Run, phase: PhaseConfig, metrics: dict[str, Any], evaluate: bool, stopped: str | None
) -> dict[str, Any]:
    """Write the step's metrics line (on the main process); returns it."""
    record = {"step": run.step, "phase": phase.name, "mode": "supervised", **metrics}
    if evaluate:
        pad = run.tokenizer.pad_token_id
        record.update(evaluate_heads(run.model, run.intro, run.eval_examples, pad))
    record["tokens_per_s"] = run.tokens / (time.perf_counter() - run.started)
    if stopped is not None:
        record["stopped"] = stopped
    run.write(record)
    return record


def _save(run: _Run) -> None:
    """`checkpoint-<step>`: the introspection parts, the base weights a phase may train, and the
    loop's state (`tina.train.checkpoints`)."""
    state = {
        "step": run.step,
        "epoch": run.epoch,
        "index": run.index,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "config": asdict(run.config),
    }
    params = dict(inner_model(run.model).named_parameters())
    base = {n: params[n] for n in _base_top_names(run.model, run.config)}
    save_checkpoint(run.output, run.step, run.intro, state, run.config.mode, base)


def _check_replicas(run: _Run) -> None:
    """Every process must hold the same weights (they took the same averaged steps)."""
    checksum = torch.stack([p.detach().double().sum() for p in run.intro.parameters()]).sum()
    gathered = run.accelerator.gather(checksum.reshape(1).to(run.accelerator.device))
    if not torch.allclose(gathered, gathered[:1].expand_as(gathered)):
        raise RuntimeError(f"processes diverged: parameter checksums {gathered.tolist()}")


def _finish(run: _Run, summary: dict[str, Any]) -> None:
    if run.writer is not None:
        run.writer.close()
    run.accelerator.wait_for_everyone()
    if run.world > 1:
        _check_replicas(run)
        if run.main:
            summary["processes"] = run.world
        run.prepared = None
        run.accelerator.free_memory()
        # Close the process group before the interpreter exits: left to teardown, gloo's threads
        # can abort a rank ("terminate called without an active exception").
        run.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    interleave: Interleave | None = None,
) -> dict[str, Any]:
    """Run (or resume) the supervised phases; returns the last metrics line as a summary
    (`stopped` names the signal when SIGTERM/SIGINT ended it early, `processes` the number of
    processes when there were several). `interleave(model, tokenizer, intro)`, when given,
    builds what runs after each step (`after_step(done, write)`: hybrid mode's self-play
    iterations, `tina.selfplay.loop.HybridSchedule`)."""
    run = _set_up(config, resume, interleave)
    summary: dict[str, Any] = {}
    with StopFlag() as stop, progress_bar("train", progress and run.main) as bar:
        task = bar.add_task("train", total=config.steps, completed=run.step)
        for step in range(run.step, config.steps):
            phase = _phase_at(config, step)
            metrics, extra = _train_step(run, phase, step)
            bar.advance(task)
            done = run.step
            if run.hybrid is not None:
                run.hybrid.after_step(done, run.write)
            if done in (phase.until_step, config.steps):
                extra.update(_end_phase(run, phase))
            stopping = stop.signal is not None
            evaluate = bool(run.eval_examples) and (
                done == config.steps
                or stopping
                or bool(config.eval_every and done % config.eval_every == 0)
            )
            due = done % config.log_every == 0 or done == config.steps
            if run.main and (due or evaluate or extra or stopping):
                summary = _log(run, phase, {**metrics, **extra}, evaluate, stop.name)
            if run.main and (done % config.save_every == 0 or done == config.steps or stopping):
                _save(run)
            if stopping:
                break
    _finish(run, summary)
    return summary
