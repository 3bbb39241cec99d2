"""Decode-loop cost of the engine against a plain `model.generate` loop, for the same tokens.

For one model (the embedded one by default) and held-out task-suite questions (seed 4242, the
tasks interleaved), this times `tina.engine.loop.Engine.generate` and, as the baseline, the bare
model's `model.generate` (greedy, KV cache, no EOS, `min_new_tokens = max_new_tokens = N`) made
to decode exactly as many new tokens as the engine did: N is the longest completion of the
engine's batch (the engine keeps finished rows in the batch, fed a pad, until the last row ends,
so both run one prefill and N − 1 cached forwards of the same batch width). Two engine variants:

- `plain`: the engine without introspection parts (plain budgeted decoding: phases, forced
  tags, caps);
- `plain-whole`: the same with prompt-prefix reuse off (`EngineConfig.prefix_cache`), every
  prompt prefilled whole as `generate` does: what the reuse saves;
- `introspective`: the engine on a second copy of the same weights with the introspection
  parts attached (`attach_introspection`, default config, global gates woken to 0.5 so the
  adapter math really runs on think tokens): heads at prefill, adapters on think tokens, heads
  again at `</think>`. Its baseline is still the bare model's `generate` with its own N, so the
  ratio is the whole overhead of heads, adapters and phases over plain decoding.

Batch 1 runs each question alone (the time is the sum over questions); batch 16 runs the
questions as one batch. Every variant and its baseline are timed in the same process,
interleaved (engine, generate, engine, generate …, the order reversed on alternate repeats) so
machine noise hits both alike; the table gives medians over repeats and the ratio engine time /
generate time. Ratios only: nothing here asserts a time.

Goals: ratio ≤ 1.05 at batch 1 (heads and phase switches nearly free; the anchor to beat is
Quiet-STaR's published inference, ~7.7× slower than its base model) and throughput parity at
batch 16 (engine tok/s ÷ generate tok/s ≥ 1.0, i.e. ratio ≤ 1.0).

A pretrained model with a Tina LoRA (`--models-root models --base SmolLM2-135M-Instruct
--adapter Tina --subfolder checkpoint-N`) is measured the same way: both copies carry the
adapter, and the `introspective` copy uses the parts saved beside it when there are any.

    nice -n 5 python bench/decode.py [--model DIR | --models-root R --base B [--adapter A
        --subfolder S]] [--repeats 5] [--threads N] [--budget 64] [--answer-cap 32]
        [--questions 16] [--single N] [--goal-single 1.05] [--goal-batch 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from transformers import GenerationConfig

from tina.core.introspection import attach_introspection, load_introspective_model
from tina.core.models import load_model, render_prompt
from tina.data.tasks import TASKS, generate_records
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig, Request

SEED = 4242  #: held out: training and evaluation data use other seeds
GOAL_SINGLE, GOAL_BATCH = 1.05, 1.0  #: the largest acceptable ratio (engine / generate time)
QUIET_STAR = 7.7  #: Quiet-STaR's published inference slowdown over its base model


def questions(n: int) -> list[str]:
    """n held-out questions, the tasks interleaved (one of each task in turn)."""
    per_task = -(-n // len(TASKS))
    drawn = [generate_records(task, per_task, seed=SEED) for task in TASKS]
    mixed = [records[i] for i in range(per_task) for records in drawn]
    return [r["meta"]["question"] for r in mixed[:n]]


def load_pair(args: Any) -> tuple[Any, Any, Any, Any]:
    """(bare model, tokenizer, a second copy for the parts, the parts saved with it or None)."""
    if args.base is None:
        bare, tokenizer = load_model(args.model, device="cpu")
        intro_model, _ = load_model(args.model, device="cpu")
        return bare, tokenizer, intro_model, None
    where = (args.models_root or ".", args.base, args.adapter, args.subfolder)
    bare, tokenizer, saved = load_introspective_model(*where, device="cpu")
    if saved is not None:
        saved.detach()  # the bare copy carries the LoRA, not the parts
    intro_model, _, intro = load_introspective_model(*where, device="cpu")
    return bare, tokenizer, intro_model, intro


class Unit:
    """One timed call of each kind: the engine on a batch, and generate for the same tokens."""

    def __init__(
        self, engine: Engine, bare: Any, tokenizer: Any, prompts: list[str], args: Any
    ) -> None:
        self.engine = engine
        self.requests = [
            Request(p, rendered=True, budget=args.budget, slack_ratio=0.0) for p in prompts
        ]
        lengths = [0] * len(prompts)

        def count(row: int, phase: str, token: int) -> None:
            lengths[row] += 1

        engine.generate(self.requests, on_token=count)  # also the engine's warm-up
        self.steps = max(lengths)  #: N: new tokens per row for generate
        self.useful = sum(lengths)  #: tokens the engine emitted (finished rows excluded)
        tokenizer.padding_side = "left"
        self.inputs = tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(bare.device)
        self.bare = bare
        self.config = GenerationConfig(
            max_new_tokens=self.steps,
            min_new_tokens=self.steps,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=engine.pad,
            bos_token_id=tokenizer.bos_token_id,
        )
        out = self.run_generate()  # also generate's warm-up
        produced = out.shape[1] - self.inputs["input_ids"].shape[1]
        if produced != self.steps:
            raise RuntimeError(f"generate produced {produced} tokens, expected {self.steps}")

    def run_engine(self) -> Any:
        return self.engine.generate(self.requests)

    def run_generate(self) -> Any:
        return self.bare.generate(**self.inputs, generation_config=self.config)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="local HF model directory (default: embedded)"
    )
    parser.add_argument("--models-root", default=None, help="with --base: the models root")
    parser.add_argument("--base", default=None, help="base model directory under --models-root")
    parser.add_argument("--adapter", default=None, help="PEFT adapter under --models-root")
    parser.add_argument("--subfolder", default=None, help="checkpoint subfolder of --adapter")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--budget", type=int, default=64, help="fixed think budget per request")
    parser.add_argument("--answer-cap", type=int, default=32)
    parser.add_argument("--questions", type=int, default=16, help="the batch-16 width")
    parser.add_argument(
        "--single", type=int, default=None, help="questions run at batch 1 (default: all)"
    )
    parser.add_argument("--goal-single", type=float, default=GOAL_SINGLE, help="batch-1 goal")
    parser.add_argument("--goal-batch", type=float, default=GOAL_BATCH, help="batch goal")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    bare, tokenizer, intro_model, intro = load_pair(args)
    if intro is None:
        intro = attach_introspection(intro_model)
        with torch.no_grad():
            for adapter in intro.adapters.values():
                adapter.global_gate.fill_(0.5)  # as after training: the adapter delta runs
    config = EngineConfig(
        slack_ratio=0.0, budget_cap=args.budget, max_answer_tokens=args.answer_cap
    )
    whole = replace(config, prefix_cache=False)
    engines = {
        "plain": Engine(bare, tokenizer, config=config),
        "plain-whole": Engine(bare, tokenizer, config=whole),
        "introspective": Engine(intro_model, tokenizer, intro, config=config),
    }
    prompts = [render_prompt(tokenizer, q) for q in questions(args.questions)]
    batches = {1: [[p] for p in prompts[: args.single]], args.questions: [prompts]}

    rows = []
    with torch.inference_mode():
        for batch, groups in batches.items():
            for variant, engine in engines.items():
                units = [Unit(engine, bare, tokenizer, g, args) for g in groups]
                for u in units:  # second warm-up of each
                    u.run_engine()
                    u.run_generate()
                engine_t, generate_t = [], []
                for repeat in range(args.repeats):
                    e_total = g_total = 0.0
                    for u in units:
                        if repeat % 2 == 0:
                            e_total += timed(u.run_engine)
                            g_total += timed(u.run_generate)
                        else:
                            g_total += timed(u.run_generate)
                            e_total += timed(u.run_engine)
                    engine_t.append(e_total)
                    generate_t.append(g_total)
                tokens = sum(len(u.requests) * u.steps for u in units)
                useful = sum(u.useful for u in units)
                e_med, g_med = statistics.median(engine_t), statistics.median(generate_t)
                ratios = [e / g for e, g in zip(engine_t, generate_t, strict=True)]
                rows.append((batch, variant, e_med, g_med, tokens, useful, ratios))

    print(
        f"model {bare.config.model_type} {sum(p.numel() for p in bare.parameters()):,} params, "
        f"{len(prompts)} questions (seed {SEED}), budget {args.budget}, answer cap "
        f"{args.answer_cap}, {args.repeats} repeats, {torch.get_num_threads()} threads"
    )
    print(
        "tokens = batch rows × N decoded positions (the same for both); emitted = the engine's "
        "tokens, finished rows excluded; ratio = median engine s / median generate s "
        "(per-repeat ratio range in brackets)"
    )
    header = (
        f"{'batch':>5} {'variant':<14} {'engine s':>9} {'generate s':>10} {'tokens':>7} "
        f"{'emitted':>7} {'engine tok/s':>12} {'gen tok/s':>10} {'ratio':>6} "
        f"{'[min–max]':>13} {'goal':>7}"
    )
    print(header)
    for batch, variant, e_med, g_med, tokens, useful, ratios in rows:
        goal_text = f"≤ {args.goal_single if batch == 1 else args.goal_batch:.2f}"
        spread = f"[{min(ratios):.2f}–{max(ratios):.2f}]"
        print(
            f"{batch:>5} {variant:<14} {e_med:>9.3f} {g_med:>10.3f} {tokens:>7} {useful:>7} "
            f"{tokens / e_med:>12.0f} {tokens / g_med:>10.0f} {e_med / g_med:>6.3f} "
            f"{spread:>13} {goal_text:>7}"
        )
    print(
        f"goals: ≤ {args.goal_single:.2f} at batch 1 (anchor: Quiet-STaR ~{QUIET_STAR}× its "
        f"base); ratio ≤ {args.goal_batch:.2f} at batch {args.questions}"
    )


if __name__ == "__main__":
    main()
