"""One self-play iteration, the policy update, and the self-play runs the trainer starts.

An iteration (`self_play_iteration`): **propose** (`num_propose` proposals of one mode, invalid
ones replaced by composed tasks — with `demonstrate`, also written as the answer the proposer
should have given — new tasks into the buffer), **solve** (new and `num_solve` buffer tasks,
`num_mc_rollouts` times each through the engine, verified in the sandbox), **rewards**
(`tina.selfplay.rewards`, advantages per (mode, role)), **update** (`policy_loss`: REINFORCE on
the credited tokens plus `kl_coef` · KL to the reference, the same model with the side adapters
and the self-play LoRA off; one AdamW step over those parts). Each step in detail:
docs/selfplay.md.

Runs: `train_self_play(train_config)` is the trainer's `self_play` mode (iterations, checkpoints
and metrics lines with `mode`/`role` through `tina.train.checkpoints`, resume, SIGTERM; a
held-out evaluation per `eval_modes` before the first iteration and every `eval_every`, the best
mean kept as `best/`); `HybridSchedule` runs iterations between the supervised steps of `hybrid`
mode.

What it does not do: train the heads or the base, carry the task buffer over a resume of a
hybrid run (it seeds a fresh one), or split iterations across processes.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tina.core.atomic import atomic_directory, atomic_write_json
from tina.core.introspection import inner_model, load_introspection, remove_introspection
from tina.core.side_adapters import think_mask_context
from tina.data.sandbox import SandboxConfig
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.selfplay.buffer import BufferConfig, TaskBuffer, seed_buffer
from tina.selfplay.lora import (
    add_selfplay_lora,
    load_lora,
    lora_parameters,
    reference_policy,
    save_lora,
)
from tina.selfplay.proposer import INVALID_CATEGORIES, cold_start_rows, invalid_category, propose
from tina.selfplay.rewards import (
    hard_task_flags,
    histogram,
    learnability,
    metacog_boost,
    normalized_advantages,
    proposer_rewards,
    solve_rates,
    solver_rewards,
)
from tina.selfplay.solver import Rollout, heldout_tasks, solve, solved_greedy
from tina.selfplay.tasks import Task, mode_of
from tina.train.checkpoints import (
    StopFlag,
    latest_checkpoint,
    load_checkpoint,
    load_parts,
    save_checkpoint,
    seed_everything,
    write_metrics,
)
from tina.train.selfplay_config import SelfPlayConfig

HIST_BINS = 5
COLD_START_SOLVED = 128  #: buffer tasks the cold start solves for its solver rows
BEST_DIR = "best"  #: the checkpoint with the best mean held-out solve rate, in the output dir
BEST_FILE = "best.json"  #: in `best/`: the iteration and held-out rates it was kept for


@dataclass
class SelfPlayState:
    """What persists across iterations."""

    model: Any
    tokenizer: Any
    intro: Any  #: `tina.core.introspection.Introspection` (adapters trained, heads read)
    config: SelfPlayConfig
    buffer: TaskBuffer
    optimizer: torch.optim.Optimizer
    rng: random.Random
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    iteration: int = 0  #: iterations done

    @property
    def engine(self) -> Engine:
        budget = max(self.config.solve_budget, self.config.propose_budget)
        return Engine(
            self.model, self.tokenizer, self.intro, EngineConfig(slack_ratio=0.0, budget_cap=budget)
        )


def policy_parameters(model: Any, intro: Any) -> list[torch.nn.Parameter]:
    """What self-play trains: the side adapters' parameters and the self-play LoRA's."""
    return list(intro.adapters.parameters()) + lora_parameters(model)


def new_state(model: Any, tokenizer: Any, intro: Any, config: SelfPlayConfig) -> SelfPlayState:
    """A state with a seeded buffer and an AdamW over the policy parameters (a ValueError when
    there are none: no side adapters and no `lora_r`)."""
    buffer = TaskBuffer(BufferConfig(config.buffer_size, config.buffer_policy, config.seed))
    seed_buffer(buffer, config.seed_tasks_per_mode, seed=config.seed)
    params = policy_parameters(model, intro)
    if not params:
        raise ValueError(
            "self-play has nothing to train: the introspection parts have no side adapters "
            "(adapter_layers is empty) and self_play.lora_r is 0"
        )
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    return SelfPlayState(
        model, tokenizer, intro, config, buffer, optimizer, random.Random(config.seed)
    )


# --- the update --------------------------------------------------------------------------------


def policy_loss(
    model: Any,
    rollouts: Sequence[Rollout],
    advantages: Sequence[float],
    kl_coef: float,
    tokenizer: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """−mean(A · token-mean log π(credited tokens)) + kl_coef · mean KL(π ‖ π_ref) over the
    credited positions (see module docstring). Rows are prompt + completion, right-padded; the
    think mask is 1 on the think tokens of the completion. The output head runs only at the
    positions that predict a credited token (a 49k-token vocabulary over every position would
    be most of the step)."""
    device = next(model.parameters()).device
    prompts = [tokenizer.encode(r.prompt, add_special_tokens=False) for r in rollouts]
    width = max(len(p) + len(r.completion_ids) for p, r in zip(prompts, rollouts, strict=True))
    n = len(rollouts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((n, width), pad, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    think = torch.zeros((n, width), dtype=torch.long)
    scored = torch.zeros((n, width), dtype=torch.float32)  # positions whose token is credited
    for i, (prompt, r) in enumerate(zip(prompts, rollouts, strict=True)):
        p, c = len(prompt), len(r.completion_ids)
        ids[i, : p + c] = torch.tensor(prompt + r.completion_ids)
        attention[i, : p + c] = 1
        think[i, p : p + c] = torch.tensor(r.think, dtype=torch.long)
        scored[i, p : p + c] = torch.tensor(r.sampled, dtype=torch.float32)
    ids, attention, think, scored = (t.to(device) for t in (ids, attention, think, scored))
    where = scored[:, 1:] > 0  # (B, T-1): the hidden state at t predicts the token at t+1
    targets = ids[:, 1:][where]  # (K,)
    with think_mask_context(think):
        logits = _logits_at(model, ids, attention, where)
    logp = F.log_softmax(logits, -1)  # (K, V)
    token_logp = logp.gather(-1, targets[:, None]).squeeze(-1)  # (K,)
    row = torch.arange(n, device=device)[:, None].expand_as(where)[where]  # (K,) row of each
    per_row = torch.zeros(n, device=device).index_add_(0, row, torch.ones_like(token_logp))
    seq_logp = torch.zeros(n, device=device).index_add_(0, row, token_logp) / per_row.clamp(min=1.0)
    adv = torch.tensor(list(advantages), dtype=torch.float32, device=device)
    pg = -(adv * seq_logp).mean()
    kl = torch.zeros((), device=device)
    if kl_coef > 0:  # the reference forward only when the KL term counts
        with torch.no_grad(), reference_policy(model):  # side adapters off outside the mask
            ref_logp = F.log_softmax(_logits_at(model, ids, attention, where), -1)
        kl_tok = (logp.exp() * (logp - ref_logp)).sum(-1)  # (K,)
        kl = kl_tok.sum() / max(1, kl_tok.numel())
    loss = pg + kl_coef * kl
    stats = {"pg_loss": float(pg.detach()), "kl": float(kl.detach()), "tokens": float(where.sum())}
    return loss, stats


def _logits_at(
    model: Any, ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor
) -> torch.Tensor:
    """(K, V) float32 logits of the hidden states at the `where` positions of `ids[:, :-1]`."""
    inner = inner_model(model)
    hidden = inner.get_decoder()(input_ids=ids, attention_mask=attention).last_hidden_state
    return inner.get_output_embeddings()(hidden[:, :-1][where]).float()


def update(state: SelfPlayState, rollouts: Sequence[Rollout], advantages: Sequence[float]) -> dict:
    """One optimizer step on the rows with a nonzero advantage (the others would only add the
    KL term); the adapters train, everything else keeps its `requires_grad`."""
    chosen = [(r, a) for r, a in zip(rollouts, advantages, strict=True) if a != 0.0]
    if not chosen:
        return {"pg_loss": 0.0, "kl": 0.0, "tokens": 0.0, "updated_rows": 0.0}
    params = policy_parameters(state.model, state.intro)
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        loss, stats = policy_loss(
            state.model,
            [r for r, _ in chosen],
            [a for _, a in chosen],
            state.config.kl_coef,
            state.tokenizer,
        )
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, state.config.grad_clip)
        state.optimizer.step()
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
    return {**stats, "updated_rows": float(len(chosen))}


# --- one iteration ------------------------------------------------------------------------------


def self_play_iteration(state: SelfPlayState) -> dict[str, dict[str, Any]]:
    """Propose → solve → rewards → update (module docstring); metrics per role."""
    cfg, rng = state.config, state.rng
    started = time.perf_counter()
    was_training = state.model.training
    state.model.eval()  # deterministic gates: the update scores the policy that sampled
    try:
        engine = state.engine
        it = state.iteration
        modes = cfg.task_types
        # one mode per iteration for the proposals, so they form one (mode, "propose") group
        propose_modes = [modes[it % len(modes)]] * cfg.num_propose
        proposed = propose(
            engine,
            state.buffer,
            propose_modes,
            rng,
            cfg.num_references,
            cfg.propose_budget,
            cfg.propose_answer_tokens,
            cfg.temperature,
            cfg.top_p,
            cfg.seed * 7_919 + 2 * it,
            state.sandbox,
            cfg.induction_heldout,
            cfg.compose_max_statements,
            cfg.demonstrate,
        )
        t_propose = time.perf_counter()
        new_tasks = [p.task for p in proposed]
        added = state.buffer.extend(new_tasks)
        replay: list[Task] = []
        for j in range(cfg.num_solve):
            mode = modes[(it * cfg.num_solve + j) % len(modes)]
            replay += state.buffer.sample(1, rng, mode)
        tasks = new_tasks + replay
        rollouts, correct = solve(
            engine,
            tasks,
            cfg.num_mc_rollouts,
            cfg.solve_budget,
            cfg.solve_answer_tokens,
            cfg.temperature,
            cfg.top_p,
            cfg.seed * 7_919 + 2 * it + 1,
            state.sandbox,
        )
        t_solve = time.perf_counter()
        for r in rollouts:
            r.mode = mode_of(r.extra["task"])
        rates = solve_rates(correct, cfg.num_mc_rollouts)
        learn = learnability(rates)
        if cfg.metacog_guidance:
            first = rollouts[:: cfg.num_mc_rollouts]  # one per task: the heads read the prompt
            seen = [r.telemetry for r in first if r.telemetry is not None]
            flags = hard_task_flags(
                [t.confidence_before or 0.0 for t in seen],
                [t.predicted_budget or 0.0 for t in seen],
                [t.plan or "" for t in seen],
                cfg.low_confidence,
                cfg.tiny_budget,
            )
            learn = metacog_boost(learn, flags, cfg.guidance_boost)
        solve_r = solver_rewards(
            correct,
            [r.extra["well_formed"] for r in rollouts],
            cfg.lambda_solver,
            cfg.lambda_format,
        )
        train_rows: list[Rollout] = list(rollouts)
        rewards: list[float] = list(solve_r)
        propose_r: list[float] = []
        model_proposals = [p for p in proposed if p.rollout is not None]
        if model_proposals:
            # the model's rows (−λ_format when invalid), then the demonstrations of the composed
            # tasks that replaced invalid ones (rewarded as valid proposals of their task)
            sampled = [(i, p.rollout) for i, p in enumerate(proposed) if p.rollout is not None]
            shown = [(i, p.demonstration) for i, p in enumerate(proposed) if p.demonstration]
            propose_rows = [r for _, r in sampled] + [d for _, d in shown]
            propose_r = proposer_rewards(
                [learn[i] for i, _ in sampled],
                [not proposed[i].composed for i, _ in sampled],
                cfg.lambda_learnability,
                cfg.lambda_format,
            )
            propose_r += proposer_rewards(
                [learn[i] for i, _ in shown], [True] * len(shown), cfg.lambda_learnability, 0.0
            )
            if cfg.train_proposer:
                train_rows += propose_rows
                rewards += propose_r
        groups = [(r.mode, r.role) for r in train_rows]
        advantages = normalized_advantages(rewards, groups)
        stats = update(state, train_rows, advantages)
    finally:
        state.model.train(was_training)
    state.iteration += 1
    seconds = time.perf_counter() - started
    invalid = sum(p.composed for p in model_proposals)
    reasons = {c: 0 for c in INVALID_CATEGORIES}
    for p in model_proposals:
        if p.composed:
            reasons[invalid_category(p.reason)] += 1
    propose_metrics: dict[str, Any] = {
        "proposals": len(proposed),
        "invalid_proposal_rate": invalid / len(model_proposals)
        if model_proposals
        else float("nan"),
        "new_tasks_added": added,
        "buffer_size": len(state.buffer),
        "learnability_mean": sum(learn) / len(learn) if learn else float("nan"),
        "learnability_hist": histogram(learn, HIST_BINS),
        "learnability": learn,  #: per task solved this iteration (new tasks first)
        "reward_propose_mean": sum(propose_r) / len(propose_r) if propose_r else float("nan"),
        "invalid_reasons": reasons,  #: invalid model proposals by `invalid_category`
        "invalid_examples": [
            f"{p.reason[:100]} | {p.rollout.answer[:100]}"
            for p in model_proposals
            if p.rollout and p.composed
        ][:2],
        "valid_examples": [
            p.rollout.answer[:300] for p in model_proposals if p.rollout and not p.composed
        ][:2],
    }
    solve_metrics: dict[str, Any] = {
        "tasks_solved_for": len(tasks),
        "solve_rate": sum(correct) / len(correct) if correct else float("nan"),
        "format_error_rate": sum(not r.extra["well_formed"] for r in rollouts)
        / max(1, len(rollouts)),
        "reward_solve_mean": sum(solve_r) / len(solve_r) if solve_r else float("nan"),
        **stats,
        "iteration_seconds": seconds,
        "propose_seconds": t_propose - started,
        "solve_seconds": t_solve - t_propose,
    }
    for mode in modes:
        mine = [c for r, c in zip(rollouts, correct, strict=True) if r.mode == mode]
        if mine:
            solve_metrics[f"solve_rate_{mode}"] = sum(mine) / len(mine)
    return {"propose": propose_metrics, "solve": solve_metrics}


def cold_start(
    state: SelfPlayState,
    steps: int,
    batch: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[float]:
    """`steps` supervised steps before the first iteration, as DeepSeek-R1's cold start before
    its RL: half of each batch teaches the proposer its answer format (`cold_start_rows`:
    composed tasks, the modes round-robin), half keeps the solver's (its own greedy solutions
    of buffer tasks that the sandbox judged right, rejection-sampling fine-tuning; without
    them the shared LoRA writes programs where the solver answered values). Each step is
    `update` with advantage 1 on every row (the rows' token-mean NLL) at `cold_start_lr`.
    Returns each step's loss (fewer when `should_stop` said so between steps)."""
    cfg, rng = state.config, state.rng
    was_training = state.model.training
    state.model.eval()
    losses = []
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.cold_start_lr
    try:
        engine = state.engine
        tasks = [t for t in state.buffer if mode_of(t) in cfg.task_types][:COLD_START_SOLVED]
        solved, correct = solve(
            engine,
            tasks,
            1,
            cfg.solve_budget,
            cfg.solve_answer_tokens,
            0.0,
            1.0,
            cfg.seed,
            state.sandbox,
        )
        keep = [r for r, ok in zip(solved, correct, strict=True) if ok]
        for k in range(steps):
            if should_stop():
                break
            n_solve = min(len(keep), batch // 2)
            modes = [
                cfg.task_types[(k * batch + j) % len(cfg.task_types)]
                for j in range(batch - n_solve)
            ]
            rows = cold_start_rows(
                engine,
                state.buffer,
                modes,
                rng,
                cfg.num_references,
                state.sandbox,
                cfg.induction_heldout,
                cfg.compose_max_statements,
            )
            rows += rng.sample(keep, n_solve)
            losses.append(update(state, rows, [1.0] * len(rows))["pg_loss"])
    finally:
        state.model.train(was_training)
        for group in state.optimizer.param_groups:
            group["lr"] = cfg.lr
    return losses


def evaluate(state: SelfPlayState, tasks: Sequence[Task]) -> float:
    """Greedy solve rate of `tasks` at the solver's budget (adapters on while thinking)."""
    solved = evaluate_per_task(state, tasks)
    return sum(solved) / max(1, len(solved))


def evaluate_per_task(state: SelfPlayState, tasks: Sequence[Task]) -> list[bool]:
    """Whether greedy decoding at the solver's budget solves each of `tasks`."""
    was_training = state.model.training
    state.model.eval()
    try:
        cfg = state.config
        return solved_greedy(
            state.engine, tasks, cfg.solve_budget, cfg.solve_answer_tokens, state.sandbox
        )
    finally:
        state.model.train(was_training)


def eval_tasks(state: SelfPlayState) -> dict[str, list[Task]]:
    """The fixed held-out sets of the config, per mode of `eval_modes` (`eval_tasks` each,
    none of the buffer's seed tasks)."""
    cfg = state.config
    exclude = list(state.buffer)
    return {
        mode: heldout_tasks(mode, cfg.eval_tasks, cfg.eval_seed, exclude=exclude)
        for mode in cfg.eval_modes
    }


def eval_record(state: SelfPlayState, held_out: dict[str, list[Task]]) -> dict[str, Any]:
    """The held-out solve rate per mode (`heldout_solve_rate_<mode>`) and their mean
    (`heldout_solve_rate`), greedy at the solver's budget."""
    rates = {mode: evaluate(state, tasks) for mode, tasks in held_out.items()}
    record: dict[str, Any] = {f"heldout_solve_rate_{m}": r for m, r in rates.items()}
    record["heldout_solve_rate"] = sum(rates.values()) / max(1, len(rates))
    return record


def run_iterations(
    state: SelfPlayState,
    n: int,
    write: Callable[[dict[str, Any]], None],
    step: Callable[[int], int] = lambda it: it,
    held_out: dict[str, list[Task]] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[float]:
    """Run n iterations, writing one metrics line per role (`mode: self_play`, `role`, `step`
    as `step(iteration)`, `iteration`) and, every `eval_every` iterations, a `role: eval` line
    with the held-out solve rates (`eval_record`); returns every learnability value seen."""
    seen: list[float] = []
    cfg = state.config
    for _ in range(n):
        if should_stop():
            break
        metrics = self_play_iteration(state)
        seen += metrics["propose"]["learnability"]
        for role, values in metrics.items():
            write(
                {
                    "step": step(state.iteration),
                    "iteration": state.iteration,
                    "mode": "self_play",
                    "role": role,
                    **values,
                }
            )
        if held_out and cfg.eval_every and state.iteration % cfg.eval_every == 0:
            write(eval_line(state, held_out, step(state.iteration)))
    return seen


def eval_line(state: SelfPlayState, held_out: dict[str, list[Task]], step: int) -> dict[str, Any]:
    """A `role: eval` metrics line of the state's current iteration."""
    return {
        "step": step,
        "iteration": state.iteration,
        "mode": "self_play",
        "role": "eval",
        **eval_record(state, held_out),
    }


# --- trainer modes -------------------------------------------------------------------------------


def train_self_play(config: Any, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """The trainer's `self_play` mode: `self_play.iterations` iterations on the configured model
    and introspection parts, checkpoints every `save_every` iterations (and at the end),
    metrics lines every iteration; resumable (buffer, optimizer and RNG states included)."""
    sp = SelfPlayConfig.from_dict(config.self_play or {})
    seed_everything(config.seed)
    output = Path(config.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    # a checkpoint of another mode is a CheckpointError before anything loads or is written
    saved = load_checkpoint(checkpoint, "self_play") if checkpoint is not None else None
    output.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # a self-play LoRA goes on before a checkpoint's parts load: they may tap its layers
    model, tokenizer, intro = load_parts(config, device, None if sp.lora_r else checkpoint)
    for p in model.parameters():  # the base and the heads stay frozen; `update` opens the policy
        p.requires_grad_(False)
    lora_settings: dict[str, Any] = {}
    if sp.lora_r:
        if checkpoint is not None:
            lora_settings = load_lora(model, checkpoint)
            remove_introspection(model)
            intro = load_introspection(model, checkpoint)
            intro.train()
        else:
            lora_settings = add_selfplay_lora(model, sp.lora_r, sp.lora_alpha, sp.lora_layers)
        model.to(device)
        for p in lora_parameters(model):
            p.requires_grad_(False)
    state = new_state(model, tokenizer, intro, sp)
    if saved is not None:
        state.optimizer.load_state_dict(saved["optimizer"])
        state.iteration = saved["step"]
        state.rng.setstate(saved["selfplay_rng"])
        state.buffer = TaskBuffer(state.buffer.config)
        state.buffer.extend(saved["buffer"])
        torch.set_rng_state(saved["torch_rng"])
    metrics_path = output / "metrics.jsonl"
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output / "tensorboard"), purge_step=state.iteration + 1)
    held_out = eval_tasks(state) if sp.eval_every else {}
    best = _best_so_far(output) if saved is not None else None
    summary: dict[str, Any] = {}

    def write(record: dict[str, Any]) -> None:
        nonlocal summary
        write_metrics(metrics_path, record, writer)
        summary = {**summary, **record}

    def save() -> Path:
        payload = {
            "step": state.iteration,
            "optimizer": state.optimizer.state_dict(),
            "selfplay_rng": state.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "buffer": list(state.buffer),
            "config": asdict(config),
        }
        path = save_checkpoint(output, state.iteration, intro, payload, "self_play")
        if lora_settings:
            save_lora(model, lora_settings, path)
        return path

    def evaluate_and_keep() -> None:
        nonlocal best
        line = eval_line(state, held_out, state.iteration)
        write(line)
        rate = line["heldout_solve_rate"]
        if best is None or rate > best:
            best = rate
            path = save()
            with atomic_directory(output / BEST_DIR) as tmp:
                shutil.copytree(path, tmp, dirs_exist_ok=True)
                atomic_write_json(tmp / BEST_FILE, {"iteration": state.iteration, **line})

    with StopFlag() as stop:
        if saved is None and sp.cold_start_steps:
            if held_out:  # the model as loaded, before its cold start
                write({**eval_line(state, held_out, 0), "stage": "before_cold_start"})
            losses = cold_start(
                state,
                sp.cold_start_steps,
                sp.cold_start_batch,
                should_stop=lambda: stop.signal is not None,
            )
            write(
                {
                    "step": 0,
                    "iteration": 0,
                    "mode": "self_play",
                    "role": "cold_start",
                    "steps": len(losses),
                    "loss_first": losses[0] if losses else float("nan"),
                    "loss_last": losses[-1] if losses else float("nan"),
                }
            )
        # a signal during the cold start ends the run with nothing saved: a resume starts over
        if held_out and state.iteration == 0 and saved is None and stop.signal is None:
            evaluate_and_keep()  # before self-play: the rate to beat
        while state.iteration < sp.iterations and stop.signal is None:
            run_iterations(state, 1, write)
            if progress:
                print(f"self-play {state.iteration}/{sp.iterations}", flush=True)
            if held_out and sp.eval_every and state.iteration % sp.eval_every == 0:
                evaluate_and_keep()
            stopping = stop.signal is not None
            if (
                state.iteration % config.save_every == 0
                or state.iteration == sp.iterations
                or stopping
            ):
                save()
        if stop.signal is not None:
            summary["stopped"] = signal.Signals(stop.signal).name
    if writer is not None:
        writer.close()
    return summary


def _best_so_far(output: Path) -> float | None:
    """The mean held-out rate of the run's `best/` checkpoint (None without one)."""
    path = output / BEST_DIR / BEST_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["heldout_solve_rate"])


@dataclass
class HybridSchedule:
    """`hybrid` mode: after every `supervised_steps` supervised steps, `self_play_iters`
    self-play iterations on the same model and introspection parts (own optimizer and buffer)."""

    supervised_steps: int
    self_play_iters: int
    state: SelfPlayState

    @classmethod
    def start(cls, config: Any, model: Any, tokenizer: Any, intro: Any) -> HybridSchedule:
        """The schedule of a train config (`hybrid_schedule`: a `HybridScheduleConfig`, whose
        defaults are the only ones) on the trainer's model and introspection parts."""
        schedule = config.hybrid_schedule
        sp = SelfPlayConfig.from_dict(config.self_play or {})
        return cls(
            schedule.supervised_steps,
            schedule.self_play_iters,
            new_state(model, tokenizer, intro, sp),
        )

    def after_step(self, done: int, write: Callable[[dict[str, Any]], None]) -> None:
        """Run the self-play iterations due after supervised step `done`; `requires_grad`
        flags are restored afterwards (the supervised phases own them)."""
        if done % self.supervised_steps:
            return
        state = self.state
        current = policy_parameters(state.model, state.intro)
        held = [p for g in state.optimizer.param_groups for p in g["params"]]
        if {id(p) for p in current} != {id(p) for p in held}:  # a phase pruned adapters
            state.optimizer = torch.optim.AdamW(current, lr=state.config.lr, weight_decay=0.0)
        params = list(self.state.model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            run_iterations(self.state, self.self_play_iters, write, step=lambda _: done)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
