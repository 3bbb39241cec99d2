"""The introspective decoding engine: plan → budget → think → assess → answer → finalize.

One decode loop serves every caller (chat, HTTP, observation logs, sweeps, calibration,
on-policy training). A batch of requests runs on ONE KV cache:

1. **prefill**: the rendered prompts (ending with `<think>`), left-padded, in one forward. If
   introspection parts are attached, the tapped layers are recorded during this forward and the
   metacognitive heads read them (pooled over each prompt): plan, predicted budget, confidence.
   The calibration (temperature, plan thresholds, budget clip) is applied here.
2. **budget**: a fixed per-request budget wins; else the `direct` plan gives 0; else the heads'
   budget clamped to [min_think, budget_cap]; without heads, budget_cap. The soft cap is
   `budget · (1 + slack)`. Thinking closes at the step end (`tina.core.tags.ends_step`) nearest
   the budget (`closes_at_step_end`: the budget is spent, or less than half a mean step of it
   is left); reaching the soft cap forces `</think>` anyway. With the calibration's
   `exit_threshold` (the exit check: at the heads' budget, and at a fixed one only when its
   request asks, `Request.exit_check`: a fixed budget is exact), the heads first read that
   step end and thinking goes on to the next step end while their readiness there
   (`MetacogOutput.readiness`: the exit output, else the raw confidence) is below the
   threshold: a think cut right after a "check" step can garble the answer
   where the next step end would not. A row the check judged not ready is not cut inside a
   step at the soft cap either: it ends that step first, by `budget · (1 + 2 · slack)` at
   the latest.
   A request's `max_tokens` bounds think + answer tokens together: the soft cap is at most
   `max_tokens − 1` (one token is left for the answer) and, at `</think>`, the answer cap
   shrinks to what thinking left.
3. **think**: one forward per step for the whole batch; each row has its own phase, budget,
   counts and forced-token queue. Side adapters are on exactly for rows whose fed token is a
   think token (the same positions as the training think mask).
4. **assess**: when a row closes its thinking, the heads read the `</think>` position again
   (confidence after thinking); the exit check reads its step end the same way. Optionally
   (off by default) a row at its soft cap whose confidence is below a threshold gets one
   budget extension instead of the forced `</think>`.
5. **answer**: `<answer>` is forced after `</think>` (the answer phase always runs); the row
   ends at `</answer>` (EOS or a stray `</think>` is fed as `</answer>`), at the first of the
   request's stop strings (`Request.stop`: the answer is cut before it and `</answer>` fed), or,
   at the answer cap, `</answer>` is forced.
6. **finalize**: hidden chain of thought returns only `extract_answer`'s text; visible returns
   the whole completion. Every request gets its `Telemetry`.

Sampling is greedy, or temperature/top-p from a per-request seeded generator, so a request's
sampled tokens do not depend on what else is in its batch.

What it does not do: HTTP, chat history or logging (their modules call this one), or training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from tina.core.calibration import Calibration, apply_budget, apply_confidence, apply_plan
from tina.core.metacog_heads import record_taps
from tina.core.plans import PLAN_CLASSES
from tina.core.side_adapters import think_mask_context
from tina.core.tags import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    THINK_CLOSE,
    ends_step,
    leaks_reasoning,
    split_reasoning,
    tag_ids,
)
from tina.engine.stop_strings import cut_at_stop

THINK, ANSWER, DONE = "think", "answer", "done"
DIRECT = PLAN_CLASSES.index("direct")


@dataclass
class EngineConfig:
    """Decoding settings shared by every caller (normally built from the service config)."""

    slack_ratio: float = 0.5  #: soft cap = budget · (1 + slack_ratio)
    min_think: int = 0  #: the heads' budget is raised to at least this (not a fixed budget)
    budget_cap: int = 384  #: the largest budget; also the budget when there are no heads
    max_answer_tokens: int = 64  #: answer token cap, then `</answer>` is forced
    visible_cot: bool = False  #: default visibility of the thinking
    extend_on_low_confidence: bool = False  #: allow one budget extension at the soft cap
    extension_threshold: float = 0.5  #: extend when confidence at the soft cap is below this
    extension_ratio: float = 0.5  #: the extension adds budget · extension_ratio tokens
    exit_check: bool = True  #: apply the calibration's `exit_threshold` (step 2), when it has one

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
    max_tokens: int | None = None  #: most think + answer tokens in all, tags excluded (step 2)
    #: run the exit check (step 2) at this request's budget; None: only at the heads' budget
    #: (a fixed budget is exact), True also at a fixed one (the budget policy's samples)
    exit_check: bool | None = None
    #: the answer ends at the first of these (OpenAI's `stop`; not part of the answer; the
    #: thinking is never cut by them: `tina.engine.stop_strings`)
    stop: tuple[str, ...] = ()


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
    confidence_before: float | None  #: confidence from the prompt, before thinking
    #: the confidence head read again at `</think>`, under the calibration fitted before
    #: thinking (not fitted for this position: on the shipped parts it is not informative;
    #: `confidence_before` is the calibrated one)
    confidence_after: float | None
    extended: bool  #: the one budget extension was granted
    forced_think_close: bool  #: thinking was cut at the soft cap (or closed for the model)
    forced_answer_close: bool  #: the answer hit its cap
    gate_activity: float  #: mean side-adapter gate over this row's think tokens
    gate_coverage: float  #: share of this row's think tokens with an open gate
    latency_s: float  #: wall time of the batch this request ran in
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


def count_think_tokens(think_ids: Sequence[int]) -> int:
    """Budget counting, in one place: think-phase tokens, tags excluded."""
    return len(think_ids)


def closes_at_step_end(used: int, steps: int, budget: int) -> bool:
    """Whether thinking closes at a step end, `used` think tokens and `steps` steps in: the
    budget is where thinking should end, and a cut never falls inside a step, so it ends at the
    step end nearest the budget — here, if the budget is spent, or if what is left of it is less
    than half a step (the row's mean step so far), so the next step end would overshoot it by
    more than stopping now falls short."""
    if used >= budget:
        return True
    return steps > 0 and 2 * (budget - used) * steps < used


@dataclass
class _Row:
    """Per-row decoding state."""

    budget: int
    soft_cap: int
    answer_cap: int
    temperature: float
    top_p: float
    generator: torch.Generator | None
    phase: str = THINK
    think_ids: list[int] = field(default_factory=list)
    answer_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)
    forced_think_close: bool = False
    forced_answer_close: bool = False
    extended: bool = False
    pending_assess: bool = False  #: at the soft cap, waiting for the heads to allow an extension
    check_exit: bool = False  #: the exit check applies to this row (heads' budget, threshold set)
    pending_exit: bool = False  #: at a closing step end, waiting for the exit check
    exit_checks: int = 0  #: exit checks run so far
    step_cap: int = 0  #: past the soft cap, a row the check judged not ready ends its step here
    confidence_after: float | None = None
    think_limit: int | None = None  #: most think tokens `max_tokens` allows (one left to answer)
    token_limit: int | None = None  #: the request's `max_tokens`
    stops: tuple[str, ...] = ()  #: the request's stop strings (answer only)
    answer_start: int = 0  #: where the answer's tokens begin in `completion_ids`
    steps: int = 0  #: think tokens so far that ended a step (`tina.core.tags.ends_step`)
    gate_sum: float = 0.0
    gate_open: float = 0.0
    gate_count: float = 0.0


class Engine:
    """The one decode loop (see module docstring)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        introspection: Any = None,
        config: EngineConfig | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.introspection = introspection
        self.config = config or EngineConfig()
        self.calibration = calibration
        self.ids = tag_ids(tokenizer)
        self.pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.device = next(model.parameters()).device
        self.forward_calls = 0  #: model forwards run so far (one prefill + one per step)
        self._step_ends: dict[int, bool] = {}

    # --- public -------------------------------------------------------------------------------

    def render(self, question: str) -> str:
        """`question` through the tokenizer's chat template, ending with `<think>`."""
        from tina.core.models import render_prompt

        return render_prompt(self.tokenizer, question)

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[Request],
        on_token: Callable[[int, str, int], None] | None = None,
    ) -> list[Result]:
        """Run a batch of requests to completion. `on_token(row, phase, token_id)` sees every
        emitted token (forced or sampled, tags included) with the phase it was emitted in."""
        if not requests:
            return []
        started = time.perf_counter()
        prompts = [r.prompt if r.rendered else self.render(r.prompt) for r in requests]
        input_ids, attention = self._left_pad(prompts)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        with record_taps() as taps:
            logits = self._forward(input_ids, attention, positions, cache, think_mask=None)
        heads = self._read_heads(taps, attention) if self.introspection is not None else None
        rows = [self._new_row(i, r, heads) for i, r in enumerate(requests)]
        next_pos = positions[:, -1] + 1

        while True:
            step_ids, step_mask, think_flags = self._choose_tokens(rows, logits, on_token)
            if all(r.phase == DONE for r in rows):
                break
            attention = torch.cat(
                [attention, torch.tensor(step_mask, device=self.device)[:, None]], 1
            )
            think_mask = torch.tensor(think_flags, device=self.device)[:, None]
            think_close = self.ids[THINK_CLOSE]
            closing = [
                i
                for i, (t, m) in enumerate(zip(step_ids, step_mask, strict=True))
                if m and t == think_close
            ]
            reading = [i for i, r in enumerate(rows) if r.pending_assess or r.pending_exit]
            with record_taps() as taps:
                logits = self._forward(
                    torch.tensor(step_ids, device=self.device)[:, None],
                    attention,
                    next_pos[:, None],
                    cache,
                    think_mask=think_mask
                    if any(think_flags) and self.introspection is not None
                    else None,
                )
            self._collect_gates(rows, think_flags)
            if (closing or reading) and self.introspection is not None:
                self._assess(rows, closing, reading, taps)
            next_pos = next_pos + 1

        latency = time.perf_counter() - started
        return [
            self._finalize(r, req, heads, i, latency)
            for i, (r, req) in enumerate(zip(rows, requests, strict=True))
        ]

    # --- steps --------------------------------------------------------------------------------

    def _left_pad(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        width = max(len(e) for e in encoded)
        input_ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            input_ids[i, width - len(e) :] = torch.tensor(e)
            attention[i, width - len(e) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        positions: torch.Tensor,
        cache: DynamicCache,
        think_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One model forward on the shared cache; returns the last position's logits (B, V)."""
        self.forward_calls += 1
        with think_mask_context(think_mask):
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :]

    def _read_heads(self, taps: dict[int, torch.Tensor], pool_mask: torch.Tensor) -> dict[str, Any]:
        out = self.introspection.heads(taps, pool_mask)
        probs = torch.softmax(out.plan_logits, dim=-1)
        return {
            "plan_probs": probs,
            "plan": apply_plan(probs, self.calibration),
            "budget": apply_budget(out.budget, self.calibration),
            "confidence": apply_confidence(out.confidence_logit, self.calibration),
            "per_layer": out.per_layer,
        }

    def _new_row(self, index: int, request: Request, heads: dict[str, Any] | None) -> _Row:
        cfg = self.config
        cap = cfg.budget_cap if request.budget_cap is None else request.budget_cap
        if request.budget is not None:
            budget = max(0, request.budget)
        elif heads is None:
            budget = cap
        elif int(heads["plan"][index]) == DIRECT:
            budget = 0
        else:
            budget = min(cap, max(cfg.min_think, round(float(heads["budget"][index]))))
        slack = cfg.slack_ratio if request.slack_ratio is None else request.slack_ratio
        generator = None
        if request.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(0 if request.seed is None else request.seed)
        think_limit = None if request.max_tokens is None else max(0, request.max_tokens - 1)
        soft_cap = math.floor(budget * (1 + slack))
        row = _Row(
            budget=budget,
            soft_cap=soft_cap if think_limit is None else min(soft_cap, think_limit),
            answer_cap=cfg.max_answer_tokens
            if request.max_answer_tokens is None
            else request.max_answer_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            generator=generator,
            think_limit=think_limit,
            token_limit=request.max_tokens,
            stops=tuple(s for s in request.stop if s),
        )
        row.step_cap = math.floor(budget * (1 + 2 * slack))
        if think_limit is not None:
            row.step_cap = min(row.step_cap, think_limit)
        row.check_exit = (
            (request.budget is None if request.exit_check is None else request.exit_check)
            and heads is not None
            and budget > 0
            and self._exit_threshold() is not None
        )
        if row.soft_cap == 0:
            row.forced = [self.ids[THINK_CLOSE]]
            row.forced_think_close = True
        return row

    def _sample(self, row: _Row, logits: torch.Tensor) -> int:
        if row.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / row.temperature, dim=-1)
        if row.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < row.top_p
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _choose_tokens(
        self,
        rows: list[_Row],
        logits: torch.Tensor,
        on_token: Callable[[int, str, int], None] | None,
    ) -> tuple[list[int], list[int], list[bool]]:
        """The token each row feeds next, its attention bit, and whether it is a think token."""
        greedy = logits.argmax(dim=-1).tolist()
        step_ids, step_mask, think_flags = [], [], []
        for i, row in enumerate(rows):
            if row.phase == DONE:
                step_ids.append(self.pad)
                step_mask.append(0)
                think_flags.append(False)
                continue
            phase = row.phase
            if row.forced:
                token = row.forced.pop(0)
            else:
                token = greedy[i] if row.temperature <= 0 else self._sample(row, logits[i])
            token, is_think = self._advance(row, token)
            if on_token is not None:
                on_token(i, phase, token)
            step_ids.append(token)
            step_mask.append(1)
            think_flags.append(is_think)
        return step_ids, step_mask, think_flags

    def _advance(self, row: _Row, token: int) -> tuple[int, bool]:
        """Record `token` for `row`, move its phase, queue forced tags; returns the token to
        feed (a malformed exit from thinking becomes `</think>`) and whether it is a think token."""
        think_close, answer_open, answer_close = (
            self.ids[THINK_CLOSE],
            self.ids[ANSWER_OPEN],
            self.ids[ANSWER_CLOSE],
        )
        eos = self.tokenizer.eos_token_id
        if row.phase == THINK:
            if token in (answer_open, answer_close, eos):
                token = think_close  # leaving thinking without closing it: close it for the model
                row.forced_think_close = True
            row.completion_ids.append(token)
            if token == think_close:
                row.phase = ANSWER
                row.forced = [answer_open]
                if row.token_limit is not None:  # the answer gets what thinking left
                    left = row.token_limit - len(row.think_ids)
                    row.answer_cap = max(1, min(row.answer_cap, left))
                return token, False
            row.think_ids.append(token)
            step_end = self._ends_step(token)
            row.steps += step_end
            if not row.forced and not row.pending_assess and not row.pending_exit:
                used = len(row.think_ids)
                if used >= row.soft_cap and not (
                    row.exit_checks and not step_end and used < row.step_cap
                ):
                    self._at_soft_cap(row)
                elif step_end and closes_at_step_end(used, row.steps, row.budget):
                    if row.check_exit:
                        row.pending_exit = True  # `_assess` reads the heads here first
                    else:
                        row.forced = [think_close]
                        row.forced_think_close = True
            return token, True
        row.completion_ids.append(token)
        if (
            token == answer_open
            and len(row.completion_ids) >= 2
            and row.completion_ids[-2] == think_close
        ):
            row.answer_start = len(row.completion_ids)
            return token, False  # the forced opening tag
        if token in (answer_close, eos, think_close):
            # a stray `</think>` ends the answer too: `extract_answer` would otherwise re-read
            # the answer so far as thinking, and a streamed answer could not be taken back
            row.completion_ids[-1] = answer_close
            row.phase = DONE
            return answer_close, False
        row.answer_ids.append(token)
        if row.stops and self._stop_answer(row):
            return answer_close, False
        if len(row.answer_ids) >= row.answer_cap:
            row.forced = [answer_close]
            row.forced_answer_close = True
        return token, False

    def _stop_answer(self, row: _Row) -> bool:
        """When the answer so far holds one of the row's stop strings, end the row with the
        answer cut before it (re-encoded: the tokens after the cut were never meant to be
        read); the model is fed `</answer>`."""
        text = self.tokenizer.decode(row.answer_ids, skip_special_tokens=False)
        cut = cut_at_stop(text, row.stops)
        if cut is None:
            return False
        row.answer_ids = self.tokenizer.encode(cut, add_special_tokens=False) if cut else []
        close = self.ids[ANSWER_CLOSE]
        row.completion_ids = [*row.completion_ids[: row.answer_start], *row.answer_ids, close]
        row.phase = DONE
        return True

    def _ends_step(self, token: int) -> bool:
        """`tina.core.tags.ends_step` of the token's text (cached per token id)."""
        cached = self._step_ends.get(token)
        if cached is None:
            text = self.tokenizer.decode([token], skip_special_tokens=False)
            cached = self._step_ends[token] = ends_step(text)
        return cached

    def _exit_threshold(self) -> float | None:
        """The exit check's readiness threshold: the calibration's, unless the check is off."""
        if not self.config.exit_check or self.calibration is None:
            return None
        return self.calibration.exit_threshold

    def _at_soft_cap(self, row: _Row) -> None:
        """Force `</think>` now, or (extension enabled, heads present, not yet extended) let the
        heads read this position first: `_assess` then extends or forces."""
        if (
            self.config.extend_on_low_confidence
            and self.introspection is not None
            and not row.extended
        ):
            row.pending_assess = True
            return
        row.forced = [self.ids[THINK_CLOSE]]
        row.forced_think_close = True

    def _collect_gates(self, rows: list[_Row], think_flags: list[bool]) -> None:
        if self.introspection is None or not any(think_flags):
            return
        for adapter in self.introspection.adapters.values():
            stats = adapter.last_rows
            if stats is None:
                continue
            z_sum, z_open, n = (t.tolist() for t in stats)
            for i, row in enumerate(rows):
                row.gate_sum += z_sum[i]
                row.gate_open += z_open[i]
                row.gate_count += n[i]

    def _assess(
        self,
        rows: list[_Row],
        closing: list[int],
        reading: list[int],
        taps: dict[int, torch.Tensor],
    ) -> None:
        """The heads read the position just fed: confidence after thinking for rows that fed
        `</think>`; the exit check for rows at a closing step end (close when the
        readiness is at the threshold, else think on); for rows at their soft cap, one
        extension if confidence is low."""
        mask = torch.ones(len(rows), 1, dtype=torch.long, device=self.device)
        out = self.introspection.heads(taps, mask)
        confidence = apply_confidence(out.confidence_logit, self.calibration)
        for i in closing:
            rows[i].confidence_after = float(confidence[i])
        cfg = self.config
        threshold = self._exit_threshold()
        readiness = out.readiness().tolist() if any(rows[i].pending_exit for i in reading) else []
        for i in reading:
            row = rows[i]
            if row.pending_exit:
                row.pending_exit = False
                row.exit_checks += 1
                if threshold is None or readiness[i] >= threshold:
                    row.forced = [self.ids[THINK_CLOSE]]
                    row.forced_think_close = True
                continue
            row.pending_assess = False
            extension = max(1, math.ceil(row.budget * cfg.extension_ratio))
            if row.think_limit is not None:
                extension = min(extension, row.think_limit - row.soft_cap)
            if float(confidence[i]) < cfg.extension_threshold and extension > 0:
                row.extended = True
                row.soft_cap += extension
            else:
                row.forced = [self.ids[THINK_CLOSE]]
                row.forced_think_close = True

    def _finalize(
        self, row: _Row, request: Request, heads: dict[str, Any] | None, i: int, latency: float
    ) -> Result:
        text = self.tokenizer.decode(row.completion_ids, skip_special_tokens=False)
        think_text, answer = split_reasoning(text)
        visible = self.config.visible_cot if request.visible_cot is None else request.visible_cot
        output = text if visible else answer
        n_tokens = len(row.completion_ids)
        per_layer: dict[str, dict[str, Any]] = {}
        plan, plan_probs, predicted, conf_before = None, {}, None, None
        if heads is not None:
            probs = heads["plan_probs"][i].tolist()
            plan = PLAN_CLASSES[int(heads["plan"][i])]
            plan_probs = dict(zip(PLAN_CLASSES, probs, strict=True))
            predicted = float(heads["budget"][i])
            conf_before = float(heads["confidence"][i])
            for layer, values in heads["per_layer"].items():
                per_layer[str(layer)] = {
                    "plan_probs": torch.softmax(values["plan_logits"][i], -1).tolist(),
                    "budget": float(values["budget"][i]),
                    "confidence": float(
                        apply_confidence(values["confidence_logit"][i], self.calibration)
                    ),
                }
        telemetry = Telemetry(
            plan=plan,
            plan_probs=plan_probs,
            predicted_budget=predicted,
            budget=row.budget,
            soft_cap=row.soft_cap,
            think_tokens=count_think_tokens(row.think_ids),
            answer_tokens=len(row.answer_ids),
            confidence_before=conf_before,
            confidence_after=row.confidence_after,
            extended=row.extended,
            forced_think_close=row.forced_think_close,
            forced_answer_close=row.forced_answer_close,
            gate_activity=row.gate_sum / row.gate_count if row.gate_count else 0.0,
            gate_coverage=row.gate_open / row.gate_count if row.gate_count else 0.0,
            latency_s=latency,
            tokens_per_s=n_tokens / latency if latency > 0 else 0.0,
            leaked=False if visible else leaks_reasoning(output, think_text),
            exit_checks=row.exit_checks,
            per_layer=per_layer,
        )
        return Result(
            output=output,
            answer=answer,
            think_text=think_text,
            completion=text,
            telemetry=telemetry,
        )


def decode(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    think_caps: Sequence[int] | int = 384,
    answer_cap: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    on_token: Callable[[int, str, int], None] | None = None,
) -> list[Result]:
    """Rendered prompts through the engine with exact think caps (fixed budgets, no slack) and
    no heads: plain budgeted reasoning decoding, as baselines and the base-model table use."""
    caps = [think_caps] * len(prompts) if isinstance(think_caps, int) else list(think_caps)
    if len(caps) != len(prompts):
        raise ValueError(f"{len(caps)} think caps for {len(prompts)} prompts")
    engine = Engine(
        model,
        tokenizer,
        config=EngineConfig(
            slack_ratio=0.0, max_answer_tokens=answer_cap, budget_cap=max(caps, default=0)
        ),
    )
    requests = [
        Request(prompt=p, rendered=True, budget=c, temperature=temperature, top_p=top_p, seed=seed)
        for p, c in zip(prompts, caps, strict=True)
    ]
    return engine.generate(requests, on_token=on_token)
