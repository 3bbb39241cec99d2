"""Calibration fitting: temperature, plan thresholds, budget clip, the file, the round trip."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from tina.cli import main
from tina.core.calibration import Calibration, apply_plan, load_calibration
from tina.core.introspection import attach_introspection, save_introspection
from tina.core.models import embedded_model_dir, load_model
from tina.core.plans import PLAN_CLASSES
from tina.data.contract import write_contract_jsonl
from tina.data.tasks import generate_records
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.eval.calibrate import (
    PROBE_TEMPERATURE,
    T_MAX,
    T_MIN,
    calibrate_on_records,
    calibrated,
    confidence_logit,
    confidence_nll,
    export_calibration_from_eval,
    fit_budget_clip,
    fit_plan_thresholds,
    fit_temperature,
    gather_calibration_eval,
    run_calibration,
)
from tina.eval.metrics import ece
from tina.eval.sweep import AUTO, SweepError, item_confidence, item_from_record, request_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _synthetic(true_t, n=3000, seed=0):
    """Logits whose labels are drawn from sigmoid(logit / true_t)."""
    rng = random.Random(seed)
    logits = [rng.gauss(0, 3) for _ in range(n)]
    labels = [float(rng.random() < _sigmoid(z / true_t)) for z in logits]
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovers_the_generating_one(true_t):
    logits, labels = _synthetic(true_t)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.15)
    best = confidence_nll(logits, labels, fitted)
    assert best <= confidence_nll(logits, labels, fitted * 1.05)
    assert best <= confidence_nll(logits, labels, fitted / 1.05)
    assert ece(calibrated(logits, fitted), labels) < ece(calibrated(logits, 1.0), labels)


def test_temperature_edge_cases_stay_in_the_schema_range():
    assert fit_temperature([0.0, 0.0], [1, 0]) == 1.0
    separable = fit_temperature([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    reversed_ = fit_temperature([-2.0, -1.0, 1.0, 2.0], [1, 1, 0, 0])
    assert separable == pytest.approx(T_MIN) and reversed_ == pytest.approx(T_MAX)
    assert separable >= T_MIN and reversed_ <= T_MAX
    with pytest.raises(ValueError):
        fit_temperature([], [])


def _plan_accuracy(logits, labels, thresholds):
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1)
    chosen = apply_plan(probs, Calibration(plan_thresholds=thresholds))
    return float((chosen == torch.tensor(labels)).double().mean())


def test_plan_thresholds_undo_a_biased_head():
    rng = random.Random(1)
    labels = [rng.randrange(4) for _ in range(80)]
    # the right class gets +1, but "direct" always gets +2: the raw argmax says "direct"
    logits = [[2.0 + (y == 0), float(y == 1), float(y == 2), float(y == 3)] for y in labels]
    assert _plan_accuracy(logits, labels, {}) == pytest.approx(labels.count(0) / 80)
    thresholds = fit_plan_thresholds(logits, labels)
    assert set(thresholds) == set(PLAN_CLASSES) and all(0 < t <= 1 for t in thresholds.values())
    assert _plan_accuracy(logits, labels, thresholds) == 1.0
    assert thresholds["direct"] > thresholds["compute"]  # "direct" made harder to choose


def test_plan_thresholds_are_never_worse_than_the_defaults():
    rng = random.Random(2)
    logits = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(50)]
    labels = [rng.randrange(4) for _ in range(50)]
    thresholds = fit_plan_thresholds(logits, labels)
    assert _plan_accuracy(logits, labels, thresholds) >= _plan_accuracy(logits, labels, {})
    assert fit_plan_thresholds(logits[:2], [None, -1]) == {}  # no known gold plan


def test_budget_clip_covers_the_gold_range_and_never_raises_the_error():
    rng = random.Random(3)
    gold = [rng.choice([0, 12, 25, 40]) for _ in range(40)]
    predicted = [rng.uniform(-50, 300) for _ in range(40)]
    low, high = fit_budget_clip([*gold, None])
    assert (low, high) == (0, 40)
    clipped = [min(max(p, low), high) for p in predicted]
    mae = sum(abs(p - g) for p, g in zip(predicted, gold, strict=True))
    assert sum(abs(p - g) for p, g in zip(clipped, gold, strict=True)) <= mae
    assert fit_budget_clip([None]) is None


def test_export_writes_the_file_the_engine_reads(tmp_path):
    logits, labels = _synthetic(2.0, n=400)
    plan_logits = [[0.0, 1.0, 0.0, 0.0]] * 400
    fit = export_calibration_from_eval(
        logits,
        labels,
        plan_logits,
        ["compute"] * 400,
        [100.0] * 400,
        [10.0, 30.0] * 200,
        tmp_path / "cal" / "metacog_calibration.json",
        n_bins=15,
        fitted_on={"data": "synthetic"},
    )
    loaded = load_calibration(fit.path)
    assert loaded.confidence_temperature == pytest.approx(fit.calibration.confidence_temperature)
    assert loaded.confidence_temperature == pytest.approx(2.0, rel=0.25)
    assert (loaded.budget_min, loaded.budget_max) == (10, 30)
    assert set(loaded.plan_thresholds) == set(PLAN_CLASSES)
    assert fit.after["ece"] < fit.before["ece"] and fit.after["nll"] < fit.before["nll"]
    assert fit.after["auroc"] == pytest.approx(fit.before["auroc"])  # a temperature keeps order
    assert fit.before["budget_mae"] == 80.0 and fit.after["budget_mae"] == 10.0
    assert loaded.fitted_on["data"] == "synthetic" and loaded.fitted_on["n_bins"] == 15


def _items(n=4):
    records = generate_records("add", n, seed=5, difficulties=[1, 2])
    return records, [item_from_record(r, ("t", i + 1)) for i, r in enumerate(records)]


def test_serving_with_the_file_changes_confidence_exactly_as_fitted(tiny_fresh, tmp_path):
    model, tokenizer = tiny_fresh
    intro = attach_introspection(model)
    with torch.no_grad():  # a spread of confidence logits, so that the fit is not degenerate
        intro.heads.outputs.confidence.weight.mul_(40.0)
    config = EngineConfig(budget_cap=4, max_answer_tokens=2)
    _, items = _items()
    plain = Engine(model, tokenizer, intro, config)
    data = gather_calibration_eval(plain, items, budget=3, batch_size=2)
    raw = [
        item_confidence(r.telemetry) for r in plain.generate([request_for(it, 3) for it in items])
    ]
    # the logits read through the probe temperature are the uncalibrated engine's
    for z, c in zip(data.conf_logits, raw, strict=True):
        assert _sigmoid(z) == pytest.approx(c, abs=1e-5)
    labels = [1.0, 0.0, 0.0, 1.0]  # a fixed pattern (the random model is never right)
    fit = export_calibration_from_eval(
        data.conf_logits,
        labels,
        data.plan_logits,
        data.plan_labels,
        data.pred_budgets,
        data.gold_budgets,
        tmp_path / "c.json",
    )
    loaded = load_calibration(fit.path)
    t, bias = loaded.confidence_temperature, loaded.confidence_bias
    assert abs(math.log(t)) > 0.1  # the file really changes something
    served = Engine(model, tokenizer, intro, config, load_calibration(fit.path))
    got = [
        item_confidence(r.telemetry) for r in served.generate([request_for(it, 3) for it in items])
    ]
    knots = loaded.confidence_map
    for z, c in zip(data.conf_logits, got, strict=True):
        platt = _sigmoid(z / t + bias)
        expected = float(np.interp(platt, knots["x"], knots["y"])) if knots else platt
        assert c == pytest.approx(expected, abs=1e-5)
    assert any(abs(c - r) > 1e-3 for c, r in zip(got, raw, strict=True))


def test_calibrate_on_records_returns_flat_metrics(tiny_fresh, tmp_path):
    model, tokenizer = tiny_fresh
    intro = attach_introspection(model)
    records, _ = _items(3)
    engine = Engine(model, tokenizer, intro, EngineConfig(budget_cap=3, max_answer_tokens=2))
    out = calibrate_on_records(engine, records, tmp_path / "c.json", budget=2)
    assert (
        out["calibration_temperature"]
        == load_calibration(tmp_path / "c.json").confidence_temperature
    )
    assert {"calibration_ece_before", "calibration_ece_after", "calibration_brier_after"} <= set(
        out
    )


def test_auto_calibration_fits_the_temperature_under_the_fitted_clip(tiny_fresh, tmp_path):
    model, tokenizer = tiny_fresh
    intro = attach_introspection(model)
    with torch.no_grad():  # plan "compute", budget near b_max: far above the gold budgets
        intro.heads.outputs.plan.bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        intro.heads.outputs.budget.bias.fill_(6.0)
    engine = Engine(
        model, tokenizer, intro, EngineConfig(budget_cap=12, max_answer_tokens=2, slack_ratio=0.15)
    )
    _, items = _items(2)
    raw = gather_calibration_eval(engine, items, AUTO)
    assert raw.think_tokens == [13, 13]  # cap 12 with 15% slack
    clipped = gather_calibration_eval(
        engine, items, AUTO, policy=Calibration(budget_min=0, budget_max=4)
    )
    assert clipped.think_tokens == [4, 4] and clipped.plan_logits == raw.plan_logits
    fit = run_calibration(engine, items, tmp_path / "c.json", budget=AUTO)
    assert fit.calibration.budget_max == max(it.target_budget for it in items)
    assert fit.calibration.fitted_on["confidence_under_fitted_plan_and_clip"] is True
    assert fit.calibration.fitted_on["avg_think_tokens"] <= fit.calibration.budget_max * 1.15
    assert fit.calibration.exit_threshold is None
    # under an exit check the engine serves with, both passes run with it and the file keeps it
    engine.calibration = Calibration(exit_threshold=0.4)
    fit = run_calibration(engine, items, tmp_path / "c2.json", budget=AUTO)
    assert load_calibration(tmp_path / "c2.json").exit_threshold == 0.4
    engine.config.exit_check = False  # served without the check: fitted and written without
    run_calibration(engine, items, tmp_path / "c3.json", budget=AUTO)
    assert load_calibration(tmp_path / "c3.json").exit_threshold is None


def test_gathering_without_heads_is_an_error(tiny_random_model):
    model, tokenizer = tiny_random_model
    with pytest.raises(SweepError, match="metacognitive heads"):
        gather_calibration_eval(Engine(model, tokenizer), _items(1)[1])


def test_probe_temperature_keeps_large_logits_readable():
    # float32 sigmoid saturates near 16.6; under the probe temperature 60 is still exact
    c = float(torch.sigmoid(torch.tensor(60.0) / PROBE_TEMPERATURE))
    assert confidence_logit(c) == pytest.approx(60.0, rel=1e-3)


def test_cli_calibrate_prints_before_and_after(tmp_path, capsys):
    torch.manual_seed(0)
    records = generate_records("add", 3, seed=7, difficulties=[1])
    data = tmp_path / "dev.jsonl"
    write_contract_jsonl(data, records)
    out = tmp_path / "metacog_calibration.json"
    common = ["calibrate", "--data", str(data), "--out", str(out), "--budget", "0"]
    assert main([*common, "--no-progress", "--no-introspection"]) == 2  # the model alone
    assert "metacognitive heads" in capsys.readouterr().err
    fresh, _ = load_model(device="cpu")  # a copy: never attach to the shared fixture
    save_introspection(attach_introspection(fresh), tmp_path / "intro")
    model_flags = ["--models-root", "/", "--base", str(embedded_model_dir()).lstrip("/")]
    model_flags += ["--adapter", str(tmp_path / "intro").lstrip("/")]
    assert main([*common, *model_flags, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "before" in printed and "after" in printed and "ece" in printed and str(out) in printed
    assert load_calibration(out).fitted_on["n"] == 3


def test_platt_bias_fixes_a_confidence_that_is_too_low_on_average():
    """Informative but biased logits (every confidence ≈ 0.3 too low): a temperature alone
    cannot lift them; the fitted bias does, and the NLL is at its minimum."""
    from tina.eval.calibrate import fit_confidence

    rng = random.Random(4)
    logits, labels = [], []
    for _ in range(400):
        z = rng.uniform(-3, 3)
        labels.append(float(rng.random() < _sigmoid(z + 1.5)))  # true: sigmoid(z + 1.5)
        logits.append(z)
    t, bias = fit_confidence(logits, labels)
    assert bias == pytest.approx(1.5, abs=0.5) and t == pytest.approx(1.0, rel=0.35)
    best = confidence_nll(logits, labels, t, bias)
    for dt, db in ((1.05, 0), (1 / 1.05, 0), (1, 0.1), (1, -0.1)):
        assert best <= confidence_nll(logits, labels, t * dt, bias + db) + 1e-12
    t_only = fit_temperature(logits, labels)
    assert ece(calibrated(logits, t, bias), labels) < ece(calibrated(logits, t_only), labels)


def test_confidence_map_is_isotonic_and_fixes_a_shape_platt_cannot():
    """Confidence right at both ends but too high in the middle: the isotonic knots are
    monotone, lower the middle, and cut ECE on the fitting data."""
    from tina.core.calibration import Calibration, apply_confidence
    from tina.eval.calibrate import fit_confidence_map

    rng = random.Random(2)
    probs, labels = [], []
    for _ in range(2000):
        p = rng.random()
        truth = p if p < 0.3 or p > 0.8 else 0.3  # overconfident in [0.3, 0.8]
        probs.append(p)
        labels.append(float(rng.random() < truth))
    knots = fit_confidence_map(probs, labels)
    assert all(b > a for a, b in zip(knots["x"], knots["x"][1:], strict=False))
    assert all(b >= a for a, b in zip(knots["y"], knots["y"][1:], strict=False))
    logits = torch.logit(torch.tensor(probs, dtype=torch.float64).clamp(1e-9, 1 - 1e-9))
    mapped = apply_confidence(logits, Calibration(confidence_map=knots)).tolist()
    assert ece(mapped, labels) < ece(probs, labels) / 2
    middle = float(
        apply_confidence(torch.logit(torch.tensor([0.6])), Calibration(confidence_map=knots))
    )
    assert middle < 0.45


def test_confidence_map_gives_a_large_block_its_accuracy_and_keeps_the_order():
    """Two blocks by construction: confidences 0.01–0.6 right one time in four, 0.6–0.99 right
    nine times in ten (every group alike, so PAV pools each range whole). Every item maps to
    its block's accuracy, the lower half of the large block included (knots at the blocks'
    means would pull it towards the other block), and distinct confidences keep their order."""
    from tina.core.calibration import Calibration, apply_confidence
    from tina.eval.calibrate import MAP_RISE, fit_confidence_map
    from tina.eval.metrics import auroc

    low = [0.01 + 0.59 * i / 300 for i in range(300)]
    high = [0.6 + 0.39 * (i + 1) / 700 for i in range(700)]
    probs = low + high
    labels = [float(i % 4 == 0) for i in range(300)] + [float(i % 10 != 0) for i in range(700)]
    knots = fit_confidence_map(probs, labels)
    assert len(knots["x"]) == 4  # two blocks, each from its lowest to its highest confidence
    logits = torch.logit(torch.tensor(probs, dtype=torch.float64))
    mapped = apply_confidence(logits, Calibration(confidence_map=knots)).tolist()
    shrink = 1 / 301  # one pseudo-item pulls a block's value towards its mean confidence
    assert all(abs(m - 0.25) <= MAP_RISE + shrink for m in mapped[:300])
    assert all(abs(m - 0.9) <= MAP_RISE + shrink for m in mapped[300:])
    assert ece(mapped, labels) < 0.01
    assert all(b > a for a, b in itertools.pairwise(mapped))  # order kept
    assert auroc(mapped, labels) == pytest.approx(auroc(probs, labels))


def test_confidence_map_knots_that_meet_in_float32_give_a_number():
    from tina.core.calibration import Calibration, apply_confidence

    knots = {"x": [0.5, 0.5 + 1e-12, 0.9], "y": [0.2, 0.3, 0.8]}
    logits = torch.tensor([0.0, 0.0, 1.0, -3.0])
    mapped = apply_confidence(logits, Calibration(confidence_map=knots))
    assert torch.isfinite(mapped).all()
    assert 0.2 <= float(mapped[0]) <= 0.3 + 1e-6 and 0.31 < float(mapped[2]) < 0.8
    assert float(mapped[3]) == pytest.approx(0.2)
