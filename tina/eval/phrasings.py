"""`tina phrasings`: does a model answer what people type, and decline what it cannot do?

What it does: draws held-out phrasings of the arithmetic tasks (`tina.data.tasks.phrasing`
`heldout` forms, which no training grammar produces; mixed operand lengths and orders) per
cell, adds the 50 held-out out-of-scope prompts, decodes them all through the engine as served
(budget `auto` by default: the heads' plan and budget, the exit check, the calibration), and
reports per group the exact match and the share of task questions refused, the share of
out-of-scope prompts answered with the refusal, and the confidence's AUROC and ECE on the task
questions. `phrasings_markdown` writes the table.

What it does not do: train anything, or measure the suite's own forms (`tina quality`, sweeps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tina.data.tasks import generate_records
from tina.data.tasks.out_of_scope import heldout_records, is_refusal
from tina.engine.loop import Engine
from tina.eval.metrics import auroc, ece, mean
from tina.eval.sweep import AUTO, Budget, EvalItem, decode_items, item_from_record

#: (group name, task, difficulties): what the held-out phrasings are measured on.
GROUPS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("add 1-3 digits", "add", (1, 2, 3)),
    ("sub 1-3 digits", "sub", (1, 2, 3)),
    ("mul 1-3 x 1 digit", "mul", (1, 2, 3)),
    ("add 4 digits", "add", (4,)),
    ("sub 4 digits", "sub", (4,)),
)

PHRASING_SEED = 7_000  #: seed of the held-out phrasing draw (no training run uses it)


@dataclass
class PhrasingReport:
    """What `evaluate_phrasings` measured."""

    groups: list[dict[str, Any]]  #: per group: name, n, exact_match, refused
    out_of_scope: dict[str, Any]  #: n, honest (share answered with the refusal)
    confidence: dict[str, float]  #: auroc, ece on the task questions (NaN without heads)
    rows: list[dict[str, Any]] = field(default_factory=list)  #: every item's row


def phrasing_items(n_per_cell: int, seed: int = PHRASING_SEED) -> list[EvalItem]:
    """`n_per_cell` held-out phrasings per task and difficulty of `GROUPS`, ids unique."""
    items = []
    for name, task, difficulties in GROUPS:
        for d in difficulties:
            records = generate_records(
                task, n_per_cell, seed=seed, difficulties=[d], phrasing="heldout"
            )
            for record in records:
                record = {**record, "id": f"{record['id']}-d{d}"}
                item = item_from_record(record, ("phrasings", 0))
                item.labels["group"] = name
                items.append(item)
    return items


def out_of_scope_items() -> list[EvalItem]:
    """The held-out out-of-scope prompts as items (correct: answered with the refusal)."""
    return [item_from_record(r, ("out_of_scope", i)) for i, r in enumerate(heldout_records())]


def evaluate_phrasings(
    engine: Engine,
    n_per_cell: int = 30,
    seed: int = PHRASING_SEED,
    budget: Budget = AUTO,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> PhrasingReport:
    """Decode the held-out phrasings and out-of-scope prompts at `budget`; see module doc."""
    tasks = phrasing_items(n_per_cell, seed)
    scope = out_of_scope_items()
    rows, _ = decode_items(engine, [*tasks, *scope], budget, batch_size, on_batch)
    task_rows, scope_rows = rows[: len(tasks)], rows[len(tasks) :]
    for row, item in zip(task_rows, tasks, strict=True):
        row["group"] = item.labels["group"]
        row["refused"] = is_refusal(row["prediction"])
    groups = []
    for name, _, _ in GROUPS:
        mine = [r for r in task_rows if r["group"] == name]
        groups.append(
            {
                "group": name,
                "n": len(mine),
                "exact_match": mean(r["correct"] for r in mine),
                "refused": mean(float(r["refused"]) for r in mine),
            }
        )
    scored = [r for r in task_rows if r["confidence"] is not None]
    confidence = {"auroc": float("nan"), "ece": float("nan")}
    if scored:
        scores = [float(r["confidence"]) for r in scored]
        labels = [float(r["correct"]) for r in scored]
        confidence = {"auroc": auroc(scores, labels), "ece": ece(scores, labels)}
    honest = {"n": len(scope_rows), "honest": mean(r["correct"] for r in scope_rows)}
    return PhrasingReport(groups, honest, confidence, [*task_rows, *scope_rows])


def phrasings_markdown(report: PhrasingReport) -> str:
    """The report as a Markdown table plus the out-of-scope and confidence lines."""
    lines = ["| held-out phrasings | n | exact match | refused |", "|---|---|---|---|"]
    for g in report.groups:
        lines.append(f"| {g['group']} | {g['n']} | {g['exact_match']:.3f} | {g['refused']:.3f} |")
    task_rows = [r for r in report.rows if "refused" in r]
    refused = mean(float(r["refused"]) for r in task_rows) if task_rows else float("nan")
    lines += [
        "",
        f"- out-of-scope prompts answered with the refusal: {report.out_of_scope['honest']:.3f} "
        f"of {report.out_of_scope['n']}",
        f"- task questions refused: {refused:.3f} of {len(task_rows)}",
        f"- confidence on the task questions: AUROC {report.confidence['auroc']:.3f}, "
        f"ECE {report.confidence['ece']:.3f}",
    ]
    return "\n".join(lines) + "\n"
