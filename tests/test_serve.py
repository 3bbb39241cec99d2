"""`tina serve` against a live uvicorn server on loopback, through the official `openai` client
and raw httpx: completions (plain, streamed, visible reasoning), budgets and limits, auth,
malformed input, concurrent clients batched together, a full queue, graceful shutdown, and
logs that hold neither the key nor the thinking."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import openai
import pytest
import uvicorn
from conftest import GatedEngine, wait_until

from tina.core.checks import ConfigError
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig, Request
from tina.serve.app import create_app
from tina.serve.flags import EMBEDDED_MODEL_NAME
from tina.serve.service_config import AuthConfig, Limits, ServiceConfig

KEY = "sk-test-8f3a1c"
MODEL = EMBEDDED_MODEL_NAME
SERVICE = ServiceConfig(
    slack_ratio=0.0,
    budget_cap=24,
    max_answer_tokens=16,
    limits=Limits(
        max_body_bytes=2048,
        max_prompt_chars=120,
        max_tokens=64,
        max_queue=8,
        batch_window_ms=10,
        max_batch_size=8,
    ),
    auth=AuthConfig(require_auth=True),
)


class LiveServer:
    """A uvicorn server for `app` on a free loopback port, in a background thread."""

    def __init__(self, app, send_buffer: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if send_buffer is not None:  # the accepted connections inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.app = app
        config = uvicorn.Config(app, log_config=None, log_level="info", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        wait_until(lambda: self.server.started, "the server to start")

    @property
    def batcher(self):
        return self.app.state.batcher

    def client(self, key: str | None = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@contextmanager
def live(engine, service=SERVICE, send_buffer: int | None = None) -> Iterator[LiveServer]:
    app = create_app(engine, service, model_name=MODEL, api_keys=[KEY])
    server = LiveServer(app, send_buffer)
    try:
        yield server
    finally:
        engine.gate.set()
        server.stop()


@pytest.fixture(scope="module")
def engine(embedded):
    model, tokenizer = embedded
    return Engine(model, tokenizer, config=EngineConfig.from_service_config(SERVICE))


@pytest.fixture(scope="module")
def gated(engine):
    return GatedEngine(engine)


@pytest.fixture(scope="module")
def server(gated):
    with live(gated) as s:
        yield s


@pytest.fixture
def client(server):
    return server.client()


def ask(client: openai.OpenAI, question: str, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], **kw
    )


def solo(engine: Engine, question: str, **kw):
    """The engine's own result for the request the server builds by default."""
    request = Request(question, **{"budget_cap": 24, "max_tokens": SERVICE.limits.max_tokens, **kw})
    return engine.generate([request])[0]


