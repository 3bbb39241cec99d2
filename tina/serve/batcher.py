"""The iteration-level scheduler between request handlers and the engine: one worker thread owns
the engine and its running batch (continuous batching).

What it does:
- `Batcher.submit(request, sink=None, label=None)` queues one engine request and returns a
  `Ticket` at once; its `future` (a `concurrent.futures.Future`) gets a `Completion` (the
  engine's `Result` plus token counts) or the engine's exception. More than `max_waiting`
  requests waiting is a `QueueFull`; submitting to a stopped batcher is a `BatcherClosed`.
- The worker loops over decode steps of one `tina.engine.batch.DecodeBatch`: at every step
  boundary it admits what is waiting (`Engine.admit`, up to `max_batch_size` running rows),
  releases cancelled rows (`Engine.release`), runs one `Engine.step`, delivers each row's
  tokens to its stream and each ended row's result to its future. Rows join and leave a running
  batch; sampling is seeded per request and positions are per row, so this changes no output.
  Only when nothing runs does it wait for arrivals to pause (`window_s`, at most `MAX_WINDOWS`
  windows, or until `max_batch_size` wait): clients that send their next request as soon as
  the last one is answered arrive a few milliseconds apart and start together.
- Cancellation: `Ticket.cancel()` (the app calls it when the client disconnects). A waiting
  ticket is never admitted; a running row is released at the next step boundary, one log line
  (the ticket's label and token count, no prompt text). A ticket's future stays pending until
  its row ends, so it can be cancelled at any time before.
- Streaming: a ticket with a `sink` gets `Delta`s (reasoning text, answer text) as its row
  decodes, through the engine's `on_token` callback and `TextDeltas`. A sink must return at once
  (`tina.serve.app` hands each delta to its event loop's unbounded queue), so a consumer that reads
  slowly, or never, delays nobody; a sink that raises is dropped.
- An engine failure fails the tickets it touched: those being admitted (`admit`), or every
  running row (`step`; the batch starts empty again).
- `stop()` refuses new requests, lets the worker finish what is running and waiting, and joins it.

What the streamed text is: the same rules as the final result, applied to the completion so far
(`tina.core.tags.split_reasoning` / `extract_answer`, never a second copy). With hidden thinking,
think-phase tokens are never decoded for the stream at all; answer text is sent as
`extract_answer` of the partial completion grows, holding back trailing whitespace and anything
not yet decodable (half a UTF-8 character). Text already sent cannot be taken back: if a later
answer token made the rules reclassify earlier answer text (a stray `</think>` in the answer
phase), the stream stops adding text and the final result, not the stream, is authoritative.

What it does not do: HTTP, authentication or limits (see `tina.serve.app`), or notice a client
that left (its handler calls `Ticket.cancel`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from tina.core.tags import THINK_CLOSE, extract_answer, split_reasoning
from tina.engine.batch import DecodeBatch, select
from tina.engine.loop import Engine
from tina.engine.stop_strings import streamable
from tina.engine.types import THINK, Request, Result, resolve_visibility

logger = logging.getLogger("tina.serve.batcher")
REASONING, CONTENT = "reasoning", "content"
MAX_WINDOWS = 4  #: an idle worker waits at most this many windows for arrivals to pause


class QueueFull(RuntimeError):
    """Too many requests are waiting for a batch."""


class BatcherClosed(RuntimeError):
    """The batcher is stopping or stopped: it takes no new requests."""


@dataclass(frozen=True)
class Delta:
    """New text of one streamed row: thinking (visible mode only) and/or answer."""

    reasoning: str = ""
    content: str = ""


@dataclass(frozen=True)
class Completion:
    """What a ticket's future resolves to."""

    result: Result  #: the engine's result
    prompt_tokens: int  #: tokens of the rendered prompt
    visible: bool  #: whether the thinking was shown for this request


Sink = Callable[[Delta], None]


