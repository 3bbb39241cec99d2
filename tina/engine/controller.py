"""The row controller: every per-token decision of one request's decode, as plain rules.

What it does: a row's budget and soft cap (`choose_budget`, `new_row`), and, token by token,
what the row feeds next (`next_token`: a forced tag from its queue, else the sampled token) and
what that token does (`advance`: phase changes, step-end closing, the soft cap, the answer's
end, stop strings, `max_tokens`); the heads' readings at a pending position come in as plain
floats (`read_exit_check`, `read_soft_cap`). The rules are explained in `docs/engine.md`.

What it does not do: call the model, sample, read the heads or import any model code; the
tokenizer reaches it only as a `Vocab` (tag ids, a step-end test, decode/encode for stop
strings), so tests drive it with scripted token ids.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tina.engine.stop_strings import cut_at_stop
from tina.engine.types import ANSWER, DONE, THINK, EngineConfig, Request


@dataclass(frozen=True)
class Vocab:
    """What the controller knows of the tokenizer."""

    think_close: int  #: `</think>`
    answer_open: int  #: `<answer>`
    answer_close: int  #: `</answer>`
    eos: int | None  #: the end-of-sequence id (None: the tokenizer has none)
    ends_step: Callable[[int], bool]  #: whether a think token ends a step (`tags.ends_step`)
    decode: Callable[[Sequence[int]], str]  #: ids → text, special tokens kept (stop strings)
    encode: Callable[[str], list[int]]  #: text → ids, no special tokens (a cut answer)


@dataclass(frozen=True)
class Prediction:
    """The heads' reading of one prompt, as far as the budget needs it."""

    direct: bool  #: the plan is `direct` (no thinking)
    budget: float  #: the predicted budget, after the calibration clip


@dataclass
class Row:
    """One request's decoding state."""

    vocab: Vocab  #: the tokenizer's tags and text functions
    budget: int  #: the think budget applied
    soft_cap: int  #: think tokens at which `</think>` is forced
    answer_cap: int  #: answer tokens at which `</answer>` is forced
    step_cap: int  #: past the soft cap, a row judged not ready ends its step by here
    think_limit: int | None = None  #: most think tokens `max_tokens` allows (one left to answer)
    token_limit: int | None = None  #: the request's `max_tokens`
    stops: tuple[str, ...] = ()  #: the request's stop strings (answer only)
    exit_threshold: float | None = None  #: the exit check's threshold; None: no check
    extension_threshold: float | None = None  #: extend below this confidence; None: never
    extension_ratio: float = 0.5  #: the extension adds budget · extension_ratio tokens
    temperature: float = 0.0  #: sampling settings, carried for the engine (never read here)
    top_p: float = 1.0  #: see `temperature`
    generator: Any = None  #: see `temperature`
    phase: str = THINK  #: `THINK`, `ANSWER` or `DONE`
    think_ids: list[int] = field(default_factory=list)  #: think tokens, tags excluded
    answer_ids: list[int] = field(default_factory=list)  #: answer tokens, tags excluded
    completion_ids: list[int] = field(default_factory=list)  #: everything fed, tags included
    forced: deque[int] = field(default_factory=deque)  #: tags to feed before sampling again
    answer_start: int = 0  #: where the answer's tokens begin in `completion_ids`
    steps: int = 0  #: think tokens so far that ended a step
    forced_think_close: bool = False  #: thinking was closed for the model
    forced_answer_close: bool = False  #: the answer hit its cap
    extended: bool = False  #: the one budget extension was granted
    pending_assess: bool = False  #: at the soft cap, waiting for the heads' confidence
    pending_exit: bool = False  #: at a closing step end, waiting for the heads' readiness
    exit_checks: int = 0  #: exit checks run so far

    @property
    def needs_reading(self) -> bool:
        """The heads must read the position this row just fed."""
        return self.pending_assess or self.pending_exit


#: reasoning effort → multiple of the heads' budget (of the budget cap without heads)
EFFORT_SCALES: dict[str, float] = {"none": 0.0, "low": 0.5, "medium": 1.0, "high": 2.0}


