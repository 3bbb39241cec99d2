"""Per-call overhead of `tina.data.sandbox`: one call per worker against many calls per batch.

Runs a trivial program (`def f(x): return x + 1`, so the time is all overhead) `--single`
times through `run_program` and `--batch` times through one `run_batch`, each with and without
the determinism check (which runs every finished call in a second worker), and prints the
wall-clock milliseconds per call. Times only: nothing here asserts anything.

    nice -n 10 python bench/sandbox.py [--single 20] [--batch 2000]
"""

from __future__ import annotations

import argparse
import time

from tina.data.sandbox import Call, SandboxConfig, run_batch, run_program

SOURCE = "def f(x):\n    return x + 1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20, help="run_program calls to time")
    parser.add_argument("--batch", type=int, default=2000, help="calls in the timed batch")
    args = parser.parse_args()
    print("| mode | determinism check | calls | ms per call |")
    print("|---|---|---|---|")
    for check in (False, True):
        config = SandboxConfig(check_determinism=check)
        start = time.perf_counter()
        for i in range(args.single):
            assert run_program(SOURCE, "f", [i], config).value == i + 1
        single = (time.perf_counter() - start) / args.single * 1000
        print(f"| run_program | {check} | {args.single} | {single:.2f} |")
        calls = [Call(SOURCE, "f", (i,)) for i in range(args.batch)]
        start = time.perf_counter()
        verdicts = run_batch(calls, config)
        batch = (time.perf_counter() - start) / args.batch * 1000
        assert [v.value for v in verdicts] == [i + 1 for i in range(args.batch)]
        print(f"| run_batch | {check} | {args.batch} | {batch:.3f} |")


if __name__ == "__main__":
    main()
