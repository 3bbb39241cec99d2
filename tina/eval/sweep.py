"""Quality against think budget: evaluation items through the one engine, fixed budgets and `auto`.

What it does: reads evaluation items from contract JSONL (`load_eval_items`; a record whose own
answer does not score as correct is an `EvalDataError` naming file and line); decodes them at
one budget through `tina.engine.loop.Engine` in hidden mode (`decode_items`: a fixed budget is
served like any request with that budget, `auto` as served, with the heads' plan and budget —
without heads that is a `SweepError`); scores each item (`tina.data.tasks.scoring.score_record`;
the confidence scored is the heads' prediction before thinking, `item_confidence`); writes the
metrics per budget and per slice to `budget_sweep_<split>.csv`, `…_items.csv` and `….json`
(`run_budget_sweep`, `sweep_engine`), which `read_sweep_csv` / `read_items_csv` read back.
What each file holds: docs/evaluation.md.

What it does not do: fit calibration (`tina.eval.calibrate`) or draw (`tina.eval.plots`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tina.core.atomic import atomic_write_json, atomic_write_text
from tina.core.checks import json_safe
from tina.core.introspection import inner_model
from tina.core.plans import PLAN_CLASSES, plan_index
from tina.core.tags import extract_answer, text_question
from tina.data.contract import ContractError, read_contract_jsonl
from tina.data.tasks.scoring import score_record
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig, Request, Result, Telemetry
from tina.eval.metrics import SUMMARY_KEYS, by, summarize

AUTO = "auto"
Budget = int | str  #: a fixed think budget (int ≥ 0) or "auto"

DEFAULT_SLICE_FIELDS: tuple[str, ...] = ("task", "difficulty_bin", "style")

#: Columns of `budget_sweep_<split>.csv`: the budget, then `tina.eval.metrics.SUMMARY_KEYS`.
SWEEP_COLUMNS: tuple[str, ...] = ("budget", *SUMMARY_KEYS)

#: Columns of `budget_sweep_<split>_items.csv`.
ITEM_COLUMNS: tuple[str, ...] = (
    "budget",
    "id",
    "task",
    "difficulty_bin",
    "style",
    "correct",
    "confidence",
    "think_tokens",
    "leaked",
    "predicted_budget",
    "applied_budget",
    "target_budget",
    "plan",
    "plan_gold",
    "prediction",
    "gold",
)

_UNIT_COLUMNS = frozenset(
    {"exact_match", "token_f1", "leakage_rate", "ece", "brier", "auroc", "plan_accuracy"}
)
_NUMERIC_ITEM_COLUMNS = (
    "correct",
    "confidence",
    "think_tokens",
    "leaked",
    "predicted_budget",
    "applied_budget",
    "target_budget",
)


class SweepError(ValueError):
    """A sweep that cannot run as asked (e.g. `auto` without metacognitive heads)."""


class EvalDataError(ContractError):
    """An evaluation input (data JSONL, sweep CSV) that cannot be used:
    `"{path}:{line}: {rule}: {detail}"`, like every data error of Tina."""


@dataclass
class EvalItem:
    """One evaluation question with its reference and labels."""

    id: str  #: the record's `id`, else `<file>:<line>`
    prompt: str  #: the question, or the rendered prompt when `rendered`
    rendered: bool  #: `prompt` is already rendered (ends with `<think>`)
    gold: str  #: the reference answer (`extract_answer` of the record's text)
    record: dict[str, Any]  #: the contract record (what `score_record` reads)
    labels: dict[str, Any] = field(default_factory=dict)  #: slice labels (task, difficulty, …)
    plan_gold: str | None = None  #: gold plan class name
    target_budget: int | None = None  #: gold think budget


# --- items --------------------------------------------------------------------------------------


def score_item(item: EvalItem, answer: str) -> float:
    """Correctness of `answer` (already extracted) for `item`:
    `tina.data.tasks.scoring.score_record`
    (the task's scorer when the record has task and meta, else exact match with the gold)."""
    return score_record(answer, item.record)


def item_from_record(record: Mapping[str, Any], where: tuple[str, int]) -> EvalItem:
    """An `EvalItem` from one contract record; `where` = (file, line) for errors. A record
    whose own answer does not score as correct (e.g. wrong `meta`) is an `EvalDataError`."""
    path, line = where
    text = str(record["text"])
    meta = record.get("meta")
    question = meta.get("question") if isinstance(meta, dict) else None
    prompt = question if isinstance(question, str) and question else text_question(text)
    plan = record.get("plan_class")
    item = EvalItem(
        id=str(record.get("id", f"{path}:{line}")),
        prompt=prompt,
        rendered=False,  # the model's own chat template renders it, as serving does
        gold=extract_answer(text),
        record=dict(record),
        labels={k: record[k] for k in DEFAULT_SLICE_FIELDS if k in record},
        plan_gold=None if plan is None else PLAN_CLASSES[plan_index(plan)],
        target_budget=record.get("target_budget"),
    )
    try:
        own = score_item(item, item.gold)
    except (TypeError, ValueError) as exc:
        raise EvalDataError(path, line, "eval", f"cannot be scored: {exc}") from None
    if own != 1.0:
        raise EvalDataError(
            path, line, "eval", f"the record's own answer {item.gold!r} does not score as correct"
        )
    return item


def load_eval_items(path: str | os.PathLike[str], split: str | None = None) -> list[EvalItem]:
    """Evaluation items of a contract JSONL file (strict: the first bad record is an error
    naming file and line). With `split`, records carrying a `split` field are filtered by it."""
    name = os.fspath(path)
    read = read_contract_jsonl(path, strict=True)
    pairs = list(zip(read.records, read.line_numbers, strict=True))
    if split is not None and any("split" in r for r, _ in pairs):
        pairs = [(r, n) for r, n in pairs if r.get("split") == split]
    if not pairs:
        last = read.line_numbers[-1] if read.line_numbers else 1
        wanted = f" of split {split!r}" if split is not None else ""
        raise EvalDataError(name, last, "eval", f"no records{wanted} to evaluate")
    return [item_from_record(r, (name, n)) for r, n in pairs]


def parse_budgets(spec: str | Iterable[Budget]) -> list[Budget]:
    """Budgets from `"0,16,32,auto"` or a sequence: non-negative ints and `auto`, no repeats."""
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    budgets: list[Budget] = []
    for part in parts:
        if part == "" or part is None:
            continue
        if part == AUTO:
            value: Budget = AUTO
        else:
            try:
                value = int(part)
                if value < 0 or value != float(part):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f"budget {part!r}: expected an integer ≥ 0 or 'auto'") from None
        if value in budgets:
            raise ValueError(f"budget {value!r} given twice")
        budgets.append(value)
    if not budgets:
        raise ValueError("no budgets given")
    return budgets


