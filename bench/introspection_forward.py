"""Forward-time cost of the introspection parts: model with side adapters + heads vs bare model.

Prints, for one model and one batch, the median forward time of the bare model and of the same
model with the introspection parts attached (adapters on every decoder layer, heads on two
taps, recording hidden states as the engine's prefill does), with the think mask all ones
(adapters active everywhere) and all zeros (adapters idle), as ratios to the bare model measured
in the same process, interleaved so machine noise hits all three alike.

Goals (issue 3): ≤ 1.10 with the mask at 1, ≤ 1.02 with the mask at 0.

    python bench/introspection_forward.py [--batch 16] [--length 128] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tina.core.introspection import attach_introspection
from tina.core.metacog_heads import record_taps
from tina.core.models import load_model
from tina.core.side_adapters import think_mask_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="local HF model directory (default: embedded)"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _ = load_model(args.model, device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))
    ones, zeros = torch.ones_like(ids), torch.zeros_like(ids)

    def bare() -> None:
        model(ids)

    intro = attach_introspection(model)
    with torch.no_grad():
        for adapter in intro.adapters.values():
            adapter.global_gate.fill_(0.5)  # as after training: the delta is really computed
    intro.detach()
    handles_off = True

    def attached(mask: torch.Tensor) -> None:
        with think_mask_context(mask), record_taps() as taps:
            model(ids)
        intro.heads(taps, ones)

    times: dict[str, list[float]] = {"bare": [], "mask=1": [], "mask=0": []}
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            bare()
        for _ in range(args.repeats):
            for name in times:
                if name == "bare":
                    if not handles_off:
                        intro.detach()
                        handles_off = True
                    fn = bare
                else:
                    if handles_off:
                        intro._handles = _reattach(model, intro)
                        handles_off = False
                    mask = ones if name == "mask=1" else zeros
                    fn = lambda mask=mask: attached(mask)  # noqa: E731
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["bare"])
    print(
        f"model {model.config.model_type} {sum(p.numel() for p in model.parameters()):,} params, "
        f"batch {args.batch} x {args.length} tokens, {args.repeats} repeats, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'variant':<10} {'median ms':>10} {'ratio':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<10} {median * 1e3:>10.2f} {median / base:>7.3f}")


def _reattach(model, intro):
    from tina.core.metacog_heads import attach_taps
    from tina.core.side_adapters import attach_side_adapters

    _, handles = attach_side_adapters(
        model, intro.adapter_layers, intro.config.adapter, adapters=intro.adapters
    )
    return handles + attach_taps(model, intro.tap_layers)


if __name__ == "__main__":
    main()
