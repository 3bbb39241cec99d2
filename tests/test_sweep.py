"""Budget sweeps through the engine: items, budgets, files, CSV errors, `tina sweep`."""

from __future__ import annotations

import json
import math

import pytest

from tina.cli import main
from tina.core.introspection import attach_introspection
from tina.data.contract import ContractError, write_contract_jsonl
from tina.data.tasks import generate_records
from tina.engine.types import EngineConfig
from tina.eval.sweep import (
    AUTO,
    SWEEP_COLUMNS,
    EvalDataError,
    SweepError,
    load_eval_items,
    parse_budgets,
    read_items_csv,
    read_sweep_csv,
    run_budget_sweep,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(task="add", n=4, difficulties=(1,), seed=3):
    return generate_records(task, n, seed=seed, difficulties=list(difficulties))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0,16,32,auto", [0, 16, 32, AUTO]), (" 8 , auto ", [8, AUTO]), ([4, "auto"], [4, AUTO])],
    ids=["string", "spaces", "sequence"],
)
def test_parse_budgets(spec, expected):
    assert parse_budgets(spec) == expected


@pytest.mark.parametrize("spec", ["-1", "x", "16,16", "", "1.5", [2.5]])
def test_parse_budgets_rejects(spec):
    with pytest.raises(ValueError):
        parse_budgets(spec)


def test_items_take_question_gold_and_labels(tmp_path):
    path = tmp_path / "dev.jsonl"
    records = _records(n=2, difficulties=(2,))
    write_contract_jsonl(path, records)
    items = load_eval_items(path)
    assert [it.prompt for it in items] == [r["meta"]["question"] for r in records]
    assert not items[0].rendered and items[0].gold == records[0]["meta"]["answer"]
    assert items[0].labels == {"task": "add", "difficulty_bin": 2, "style": "concise"}
    assert items[0].plan_gold == "compute" and items[0].target_budget == records[0]["target_budget"]


def test_record_without_question_uses_its_prompt(tmp_path):
    path = tmp_path / "plain.jsonl"
    write_contract_jsonl(path, [{"text": "Say hi\n<think>ok</think><answer>hi</answer>"}])
    (item,) = load_eval_items(path)
    # the question before <think>, for the model's own chat template to render
    assert not item.rendered and item.prompt == "Say hi" and item.gold == "hi"


def test_split_field_filters_records(tmp_path):
    path = tmp_path / "mixed.jsonl"
    records = _records(n=3)
    records[0]["split"], records[1]["split"], records[2]["split"] = "dev", "train", "dev"
    write_contract_jsonl(path, records)
    assert len(load_eval_items(path, "dev")) == 2
    with pytest.raises(EvalDataError, match="no records of split 'test'"):
        load_eval_items(path, "test")


def test_a_record_whose_answer_does_not_score_names_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    records = _records(n=3)
    records[1]["meta"]["answer"] = "999"  # the text's answer no longer matches
    write_contract_jsonl(path, records)
    with pytest.raises(EvalDataError, match=rf"{path}:2: eval: .*does not score"):
        load_eval_items(path)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    write_contract_jsonl(path, _records(n=1))
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ContractError, match=rf"{path}:2: bad_json"):
        load_eval_items(path)


