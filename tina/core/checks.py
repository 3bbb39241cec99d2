"""Config checks and strict JSON, in one place for every file Tina reads.

What it does: `Problem` (`file: field: message`) and `ConfigError` (every problem at once); the
value checks the config dataclasses share (`int_problem`, `number_problem`, …: a bool is never
a number); the schemas shipped in `tina/schemas/` (`schema_validator`, `schema_problems`, the
one formatting of a JSON-schema error); strict JSON in (`parse_strict_json`, `read_json_file`: no
NaN/Infinity, no duplicate keys) and out (`json_safe`: non-finite floats as null); `parse_bool`
for true/false flags.

What it does not do: know any particular config (each dataclass lists its own fields).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

#: The field name used for problems of a whole file (unreadable, not JSON).
FILE_FIELD = "(file)"
#: The field name used for problems of the top-level JSON value.
ROOT_FIELD = "(root)"
MAX_MESSAGE_CHARS = 300  #: longer messages (a schema error quoting a big value) are cut

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Problem:
    """One problem found in a config: `str(problem)` is `"file: field: message"`."""

    file: str  #: the file (as given or resolved), or the dataclass name for in-memory values
    field: str  #: dotted field path (`limits.max_queue`, `stop_sequences[1]`), or `(file)`
    message: str  #: what is wrong

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


class ConfigError(ValueError):
    """A config with one or more problems; `problems` holds them all, `str()` lists them, one
    `file: field: message` per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def int_problem(value: Any, low: int, high: int | None = None) -> str | None:
    if not is_int(value):
        return f"expected an integer, got {value!r}"
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        return f"must be {bound}, got {value}"
    return None


def number_problem(value: Any, low: float, high: float | None = None) -> str | None:
    if not is_number(value) or value != value:
        return f"expected a number, got {value!r}"
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        return f"must be {bound}, got {value}"
    return None


def str_problem(value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        return f"expected a non-empty string{' or null' if optional else ''}, got {value!r}"
    return None


def bool_problem(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {value!r}"


def raise_if(owner: str, problems: list[tuple[str, str | None]]) -> None:
    found = [Problem(owner, name, message) for name, message in problems if message is not None]
    if found:
        raise ConfigError(found)


@cache
def _schema_text(name: str) -> str:
    return (resources.files("tina") / "schemas" / name).read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped in `tina/schemas/` by file name (a fresh copy on each call)."""
    schema: dict[str, Any] = json.loads(_schema_text(name))
    return schema


@cache
def schema_validator(name: str) -> Draft202012Validator:
    """A draft 2020-12 validator for the shipped schema `name` (checked and built once)."""
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 1] + "…"


def format_field(parts: Any) -> str:
    """`["limits", "max_queue"]` → `limits.max_queue`; `["stops", 1]` → `stops[1]`;
    nothing → `(root)`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or ROOT_FIELD


def schema_problems(file: str, instance: Any, schema_name: str) -> list[Problem]:
    """Every violation of the shipped schema `schema_name` by `instance`, by field: an unknown
    key is reported at its own field, a missing `contains` constant by name."""
    validator = schema_validator(schema_name)
    problems: list[Problem] = []
    for error in validator.iter_errors(instance):
        parts = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for key in sorted(k for k in error.instance if k not in known):
                problems.append(Problem(file, format_field([*parts, key]), "unknown key"))
            continue
        contains = error.validator_value if error.validator == "contains" else None
        if isinstance(contains, dict) and "const" in contains:
            message = f"must include {contains['const']!r}"
        else:
            message = shorten(error.message)
        problems.append(Problem(file, format_field(parts), message))
    return sorted(problems, key=lambda p: (p.field, p.message))


def read_json_file(path: str | Path) -> tuple[Any, Problem | None]:
    """(value, None) from a strict JSON file (no NaN/Infinity, no duplicate keys), or
    (None, problem) naming the file, with field `(file)`, when it cannot be read or parsed."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, Problem(file, FILE_FIELD, "file not found")
    except (OSError, UnicodeDecodeError) as exc:
        return None, Problem(file, FILE_FIELD, f"cannot read: {exc}")
    try:
        value = parse_strict_json(text)
    except json.JSONDecodeError as exc:
        return None, Problem(
            file, FILE_FIELD, f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    except (ValueError, RecursionError) as exc:
        return None, Problem(file, FILE_FIELD, f"invalid JSON: {shorten(str(exc))}")
    return value, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_strict_json(text: str) -> Any:
    """Strict JSON, for every file Tina reads: no NaN/Infinity, no duplicate keys (a ValueError
    says which; malformed JSON is a json.JSONDecodeError, itself a ValueError)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)


def parse_bool(text: str) -> bool:
    """`true/false` (also `1/0`, `yes/no`, `on/off`, any case) as a bool, for flags such as
    `--visible-cot false`; anything else is an argparse error."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (at any depth) as None and dict keys as strings:
    JSON has no NaN or Infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
