"""Prometheus metrics of `tina serve` (`GET /metrics`), on a registry of the app's own.

What it does: `ServeMetrics(batcher)` holds one app's metrics on its own `CollectorRegistry`
(a process may build many apps: tests do): chat requests by HTTP status, tokens by kind (prompt,
think, answer), think tokens predicted (the heads' budget) against used, queue depth and running
rows (read from the batcher when scraped, the numbers `/health` reports), time to first token
(streams: to the first text sent) and request latency (arrival to the engine's last token).
`StatusCounter` is the ASGI middleware that counts each chat request's status once its response
has ended; `render` writes the Prometheus text format. Names and meanings: `docs/serving.md`.

What it does not do: serve HTTP or check keys (`tina.serve.app` routes `/metrics` behind the
API's auth), or time the engine's own steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tina.serve.batcher import Completion, Delta

CONTENT_TYPE = CONTENT_TYPE_LATEST  #: the media type of `render`'s text
SECONDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
THINK_TOKENS = (0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServeMetrics:
    """The metrics of one app; every method is safe from any thread (the batcher's worker
    resolves futures and calls sinks)."""

    def __init__(self, batcher: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tina_requests", "Chat completion requests by HTTP status", ["status"], registry=r
        )
        self.tokens = Counter(
            "tina_tokens",
            "Tokens of finished requests (prompt, think, answer)",
            ["kind"],
            registry=r,
        )
        self.think = Histogram(
            "tina_think_tokens",
            "Think tokens per request the heads read: the heads' budget (predicted) and the "
            "think tokens spent (used)",
            ["source"],
            buckets=THINK_TOKENS,
            registry=r,
        )
        queue = Gauge("tina_queue_depth", "Requests waiting for the engine", registry=r)
        queue.set_function(lambda: float(batcher.waiting))
        running = Gauge("tina_running_rows", "Requests decoding in the engine", registry=r)
        running.set_function(lambda: float(batcher.running))
        self.ttft = Histogram(
            "tina_time_to_first_token_seconds",
            "Streams: from the request's arrival to its first text (visible thinking or answer)",
            buckets=SECONDS,
            registry=r,
        )
        self.latency = Histogram(
            "tina_request_latency_seconds",
            "From the request's arrival to the engine's last token for it",
            buckets=SECONDS,
            registry=r,
        )

    def status(self, code: int) -> None:
        """Count one chat request answered with HTTP status `code`."""
        self.requests.labels(status=str(code)).inc()

    def finished(self, future: Future[Completion], arrived: float) -> None:
        """A ticket's done callback: token counts, think tokens and latency of a completed
        request (a cancelled or failed one adds none)."""
        if future.cancelled() or future.exception() is not None:
            return
        completion = future.result()
        t = completion.result.telemetry
        self.latency.observe(time.perf_counter() - arrived)
        self.tokens.labels(kind="prompt").inc(completion.prompt_tokens)
        self.tokens.labels(kind="think").inc(t.think_tokens)
        self.tokens.labels(kind="answer").inc(t.answer_tokens)
        if t.predicted_budget is not None:
            self.think.labels(source="predicted").observe(t.predicted_budget)
            self.think.labels(source="used").observe(t.think_tokens)

    def timed_sink(self, sink: Callable[[Delta], None], arrived: float) -> Callable[[Delta], None]:
        """`sink`, observing the time to its first delta (the first text the client gets)."""
        first = [True]

        def timed(delta: Delta) -> None:
            if first[0]:
                first[0] = False
                self.ttft.observe(time.perf_counter() - arrived)
            sink(delta)

        return timed

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


class StatusCounter:
    """ASGI middleware: counts the status of every request to `path` once its response ended
    (500 when the app raised before answering)."""

    def __init__(self, app: Any, metrics: ServeMetrics, path: str) -> None:
        self.app, self.metrics, self.path = app, metrics, path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            self.metrics.status(status[0] if status else 500)
