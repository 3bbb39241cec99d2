"""Sweep plots: the three PNGs, what each figure shows, and errors naming file and line."""

from __future__ import annotations

import random

import pytest

from tina.cli import main
from tina.eval.plots import budget_figure, plot_sweep, quality_figure, reliability_figure
from tina.eval.sweep import ITEM_COLUMNS, SWEEP_COLUMNS, read_items_csv, read_sweep_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_sweep(directory, with_items=True):
    rows = [
        "0,20,0.1,0.15,0,0,0.3,0.3,0.6,40,0.8,0.5",
        "16,20,0.4,0.45,14,0,0.2,0.25,0.7,40,0.8,0.5",
        "64,20,0.9,0.9,50,0,0.1,0.1,0.8,40,0.8,0.5",
        "auto,20,0.85,0.88,35,0,0.05,0.12,0.85,10,0.2,0.9",
    ]
    csv_path = directory / "budget_sweep_dev.csv"
    csv_path.write_text(",".join(SWEEP_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    if with_items:
        rng = random.Random(0)
        lines = [",".join(ITEM_COLUMNS)]
        for budget in ("0", "16", "64", "auto"):
            for i in range(20):
                conf = rng.random()
                correct = int(rng.random() < conf)
                predicted = rng.uniform(10, 60)
                used = 0 if budget == "0" else min(predicted if budget == "auto" else 64, 50)
                lines.append(
                    f"{budget},add-{i},add,{1 + i % 3},concise,{correct},{conf:.4f},{used:.0f},0,"
                    f"{predicted:.1f},{budget if budget != 'auto' else round(predicted)},"
                    f"{10 + i},compute,compute,1,1"
                )
        (directory / "budget_sweep_dev_items.csv").write_text("\n".join(lines) + "\n")
    return csv_path


def test_plot_sweep_writes_three_pngs(tmp_path):
    csv_path = _write_sweep(tmp_path)
    written, notes = plot_sweep(csv_path, tmp_path / "out")
    assert [p.name for p in written] == [
        "budget_sweep_dev_quality.png",
        "budget_sweep_dev_reliability.png",
        "budget_sweep_dev_budget.png",
    ]
    assert not notes
    blobs = [p.read_bytes() for p in written]
    assert all(b.startswith(PNG_MAGIC) and len(b) > 10_000 for b in blobs)
    assert len(set(blobs)) == 3
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_quality_figure_shows_the_curve_and_the_auto_point(tmp_path):
    fig = quality_figure(read_sweep_csv(_write_sweep(tmp_path)))
    (ax,) = fig.axes
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "exact match, fixed budgets" in labels and "exact match, auto (heads' budget)" in labels
    curve = next(
        line for line in ax.get_lines() if line.get_label() == "exact match, fixed budgets"
    )
    assert list(curve.get_xdata()) == [0, 14, 50] and list(curve.get_ydata()) == [0.1, 0.4, 0.9]
    auto = "exact match, auto (heads' budget)"
    star = next(line for line in ax.get_lines() if line.get_label() == auto)
    assert star.get_marker() == "*" and list(star.get_xdata()) == [35]


def test_reliability_and_budget_figures_are_labelled(tmp_path):
    _write_sweep(tmp_path)
    items = read_items_csv(tmp_path / "budget_sweep_dev_items.csv")
    top, bottom = reliability_figure(items, n_bins=5).axes
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend[0] == "perfect calibration" and any(t.startswith("auto (ECE ") for t in legend)
    assert top.get_title() and top.get_ylabel() and bottom.get_xlabel()
    (ax,) = budget_figure(items).axes
    assert "auto" in ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    used = next(line for line in ax.get_lines() if line.get_label() == "used")
    assert len(used.get_xdata()) == 20


def test_reliability_line_skips_sparse_bins_the_markers_show_them():
    from tina.eval.plots import MIN_JOINED_COUNT

    items = [
        {"budget": "auto", "confidence": 0.95, "correct": float(i % 10 != 0)} for i in range(40)
    ] + [{"budget": "auto", "confidence": 0.62, "correct": 0.0}]
    items += [
        {"budget": "auto", "confidence": 0.35, "correct": float(i % 3 == 0)} for i in range(9)
    ]
    top, _ = reliability_figure(items, n_bins=10).axes
    line = next(x for x in top.get_lines() if x.get_label().startswith("auto"))
    assert list(line.get_xdata()) == pytest.approx([0.35, 0.95])  # the one-item bin is not joined
    (markers,) = top.collections
    assert sorted(x for x, _ in markers.get_offsets()) == pytest.approx([0.35, 0.62, 0.95])
    by_x = sorted(zip((x for x, _ in markers.get_offsets()), markers.get_sizes(), strict=True))
    low, single, high = (size for _, size in by_x)
    assert high > low > single  # a marker's area grows with its bin's count (40, 9, 1 items)
    assert MIN_JOINED_COUNT > 1


def test_without_the_items_file_only_the_quality_plot_is_drawn(tmp_path):
    csv_path = _write_sweep(tmp_path, with_items=False)
    written, notes = plot_sweep(csv_path, tmp_path)
    assert [p.name for p in written] == ["budget_sweep_dev_quality.png"]
    assert "budget_sweep_dev_items.csv: not found" in notes[0]
    with pytest.raises(FileNotFoundError):
        plot_sweep(csv_path, tmp_path, items_path=tmp_path / "missing.csv")


def test_cli_plot_writes_files_and_reports_bad_csv(tmp_path, capsys):
    csv_path = _write_sweep(tmp_path)
    assert main(["plot", "--csv", str(csv_path), "--out", str(tmp_path / "png")]) == 0
    assert capsys.readouterr().out.count("wrote ") == 3
    csv_path.write_text(csv_path.read_text().replace("0.9,0.9,50", "0.9,oops,50"))
    assert main(["plot", "--csv", str(csv_path), "--out", str(tmp_path)]) == 2
    assert f"{csv_path}:4: csv_value: token_f1: 'oops'" in capsys.readouterr().err
    items = tmp_path / "budget_sweep_dev_items.csv"
    _write_sweep(tmp_path)
    items.write_text(items.read_text().replace(",compute,compute,1,1\n", ",compute\n", 1))
    assert main(["plot", "--csv", str(csv_path), "--out", str(tmp_path)]) == 2
    assert f"{items}:2: csv_row:" in capsys.readouterr().err
    assert main(["plot", "--csv", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv" in capsys.readouterr().err
