"""Plots of a budget sweep, as PNG files (matplotlib, Agg: no display needed).

What it does, from the files `tina.eval.sweep` writes: `<stem>_quality.png` (exact match and
token F1 against average think tokens, fixed budgets as a curve, `auto` as a marked point),
`<stem>_reliability.png` (a reliability diagram per budget over a histogram of the confidences)
and `<stem>_budget.png` (the heads' predicted budget against the think tokens used). What each
shows in detail: docs/evaluation.md. `quality_figure`, `reliability_figure` and `budget_figure`
return `matplotlib.figure.Figure` objects (no pyplot state); `plot_sweep` draws all three and
writes them atomically.

What it does not do: run the sweep or compute metrics beyond binning (`tina.eval.metrics`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tina.core.atomic import atomic_write
from tina.eval.metrics import ece, reliability_bins
from tina.eval.sweep import AUTO, budget_sort_key, read_items_csv, read_sweep_csv

_DPI = 120


def _save(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG to `path` atomically."""
    FigureCanvasAgg(fig)
    return atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11)


def quality_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Quality (exact match, token F1) against average think tokens; see module docstring."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    fixed = sorted(
        (r for r in rows if r["budget"] != AUTO and _finite(r["avg_think_tokens"])),
        key=lambda r: budget_sort_key(r["budget"]),
    )
    auto = [r for r in rows if r["budget"] == AUTO and _finite(r["avg_think_tokens"])]
    # F1 hollow and dashed, so that it stays visible where it equals exact match
    for key, style, fill, auto_marker, label in (
        ("exact_match", "o-", None, "*", "exact match"),
        ("token_f1", "s--", "none", "D", "token F1"),
    ):
        points = [(r["avg_think_tokens"], r[key], r["budget"]) for r in fixed if _finite(r[key])]
        if points:
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                style,
                markerfacecolor=fill,
                markersize=7,
                label=f"{label}, fixed budgets",
            )
        for r in auto:
            if _finite(r[key]):
                ax.plot(
                    r["avg_think_tokens"],
                    r[key],
                    auto_marker,
                    markersize=16 if auto_marker == "*" else 11,
                    markerfacecolor=fill,
                    markeredgecolor="black",
                    label=f"{label}, auto (heads' budget)",
                )
    for r in fixed:
        if _finite(r["exact_match"]):
            ax.annotate(
                f"B={r['budget']}",
                (r["avg_think_tokens"], r["exact_match"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
            )
    for r in auto:
        if _finite(r["exact_match"]):
            ax.annotate(
                "auto",
                (r["avg_think_tokens"], r["exact_match"]),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
            )
    ax.set_xlabel("average think tokens per item")
    ax.set_ylabel("score (share of items)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(f"Quality vs think tokens{title}")
    ax.grid(alpha=0.3)
    if fixed or auto:
        ax.legend(loc="lower right", fontsize=9)
    else:
        _note(ax, "no rows with think tokens")
    return fig


def _by_budget(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for it in items:
        groups.setdefault(str(it["budget"]), []).append(it)
    return {k: groups[k] for k in sorted(groups, key=budget_sort_key)}


MIN_JOINED_COUNT = 5  #: reliability bins with fewer items get a marker, but no line through them


def reliability_figure(
    items: Sequence[Mapping[str, Any]], n_bins: int = 10, title: str = ""
) -> Figure:
    """Reliability diagram per budget over a confidence histogram; see module docstring."""
    fig = Figure(figsize=(7, 7))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    drawn = False
    for budget, group in _by_budget(items).items():
        pairs = [
            (float(it["confidence"]), float(it["correct"]))
            for it in group
            if _finite(it["confidence"]) and _finite(it["correct"])
        ]
        if not pairs:
            continue
        conf, labels = [c for c, _ in pairs], [y for _, y in pairs]
        bins = [b for b in reliability_bins(conf, labels, n_bins) if b["count"]]
        name = "auto" if budget == AUTO else f"B={budget}"
        joined = [b for b in bins if b["count"] >= MIN_JOINED_COUNT]
        (line,) = top.plot(
            [b["confidence"] for b in joined],
            [b["accuracy"] for b in joined],
            "-",
            label=f"{name} (ECE {ece(conf, labels, n_bins):.3f}, n={len(pairs)})",
        )
        top.scatter(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            s=[8 + 72 * math.sqrt(b["count"] / len(pairs)) for b in bins],
            color=line.get_color(),
            zorder=3,
        )
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        bottom.plot(centers, [b["count"] for b in bins], "o-", alpha=0.8)
        drawn = True
    top.set_xlim(0, 1)
    top.set_ylim(-0.03, 1.03)
    top.set_ylabel("accuracy in bin")
    top.set_title(f"Reliability diagram ({n_bins} equal-width bins){title}")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    if not drawn:
        _note(top, "no confidences: the model has no metacognitive heads")
    bottom.set_xlabel("confidence (mean in bin)")
    bottom.set_ylabel("items in bin")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    return fig


def budget_figure(items: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Predicted budget against think tokens used (and the gold budget); see module docstring."""
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    groups = {
        b: [it for it in g if _finite(it["predicted_budget"])] for b, g in _by_budget(items).items()
    }
    groups = {b: g for b, g in groups.items() if g}
    budget = AUTO if AUTO in groups else (list(groups)[-1] if groups else None)
    if budget is None:
        _note(ax, "no predicted budgets: the model has no metacognitive heads")
    else:
        chosen = groups[budget]
        x = [float(it["predicted_budget"]) for it in chosen]
        ax.plot(x, [float(it["think_tokens"]) for it in chosen], "o", alpha=0.7, label="used")
        gold = [(xi, it["target_budget"]) for xi, it in zip(x, chosen, strict=True)]
        gold = [(xi, g) for xi, g in gold if _finite(g)]
        if gold:
            ax.plot(
                [g[0] for g in gold],
                [g[1] for g in gold],
                "x",
                alpha=0.7,
                label="gold (concise trace)",
            )
        ys = [float(it["think_tokens"]) for it in chosen] + [g[1] for g in gold]
        top = max([*x, *ys, 1.0])
        ax.plot([0, top], [0, top], ":", color="gray", label="used = predicted")
        ax.legend(loc="upper left", fontsize=9)
        name = "auto: the heads' budget" if budget == AUTO else f"fixed budget {budget}"
        title = f" ({name}, n={len(chosen)}){title}"
    ax.set_xlabel("predicted think budget (tokens)")
    ax.set_ylabel("think tokens")
    ax.set_title(f"Predicted vs used think budget{title}")
    ax.grid(alpha=0.3)
    return fig


def plot_sweep(
    csv_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    items_path: str | os.PathLike[str] | None = None,
    n_bins: int = 10,
) -> tuple[list[Path], list[str]]:
    """Every plot of a sweep CSV into `out_dir`; returns the PNGs written and notes on plots
    skipped. The items CSV defaults to `<stem>_items.csv` beside the sweep CSV; when that
    default is absent, the two item plots are skipped (a given path must exist)."""
    csv_path, out = Path(csv_path), Path(out_dir)
    rows = read_sweep_csv(csv_path)
    stem = csv_path.stem
    n = max((r["n"] for r in rows), default=0)
    suffix = f" — {stem}, n={n}"
    written = [_save(quality_figure(rows, suffix), out / f"{stem}_quality.png")]
    notes: list[str] = []
    items_file = Path(items_path) if items_path else csv_path.with_name(f"{stem}_items.csv")
    if items_path is None and not items_file.is_file():
        notes.append(f"{items_file}: not found, reliability and budget plots skipped")
        return written, notes
    items = read_items_csv(items_file)
    written.append(
        _save(reliability_figure(items, n_bins, f" — {stem}"), out / f"{stem}_reliability.png")
    )
    written.append(_save(budget_figure(items, f" — {stem}"), out / f"{stem}_budget.png"))
    return written, notes
