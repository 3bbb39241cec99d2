"""Held-out solve rates and proposal validity of self-play LoRA checkpoints beside the start.

Usage: `python bench/selfplay_eval.py --train-config configs/selfplay_smollm2.yaml
--checkpoint runs/selfplay_smollm2/checkpoint-0 --checkpoint runs/selfplay_smollm2/best
[--n 100] [--proposals 16] [--modes deduction,abduction,induction]`.
Loads the run's model as its config names it and, for the start (the self-play LoRA off: the
model as loaded) and then each checkpoint (its LoRA weights), in that order:
- solves `--n` held-out tasks per mode greedily at the run's solver budget (drawn with the
  run's `eval_seed`, none of its buffer's seed tasks: the sets a run evaluates on, larger) and
  prints the rate per mode with the paired counts against the start (newly solved / failed);
- samples `--proposals` proposals per mode at the run's temperature (the same seeds for every
  row) and prints the invalid rate and its reasons by category.
One torch thread unless `--threads`.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch

from tina.selfplay.loop import eval_tasks, evaluate_per_task, new_state
from tina.selfplay.lora import load_lora, load_lora_weights, reference_policy
from tina.selfplay.proposer import invalid_category, propose
from tina.train.checkpoints import load_parts
from tina.train.config import load_train_config
from tina.train.selfplay_config import SelfPlayConfig


def proposals(state, modes: list[str], k: int) -> tuple[float, Counter]:
    """Invalid rate and reasons of k sampled proposals per mode (a fixed seed)."""
    cfg = state.config
    asked = [m for m in modes for _ in range(k)]
    out = propose(
        state.engine,
        state.buffer,
        asked,
        random.Random(cfg.seed + 1),
        cfg.num_references,
        cfg.propose_budget,
        cfg.propose_answer_tokens,
        cfg.temperature,
        cfg.top_p,
        cfg.seed + 2,
        state.sandbox,
        cfg.induction_heldout,
        cfg.compose_max_statements,
    )
    reasons = Counter(f"{p.mode}:{invalid_category(p.reason)}" for p in out if p.composed)
    return sum(p.composed for p in out) / len(out), reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-config", required=True)
    parser.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    parser.add_argument("--n", type=int, default=100, help="held-out tasks per mode")
    parser.add_argument("--proposals", type=int, default=16, help="sampled proposals per mode")
    parser.add_argument("--modes", default="deduction,abduction,induction")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_train_config(args.train_config)
    modes = args.modes.split(",")
    sp = SelfPlayConfig.from_dict(config.self_play or {})
    sp = dataclasses.replace(sp, eval_tasks=args.n, eval_modes=modes)
    model, tokenizer, intro = load_parts(config, "cpu", None)
    for p in model.parameters():
        p.requires_grad_(False)
    load_lora(model, Path(args.checkpoint[0]))  # the structure; each row loads its weights
    state = new_state(model, tokenizer, intro, sp)
    held_out = eval_tasks(state)
    start: dict[str, list[bool]] = {}
    for name in ["start", *args.checkpoint]:
        began = time.perf_counter()
        if name != "start":
            load_lora_weights(model, Path(name))
        with reference_policy(model) if name == "start" else nullcontext():
            solved = {m: evaluate_per_task(state, tasks) for m, tasks in held_out.items()}
            invalid, reasons = proposals(state, modes, args.proposals)
        start = start or solved
        parts = []
        for mode, now in solved.items():
            gained = sum(a and not b for a, b in zip(now, start[mode], strict=True))
            lost = sum(b and not a for a, b in zip(now, start[mode], strict=True))
            parts.append(f"{mode} {sum(now) / len(now):.3f} (+{gained}/-{lost})")
        print(f"{name}: held-out (n={args.n} per mode) " + ", ".join(parts))
        print(
            f"  proposals: invalid {invalid:.3f} of {args.proposals * len(modes)}; "
            f"{dict(sorted(reasons.items()))}; {time.perf_counter() - began:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
