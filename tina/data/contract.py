"""The data contract: what one record of a Tina JSONL data file must look like, checked per line.

What it does: ships the JSON Schema of one record (`contract_schema`,
`tina/schemas/contract_record.schema.json`: `text` required, known labels typed, other fields
carried unchanged); checks each line against `CONTRACT_RULES` in order (UTF-8, `max_line_bytes`,
JSON, an object, the schema, the tag rule of `tina.core.tags.reasoning_structure_error`);
reads a file strictly (`read_contract_jsonl`: the first bad record raises a `ContractError`
naming path, line and rule) or leniently (bad records skipped and counted per rule); checks one
record (`validate_record`) and writes records atomically (`write_contract_jsonl`).

What it does not do: tokenize, mask, budget or batch records (see `tina.core.tags` and the
training modules), change the records it loads, or check task-specific content such as whether
an answer is correct or whether `meta` holds a program.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tina.core.atomic import atomic_write
from tina.core.checks import ROOT_FIELD, load_schema, parse_strict_json, schema_problems, shorten
from tina.core.tags import reasoning_structure_error

#: Default limit on one line's length in bytes (line terminator not counted).
DEFAULT_MAX_LINE_BYTES = 1_000_000

SCHEMA_RESOURCE = "contract_record.schema.json"

# Rule names: short and stable (counted in `ContractReadResult.skipped`, named in errors).
RULE_NOT_UTF8 = "not_utf8"
RULE_LINE_TOO_LONG = "line_too_long"
RULE_BAD_JSON = "bad_json"
RULE_NOT_OBJECT = "not_object"
RULE_SCHEMA = "schema"
RULE_TAGS = "tags"

#: Every rule, in the order the reader checks them; a record is reported under the first it breaks.
CONTRACT_RULES: dict[str, str] = {
    RULE_NOT_UTF8: "the line is valid UTF-8",
    RULE_LINE_TOO_LONG: "the line is not longer than max_line_bytes",
    RULE_BAD_JSON: "the line is valid JSON (no NaN/Infinity, no duplicate keys)",
    RULE_NOT_OBJECT: "the JSON value is an object",
    RULE_SCHEMA: "the object satisfies contract_record.schema.json",
    RULE_TAGS: "text satisfies tina.core.tags.reasoning_structure_error",
}

_DRAIN_CHUNK = 1 << 16


def contract_schema() -> dict[str, Any]:
    """The record schema, `tina/schemas/contract_record.schema.json` (a fresh copy)."""
    return load_schema(SCHEMA_RESOURCE)


class ContractError(ValueError):
    """A record that breaks a contract rule.

    Attributes: `path` (the file, as given), `line` (1-based physical line number), `rule` (a
    key of `CONTRACT_RULES`) and `detail` (what is wrong). `str(error)` is
    `"{path}:{line}: {rule}: {detail}"`.
    """

    def __init__(self, path: str, line: int, rule: str, detail: str) -> None:
        self.path = path
        self.line = line
        self.rule = rule
        self.detail = detail
        super().__init__(f"{path}:{line}: {rule}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.rule, self.detail))


@dataclass
class ContractReadResult:
    """What `read_contract_jsonl` found.

    Fields:
    - `records`: the good records, in file order, exactly as loaded (nothing added);
    - `line_numbers`: the 1-based line number of each record (same length as `records`);
    - `skipped`: number of bad records per rule name (only rules that occurred; lenient mode);
    - `errors`: one `ContractError` per skipped record, in file order (lenient mode).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[ContractError] = field(default_factory=list)


# --- checks -------------------------------------------------------------------------------------


def _schema_problems(record: dict[str, Any]) -> list[str]:
    """Schema violations of `record`, each `"field.path: message"` (no prefix at the root)."""
    return [
        p.message if p.field == ROOT_FIELD else f"{p.field}: {p.message}"
        for p in schema_problems("record", record, SCHEMA_RESOURCE)
    ]


def _record_problems(record: Any) -> list[tuple[str, str]]:
    """All (rule, detail) problems of an in-memory record, in rule order."""
    if not isinstance(record, dict):
        return [(RULE_NOT_OBJECT, f"expected a JSON object, got {_json_type(record)}")]
    problems = [(RULE_SCHEMA, p) for p in _schema_problems(record)]
    text = record.get("text")
    if isinstance(text, str):
        tag_problem = reasoning_structure_error(text)
        if tag_problem is not None:
            problems.append((RULE_TAGS, tag_problem))
    return problems


