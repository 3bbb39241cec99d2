"""HTTP serving throughput: N concurrent clients against one `tina serve`, vs the same requests
sent one by one.

Starts `tina serve` (the embedded model by default) as a subprocess on a free loopback port,
then sends the same held-out task-suite questions (seed 4242, the tasks interleaved, greedy,
hidden thinking, the service config's budgets) twice over `/v1/chat/completions`:

- `sequential`: one client, one request at a time;
- `concurrent`: `--clients` clients (threads, one HTTP connection each) taking the next
  question from a shared list as soon as their last one is answered, so the server's batcher
  sees up to `--clients` requests at once and decodes them as one engine batch.

Each mode is preceded by a warm-up request. The table gives wall time, throughput (requests/s),
p50/p99 latency per request, the throughput ratio concurrent / sequential, the mean engine batch
(from the server's `/health` counters), and whether every answer is the same in both modes
(batching must change no output). With few requests, p99 is
close to the slowest request. Times only: nothing here asserts one.

Goal (issue 8): ≥ 4× the sequential throughput at 16 concurrent clients on 2 cores.

    nice -n 5 python bench/serve.py [--clients 16] [--requests 48] [--max-batch-size N]
        [--batch-window-ms MS] [--threads 1] [--serve-arg=--budget-cap=128 …]
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from tina.data.tasks import TASKS, generate_records
from tina.serve.flags import EMBEDDED_MODEL_NAME
from tina.serve.service_config import load_service_config

SEED = 4242  #: held out: training and evaluation data use other seeds
GOAL = 4.0  #: concurrent / sequential throughput at 16 clients


def questions(n: int) -> list[str]:
    """n held-out questions, the tasks interleaved (one of each task in turn)."""
    per_task = -(-n // len(TASKS))
    drawn = [generate_records(task, per_task, seed=SEED) for task in TASKS]
    mixed = [records[i] for i in range(per_task) for records in drawn]
    return [r["meta"]["question"] for r in mixed[:n]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(args: Any, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "tina",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--require-auth",
        "false",
        *(["--max-batch-size", str(args.max_batch_size)] if args.max_batch_size else []),
        *(["--batch-window-ms", str(args.batch_window_ms)] if args.batch_window_ms else []),
        "--max-queue",
        str(max(64, args.clients)),
        "--log-level",
        "warning",
        "--threads",
        str(args.threads),
        *args.serve_arg,
    ]
    server = subprocess.Popen(command, env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tina serve exited with code {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("tina serve did not start in 120 s")


def complete(client: httpx.Client, question: str) -> tuple[str, float]:
    body = {"model": EMBEDDED_MODEL_NAME, "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"], elapsed


def run_sequential(url: str, prompts: list[str]) -> tuple[float, list[float], list[str]]:
    with httpx.Client(base_url=url, timeout=600) as client:
        complete(client, prompts[0])  # warm-up
        start = time.perf_counter()
        results = [complete(client, p) for p in prompts]
        wall = time.perf_counter() - start
    return wall, [t for _, t in results], [a for a, _ in results]


def run_concurrent(
    url: str, prompts: list[str], clients: int
) -> tuple[float, list[float], list[str]]:
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(prompts)):
        todo.put(i)
    answers: list[str] = [""] * len(prompts)
    latencies: list[float] = [0.0] * len(prompts)
    errors: list[BaseException] = []

    def worker(http: httpx.Client) -> None:
        try:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                answers[i], latencies[i] = complete(http, prompts[i])
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    pool = [httpx.Client(base_url=url, timeout=600) for _ in range(clients)]
    complete(pool[0], prompts[0])  # warm-up
    threads = [threading.Thread(target=worker, args=(c,)) for c in pool]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for c in pool:
        c.close()
    if errors:
        raise errors[0]
    return wall, latencies, answers


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mean_batch(start: tuple[int, int], end: tuple[int, int]) -> float:
    """Requests per engine batch between two /health readings, the warm-up request left out."""
    batches, requests = end[0] - start[0] - 1, end[1] - start[1] - 1
    return requests / batches if batches > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48, help="questions sent in each mode")
    parser.add_argument(
        "--max-batch-size", type=int, default=None, help="the server's batch cap (default: config)"
    )
    parser.add_argument(
        "--batch-window-ms", type=float, default=None, help="the server's window (default: config)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the server's torch threads (0: torch's default); 1 because the server's event "
        "loop and the clients share the same cores",
    )
    parser.add_argument(
        "--serve-arg", action="append", default=[], help="extra `tina serve` flag (repeatable)"
    )
    args = parser.parse_args()

    limits = load_service_config().limits
    args.max_batch_size = args.max_batch_size or limits.max_batch_size
    args.batch_window_ms = (
        args.batch_window_ms if args.batch_window_ms is not None else (limits.batch_window_ms)
    )
    prompts = questions(args.requests)
    port = free_port()
    server = start_server(args, port)
    url = f"http://127.0.0.1:{port}"

    def counters() -> tuple[int, int]:
        health = httpx.get(f"{url}/health").json()
        return health["batches"], health["batched_requests"]

    try:
        before = counters()
        seq_wall, seq_lat, seq_answers = run_sequential(url, prompts)
        middle = counters()
        con_wall, con_lat, con_answers = run_concurrent(url, prompts, args.clients)
        after = counters()
    finally:
        server.terminate()
        server.wait(timeout=60)

    same = sum(a == b for a, b in zip(seq_answers, con_answers, strict=True))
    seq_rps, con_rps = len(prompts) / seq_wall, len(prompts) / con_wall
    print(
        f"tina serve (embedded model unless --serve-arg says otherwise), {len(prompts)} questions "
        f"(seed {SEED}, tasks interleaved), greedy, hidden thinking; server: max batch "
        f"{args.max_batch_size}, window {args.batch_window_ms:g} ms, threads "
        f"{args.threads or 'torch default'}; {os.cpu_count()} CPUs"
    )
    print(
        f"{'mode':<11} {'clients':>7} {'requests':>8} {'wall s':>7} {'req/s':>7} "
        f"{'p50 s':>6} {'p99 s':>6} {'ratio':>6} {'mean batch':>10}"
    )
    rows = [
        ("sequential", 1, seq_wall, seq_lat, seq_rps, mean_batch(before, middle)),
        ("concurrent", args.clients, con_wall, con_lat, con_rps, mean_batch(middle, after)),
    ]
    for mode, clients, wall, lat, rps, batch in rows:
        print(
            f"{mode:<11} {clients:>7} {len(prompts):>8} {wall:>7.2f} {rps:>7.2f} "
            f"{statistics.median(lat):>6.3f} {percentile(lat, 0.99):>6.3f} "
            f"{rps / seq_rps:>5.2f}× {batch:>10.1f}"
        )
    print(f"same answers in both modes: {same}/{len(prompts)}")
    print(f"goal: ≥ {GOAL:g}× the sequential throughput at 16 clients")


if __name__ == "__main__":
    main()
