"""Tests for tina.data.contract: every contract rule, strict and lenient reading, the atomic
writer."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tina.core.plans import PLAN_CLASS_MEANINGS, PLAN_CLASSES, plan_index
from tina.core.tags import REASONING_TAGS, strip_tags
from tina.data.contract import (
    CONTRACT_RULES,
    ContractError,
    ContractReadResult,
    contract_schema,
    read_contract_jsonl,
    validate_record,
    write_contract_jsonl,
)

GOOD: dict[str, Any] = {
    "text": "Add 3 and 4\n<think>3+4+0=7 r7;</think><answer>7</answer>",
    "task": "add",
    "plan_class": "compute",
    "target_budget": 9,
    "difficulty_bin": 1,
    "style": "concise",
}
GOOD_TEXT = GOOD["text"]


def good(**changes: Any) -> dict[str, Any]:
    record = dict(GOOD)
    record.update(changes)
    return record


def line(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def write_lines(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(chunk + end for chunk in lines))
    return path


SMALL_LIMIT = 300

# (id, bad line, rule, substring of the detail)
BAD_CASES: list[tuple[str, bytes, str, str]] = [
    ("not-utf8", b"\xff\xfe", "not_utf8", "invalid UTF-8 at byte 0"),
    (
        "not-utf8-inside-string",
        b'{"text": "caf\xe9 <think></think><answer></answer>"}',
        "not_utf8",
        "invalid UTF-8",
    ),
    ("over-long-line", line(good(meta={"pad": "x" * 1000})), "line_too_long", "longer than"),
    ("bad-json", b'{"text": "a",', "bad_json", "column"),
    ("json-nan", b'{"text": "a", "rubric_score": NaN}', "bad_json", "NaN"),
    ("json-duplicate-key", b'{"text": "a", "text": "b"}', "bad_json", "duplicate key 'text'"),
    ("json-array", line([GOOD]), "not_object", "got array"),
    ("json-string", line("just text"), "not_object", "got string"),
    ("missing-text", line({"task": "add"}), "schema", "'text' is a required property"),
    ("text-not-string", line(good(text=["a"])), "schema", "text: ['a'] is not of type 'string'"),
    ("zero-think", line(good(text="q <answer>7</answer>")), "tags", "one <think>, found 0"),
    (
        "two-think",
        line(good(text="q <think>a</think><think>b</think><answer>7</answer>")),
        "tags",
        "one <think>, found 2",
    ),
    ("zero-answer", line(good(text="q <think>a</think> 7")), "tags", "one <answer>, found 0"),
    (
        "two-answer",
        line(good(text="q <think>a</think><answer>7</answer><answer>8</answer>")),
        "tags",
        "one <answer>, found 2",
    ),
    (
        "tags-out-of-order",
        line(good(text="q <answer>7</answer><think>a</think>")),
        "tags",
        "out of order",
    ),
    (
        "unclosed-reflect",
        line(good(text="q <think>a<reflect>b</think><answer>7</answer>")),
        "tags",
        "<reflect> segment crosses </think>",
    ),
    (
        "plan-class-unknown",
        line(good(plan_class="foo")),
        "schema",
        "plan_class: 'foo' is not one of ['direct', 'compute', 'trace', 'search', 0, 1, 2, 3]",
    ),
    ("plan-class-index-4", line(good(plan_class=4)), "schema", "plan_class: 4 is not one of"),
    ("plan-class-bool", line(good(plan_class=True)), "schema", "plan_class: True is not one of"),
    ("target-budget-negative", line(good(target_budget=-1)), "schema", "target_budget: -1 is less"),
    (
        "target-budget-float-string",
        line(good(target_budget="9.5")),
        "schema",
        "target_budget: '9.5' is not of type 'integer'",
    ),
    (
        "target-budget-float",
        line(good(target_budget=9.5)),
        "schema",
        "target_budget: 9.5 is not of type 'integer'",
    ),
    (
        "correct-not-bool",
        line(good(correct="yes")),
        "schema",
        "correct: 'yes' is not of type 'boolean'",
    ),
    (
        "correct-int-not-bool",
        line(good(correct=1)),
        "schema",
        "correct: 1 is not of type 'boolean'",
    ),
    (
        "difficulty-bin-negative",
        line(good(difficulty_bin=-2)),
        "schema",
        "difficulty_bin: -2 is less than the minimum of 0",
    ),
    (
        "rubric-score-above-1",
        line(good(rubric_score=1.5)),
        "schema",
        "rubric_score: 1.5 is greater than the maximum of 1",
    ),
    (
        "premise-spans-not-pairs",
        line(good(premise_spans=[1, 2])),
        "schema",
        "premise_spans[0]: 1 is not of type 'array'",
    ),
    (
        "premise-spans-short-pair",
        line(good(premise_spans=[[0, 3], [4]])),
        "schema",
        "premise_spans[1]: [4] is too short",
    ),
    (
        "premise-spans-triple",
        line(good(premise_spans=[[0, 3, 5]])),
        "schema",
        "premise_spans[0]: Expected at most 2 items",
    ),
    (
        "premise-spans-not-ints",
        line(good(premise_spans=[[0, "3"]])),
        "schema",
        "premise_spans[0][1]: '3' is not of type 'integer'",
    ),
    (
        "strategy-tags-not-strings",
        line(good(strategy_tags=["a", 2])),
        "schema",
        "strategy_tags[1]: 2 is not of type 'string'",
    ),
    ("meta-not-object", line(good(meta=[1])), "schema", "meta: [1] is not of type 'object'"),
]


# --- plan classes and schema --------------------------------------------------------------------


def test_plan_classes_and_meanings() -> None:
    assert PLAN_CLASSES == ("direct", "compute", "trace", "search")
    assert tuple(PLAN_CLASS_MEANINGS) == PLAN_CLASSES
    assert "budget 0" in PLAN_CLASS_MEANINGS["direct"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [("direct", 0), ("compute", 1), ("trace", 2), ("search", 3), (0, 0), (3, 3), (2.0, 2)],
)
def test_plan_index(given: Any, expected: int) -> None:
    assert plan_index(given) == expected


@pytest.mark.parametrize(
    ("given", "error"),
    [("foo", ValueError), ("Compute", ValueError), (4, ValueError), (-1, ValueError),
     (1.5, ValueError), (True, TypeError), (None, TypeError), ([1], TypeError)],
    ids=["unknown", "case", "too-big", "negative", "fraction", "bool", "none", "list"],
)  # fmt: skip
def test_plan_index_rejects(given: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        plan_index(given)


def test_schema_ships_as_valid_draft_2020_12() -> None:
    schema = contract_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["text"]
    assert schema["additionalProperties"] is True
    enum = schema["properties"]["plan_class"]["enum"]
    assert enum == [*PLAN_CLASSES, *range(len(PLAN_CLASSES))]


def test_rule_names_are_stable() -> None:
    assert list(CONTRACT_RULES) == [
        "not_utf8",
        "line_too_long",
        "bad_json",
        "not_object",
        "schema",
        "tags",
    ]


# --- validate_record ----------------------------------------------------------------------------


def test_validate_record_good() -> None:
    assert validate_record(GOOD) == []
    assert validate_record({"text": GOOD_TEXT}) == []
    assert validate_record(good(plan_class=0, my_own_field={"anything": [1, None]})) == []


def test_validate_record_all_labels_typed() -> None:
    record = good(
        id="r1",
        correct=True,
        think_tokens_used=12,
        style_tag="terse",
        strategy_tags=["carry"],
        cog_ops=["add"],
        rubric_score=0.5,
        evidence_keys=["k"],
        invariants=["sum"],
        premise_spans=[[0, 3]],
        analogy_sets=[["a", "b"], 3],
        elimination_grid=[[0, 1], []],
        rewrite_pair_id=7,
        reflection_summary="ok",
        program_solution="print(7)",
        constraint_vec=[1, 0.5],
        step_types=["compute"],
        subgoal_id="s1",
        meta={"program": "f = lambda x: x", "inputs": [1]},
    )
    assert validate_record(record) == []


def test_validate_record_reports_every_problem() -> None:
    record = {"text": "no tags", "plan_class": "foo", "target_budget": -1}
    problems = validate_record(record)
    assert problems == [
        "schema: plan_class: 'foo' is not one of "
        "['direct', 'compute', 'trace', 'search', 0, 1, 2, 3]",
        "schema: target_budget: -1 is less than the minimum of 0",
        "tags: expected exactly one <think>, found 0",
    ]


def test_validate_record_not_a_dict() -> None:
    assert validate_record([GOOD]) == ["not_object: expected a JSON object, got array"]  # type: ignore[arg-type]


def test_validate_record_shortens_huge_messages() -> None:
    (problem,) = validate_record({"text": ["x" * 10_000]})
    assert problem.startswith("schema: text: ['xxx")
    assert len(problem) < 400


# --- strict reading -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "rule", "detail"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_strict_rejects_bad_record(tmp_path: Path, bad: bytes, rule: str, detail: str) -> None:
    path = write_lines(tmp_path / "data.jsonl", [line(GOOD), b"", bad, line(GOOD)])
    with pytest.raises(ContractError) as info:
        read_contract_jsonl(path, max_line_bytes=SMALL_LIMIT)
    error = info.value
    assert (error.path, error.line, error.rule) == (str(path), 3, rule)
    assert detail in error.detail
    assert str(error) == f"{path}:3: {rule}: {error.detail}"


def test_strict_reads_good_file(tmp_path: Path) -> None:
    records = [good(id=str(i)) for i in range(3)]
    path = write_lines(tmp_path / "data.jsonl", [line(r) for r in records])
    result = read_contract_jsonl(path)
    assert isinstance(result, ContractReadResult)
    assert result.records == records
    assert result.line_numbers == [1, 2, 3]
    assert result.skipped == {}
    assert result.errors == []


def test_blank_lines_skipped_silently(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "data.jsonl", [b"", line(GOOD), b"   ", b"\t", line(good(id="b")), b""]
    )
    result = read_contract_jsonl(path)
    assert [r.get("id") for r in result.records] == [None, "b"]
    assert result.line_numbers == [2, 5]
    assert result.skipped == {}


def test_crlf_and_missing_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(line(GOOD) + b"\r\n\r\n" + line(good(id="last")))
    result = read_contract_jsonl(path)
    assert result.line_numbers == [1, 3]
    assert result.records[1]["id"] == "last"


def test_line_length_limit_is_exact(tmp_path: Path) -> None:
    base = line(good(meta={"pad": ""}))
    fits = line(good(meta={"pad": "x" * (SMALL_LIMIT - len(base))}))
    over = line(good(meta={"pad": "x" * (SMALL_LIMIT - len(base) + 1)}))
    assert (len(fits), len(over)) == (SMALL_LIMIT, SMALL_LIMIT + 1)
    for end in (b"\n", b"\r\n", b""):
        path = tmp_path / "one.jsonl"
        path.write_bytes(fits + end)
        assert len(read_contract_jsonl(path, max_line_bytes=SMALL_LIMIT).records) == 1
        path.write_bytes(over + end)
        with pytest.raises(ContractError, match=f"is {SMALL_LIMIT + 1} bytes"):
            read_contract_jsonl(path, max_line_bytes=SMALL_LIMIT)


def test_over_long_line_is_measured_not_parsed(tmp_path: Path) -> None:
    # Invalid JSON far longer than the limit: reported as too long (never parsed), and the
    # reader resumes at the next line.
    huge = b"{" + b"x" * 200_000
    path = write_lines(tmp_path / "data.jsonl", [huge, line(GOOD)])
    result = read_contract_jsonl(path, strict=False, max_line_bytes=1000)
    assert result.skipped == {"line_too_long": 1}
    assert result.errors[0].detail == "line is 200001 bytes, longer than max_line_bytes=1000"
    assert result.line_numbers == [2]


def test_default_line_limit(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.jsonl", [line(good(meta={"pad": "x" * 1_000_001}))])
    with pytest.raises(ContractError) as info:
        read_contract_jsonl(path)
    assert info.value.rule == "line_too_long"
    assert "max_line_bytes=1000000" in info.value.detail


def test_contract_error_pickles() -> None:
    error = ContractError("f.jsonl", 3, "tags", "bad")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.rule, copy.detail, str(copy)) == (
        "f.jsonl",
        3,
        "tags",
        "bad",
        "f.jsonl:3: tags: bad",
    )


# --- lenient reading ----------------------------------------------------------------------------


def test_lenient_counts_per_rule_and_keeps_good_records_in_order(tmp_path: Path) -> None:
    lines: list[bytes] = []
    expected_lines: list[int] = []
    expected_records: list[dict[str, Any]] = []
    expected_errors: list[tuple[int, str]] = []
    for index, (_, bad, rule, _) in enumerate(BAD_CASES):
        record = good(id=f"good-{index}")
        lines.append(line(record))
        expected_lines.append(len(lines))
        expected_records.append(record)
        lines.append(bad)
        expected_errors.append((len(lines), rule))
        lines.append(b"")
    path = write_lines(tmp_path / "data.jsonl", lines)

    result = read_contract_jsonl(path, strict=False, max_line_bytes=SMALL_LIMIT)

    assert result.records == expected_records
    assert result.line_numbers == expected_lines
    assert [(e.line, e.rule) for e in result.errors] == expected_errors
    counts: dict[str, int] = {}
    for _, rule in expected_errors:
        counts[rule] = counts.get(rule, 0) + 1
    assert result.skipped == counts
    assert set(result.skipped) == set(CONTRACT_RULES)


def test_records_kept_as_loaded(tmp_path: Path) -> None:
    record = good(extra={"nested": [1, 2.5, None, True]}, plan_class=2, id="r")
    path = write_lines(tmp_path / "data.jsonl", [line(record)])
    (loaded,) = read_contract_jsonl(path).records
    assert loaded == record
    assert list(loaded) == list(record)


def test_rejects_bad_limit(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.jsonl", [line(GOOD)])
    with pytest.raises(ValueError, match="max_line_bytes"):
        read_contract_jsonl(path, max_line_bytes=0)


# --- writing ------------------------------------------------------------------------------------


def test_writer_round_trip(tmp_path: Path) -> None:
    records = [good(id="a"), good(id="b", text="é ✓\n<think>x</think><answer>y</answer>")]
    path = tmp_path / "out.jsonl"
    assert write_contract_jsonl(path, records) == 2
    assert read_contract_jsonl(path).records == records
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    assert "é ✓".encode() in raw  # written as UTF-8, not \u escapes
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_writer_accepts_iterators_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert write_contract_jsonl(path, (good(id=str(i)) for i in range(3))) == 3
    assert len(read_contract_jsonl(path).records) == 3
    assert write_contract_jsonl(path, []) == 0
    assert path.read_bytes() == b""


def test_writer_file_mode_follows_umask(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_contract_jsonl(path, [GOOD])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    ("bad", "rule"),
    [
        (good(plan_class="foo"), "schema"),
        (good(text="no tags"), "tags"),
        ({"task": "add"}, "schema"),
        ([GOOD], "not_object"),
        (good(rubric_score=float("nan")), "bad_json"),
        (good(meta={"x": object()}), "bad_json"),
        (good(id="\ud800"), "not_utf8"),
        (good(meta={"pad": "x" * SMALL_LIMIT}), "line_too_long"),
    ],
    ids=["schema", "tags", "missing-text", "not-object", "nan", "not-json", "surrogate", "long"],
)
def test_writer_refuses_bad_record_and_leaves_file(tmp_path: Path, bad: Any, rule: str) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"old contents\n")
    with pytest.raises(ValueError, match=rf"^record 2: {rule}: "):
        write_contract_jsonl(path, [GOOD, GOOD, bad, GOOD], max_line_bytes=SMALL_LIMIT)
    assert path.read_bytes() == b"old contents\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_writer_refusal_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    with pytest.raises(ValueError, match=r"^record 0: tags: "):
        write_contract_jsonl(path, [good(text="x")])
    assert os.listdir(tmp_path) == []


# --- property: write/read round trip ------------------------------------------------------------

_tag_free = st.text(max_size=40).filter(lambda s: strip_tags(s) == s)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_labels = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=10),
        "task": st.text(max_size=10),
        "style": st.sampled_from(["concise", "verbose"]),
        "difficulty_bin": st.integers(min_value=0),
        "plan_class": st.sampled_from(PLAN_CLASSES) | st.integers(0, len(PLAN_CLASSES) - 1),
        "target_budget": st.integers(min_value=0),
        "correct": st.booleans(),
        "think_tokens_used": st.integers(min_value=0, max_value=10**6),
        "strategy_tags": st.lists(st.text(max_size=8), max_size=3),
        "rubric_score": st.floats(min_value=0, max_value=1),
        "premise_spans": st.lists(
            st.lists(st.integers(min_value=0), min_size=2, max_size=2), max_size=3
        ),
        "elimination_grid": st.lists(st.lists(_json_values, max_size=3), max_size=3),
        "rewrite_pair_id": st.text(max_size=5) | st.integers(),
        "constraint_vec": st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4),
        "subgoal_id": st.text(max_size=5) | st.integers(),
        "meta": st.dictionaries(st.text(max_size=8), _json_values, max_size=4),
        "x_user_field": _json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=_tag_free, think=_tag_free, answer=_tag_free.filter(str.strip), labels=_labels)
def test_round_trip_property(prompt: str, think: str, answer: str, labels: dict[str, Any]) -> None:
    text = f"{prompt}\n<think>{think}</think><answer>{answer}</answer>"
    record = {"text": text, **labels}
    assert validate_record(record) == []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.jsonl"
        write_contract_jsonl(path, [record, record])
        result = read_contract_jsonl(path)
    assert result.records == [record, record]
    assert result.line_numbers == [1, 2]
    assert all(tag not in prompt + think + answer for tag in REASONING_TAGS)
