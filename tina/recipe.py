"""The think-less recipe: embedded model → phase A → minimal budgets → phase C → budget RL →
calibration → the token-efficiency result, from one config file and one command.

`tina recipe --config configs/budget_recipe.yaml [--ship] [--from STAGE]` runs the `STAGES` in
`output_dir`: data (train, search, dev and test splits), phase_a (`tina.train.trainer`, frozen
base), search (`tina.train.budget_search`), phase_c, policy (`tina.train.budget_policy`, with
the exit check on), calibration (pruning, `tina.eval.calibrate`, `tina.eval.exit_check`, into
`final/`), evaluation (`tina.eval.sweep`, `tina.eval.budget_result`: `artifacts/`). What each
stage reads and writes: docs/recipe.md. `--from STAGE` skips the stages before it and reads
what they wrote (a missing file is a `RecipeResumeError` naming it and its stage), so a resumed
run gives what the full run gives. `--ship` (or `ship_to`) copies `final/` to the embedded
model's `introspection/`, which `tina chat` / `tina serve` load by default.

What it does not do: self-play, or partial unfreeze of the base (the trainer supports both; the
recipe keeps the base frozen so the reference stays the shipped model).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from tina.core.atomic import atomic_directory, atomic_write
from tina.core.calibration import CALIBRATION_FILE, Calibration, load_calibration, save_calibration
from tina.core.checks import ROOT_FIELD, ConfigError, Problem, int_problem, number_problem
from tina.core.introspection import (
    CONFIG_NAME,
    load_introspection,
    load_introspective_model,
    remove_introspection,
    save_introspection,
)
from tina.core.models import embedded_model_dir, load_model
from tina.core.tags import split_reasoning
from tina.data.contract import read_contract_jsonl, write_contract_jsonl
from tina.data.questions import question_of, read_questions
from tina.data.tasks import ARITHMETIC, generate_records
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.eval.budget_result import dev_line, result_table
from tina.eval.quality import DEFAULT_SUITE, heldout_items
from tina.eval.sweep import (
    AUTO,
    EvalItem,
    decode_items,
    item_from_record,
    progress_bar,
    sweep_engine,
)
from tina.serve.runtime import SHIPPED_INTROSPECTION
from tina.train.bootstrap import seen_questions_of
from tina.train.budget_policy import BudgetPolicyConfig, train_budget_policy
from tina.train.budget_search import (
    BudgetFound,
    BudgetSearchConfig,
    budget_records,
    minimal_budgets,
)
from tina.train.checkpoints import latest_checkpoint
from tina.train.config import load_train_config, read_config_yaml
from tina.train.trainer import train


@dataclass
class RecipeConfig:
    """The recipe's settings (`configs/budget_recipe.yaml`)."""

    output_dir: str = "runs/budget_recipe"  #: everything the run writes
    seed: int = 0  #: data and training seed
    suite: dict[str, list[int]] = field(
        default_factory=lambda: {t: list(d) for t, d in DEFAULT_SUITE}
    )  #: task -> difficulties (the cells)
    n_train: int = 40  #: concise training records per cell (phase A)
    n_search: int = 20  #: items per cell for the minimal-budget search (phase C data)
    n_dev: int = 12  #: calibration items per cell
    n_test: int = 30  #: held-out result items per cell
    #: share of each arithmetic cell's train, search and dev records asked in people's phrasings
    #: (`tina.data.tasks.phrasing`, the training grammar), so the heads and the calibration see
    #: them; the test split keeps the suite's own sentences (comparable across runs)
    phrasing_share: float = 0.0
    free_budget: int = 384  #: the reference's budget: thinking freely
    phase_a: dict[str, Any] = field(default_factory=dict)  #: train-config keys for phase A
    phase_c: dict[str, Any] = field(default_factory=dict)  #: train-config keys for phase C
    search: dict[str, Any] = field(default_factory=dict)  #: `BudgetSearchConfig` fields
    policy: dict[str, Any] = field(default_factory=dict)  #: `BudgetPolicyConfig` fields
    sweep_budgets: list[int] = field(
        default_factory=lambda: [0, 16, 32, 48, 64, 96, 128, 192]
    )  #: the fixed budgets of the curve
    batch_size: int = 64  #: engine batch for search and evaluation
    prune_gates_below: float = 1e-6  #: before saving, drop side adapters scoring below (dead)
    #: exit-check thresholds tried on the dev split (no check is always a candidate)
    exit_thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    #: the exit check's threshold while the budget policy learns (None: no check), so that it
    #: learns budgets under the serving rule (the served threshold is fitted afterwards)
    policy_exit_threshold: float | None = 0.5
    ship_to: str | None = None  #: copy `final/` here at the end (`--ship`: the embedded dir)
    #: the model: `models_root`, `base`, `adapter`, `subfolder` as `tina chat` takes them
    #: (empty: the embedded model); the reference is it with Tina's parts off
    model: dict[str, Any] = field(default_factory=dict)
    #: a question file (`tina.data.questions`) instead of the task suite: its train lines
    #: feed phase A and the search, its dev and test lines calibrate and measure; `n_train`,
    #: `n_search`, `n_dev`, `n_test` are then totals (0: every line there is)
    questions: str | None = None
    #: copy the final parts and calibration here at the end (default: beside the model's
    #: adapter, so `tina chat --adapter` picks them up; nowhere for the embedded model)
    out: str | None = None


