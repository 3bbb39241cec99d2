"""Latency under arriving traffic: the continuous-batching scheduler against static batching.

In one process, on one engine (the embedded model with its shipped parts unless flags say
otherwise), the same held-out questions (seed 4242, tasks interleaved, greedy, hidden thinking):

1. `alone`: each request by itself (`Engine.generate([request])`): the single-request latency;
2. `saturate`: every request queued at once into the static scheduler (`Batcher(continuous=
   False)`: a batch is admitted only when nothing runs, and runs to its longest row): its
   throughput sets the arrival rate, `--load` × that (a rate static batching can just sustain);
3. `poisson`: Poisson arrivals at that rate, at most `--clients` in flight, the same arrival times
   for `static` and `continuous` (`Batcher()`): p50 / p99 latency (submit → result) ÷ the alone
   p50, and throughput;
4. `mixed`: short questions with no thinking (`budget=0`) beside long 4-digit add/sub ones, the
   same arrivals for both schedulers: the short ones' p50 ÷ their alone p50.

Ratios are taken within the run (the machine is noisy). Nothing here asserts a goal.

    python bench/serve_load.py [--requests 64] [--clients 16] [--load 0.9] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from tina.data.tasks import TASKS, generate_records
from tina.engine.types import Request
from tina.serve.batcher import Batcher
from tina.serve.runtime import add_model_arguments, load_engine

SEED = 4242  #: held out: training and evaluation data use other seeds
GOALS = {"p50": 1.5, "p99": 2.5, "short_p50": 1.5}  #: ÷ alone p50 (issue 19); throughput ≥ static


def questions(
    n: int, tasks: Sequence[str] = tuple(TASKS), difficulties: Sequence[int] | None = None
) -> list[str]:
    """n held-out questions, the tasks interleaved (one of each task in turn)."""
    per_task = -(-n // len(tasks))
    drawn = [generate_records(t, per_task, seed=SEED, difficulties=difficulties) for t in tasks]
    mixed = [records[i] for i in range(per_task) for records in drawn]
    return [r["meta"]["question"] for r in mixed[:n]]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def alone(engine: Any, requests: Sequence[Request]) -> list[float]:
    out = []
    for request in requests:
        start = time.perf_counter()
        engine.generate([request])
        out.append(time.perf_counter() - start)
    return out


def drive(
    engine: Any,
    requests: Sequence[Request],
    arrivals: Sequence[float],
    clients: int,
    continuous: bool,
    max_batch_size: int,
) -> tuple[list[float], float, list[str]]:
    """Submit `requests[i]` at `arrivals[i]` s (or when one of `clients` is free, if later);
    returns each latency (submit → result), the wall time and the outputs."""
    batcher = Batcher(
        engine,
        max_batch_size=max_batch_size,
        window_s=0.0,
        max_waiting=len(requests),
        continuous=continuous,
    )
    batcher.start()
    free = threading.Semaphore(clients)
    latencies = [0.0] * len(requests)
    outputs = [""] * len(requests)
    done = threading.Event()
    left = [len(requests)]
    lock = threading.Lock()
    start = time.perf_counter()

    def finished(i: int, submitted: float, future: Any) -> None:
        latencies[i] = time.perf_counter() - submitted
        outputs[i] = future.result().result.output
        free.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    for i, (request, at) in enumerate(zip(requests, arrivals, strict=True)):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        free.acquire()
        submitted = time.perf_counter()
        ticket = batcher.submit(request)
        ticket.future.add_done_callback(lambda f, i=i, s=submitted: finished(i, s, f))
    done.wait()
    wall = time.perf_counter() - start
    batcher.stop()
    return latencies, wall, outputs


def poisson(n: int, rate: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.9, help="× static's saturated throughput")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine, _ = load_engine(args)
    prompts = questions(args.requests)
    requests = [Request(p) for p in prompts]
    engine.generate(requests[:2])  # warm-up

    solo = alone(engine, requests)
    solo_p50 = statistics.median(solo)
    lat, wall, _ = drive(
        engine, requests, [0.0] * len(requests), args.clients, False, args.max_batch_size
    )
    static_max = len(requests) / wall
    rate = args.load * static_max
    arrivals = poisson(len(requests), rate, seed=SEED)
    print(
        f"embedded model unless flags say otherwise; {len(requests)} questions (seed {SEED}), "
        f"greedy, hidden thinking; {args.clients} clients, max batch {args.max_batch_size}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    print(
        f"alone: p50 {solo_p50:.3f} s; static saturated: {static_max:.2f} req/s → Poisson rate "
        f"{rate:.2f} req/s ({args.load:g}×)"
    )
    print(
        f"{'load':<8} {'scheduler':<11} {'p50 s':>6} {'p99 s':>6} {'p50÷alone':>9} "
        f"{'p99÷alone':>9} {'req/s':>6}"
    )
    results: dict[str, tuple[list[float], float, list[str]]] = {}
    for name, continuous in (("static", False), ("continuous", True)):
        results[name] = drive(
            engine, requests, arrivals, args.clients, continuous, args.max_batch_size
        )
        lat, wall, _ = results[name]
        print(
            f"{'poisson':<8} {name:<11} {statistics.median(lat):>6.3f} "
            f"{percentile(lat, 0.99):>6.3f} {statistics.median(lat) / solo_p50:>8.2f}× "
            f"{percentile(lat, 0.99) / solo_p50:>8.2f}× {len(requests) / wall:>6.2f}"
        )
    same = sum(a == b for a, b in zip(results["static"][2], results["continuous"][2], strict=True))
    print(f"same answers under both schedulers: {same}/{len(requests)}")

    half = len(requests) // 2
    short = [Request(p, budget=0) for p in questions(half)]
    long = [Request(p) for p in questions(half, ("add", "sub"), difficulties=[4])]
    mixed = [r for pair in zip(short, long, strict=False) for r in pair]
    is_short = [i % 2 == 0 for i in range(len(mixed))]
    short_alone = statistics.median(alone(engine, short))
    mixed_arrivals = poisson(len(mixed), rate, seed=SEED + 1)
    print(
        f"mixed: {len(short)} short (budget 0, alone p50 {short_alone:.3f} s) beside "
        f"{len(long)} 4-digit add/sub"
    )
    for name, continuous in (("static", False), ("continuous", True)):
        lat, wall, _ = drive(
            engine, mixed, mixed_arrivals, args.clients, continuous, args.max_batch_size
        )
        short_lat = [x for x, s in zip(lat, is_short, strict=True) if s]
        print(
            f"{'mixed':<8} {name:<11} short p50 {statistics.median(short_lat):.3f} s "
            f"({statistics.median(short_lat) / short_alone:.2f}× alone), all p50 "
            f"{statistics.median(lat):.3f} s, {len(mixed) / wall:.2f} req/s"
        )
    print(
        f"goals: poisson p50 ≤ {GOALS['p50']}×, p99 ≤ {GOALS['p99']}× alone; continuous "
        f"throughput ≥ static; mixed short p50 ≤ {GOALS['short_p50']}× alone"
    )


if __name__ == "__main__":
    main()
