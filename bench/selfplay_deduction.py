"""Acceptance run of self-play on the embedded model: held-out deduction solve rate before/after.

Usage: `python bench/selfplay_deduction.py [--iterations 300] [--out runs/selfplay_bench]`.
Attaches fresh introspection parts to the embedded model, measures the greedy solve rate of a
fixed held-out set of deduction tasks (`SelfPlayConfig.eval_tasks`, seed `eval_seed`, none of
the buffer's seed tasks), runs the self-play iterations (deduction proposals and solutions,
adapters trained), measures again, and prints the numbers, the run time and the learnability
histogram; metrics lines go to `<out>/metrics.jsonl`. One torch thread: on a shared 2-core
machine, two threads contend and run several times slower.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from tina.core.introspection import IntrospectionConfig, attach_introspection
from tina.core.models import load_model
from tina.selfplay.loop import eval_tasks, evaluate_per_task, new_state, run_iterations
from tina.selfplay.rewards import histogram
from tina.train.selfplay_config import SelfPlayConfig


def rate(solved: list[bool]) -> float:
    return sum(solved) / max(1, len(solved))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--out", default="runs/selfplay_bench")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="self-play seed (buffer, sampling)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.write_text("")
    model, tokenizer = load_model(device="cpu")
    intro = attach_introspection(model, IntrospectionConfig())
    for p in model.parameters():
        p.requires_grad_(False)
    config = SelfPlayConfig(
        iterations=args.iterations,
        task_types=["deduction"],
        num_propose=1,
        num_solve=2,
        num_mc_rollouts=4,
        lr=args.lr,
        kl_coef=args.kl_coef,
        eval_every=args.eval_every,
        seed_tasks_per_mode=128,
        seed=args.seed,
    )
    state = new_state(model, tokenizer, intro, config)
    held_out = eval_tasks(state)["deduction"]
    started = time.perf_counter()
    before = evaluate_per_task(state, held_out)
    print(
        f"held-out deduction solve rate before: {rate(before):.3f} (n={len(held_out)})", flush=True
    )

    eval_seconds = time.perf_counter() - started

    def write(record: dict) -> None:
        with metrics.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if record["role"] == "eval":
            print(
                f"iteration {record['iteration']}: held-out {record['heldout_solve_rate']:.3f}",
                flush=True,
            )

    train_started = time.perf_counter()
    learn = run_iterations(state, config.iterations, write, held_out={"deduction": held_out})
    train_seconds = time.perf_counter() - train_started
    after = evaluate_per_task(state, held_out)
    print(f"held-out deduction solve rate after: {rate(after):.3f}")
    gained = sum(a and not b for a, b in zip(after, before, strict=True))
    lost = sum(b and not a for a, b in zip(after, before, strict=True))
    print(f"paired: {gained} tasks newly solved, {lost} newly failed")
    n_evals = config.iterations // config.eval_every if config.eval_every else 0
    print(
        f"self-play: {config.iterations} iterations in {train_seconds:.0f}s, of which about "
        f"{n_evals * eval_seconds:.0f}s are {n_evals} held-out evaluations "
        f"({eval_seconds:.0f}s each); total {time.perf_counter() - started:.0f}s"
    )
    edges = [f"[{i / 5:.1f},{(i + 1) / 5:.1f})" for i in range(5)]
    print("learnability histogram:", dict(zip(edges, histogram(learn, 5), strict=True)))
    gates = {k: round(float(a.global_gate), 4) for k, a in intro.adapters.items()}
    print("adapter global gates:", gates)


if __name__ == "__main__":
    main()
