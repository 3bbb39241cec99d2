"""The settings of self-play training: one dataclass, one line of documentation per field.

`SelfPlayConfig` is what the `self_play:` block of `train_config.yaml` holds (the trainer
rejects unknown keys, naming them as `self_play.<key>`); `SelfPlayConfig.from_dict` builds it
and `__post_init__` checks the values, every problem at once.

What it does not do: run anything (see `tina.selfplay.loop`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tina.data.tasks.code import CODE_TASK_MODES


class SelfPlayConfigError(ValueError):
    """Bad self-play settings; `problems` lists each as `field: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


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
    eval_every: int = 0  #: iterations between held-out solve-rate evaluations (0: none)
    eval_tasks: int = 100  #: held-out deduction tasks of those evaluations
    eval_seed: int = 90_210  #: seed of the held-out tasks (not one the buffer or corpus uses)
    seed: int = 0  #: seeds buffer, composer, references and sampling

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise SelfPlayConfigError(problems)

    def problems(self) -> list[str]:
        """Every bad value, as `field: message`."""
        out: list[str] = []
        positive = [
            "iterations", "buffer_size", "num_mc_rollouts", "solve_budget", "solve_answer_tokens",
            "propose_answer_tokens", "compose_max_statements", "eval_tasks", "induction_heldout",
        ]  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                out.append(f"{name}: expected a positive integer, got {value!r}")
        nonnegative = [
            "seed_tasks_per_mode", "num_propose", "num_solve", "num_references",
            "propose_budget", "eval_every", "seed",
        ]  # fmt: skip
        for name in nonnegative:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                out.append(f"{name}: expected an integer >= 0, got {value!r}")
        numbers = [
            "lambda_learnability", "lambda_solver", "lambda_format", "temperature", "kl_coef",
            "grad_clip", "guidance_boost", "tiny_budget",
        ]  # fmt: skip
        for name in numbers:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                out.append(f"{name}: expected a number >= 0, got {value!r}")
        if not isinstance(self.lr, (int, float)) or self.lr <= 0:
            out.append(f"lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            out.append(f"top_p: expected a number in (0, 1], got {self.top_p!r}")
        if not isinstance(self.low_confidence, (int, float)) or not 0 <= self.low_confidence <= 1:
            out.append(f"low_confidence: expected a number in [0, 1], got {self.low_confidence!r}")
        if not isinstance(self.task_types, list) or not self.task_types:
            out.append(f"task_types: expected a non-empty list of {CODE_TASK_MODES}")
        else:
            out += [
                f"task_types: unknown mode {m!r} (expected one of {CODE_TASK_MODES})"
                for m in self.task_types
                if m not in CODE_TASK_MODES
            ]
        if self.buffer_policy not in ("fifo", "reservoir"):
            out.append(f"buffer_policy: expected 'fifo' or 'reservoir', got {self.buffer_policy!r}")
        if self.num_propose + self.num_solve < 1:
            out.append("num_propose/num_solve: at least one task per iteration is needed")
        return out

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SelfPlayConfig:
        """The config of a `self_play:` mapping; `SelfPlayConfigError` naming every unknown key
        or bad value."""
        unknown = [f"{k}: unknown key" for k in sorted(set(payload) - field_names())]
        try:
            config = cls(**{k: v for k, v in payload.items() if k in field_names()})
        except SelfPlayConfigError as exc:
            raise SelfPlayConfigError(unknown + exc.problems) from None
        if unknown:
            raise SelfPlayConfigError(unknown)
        return config


def field_names() -> set[str]:
    """The keys a `self_play:` block may hold."""
    return {f.name for f in fields(SelfPlayConfig)}