class TextDeltas:
    """The growing reasoning/answer text of one row, fed token by token (`feed`), emitted as the
    new part of what `split_reasoning`/`extract_answer` give for the completion so far; of the
    answer, what `tina.engine.stop_strings.streamable` allows under the request's `stops`."""

    def __init__(self, tokenizer: Any, visible: bool, stops: Sequence[str] = ()) -> None:
        self.tokenizer, self.visible, self.stops = tokenizer, visible, tuple(stops)
        self.ids: list[int] = []
        self.sent = {REASONING: "", CONTENT: ""}

    def feed(self, phase: str, token: int) -> Delta | None:
        """Record the row's next emitted token; the new text it makes visible, if any."""
        self.ids.append(token)
        if phase == THINK and not self.visible:
            return None  # hidden thinking is never decoded for the stream
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd"):
            return None  # wait for the rest of a multi-byte character
        if phase == THINK:
            closed = text if THINK_CLOSE in text else text + THINK_CLOSE
            return self._delta(reasoning=split_reasoning(closed)[0])
        if self.visible:
            think, answer = split_reasoning(text)
            return self._delta(reasoning=think, content=streamable(answer, self.stops))
        return self._delta(content=streamable(extract_answer(text), self.stops))

    def finish(self, result: Result) -> Delta | None:
        """What is left to send once the row's final result is known."""
        if self.visible:
            return self._delta(reasoning=result.think_text, content=result.answer)
        return self._delta(content=result.output)

    def _delta(self, reasoning: str | None = None, content: str | None = None) -> Delta | None:
        new = {REASONING: "", CONTENT: ""}
        for kind, full in ((REASONING, reasoning), (CONTENT, content)):
            if full is not None and full.startswith(self.sent[kind]):
                new[kind] = full[len(self.sent[kind]) :]
                self.sent[kind] = full
        if not new[REASONING] and not new[CONTENT]:
            return None
        return Delta(reasoning=new[REASONING], content=new[CONTENT])


@dataclass(eq=False)
class Ticket:
    """One submitted request: its future, and where its stream goes."""

    request: Request
    sink: Sink | None
    future: Future[Completion]
    label: str | None = None  #: how the log names it (the app's completion id)

    def cancel(self) -> bool:
        """Drop this request: never admitted if still waiting, else its row is released at the
        next step boundary. False once its result (or error) is in."""
        return self.future.cancel()


@dataclass(eq=False)
class _Running:
    """A ticket whose row is in the batch."""

    ticket: Ticket
    stream: TextDeltas | None
    visible: bool
    prompt_tokens: int
    tokens: int = 0  #: tokens emitted so far
    started: float = field(default_factory=time.monotonic)