# --- decoding -----------------------------------------------------------------------------------


def item_confidence(telemetry: Telemetry) -> float | None:
    """The confidence an evaluation scores: the heads' prediction from the prompt, before
    thinking (what the metacognitive heads promise: plan, budget and confidence before any
    think token); the one read again at `</think>` stays in the telemetry, and serves when a
    model reports no prediction before thinking."""
    if telemetry.confidence_before is not None:
        return telemetry.confidence_before
    return telemetry.confidence_after


def request_for(item: EvalItem, budget: Budget) -> Request:
    """The engine request of `item` at `budget` (hidden mode; the serving rule for both)."""
    if budget == AUTO:
        return Request(item.prompt, rendered=item.rendered, visible_cot=False)
    return Request(item.prompt, rendered=item.rendered, budget=int(budget), visible_cot=False)


def item_row(item: EvalItem, result: Result, budget: Budget) -> dict[str, Any]:
    """The per-item record the metrics and the items CSV read."""
    t = result.telemetry
    return {
        "budget": str(budget),
        "id": item.id,
        **item.labels,
        "correct": score_item(item, result.answer),
        "confidence": item_confidence(t),
        "think_tokens": t.think_tokens,
        "leaked": t.leaked,
        "predicted_budget": t.predicted_budget,
        "applied_budget": t.budget,
        "target_budget": item.target_budget,
        "plan": t.plan,
        "plan_gold": item.plan_gold,
        "prediction": result.answer,
        "gold": item.gold,
    }


def require_heads(engine: Engine) -> None:
    """`SweepError` unless `engine` has metacognitive heads (what `auto` and calibration read)."""
    if engine.introspection is None:
        raise SweepError(
            "budget 'auto' needs metacognitive heads, and this model has no introspection parts "
            "attached (give --adapter/--base with introspection.safetensors, or fixed budgets)"
        )


def decode_items(
    engine: Engine,
    items: Sequence[EvalItem],
    budget: Budget,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[Result]]:
    """Every item at one budget, `batch_size` requests per engine call; returns the per-item
    rows (`item_row`) and the engine's results. `on_batch(n)` after each batch of n items."""
    if budget == AUTO:
        require_heads(engine)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows: list[dict[str, Any]] = []
    results: list[Result] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        out = engine.generate([request_for(it, budget) for it in chunk])
        rows += [item_row(it, r, budget) for it, r in zip(chunk, out, strict=True)]
        results += out
        if on_batch is not None:
            on_batch(len(chunk))
    return rows, results


