"""What every training loop shares: checkpoints, the stop flag, seeding and the metrics log.

- `save_checkpoint(output, step, intro, state, mode, base_weights)` writes
  `output/checkpoint-<step>/` atomically (`tina.core.atomic.atomic_directory`): the
  introspection parts (+ changed base weights), `trainer_state.pt` (the loop's `state` plus the
  run's `mode`) and the run's calibration file when one was written.
- `latest_checkpoint(output)` finds the newest; `load_checkpoint(path, mode)` reads its state and
  refuses one written in another mode, naming both and the checkpoint.
- `load_parts(config, device, checkpoint)`: model, tokenizer and introspection parts of a run.
- `StopFlag`, `seed_everything`, `write_metrics` (`metrics.jsonl` + TensorBoard),
  `make_accelerator` (Accelerate, gloo on CPU under a multi-process launch) and `progress_bar`.
- `write_checkpoint(output, step, write_parts, state, mode)`: the same for any loop's parts
  (`tina sft` writes a PEFT adapter directory); `prune_checkpoints` keeps the newest few.

What it does not do: decide what a state holds (each loop puts its optimizer, data position and
RNG states in), or run any training.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tina.core.atomic import ASIDE_SUFFIX, atomic_directory, recover_directory
from tina.core.calibration import CALIBRATION_FILE
from tina.core.checks import json_safe
from tina.core.introspection import (
    Introspection,
    IntrospectionConfig,
    attach_introspection,
    load_introspection,
    load_introspective_model,
    remove_introspection,
    save_introspection,
)
from tina.core.models import embedded_model_dir, load_model

STATE_FILE = "trainer_state.pt"  #: the loop's state inside a checkpoint directory
CHECKPOINT_PREFIX = "checkpoint-"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed by this run (another mode, a missing state file)."""


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (every device)."""
    random.seed(seed)
    torch.manual_seed(seed)


def write_checkpoint(
    output: Path, step: int, write_parts: Callable[[Path], None], state: dict[str, Any], mode: str
) -> Path:
    """Write `checkpoint-<step>` as a whole: what `write_parts(directory)` puts there, the loop's
    `state` (with `mode` and `step`) and the run's calibration file, if any; returns its path."""
    final = output / f"{CHECKPOINT_PREFIX}{step}"
    with atomic_directory(final) as tmp:
        write_parts(tmp)
        torch.save({**state, "mode": mode, "step": step}, tmp / STATE_FILE)
        calibration = output / CALIBRATION_FILE
        if calibration.is_file():
            shutil.copy2(calibration, tmp / CALIBRATION_FILE)
    return final


def save_checkpoint(
    output: Path,
    step: int,
    intro: Introspection,
    state: dict[str, Any],
    mode: str,
    base_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """`write_checkpoint` of the introspection parts (+ changed base weights)."""
    return write_checkpoint(
        output, step, lambda tmp: save_introspection(intro, tmp, base_weights), state, mode
    )


def prune_checkpoints(output: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints in `output` (0: keep all)."""
    if keep <= 0:
        return
    found = sorted(
        (int(p.name[len(CHECKPOINT_PREFIX) :]), p)
        for p in output.glob(f"{CHECKPOINT_PREFIX}*")
        if p.name[len(CHECKPOINT_PREFIX) :].isdigit() and p.is_dir()
    )
    for _, path in found[:-keep]:
        shutil.rmtree(path)


def latest_checkpoint(output: Path) -> Path | None:
    """The checkpoint with the highest step in `output`, if any."""
    found = []
    for p in output.glob(f"{CHECKPOINT_PREFIX}*"):
        step = p.name[len(CHECKPOINT_PREFIX) :]
        if step.endswith(ASIDE_SUFFIX):  # a swap cut short by a crash: the old one comes back
            step = step.removesuffix(ASIDE_SUFFIX)
            recover_directory(output / f"{CHECKPOINT_PREFIX}{step}")
        if step.isdigit():
            found.append((int(step), output / f"{CHECKPOINT_PREFIX}{step}"))
    found = [(s, p) for s, p in found if p.is_dir()]
    return max(found, default=(0, None))[1]


def load_checkpoint(checkpoint: Path, mode: str) -> dict[str, Any]:
    """The state saved in `checkpoint` by a run of `mode`; a `CheckpointError` when it is
    missing or was written by a run of another mode."""
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: no {STATE_FILE}: not a training checkpoint")
    state: dict[str, Any] = torch.load(path, weights_only=False)
    saved = state.get("mode", "supervised")
    if saved != mode:
        raise CheckpointError(
            f"{checkpoint} was written by a {saved!r} run; this run's mode is {mode!r}: "
            "resume it in its own mode, or start a new output_dir"
        )
    return state


def load_parts(config: Any, device: str, checkpoint: Path | None) -> tuple[Any, Any, Introspection]:
    """The model, tokenizer and introspection parts of a run: from the checkpoint when
    resuming, else from `model.parts` when set, else the model directory's own parts (if
    any), else fresh ones from the config."""
    m = config.model
    if m.get("base"):
        model, tokenizer, intro = load_introspective_model(
            m.get("models_root") or ".",
            m["base"],
            m.get("adapter"),
            m.get("subfolder"),
            device,
            parts=m.get("parts"),
        )
    else:
        model, tokenizer = load_model(embedded_model_dir(), device=device)
        intro = load_introspection(model, m["parts"]) if m.get("parts") else None
    if checkpoint is not None:
        if intro is not None:  # the checkpoint's parts replace the ones the model came with
            remove_introspection(model)
        intro = load_introspection(model, checkpoint)
    elif intro is None:
        intro = attach_introspection(model, IntrospectionConfig.from_dict(config.introspection))
    intro.train()
    return model, tokenizer, intro


class StopFlag:
    """Set by SIGTERM/SIGINT during a run: the loop ends after the current step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def name(self) -> str | None:
        """The signal's name (`SIGTERM`) once one came, else None."""
        return None if self.signal is None else signal.Signals(self.signal).name


def write_metrics(path: Path, record: dict[str, Any], writer: Any) -> None:
    """Append `record` to the metrics JSONL (non-finite numbers as null, at any depth) and its
    numbers to TensorBoard under `train/<key>` at `record["step"]`."""
    clean = json_safe(record)
    with path.open("a") as handle:
        handle.write(json.dumps(clean) + "\n")
    if writer is not None:
        for key, value in clean.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                writer.add_scalar(f"train/{key}", value, record["step"])
        writer.flush()


def make_accelerator() -> Any:
    """The run's `accelerate.Accelerator`. Under a multi-process launch (torchrun sets
    LOCAL_RANK) on a machine without CUDA, the processes run on CPU with gloo; Accelerate
    would otherwise fall back to one lone process."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    on_cpu = "LOCAL_RANK" in os.environ and not torch.cuda.is_available()
    # A step's graph reaches only the parts its loss weights use (the exit head, extension
    # heads, the consistency terms come and go): DDP must look for the unused parameters.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=on_cpu, kwargs_handlers=[ddp])


def progress_bar(label: str, enabled: bool) -> Any:
    """A rich progress bar (`label`, bar, done/total, elapsed, remaining); silent when not
    `enabled` (another process, or `--no-progress`)."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, disable=not enabled)
