"""The batching queue between request handlers and the engine: one worker thread owns the engine.

What it does:
- `Batcher.submit(request, sink=None)` queues one engine request and returns a `Ticket` at
  once; its `future` (a `concurrent.futures.Future`) gets a `Completion` (the engine's `Result`
  plus token counts) or the engine's exception. More than `max_waiting` requests waiting is a
  `QueueFull`; submitting to a stopped batcher is a `BatcherClosed`.
- The worker takes the waiting requests once arrivals pause for `window_s` (or after
  `MAX_WINDOWS` windows, or as soon as `max_batch_size` wait) and runs up to `max_batch_size` of
  them as ONE `Engine.generate` call (rows end independently there; sampling is seeded per
  request, so batching changes no output). Clients that send their next request as soon as the
  last one is answered arrive a few milliseconds apart: waiting for a pause, not a fixed time
  from the first arrival, keeps them in one batch. A lone request waits one window.
  A batch runs to its end before the next one starts: no rows join a running batch.
- Streaming: a ticket with a `sink` gets `Delta`s (reasoning text, answer text) as its row
  decodes, through the engine's `on_token` callback and `TextDeltas`. A sink must return at once
  (`tina.serve.app` hands each delta to its event loop's unbounded queue), so a consumer that reads
  slowly, or never, delays nobody; a sink that raises is dropped.
- A ticket whose future was cancelled before its batch started is dropped (its client left).
- `stop()` refuses new requests, lets the worker finish what is running and waiting, and joins it.

What the streamed text is: the same rules as the final result, applied to the completion so far
(`tina.core.tags.split_reasoning` / `extract_answer`, never a second copy). With hidden thinking,
think-phase tokens are never decoded for the stream at all; answer text is sent as
`extract_answer` of the partial completion grows, holding back trailing whitespace and anything
not yet decodable (half a UTF-8 character). Text already sent cannot be taken back: if a later
answer token made the rules reclassify earlier answer text (a stray `</think>` in the answer
phase), the stream stops adding text and the final result, not the stream, is authoritative.

What it does not do: HTTP, authentication or limits (see `tina.serve.app`), cancel a row that is
already decoding, or run rows of different batches together.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from tina.core.tags import THINK_CLOSE, extract_answer, split_reasoning
from tina.engine.loop import Engine
from tina.engine.stop_strings import streamable
from tina.engine.types import THINK, Request, Result, resolve_visibility

REASONING, CONTENT = "reasoning", "content"
MAX_WINDOWS = 4  #: a batch waits at most this many windows for arrivals to pause


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


class Batcher:
    """The queue and the worker thread that owns the engine (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int = 16,
        window_s: float = 0.02,
        max_waiting: int = 64,
    ) -> None:
        if max_batch_size < 1 or max_waiting < 1 or window_s < 0:
            raise ValueError("max_batch_size and max_waiting must be >= 1, window_s >= 0")
        self.engine = engine
        self.max_batch_size, self.window_s, self.max_waiting = max_batch_size, window_s, max_waiting
        self._waiting: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._last_arrival = 0.0
        self.batch_sizes: deque[int] = deque(maxlen=1024)  #: sizes of the latest batches, in order
        self.batches_run = 0  #: batches decoded so far
        self.requests_run = 0  #: requests decoded so far
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
        """Requests waiting for a batch."""
        with self._cond:
            return len(self._waiting)

    @property
    def running(self) -> int:
        """Requests in the batch decoding now."""
        with self._cond:
            return self._running

    # --- submitting ----------------------------------------------------------------------------

    def submit(self, request: Request, sink: Sink | None = None) -> Ticket:
        """Queue `request`; `sink`, if given, receives its `Delta`s from the worker thread."""
        ticket = Ticket(request=request, sink=sink, future=Future())
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(ticket)
            self._last_arrival = time.monotonic()
            self._cond.notify_all()
        return ticket

    # --- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._decode(batch)
            finally:
                with self._cond:
                    self._running = 0

    def _next_batch(self) -> list[Ticket] | None:
        """The next batch (tickets already marked running), or None once closed and drained."""
        with self._cond:
            while True:
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
                batch: list[Ticket] = []
                while self._waiting and len(batch) < self.max_batch_size:
                    ticket = self._waiting.popleft()
                    if ticket.future.set_running_or_notify_cancel():
                        batch.append(ticket)
                if batch:
                    self._running = len(batch)
                    self.batch_sizes.append(len(batch))
                    self.batches_run += 1
                    self.requests_run += len(batch)
                    return batch

    def _decode(self, batch: list[Ticket]) -> None:
        engine = self.engine
        visible = [
            resolve_visibility(t.request.visible_cot, engine.config.visible_cot) for t in batch
        ]
        streams = {
            i: TextDeltas(engine.tokenizer, visible[i], t.request.stop)
            for i, t in enumerate(batch)
            if t.sink is not None
        }

        def on_token(row: int, phase: str, token: int) -> None:
            stream = streams.get(row)
            if stream is not None:
                _send(batch[row], stream.feed(phase, token))

        try:
            results = engine.generate([t.request for t in batch], on_token=on_token)
            prompt_tokens = [self._prompt_tokens(t.request) for t in batch]
        except Exception as exc:  # the batch failed: every ticket in it gets the error
            for ticket in batch:
                ticket.future.set_exception(exc)
            return
        for i, (ticket, result) in enumerate(zip(batch, results, strict=True)):
            stream = streams.get(i)
            if stream is not None:
                _send(ticket, stream.finish(result))
            ticket.future.set_result(Completion(result, prompt_tokens[i], visible[i]))

    def _prompt_tokens(self, request: Request) -> int:
        prompt = request.prompt if request.rendered else self.engine.render(request.prompt)
        return len(self.engine.tokenizer.encode(prompt, add_special_tokens=False))


def _send(ticket: Ticket, delta: Delta | None) -> None:
    if delta is None or ticket.sink is None:
        return
    try:
        ticket.sink(delta)
    except Exception:  # a consumer that went away must not break the batch
        ticket.sink = None
