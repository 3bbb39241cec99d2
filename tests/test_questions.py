"""Question files: every bad line named before a model loads, the scorers, the hash split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tina.data.questions import QuestionFileError, read_questions, split_of
from tina.data.tasks.scoring import choice_letter, parse_number, score_question, score_record
from tina.eval.sweep import item_from_record, score_item


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = [
    json.dumps({"question": "What is 45 + 7?", "answer": 52, "id": "q1", "split": "test"}),
    json.dumps({"question": "Capital of France?", "answer": "Paris", "task": "trivia"}),
    json.dumps(
        {
            "question": "Which is a prime?",
            "answer": "B",
            "scorer": "choice",
            "choices": ["4", "7", "9"],
            "difficulty": 1,
        }
    ),
    json.dumps(
        {
            "question": "Write f(x) returning the sorted unique items of x",
            "answer": "[1, 2]",
            "scorer": "code",
            "input": [2, 1, 2],
        }
    ),
]


def test_a_good_file_reads_into_scorable_records(tmp_path):
    path = write(tmp_path, [GOOD[0], "", *GOOD[1:]])
    records = read_questions(path)
    assert [r["id"] for r in records] == ["q1", f"{path}:3", f"{path}:4", f"{path}:5"]
    assert [r["meta"]["scorer"] for r in records] == ["numeric", "exact", "choice", "code"]
    assert records[0]["split"] == "test" and records[1]["task"] == "trivia"
    assert records[2]["difficulty_bin"] == 1
    for i, record in enumerate(records):
        item = item_from_record(record, (str(path), i + 1))  # its own answer scores as right
        assert item.prompt == record["meta"]["question"]
    assert score_item(item_from_record(records[0], (str(path), 1)), "$52.0") == 1.0
    assert score_record("Paris.", records[1]) == 1.0 and score_record("Lyon", records[1]) == 0.0
    assert score_record("(b)", records[2]) == 1.0 and score_record("7", records[2]) == 1.0
    assert score_record("A", records[2]) == 0.0
    assert score_record("sorted(set(x))", records[3]) == 1.0
    assert score_record("def f(x):\n    return list(x)", records[3]) == 0.0


@pytest.mark.parametrize(
    ("line", "field", "detail"),
    [
        ('{"question": "What is 2 + 2?"}', "answer", "required"),
        ('{"question": "2 + 2?", "answer": "4", "scorer": "fuzzy"}', "scorer", "fuzzy"),
        ('{"question": 7, "answer": "4"}', "question", "string"),
        ('{"question": "2 + 2?", "answer": "4", "difficulty": "hard"}', "difficulty", "integer"),
        ('{"question": "2 + 2?", "answer": 4,}', "(json)", "Expecting"),
        ('{"question": "2 + 2?", "answer": "4", "id": "q1"}', "id", "line 1"),
        ('{"question": "2 + 2?", "answer": "four", "scorer": "numeric"}', "answer", "number"),
        (
            '{"question": "Pick", "answer": "E", "scorer": "choice", "choices": ["a", "b"]}',
            "answer",
            "names no option",
        ),
        ('{"question": "Code", "answer": "1", "scorer": "code"}', "input", "input"),
        ('{"question": "2 + 2?", "answer": "4", "hint": "x"}', "hint", "unknown"),
        ('["not", "an", "object"]', "(root)", "object"),
        ('{"text": "no tags here", "id": "c1"}', "text", "tags"),
    ],
)
def test_each_bad_line_is_named_by_file_line_and_field(tmp_path, line, field, detail):
    first = json.dumps({"question": "1 + 1?", "answer": "2", "id": "q1"})
    path = write(tmp_path, [first, line])
    with pytest.raises(QuestionFileError) as caught:
        read_questions(path)
    error = caught.value
    assert (error.path, error.line, error.rule) == (str(path), 2, field)
    assert detail in error.detail
    assert str(error).startswith(f"{path}:2: {field}: ")


def test_an_empty_file_is_an_error(tmp_path):
    with pytest.raises(QuestionFileError, match="holds no question"):
        read_questions(write(tmp_path, ["", "  "]))


def test_contract_records_are_accepted_with_their_traces(tmp_path):
    record = {
        "id": "add-1",
        "text": "Add 2 and 3\n<think>2+3=5 r5;</think><answer>5</answer>",
        "task": "add",
        "meta": {"question": "Add 2 and 3", "answer": 5},
    }
    (read,) = read_questions(write(tmp_path, [json.dumps(record)]))
    assert read["text"] == record["text"] and read["split"] == split_of("Add 2 and 3")
    assert score_record("5", read) == 1.0


def test_the_hash_split_is_stable_and_near_its_fractions():
    questions = [f"What is {i} + {i * 7 % 13}?" for i in range(3000)]
    splits = [split_of(q) for q in questions]
    assert splits == [split_of(q) for q in questions]
    shares = {name: splits.count(name) / len(splits) for name in ("train", "dev", "test")}
    assert shares == pytest.approx({"train": 0.6, "dev": 0.2, "test": 0.2}, abs=0.03)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("82", 82),
        ("82.0", 82),
        ("1,000", 1000),
        ("$82", 82),
        ("The sum is 82.", 82),
        ("-3.5", -3.5),
        ("50%", 50),
        ("no number", None),
        ("2 then 3", 3),
    ],
)
def test_parse_number(text, value):
    parsed = parse_number(text)
    assert (parsed if parsed is None else float(parsed)) == value


def test_choice_letters_and_numeric_scoring():
    choices = ["red", "green", "blue"]
    assert [choice_letter(a, choices) for a in ("C", "(a)", "B)", "Answer: c", "Green", "D")] == [
        "C",
        "A",
        "B",
        "C",
        "B",
        None,
    ]
    meta = {"answer": "1000", "scorer": "numeric"}
    assert [score_question(a, meta) for a in ("1,000", "1000.0", "999", "")] == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="unknown scorer"):
        score_question("1", {"answer": "1", "scorer": "fuzzy"})


def test_tina_data_writes_a_question_file(tmp_path, capsys):
    from tina.cli import main

    out = tmp_path / "q.jsonl"
    assert (
        main(
            [
                "data",
                "--task",
                "add,mul",
                "--n",
                "4",
                "--difficulty",
                "2",
                "--questions",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = read_questions(out)
    assert len(records) == 8 and {r["meta"]["scorer"] for r in records} == {"numeric"}
    assert all(score_record(r["meta"]["answer"], r) == 1.0 for r in records)
    code = main(
        [
            "data",
            "--task",
            "code_induction",
            "--n",
            "2",
            "--questions",
            "--out",
            str(tmp_path / "bad.jsonl"),
        ]
    )
    assert code == 2 and "use contract records" in capsys.readouterr().err


def test_heldout_from_leaves_out_what_the_adapter_trained_on(tmp_path):
    from tina.cli import main
    from tina.train.sft import SFT_CONFIG_FILE, adapter_training_questions

    adapter = tmp_path / "Tina" / "checkpoint-1"
    adapter.mkdir(parents=True)
    (adapter / SFT_CONFIG_FILE).write_text(
        json.dumps({"tasks": {"add": {"n": 400, "difficulties": [2]}}, "data_seed": 0})
    )
    seen = adapter_training_questions(adapter)
    assert len(seen) > 300
    out = tmp_path / "q.jsonl"
    assert (
        main(
            [
                "data",
                "--task",
                "add",
                "--n",
                "40",
                "--difficulty",
                "2",
                "--seed",
                "0",
                "--questions",
                "--heldout-from",
                str(adapter),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    questions = [r["meta"]["question"] for r in read_questions(out)]
    assert len(questions) == len(set(questions)) == 40
    assert not set(questions) & seen