def post(server: LiveServer, content, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    headers.update(kw.pop("headers", {}))
    return httpx.post(
        f"{server.url}/v1/chat/completions", content=content, headers=headers, timeout=60, **kw
    )


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in response.text
    return error


# --- completions --------------------------------------------------------------------------------


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    health = httpx.get(f"{server.url}/health").json()  # no key needed
    assert health["status"] == "ok" and health["model"] == MODEL


def test_a_chat_completion_shows_only_the_answer(engine, client):
    want = solo(engine, "Add 37 and 45")
    got = ask(client, "Add 37 and 45")
    choice = got.choices[0]
    assert choice.message.content == want.output == want.answer == "82"
    assert choice.finish_reason == "stop"
    assert getattr(choice.message, "reasoning_content", None) is None
    assert want.think_text not in got.model_dump_json()
    telemetry = got.model_extra["telemetry"]
    assert telemetry["think_tokens"] == want.telemetry.think_tokens > 0
    assert telemetry["leaked"] is False
    assert got.usage.completion_tokens == want.telemetry.think_tokens + want.telemetry.answer_tokens
    assert got.usage.completion_tokens_details.reasoning_tokens == want.telemetry.think_tokens


def test_a_streamed_completion_matches_the_plain_one(client):
    question = "Subtract 19 from 84"
    plain = ask(client, question, temperature=0.8, seed=5)
    chunks = list(
        ask(
            client,
            question,
            temperature=0.8,
            seed=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == plain.choices[0].message.content
    assert all(getattr(d, "reasoning_content", None) is None for d in deltas)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].model_extra["telemetry"] == {
        **plain.model_extra["telemetry"],
        "latency_s": finals[0].model_extra["telemetry"]["latency_s"],
        "tokens_per_s": finals[0].model_extra["telemetry"]["tokens_per_s"],
    }
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_visible_reasoning_goes_to_reasoning_content(engine, client):
    want = solo(engine, "Add 37 and 45", visible_cot=True)
    got = ask(client, "Add 37 and 45", extra_body={"visible_cot": True}).choices[0].message
    assert got.content == want.answer == "82"
    assert got.reasoning_content == want.think_text
    assert got.reasoning_content.startswith("7+5+0=12 r2;3+4+1=8 r82;")
    chunks = list(ask(client, "Add 37 and 45", stream=True, extra_body={"visible_cot": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == want.think_text
    assert "".join(d.content or "" for d in deltas) == "82"


def test_stop_ends_the_answer_before_it_streaming_included(engine, server):
    client = server.client()
    want = solo(engine, "Add 37 and 45", visible_cot=True)
    assert want.answer == "82"
    stop, kept = "2", "8"  # a stop string inside the answer (and in the thinking too)
    assert stop in want.think_text
    got = ask(client, "Add 37 and 45", stop=[stop, "never"])
    assert got.choices[0].message.content == kept and got.choices[0].finish_reason == "stop"
    chunks = list(ask(client, "Add 37 and 45", stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == kept
    # "2" might begin "2x": held back while it might, sent once the answer is whole
    chunks = list(ask(client, "Add 37 and 45", stop="2x", stream=True))
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == "82" and "8" in pieces
    shown = ask(client, "Add 37 and 45", stop=stop, extra_body={"visible_cot": True})
    message = shown.choices[0].message
    assert message.reasoning_content == want.think_text and message.content == kept
    for bad in (["a", "b", "c", "d", "e"], [""]):
        error = assert_openai_error(post(server, _body(stop=bad)), 400)
        assert error["param"] == "stop"


@pytest.mark.parametrize("cap", [0, 5, 13], ids=lambda c: f"think{c}")
def test_max_thinking_tokens_caps_the_thinking(client, cap):
    got = ask(client, "Multiply 4821 by 7", extra_body={"max_thinking_tokens": cap})
    telemetry = got.model_extra["telemetry"]
    assert telemetry["think_tokens"] <= cap
    assert telemetry["forced_think_close"] is True
    assert got.usage.completion_tokens_details.reasoning_tokens == telemetry["think_tokens"]


@pytest.mark.parametrize("max_tokens", [1, 9, 20], ids=lambda n: f"max{n}")
def test_max_tokens_bounds_thinking_and_answer_together(engine, client, max_tokens):
    want = solo(engine, "Add 9031 and 8877", max_tokens=max_tokens)
    got = ask(client, "Add 9031 and 8877", max_tokens=max_tokens)
    assert 1 <= got.usage.completion_tokens <= max_tokens
    assert got.choices[0].message.content == want.output
    finish = "length" if want.telemetry.forced_answer_close else "stop"
    assert got.choices[0].finish_reason == finish


def test_the_engine_token_limit_holds_for_sampled_rows(engine):
    requests = [
        Request("Add 9031 and 8877", temperature=1.0, seed=s, max_tokens=n, budget=b)
        for s, (n, b) in enumerate([(1, 10), (4, 0), (12, 30), (30, 5), (40, 100)])
    ]
    for request, r in zip(requests, engine.generate(requests), strict=True):
        t = r.telemetry
        assert 1 <= t.think_tokens + t.answer_tokens <= request.max_tokens
        assert t.soft_cap <= request.max_tokens - 1


# --- auth, limits, malformed input ---------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "sk-wrong", KEY + "x", "Basic " + KEY], ids=str)
def test_a_missing_or_wrong_key_is_401(server, key):
    response = post(server, b'{"model": "tina-embedded", "messages": []}', key=key)
    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    assert KEY not in response.text and "sk-wrong" not in response.text
    assert httpx.get(f"{server.url}/v1/models").status_code == 401


def test_the_openai_client_reports_a_bad_key(server):
    with pytest.raises(openai.AuthenticationError):
        ask(server.client(key="sk-wrong"), "Add 1 and 2")


def test_over_limit_requests_are_refused(server, client):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "Add 1 and 2", max_tokens=65)
    assert info.value.status_code == 400 and info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "Add 1 and 2 " * 11)
    assert info.value.body["code"] == "context_length_exceeded"
    padding = '"' + "x" * 3000 + '"'
    big = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": {padding}}}]}}'
    assert_openai_error(post(server, big.encode()), 413)
    # no Content-Length (chunked): the bytes actually read are counted
    chunked = post(server, iter([big.encode()[:1500], big.encode()[1500:]]))
    assert "content-length" not in chunked.request.headers
    assert_openai_error(chunked, 413)


def _body(**fields) -> bytes:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "Add 1 and 2"}]}
    payload.update(fields)
    return json.dumps(payload).encode()


USER = b'"messages": [{"role": "user", "content": "Add 1 and 2"}]'  #: a valid `messages`

# Each body is wrong in one way only: the not-UTF-8, NaN and duplicate-key bodies would be
# answered (200) by a lenient parser, so their `invalid_json` code says the strict one caught them.
MALFORMED = [
    ("not-json", b'{"model": "tina-embedded", "messages": [', 400, "invalid_json"),
    (
        "not-utf8",
        b'{"model": "tina-embedded", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
        "invalid_json",
    ),
    ("array", b"[1, 2]", 400, "invalid_json"),
    (
        "nan",
        b'{"model": "tina-embedded", "frequency_penalty": NaN, ' + USER + b"}",
        400,
        "invalid_json",
    ),
    (
        "duplicate-key",
        b'{"model": "gpt-4o", "model": "tina-embedded", ' + USER + b"}",
        400,
        "invalid_json",
    ),
    ("deep", b"[" * 1000 + b"]" * 1000, 400, "invalid_json"),
    ("empty", b"", 400, "invalid_json"),
    ("no-model", b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "invalid_value"),
    ("messages-string", _body(messages="Add 1 and 2"), 400, "invalid_value"),
    ("no-messages", _body(messages=[]), 400, "invalid_value"),
    ("no-user", _body(messages=[{"role": "system", "content": "hi"}]), 400, None),
    ("content-number", _body(messages=[{"role": "user", "content": 12}]), 400, "invalid_value"),
    (
        "image-part",
        _body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        None,
    ),
    ("temperature-string", _body(temperature="0.5"), 400, "invalid_value"),
    ("temperature-high", _body(temperature=7), 400, "invalid_value"),
    ("max-tokens-float", _body(max_tokens=3.5), 400, "invalid_value"),
    ("max-tokens-bool", _body(max_tokens=True), 400, "invalid_value"),
    ("max-tokens-zero", _body(max_tokens=0), 400, "invalid_value"),
    ("stream-string", _body(stream="yes"), 400, "invalid_value"),
    ("thinking-negative", _body(max_thinking_tokens=-1), 400, "invalid_value"),
    ("n-two", _body(n=2), 400, "unsupported_value"),
    ("unknown-model", _body(model="gpt-4o"), 404, "model_not_found"),
]


@pytest.mark.parametrize(
    "body,status,code", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_is_a_4xx_with_an_openai_error(server, body, status, code):
    response = post(server, body, headers={"Content-Type": "application/json"})
    assert assert_openai_error(response, status)["code"] == code


def test_the_strict_cases_are_valid_requests_to_a_lenient_parser():
    """The not-UTF-8, NaN and duplicate-key bodies are wrong only in what strict JSON refuses."""
    from tina.serve.openai_types import ChatCompletionRequest

    for name, body, _, _ in MALFORMED:
        if name in ("not-utf8", "nan", "duplicate-key"):
            lenient = json.loads(body.decode("utf-8", "replace"))
            assert ChatCompletionRequest.model_validate(lenient).model == MODEL, name


def test_other_routes_and_methods_are_openai_errors(server):
    assert_openai_error(httpx.get(f"{server.url}/v1/nothing"), 404)
    assert_openai_error(httpx.get(f"{server.url}/v1/chat/completions"), 405)


def test_requiring_auth_without_a_key_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="require_auth"):
        create_app(engine, SERVICE, api_keys=[])


# --- concurrency, back-pressure, shutdown, logs ---------------------------------------------------


def _in_threads(fn, args_list):
    results: list = [None] * len(args_list)

    def run(i, args):
        try:
            results[i] = fn(*args)
        except Exception as exc:  # reported by the test's assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    return threads, results


QUESTIONS = ["Add 37 and 45", "Subtract 19 from 84", "Multiply 23 by 4", "Add 12 and 9"]


def test_concurrent_clients_are_batched_and_get_their_own_answers(engine, gated, server):
    """One request holds the engine; six more from other clients queue meanwhile and then run as
    ONE batch, each answered exactly as if it were alone (seeded sampling per request)."""
    jobs = [(QUESTIONS[k % 4], k) for k in range(7)]
    want = [solo(engine, q, temperature=0.9, seed=s).output for q, s in jobs]

    def call(question, seed):
        reply = ask(server.client(), question, temperature=0.9, seed=seed)
        return reply.choices[0].message.content

    before = len(server.batcher.batch_sizes)
    gated.gate.clear()
    first_threads, first = _in_threads(call, jobs[:1])
    wait_until(lambda: server.batcher.running == 1, "the first request to run")
    rest_threads, rest = _in_threads(call, jobs[1:])
    wait_until(lambda: server.batcher.waiting == 6, "six requests to queue")
    gated.gate.set()
    for t in first_threads + rest_threads:
        t.join(timeout=60)
    assert first + rest == want
    assert list(server.batcher.batch_sizes)[before:] == [1, 6]
    health = httpx.get(f"{server.url}/health").json()
    assert health["batches"] >= 2 and health["batched_requests"] >= 7


#: a service whose streams can be far larger than socket buffers: long visible thinking
LONG = replace(
    SERVICE,
    budget_cap=1000,
    limits=replace(SERVICE.limits, max_prompt_chars=200, max_tokens=1100, max_body_bytes=4096),
)
LONG_QUESTION = "Add " + "7" * 60 + " and " + "5" * 60  #: thinks until its budget is spent
SMALL_BUFFER = 4096  #: SO_SNDBUF of the server, SO_RCVBUF of the stalled client (bytes)


def _raw_request(url: str, body: bytes) -> socket.socket:
    """A connection with a small receive buffer that has sent one chat request."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _dechunk(data: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 body."""
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


def _streamed_lines(caplog) -> int:
    return sum("stream=True" in r.getMessage() for r in caplog.records)


def test_a_client_that_stops_reading_blocks_nobody(embedded, caplog):
    """A stream far larger than the socket buffers (1000 visible thinking tokens, over 100 kB of
    SSE) to a client that reads the headers, then stops: the engine still finishes the row (the
    rest waits in the stream's queue, not in the engine), its handler waits on that client
    alone while another client is answered, and the stream arrives whole once read again."""
    model, tokenizer = embedded
    engine = Engine(model, tokenizer, config=EngineConfig.from_service_config(LONG))
    want = engine.generate([Request("Add 37 and 45", max_tokens=LONG.limits.max_tokens)])[0]
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "visible_cot": True,
            "messages": [{"role": "user", "content": LONG_QUESTION}],
        }
    ).encode()
    with (
        caplog.at_level(logging.INFO, logger="tina.serve.app"),
        live(GatedEngine(engine), LONG, send_buffer=SMALL_BUFFER) as server,
    ):
        before = server.batcher.requests_run
        stalled = _raw_request(server.url, body)
        try:
            head = b""
            while b"\r\n\r\n" not in head:  # the headers, byte by byte; then no more reading
                head += stalled.recv(1)
            assert head.startswith(b"HTTP/1.1 200")
            wait_until(
                lambda: server.batcher.requests_run > before and server.batcher.running == 0,
                "the engine to finish the stalled request",
                timeout=180,  # 1000 tokens on a busy 2-core machine
            )
            reply = ask(server.client(), "Add 37 and 45")
            assert reply.choices[0].message.content == want.output
            assert _streamed_lines(caplog) == 0  # its handler still waits to send the rest
            received = bytearray()
            while chunk := stalled.recv(65536):
                received += chunk
        finally:
            stalled.close()
        wait_until(lambda: _streamed_lines(caplog) == 1, "the stalled stream's log line")
    stream = _dechunk(bytes(received)).decode()
    assert len(stream) > 100_000  # far more than the buffers hold: the handler had to wait
    events = [line.removeprefix("data: ") for line in stream.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    thinking = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    (last,) = [c for c in chunks if c["choices"][0].get("finish_reason")]
    assert last["telemetry"]["think_tokens"] == LONG.budget_cap  # bounded by its budget
    assert len(thinking) >= LONG.budget_cap // 2


def test_a_full_queue_is_429(engine):
    tiny = replace(SERVICE, limits=replace(SERVICE.limits, max_queue=1, max_batch_size=1))
    gated = GatedEngine(engine)
    with live(gated, tiny) as server:
        gated.gate.clear()
        want = solo(engine, "Add 1 and 2").output

        def call():
            return ask(server.client(), "Add 1 and 2")

        # One at a time: two sent together may both find the queue holding the other.
        first_threads, first = _in_threads(call, [()])
        wait_until(lambda: server.batcher.running == 1, "the first request to run")
        second_threads, second = _in_threads(call, [()])
        wait_until(lambda: server.batcher.waiting == 1, "the second request to queue")
        with pytest.raises(openai.RateLimitError) as info:
            ask(server.client(), "Add 3 and 4")
        assert info.value.body["code"] == "queue_full"
        assert info.value.response.headers["retry-after"] == "1"
        gated.gate.set()
        for t in first_threads + second_threads:
            t.join(timeout=60)
        assert [r.choices[0].message.content for r in first + second] == [want, want]


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=5)
    except httpx.TransportError:
        return True
    return False