def test_sweep_writes_one_row_per_budget_with_exact_budgets(tiny_fresh, tmp_path):
    model, tokenizer = tiny_fresh
    attach_introspection(model)
    records = _records(n=3, difficulties=(1, 2))
    result = run_budget_sweep(
        tokenizer,
        model,
        records,
        budgets=[0, 3, AUTO],
        split="dev",
        out_dir=tmp_path,
        config=EngineConfig(budget_cap=6, max_answer_tokens=3),  # the random model never stops
        batch_size=2,
    )
    assert [r["budget"] for r in result.rows] == ["0", "3", "auto"]
    assert len(result.items) == 9
    for it in result.items:
        if it["budget"] != AUTO:  # fixed budgets: at most the soft cap (50% slack)
            assert it["think_tokens"] <= int(int(it["budget"]) * 1.5) and it[
                "applied_budget"
            ] == int(it["budget"])
        assert 0.0 <= it["confidence"] <= 1.0 and it["predicted_budget"] is not None
        assert it["leaked"] is False
    assert result.rows[0]["avg_think_tokens"] == 0.0
    assert all(r["leakage_rate"] == 0.0 and r["n"] == 3 for r in result.rows)
    assert set(result.slices["3"]["difficulty_bin"]) == {"1", "2"}
    # the files: CSV read back equals the rows; JSON is strict; the items CSV has every item
    back = read_sweep_csv(tmp_path / "budget_sweep_dev.csv")
    for got, want in zip(back, result.rows, strict=True):
        for key in SWEEP_COLUMNS[1:]:
            assert (math.isnan(got[key]) and math.isnan(want[key])) or got[key] == pytest.approx(
                want[key], rel=1e-5
            )
    summary = json.loads((tmp_path / "budget_sweep_dev.json").read_text())
    assert summary["split"] == "dev" and [r["budget"] for r in summary["rows"]] == [
        "0",
        "3",
        "auto",
    ]
    assert "difficulty_bin" in summary["slices"]["auto"]
    assert len(read_items_csv(tmp_path / "budget_sweep_dev_items.csv")) == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_quality_rises_with_budget_on_the_embedded_model(embedded, tmp_path):
    model, tokenizer = embedded
    records = _records(n=2, difficulties=(2,), seed=11)  # 2-digit sums need ~25 think tokens
    result = run_budget_sweep(tokenizer, model, records, budgets=[0, 128], out_dir=None)
    em = {r["budget"]: r["exact_match"] for r in result.rows}
    assert em["0"] == 0.0 and em["128"] == 1.0
    assert math.isnan(result.rows[0]["ece"])  # no heads: no confidence to calibrate


def test_auto_without_heads_is_an_error(tiny_random_model):
    model, tokenizer = tiny_random_model
    with pytest.raises(SweepError, match="'auto' needs metacognitive heads"):
        run_budget_sweep(tokenizer, model, _records(n=1), budgets=[0, AUTO], out_dir=None)


_HEADER = ",".join(SWEEP_COLUMNS)
_ROW = "16,4,0.5,0.5,12,0,0.1,0.2,0.75,3,0.2,0.5"


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("", 1, "empty file"),
        ("budget,n\n16,4\n", 1, "missing columns"),
        (f"{_HEADER}\n", 1, "no data rows"),
        (
            f"{_HEADER}\n{_ROW}\n{_ROW.replace('16,', '32,', 1).replace('0.1', 'abc')}\n",
            3,
            "ece: 'abc' is not a number",
        ),
        (f"{_HEADER}\n{_ROW.replace('0.75', '1.5')}\n", 2, "auroc: 1.5 outside"),
        (f"{_HEADER}\n{_ROW},7\n", 2, "13 fields, the header has 12"),
        (f"{_HEADER}\n{_ROW}\n\n{_ROW}\n", 4, "budget '16' appears twice"),
        (f"{_HEADER}\n{_ROW.replace('16,', 'big,', 1)}\n", 2, "budget: 'big'"),
        (f"{_HEADER}\n{_ROW.replace(',4,', ',4.5,', 1)}\n", 2, "n: '4.5' is not a count"),
        (f"{_HEADER}\n{_ROW.replace('0.1', 'nan')}\n", 2, "not a finite number"),
    ],
    ids=[
        "empty",
        "columns",
        "no-rows",
        "not-number",
        "range",
        "fields",
        "duplicate",
        "budget",
        "count",
        "nan",
    ],
)
def test_malformed_sweep_csv_names_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "budget_sweep_dev.csv"
    path.write_text(content)
    with pytest.raises(EvalDataError) as info:
        read_sweep_csv(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)


def test_sweep_csv_empty_cells_are_nan(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(f"{_HEADER}\nauto,4,0.5,0.5,12,0,,,,,,\n")
    (row,) = read_sweep_csv(path)
    assert row["budget"] == AUTO and row["n"] == 4 and math.isnan(row["auroc"])


def test_cli_sweep_runs_and_reports_bad_data(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    write_contract_jsonl(data, _records(n=2, difficulties=(1,)))
    out = tmp_path / "artifacts"
    args = ["sweep", "--data", str(data), "--budgets", "0,4", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| budget | n | exact_match" in printed and "| 4 | 2 |" in printed
    assert (out / "budget_sweep_dev.csv").is_file()
    alone = [*args[:4], "0,auto", *args[5:], "--no-introspection"]
    assert main(alone) == 2  # the model alone has no heads
    assert "'auto' needs metacognitive heads" in capsys.readouterr().err
    data.write_text(data.read_text() + '{"text": 1}\n')
    assert main(args) == 2
    assert f"{data}:3: schema" in capsys.readouterr().err
