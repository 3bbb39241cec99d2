"""Training-step cost of Tina (side adapters + heads + masks) against a plain PEFT LoRA SFT step.

Both steps run on the same base model weights and the same batch (contract records of the task
suite, concise traces), in the same process, interleaved so machine noise hits both alike:

- **tina**: `tina.train.step.training_step_losses` with phase A's loss weights (answer CE, plan
CE,
  budget loss, confidence BCE, gate sparsity), the think mask on the think span, taps recorded
  for the heads; backward; gradient clipping; AdamW step over the introspection parameters
  (base frozen);
- **lora**: a PEFT LoRA of the same rank on PEFT's default target modules for the architecture,
  causal-LM cross-entropy on the completion (`labels` from the same collate); backward; gradient
  clipping; AdamW step over the LoRA parameters.

Prints the median step time of each and the ratio tina / lora. Goal (issue 5): ≤ 1.25.

    python bench/train_step.py [--batch 32] [--repeats 20] [--rank 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tina.core.introspection import (
    AdapterConfig,
    IntrospectionConfig,
    attach_introspection,
    freeze_base,
)
from tina.core.models import load_model
from tina.data.tasks import generate_records
from tina.train.data import collate, example_from_record
from tina.train.step import training_step_losses

PHASE_A = {
    "answer_ce": 1.0,
    "plan_ce": 1.0,
    "budget_loss": 1.0,
    "confidence_bce": 0.5,
    "gate_sparsity": 0.01,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="local HF model directory (default: embedded)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    tina_model, tokenizer = load_model(args.model, device="cpu")
    lora_model, _ = load_model(args.model, device="cpu")
    records = []
    for task in ("add", "sub", "mul", "code_deduction"):
        records += generate_records(task, args.batch, seed=1, difficulties=[2, 3])
    examples = [example_from_record(tokenizer, r) for r in records[: args.batch]]
    batch = collate(examples, tokenizer.pad_token_id)

    intro = attach_introspection(
        tina_model, IntrospectionConfig(adapter=AdapterConfig(rank=args.rank))
    )
    freeze_base(tina_model)
    tina_model.train()
    tina_params = [p for p in intro.parameters() if p.requires_grad]
    tina_opt = torch.optim.AdamW(tina_params, lr=1e-3)

    lora = get_peft_model(lora_model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank))
    lora.train()
    lora_params = [p for p in lora.parameters() if p.requires_grad]
    lora_opt = torch.optim.AdamW(lora_params, lr=1e-3)

    def tina_step() -> None:
        total, _, _ = training_step_losses(tina_model, intro, batch, PHASE_A)
        tina_opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(tina_params, 1.0)
        tina_opt.step()

    def lora_step() -> None:
        out = lora(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        lora_opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(lora_params, 1.0)
        lora_opt.step()

    steps = {"lora": lora_step, "tina": tina_step}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(3):  # warm-up
        for fn in steps.values():
            fn()
    for _ in range(args.repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    n_tina = sum(p.numel() for p in tina_params)
    n_lora = sum(p.numel() for p in lora_params)
    print(
        f"model {tina_model.config.model_type} "
        f"{sum(p.numel() for n, p in tina_model.named_parameters() if not n.startswith('tina_')):,}"
        f" params; batch {args.batch} x {batch['input_ids'].shape[1]} tokens; rank {args.rank}; "
        f"{args.repeats} repeats; {torch.get_num_threads()} threads"
    )
    print(f"trainable: tina {n_tina:,} (adapters + heads), lora {n_lora:,}")
    base = statistics.median(times["lora"])
    print(f"{'step':<6} {'median ms':>10} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<6} {median * 1e3:>10.1f} {median / base:>7.3f}")


if __name__ == "__main__":
    main()