def effort_scale(effort: str | None) -> float:
    """The budget multiple of a reasoning effort (None: 1, the heads' budget as it is); an
    effort not in `EFFORT_SCALES` is a `ValueError`."""
    if effort is None:
        return 1.0
    if effort not in EFFORT_SCALES:
        raise ValueError(f"effort must be one of {', '.join(EFFORT_SCALES)}, got {effort!r}")
    return EFFORT_SCALES[effort]


def choose_budget(request: Request, config: EngineConfig, prediction: Prediction | None) -> int:
    """A fixed budget wins; else effort `none` gives 0; else the `direct` plan gives 0; else
    the heads' budget times the effort's scale, clamped to [min_think, budget cap]; without
    heads, the budget cap times the scale (at most the cap)."""
    cap = config.budget_cap if request.budget_cap is None else request.budget_cap
    if request.budget is not None:
        return max(0, request.budget)
    scale = effort_scale(request.effort)
    if scale == 0:
        return 0
    if prediction is None:
        return min(cap, round(cap * scale))
    if prediction.direct:
        return 0
    return min(cap, max(config.min_think, round(prediction.budget * scale)))


def closes_at_step_end(used: int, steps: int, budget: int) -> bool:
    """Whether thinking closes at a step end, `used` think tokens and `steps` steps in: the
    budget is where thinking should end, and a cut never falls inside a step, so it ends at the
    step end nearest the budget — here, if the budget is spent, or if what is left of it is less
    than half a step (the row's mean step so far), so the next step end would overshoot it by
    more than stopping now falls short."""
    if used >= budget:
        return True
    return steps > 0 and 2 * (budget - used) * steps < used


def new_row(
    request: Request,
    config: EngineConfig,
    vocab: Vocab,
    *,
    prediction: Prediction | None = None,
    has_heads: bool = False,
    exit_threshold: float | None = None,
    generator: Any = None,
    reasoning: bool = True,
) -> Row:
    """The row of `request`: budget, soft cap (`floor(budget · (1 + slack))`, at most
    `max_tokens − 1`), answer cap, and whether the exit check and the extension apply
    (`has_heads`: the heads can read this row; `exit_threshold`: the calibration's, unless the
    check is off). A soft cap of 0 queues `</think>` at once. `reasoning=False`: no think
    phase — the row starts in the answer, which may take what thinking and answering together
    could (`max_tokens`, else `budget_cap + max_answer_tokens`) and ends at EOS."""
    if not reasoning:
        cap = request.max_answer_tokens or request.max_tokens
        row = Row(
            vocab=vocab,
            budget=0,
            soft_cap=0,
            answer_cap=cap or config.budget_cap + config.max_answer_tokens,
            step_cap=0,
            token_limit=request.max_tokens,
            stops=tuple(s for s in request.stop if s),
            temperature=request.temperature,
            top_p=request.top_p,
            generator=generator,
            phase=ANSWER,
        )
        return row
    budget = choose_budget(request, config, prediction)
    slack = config.slack_ratio if request.slack_ratio is None else request.slack_ratio
    think_limit = None if request.max_tokens is None else max(0, request.max_tokens - 1)
    soft_cap = math.floor(budget * (1 + slack))
    step_cap = math.floor(budget * (1 + 2 * slack))
    if think_limit is not None:
        soft_cap, step_cap = min(soft_cap, think_limit), min(step_cap, think_limit)
    wants_check = request.budget is None if request.exit_check is None else request.exit_check
    checks = wants_check and has_heads and budget > 0 and exit_threshold is not None
    row = Row(
        vocab=vocab,
        budget=budget,
        soft_cap=soft_cap,
        answer_cap=config.max_answer_tokens
        if request.max_answer_tokens is None
        else request.max_answer_tokens,
        step_cap=step_cap,
        think_limit=think_limit,
        token_limit=request.max_tokens,
        stops=tuple(s for s in request.stop if s),
        exit_threshold=exit_threshold if checks else None,
        extension_threshold=config.extension_threshold
        if config.extend_on_low_confidence and has_heads
        else None,
        extension_ratio=config.extension_ratio,
        temperature=request.temperature,
        top_p=request.top_p,
        generator=generator,
    )
    if row.soft_cap == 0:
        _close_thinking(row)
    return row


def next_token(row: Row, sample: Callable[[], int]) -> int:
    """The token `row` emits next: its first queued tag, else `sample()` (called only then)."""
    if row.forced:
        return row.forced.popleft()
    return sample()


