"""What goes into the engine and what comes out: `Request`, `Result`, `Telemetry`,
`EngineConfig`, the row phases, and the two rules every caller shares.

What it does: the data types of one decode (`docs/engine.md` explains the fields' rules), the
phase names `on_token` reports (`THINK`, `ANSWER`, `DONE`), `resolve_visibility` (the one place
that decides whether a request's thinking is shown) and `count_think_tokens` (the one place
think tokens are counted).

What it does not do: decode, sample, or import any model code (torch included), so the
commands, the server and the logs can use these types without loading a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

THINK, ANSWER, DONE = "think", "answer", "done"


@dataclass
class EngineConfig:
    """Decoding settings shared by every caller (normally built from the service config)."""

    slack_ratio: float = 0.5  #: soft cap = budget · (1 + slack_ratio)
    min_think: int = 0  #: the heads' budget is raised to at least this (not a fixed budget)
    budget_cap: int = 384  #: the largest budget; also the budget when there are no heads
    max_answer_tokens: int = 96  #: answer token cap, then `</answer>` is forced
    visible_cot: bool = False  #: default visibility of the thinking
    extend_on_low_confidence: bool = False  #: allow one budget extension at the soft cap
    extension_threshold: float = 0.5  #: extend when confidence at the soft cap is below this
    extension_ratio: float = 0.5  #: the extension adds budget · extension_ratio tokens
    exit_check: bool = True  #: apply the calibration's `exit_threshold`, when it has one
    #: think before answering: True, False (the model's own format: its template's generation
    #: prompt, no think phase, the answer until EOS), or None: True when the model knows the
    #: tags (`tina.core.models.load_model` records it), else False
    reasoning: bool | None = None
    #: reuse the KV of prompt tokens already prefilled (the prompts' shared prefix, and the
    #: last prompt's as far as the next one matches it); the outputs are the same either way
    prefix_cache: bool = True

    @classmethod
    def from_service_config(cls, service: Any) -> EngineConfig:
        """The engine settings of a `tina.serve.service_config.ServiceConfig`."""
        return cls(
            slack_ratio=service.slack_ratio,
            min_think=service.min_think,
            budget_cap=service.budget_cap,
            max_answer_tokens=service.max_answer_tokens,
            visible_cot=service.visible_cot,
            exit_check=service.exit_check,
        )


@dataclass
class Request:
    """One question for the engine. Unset fields take the engine's defaults."""

    prompt: str  #: the user's question (rendered with the chat template unless `rendered`)
    rendered: bool = False  #: `prompt` is already the full rendered prompt ending in `<think>`
    budget: int | None = None  #: fixed think budget (skips the heads' budget; 0 = no thinking)
    budget_cap: int | None = None  #: per-request cap on the budget
    slack_ratio: float | None = None  #: per-request slack (sweeps use 0 for exact budgets)
    max_answer_tokens: int | None = None  #: per-request answer cap
    temperature: float = 0.0  #: 0 = greedy
    top_p: float = 1.0  #: nucleus mass when sampling
    seed: int | None = None  #: sampling seed (per request)
    visible_cot: bool | None = None  #: show the thinking for this request
    max_tokens: int | None = None  #: most think + answer tokens in all, tags excluded
    #: run the exit check at this request's budget; None: only at the heads' budget (a fixed
    #: budget is exact), True also at a fixed one (the budget policy's samples)
    exit_check: bool | None = None
    #: the answer ends at the first of these (OpenAI's `stop`; not part of the answer; the
    #: thinking is never cut by them: `tina.engine.stop_strings`)
    stop: tuple[str, ...] = ()
    #: reasoning effort (`none | low | medium | high`, `controller.EFFORT_SCALES`): a multiple
    #: of the heads' budget; a fixed `budget` wins over it
    effort: str | None = None


@dataclass
class Telemetry:
    """What the engine reports about one request."""

    plan: str | None  #: chosen plan class (None without heads)
    plan_probs: dict[str, float]  #: plan class probabilities
    predicted_budget: float | None  #: the heads' budget, after the calibration clip
    budget: int  #: the budget applied
    soft_cap: int  #: where `</think>` is forced
    think_tokens: int  #: tokens spent thinking (`count_think_tokens`)
    answer_tokens: int  #: answer tokens, tags excluded
    #: the calibrated probability that the answer is right, read from the prompt before
    #: thinking (the calibration's map applied; the raw sigmoid without one; None: no heads)
    confidence_before: float | None
    #: the confidence head read again at `</think>`, under the calibration fitted before
    #: thinking (not fitted for this position: on the shipped parts it is not informative;
    #: `confidence_before` is the calibrated one)
    confidence_after: float | None
    extended: bool  #: the one budget extension was granted
    forced_think_close: bool  #: thinking was cut at the soft cap (or closed for the model)
    forced_answer_close: bool  #: the answer hit its cap
    gate_activity: float  #: mean side-adapter gate over this row's think tokens
    gate_coverage: float  #: share of this row's think tokens with an open gate
    latency_s: float  #: wall time from this request's admission (its prefill) to its end
    tokens_per_s: float  #: completion tokens of this request / latency
    leaked: bool  #: hidden output contains a tag or a span of the thinking
    exit_checks: int = 0  #: step ends where the exit check read the heads (0: no check ran)
    per_layer: dict[str, dict[str, Any]] = field(default_factory=dict)  #: per-tap heads outputs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    """The engine's answer to one request."""

    output: str  #: what the caller may show: the answer (hidden CoT) or the whole completion
    answer: str  #: `extract_answer(completion)`
    think_text: str  #: the thinking, tags stripped (never shown in hidden mode)
    completion: str  #: the raw completion after the prompt, with tags
    telemetry: Telemetry


def resolve_visibility(requested: bool | None, default: bool) -> bool:
    """Whether the thinking is shown: the request's choice, else `default` (the engine's or
    the service's `visible_cot`). Every caller decides visibility here."""
    return default if requested is None else bool(requested)


def count_think_tokens(think_ids: Sequence[int]) -> int:
    """Budget counting, in one place: think-phase tokens, tags excluded."""
    return len(think_ids)
