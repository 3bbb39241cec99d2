"""What the training TUI (`tina.tui`) computes, as plain functions: the form's fields and their
checks, the train config a form builds, metrics lines read as a run appends them, the ETA and the
status lines.

What it does: prefill a form from a `train_config.yaml` mapping (`form_from_config`); check each
field as it is typed (`field_problem`: whole numbers, existing paths, tap lists); build the run's
config from the YAML it was prefilled from, the form's fields replacing theirs
(`config_from_form`); check the whole config with `tina.train.config.load_train_config` itself,
so there is one rule for config errors, and map its dotted-path messages back onto the form's
fields (`validate_form`); write task-suite data where the data file is missing
(`generate_data`); read a growing file line by line (`LineTail`, `read_metrics`).

What it does not do: widgets, the training subprocess (both `tina.tui`), or training.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from tina.core.metacog_heads import HeadsConfig
from tina.train.config import TRAIN_MODES, TrainConfig, TrainConfigError, load_train_config
from tina.train.losses import LOSS_NAMES

#: the form's fields, in the order shown
FIELDS = (
    "models_root",
    "base",
    "adapter",
    "subfolder",
    "train_data",
    "steps",
    "save_every",
    "eval_every",
    "taps",
    "per_layer",
    "aggregator",
    "mode",
    "output_dir",
)
LABELS = {
    "models_root": "model root",
    "base": "base",
    "adapter": "adapter",
    "subfolder": "subfolder",
    "train_data": "data",
    "steps": "steps",
    "save_every": "save every",
    "eval_every": "eval every",
    "taps": "taps",
    "per_layer": "per-layer",
    "aggregator": "aggregator",
    "mode": "mode",
    "output_dir": "output dir",
}
#: problems of the whole config that belong to no field of the form
GENERAL = "config"
#: how per-layer heads are mixed: `tina.core.metacog_heads.MetacogHeads` has one aggregator, a
#: learned
#: query attending over the per-tap features; `HeadsConfig.per_layer` switches it on
AGGREGATORS = ("attention",)

_INT_FIELDS = ("steps", "save_every", "eval_every")
# the top-level key of a `load_train_config` message -> the form field that sets it
_FIELD_OF_KEY = {
    "steps": "steps",
    "save_every": "save_every",
    "eval_every": "eval_every",
    "train_data": "train_data",
    "output_dir": "output_dir",
    "model": "base",
    "introspection": "taps",
    "mode": "mode",
    "self_play": "mode",
    "hybrid_schedule": "mode",
}


def trainer_has_mode() -> bool:
    """Whether `TrainConfig` has a `mode` field (supervised / self-play / hybrid)."""
    return "mode" in {f.name for f in fields(TrainConfig)}


def mode_choices() -> tuple[str, ...]:
    """The modes a run can choose now: all three once the trainer has `mode`, else supervised."""
    return TRAIN_MODES if trainer_has_mode() else TRAIN_MODES[:1]


def form_from_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The form's values prefilled from a train config mapping (as read from its YAML): strings
    for the text fields, a bool for `per_layer`; what the mapping leaves out, TrainConfig's
    defaults."""
    default = TrainConfig()
    model = raw.get("model") or {}
    heads = (raw.get("introspection") or {}).get("heads") or {}
    return {
        "models_root": str(model.get("models_root") or ""),
        "base": str(model.get("base") or ""),
        "adapter": str(model.get("adapter") or ""),
        "subfolder": str(model.get("subfolder") or ""),
        "train_data": str(raw.get("train_data") or ""),
        "steps": str(raw.get("steps", default.steps)),
        "save_every": str(raw.get("save_every", default.save_every)),
        "eval_every": str(raw.get("eval_every", default.eval_every)),
        "taps": ", ".join(str(t) for t in heads.get("taps", HeadsConfig().taps)),
        "per_layer": bool(heads.get("per_layer", False)),
        "aggregator": AGGREGATORS[0],
        "mode": str(raw.get("mode") or TRAIN_MODES[0]),
        "output_dir": str(raw.get("output_dir") or default.output_dir),
    }