class Batcher:
    """The queue and the worker thread that owns the engine (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int = 16,
        window_s: float = 0.02,
        max_waiting: int = 64,
        continuous: bool = True,
    ) -> None:
        if max_batch_size < 1 or max_waiting < 1 or window_s < 0:
            raise ValueError("max_batch_size and max_waiting must be >= 1, window_s >= 0")
        self.engine = engine
        self.max_batch_size, self.window_s, self.max_waiting = max_batch_size, window_s, max_waiting
        #: admit at every step boundary; False: only when nothing runs (static batching, the
        #: baseline `bench/serve.py --load` compares against)
        self.continuous = continuous
        self._waiting: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._last_arrival = 0.0
        #: requests admitted together at the latest step boundaries that admitted any, in order
        self.batch_sizes: deque[int] = deque(maxlen=1024)
        self.batches_run = 0  #: admissions so far (step boundaries that admitted requests)
        self.requests_run = 0  #: requests admitted so far
        self.step_sizes: deque[int] = deque(maxlen=1024)  #: running rows of the latest steps
        self.steps_run = 0  #: decode steps so far
        self.cancelled = 0  #: running rows released because their ticket was cancelled
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="tina-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the running and waiting ones, and join the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def waiting(self) -> int:
        """Requests waiting to be admitted."""
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        """Rows in the running batch (admitted, not yet ended or released)."""
        with self._cond:
            return self._running

    # --- submitting ----------------------------------------------------------------------------

    def submit(
        self, request: Request, sink: Sink | None = None, label: str | None = None
    ) -> Ticket:
        """Queue `request`; `sink`, if given, receives its `Delta`s from the worker thread;
        `label` names it in the log."""
        ticket = Ticket(request=request, sink=sink, future=Future(), label=label)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:  # cancelled tickets hold no place
                self._waiting = deque(t for t in self._waiting if not t.future.cancelled())
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(ticket)
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
        return ticket

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        batch = DecodeBatch()
        rows: dict[int, _Running] = {}
        while True:
            tickets = self._take(len(rows))
            if tickets is None:
                return
            if tickets:
                self._admit(batch, rows, tickets)
            self._release_cancelled(batch, rows)
            if rows:
                self._step(batch, rows)
            with self._cond:
                self._running = len(rows)

    def _take(self, running: int) -> list[Ticket] | None:
        """The waiting tickets to admit now (none cancelled), up to `max_batch_size` rows in
        all; None once closed and drained. When nothing runs, first wait for work and for
        arrivals to pause."""
        with self._cond:
            if running == 0:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:
                    return None
                # wait for a quiet window (no arrival for `window_s`), at most MAX_WINDOWS of them
                latest = time.monotonic() + MAX_WINDOWS * self.window_s
                while len(self._waiting) < self.max_batch_size and not self._closed:
                    left = min(self._last_arrival + self.window_s, latest) - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            taken: list[Ticket] = []
            if running and not self.continuous:
                return taken
            while self._waiting and running + len(taken) < self.max_batch_size:
                ticket = self._waiting.popleft()
                if not ticket.future.cancelled():
                    taken.append(ticket)
            if taken:
                self.batch_sizes.append(len(taken))
                self.batches_run += 1
                self.requests_run += len(taken)
            self._running = running + len(taken)
            return taken

    def _admit(self, batch: DecodeBatch, rows: dict[int, _Running], tickets: list[Ticket]) -> None:
        engine = self.engine
        try:
            prompt_tokens = [self._prompt_tokens(t.request) for t in tickets]
            ids = engine.admit(batch, [t.request for t in tickets])
        except Exception as exc:  # the admission failed: its tickets get the error
            for ticket in tickets:
                _fail(ticket, exc)
            return
        for row_id, ticket, tokens in zip(ids, tickets, prompt_tokens, strict=True):
            visible = resolve_visibility(ticket.request.visible_cot, engine.config.visible_cot)
            stream = None
            if ticket.sink is not None:
                stream = TextDeltas(engine.tokenizer, visible, ticket.request.stop)
            rows[row_id] = _Running(ticket, stream, visible, tokens)

    def _release_cancelled(self, batch: DecodeBatch, rows: dict[int, _Running]) -> None:
        gone = [row_id for row_id, r in rows.items() if r.ticket.future.cancelled()]
        if not gone:
            return
        self.engine.release(batch, gone)
        for row_id in gone:
            r = rows.pop(row_id)
            self.cancelled += 1
            logger.info(
                "%s cancelled: row released after %d tokens, %.3f s (%d rows left)",
                r.ticket.label or "a request",
                r.tokens,
                time.monotonic() - r.started,
                len(rows),
            )

    def _step(self, batch: DecodeBatch, rows: dict[int, _Running]) -> None:
        def on_token(row_id: int, phase: str, token: int) -> None:
            r = rows[row_id]
            r.tokens += 1
            if r.stream is not None:
                _send(r.ticket, r.stream.feed(phase, token))

        self.step_sizes.append(batch.size)
        self.steps_run += 1
        try:
            ended = self.engine.step(batch, on_token)
        except Exception as exc:  # the step failed: every running row gets the error
            for r in rows.values():
                _fail(r.ticket, exc)
            rows.clear()
            select(batch, [])
            return
        for row_id, result in ended.items():
            r = rows.pop(row_id)
            if r.stream is not None:
                _send(r.ticket, r.stream.finish(result))
            with suppress(InvalidStateError):  # cancelled as it ended
                r.ticket.future.set_result(Completion(result, r.prompt_tokens, r.visible))

    def _prompt_tokens(self, request: Request) -> int:
        prompt = request.prompt if request.rendered else self.engine.render(request.prompt)
        return len(self.engine.tokenizer.encode(prompt, add_special_tokens=False))


def _fail(ticket: Ticket, exc: BaseException) -> None:
    with suppress(InvalidStateError):  # cancelled meanwhile
        ticket.future.set_exception(exc)


def _send(ticket: Ticket, delta: Delta | None) -> None:
    if delta is None or ticket.sink is None:
        return
    try:
        ticket.sink(delta)
    except Exception:  # a consumer that went away must not break the batch
        ticket.sink = None