def validate_record(record: dict[str, Any]) -> list[str]:
    """Every problem of one record, each `"{rule}: {detail}"`; empty when it keeps the contract.

    Checks the object rule, the schema (all violations, by field path) and the tag rule (when
    `text` is a string). Line-level rules (UTF-8, length, JSON syntax) belong to files and are
    checked by the reader and writer.
    """
    return [f"{rule}: {detail}" for rule, detail in _record_problems(record)]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_line(content: bytes) -> tuple[dict[str, Any] | None, str, str]:
    """Check one non-over-long line; returns (record, "", "") or (None, rule, detail)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, RULE_NOT_UTF8, f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
    try:
        value = parse_strict_json(text)
    except json.JSONDecodeError as exc:
        return None, RULE_BAD_JSON, f"{exc.msg} at column {exc.colno}"
    except (ValueError, RecursionError) as exc:
        return None, RULE_BAD_JSON, shorten(str(exc) or type(exc).__name__)
    problems = _record_problems(value)
    if problems:
        rule = problems[0][0]
        detail = "; ".join(d for r, d in problems if r == rule)
        return None, rule, detail
    return value, "", ""


# --- reading ------------------------------------------------------------------------------------


def _iter_lines(handle: Any, max_line_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield (line number, content without terminator, length in bytes) per physical line.

    Reads at most `max_line_bytes + 2` bytes of a line at once; the rest of an over-long line is
    read in chunks and dropped (content None), so such a line is never held in memory whole.
    """
    number = 0
    while True:
        chunk: bytes = handle.readline(max_line_bytes + 2)
        if not chunk:
            return
        number += 1
        if chunk.endswith(b"\n"):
            content = chunk[:-2] if chunk.endswith(b"\r\n") else chunk[:-1]
            length = len(content)
            yield number, (content if length <= max_line_bytes else None), length
            continue
        length = len(chunk)
        if length <= max_line_bytes:  # last line, no terminator
            yield number, chunk, length
            continue
        last = chunk[-1:]
        while True:  # over-long: drain the rest of the line
            more: bytes = handle.readline(_DRAIN_CHUNK)
            if not more:
                break
            length += len(more)
            if more.endswith(b"\n"):
                crlf = more.endswith(b"\r\n") or (more == b"\n" and last == b"\r")
                length -= 2 if crlf else 1
                break
            last = more[-1:]
        yield number, None, length


def read_contract_jsonl(
    path: str | os.PathLike[str],
    strict: bool = True,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ContractReadResult:
    """Read a contract JSONL file, checking every non-blank line against `CONTRACT_RULES`.

    The file is read in binary, line by line, so a non-UTF-8 or over-long line is caught on its
    own (an over-long line is measured, never parsed). Blank (whitespace-only) lines are skipped
    silently; line numbers are physical, 1-based. With `strict=True` the first bad record raises
    `ContractError` (`"{path}:{line}: {rule}: {detail}"`); with `strict=False` bad records are
    skipped, counted in `skipped` per rule and kept in `errors`.
    """
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    name = os.fspath(path)
    result = ContractReadResult()
    with open(path, "rb") as handle:
        for number, content, length in _iter_lines(handle, max_line_bytes):
            if content is None:
                rule = RULE_LINE_TOO_LONG
                detail = f"line is {length} bytes, longer than max_line_bytes={max_line_bytes}"
                record = None
            elif not content.strip():
                continue
            else:
                record, rule, detail = _check_line(content)
            if record is not None:
                result.records.append(record)
                result.line_numbers.append(number)
                continue
            error = ContractError(name, number, rule, detail)
            if strict:
                raise error
            result.skipped[rule] = result.skipped.get(rule, 0) + 1
            result.errors.append(error)
    return result


# --- writing ------------------------------------------------------------------------------------


def _encode_record(record: Any, max_line_bytes: int) -> bytes:
    """One record as a JSONL line (with "\\n"); ValueError `"{rule}: {detail}"` if it is bad."""
    problems = _record_problems(record)
    if problems:
        rule, detail = problems[0]
        raise ValueError(f"{rule}: {detail}")
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{RULE_BAD_JSON}: {exc}") from exc
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{RULE_NOT_UTF8}: {exc.reason} at character {exc.start}") from exc
    if len(data) > max_line_bytes:
        raise ValueError(
            f"{RULE_LINE_TOO_LONG}: line is {len(data)} bytes, "
            f"longer than max_line_bytes={max_line_bytes}"
        )
    return data + b"\n"


def write_contract_jsonl(
    path: str | os.PathLike[str],
    records: Iterable[dict[str, Any]],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> int:
    """Write records as contract JSONL, atomically; returns the number written.

    Each record is checked (object, schema, tag rule, strict JSON, UTF-8, line length) before
    it is written; the first bad one is a ValueError `"record {index}: {rule}: {detail}"`
    (index 0-based) and nothing changes at `path`. The lines go through
    `tina.core.atomic.atomic_write` (a temp file beside `path`, fsynced, then renamed over it),
    so readers see either the old file or the complete new one.
    """
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        with open(tmp, "wb") as handle:
            for index, record in enumerate(records):
                try:
                    line = _encode_record(record, max_line_bytes)
                except ValueError as exc:
                    raise ValueError(f"record {index}: {exc}") from None
                handle.write(line)
                count += 1

    atomic_write(path, write)  # creates the parent directories (`--out data/train.jsonl`)
    return count
