"""`tina observe`: run prompts through the engine and append structured JSONL observation logs.

What it does: loads the engine every command uses (`tina.serve.runtime.load_engine`), runs the
prompts (`--prompt`, repeatable, and/or `--prompts-file`, one per line) in batches, prints each
shown output to stdout, and appends one JSON line per prompt to `--jsonl-out`
(`observation_record`): the prompt, the think/answer sections with their token counts, what the
user was shown, the heads' outputs (per tapped layer too with `--debug-per-layer`), the
side-adapter gates, latency, tokens/s and the leak/forced-close flags. Logs are redacted by
default with `tina.serve.redact.redact_record` (`--log-raw`: as they are); redaction applies to
the record only: the engine is fed the raw prompt and stdout shows the raw output.

What it does not do: decide anything (the engine does), rotate or upload logs, or redact
anything that `tina.serve.redact` does not cover (names, addresses…).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tina.core.checks import json_safe
from tina.engine.types import Request, Result, resolve_visibility
from tina.serve.redact import redact_record

DEFAULT_JSONL_OUT = "logs/obs.jsonl"
DEFAULT_BATCH_SIZE = 8


def observation_record(
    request: Request, result: Result, *, debug_per_layer: bool, raw: bool
) -> dict[str, Any]:
    """The JSON-serialisable log record of one request and its result.

    Keys: `ts` (ISO-8601 UTC), `prompt`, `visible_cot`, `sections` (`think`/`answer`, each
    `text` and `tokens`), `output` (what the user was shown), `heads` (`plan`, `plan_probs`,
    `predicted_budget`, `budget`, `soft_cap`, `confidence_before`, `confidence_after`,
    `extended`, `exit_checks`), `gates` (`activity`, `coverage`), `latency_s`, `tokens_per_s`,
    `leaked`, `forced_think_close`, `forced_answer_close`; and `per_layer` (the heads' outputs
    per tapped layer, empty without per-layer heads) only with `debug_per_layer`. Every string
    is redacted (`tina.serve.redact.redact_record`) unless `raw`.

    `visible_cot` is the request's; when the request left it to the engine's default, it is
    read off the result (visible output is the whole completion).
    """
    t = result.telemetry
    visible = resolve_visibility(
        request.visible_cot, result.output == result.completion != result.answer
    )
    record: dict[str, Any] = {
        "prompt": request.prompt,
        "visible_cot": bool(visible),
        "sections": {
            "think": {"text": result.think_text, "tokens": t.think_tokens},
            "answer": {"text": result.answer, "tokens": t.answer_tokens},
        },
        "output": result.output,
        "heads": {
            "plan": t.plan,
            "plan_probs": dict(t.plan_probs),
            "predicted_budget": t.predicted_budget,
            "budget": t.budget,
            "soft_cap": t.soft_cap,
            "confidence_before": t.confidence_before,
            "confidence_after": t.confidence_after,
            "extended": t.extended,
            "exit_checks": t.exit_checks,
        },
        "gates": {"activity": t.gate_activity, "coverage": t.gate_coverage},
        "latency_s": t.latency_s,
        "tokens_per_s": t.tokens_per_s,
        "leaked": t.leaked,
        "forced_think_close": t.forced_think_close,
        "forced_answer_close": t.forced_answer_close,
    }
    if debug_per_layer:
        record["per_layer"] = {layer: dict(values) for layer, values in t.per_layer.items()}
    if not raw:
        record = redact_record(record)
    # the timestamp is added after redaction: it is not user text
    return {
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        **json_safe(record),
    }


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Append `records` to `path` as JSON lines; returns how many were written.

    The parent directories are created. All lines go out in one write to a file opened in
    append mode, then flush and fsync: a reader never sees half a record from this call, and
    concurrent appenders do not interleave within a line (on local filesystems)."""
    lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    return lines.count("\n")


def read_prompts(prompts: Sequence[str] | None, prompts_file: str | None) -> list[str]:
    """The `--prompt` values, then the non-blank lines of `--prompts-file` (stripped).
    A missing or unreadable file is a FileNotFoundError/OSError naming it."""
    out = list(prompts or [])
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: prompts file not found")
        out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [p for p in out if p.strip()]


def run_observe(args: Any) -> int:
    """Entry of `tina observe` (arguments from the CLI parser)."""
    from tina.serve.runtime import load_engine, request_from_args

    if args.batch_size < 1:
        print(f"error: --batch-size: expected >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        prompts = read_prompts(args.prompt, args.prompts_file)
    except OSError as exc:
        print(f"error: --prompts-file: {exc}", file=sys.stderr)
        return 2
    if not prompts:
        print("error: no prompts: give --prompt and/or --prompts-file", file=sys.stderr)
        return 2
    engine, _ = load_engine(args)
    visible = resolve_visibility(args.visible_cot, engine.config.visible_cot)
    written = 0
    for start in range(0, len(prompts), args.batch_size):
        requests = [
            request_from_args(args, prompt, visible)
            for prompt in prompts[start : start + args.batch_size]
        ]
        results = engine.generate(requests)
        for result in results:
            print(result.output, flush=True)
        written += append_jsonl(
            args.jsonl_out,
            (
                observation_record(r, res, debug_per_layer=args.debug_per_layer, raw=args.log_raw)
                for r, res in zip(requests, results, strict=True)
            ),
        )
    redacted = "raw" if args.log_raw else "redacted"
    print(f"wrote {written} {redacted} records to {args.jsonl_out}", file=sys.stderr)
    return 0
