"""The settings of self-play training: one dataclass, one line of documentation per field.

`SelfPlayConfig` is what the `self_play:` block of `train_config.yaml` holds (the trainer
rejects unknown keys, naming them as `self_play.<key>`); `SelfPlayConfig.from_dict` builds it
and `__post_init__` checks the values, every problem at once, with `tina.core.checks` (a
`SelfPlayConfigError` is a `ConfigError`; a bool is never a number).

What it does not do: run anything (see `tina.selfplay.loop`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tina.core.checks import ConfigError, Problem, int_problem, is_number, number_problem
from tina.data.tasks.code import CODE_TASK_MODES

OWNER = "SelfPlayConfig"  #: the `file` of the problems of an in-memory config


class SelfPlayConfigError(ConfigError):
    """Bad self-play settings: a `ConfigError` whose problems are `SelfPlayConfig: field:
    message` (the trainer files them under `self_play.<field>` of its config file)."""


@dataclass
class SelfPlayConfig:
    """Propose → solve → reward → update, in the Absolute-Zero style (see `tina.selfplay.loop`)."""

    iterations: int = 200  #: self-play iterations of a `self_play` run
    #: task modes, round-robin (the proposals of an iteration share one mode)
    task_types: list[str] = field(default_factory=lambda: list(CODE_TASK_MODES))
    buffer_size: int = 4096  #: capacity of the task buffer
    buffer_policy: str = "fifo"  #: "fifo" or "reservoir" (`tina.selfplay.buffer`)
    seed_tasks_per_mode: int = 64  #: suite code tasks put in the buffer before the first step
    num_propose: int = 2  #: proposals sampled from the model per iteration
    num_solve: int = 2  #: buffer tasks solved per iteration, besides the new proposals
    num_mc_rollouts: int = 4  #: sampled solutions per task (learnability is their solve rate)
    num_references: int = 2  #: buffer programs shown in the proposer's prompt
    induction_heldout: int = 2  #: pairs of an induction task held out for scoring
    lambda_learnability: float = 1.0  #: weight of the proposer's learnability reward
    lambda_solver: float = 1.0  #: weight of the solver's correctness reward
    lambda_format: float = 0.1  #: weight of the format penalty (invalid proposal, malformed answer)
    temperature: float = 1.0  #: sampling temperature of proposals and solutions
    top_p: float = 1.0  #: nucleus mass of the sampling
    solve_budget: int = 96  #: think budget of a solution (tokens; fixed, the heads are not asked)
    solve_answer_tokens: int = 24  #: answer token cap of a solution
    propose_budget: int = 16  #: think budget of a proposal
    propose_answer_tokens: int = 160  #: answer token cap of a proposal (the program and inputs)
    train_proposer: bool = True  #: also update on the model's own proposals (role "propose")
    lr: float = 1e-3  #: learning rate of the side adapters (AdamW)
    kl_coef: float = 0.05  #: weight of KL(policy ‖ reference = adapters off) per token
    grad_clip: float = 1.0  #: gradient norm clip of the update
    metacog_guidance: bool = False  #: boost learnability where the heads flag a hard task
    guidance_boost: float = 0.5  #: learnability × (1 + boost) on flagged tasks
    low_confidence: float = 0.5  #: heads' confidence below this flags a task
    tiny_budget: float = 8.0  #: heads' budget below this (tokens) flags a task
    compose_max_statements: int = 4  #: statements of a composed program (1 to this)
    #: rank of a self-play LoRA added on top of the model (`tina.selfplay.lora`; 0: none, the
    #: side adapters alone train, as on the embedded model)
    lora_r: int = 0
    lora_alpha: int = 16  #: its scaling numerator (scale = alpha / r)
    lora_layers: int = 0  #: it goes on the top this many decoder layers (0: all)
    #: train the proposer on the composed task where its own proposal was invalid (a
    #: `demonstration` row rewarded like a valid proposal; docs/selfplay.md)
    demonstrate: bool = False
    #: supervised steps on composed proposals before the first iteration (the proposer's
    #: answer format; `tina.selfplay.loop.cold_start`), `cold_start_batch` rows each
    cold_start_steps: int = 0
    cold_start_batch: int = 8  #: rows of a cold-start step
    cold_start_lr: float = 1e-3  #: learning rate of the cold start (then `lr` again)
    eval_every: int = 0  #: iterations between held-out solve-rate evaluations (0: none)
    eval_tasks: int = 100  #: held-out tasks per mode of those evaluations
    #: modes evaluated (their mean picks the `best/` checkpoint)
    eval_modes: list[str] = field(default_factory=lambda: ["deduction"])
    eval_seed: int = 90_210  #: seed of the held-out tasks (not one the buffer or corpus uses)
    seed: int = 0  #: seeds buffer, composer, references and sampling

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SelfPlayConfigError(problems)

    def problems(self) -> list[Problem]:
        """Every bad value, as `SelfPlayConfig: field: message`."""
        found: list[tuple[str, str | None]] = []
        positive = [
            "iterations", "buffer_size", "cold_start_batch", "num_mc_rollouts", "solve_budget",
            "solve_answer_tokens", "propose_answer_tokens", "compose_max_statements", "eval_tasks",
            "induction_heldout",
        ]  # fmt: skip
        found += [(name, int_problem(getattr(self, name), 1)) for name in positive]
        nonnegative = [
            "seed_tasks_per_mode", "num_propose", "num_solve", "num_references",
            "propose_budget", "eval_every", "seed", "lora_r", "lora_alpha", "lora_layers",
            "cold_start_steps",
        ]  # fmt: skip
        found += [(name, int_problem(getattr(self, name), 0)) for name in nonnegative]
        numbers = [
            "lambda_learnability", "lambda_solver", "lambda_format", "temperature", "kl_coef",
            "grad_clip", "guidance_boost", "tiny_budget",
        ]  # fmt: skip
        found += [(name, number_problem(getattr(self, name), 0)) for name in numbers]
        found.append(("lr", positive_number_problem(self.lr)))
        found.append(("cold_start_lr", positive_number_problem(self.cold_start_lr)))
        found.append(("top_p", positive_number_problem(self.top_p, 1)))
        found.append(("low_confidence", number_problem(self.low_confidence, 0, 1)))
        found += modes_problems("task_types", self.task_types)
        found += modes_problems("eval_modes", self.eval_modes)
        if self.buffer_policy not in ("fifo", "reservoir"):
            found.append(
                ("buffer_policy", f"expected 'fifo' or 'reservoir', got {self.buffer_policy!r}")
            )
        counts = (self.num_propose, self.num_solve)
        if all(isinstance(n, int) for n in counts) and sum(counts) < 1:
            found.append(
                ("num_propose", "num_propose + num_solve must be >= 1 (tasks per iteration)")
            )
        return [Problem(OWNER, name, message) for name, message in found if message is not None]

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SelfPlayConfig:
        """The config of a `self_play:` mapping; `SelfPlayConfigError` naming every unknown key
        or bad value."""
        unknown = [Problem(OWNER, k, "unknown key") for k in sorted(set(payload) - field_names())]
        try:
            config = cls(**{k: v for k, v in payload.items() if k in field_names()})
        except SelfPlayConfigError as exc:
            raise SelfPlayConfigError(unknown + exc.problems) from None
        if unknown:
            raise SelfPlayConfigError(unknown)
        return config


def positive_number_problem(value: Any, high: float | None = None) -> str | None:
    """`number_problem` for a number that must be > 0 (a learning rate), and at most `high`
    when given (a nucleus mass: (0, 1])."""
    if not is_number(value) or value != value:
        return number_problem(value, 0)
    if value <= 0 or (high is not None and value > high):
        return f"must be {'> 0' if high is None else f'in (0, {high}]'}, got {value}"
    return None


def modes_problems(name: str, value: Any) -> list[tuple[str, str | None]]:
    """The problems of a field that lists code-task modes: not a non-empty list, or a mode
    that is not one of `CODE_TASK_MODES`."""
    if not isinstance(value, list) or not value:
        return [(name, f"expected a non-empty list of {CODE_TASK_MODES}")]
    return [
        (name, f"unknown mode {m!r} (expected one of {CODE_TASK_MODES})")
        for m in value
        if m not in CODE_TASK_MODES
    ]


def field_names() -> set[str]:
    """The keys a `self_play:` block may hold."""
    return {f.name for f in fields(SelfPlayConfig)}