def test_shutdown_finishes_the_requests_in_flight(engine):
    gated = GatedEngine(engine)
    with live(gated) as server:
        gated.gate.clear()
        threads, results = _in_threads(lambda: ask(server.client(), "Add 37 and 45"), [()])
        wait_until(lambda: server.batcher.running == 1, "the request to run")
        server.server.should_exit = True
        wait_until(lambda: refuses_connections(server.url), "the server to stop accepting")
        assert server.batcher.running == 1
        gated.gate.set()
        threads[0].join(timeout=60)
        server.thread.join(timeout=60)
        assert not server.thread.is_alive()
        assert results[0].choices[0].message.content == "82"
        assert server.batcher._closed  # drained and stopped by the lifespan


def test_logs_hold_neither_the_key_nor_the_thinking(engine, server, caplog):
    want = solo(engine, "Add 37 and 45")
    assert len(want.think_text) >= 16
    with caplog.at_level(logging.DEBUG):
        ask(server.client(), "Add 37 and 45")
        list(ask(server.client(), "Add 37 and 45", stream=True))
        ask(server.client(), "Mail alice@example.com: Add 3 and 4")
        post(server, b"{", key="sk-wrong")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text.count("chatcmpl-") == 3 and "[EMAIL]" in text  # one line a request, redacted
    for secret in (KEY, "sk-wrong", want.think_text, want.think_text[:16], "alice@example.com"):
        assert secret not in text