# --- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep measured and where it wrote it."""

    split: str
    rows: list[dict[str, Any]]  #: one per budget: `budget` + `tina.eval.metrics.SUMMARY_KEYS`
    items: list[dict[str, Any]]  #: one per item and budget (`item_row`)
    slices: dict[str, dict[str, dict[str, dict[str, float]]]]  #: budget → field → value → metrics
    paths: dict[str, Path] = field(default_factory=dict)  #: csv, items_csv, json


def progress_bar(
    enabled: bool, total: int | None, description: str, rate: bool = False
) -> tuple[Any, Any]:
    """A rich progress bar (disabled unless `enabled`) and its task id; with `rate`, a column
    showing the task's `rate` field (its caller writes items/s there)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    bar = Progress(*columns, TimeRemainingColumn(), disable=not enabled)
    return bar, bar.add_task(description, total=total, rate="")


def sweep_engine(
    engine: Engine,
    items: Sequence[EvalItem],
    budgets: Sequence[Budget],
    split: str = "dev",
    out_dir: str | os.PathLike[str] | None = "artifacts",
    batch_size: int = 16,
    n_bins: int = 10,
    slice_fields: Sequence[str] = DEFAULT_SLICE_FIELDS,
    progress: bool = False,
    source: str | None = None,
) -> SweepResult:
    """Every budget over every item through `engine`; metrics per budget and per slice; files
    in `out_dir` (none when it is None)."""
    budgets = parse_budgets(budgets)
    if AUTO in budgets:
        require_heads(engine)  # before any decoding
    rows, all_items = [], []
    slices: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    bar, task = progress_bar(progress, len(items) * len(budgets), f"sweep {split}")
    with bar:
        for budget in budgets:
            bar.update(task, description=f"sweep {split} budget={budget}")
            item_rows, _ = decode_items(
                engine, items, budget, batch_size, lambda n: bar.advance(task, n)
            )
            rows.append({"budget": str(budget), **summarize(item_rows, n_bins)})
            slices[str(budget)] = {
                f: {str(k): v for k, v in by(item_rows, f, n_bins).items()} for f in slice_fields
            }
            all_items += item_rows
    result = SweepResult(split=split, rows=rows, items=all_items, slices=slices)
    if out_dir is not None:
        settings = {
            "data": source,
            "n_items": len(items),
            "budgets": [str(b) for b in budgets],
            "n_bins": n_bins,
            "batch_size": batch_size,
            "slack_ratio_auto": engine.config.slack_ratio,
            "budget_cap": engine.config.budget_cap,
            "calibration": None if engine.calibration is None else engine.calibration.to_dict(),
            "heads": engine.introspection is not None,
            "confidence": "predicted before thinking (from the prompt)",
        }
        result.paths = write_sweep(result, Path(out_dir), settings)
    return result


def run_budget_sweep(
    tokenizer: Any,
    model: Any,
    eval_dataset: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    budgets: Sequence[Budget] = (16, 32, 64),
    split: str = "dev",
    out_dir: str | os.PathLike[str] | None = "artifacts",
    config: EngineConfig | None = None,
    calibration: Any = None,
    batch_size: int = 16,
    n_bins: int = 10,
    progress: bool = False,
) -> SweepResult:
    """A budget sweep of `model` (with its attached introspection parts, if any) over
    `eval_dataset` (a contract JSONL path or contract records); see `sweep_engine`."""
    if isinstance(eval_dataset, (str, os.PathLike)):
        source: str | None = os.fspath(eval_dataset)
        items = load_eval_items(eval_dataset, split)
    else:
        source = None
        items = [item_from_record(r, ("<records>", i + 1)) for i, r in enumerate(eval_dataset)]
    intro = getattr(inner_model(model), "tina_introspection", None)
    engine = Engine(model, tokenizer, intro, config, calibration)
    return sweep_engine(
        engine, items, budgets, split, out_dir, batch_size, n_bins, progress=progress, source=source
    )


# --- files --------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def sweep_paths(out_dir: Path, split: str) -> dict[str, Path]:
    """Where a sweep of `split` writes: csv, items_csv, json."""
    stem = f"budget_sweep_{split}"
    return {
        "csv": out_dir / f"{stem}.csv",
        "items_csv": out_dir / f"{stem}_items.csv",
        "json": out_dir / f"{stem}.json",
    }


def write_sweep(result: SweepResult, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write the sweep's CSVs and JSON summary atomically; returns their paths."""
    paths = sweep_paths(out_dir, result.split)
    atomic_write_text(paths["csv"], _csv_text(SWEEP_COLUMNS, result.rows))
    atomic_write_text(paths["items_csv"], _csv_text(ITEM_COLUMNS, result.items))
    summary = {
        "split": result.split,
        "settings": dict(settings),
        "rows": result.rows,
        "slices": result.slices,
        "files": {k: str(p) for k, p in paths.items()},
    }
    atomic_write_json(paths["json"], json_safe(summary))
    return paths


