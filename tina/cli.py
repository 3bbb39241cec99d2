"""The `tina` command: one entry, subcommands mapped to plain functions.

Each subcommand is a function `cmd_<name>(args) -> int` whose docstring's first line is its help
text; `build_parser` wires their arguments. Heavy imports happen inside the functions so that
`tina --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def cmd_data(args: argparse.Namespace) -> int:
    """Write synthetic task records as contract JSONL."""
    from tina.data.contract import write_contract_jsonl
    from tina.data.tasks import ALL_TASKS, TASKS, generate_records

    tasks = list(ALL_TASKS) if args.task == "all" else args.task.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        print(
            f"error: --task: unknown task(s) {unknown}; choose from {sorted(TASKS)} or 'all'",
            file=sys.stderr,
        )
        return 2
    records = []
    for task in tasks:
        try:
            if args.heldout_from:
                records += _heldout_records(task, args)
            else:
                records += generate_records(
                    task,
                    args.n,
                    seed=args.seed,
                    style=args.style,
                    difficulties=args.difficulty,
                    phrasing=args.phrasing,
                )
        except ValueError as exc:
            flag = "--phrasing" if "phrasing" in str(exc) else "--difficulty"
            print(f"error: {flag}: {exc}", file=sys.stderr)
            return 2
    if args.questions:
        from tina.data.questions import question_line, write_questions

        try:
            lines = [question_line(r) for r in records]
        except ValueError as exc:
            print(f"error: --questions: {exc}", file=sys.stderr)
            return 2
        count = write_questions(args.out, lines)
        print(f"wrote {count} questions to {args.out}")
        return 0
    count = write_contract_jsonl(args.out, records)
    print(f"wrote {count} records to {args.out}")
    return 0


def _heldout_records(task: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """`args.n` records of `task` per difficulty whose questions the adapter `tina sft` wrote
    in `args.heldout_from` never trained on (seen ones only where the space is too small),
    each question once, ids `<task>-d<difficulty>-<i>`."""
    from tina.data.tasks import TASKS
    from tina.eval.quality import heldout_items
    from tina.train.sft import adapter_training_questions

    seen = adapter_training_questions(Path(args.heldout_from))
    difficulties = args.difficulty or list(TASKS[task].difficulties)
    out: list[dict[str, Any]] = []
    for d in difficulties:
        kept: dict[str, dict[str, Any]] = {}
        for record in heldout_items(task, d, 2 * args.n, args.seed, seen):
            kept.setdefault(record["meta"]["question"], record)
        for i, record in enumerate(list(kept.values())[: args.n]):
            out.append({**record, "id": f"{task}-d{d}-{i}"})
    return out


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Train the embedded reasoning model from scratch (tokenizer + small Qwen2)."""
    import torch

    from tina.train.bootstrap import BootstrapConfig, bootstrap

    if args.threads:
        torch.set_num_threads(args.threads)
    config = BootstrapConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    summary = bootstrap(config, Path(args.out))
    size_mb = (Path(args.out) / "model.safetensors").stat().st_size / 1e6
    print(
        f"saved {args.out}: {summary['parameters']:,} parameters, {size_mb:.1f} MB, "
        f"trained in {summary['train_seconds']:.0f}s, final loss {summary['final_loss']:.4f}"
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a GGUF model file into a plain Hugging Face model directory."""
    from tina.core.gguf import convert_gguf

    out = convert_gguf(args.file, args.out)
    print(f"wrote {out} (load it with --base, or AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Chat with a reasoning model; only the answer is shown unless --visible-cot."""
    from tina.chat import run_chat

    return run_chat(args)


def cmd_observe(args: argparse.Namespace) -> int:
    """Run prompts through the engine and write structured JSONL observation logs."""
    from tina.observe import run_observe

    return run_observe(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the engine over an OpenAI-compatible HTTP API (chat completions, SSE streaming)."""
    from tina.serve.app import run_serve

    return run_serve(args)


def cmd_quality(args: argparse.Namespace) -> int:
    """Accuracy per task and difficulty with full, cut and no thinking."""
    from tina.core.introspection import load_introspective_model
    from tina.core.models import embedded_model_dir
    from tina.eval.quality import (
        DEFAULT_SHARES,
        DEFAULT_SUITE,
        evaluate_quality,
        parse_shares,
        parse_suite,
        quality_markdown_table,
        write_quality,
    )
    from tina.train.bootstrap import seen_questions_of
    from tina.train.sft import adapter_training_questions

    try:
        suite = parse_suite(args.suite) if args.suite else DEFAULT_SUITE
        shares = parse_shares(args.shares) if args.shares else DEFAULT_SHARES
    except ValueError as exc:
        print(f"error: --suite/--shares: {exc}", file=sys.stderr)
        return 2
    if args.base:
        root = Path(args.models_root or ".")
        model, tokenizer, _ = load_introspective_model(
            root, args.base, args.adapter, args.subfolder
        )
        adapter_dir = None
        if args.adapter:
            adapter_dir = root / args.adapter / (args.subfolder or "")
        seen = seen_questions_of(root / args.base)
        seen |= adapter_training_questions(adapter_dir) if adapter_dir else set()
    else:
        model_dir = Path(args.model) if args.model else embedded_model_dir()
        model, tokenizer, _ = load_introspective_model(model_dir.parent, model_dir.name)
        seen = seen_questions_of(model_dir)
    started = time.perf_counter()
    rows = evaluate_quality(
        model,
        tokenizer,
        suite=suite,
        n=args.n,
        shares=shares,
        batch_size=args.batch_size,
        seen_questions=seen,
        progress=lambda line: print(line, flush=True),
    )
    csv_path, md_path = write_quality(rows, Path(args.out))
    print(quality_markdown_table(rows))
    print(f"wrote {csv_path} and {md_path} in {time.perf_counter() - started:.0f}s")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check configs, tokenizer tags and adapters; report every problem at once."""
    from tina.validate import default_paths, run_validation

    paths = args.paths or default_paths()
    report = run_validation(paths, base=args.base)
    for problem in report.problems:
        print(problem)
    if report.problems:
        count = len(report.problems)
        print(f"error: {count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 1
    print(f"ok: {len(report.files_checked)} files checked")
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    """A training run's last metrics line, floats rounded, as `done: {…}`."""
    if summary:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
        print(f"done: {shown}")


def cmd_train(args: argparse.Namespace) -> int:
    """Train the introspection parts (phases from train_config.yaml), resumable."""
    from tina.core.checks import ConfigError
    from tina.train.checkpoints import CheckpointError
    from tina.train.config import load_train_config
    from tina.train.data import TrainDataError
    from tina.training import run

    overrides: dict[str, Any] = {}
    if args.one_cycle:
        if not args.data:
            print("error: --one-cycle needs --data FILE", file=sys.stderr)
            return 2
        overrides = {"steps": args.steps or 20, "save_every": args.steps or 20, "log_every": 5}
    elif args.steps:
        overrides["steps"] = args.steps
    if args.data:
        overrides["train_data"] = args.data
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    try:
        config = load_train_config(args.train_config, overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not config.train_data and config.mode != "self_play":
        print(
            f"error: {args.train_config}: train_data: no training data given (or use --data)",
            file=sys.stderr,
        )
        return 2
    try:
        summary = run(config, resume=args.resume, progress=not args.no_progress)
    except (TrainDataError, CheckpointError) as exc:  # raised before anything is written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    """LoRA fine-tuning of a pretrained model on reasoning records (a PEFT adapter), resumable."""
    import torch

    from tina.core.checks import ConfigError
    from tina.train.checkpoints import CheckpointError
    from tina.train.data import TrainDataError
    from tina.train.sft import sft
    from tina.train.sft_config import load_sft_config

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {}
    for key in ("steps", "output_dir", "base", "models_root"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.data:
        overrides["train_data"] = list(args.data)
    try:
        config = load_sft_config(args.config, overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        summary = sft(config, resume=args.resume, progress=not args.no_progress)
    except (TrainDataError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


def cmd_phrasings(args: argparse.Namespace) -> int:
    """Held-out phrasings and out-of-scope prompts through the engine as served."""
    from tina.core.atomic import atomic_write_json, atomic_write_text
    from tina.core.checks import json_safe
    from tina.eval.phrasings import evaluate_phrasings, phrasings_markdown
    from tina.eval.sweep import AUTO, SweepError
    from tina.serve.runtime import load_engine

    budget: Any = AUTO
    if args.budget != AUTO:
        try:
            budget = int(args.budget)
            if budget < 0:
                raise ValueError
        except ValueError:
            print(
                f"error: --budget: expected an integer >= 0 or 'auto', got {args.budget!r}",
                file=sys.stderr,
            )
            return 2
    engine, _ = load_engine(args)
    started = time.perf_counter()
    try:
        report = evaluate_phrasings(engine, n_per_cell=args.n, seed=args.seed, budget=budget)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = phrasings_markdown(report)
    out = Path(args.out)
    atomic_write_text(out / "phrasings.md", table)
    atomic_write_json(
        out / "phrasings.json",
        json_safe(
            {
                "groups": report.groups,
                "out_of_scope": report.out_of_scope,
                "confidence": report.confidence,
                "n_per_cell": args.n,
                "seed": args.seed,
                "budget": str(budget),
                "rows": report.rows,
            }
        ),
    )
    print(table + f"({time.perf_counter() - started:.0f}s; wrote {out}/phrasings.md, .json)")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Quality, confidence and leakage at fixed think budgets and auto, through the engine."""
    from tina.eval.sweep import (
        SweepError,
        load_eval_items,
        parse_budgets,
        sweep_engine,
        sweep_markdown_table,
    )
    from tina.serve.runtime import load_engine

    try:
        budgets = parse_budgets(args.budgets)
    except ValueError as exc:
        print(f"error: --budgets: {exc}", file=sys.stderr)
        return 2
    items = load_eval_items(args.data, args.split)
    engine, _ = load_engine(args)
    try:
        result = sweep_engine(
            engine,
            items,
            budgets,
            split=args.split,
            out_dir=args.out,
            batch_size=args.batch_size,
            n_bins=args.n_bins,
            progress=not args.no_progress,
            source=args.data,
        )
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(sweep_markdown_table(result.rows))
    print("wrote " + ", ".join(str(p) for p in result.paths.values()))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit confidence temperature, plan thresholds and budget clip on evaluation data."""
    from tina.eval.calibrate import report_lines, run_calibration
    from tina.eval.sweep import SweepError, load_eval_items, parse_budgets
    from tina.serve.runtime import load_engine

    try:
        (budget,) = parse_budgets(args.budget)
    except ValueError as exc:
        print(f"error: --budget: expected one integer ≥ 0 or 'auto' ({exc})", file=sys.stderr)
        return 2
    items = load_eval_items(args.data, args.split)
    engine, _ = load_engine(args)
    try:
        fit = run_calibration(
            engine,
            items,
            args.out,
            budget=budget,
            batch_size=args.batch_size,
            n_bins=args.n_bins,
            progress=not args.no_progress,
            source=args.data,
        )
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(items)} items from {args.data}, budget {budget}")
    print("\n".join(report_lines(fit)))
    print(f"wrote {fit.path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot a budget sweep: quality vs think tokens, reliability, predicted vs used budget."""
    from tina.eval.plots import plot_sweep

    written, notes = plot_sweep(args.csv, args.out, args.items, n_bins=args.n_bins)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    """Configure, launch, watch and stop a training run in a terminal UI."""
    from tina.tui import run_tui

    return run_tui(args.train_config)


def cmd_recipe(args: argparse.Namespace) -> int:
    """Run the think-less recipe (phases A→C, budget RL, calibration, the result table)."""
    from tina.core.checks import ConfigError
    from tina.data.questions import QuestionFileError, read_questions
    from tina.recipe import (
        RecipeResumeError,
        RecipeStopped,
        check_stage,
        default_ship_dir,
        load_recipe_config,
        run_recipe,
    )
    from tina.train.data import TrainDataError

    try:
        config = load_recipe_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        check_stage(args.start)
    except ValueError as exc:
        print(f"error: --from: {exc}", file=sys.stderr)
        return 2
    if args.output_dir:
        config.output_dir = args.output_dir
    for key in ("models_root", "base", "adapter", "subfolder"):
        if getattr(args, key) is not None:
            config.model[key] = getattr(args, key)
    if config.model and not config.model.get("base"):
        print("error: --models-root/--adapter/--subfolder need --base", file=sys.stderr)
        return 2
    if args.questions:
        config.questions = args.questions
    if args.out:
        config.out = args.out
    if args.ship:
        if config.model.get("base"):
            print(
                "error: --ship is the embedded model's (use --out for this model)", file=sys.stderr
            )
            return 2
        config.ship_to = str(default_ship_dir())
    try:
        if config.questions and args.start == "data":  # every line checked before a model loads
            read_questions(config.questions)
        run_recipe(config, start=args.start, progress=not args.no_progress)
    except (RecipeResumeError, TrainDataError, QuestionFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RecipeStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a stage's train config (the recipe's phase_a / phase_c keys)
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    return 0


Command = Callable[[argparse.Namespace], int]


def _add(sub: Any, name: str, fn: Command) -> argparse.ArgumentParser:
    help_line = (fn.__doc__ or "").strip().splitlines()[0]
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_line, description=help_line)
    parser.set_defaults(func=fn)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tina", description="Introspective reasoning for small local LMs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _add(sub, "data", cmd_data)
    p.add_argument("--task", required=True, help="task name, comma-separated names, or 'all'")
    p.add_argument("--n", type=int, default=100, help="records per task")
    p.add_argument("--style", choices=("concise", "verbose"), default="concise", help="trace style")
    p.add_argument(
        "--phrasing",
        choices=("canonical", "varied", "heldout"),
        default="canonical",
        help="question forms of the arithmetic tasks: the suite's own, people's (training "
        "grammar), or the held-out forms no training run sees",
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--difficulty", type=_csv_ints, default=None, help="difficulties, e.g. 1,2,3")
    p.add_argument("--out", required=True, help="output JSONL file (written atomically)")
    p.add_argument(
        "--questions",
        action="store_true",
        help="write a question file (question, answer, task, difficulty; no traces)",
    )
    p.add_argument(
        "--heldout-from",
        default=None,
        metavar="ADAPTER_DIR",
        help="--n per difficulty, questions this `tina sft` adapter never trained on",
    )

    p = _add(sub, "bootstrap", cmd_bootstrap)
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--seed", type=int, default=0, help="seed of data, weights and batch order")
    p.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: the recipe's)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")

    p = _add(sub, "chat", cmd_chat)
    from tina.serve.runtime import add_decoding_arguments, add_model_arguments

    add_model_arguments(p)
    p.add_argument("--prompt", default=None, help="answer this one question and exit")
    p.add_argument("--no-stream", action="store_true", help="print the answer only when complete")
    p.add_argument("--visible-cot", action="store_true", help="show the thinking too")
    add_decoding_arguments(p)
    p.add_argument(
        "--json", action="store_true", help="print one JSON object: answer and telemetry"
    )

    p = _add(sub, "observe", cmd_observe)
    from tina.core.checks import parse_bool
    from tina.observe import DEFAULT_BATCH_SIZE, DEFAULT_JSONL_OUT
    from tina.serve.runtime import add_decoding_arguments, add_model_arguments

    add_model_arguments(p)
    p.add_argument("--prompt", action="append", default=None, help="a question to run (repeatable)")
    p.add_argument(
        "--prompts-file", default=None, help="file of questions, one per line (blank lines skipped)"
    )
    p.add_argument(
        "--jsonl-out",
        default=DEFAULT_JSONL_OUT,
        help=f"JSONL log to append to (default: {DEFAULT_JSONL_OUT})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"prompts per engine batch (default: {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--visible-cot",
        type=parse_bool,
        nargs="?",
        const=True,
        default=None,
        metavar="BOOL",
        help="show the thinking (alone, or true/false; default: the service config's)",
    )
    p.add_argument(
        "--debug-per-layer", action="store_true", help="log the heads' outputs per tapped layer"
    )
    p.add_argument(
        "--log-raw", action="store_true", help="write logs unredacted (default: redact PII)"
    )
    add_decoding_arguments(p)

    p = _add(sub, "train", cmd_train)
    p.add_argument(
        "--train-config",
        default="train_config.yaml",
        help="training YAML (default: ./train_config.yaml)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="total optimizer steps (overrides the config)"
    )
    p.add_argument("--data", default=None, help="contract JSONL to train on (overrides the config)")
    p.add_argument("--output-dir", default=None, help="checkpoints and metrics directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--one-cycle", action="store_true", help="smoke run: a few phase-A steps on --data"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(sub, "sft", cmd_sft)
    p.add_argument(
        "--config", default="configs/sft_smollm2.yaml", help="sft YAML (default: %(default)s)"
    )
    p.add_argument("--models-root", default=None, help="where --base is found (overrides)")
    p.add_argument("--base", default=None, help="base model directory or .gguf (overrides)")
    p.add_argument(
        "--data", action="append", default=None, help="contract JSONL (repeatable; overrides)"
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides)")
    p.add_argument("--output-dir", default=None, help="checkpoints and metrics directory")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(sub, "serve", cmd_serve)
    from tina.serve.flags import add_serve_arguments
    from tina.serve.runtime import add_model_arguments

    add_model_arguments(p)
    add_serve_arguments(p)

    p = _add(sub, "recipe", cmd_recipe)
    p.add_argument(
        "--config", default="configs/budget_recipe.yaml", help="recipe YAML (default: %(default)s)"
    )
    p.add_argument("--output-dir", default=None, help="where the run writes (overrides the config)")
    p.add_argument("--models-root", default=None, help="with --base: the models root")
    p.add_argument("--base", default=None, help="the base model directory (default: embedded)")
    p.add_argument("--adapter", default=None, help="a PEFT adapter under --models-root")
    p.add_argument("--subfolder", default=None, help="the adapter's checkpoint subfolder")
    p.add_argument(
        "--questions", default=None, help="a question file (JSONL) instead of the task suite"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--out",
        default=None,
        help="copy the final parts + calibration here (default: beside --adapter)",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="copy the result into the embedded model's introspection/ (chat's default)",
    )
    p.add_argument(
        "--from",
        dest="start",
        default="data",
        metavar="STAGE",
        help="start at this stage (data, phase_a, search, phase_c, policy, calibration, "
        "evaluation); the earlier stages' files in the output dir are read (default: "
        "%(default)s, the whole run)",
    )

    p = _add(sub, "quality", cmd_quality)
    p.add_argument("--model", default=None, help="local HF model directory (default: embedded)")
    p.add_argument("--models-root", default=None, help="directory holding --base and --adapter")
    p.add_argument("--base", default=None, help="base model under --models-root (or --model)")
    p.add_argument("--adapter", default=None, help="PEFT adapter directory under --models-root")
    p.add_argument("--subfolder", default=None, help="checkpoint subfolder of --adapter")
    p.add_argument(
        "--suite", default=None, help="tasks and levels, e.g. 'add=2,3;mul=2' (default: all)"
    )
    p.add_argument("--shares", default=None, help="think shares, e.g. 'full,0.5,0' (default)")
    p.add_argument("--batch-size", type=int, default=64, help="rows decoded together")
    p.add_argument("--n", type=int, default=100, help="held-out items per task and difficulty")
    p.add_argument("--out", default="artifacts", help="directory for quality.csv and quality.md")

    from tina.serve.runtime import add_model_arguments

    p = _add(sub, "phrasings", cmd_phrasings)
    add_model_arguments(p)
    p.add_argument("--n", type=int, default=30, help="held-out phrasings per task and difficulty")
    p.add_argument("--seed", type=int, default=7000, help="seed of the phrasing draw")
    p.add_argument("--budget", default="auto", help="think budget: auto (the heads) or tokens")
    p.add_argument("--out", default="artifacts", help="directory for phrasings.md and .json")

    p = _add(sub, "sweep", cmd_sweep)

    add_model_arguments(p)
    p.add_argument("--data", required=True, help="contract JSONL of evaluation items")
    p.add_argument(
        "--budgets", default="16,32,64", help="think budgets, e.g. 0,16,32,64,auto (auto: heads)"
    )
    p.add_argument("--split", default="dev", help="split name (filters records with a split field)")
    p.add_argument("--out", default="artifacts", help="directory for budget_sweep_<split>.*")
    p.add_argument("--batch-size", type=int, default=16, help="requests per engine batch")
    p.add_argument("--n-bins", type=int, default=10, help="equal-width bins of the ECE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(sub, "calibrate", cmd_calibrate)
    from tina.core.calibration import CALIBRATION_FILE

    add_model_arguments(p)
    p.add_argument("--data", required=True, help="contract JSONL of evaluation items")
    p.add_argument(
        "--out",
        default=f"artifacts/{CALIBRATION_FILE}",
        help=f"calibration JSON to write (default: artifacts/{CALIBRATION_FILE})",
    )
    p.add_argument("--budget", default="auto", help="think budget of the eval: auto or an integer")
    p.add_argument("--split", default=None, help="keep only records of this split (if marked)")
    p.add_argument("--batch-size", type=int, default=16, help="requests per engine batch")
    p.add_argument("--n-bins", type=int, default=10, help="equal-width bins of the ECE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(sub, "plot", cmd_plot)
    p.add_argument("--csv", required=True, help="budget_sweep_<split>.csv from tina sweep")
    p.add_argument("--out", default="artifacts", help="directory for the PNG files")
    p.add_argument(
        "--items", default=None, help="items CSV (default: <csv stem>_items.csv beside --csv)"
    )
    p.add_argument("--n-bins", type=int, default=10, help="bins of the reliability diagram")

    p = _add(sub, "tui", cmd_tui)
    p.add_argument(
        "--train-config",
        default="train_config.yaml",
        help="training YAML the form starts from (default: ./train_config.yaml)",
    )

    p = _add(sub, "convert", cmd_convert)
    p.add_argument("file", help="the .gguf file (llama.cpp, Ollama, LM Studio)")
    p.add_argument("--out", required=True, help="the HF model directory to write")

    p = _add(sub, "validate", cmd_validate)
    p.add_argument(
        "paths", nargs="*", help="model/adapter dirs or config files (default: shipped + embedded)"
    )
    p.add_argument("--base", default=None, help="base model directory for adapter checks")
    return parser


#: the optional modules a command may need, and the extra (pyproject.toml) that installs each
EXTRA_OF_MODULE = {
    "fastapi": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "textual": "tui",
    "matplotlib": "plots",
    "tensorboard": "tensorboard",
    "gguf": "gguf",
}


def missing_extra(command: str, exc: ModuleNotFoundError) -> int:
    """For a module of an extra that is not installed: one line naming the extra to install,
    exit code 2. Any other missing module is a bug, raised again."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
    if extra is None:
        raise exc
    print(
        f"tina {command}: needs the '{extra}' extra: pip install 'tina[{extra}]'", file=sys.stderr
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; returns its exit code.

    Bad input a user can fix (a missing file, a broken config, calibration or data file) is
    reported in one line naming the file, with exit code 2, not as a traceback; so is a command
    whose optional extra is not installed (`missing_extra`)."""
    from tina.core.calibration import CalibrationError
    from tina.core.checks import ConfigError
    from tina.core.gguf import GGUFError
    from tina.data.contract import ContractError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (CalibrationError, ConfigError, ContractError, GGUFError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        return missing_extra(args.command, exc)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
