"""Cost of a `tina sft` step against a plain PEFT LoRA step of the same rank on the same batch.

Both steps train the same LoRA (the config's rank, all linear layers, the tags' embedding rows
through `trainable_token_indices`) on one batch of suite records rendered for the model
(`tina.train.sft.sft_examples`): forward, backward, AdamW step. The baseline is what a PEFT user
writes: `model(input_ids, attention_mask, labels=labels)` (logits at every position, the loss
on the labelled ones). `tina sft`'s step (`completion_loss`) runs the batch's shared chat
prefix once and the output head only where the loss is; the `no shared prefix` row isolates
the head's part. The two are timed interleaved in the same process (the order reversed on
alternate repeats); medians and ratios only. The losses of all three are printed: they agree.

Goal: the sft step ≤ 1.2× the plain PEFT step.

    python bench/sft_step.py [--models-root models] [--base SmolLM2-135M-Instruct]
        [--batch 16] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from tina.core.models import load_model
from tina.train.data import collate
from tina.train.sft import _peft_model, completion_loss, sft_examples
from tina.train.sft_config import SFTConfig

GOAL = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-root", default="models")
    parser.add_argument("--base", default="SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_model(Path(args.models_root) / args.base, device="cpu")
    config = SFTConfig(
        models_root=args.models_root,
        base=args.base,
        tasks={"add": {"n": args.batch, "difficulties": [2, 3, 4]}},
    )
    batch = collate(sft_examples(tokenizer, config), tokenizer.pad_token_id)
    peft_model = _peft_model(model, tokenizer, config, None).train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def plain() -> float:
        out = peft_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    def step(share: bool) -> Any:
        def run() -> float:
            loss, _ = completion_loss(peft_model, batch, share_prefix=share)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())

        return run

    variants = {"plain PEFT": plain, "sft": step(True), "sft, no shared prefix": step(False)}
    losses = {name: fn() for name, fn in variants.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    shape = tuple(batch["input_ids"].shape)
    labelled = int((batch["labels"] != -100).sum())
    print(
        f"{args.base}: batch {shape[0]} × {shape[1]} tokens ({labelled} labelled), LoRA r "
        f"{config.lora_r} all-linear + tag rows, {args.repeats} repeats, "
        f"{torch.get_num_threads()} threads"
    )
    base = statistics.median(times["plain PEFT"])
    print(f"{'step':<24} {'median s':>9} {'ratio':>6} {'loss (warm-up)':>15}")
    for name in variants:
        median = statistics.median(times[name])
        print(f"{name:<24} {median:>9.3f} {median / base:>6.3f} {losses[name]:>15.4f}")
    print(f"goal: sft ≤ {GOAL}× plain PEFT")


if __name__ == "__main__":
    main()
