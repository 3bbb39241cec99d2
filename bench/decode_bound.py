"""Batch-1 decoding speed against the weight-streaming bound, measured in the same run.

A batch-1 decode step reads every weight once, so its speed is bounded by the matrix–vector
bandwidth: weight bytes ÷ (bytes streamed per second by a float32 matrix–vector product, measured
here on a matrix the size of the model's output head, median of repeats). This prints the
bound, then `model.generate` (greedy, KV cache, a fixed number of new tokens) and Tina's engine
(no introspection parts, a fixed think budget) at batch 1 on the same prompt, as tokens per
second and as a share of the bound.

    python bench/decode_bound.py [--model models/SmolLM2-135M-Instruct] [--tokens 64]
        [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GenerationConfig

from tina.core.models import load_model, render_prompt
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig, Request


def bandwidth(rows: int, cols: int, repeats: int = 20) -> float:
    """Bytes per second a float32 matrix–vector product streams (median of `repeats`)."""
    matrix, vector = torch.randn(rows, cols), torch.randn(cols)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        matrix @ vector
        times.append(time.perf_counter() - start)
    return matrix.numel() * 4 / statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, device="cpu")
    unique = {p.data_ptr(): p for p in model.parameters()}.values()  # tied weights once
    weight_bytes = sum(p.numel() * p.element_size() for p in unique)
    head = model.get_output_embeddings().weight
    measured = bandwidth(*head.shape)
    bound = measured / weight_bytes
    prompt = render_prompt(tokenizer, "Add 4821 and 377")
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    config = GenerationConfig(
        max_new_tokens=args.tokens,
        min_new_tokens=args.tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    engine = Engine(
        model,
        tokenizer,
        config=EngineConfig(budget_cap=args.tokens, slack_ratio=0.0, max_answer_tokens=8),
    )
    request = Request(prompt, rendered=True, budget=args.tokens, slack_ratio=0.0)
    emitted = [0]

    def count(row: int, phase: str, token: int) -> None:
        emitted[0] += 1

    rates: dict[str, list[float]] = {"generate": [], "engine": []}
    with torch.inference_mode():
        model.generate(**inputs, generation_config=config)  # warm-up
        engine.generate([request])
        for _ in range(args.repeats):
            start = time.perf_counter()
            model.generate(**inputs, generation_config=config)
            rates["generate"].append(args.tokens / (time.perf_counter() - start))
            emitted[0] = 0
            start = time.perf_counter()
            engine.generate([request], on_token=count)
            rates["engine"].append(emitted[0] / (time.perf_counter() - start))
    print(
        f"{args.model}: {weight_bytes / 1e6:.0f} MB of {head.dtype} weights; matrix–vector "
        f"bandwidth {measured / 1e9:.1f} GB/s ({head.shape[0]}×{head.shape[1]} float32); "
        f"bound {bound:.1f} tok/s at batch 1; {torch.get_num_threads()} threads"
    )
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<9} {rate:>6.1f} tok/s  = {rate / bound:.0%} of the bound")


if __name__ == "__main__":
    main()
