"""Calibration of the metacognitive heads, applied at serve time: the file format and its use.

The calibration JSON (`CALIBRATION_FILE`, schema `tina/schemas/calibration.schema.json`; every
field is described in docs/calibration.md): confidence = sigmoid(logit / T + bias), then an
optional piecewise-linear map; plan = the class with the largest `probability / threshold`
(default 0.25 each); the predicted budget clipped to [min, max]; the exit check's threshold.

What it does: `load_calibration` (a missing or malformed file is a `CalibrationError` naming the
file and field, never silently ignored), `save_calibration` (atomic) and the three `apply_*`
functions the engine calls. What it does not do: fit anything (`tina.eval.calibrate`,
`tina.eval.exit_check`) or run the exit check (the engine does).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tina.core.atomic import atomic_write
from tina.core.checks import Problem, read_json_file, schema_problems
from tina.core.plans import PLAN_CLASSES

CALIBRATION_SCHEMA = "calibration.schema.json"
#: the calibration file's name beside introspection parts, in checkpoints and in run outputs
CALIBRATION_FILE = "metacog_calibration.json"
DEFAULT_PLAN_THRESHOLD = 1.0 / len(PLAN_CLASSES)


class CalibrationError(ValueError):
    """A calibration file that is missing or malformed."""


@dataclass
class Calibration:
    """What serving applies to the heads' raw outputs."""

    confidence_temperature: float = 1.0  #: divides the confidence logit before the sigmoid
    plan_thresholds: dict[str, float] = field(default_factory=dict)  #: per plan class
    budget_min: int | None = None  #: lower clip of the predicted budget
    budget_max: int | None = None  #: upper clip of the predicted budget
    fitted_on: dict[str, Any] = field(default_factory=dict)  #: provenance
    confidence_bias: float = 0.0  #: added to logit / T before the sigmoid (Platt's offset)
    #: a monotone piecewise-linear map applied last: knots {"x": [...], "y": [...]} in [0, 1]
    confidence_map: dict[str, list[float]] = field(default_factory=dict)
    #: readiness to stop thinking: at a step end where the heads' budget would close thinking,
    #: the engine reads the heads' readiness there and thinks on to the next step end
    #: while it is below this (None: no check; `tina.eval.exit_check` fits it)
    exit_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": 1, "confidence_temperature": self.confidence_temperature}
        if self.confidence_bias:
            out["confidence_bias"] = self.confidence_bias
        if self.confidence_map:
            out["confidence_map"] = {k: list(v) for k, v in self.confidence_map.items()}
        if self.plan_thresholds:
            out["plan_thresholds"] = dict(self.plan_thresholds)
        if self.budget_min is not None and self.budget_max is not None:
            out["budget_clip"] = {"min": self.budget_min, "max": self.budget_max}
        if self.exit_threshold is not None:
            out["exit_threshold"] = self.exit_threshold
        if self.fitted_on:
            out["fitted_on"] = self.fitted_on
        return out


def load_calibration(path: str | Path) -> Calibration:
    """The calibration in `path`; `CalibrationError` naming the file (and field) otherwise."""
    payload, problem = read_json_file(path)
    if problem is not None:
        raise CalibrationError(str(problem))
    problems = schema_problems(str(path), payload, CALIBRATION_SCHEMA)
    clip = payload.get("budget_clip") if isinstance(payload, dict) else None
    if not problems and clip is not None and clip["min"] > clip["max"]:
        problems = [Problem(str(path), "budget_clip", f"min {clip['min']} > max {clip['max']}")]
    knots = payload.get("confidence_map") if isinstance(payload, dict) else None
    if not problems and knots is not None:
        xs, ys = knots["x"], knots["y"]
        if len(xs) != len(ys):
            problems = [Problem(str(path), "confidence_map", f"{len(xs)} x for {len(ys)} y")]
        elif any(b <= a for a, b in itertools.pairwise(xs)) or any(
            b < a for a, b in itertools.pairwise(ys)
        ):
            problems = [
                Problem(str(path), "confidence_map", "x must increase and y must not decrease")
            ]
    if problems:
        raise CalibrationError("\n".join(str(p) for p in problems))
    return Calibration(
        confidence_temperature=float(payload["confidence_temperature"]),
        confidence_bias=float(payload.get("confidence_bias", 0.0)),
        confidence_map={k: [float(v) for v in knots[k]] for k in ("x", "y")} if knots else {},
        plan_thresholds={k: float(v) for k, v in payload.get("plan_thresholds", {}).items()},
        budget_min=None if clip is None else int(clip["min"]),
        budget_max=None if clip is None else int(clip["max"]),
        fitted_on=dict(payload.get("fitted_on", {})),
        exit_threshold=None
        if payload.get("exit_threshold") is None
        else float(payload["exit_threshold"]),
    )


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    """Write the calibration JSON atomically (temp file in the same directory, then rename)."""
    text = json.dumps(calibration.to_dict(), indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def apply_confidence(logit: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """Calibrated confidence: sigmoid(logit / T + bias), then the piecewise-linear map (flat
    outside its knots) when the calibration has one."""
    if calibration is None:
        return torch.sigmoid(logit.float())
    p = torch.sigmoid(
        logit.float() / calibration.confidence_temperature + calibration.confidence_bias
    )
    if not calibration.confidence_map:
        return p
    xs = torch.tensor(calibration.confidence_map["x"], dtype=p.dtype, device=p.device)
    ys = torch.tensor(calibration.confidence_map["y"], dtype=p.dtype, device=p.device)
    if len(xs) == 1:
        return ys.expand_as(p).clone()
    right = torch.searchsorted(xs, p.contiguous()).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
    # knots apart in the file may meet in float32: 0/0 there takes the upper knot
    t = ((p - x0) / (x1 - x0)).nan_to_num(nan=1.0).clamp(0.0, 1.0)
    return y0 + t * (y1 - y0)


def apply_plan(plan_probs: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """Chosen plan class per row: argmax of probability / threshold."""
    if calibration is None or not calibration.plan_thresholds:
        return plan_probs.argmax(dim=-1)
    thresholds = torch.tensor(
        [calibration.plan_thresholds.get(c, DEFAULT_PLAN_THRESHOLD) for c in PLAN_CLASSES],
        device=plan_probs.device,
    )
    return (plan_probs / thresholds).argmax(dim=-1)


def apply_budget(budget: torch.Tensor, calibration: Calibration | None) -> torch.Tensor:
    """The predicted budget, clipped to the calibration's range when it has one."""
    if calibration is None or calibration.budget_min is None or calibration.budget_max is None:
        return budget
    return budget.clamp(calibration.budget_min, calibration.budget_max)
