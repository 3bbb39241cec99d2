"""The plan classes the metacognitive heads predict and a record's `plan_class` names.

What it does: `PLAN_CLASSES` (by index), what each means, and `plan_index` (name or index →
index). What it does not do: predict a plan (`tina.core.metacog_heads`) or apply thresholds
(`tina.core.calibration`).
"""

from __future__ import annotations

from typing import Any

#: Plan classes, by index. A record's `plan_class` is one of these names or its index.
PLAN_CLASSES: tuple[str, ...] = ("direct", "compute", "trace", "search")

#: What each plan class means.
PLAN_CLASS_MEANINGS: dict[str, str] = {
    "direct": "answer directly, no thinking (think budget 0)",
    "compute": "step-by-step calculation (arithmetic digit traces)",
    "trace": "simulate a program step by step (code deduction)",
    "search": "propose candidates and check them (code abduction/induction)",
}


def plan_index(name_or_index: str | int) -> int:
    """The index (0–3) of a plan class given by name (`"compute"`) or by index (`1`).

    An integral float (`1.0`, as JSON may carry it) counts as its integer. Unknown names and
    out-of-range indices are a ValueError; other types (including bool) a TypeError.
    """
    value: Any = name_or_index
    if isinstance(value, str):
        if value in PLAN_CLASSES:
            return PLAN_CLASSES.index(value)
        raise ValueError(f"unknown plan class {value!r}, expected one of {list(PLAN_CLASSES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"plan class must be a name or an index, got {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"plan class index must be an integer, got {value!r}")
    index = int(value)
    if not 0 <= index < len(PLAN_CLASSES):
        raise ValueError(f"plan class index {index} out of range 0..{len(PLAN_CLASSES) - 1}")
    return index