def advance(row: Row, token: int) -> tuple[int, bool]:
    """Record `token` for `row`, move its phase and queue forced tags; returns the token to
    feed (a malformed exit from thinking becomes `</think>`, a malformed end of the answer
    `</answer>`) and whether it is a think token."""
    v = row.vocab
    if row.phase == THINK:
        return _advance_thinking(row, token)
    if row.phase == DONE:
        raise ValueError("advance: the row is done")
    row.completion_ids.append(token)
    if (
        token == v.answer_open
        and len(row.completion_ids) >= 2
        and row.completion_ids[-2] == v.think_close
    ):
        row.answer_start = len(row.completion_ids)
        return token, False  # the forced opening tag
    if token in (v.answer_close, v.eos, v.think_close):
        # a stray `</think>` ends the answer too: `extract_answer` would otherwise re-read
        # the answer so far as thinking, and a streamed answer could not be taken back
        row.completion_ids[-1] = v.answer_close
        row.phase = DONE
        return v.answer_close, False
    row.answer_ids.append(token)
    if row.stops and _stop_answer(row):
        return v.answer_close, False
    if len(row.answer_ids) >= row.answer_cap:
        row.forced.append(v.answer_close)
        row.forced_answer_close = True
    return token, False


def read_exit_check(row: Row, readiness: float) -> None:
    """The heads' readiness at the row's closing step end: close at the threshold, else think
    on to the next step end."""
    row.pending_exit = False
    row.exit_checks += 1
    if row.exit_threshold is None or readiness >= row.exit_threshold:
        _close_thinking(row)


def read_soft_cap(row: Row, confidence: float) -> None:
    """The heads' confidence at the row's soft cap: one extension of `budget ·
    extension_ratio` (within `max_tokens`) when it is below the threshold, else `</think>`."""
    row.pending_assess = False
    extension = max(1, math.ceil(row.budget * row.extension_ratio))
    if row.think_limit is not None:
        extension = min(extension, row.think_limit - row.soft_cap)
    threshold = row.extension_threshold
    if threshold is not None and confidence < threshold and extension > 0:
        row.extended = True
        row.soft_cap += extension
    else:
        _close_thinking(row)


def _advance_thinking(row: Row, token: int) -> tuple[int, bool]:
    v = row.vocab
    if token in (v.answer_open, v.answer_close, v.eos):
        token = v.think_close  # leaving thinking without closing it: close it for the model
        row.forced_think_close = True
    row.completion_ids.append(token)
    if token == v.think_close:
        row.phase = ANSWER
        row.forced.append(v.answer_open)
        if row.token_limit is not None:  # the answer gets what thinking left
            left = row.token_limit - len(row.think_ids)
            row.answer_cap = max(1, min(row.answer_cap, left))
        return token, False
    row.think_ids.append(token)
    step_end = v.ends_step(token)
    row.steps += step_end
    if not row.forced and not row.needs_reading:
        used = len(row.think_ids)
        if used >= row.soft_cap and not (row.exit_checks and not step_end and used < row.step_cap):
            _at_soft_cap(row)
        elif step_end and closes_at_step_end(used, row.steps, row.budget):
            if row.exit_threshold is not None:
                row.pending_exit = True  # the heads read this step end first
            else:
                _close_thinking(row)
    return token, True


def _at_soft_cap(row: Row) -> None:
    """Force `</think>` now, or (extension enabled, not yet extended) wait for the heads'
    confidence here first (`read_soft_cap`)."""
    if row.extension_threshold is not None and not row.extended:
        row.pending_assess = True
        return
    _close_thinking(row)


def _close_thinking(row: Row) -> None:
    row.forced.append(row.vocab.think_close)
    row.forced_think_close = True


def _stop_answer(row: Row) -> bool:
    """When the answer so far holds one of the row's stop strings, end the row with the answer
    cut before it (re-encoded: the tokens after the cut were never meant to be read); the model
    is fed `</answer>`."""
    v = row.vocab
    cut = cut_at_stop(v.decode(row.answer_ids), row.stops)
    if cut is None:
        return False
    row.answer_ids = v.encode(cut) if cut else []
    row.completion_ids = [*row.completion_ids[: row.answer_start], *row.answer_ids, v.answer_close]
    row.phase = DONE
    return True