def sweep_markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The sweep table, one row per budget."""
    header = ["budget", *SUMMARY_KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["budget"])]
        for key in SUMMARY_KEYS:
            value = row[key]
            if key == "n":
                cells.append(str(int(value)))
            elif isinstance(value, float) and math.isnan(value):
                cells.append("–")
            else:
                cells.append(f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _read_csv(
    path: str | os.PathLike[str], required: Sequence[str]
) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of a CSV with a header holding every `required` column; a row whose field
    count differs from the header's is an `EvalDataError` naming its line."""
    name = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise EvalDataError(name, 1, "csv", str(exc)) from None
        if not header:
            raise EvalDataError(name, 1, "csv_header", "empty file: expected a header row")
        missing = [c for c in required if c not in header]
        if missing:
            raise EvalDataError(name, 1, "csv_header", f"missing columns {missing}")
        rows = []
        while True:
            try:
                fields = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise EvalDataError(name, reader.line_num, "csv", str(exc)) from None
            if fields is None:
                break
            if not fields:
                continue
            if len(fields) != len(header):
                raise EvalDataError(
                    name,
                    reader.line_num,
                    "csv_row",
                    f"{len(fields)} fields, the header has {len(header)}",
                )
            rows.append((reader.line_num, dict(zip(header, fields, strict=True))))
    if not rows:
        raise EvalDataError(name, 1, "csv", "no data rows after the header")
    return rows


def _number(
    where: tuple[str, int], column: str, text: str, low: float | None, high: float | None
) -> float:
    """A float cell ("" = NaN), within [low, high] when given."""
    if text.strip() == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise EvalDataError(*where, "csv_value", f"{column}: {text!r} is not a number") from None
    if math.isnan(value) or math.isinf(value):
        raise EvalDataError(*where, "csv_value", f"{column}: {text!r} is not a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        raise EvalDataError(
            *where,
            "csv_value",
            f"{column}: {value:g} outside [{low}, {'∞' if high is None else high}]",
        )
    return value


def _budget_label(where: tuple[str, int], text: str) -> str:
    if text == AUTO or (text.isdigit() and text.isascii()):
        return text
    raise EvalDataError(
        *where, "csv_value", f"budget: {text!r} is neither an integer ≥ 0 nor 'auto'"
    )


def read_sweep_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a `budget_sweep_<split>.csv`: `budget` a label (`"16"`, `"auto"`), `n` an
    int, the metrics floats (NaN where empty). Errors name file, line and column."""
    name = os.fspath(path)
    rows, seen = [], set()
    for line, raw in _read_csv(path, SWEEP_COLUMNS):
        where = (name, line)
        budget = _budget_label(where, raw["budget"].strip())
        if budget in seen:
            raise EvalDataError(*where, "csv_value", f"budget {budget!r} appears twice")
        seen.add(budget)
        n = _number(where, "n", raw["n"], 0, None)
        if math.isnan(n) or not n.is_integer():
            raise EvalDataError(*where, "csv_value", f"n: {raw['n']!r} is not a count")
        row: dict[str, Any] = {"budget": budget, "n": int(n)}
        for column in SUMMARY_KEYS[1:]:
            high = 1.0 if column in _UNIT_COLUMNS else None
            row[column] = _number(where, column, raw[column], 0.0, high)
        rows.append(row)
    return rows


def read_items_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a `budget_sweep_<split>_items.csv` (numbers as floats, NaN where empty;
    text columns as written). Errors name file, line and column."""
    name = os.fspath(path)
    rows = []
    for line, raw in _read_csv(path, ("budget", *_NUMERIC_ITEM_COLUMNS)):
        where = (name, line)
        row: dict[str, Any] = dict(raw)
        row["budget"] = _budget_label(where, raw["budget"].strip())
        for column in _NUMERIC_ITEM_COLUMNS:
            high = 1.0 if column in ("correct", "confidence", "leaked") else None
            row[column] = _number(where, column, raw[column], 0.0, high)
        rows.append(row)
    return rows


def budget_sort_key(label: str) -> tuple[int, int]:
    """Fixed budgets in increasing order, then `auto`."""
    return (1, 0) if label == AUTO else (0, int(label))
