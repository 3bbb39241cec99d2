"""The decode loop: requests through the model on ONE KV cache, rows joining and leaving it.

What it does: the step-level API of continuous batching on a `tina.engine.batch.DecodeBatch`:
`Engine.admit` prefills new requests in a forward of their own (left-padded; the metacognitive
heads read the tapped layers there, under the calibration) and joins their rows to the batch;
`Engine.step` chooses each row's next token (`tina.engine.controller`, sampled by
`tina.engine.sampling` unless a tag is forced), finalizes the rows that ended, then runs one
forward for the rest, side adapters on exactly for think tokens, the heads read again where a
row waits for them (`</think>`, the exit check, the soft cap); `Engine.release` drops rows
(cancelled). `Engine.generate` is admit-all, then step until every row has ended: the one
decode path. `_finalize` turns a row into a `Result` with its `Telemetry` (hidden thinking
returns only the answer). `decode`: plain budgeted decoding with exact caps and no heads. The
phases and budget rules are explained in `docs/engine.md`.

What it does not do: per-token decisions (the controller), scheduling or threads
(`tina.serve.batcher`), HTTP, chat history, logging or training (their modules call this one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
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
from tina.engine.batch import DecodeBatch, join, select
from tina.engine.controller import (
    Prediction,
    Row,
    Vocab,
    advance,
    new_row,
    next_token,
    read_exit_check,
    read_soft_cap,
)
from tina.engine.prefix import Prefix, crop, shared_length, take_row, to_cache, weights_key
from tina.engine.sampling import check_sampling, sample_next_token, seeded_generator
from tina.engine.types import (
    DONE,
    EngineConfig,
    Request,
    Result,
    Telemetry,
    count_think_tokens,
    resolve_visibility,
)

DIRECT = PLAN_CLASSES.index("direct")
#: a shared prompt prefix gets a forward of its own when that spares this many token positions
PREFIX_MIN_SAVED = 64


@dataclass
class _Stats:
    """What the engine measures about one row besides its decisions."""

    confidence_after: float | None = None
    gate_sum: float = 0.0
    gate_open: float = 0.0
    gate_count: float = 0.0


@dataclass
class _Entry:
    """The engine's state of one row of a `DecodeBatch`."""

    id: int  #: the row id `admit` returned
    request: Request
    row: Row  #: the controller's state
    stats: _Stats
    heads: dict[str, Any] | None  #: the heads' reading of this row's prompt (None: no heads)
    started: float  #: when its admission began (`time.perf_counter`)


