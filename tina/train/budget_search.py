"""Minimal sufficient think budgets: how few think tokens each item really needs.

What it does: `minimal_budgets(engine, items, config)` decodes every item through the engine
(greedy, hidden) first with a free budget (`free_budget`: the model thinks as long as it likes),
then at the grid budgets below the item's free think length, as served (thinking closes at the
step end nearest the budget), from the largest down, until one fails. An item's *minimal
sufficient budget* is the smallest budget from which the model still answers correctly: the
lowest grid budget of that unbroken run of correct answers, else its free think length when
only free thinking works. Searching down rather than up matters: correctness is not monotone
in the budget (a think cut just after a "check" step can come out wrong where a shorter one was
right by luck), and the smallest budget that happens to work would teach the heads a budget
that fails on the item's neighbours. Items the model gets wrong even thinking freely have none
(`minimal_budget` None).

`budget_records(items, found)` turns the search into training records for the heads: budget
target = the think tokens spent at the minimal budget (the engine closes thinking at a step
end, so this is where the sufficient thinking ended: granting exactly that budget closes
there again; an unsolved item keeps its record's `target_budget`, the length of
a correct concise trace: thinking longer than that does not help it), confidence target =
correctness with free thinking, plan `direct` when the minimal budget is 0 and `compute` when
it is not and the record had no plan (a question file's) or `direct`. The grid budget
that fell short just below it adds a second record: that cut think, labelled wrong (the
confidence read after thinking learns to recognise a think stopped too early), with the same
budget target. The other exits the search decoded nearest above the minimal budget (larger
grid budgets, then free thinking; `extra_exits` of them: the check decides near the budget,
never at free thinking's end) add records that teach only the confidence read after
thinking (`correct_after`: that exit's correctness; no prompt-level targets, so the prompt's
confidence, plan and budget keep one record per item): the engine's exit check reads it at
the step end where thinking would close. A record's think is the model's own (the text the
engine produced), closed by the gold answer, so the adapters and think CE see on-policy text.

Correctness is `tina.eval.sweep.score_item` (the task scorers); decoding is
`tina.eval.sweep.decode_items`
(the one engine). What it does not do: train anything (the recipe and the budget policy do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tina.engine.loop import Engine
from tina.eval.sweep import EvalItem, decode_items
from tina.train.on_policy import with_own_think


@dataclass
class BudgetSearchConfig:
    """The search grid."""

    #: fixed budgets tried from the largest down (only those below an item's free think length)
    grid: list[int] = field(
        default_factory=lambda: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192]
    )
    free_budget: int = 384  #: the budget of free thinking (also the search's upper end)
    batch_size: int = 64  #: requests per engine call


@dataclass
class BudgetFound:
    """What the search found for one item."""

    id: str
    free_correct: bool  #: correct when thinking freely
    free_think_tokens: int  #: think tokens spent thinking freely
    minimal_budget: int | None  #: smallest sufficient budget (None: never correct)
    minimal_used: int | None  #: think tokens spent at that budget (its step end; None: never)
    completion: str  #: the engine's completion at the minimal budget (else the free one)
    failed_completion: str | None = None  #: the completion that fell short below it, if any
    tried: list[int] = field(default_factory=list)  #: grid budgets decoded for it, largest first
    #: every decoded exit: (budget, completion, correct), free thinking first, then `tried`
    exits: list[tuple[int, str, bool]] = field(default_factory=list)


def minimal_budgets(
    engine: Engine,
    items: Sequence[EvalItem],
    config: BudgetSearchConfig | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[BudgetFound]:
    """The minimal sufficient budget of every item (see module docstring)."""
    config = config or BudgetSearchConfig()
    grid = sorted(set(config.grid))
    if any(b < 0 for b in grid) or config.free_budget < 1:
        raise ValueError("budgets must be >= 0 and free_budget positive")
    rows, results = decode_items(engine, items, config.free_budget, config.batch_size, on_batch)
    found = [
        BudgetFound(
            id=item.id,
            free_correct=bool(row["correct"]),
            free_think_tokens=int(row["think_tokens"]),
            minimal_budget=int(row["think_tokens"]) if row["correct"] else None,
            minimal_used=int(row["think_tokens"]) if row["correct"] else None,
            completion=result.completion,
            exits=[(config.free_budget, result.completion, bool(row["correct"]))],
        )
        for item, row, result in zip(items, rows, results, strict=True)
    ]
    for budget in reversed(grid):
        todo = [  # still in an unbroken run of correct answers (no failed completion yet)
            i
            for i, f in enumerate(found)
            if f.minimal_budget is not None
            and f.failed_completion is None
            and budget < f.minimal_budget
        ]
        if not todo:
            continue
        rows, results = decode_items(
            engine, [items[i] for i in todo], budget, config.batch_size, on_batch
        )
        for i, row, result in zip(todo, rows, results, strict=True):
            found[i].tried.append(budget)
            found[i].exits.append((budget, result.completion, bool(row["correct"])))
            if row["correct"]:
                found[i].minimal_budget = budget
                found[i].minimal_used = int(row["think_tokens"])
                found[i].completion = result.completion
            else:
                found[i].failed_completion = result.completion
    return found


def budget_records(
    items: Sequence[EvalItem], found: Sequence[BudgetFound], extra_exits: int = 2
) -> list[dict[str, Any]]:
    """Training records from the search (see module docstring)."""
    out = []
    for item, f in zip(items, found, strict=True):
        record = dict(item.record)
        record["text"] = with_own_think(record, f.completion, item.gold)
        if f.minimal_budget is None:
            target = int(record.get("target_budget", f.free_think_tokens))
            record["lm_weight"] = 0.0  # a think that failed is not imitated
        else:
            target = f.minimal_used if f.minimal_used is not None else f.minimal_budget
        record["target_budget"] = target
        record["think_tokens_used"] = target
        record["correct"] = f.free_correct
        if target == 0:
            record["plan_class"] = "direct"
        elif record.get("plan_class") in (None, "direct", 0):  # thinks: not direct
            record["plan_class"] = "compute"
        record["minimal_budget"] = f.minimal_budget
        out.append(record)
        if f.failed_completion is not None:  # the think cut too short: a negative to recognise
            failed = dict(record)
            failed.update(
                id=f"{record.get('id', item.id)}-cut",
                text=with_own_think(record, f.failed_completion, item.gold),
                correct=False,
                lm_weight=0.0,
            )
            out.append(failed)
        recorded = {f.completion, f.failed_completion}
        others = sorted(
            ((b, text, ok) for b, text, ok in f.exits if text not in recorded), key=lambda e: e[0]
        )
        for budget, completion, correct in others[:extra_exits]:
            out.append(
                {
                    "id": f"{record.get('id', item.id)}-exit{budget}",
                    "text": with_own_think(record, completion, item.gold),
                    "correct_after": correct,
                    "lm_weight": 0.0,
                    **{k: item.record[k] for k in ("task", "meta") if k in item.record},
                }
            )
    return out