def parse_taps(text: str) -> list[float | int]:
    """Comma-separated taps: fractions of depth in (0, 1] (written with a point: `0.5, 1.0`)
    or decoder-layer indices (`3, -1`), as `HeadsConfig.taps` takes them."""
    taps: list[float | int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            tap: float | int = float(part) if re.search(r"[.eE]", part) else int(part)
        except ValueError:
            raise ValueError(f"{part!r} is neither a fraction like 0.5 nor a layer index") from None
        if isinstance(tap, float) and not 0 < tap <= 1:
            raise ValueError(f"fraction {part} outside (0, 1]")
        taps.append(tap)
    if not taps:
        raise ValueError("at least one tap is needed, e.g. 0.5, 1.0")
    return taps


def field_problem(name: str, form: dict[str, Any]) -> str | None:
    """What is wrong with one field of the form on its own (None: nothing); the rules of the
    config as a whole are `load_train_config`'s (see `validate_form`)."""
    value = form[name]
    text = value.strip() if isinstance(value, str) else value
    root = Path(form["models_root"].strip() or ".")
    if name in _INT_FIELDS:
        if not re.fullmatch(r"[+-]?\d+", text):
            return f"expected a whole number, got {text!r}"
    elif name == "train_data":
        if not text:
            return "no training data given"
        if not Path(text).is_file():
            return f"no such file: {text} (Generate writes task-suite records there)"
    elif name == "models_root":
        if text and not Path(text).is_dir():
            return f"no such directory: {text}"
    elif name == "base":
        if text and not (root / text).is_dir():
            return f"no such directory: {root / text}"
        if not text and form["adapter"].strip():
            return "an adapter needs its base model"
    elif name == "adapter":
        where = root / text / form["subfolder"].strip()
        if text and not where.is_dir():
            return f"no such directory: {where}"
    elif name == "subfolder":
        if text and not form["adapter"].strip():
            return "a subfolder is one of the adapter's"
    elif name == "taps":
        try:
            parse_taps(text)
        except ValueError as exc:
            return str(exc)
    elif name == "output_dir":
        if not text:
            return "an output directory is needed"
        if Path(text).exists() and not Path(text).is_dir():
            return f"not a directory: {text}"
    elif name == "mode":
        if text not in mode_choices():
            return f"{text!r}: self-play and hybrid need the self-play trainer"
    elif name == "aggregator" and text not in AGGREGATORS:
        return f"unknown aggregator {text!r} (the heads have {', '.join(AGGREGATORS)})"
    return None


def _absolute(text: str) -> str:
    return str(Path(text).expanduser().resolve())


def config_from_form(base: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The run's train config: `base` (the YAML the form was prefilled from: phases, learning
    rates, loss weights… stay as they are) with the form's fields in place of its own. Paths
    become absolute, so the config written into the run's directory holds wherever it is read
    from; a number field that does not parse stays a string, for the trainer to report."""
    raw = copy.deepcopy(base)
    model = {
        key: form[key].strip()
        for key in ("base", "adapter", "subfolder")
        if form[key].strip() and form["base"].strip()
    }
    if model:
        model["models_root"] = _absolute(form["models_root"].strip() or ".")
    raw["model"] = model
    raw["train_data"] = _absolute(form["train_data"].strip()) if form["train_data"].strip() else ""
    if isinstance(raw.get("eval_data"), str):
        raw["eval_data"] = _absolute(raw["eval_data"])
    raw["output_dir"] = _absolute(form["output_dir"].strip() or ".")
    for key in _INT_FIELDS:
        text = form[key].strip()
        raw[key] = int(text) if re.fullmatch(r"[+-]?\d+", text) else text
    introspection = raw.setdefault("introspection", {}) or {}
    raw["introspection"] = introspection
    heads = introspection.setdefault("heads", {}) or {}
    introspection["heads"] = heads
    try:
        heads["taps"] = parse_taps(form["taps"])
    except ValueError:
        heads["taps"] = []  # reported by field_problem; HeadsConfig rejects an empty list too
    heads["per_layer"] = bool(form["per_layer"])
    if trainer_has_mode():
        raw["mode"] = form["mode"]
    else:
        raw.pop("mode", None)
    return raw


def field_of_problem(message: str) -> str:
    """The form field a `load_train_config` message (`key.sub: what`) is about, else GENERAL."""
    key = message.split(":", 1)[0].strip()
    return _FIELD_OF_KEY.get(re.split(r"[.\[]", key, maxsplit=1)[0], GENERAL)


#: what Generate writes where the data file is missing: `tina data --task all --n 40`
GENERATED_PER_TASK = 40


def generate_data(path: str | Path) -> int:
    """Concise task-suite records, `GENERATED_PER_TASK` of every task, written atomically to
    `path` (what `tina data --task all --n 40 --out PATH` writes); the count."""
    from tina.data.contract import write_contract_jsonl
    from tina.data.tasks import ALL_TASKS, generate_records

    records = [r for task in ALL_TASKS for r in generate_records(task, GENERATED_PER_TASK, seed=0)]
    return write_contract_jsonl(path, records)


def validate_form(base: dict[str, Any], form: dict[str, Any]) -> dict[str, str]:
    """Every problem of the form, by field (GENERAL for the rest of the config): each field's
    own check, then the whole config through `load_train_config`. Empty: ready to run."""
    found: dict[str, list[str]] = {}
    for name in FIELDS:
        problem = field_problem(name, form)
        if problem:
            found.setdefault(name, []).append(problem)
    with tempfile.TemporaryDirectory(prefix="tina-tui-") as tmp:
        path = Path(tmp) / "train_config.yaml"
        path.write_text(yaml.safe_dump(config_from_form(base, form), sort_keys=False))
        try:
            load_train_config(path)
        except TrainConfigError as exc:
            for found_problem in exc.problems:
                message = f"{found_problem.field}: {found_problem.message}"
                name = field_of_problem(message)
                if name not in found or name == GENERAL:  # a field's own check says it better
                    found.setdefault(name, []).append(message)
    return {name: "\n".join(messages) for name, messages in found.items()}


class LineTail:
    """The complete lines appended to a file since the last `read` (a line still being written
    waits for its newline); a file that shrank is read again from its start."""

    def __init__(self, path: str | Path, from_end: bool = False) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if from_end and self.path.is_file() else 0
        self._partial = b""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(0, 2)
                if handle.tell() < self.offset:
                    self.offset, self._partial = 0, b""
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]


def read_metrics(tail: LineTail) -> list[dict[str, Any]]:
    """The new metrics records (JSON objects, one a line) of a `metrics.jsonl` tail."""
    records = []
    for line in tail.read():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # not a metrics line: nothing to show
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def eta_seconds(observations: Sequence[tuple[float, int]], total_steps: int) -> float | None:
    """Seconds left at the rate between the first and the last `(time, step)` observation;
    None while there is no rate yet."""
    if len(observations) < 2:
        return None
    (t0, s0), (t1, s1) = observations[0], observations[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    return max(0, total_steps - s1) * (t1 - t0) / (s1 - s0)


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `3m07s`, `12s`; `?` when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}"


#: the status panel's width in characters (an 80-column terminal leaves it this much)
STATUS_WIDTH = 36


def status_lines(
    record: dict[str, Any] | None, total_steps: int, eta: float | None, finished: bool = False
) -> list[str]:
    """The status panel's lines for the newest metrics record (no ETA once `finished`)."""
    if record is None:
        return ["waiting for the first metrics line…"]
    parts = [f"{k} {_number(record[k])}" for k in LOSS_NAMES if record.get(k) is not None]
    lines = [
        f"step {record['step']}/{total_steps}  phase {record.get('phase', '-')}"
        + ("" if finished else f"  ETA {format_duration(eta)}"),
        f"loss {_number(record.get('total'))}",
    ]
    for part in parts:  # two to a line where they fit the panel
        if len(lines) > 2 and len(lines[-1]) + 2 + len(part) <= STATUS_WIDTH:
            lines[-1] += "  " + part
        else:
            lines.append("  " + part)
    lines += [
        f"think tokens {_number(record.get('think_tokens_used'), 1)}  "
        f"budget error {_number(record.get('budget_error'), 1)}",
        f"plan accuracy {_number(record.get('plan_accuracy'), 2)}  "
        f"tokens/s {_number(record.get('tokens_per_s'), 0)}",
    ]
    return lines
