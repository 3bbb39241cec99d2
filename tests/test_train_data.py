"""Training batches from contract JSONL: masks, labels, targets, paraphrase pairs."""

from __future__ import annotations

import json

import pytest

from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.train.data import TrainDataError, batch_order, collate, load_examples


@pytest.fixture
def tokenizer(embedded):
    return embedded[1]


def test_collate_masks_labels_and_targets(tokenizer, tmp_path):
    records = generate_records("add", 6, seed=3, difficulties=[1, 2, 3])
    records[0]["correct"] = True
    records[1]["correct"] = False
    records[2]["correct_after"] = False  # an exit record: only the confidence after thinking
    path = tmp_path / "d.jsonl"
    write_contract_jsonl(path, records)
    examples = load_examples(tokenizer, path)
    batch = collate(examples, tokenizer.pad_token_id)
    n, width = batch["input_ids"].shape
    assert n == 6 and width == max(len(e.input_ids) for e in examples)
    for i, (record, ex) in enumerate(zip(records, examples, strict=True)):
        ids = batch["input_ids"][i]
        think = tokenizer.decode(ids[batch["think_mask"][i] == 1])
        answer = tokenizer.decode(ids[batch["answer_mask"][i] == 1])
        prompt = tokenizer.decode(ids[batch["prompt_mask"][i] == 1])
        assert prompt == record["meta"]["question"] + "\n<think>"
        assert answer == record["meta"]["answer"]
        assert think == record["text"].split("<think>")[1].split("</think>")[0]
        labelled = batch["labels"][i] != -100
        assert labelled.sum() == len(ex.input_ids) - ex.prompt_length  # the completion only
        assert batch["plan_targets"][i] == (0 if record["plan_class"] == "direct" else 1)
        assert batch["budget_targets"][i] == record["think_tokens_used"]
    assert batch["correct"].tolist() == [1.0, 0.0, -1.0, -1.0, -1.0, -1.0]
    assert batch["correct_after"].tolist() == [1.0, 0.0, 0.0, -1.0, -1.0, -1.0]
    assert (
        batch["attention_mask"].sum(1) == batch["loss_mask"].sum(1) + batch["prompt_mask"].sum(1)
    ).all()


def test_paraphrase_pairs_share_a_batch(tokenizer, tmp_path):
    records = generate_records("sub", 20, seed=1, difficulties=[2])
    for k in range(0, 8, 2):
        records[k]["rewrite_pair_id"] = f"p{k}"
        records[k + 11]["rewrite_pair_id"] = f"p{k}"
    path = tmp_path / "d.jsonl"
    write_contract_jsonl(path, records)
    examples = load_examples(tokenizer, path)
    for seed in range(5):
        batches = batch_order(examples, batch_size=4, seed=seed)
        assert sorted(i for b in batches for i in b) == list(range(20))
        for indices in batches:
            batch = collate([examples[i] for i in indices], tokenizer.pad_token_id)
            for row, i in enumerate(indices):
                if examples[i].pair_id is not None:
                    partner = batch["pair_index"][row]
                    assert partner >= 0
                    assert examples[indices[partner]].pair_id == examples[i].pair_id
    assert batch_order(examples, 4, seed=7) == batch_order(examples, 4, seed=7)


def test_bad_record_names_file_and_line(tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    good = generate_records("add", 1, seed=0, difficulties=[2])[0]
    path.write_text(json.dumps(good) + "\n" + json.dumps({"text": "no tags"}) + "\n")
    with pytest.raises(TrainDataError, match=r"d\.jsonl:2: tags"):
        load_examples(tokenizer, path)
    assert len(load_examples(tokenizer, path, strict=False)) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "missing.jsonl: file not found", id="missing"),
        pytest.param("", "empty.jsonl: no records to train on", id="empty"),
        pytest.param("\n  \n", "empty.jsonl: no records to train on", id="blank-lines"),
    ],
)
def test_a_file_with_nothing_to_train_on_is_one_error_naming_it(
    tokenizer, tmp_path, content, message
):
    path = tmp_path / ("missing.jsonl" if content is None else "empty.jsonl")
    if content is not None:
        path.write_text(content)
    with pytest.raises(TrainDataError) as info:
        load_examples(tokenizer, path)
    assert str(info.value) == f"{tmp_path}/{message}"


def test_only_bad_records_left_after_skipping_is_no_records(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "no tags"}) + "\n")
    with pytest.raises(TrainDataError, match=r"bad\.jsonl: no records to train on \(1 bad"):
        load_examples(tokenizer, path, strict=False)