def _block_problems(key: str, block: dict[str, Any], cls: Any) -> list[tuple[str, str | None]]:
    """Unknown keys, and values of the wrong type (by the field's annotation: `int`, `float`,
    `list[int]`), of a block that fills the dataclass `cls`."""
    types = {f.name: f.type for f in fields(cls)}
    found: list[tuple[str, str | None]] = [
        (f"{key}.{k}", f"unknown key (expected one of {sorted(types)})")
        for k in block
        if k not in types
    ]
    for name, value in block.items():
        kind = types.get(name)
        if kind == "int":
            found.append((f"{key}.{name}", int_problem(value, 0)))
        elif kind == "float":
            found.append((f"{key}.{name}", number_problem(value, float("-inf"))))
        elif kind == "list[int]":
            if not isinstance(value, list):
                found.append((f"{key}.{name}", f"expected a list of integers, got {value!r}"))
            else:
                found += [(f"{key}.{name}[{i}]", int_problem(v, 0)) for i, v in enumerate(value)]
    return found


def load_recipe_config(path: str | Path) -> RecipeConfig:
    """The recipe config in a YAML file; a `tina.core.checks.ConfigError` listing every unknown
    key or bad value, each naming the file and the field."""
    raw = read_config_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError([Problem(str(path), ROOT_FIELD, "expected a mapping")])
    known = {f.name for f in fields(RecipeConfig)}
    found: list[tuple[str, str | None]] = [(k, "unknown key") for k in raw if k not in known]
    for key in ("n_train", "n_search", "n_dev", "n_test", "free_budget", "batch_size"):
        if key in raw:
            low = 0 if key.startswith("n_") and raw.get("questions") else 1
            found.append((key, int_problem(raw[key], low)))
    if "seed" in raw:
        found.append(("seed", int_problem(raw["seed"], 0)))
    if "phrasing_share" in raw:
        found.append(("phrasing_share", number_problem(raw["phrasing_share"], 0, 1)))
    if "prune_gates_below" in raw:
        found.append(("prune_gates_below", number_problem(raw["prune_gates_below"], 0)))
    for key in ("exit_thresholds", "sweep_budgets"):
        values = raw.get(key, [])
        if not isinstance(values, list):
            found.append((key, f"expected a list, got {values!r}"))
            continue
        for i, value in enumerate(values):
            check = (
                number_problem(value, 0, 1) if key == "exit_thresholds" else int_problem(value, 0)
            )
            found.append((f"{key}[{i}]", check))
    if raw.get("policy_exit_threshold") is not None:
        found.append(("policy_exit_threshold", number_problem(raw["policy_exit_threshold"], 0, 1)))
    for key in ("phase_a", "phase_c", "search", "policy"):
        if not isinstance(raw.get(key) or {}, dict):
            found.append((key, "expected a mapping"))
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        found.append(("model", f"expected a mapping of {list(MODEL_KEYS)}"))
    else:
        found += [
            (f"model.{k}", f"unknown key (one of {list(MODEL_KEYS)})")
            for k in model
            if k not in MODEL_KEYS
        ]
        found += [
            (f"model.{k}", "expected a string")
            for k, v in model.items()
            if k in MODEL_KEYS and v is not None and not isinstance(v, str)
        ]
        if model and not model.get("base"):
            found.append(("model.base", "required when model is given"))
    for key in ("questions", "out"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            found.append((key, "expected a path"))
    for key, cls in (("search", BudgetSearchConfig), ("policy", BudgetPolicyConfig)):
        block = raw.get(key) or {}
        found += _block_problems(key, block if isinstance(block, dict) else {}, cls)
    suite = raw.get("suite", {})
    if not isinstance(suite, dict):
        found.append(("suite", "expected a mapping of task -> difficulties"))
    else:
        from tina.data.tasks import TASKS

        found += [(f"suite.{t}", "unknown task") for t in suite if t not in TASKS]
    problems = [Problem(str(path), name, message) for name, message in found if message]
    if problems:
        raise ConfigError(problems)
    return RecipeConfig(**raw)


MODEL_KEYS = ("models_root", "base", "adapter", "subfolder")  #: the `model:` block's keys


def _cells(config: RecipeConfig) -> list[tuple[str, int]]:
    return [(task, int(d)) for task, ds in config.suite.items() for d in ds]


def _cell_ids(records: list[dict[str, Any]], task: str, difficulty: int) -> list[dict[str, Any]]:
    """Records drawn per cell share `<task>-<seed>-<i>` ids across difficulties; the
    difficulty goes into the id so every id of a split is unique (`<task>-d<d>-<seed>-<i>`)."""
    return [{**r, "id": r["id"].replace(f"{task}-", f"{task}-d{difficulty}-", 1)} for r in records]


def _draw_cell(
    task: str,
    difficulty: int,
    n: int,
    seed: int,
    seen: set[str],
    taken: list[set[str]],
    phrasing: str = "canonical",
) -> list[dict[str, Any]]:
    """n records of one cell for a training or calibration split, drawn like the test items:
    first questions neither in the model's bootstrap corpus (`seen`) nor in another split, each
    once; then seen ones, each once; then, only where the problem space is too small (1-digit
    sums), questions other splits hold, those of `taken[0]` last (`taken`: the question sets of
    the splits drawn before, most protected first)."""
    tiers: list[list[dict[str, Any]]] = [[] for _ in range(2 + len(taken))]
    got: set[str] = set()
    for batch_seed in range(seed, seed + 20):
        drawn = generate_records(
            task, 4 * n, seed=batch_seed, difficulties=[difficulty], phrasing=phrasing
        )
        for record in drawn:
            question = record["meta"]["question"]
            held = [k for k, questions in enumerate(taken) if question in questions]
            if held:
                tiers[len(tiers) - 1 - held[0]].append(record)
            elif question not in got:
                got.add(question)
                tiers[1 if question in seen else 0].append(record)
        if len(tiers[0]) >= n:
            break
    return [r for tier in tiers for r in tier][:n]


def build_splits(config: RecipeConfig) -> dict[str, list[dict[str, Any]]]:
    """test / dev / search / train records (see module docstring). Every split is drawn the
    same way: questions the model's bootstrap corpus never held first (`tina.eval.quality`), so the
    search, the budget policy and the calibration see items like the test items (the corpus's
    own questions are answered from memory with less thinking, and a plain draw is half of
    them); a question of one split appears in no other where the problem space allows, and a
    test question in no other at all where it allows; ids are unique within a split.
    `phrasing_share` of each arithmetic cell's non-test records are in people's phrasings."""
    if config.questions:
        return question_splits(config)
    # what the embedded model's bootstrap trained on; another model's corpus is not known here
    seen = set() if config.model.get("base") else seen_questions_of(embedded_model_dir())
    test: list[dict[str, Any]] = []
    for task, d in _cells(config):
        drawn = heldout_items(task, d, config.n_test, 10_000 + config.seed, seen)
        test += _cell_ids(drawn, task, d)
    taken = [{r["meta"]["question"] for r in test}]
    splits: dict[str, list[dict[str, Any]]] = {"test": test}
    for offset, (name, n) in enumerate(
        (("dev", config.n_dev), ("search", config.n_search), ("train", config.n_train))
    ):
        records: list[dict[str, Any]] = []
        for task, d in _cells(config):
            seed = config.seed + 101 * (offset + 1)
            n_varied = round(n * config.phrasing_share) if task in ARITHMETIC else 0
            cell = _draw_cell(task, d, n - n_varied, seed, seen, taken)
            if n_varied:
                cell += _draw_cell(task, d, n_varied, seed + 50, seen, taken, "varied")
            records += _cell_ids(cell, task, d)
        splits[name] = records
        taken.append({r["meta"]["question"] for r in records})
    return splits


def question_splits(config: RecipeConfig) -> dict[str, list[dict[str, Any]]]:
    """test / dev / search / train records from the question file: each of its splits in the
    order of a hash of the question (so a size cut takes a mixed sample), the train lines
    shared out, search first; `n_*` caps each split (0: no cap)."""
    assert config.questions is not None
    by_split: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    for record in read_questions(config.questions):
        by_split[record["split"]].append(record)
    for records in by_split.values():
        records.sort(key=lambda r: hashlib.sha256(question_of(r).encode()).hexdigest())

    def cap(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
        return records if n == 0 else records[:n]

    train = by_split["train"]
    search = cap(train, config.n_search) if config.n_search else train[: len(train) // 2]
    rest = train[len(search) :]
    return {
        "test": cap(by_split["test"], config.n_test),
        "dev": cap(by_split["dev"], config.n_dev),
        "search": search,
        "train": cap(rest, config.n_train),
    }


def _without_traces(records: list[dict[str, Any]]) -> bool:
    """Whether every record has an empty think (a question file's lines): phase A then trains on
    the model's own thinks (the trainer's on-policy sampling). Some empty thinks are traces too:
    a 1-digit sum needs none."""
    return bool(records) and all(not split_reasoning(str(r["text"]))[0].strip() for r in records)


def _phase_settings(
    name: str, steps: int, phase: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """A one-phase train config's keys: the recipe's defaults, then the config's `overrides`."""
    return {
        "steps": steps,
        "batch_size": 32,
        "save_every": steps,
        "log_every": 50,
        "phases": [{"name": name, "until_step": 10**9, "train": ["heads", "adapters"], **phase}],
        **overrides,
    }


def _train_phase(
    config: RecipeConfig,
    name: str,
    data: Path,
    out: Path,
    extra: dict[str, Any],
    start: Path | None,
    resume: bool,
    progress: bool = False,
) -> None:
    """One trainer run (the phased trainer, one phase; `_checkpoint_of` finds its last
    checkpoint). With `resume` it goes on from the last checkpoint in `out`; without, `out` is
    emptied first (a checkpoint there was trained on the inputs an earlier run wrote)."""
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    raw: dict[str, Any] = {
        "train_data": str(data),
        "output_dir": str(out),
        "seed": config.seed,
        "tensorboard": False,
        **extra,
    }
    model = {k: v for k, v in config.model.items() if v is not None}
    if start is not None:
        model["parts"] = str(start.resolve())
    if model:
        raw["model"] = model
    path = out.parent / f"{name}_config.yaml"
    _write_text(path, yaml.safe_dump(raw, sort_keys=False))
    summary = train(load_train_config(path), resume=True, progress=progress)
    if summary.get("stopped"):  # SIGTERM/SIGINT: the phase saved where it was; do not go on
        raise RecipeStopped(
            f"{out}: {name} stopped by {summary['stopped']} at its last checkpoint; "
            f"`--from {name}` goes on from there"
        )


@contextmanager
def _stage_bar(
    progress: bool, label: str, total: int | None, engines: list[Engine]
) -> Iterator[None]:
    """A progress bar over the requests `engines` finish within the block (done/total,
    items/s, remaining; none unless `progress`); `total` None when not known ahead."""
    if not progress:
        yield
        return
    bar, task = progress_bar(True, total, label, rate=True)
    with bar:

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.1f} items/s" if speed else "")

        for engine in engines:
            engine.on_finished = advance
        try:
            yield
        finally:
            for engine in engines:
                engine.on_finished = None


def _items(records: list[dict[str, Any]], where: str) -> list[EvalItem]:
    return [item_from_record(r, (where, i + 1)) for i, r in enumerate(records)]


STAGES = (
    "data",
    "phase_a",
    "search",
    "phase_c",
    "policy",
    "calibration",
    "evaluation",
)  #: the stages, in order (`run_recipe(start=...)`, `tina recipe --from`; see module docstring)
SPLITS = ("test", "dev", "search", "train")  #: the data stage's files, `<split>.jsonl`
SEARCH_FILE = "minimal_budgets.json"  #: what the minimal-budget search found, per search item


def check_stage(start: str) -> None:
    """A ValueError naming the stages unless `start` is one of them."""
    if start not in STAGES:
        raise ValueError(f"unknown stage {start!r}; one of {', '.join(STAGES)}")


class RecipeResumeError(RuntimeError):
    """A stage before the one the run starts at left no output in `output_dir`."""


class RecipeStopped(RuntimeError):
    """A signal stopped a training phase: the run ends there (the phase resumes with `--from`)."""


def _written_by(path: Path, stage: str) -> Path:
    """`path`, which the stage `stage` writes; a RecipeResumeError naming both when missing."""
    if not path.exists():
        raise RecipeResumeError(
            f"{path}: not there; the stage {stage!r} writes it (start at {stage!r} or before)"
        )
    return path


def _checkpoint_of(directory: Path, stage: str) -> Path:
    checkpoint = latest_checkpoint(_written_by(directory, stage))
    if checkpoint is None:
        raise RecipeResumeError(f"{directory}: holds no checkpoint; the stage {stage!r} writes one")
    return checkpoint


def load_recipe_model(config: RecipeConfig, parts: Path | None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, introspection) of the recipe's model, fresh, in eval mode: with the
    parts saved in `parts`, or with none at all (None: the reference, Tina's parts off)."""
    m = config.model
    if m.get("base"):
        where = (m.get("models_root") or ".", m["base"], m.get("adapter"), m.get("subfolder"))
        model, tokenizer, intro = load_introspective_model(*where, parts=parts)
        if parts is None and intro is not None:
            remove_introspection(model)
            intro = None
    else:
        model, tokenizer = load_model()
        intro = load_introspection(model, parts) if parts is not None else None
    if intro is not None:
        intro.eval()
    return model, tokenizer, intro


def _engine_with(config: RecipeConfig, parts: Path) -> Engine:
    """An engine on a fresh copy of the recipe's model with the parts saved in `parts`."""
    model, tokenizer, intro = load_recipe_model(config, parts)
    return Engine(model, tokenizer, intro, EngineConfig(budget_cap=config.free_budget))


def _policy_calibration(config: RecipeConfig) -> Calibration | None:
    """What the budget policy learns under: the exit check at `policy_exit_threshold`."""
    if config.policy_exit_threshold is None:
        return None
    return Calibration(exit_threshold=config.policy_exit_threshold)


def _rate(rows: list[dict[str, Any]], key: str) -> float:
    return sum(float(r[key]) for r in rows) / len(rows)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _save_found(path: Path, found: list[BudgetFound]) -> None:
    _write_text(path, json.dumps([asdict(f) for f in found], indent=0) + "\n")


def _load_found(path: Path) -> list[BudgetFound]:
    rows = json.loads(_written_by(path, "search").read_text())
    return [BudgetFound(**{**r, "exits": [tuple(e) for e in r["exits"]]}) for r in rows]


def run_recipe(
    config: RecipeConfig,
    log: Callable[[str], None] = print,
    start: str = "data",
    progress: bool = False,
) -> dict[str, Any]:
    """Run the stages (see module docstring) from `start` on; returns the result summary.

    A stage before `start` is not run: what it wrote in `output_dir` is read instead (the
    splits, a phase's last checkpoint, `minimal_budgets.json`, `final/`, the calibration file),
    and a RecipeResumeError names the first missing file. Each stage reads its inputs from
    those files, so a run started at a stage gives what a full run gives with the same files:
    after a crash, or to redo the calibration and the result with changed code."""
    check_stage(start)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def runs(name: str) -> bool:
        return STAGES.index(name) >= STAGES.index(start)

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - started - sum(timings.values()), 1)
        log(f"[recipe] {name}: {timings[name]:.0f} s")

    if runs("data"):
        built = build_splits(config)
        for name, records in built.items():
            write_contract_jsonl(out / f"{name}.jsonl", records)
        sizes = ", ".join(f"{name} {len(records)}" for name, records in built.items())
        log(f"[recipe] splits: {sizes}")
        step("data")
    splits = {
        name: read_contract_jsonl(_written_by(out / f"{name}.jsonl", "data")).records
        for name in SPLITS
    }

    if runs("phase_a"):
        phase_a = _phase_settings("A", 400, {}, config.phase_a)
        if _without_traces(splits["train"]):  # no traces to learn from: the model's own
            own = {"temperature": 0.0, "budget": config.free_budget, "slack_ratio": 0.0}
            phase_a["phases"] = [
                {"on_policy": {**own, "budget_cap": config.free_budget}, **phase}
                for phase in phase_a["phases"]
            ]
        resume = start == "phase_a"  # a run started here goes on from its checkpoints
        _train_phase(
            config, "phase_a", out / "train.jsonl", out / "phase_a", phase_a, None, resume, progress
        )
        step("phase_a")
    if runs("phase_c"):  # the search and phase C start from phase A's parts
        ckpt_a = _checkpoint_of(out / "phase_a", "phase_a")

    search_items = _items(splits["search"], "search")
    if runs("search"):
        engine = _engine_with(config, ckpt_a)
        search = BudgetSearchConfig(**{"batch_size": config.batch_size, **config.search})
        with _stage_bar(progress, "search", None, [engine]):
            found = minimal_budgets(engine, search_items, search)
        write_contract_jsonl(out / "onpolicy.jsonl", budget_records(search_items, found))
        _save_found(out / SEARCH_FILE, found)
        solved = [f for f in found if f.minimal_budget is not None]
        log(
            f"[recipe] minimal budgets: {len(solved)}/{len(found)} solved thinking freely; "
            f"median minimal {statistics.median([f.minimal_budget or 0 for f in solved] or [0])}"
            f" vs free {statistics.median([f.free_think_tokens for f in solved] or [0])} "
            "think tokens"
        )
        del engine
        step("search")

    if runs("phase_c"):
        phase_c = _phase_settings("C", 200, {"loss_weights": {"think_ce": 0.5}}, config.phase_c)
        onpolicy = _written_by(out / "onpolicy.jsonl", "search")
        resume = start == "phase_c"
        _train_phase(
            config, "phase_c", onpolicy, out / "phase_c", phase_c, ckpt_a, resume, progress
        )
        step("phase_c")

    final = out / "final"
    policy = BudgetPolicyConfig(
        **{"batch_size": config.batch_size, "seed": config.seed, **config.policy}
    )
    if runs("policy"):
        ckpt_c = _checkpoint_of(out / "phase_c", "phase_c")
        found = _load_found(out / SEARCH_FILE)
        _budget_policy(
            config, final, ckpt_c, search_items, found, policy, splits["dev"], log, progress
        )
        step("policy")

    calibration_path = final / CALIBRATION_FILE
    dev_items = _items(splits["dev"], "dev")
    engine = _engine_with(config, _written_by(final / CONFIG_NAME, "policy").parent)
    if runs("calibration"):
        total = len(dev_items) * (3 + len(config.exit_thresholds))
        with _stage_bar(progress, "calibration", total, [engine]):
            _calibration(config, engine, splits["dev"], dev_items, calibration_path, policy, log)
        step("calibration")

    engine.calibration = load_calibration(_written_by(calibration_path, "calibration"))
    test_items = _items(splits["test"], "test")
    plain, tokenizer, _ = load_recipe_model(config, None)
    reference_engine = Engine(plain, tokenizer, None, EngineConfig(budget_cap=config.free_budget))
    evaluation_bar = ExitStack()
    total = len(test_items) * (2 + len(config.sweep_budgets)) + len(dev_items)
    evaluation_bar.enter_context(
        _stage_bar(progress, "evaluation", total, [engine, reference_engine])
    )
    ref_rows, _ = decode_items(reference_engine, test_items, config.free_budget, config.batch_size)
    reference = {
        "budget": config.free_budget,
        "exact_match": _rate(ref_rows, "correct"),
        "avg_think_tokens": _rate(ref_rows, "think_tokens"),
    }
    artifacts = out / "artifacts"
    result = sweep_engine(
        engine,
        test_items,
        [*config.sweep_budgets, AUTO],
        split="test",
        out_dir=artifacts,
        batch_size=config.batch_size,
        source=str(out / "test.jsonl"),
    )
    auto_items = [r for r in result.items if r["budget"] == AUTO]
    deviations = [
        abs(r["think_tokens"] - r["applied_budget"]) / r["applied_budget"]
        for r in auto_items
        if r["applied_budget"]
    ]
    adherence = {
        "adherence_median": statistics.median(deviations) if deviations else 0.0,
        "empty_answers": float(sum(1 for r in auto_items if not str(r["prediction"]).strip())),
    }
    table, summary = result_table(reference, result.rows, adherence)
    dev_rows, _ = decode_items(reference_engine, dev_items, config.free_budget, config.batch_size)
    threshold = engine.calibration.exit_threshold
    served = next(
        (
            r
            for r in engine.calibration.fitted_on.get("exit_check", [])
            if r["threshold"] == threshold
        ),
        None,
    )
    if served is None:
        raise RecipeResumeError(
            f"{calibration_path}: fitted_on.exit_check holds no row for the exit threshold "
            f"{threshold}; the stage 'calibration' writes it"
        )
    summary["dev"] = {
        "n": len(dev_rows),
        "reference_exact_match": _rate(dev_rows, "correct"),
        "reference_think_tokens": _rate(dev_rows, "think_tokens"),
        "tina_exact_match": served["exact_match"],
        "tina_think_tokens": served["avg_think_tokens"],
        "exit_threshold": threshold,
    }
    table += dev_line(summary["dev"])
    evaluation_bar.close()
    step("evaluation")
    from tina.eval.plots import plot_sweep

    pngs, _ = plot_sweep(artifacts / "budget_sweep_test.csv", artifacts)
    summary["started_at"] = start
    summary["timings_s"] = timings
    summary["total_s"] = round(time.perf_counter() - started, 1)
    summary["plots"] = [str(p) for p in pngs]
    _write_text(artifacts / "budget_result.md", table)
    _write_text(artifacts / "budget_result.json", json.dumps(summary, indent=1) + "\n")
    _write_text(artifacts / "reference_items.json", json.dumps(ref_rows, indent=0) + "\n")
    log(table)
    if config.ship_to:
        ship(final, Path(config.ship_to))
        log(f"[recipe] shipped {final} -> {config.ship_to}")
    target = result_dir(config)
    if target is not None:
        place(final, target)
        log(f"[recipe] parts and calibration -> {target} (tina chat/serve load them there)")
    return summary


def result_dir(config: RecipeConfig) -> Path | None:
    """Where the final parts go besides `final/`: `out`, else the model's adapter directory
    (where `tina chat --adapter` finds them), else nowhere (the embedded model: `ship_to`)."""
    if config.out:
        return Path(config.out)
    m = config.model
    if m.get("base") and m.get("adapter"):
        root = Path(m.get("models_root") or ".") / m["adapter"]
        return root / m["subfolder"] if m.get("subfolder") else root
    return None


def place(final: Path, target: Path) -> None:
    """Copy each file of `final` into `target` atomically, leaving its other files (a LoRA's
    weights) as they are."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(p for p in final.iterdir() if p.is_file()):
        atomic_write(target / source.name, partial(shutil.copyfile, source))


def _budget_policy(
    config: RecipeConfig,
    final: Path,
    checkpoint: Path,
    search_items: list[EvalItem],
    found: list[BudgetFound],
    policy: BudgetPolicyConfig,
    dev_records: list[dict[str, Any]],
    log: Callable[[str], None],
    progress: bool = False,
) -> None:
    """The budget RL on the phase-C parts, then pruning; writes `final/` and, beside it, the
    history."""
    engine = _engine_with(config, checkpoint)
    engine.calibration = _policy_calibration(config)  # the policy learns under the serving rule
    policy_items = [it for it, f in zip(search_items, found, strict=True) if f.free_correct]
    history: list[dict[str, float]] = []
    if not policy_items:  # a reward needs a question the model can answer at some budget
        log(
            f"[recipe] the model solved none of the {len(search_items)} search items thinking "
            "freely: no budget policy, the budgets stay phase C's"
        )
    else:
        total = policy.iterations * policy.batch_size * policy.samples_per_item
        with _stage_bar(progress, "policy", total, [engine]):
            history = _policy_history(engine, policy_items, policy, log)
    _write_text(final.parent / "policy_history.json", json.dumps(history, indent=1) + "\n")
    _prune_and_save(config, engine, final, dev_records, log)


def _policy_history(
    engine: Engine,
    policy_items: list[EvalItem],
    policy: BudgetPolicyConfig,
    log: Callable[[str], None],
) -> list[dict[str, float]]:
    """`train_budget_policy`, its iterations logged."""
    return train_budget_policy(
        engine,
        policy_items,
        policy,
        lambda r: log(
            f"[policy] {int(r['iteration'])}: reward {r['reward']:.3f} "
            f"acc {r['accuracy']:.3f} think {r['think_tokens']:.1f} "
            f"budget {r['budget']:.1f} std {r['std']:.3f}"
        ),
    )


def _prune_and_save(
    config: RecipeConfig,
    engine: Engine,
    final: Path,
    dev_records: list[dict[str, Any]],
    log: Callable[[str], None],
) -> None:
    """Dead side adapters pruned (scored on the dev records), then the parts saved in `final`."""
    from tina.train.data import example_from_record
    from tina.train.pruning import prune_dead_adapters

    assert engine.introspection is not None
    dev_examples = [example_from_record(engine.tokenizer, r) for r in dev_records]
    pruned, _ = prune_dead_adapters(
        engine.model,
        engine.introspection,
        dev_examples,
        engine.tokenizer.pad_token_id,
        config.prune_gates_below,
    )
    log(f"[recipe] pruned side adapters {pruned} (gate score < {config.prune_gates_below})")
    save_introspection(engine.introspection, final)


def _calibration(
    config: RecipeConfig,
    engine: Engine,
    dev_records: list[dict[str, Any]],
    dev_items: list[EvalItem],
    calibration_path: Path,
    policy: BudgetPolicyConfig,
    log: Callable[[str], None],
) -> None:
    """Calibration and the exit threshold on the dev split; writes the calibration file."""
    from tina.eval.calibrate import calibrate_on_records
    from tina.eval.exit_check import fit_exit_threshold

    engine.calibration = _policy_calibration(config)  # as the policy left the engine
    figures = calibrate_on_records(engine, dev_records, calibration_path)
    log(f"[recipe] calibration: {json.dumps({k: round(v, 4) for k, v in figures.items()})}")
    engine.calibration = load_calibration(calibration_path)
    threshold, tried = fit_exit_threshold(
        engine,
        dev_items,
        [None, *config.exit_thresholds],
        policy.lam,
        config.batch_size,
    )
    for row in tried:
        log(
            f"[recipe] exit threshold {row['threshold']}: exact match {row['exact_match']:.4f}, "
            f"think {row['avg_think_tokens']:.1f}, reward {row['reward']:.4f}, "
            f"checks {row['exit_checks']:.2f} (dev)"
        )
    # the confidence again, now on the answers the check serves (it changes a few of them)
    engine.calibration.exit_threshold = threshold
    figures = calibrate_on_records(engine, dev_records, calibration_path)
    log(f"[recipe] calibration: {json.dumps({k: round(v, 4) for k, v in figures.items()})}")
    calibration = load_calibration(calibration_path)
    calibration.fitted_on["exit_check"] = tried
    save_calibration(calibration, calibration_path)
    log(f"[recipe] exit threshold: {threshold}")


def ship(final: Path, target: Path) -> None:
    """Copy the final parts and calibration into `target` as a whole
    (`tina.core.atomic.atomic_directory`: chat sees the old parts or the new ones, never a mix)."""
    with atomic_directory(target) as tmp:
        shutil.copytree(final, tmp, dirs_exist_ok=True)


def default_ship_dir() -> Path:
    """Where `--ship` puts the parts: the embedded model's `introspection/` directory."""
    return embedded_model_dir() / SHIPPED_INTROSPECTION
