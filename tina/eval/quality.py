"""`tina quality`: a base model's accuracy per task and difficulty, with full, cut and no thinking.

What it does: draws held-out items from the task suite (prompts that the bootstrap corpus of the
model never contained, where the problem space allows; 1-digit sums and differences are too few
to hold out), decodes each item with thinking capped at a share of the tokens its concise trace
needs (`target_budget`) — 0, 25%, 50% — and uncapped ("full"), scores the answers exactly, and
writes a CSV and a Markdown table (exact match and average think tokens per cell).

What it does not do: metacognitive heads or calibration (see the evaluation sweeps).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tina.core.atomic import atomic_write_text
from tina.core.models import render_prompt
from tina.data.tasks import TASKS, generate_records
from tina.data.tasks.scoring import score_answer
from tina.engine.loop import decode

#: Think caps as shares of the concise trace's tokens; None = full thinking.
DEFAULT_SHARES: tuple[float | None, ...] = (None, 0.5, 0.25, 0.0)

#: (task, difficulties) evaluated by default: what the embedded model was trained on.
DEFAULT_SUITE: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("add", (1, 2, 3, 4)),
    ("sub", (1, 2, 3, 4)),
    ("mul", (1, 2, 3, 4)),
    ("mul2", (1, 2)),
    ("code_deduction", (1, 2, 3, 4)),
    ("code_abduction", (1, 2, 3)),
    ("code_induction", (1, 2)),
)


@dataclass
class QualityRow:
    """One cell group of the table: a task, a difficulty and a think share."""

    task: str
    difficulty: int
    share: str  #: "full", or the share of needed think tokens allowed ("0.5", …)
    exact_match: float
    avg_think_tokens: float
    avg_needed_tokens: float
    n: int


def parse_suite(text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """`add=2,3,4;mul=2,3` as ((task, difficulties), …); a ValueError naming the bad part."""
    suite = []
    for part in (p.strip() for p in text.split(";") if p.strip()):
        task, _, levels = part.partition("=")
        if task not in TASKS:
            raise ValueError(f"{part!r}: unknown task {task!r}; expected one of {sorted(TASKS)}")
        try:
            difficulties = tuple(int(d) for d in levels.split(",")) if levels else None
        except ValueError:
            raise ValueError(f"{part!r}: difficulties must be integers, e.g. add=2,3") from None
        known = TASKS[task].difficulties
        if difficulties is None:
            difficulties = known
        bad = [d for d in difficulties if d not in known]
        if bad:
            raise ValueError(f"{part!r}: task {task!r} has no difficulty {bad}; it has {known}")
        suite.append((task, difficulties))
    if not suite:
        raise ValueError("empty suite; e.g. add=2,3;sub=2,3")
    return tuple(suite)


def parse_shares(text: str) -> tuple[float | None, ...]:
    """`full,0.5,0` as (None, 0.5, 0.0); a ValueError naming the bad share."""
    shares: list[float | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "full":
            shares.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r}: a share is 'full' or a number in [0, 1]") from None
        if not 0 <= value <= 1:
            raise ValueError(f"{part!r}: a share is 'full' or a number in [0, 1]")
        shares.append(value)
    return tuple(shares) or DEFAULT_SHARES


def share_label(share: float | None) -> str:
    return "full" if share is None else f"{share:g}"


def heldout_items(
    task: str, difficulty: int, n: int, seed: int, seen_questions: set[str]
) -> list[dict[str, Any]]:
    """n items of `task` at `difficulty` whose questions are not in `seen_questions`, when the
    problem space has enough of them (otherwise seen ones fill the rest)."""
    items: list[dict[str, Any]] = []
    fallback: list[dict[str, Any]] = []
    batch_seed = seed
    while len(items) < n and batch_seed < seed + 20:
        for record in generate_records(task, 4 * n, seed=batch_seed, difficulties=[difficulty]):
            question = record["meta"]["question"]
            target = fallback if question in seen_questions else items
            target.append(record)
        batch_seed += 1
    return (items + fallback)[:n]


def evaluate_quality(
    model: Any,
    tokenizer: Any,
    suite: Sequence[tuple[str, Sequence[int]]] = DEFAULT_SUITE,
    n: int = 100,
    shares: Sequence[float | None] = DEFAULT_SHARES,
    seed: int = 10_000,
    full_cap: int = 384,
    batch_size: int = 64,
    seen_questions: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[QualityRow]:
    """Accuracy table rows for every (task, difficulty, share); see module docstring."""
    rows: list[QualityRow] = []
    for task, difficulties in suite:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        for difficulty in difficulties:
            items = heldout_items(task, difficulty, n, seed, seen_questions or set())
            prompts = [render_prompt(tokenizer, r["meta"]["question"]) for r in items]
            for share in shares:
                caps = [
                    full_cap if share is None else math.floor(share * r["target_budget"])
                    for r in items
                ]
                scores, think = [], []
                for start in range(0, len(items), batch_size):
                    chunk = slice(start, start + batch_size)
                    for record, completion in zip(
                        items[chunk],
                        decode(model, tokenizer, prompts[chunk], caps[chunk]),
                        strict=True,
                    ):
                        scores.append(score_answer(completion.answer, task, record["meta"]))
                        think.append(completion.telemetry.think_tokens)
                row = QualityRow(
                    task=task,
                    difficulty=difficulty,
                    share=share_label(share),
                    exact_match=sum(scores) / len(scores),
                    avg_think_tokens=sum(think) / len(think),
                    avg_needed_tokens=sum(r["target_budget"] for r in items) / len(items),
                    n=len(items),
                )
                rows.append(row)
                if progress is not None:
                    progress(
                        f"{task} d={difficulty} think={row.share}: EM {row.exact_match:.3f} "
                        f"think {row.avg_think_tokens:.1f} (needed {row.avg_needed_tokens:.1f})"
                    )
    return rows


def quality_markdown_table(rows: Sequence[QualityRow]) -> str:
    """Exact match per (task, difficulty) with one column per think share."""
    shares = list(dict.fromkeys(r.share for r in rows))
    header = ["task", "difficulty", "needed think tokens"] + [
        "EM full (think tokens)" if s == "full" else f"EM think ≤ {float(s):.0%}" for s in shares
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple[str, int], dict[str, QualityRow]] = {}
    for r in rows:
        groups.setdefault((r.task, r.difficulty), {})[r.share] = r
    for (task, difficulty), by_share in groups.items():
        first = next(iter(by_share.values()))
        cells = [task, str(difficulty), f"{first.avg_needed_tokens:.1f}"]
        for s in shares:
            r = by_share[s]
            cells.append(
                f"{r.exact_match:.2f} ({r.avg_think_tokens:.0f})"
                if s == "full"
                else f"{r.exact_match:.2f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_quality(rows: Sequence[QualityRow], out_dir: Path) -> tuple[Path, Path]:
    """Write `quality.csv` and `quality.md` into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "quality.csv", out_dir / "quality.md"
    fields = list(QualityRow.__dataclass_fields__)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({f: getattr(r, f) for f in fields})
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(md_path, quality_markdown_table(rows) + "\n")
    return csv_path, md_path
