"""One self-play iteration, the policy update, and the self-play runs the trainer starts.

An iteration (`self_play_iteration`): **propose** (`num_propose` proposals of one mode, invalid
ones replaced by composed tasks, new tasks into the buffer), **solve** (new and `num_solve`
buffer tasks, `num_mc_rollouts` times each through the engine, verified in the sandbox),
**rewards** (`tina.selfplay.rewards`, advantages per (mode, role)), **update** (`policy_loss`:
REINFORCE on the sampled tokens plus `kl_coef` · KL to the same model with adapters off; one
AdamW step over the side adapters). Each step in detail: docs/selfplay.md.

Runs: `train_self_play(train_config)` is the trainer's `self_play` mode (iterations, checkpoints
and metrics lines with `mode`/`role` through `tina.train.checkpoints`, resume, SIGTERM);
`HybridSchedule` runs iterations between the supervised steps of `hybrid` mode.

What it does not do: train the heads or the base, carry the task buffer over a resume of a
hybrid run (it seeds a fresh one), or split iterations across processes.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tina.core.side_adapters import think_mask_context
from tina.data.sandbox import SandboxConfig
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig
from tina.selfplay.buffer import BufferConfig, TaskBuffer, seed_buffer
from tina.selfplay.proposer import propose
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
from tina.selfplay.solver import Rollout, heldout_deduction_tasks, solve, solved_greedy
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


def adapter_parameters(intro: Any) -> list[torch.nn.Parameter]:
    """The side adapters' parameters: what self-play trains."""
    return list(intro.adapters.parameters())


def new_state(model: Any, tokenizer: Any, intro: Any, config: SelfPlayConfig) -> SelfPlayState:
    """A state with a seeded buffer and an AdamW over the side adapters."""
    buffer = TaskBuffer(BufferConfig(config.buffer_size, config.buffer_policy, config.seed))
    seed_buffer(buffer, config.seed_tasks_per_mode, seed=config.seed)
    optimizer = torch.optim.AdamW(adapter_parameters(intro), lr=config.lr, weight_decay=0.0)
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
    """−mean(A · token-mean log π(sampled tokens)) + kl_coef · mean KL(π ‖ π_ref) (see module
    docstring). Rows are prompt + completion, right-padded; the think mask is 1 on the think
    tokens of the completion."""
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
    with think_mask_context(think):
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    with torch.no_grad():  # the reference: the same model with the adapters off
        ref_logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    mask = scored[:, 1:]  # (B, T-1): logits at t predict the token at t+1
    logp = F.log_softmax(logits, -1)  # (B, T-1, V)
    ref_logp = F.log_softmax(ref_logits, -1)
    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    per_row = mask.sum(1).clamp(min=1.0)
    seq_logp = (token_logp * mask).sum(1) / per_row  # (B,)
    adv = torch.tensor(list(advantages), dtype=torch.float32, device=device)
    pg = -(adv * seq_logp).mean()
    kl_tok = (logp.exp() * (logp - ref_logp)).sum(-1)  # (B, T-1)
    kl = (kl_tok * mask).sum() / mask.sum().clamp(min=1.0)
    loss = pg + kl_coef * kl
    stats = {"pg_loss": float(pg.detach()), "kl": float(kl.detach()), "tokens": float(mask.sum())}
    return loss, stats


def update(state: SelfPlayState, rollouts: Sequence[Rollout], advantages: Sequence[float]) -> dict:
    """One optimizer step on the rows with a nonzero advantage (the others would only add the
    KL term); the adapters train, everything else keeps its `requires_grad`."""
    chosen = [(r, a) for r, a in zip(rollouts, advantages, strict=True) if a != 0.0]
    if not chosen:
        return {"pg_loss": 0.0, "kl": 0.0, "tokens": 0.0, "updated_rows": 0.0}
    params = adapter_parameters(state.intro)
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
            flags = hard_task_flags(
                [r.telemetry.confidence_before or 0.0 for r in first],
                [r.telemetry.predicted_budget or 0.0 for r in first],
                [r.telemetry.plan or "" for r in first],
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
            propose_r = proposer_rewards(
                [learn[i] for i, p in enumerate(proposed) if p.rollout is not None],
                [not p.composed for p in model_proposals],
                cfg.lambda_learnability,
                cfg.lambda_format,
            )
            if cfg.train_proposer:
                train_rows += [p.rollout for p in model_proposals if p.rollout is not None]
                rewards += propose_r
        groups = [(r.mode, r.role) for r in train_rows]
        advantages = normalized_advantages(rewards, groups)
        stats = update(state, train_rows, advantages)
    finally:
        state.model.train(was_training)
    state.iteration += 1
    seconds = time.perf_counter() - started
    invalid = sum(p.composed for p in model_proposals)
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
        "invalid_reasons": sorted({p.reason.split(":")[0] for p in proposed if p.composed}),
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


def eval_tasks(state: SelfPlayState) -> list[Task]:
    """The fixed held-out deduction set of the config (none of the buffer's seed tasks)."""
    cfg = state.config
    return heldout_deduction_tasks(cfg.eval_tasks, cfg.eval_seed, exclude=list(state.buffer))


def run_iterations(
    state: SelfPlayState,
    n: int,
    write: Callable[[dict[str, Any]], None],
    step: Callable[[int], int] = lambda it: it,
    held_out: Sequence[Task] = (),
    should_stop: Callable[[], bool] = lambda: False,
) -> list[float]:
    """Run n iterations, writing one metrics line per role (`mode: self_play`, `role`, `step`
    as `step(iteration)`, `iteration`) and, every `eval_every` iterations, a `role: eval` line
    with the held-out solve rate; returns every learnability value seen."""
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
            write(
                {
                    "step": step(state.iteration),
                    "iteration": state.iteration,
                    "mode": "self_play",
                    "role": "eval",
                    "heldout_solve_rate": evaluate(state, held_out),
                }
            )
    return seen


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
    model, tokenizer, intro = load_parts(config, device, checkpoint)
    for p in model.parameters():  # the base and the heads stay frozen; `update` opens adapters
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
    held_out = eval_tasks(state) if sp.eval_every else []
    summary: dict[str, Any] = {}

    def write(record: dict[str, Any]) -> None:
        nonlocal summary
        write_metrics(metrics_path, record, writer)
        summary = {**summary, **record}

    def save() -> None:
        payload = {
            "step": state.iteration,
            "optimizer": state.optimizer.state_dict(),
            "selfplay_rng": state.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "buffer": list(state.buffer),
            "config": asdict(config),
        }
        save_checkpoint(output, state.iteration, intro, payload, "self_play")

    with StopFlag() as stop:
        while state.iteration < sp.iterations:
            run_iterations(state, 1, write, held_out=held_out)
            if progress:
                print(f"self-play {state.iteration}/{sp.iterations}", flush=True)
            stopping = stop.signal is not None
            if (
                state.iteration % config.save_every == 0
                or state.iteration == sp.iterations
                or stopping
            ):
                save()
            if stopping:
                summary["stopped"] = signal.Signals(stop.signal or 0).name
                break
    if writer is not None:
        writer.close()
    return summary


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
        current = adapter_parameters(state.intro)
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