def _row_heads(heads: dict[str, Any] | None, i: int) -> dict[str, Any] | None:
    """Row `i` of the heads' batch reading."""
    if heads is None:
        return None
    per_layer = {
        layer: {name: value[i] for name, value in values.items()}
        for layer, values in heads["per_layer"].items()
    }
    return {
        **{name: heads[name][i] for name in ("plan_probs", "plan", "budget", "confidence")},
        "per_layer": per_layer,
    }


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
        #: think before answering (`EngineConfig.reasoning`; None: what the model knows)
        self.reasoning = (
            bool(getattr(model, "tina_reasoning_format", True))
            if self.config.reasoning is None
            else self.config.reasoning
        )
        self.forward_calls = 0  #: model forwards run so far (one prefill + one per step)
        self._kept: Prefix | None = None  #: the last prompt prefilled, for the next `admit`
        #: called with the number of requests that ended at each step where some did (a
        #: caller's progress bar or counter)
        self.on_finished: Callable[[int], None] | None = None
        self._step_ends: dict[int, bool] = {}
        self._vocab = Vocab(
            think_close=self.ids[THINK_CLOSE],
            answer_open=self.ids[ANSWER_OPEN],
            answer_close=self.ids[ANSWER_CLOSE],
            eos=tokenizer.eos_token_id,
            ends_step=self._ends_step,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
            encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
        )

    # --- public -------------------------------------------------------------------------------

    def render(self, question: str) -> str:
        """`question` through the tokenizer's chat template, ending with `<think>` (when the
        engine reasons)."""
        return self.render_messages([{"role": "user", "content": question}])

    def render_messages(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """A conversation through the chat template, as this engine decodes it."""
        from tina.core.models import render_messages

        return render_messages(self.tokenizer, messages, think=self.reasoning)

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[Request],
        on_token: Callable[[int, str, int], None] | None = None,
    ) -> list[Result]:
        """Run a batch of requests to completion: `admit` them all, then `step` until every
        row has ended. `on_token(row, phase, token_id)` sees every emitted token (forced or
        sampled, tags included) with the phase it was emitted in; `row` is the request's index.
        A request with a negative temperature or a top_p outside (0, 1] is a `ValueError`."""
        if not requests:
            return []
        batch = DecodeBatch()
        ids = self.admit(batch, requests)
        results: dict[int, Result] = {}
        while batch.rows:
            results.update(self.step(batch, on_token))
        return [results[i] for i in ids]

    @torch.inference_mode()
    def admit(self, batch: DecodeBatch, requests: Sequence[Request]) -> list[int]:
        """Prefill `requests` in one forward of their own (the heads read it) and join their
        rows to `batch`; returns their row ids (`batch.next_id` on). Settings are checked first
        (`ValueError`), so a refused request leaves the batch as it was. The prompt tokens
        they share, or share with the last prompt prefilled, are not run again (`_prefix`)."""
        if not requests:
            return []
        for request in requests:
            check_sampling(request.temperature, request.top_p)
        started = time.perf_counter()
        encoded = [self._encode(self._prompt_text(r)) for r in requests]
        weights = weights_key(self.model.parameters()) if self.config.prefix_cache else ()
        prefix = self._prefix(encoded, weights)
        done = len(prefix) if prefix is not None else 0
        input_ids, tail = self._left_pad([e[done:] for e in encoded])
        ones = torch.ones((len(requests), done), dtype=tail.dtype, device=self.device)
        attention = torch.cat([ones, tail], 1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, done:]
        cache = to_cache(prefix, len(requests))
        with record_taps() as taps:
            logits = self._forward(input_ids, attention, positions, cache, think_mask=None)
        if prefix is not None and prefix.taps:
            taps = {
                layer: torch.cat([prefix.taps[layer].expand(len(requests), -1, -1), t], 1)
                for layer, t in taps.items()
            }
        if self.config.prefix_cache:
            longest = max(range(len(encoded)), key=lambda i: len(encoded[i]))
            self._kept = take_row(cache, longest, encoded[longest], taps, weights)
        heads = self._read_heads(taps, attention) if self.introspection is not None else None
        ids = list(range(batch.next_id, batch.next_id + len(requests)))
        batch.next_id += len(requests)
        entries = []
        for i, (row_id, request) in enumerate(zip(ids, requests, strict=True)):
            row_heads = _row_heads(heads, i)
            row = self._new_row(request, row_heads)
            entries.append(_Entry(row_id, request, row, _Stats(), row_heads, started))
        join(batch, cache, attention, positions[:, -1] + 1, logits, entries)
        return ids

    @torch.inference_mode()
    def step(
        self,
        batch: DecodeBatch,
        on_token: Callable[[int, str, int], None] | None = None,
    ) -> dict[int, Result]:
        """One decode step of every row in `batch`: each row chooses its next token
        (`on_token(row_id, phase, token_id)` sees it), the rows that ended leave the batch and
        their `Result`s are returned by row id, and one forward feeds the rest their token."""
        if not batch.rows:
            return {}
        step_ids, think_flags = self._choose_tokens(batch, on_token)
        now = time.perf_counter()
        ended: dict[int, Result] = {}
        keep = []
        for i, entry in enumerate(batch.rows):
            if entry.row.phase == DONE:
                ended[entry.id] = self._finalize(entry, now - entry.started)
            else:
                keep.append(i)
        if ended:
            step_ids = [step_ids[i] for i in keep]
            think_flags = [think_flags[i] for i in keep]
            select(batch, keep)
            if self.on_finished is not None:
                self.on_finished(len(ended))
        if batch.rows:
            self._feed(batch, step_ids, think_flags)
        return ended

    @torch.inference_mode()
    def release(self, batch: DecodeBatch, ids: Collection[int]) -> None:
        """Drop the rows `ids` from `batch` (cancelled: no result); unknown ids are ignored."""
        keep = [i for i, entry in enumerate(batch.rows) if entry.id not in ids]
        select(batch, keep)

    # --- steps --------------------------------------------------------------------------------

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt, add_special_tokens=False))

    def prompt_batch(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rendered prompts as the engine tokenizes them, left-padded: (input ids, mask)."""
        return self._left_pad([self._encode(p) for p in prompts])

    def _left_pad(self, encoded: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token lists left-padded to one width: (input ids, attention mask)."""
        width = max(len(e) for e in encoded)
        input_ids = torch.full((len(encoded), width), self.pad, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            input_ids[i, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            attention[i, width - len(e) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    def _prefix(self, encoded: Sequence[Sequence[int]], weights: Any) -> Prefix | None:
        """The prefilled prefix the prompts `encoded` start from (None: prefill them whole).

        Every prompt keeps at least its last token for the batch's forward (its logits come
        from there). The kept prefix of the last admission is reused as far as it matches
        and the weights are unchanged; past that, the prompts' common prefix gets a forward
        of its own (one row) when it spares at least `PREFIX_MIN_SAVED` token positions."""
        if not self.config.prefix_cache:
            return None
        shared = min(shared_length(encoded), min(len(e) for e in encoded) - 1)
        kept = self._kept
        tapped = set(self.introspection.tap_layers) if self.introspection is not None else set()
        if kept is not None and (kept.weights != weights or set(kept.taps) != tapped):
            kept = None
        reused = shared_length([kept.tokens, encoded[0][:shared]]) if kept is not None else 0
        prefix = crop(kept, reused) if kept is not None and reused > 0 else None
        if (len(encoded) - 1) * (shared - reused) < PREFIX_MIN_SAVED:
            return prefix
        tokens = encoded[0][reused:shared]
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        attention = torch.ones((1, shared), dtype=torch.long, device=self.device)
        positions = torch.arange(reused, shared, device=self.device)[None]
        cache = to_cache(prefix, 1)
        with record_taps() as taps:
            self._forward(ids, attention, positions, cache, think_mask=None)
        if prefix is not None and prefix.taps:
            taps = {layer: torch.cat([prefix.taps[layer], t], 1) for layer, t in taps.items()}
        return take_row(cache, 0, encoded[0][:shared], taps, weights)

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
                cache=cache,
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

    def _prompt_text(self, request: Request) -> str:
        return request.prompt if request.rendered else self.render(request.prompt)

    def _feed(self, batch: DecodeBatch, step_ids: list[int], think_flags: list[bool]) -> None:
        """One forward feeding each row of `batch` its chosen token; the heads read the rows
        that wait for them; the forward's logits become the batch's."""
        assert batch.attention is not None and batch.positions is not None
        assert batch.cache is not None
        rows = [entry.row for entry in batch.rows]
        stats = [entry.stats for entry in batch.rows]
        ones = torch.ones((len(rows), 1), dtype=batch.attention.dtype, device=self.device)
        batch.attention = torch.cat([batch.attention, ones], 1)
        think_close = self.ids[THINK_CLOSE]
        closing = [i for i, t in enumerate(step_ids) if t == think_close]
        reading = [i for i, r in enumerate(rows) if r.needs_reading]
        use_mask = any(think_flags) and self.introspection is not None
        with record_taps() as taps:
            batch.logits = self._forward(
                torch.tensor(step_ids, device=self.device)[:, None],
                batch.attention,
                batch.positions[:, None],
                batch.cache,
                think_mask=torch.tensor(think_flags, device=self.device)[:, None]
                if use_mask
                else None,
            )
        self._collect_gates(stats, think_flags)
        if (closing or reading) and self.introspection is not None:
            self._assess(rows, stats, closing, reading, taps)
        batch.positions = batch.positions + 1

    def _new_row(self, request: Request, heads: dict[str, Any] | None) -> Row:
        prediction = None
        if heads is not None:
            prediction = Prediction(
                direct=int(heads["plan"]) == DIRECT, budget=float(heads["budget"])
            )
        generator = None
        if request.temperature > 0:
            generator = seeded_generator(request.seed, self.device)
        return new_row(
            request,
            self.config,
            self._vocab,
            prediction=prediction,
            has_heads=heads is not None,
            exit_threshold=self._exit_threshold(),
            generator=generator,
            reasoning=self.reasoning,
        )

    def _sample(self, row: Row, logits: torch.Tensor) -> int:
        return sample_next_token(
            logits, temperature=row.temperature, top_p=row.top_p, generator=row.generator
        )

    def _pick(self, row: Row, logits: torch.Tensor, greedy: int) -> int:
        """The row's sampled token: the batch's argmax when greedy, else `_sample`."""
        return greedy if row.temperature <= 0 else self._sample(row, logits)

    def _choose_tokens(
        self,
        batch: DecodeBatch,
        on_token: Callable[[int, str, int], None] | None,
    ) -> tuple[list[int], list[bool]]:
        """The token each row feeds next and whether it is a think token."""
        assert batch.logits is not None
        logits = batch.logits
        greedy = logits.argmax(dim=-1).tolist()
        step_ids, think_flags = [], []
        for i, entry in enumerate(batch.rows):
            row = entry.row
            phase = row.phase
            token = next_token(row, partial(self._pick, row, logits[i], greedy[i]))
            token, is_think = advance(row, token)
            if on_token is not None:
                on_token(entry.id, phase, token)
            step_ids.append(token)
            think_flags.append(is_think)
        return step_ids, think_flags

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

    def _collect_gates(self, stats: list[_Stats], think_flags: list[bool]) -> None:
        if self.introspection is None or not any(think_flags):
            return
        for adapter in self.introspection.adapters.values():
            gates = adapter.last_rows
            if gates is None:
                continue
            z_sum, z_open, n = (t.tolist() for t in gates)
            for i, s in enumerate(stats):
                s.gate_sum += z_sum[i]
                s.gate_open += z_open[i]
                s.gate_count += n[i]

    def _assess(
        self,
        rows: list[Row],
        stats: list[_Stats],
        closing: list[int],
        reading: list[int],
        taps: dict[int, torch.Tensor],
    ) -> None:
        """The heads read the position just fed: confidence after thinking for rows that fed
        `</think>`; readiness for rows at a closing step end (the exit check); confidence for
        rows at their soft cap (the extension). The controller decides from these readings."""
        mask = torch.ones(len(rows), 1, dtype=torch.long, device=self.device)
        out = self.introspection.heads(taps, mask)
        confidence = apply_confidence(out.confidence_logit, self.calibration)
        for i in closing:
            stats[i].confidence_after = float(confidence[i])
        readiness = out.readiness().tolist() if any(rows[i].pending_exit for i in reading) else []
        for i in reading:
            if rows[i].pending_exit:
                read_exit_check(rows[i], readiness[i])
            else:
                read_soft_cap(rows[i], float(confidence[i]))

    def _finalize(self, entry: _Entry, latency: float) -> Result:
        row, stats, request, heads = entry.row, entry.stats, entry.request, entry.heads
        text = self.tokenizer.decode(row.completion_ids, skip_special_tokens=False)
        think_text, answer = split_reasoning(text)
        visible = resolve_visibility(request.visible_cot, self.config.visible_cot)
        output = text if visible else answer
        n_tokens = len(row.completion_ids)
        per_layer: dict[str, dict[str, Any]] = {}
        plan, plan_probs, predicted, conf_before = None, {}, None, None
        if heads is not None:
            probs = heads["plan_probs"].tolist()
            plan = PLAN_CLASSES[int(heads["plan"])]
            plan_probs = dict(zip(PLAN_CLASSES, probs, strict=True))
            predicted = float(heads["budget"])
            conf_before = float(heads["confidence"])
            for layer, values in heads["per_layer"].items():
                per_layer[str(layer)] = {
                    "plan_probs": torch.softmax(values["plan_logits"], -1).tolist(),
                    "budget": float(values["budget"]),
                    "confidence": float(
                        apply_confidence(values["confidence_logit"], self.calibration)
                    ),
                }
        gates = stats.gate_count
        telemetry = Telemetry(
            plan=plan,
            plan_probs=plan_probs,
            predicted_budget=predicted,
            budget=row.budget,
            soft_cap=row.soft_cap,
            think_tokens=count_think_tokens(row.think_ids),
            answer_tokens=len(row.answer_ids),
            confidence_before=conf_before,
            confidence_after=stats.confidence_after,
            extended=row.extended,
            forced_think_close=row.forced_think_close,
            forced_answer_close=row.forced_answer_close,
            gate_activity=stats.gate_sum / gates if gates else 0.0,
            gate_coverage=stats.gate_open / gates if gates else 0.0,
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
