"""Held-out solve rates of a self-play LoRA checkpoint beside the model it started from.

Usage: `python bench/selfplay_eval.py --train-config configs/selfplay_smollm2.yaml
--checkpoint runs/selfplay_smollm2/best [--n 100] [--modes deduction,abduction,induction]`.
Loads the run's model as its config names it, draws `--n` held-out tasks per mode with the
run's `eval_seed` (none of its buffer's seed tasks: the sets a run evaluates on, larger), solves
them greedily at the run's solver budget, then adds the checkpoint's self-play LoRA and solves
them again; prints the rates per mode and the paired counts (newly solved, newly failed). One
torch thread unless `--threads`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from tina.selfplay.loop import eval_tasks, evaluate_per_task, new_state
from tina.selfplay.lora import load_lora, reference_policy
from tina.train.checkpoints import load_parts
from tina.train.config import load_train_config
from tina.train.selfplay_config import SelfPlayConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-config", required=True)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory of the run")
    parser.add_argument("--n", type=int, default=100, help="held-out tasks per mode")
    parser.add_argument("--modes", default="deduction,abduction,induction")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_train_config(args.train_config)
    sp = SelfPlayConfig.from_dict(config.self_play or {})
    sp = dataclasses.replace(sp, eval_tasks=args.n, eval_modes=args.modes.split(","))
    model, tokenizer, intro = load_parts(config, "cpu", None)
    for p in model.parameters():
        p.requires_grad_(False)
    load_lora(model, Path(args.checkpoint))  # added now, switched off for the first pass
    state = new_state(model, tokenizer, intro, sp)
    held_out = eval_tasks(state)
    started = time.perf_counter()
    with reference_policy(model):
        before = {m: evaluate_per_task(state, tasks) for m, tasks in held_out.items()}
    after = {m: evaluate_per_task(state, tasks) for m, tasks in held_out.items()}
    for mode in held_out:
        b, a = before[mode], after[mode]
        gained = sum(x and not y for x, y in zip(a, b, strict=True))
        lost = sum(y and not x for x, y in zip(a, b, strict=True))
        print(
            f"{mode}: start {sum(b) / len(b):.3f} -> checkpoint {sum(a) / len(a):.3f} "
            f"(n={len(b)}; {gained} newly solved, {lost} newly failed)"
        )
    print(f"{time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
