"""`tina serve`: an OpenAI-compatible HTTP API over the engine (FastAPI + uvicorn).

What it does:
- `POST /v1/chat/completions` (JSON, or SSE streaming with `"stream": true`), `GET /v1/models`,
  `GET /v1/models/{id}`, `GET /health`. Every request becomes one `tina.engine.types.Request` and
  goes
  through the one engine via `tina.serve.batcher.Batcher`: requests that arrive together decode as
  one
  batch. OpenAI compatibility is a mode over the engine, not a second decode path.
- Thinking is hidden by default (the service config's `visible_cot`). Made visible (per request
  `"visible_cot": true`, or the config), the thinking goes to `reasoning_content` and the answer
  to `content`, as DeepSeek and vLLM do. `max_thinking_tokens` caps a request's thinking (the
  soft cap, slack included, never passes it); `max_tokens` / `max_completion_tokens` bound
  think + answer tokens together (tags excluded), as for DeepSeek's reasoner. The engine's
  telemetry rides along in an extra `telemetry` field (in the last chunk when streaming).
- The question is the text of the last `user` message: the models Tina ships answer one question
  at a time, so earlier turns and system messages are not sent to the model. `temperature`
  defaults to 0 (greedy); `seed` makes sampling reproducible per request. `stop` (a string or
  up to four) ends the answer before the first one, which is not sent, streaming included
  (`tina.engine.stop_strings`; the hidden thinking is never cut by them). Other OpenAI fields
  (`tools`, `logprobs`, …) are accepted and ignored; `n` must be 1.
- Safety: Bearer API keys (compared with `hmac.compare_digest`) when `auth.require_auth`; the
  body size is checked before it is parsed (Content-Length, then the bytes actually read);
  prompt length and `max_tokens` limits; a full queue is 429; malformed JSON and wrong types are
  400. Every error has OpenAI's body `{"error": {"message", "type", "param", "code"}}`; an
  unexpected failure is a 500 with a generic message. Log lines carry the prompt redacted
  (`tina.serve.redact`), token counts and latency: never the key, the thinking or the answer.
- Host, port, limits and auth come from `config/service_config.json`, with CLI overrides.
  Shutdown is graceful: uvicorn finishes the requests in flight, then the batcher drains.

The wire format's pydantic models are in `tina.serve.openai_types`, the command's flags in
`tina.serve.flags`.

What it does not do: conversation history, tools, logprobs, `n > 1`, TLS, or rate limiting per
key (a full queue is the only back-pressure).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tina.core.checks import ConfigError, Problem, parse_strict_json
from tina.engine.loop import Engine
from tina.engine.types import Request, resolve_visibility
from tina.serve.batcher import Batcher, BatcherClosed, Completion, Delta, QueueFull, Ticket
from tina.serve.flags import EMBEDDED_MODEL_NAME, served_model_name, service_with_overrides
from tina.serve.openai_types import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ErrorDetail,
    ErrorResponse,
    Usage,
)
from tina.serve.redact import redact
from tina.serve.service_config import Limits, ServiceConfig

logger = logging.getLogger("tina.serve.app")
MAX_STOP_STRINGS = 4  #: as OpenAI's API allows
_LOGGED_PROMPT_CHARS = 80
JSON_TYPE = "application/json"


# --- errors -------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type_
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _validation_error(errors: Sequence[Any]) -> APIError:
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else "invalid request body"
    return APIError(400, message, param=param, code="invalid_value")


# --- from a chat request to an engine request ---------------------------------------------------


def question_of(messages: Sequence[ChatMessage]) -> str:
    """The text of the last user message (text parts joined by newlines)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        if message.content is None or isinstance(message.content, str):
            return message.content or ""
        if any(part.type != "text" for part in message.content):
            raise APIError(400, "only text content is supported", param="messages")
        return "\n".join(part.text or "" for part in message.content)
    raise APIError(400, "messages: no message with role 'user'", param="messages")


def engine_request(chat: ChatCompletionRequest, engine: Engine, limits: Limits) -> Request:
    """The engine request for a validated chat request, or an `APIError` (limits, `n`)."""
    if chat.n not in (None, 1):
        raise APIError(400, "n: only n = 1 is supported", param="n")
    question = question_of(chat.messages)
    if len(question) > limits.max_prompt_chars:
        raise APIError(
            400,
            f"the prompt has {len(question)} characters; the limit is {limits.max_prompt_chars}",
            param="messages",
            code="context_length_exceeded",
        )
    name = "max_completion_tokens" if chat.max_completion_tokens is not None else "max_tokens"
    max_tokens = chat.max_completion_tokens or chat.max_tokens or limits.max_tokens
    if max_tokens > limits.max_tokens:
        raise APIError(
            400,
            f"{name}: {max_tokens} is over the limit of {limits.max_tokens}",
            param=name,
            code="invalid_value",
        )
    stops = [chat.stop] if isinstance(chat.stop, str) else list(chat.stop or [])
    if len(stops) > MAX_STOP_STRINGS or not all(stops):
        raise APIError(
            400,
            f"stop: at most {MAX_STOP_STRINGS} non-empty strings, got {stops!r}"[:200],
            param="stop",
            code="invalid_value",
        )
    config = engine.config
    budget_cap = config.budget_cap
    if chat.max_thinking_tokens is not None:  # the soft cap, slack included, stays within it
        budget_cap = min(
            budget_cap, math.floor(chat.max_thinking_tokens / (1 + config.slack_ratio))
        )
    return Request(
        prompt=question,
        budget_cap=budget_cap,
        temperature=0.0 if chat.temperature is None else chat.temperature,
        top_p=1.0 if chat.top_p is None else chat.top_p,
        seed=chat.seed,
        visible_cot=resolve_visibility(chat.visible_cot, config.visible_cot),
        max_tokens=max_tokens,
        stop=tuple(stops),
    )


def _usage(completion: Completion) -> Usage:
    t = completion.result.telemetry
    generated = t.think_tokens + t.answer_tokens
    return Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=generated,
        total_tokens=completion.prompt_tokens + generated,
        completion_tokens_details={"reasoning_tokens": t.think_tokens},
    )


def _finish_reason(completion: Completion) -> str:
    return "length" if completion.result.telemetry.forced_answer_close else "stop"


def chat_completion(cid: str, created: int, model: str, completion: Completion) -> ChatCompletion:
    """The non-streaming response: hidden thinking shows only the answer."""
    result = completion.result
    if completion.visible:
        message = AssistantMessage(content=result.answer, reasoning_content=result.think_text)
    else:
        message = AssistantMessage(content=result.output)
    return ChatCompletion(
        id=cid,
        created=created,
        model=model,
        choices=[Choice(message=message, finish_reason=_finish_reason(completion))],
        usage=_usage(completion),
        telemetry=result.telemetry.to_dict(),
    )


def _sse(chunk: BaseModel | dict[str, Any]) -> str:
    data = (
        chunk.model_dump_json(exclude_none=True)
        if isinstance(chunk, BaseModel)
        else json.dumps(chunk)
    )
    return f"data: {data}\n\n"


def log_request(
    cid: str,
    request: Request,
    completion: Completion | None,
    *,
    stream: bool,
    error: BaseException | None = None,
) -> None:
    """One log line per request: id, flags, token counts, latency and the prompt, redacted and
    cut short; never the key, the thinking or the answer."""
    if error is not None:
        logger.error("%s engine error (%s)", cid, type(error).__name__)
    t = completion.result.telemetry if completion is not None else None
    logger.info(
        "%s status=%d stream=%s visible=%s think_tokens=%s answer_tokens=%s latency_s=%s prompt=%r",
        cid,
        200 if t is not None else 500,
        stream,
        request.visible_cot,
        t.think_tokens if t else "-",
        t.answer_tokens if t else "-",
        f"{t.latency_s:.3f}" if t else "-",
        redact(request.prompt)[:_LOGGED_PROMPT_CHARS],
    )


async def stream_events(
    cid: str,
    created: int,
    model: str,
    ticket: Ticket,
    deltas: asyncio.Queue[Delta | None],
    request: Request,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The SSE stream of one request: a role chunk, one chunk per `Delta` (None ends them), a
    last chunk with the finish reason and the telemetry, the usage chunk if asked, `[DONE]`."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None, telemetry: Any = None) -> str:
        head = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices)
        return _sse(head.model_copy(update={"usage": usage, "telemetry": telemetry}))

    try:
        yield chunk([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        while (delta := await deltas.get()) is not None:
            text = DeltaMessage(
                content=delta.content or None, reasoning_content=delta.reasoning or None
            )
            yield chunk([ChunkChoice(delta=text)])
        error = ticket.future.exception()
        if error is not None:
            log_request(cid, request, None, stream=True, error=error)
            yield _sse(APIError(500, "internal server error", "server_error").body())
        else:
            completion = ticket.future.result()
            log_request(cid, request, completion, stream=True)
            last = ChunkChoice(delta=DeltaMessage(), finish_reason=_finish_reason(completion))
            yield chunk([last], telemetry=completion.result.telemetry.to_dict())
            if include_usage:
                yield chunk([], usage=_usage(completion))
        yield "data: [DONE]\n\n"
    finally:
        ticket.future.cancel()  # the client left before its batch started: drop it


# --- the app ------------------------------------------------------------------------------------


def create_app(
    engine: Engine,
    service: ServiceConfig,
    *,
    model_name: str = EMBEDDED_MODEL_NAME,
    api_keys: Sequence[str] | None = None,
) -> FastAPI:
    """The FastAPI app serving `engine` with `service`'s limits and auth. With
    `auth.require_auth`, the keys are `api_keys`, else those in the environment variable
    `auth.api_keys_env`; requiring auth with no key is a `ConfigError`."""
    limits = service.limits
    keys: list[bytes] = []
    if service.auth.require_auth:
        keys = [k.encode() for k in (service.auth.api_keys() if api_keys is None else api_keys)]
        if not keys:
            raise ConfigError(
                [
                    Problem(
                        "service config",
                        "auth.require_auth",
                        f"auth is required but ${service.auth.api_keys_env} holds no API key",
                    )
                ]
            )
    batcher = Batcher(
        engine,
        max_batch_size=limits.max_batch_size,
        window_s=limits.batch_window_ms / 1000,
        max_waiting=limits.max_queue,
    )
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)  # uvicorn has finished the requests in flight

    app = FastAPI(title="Tina", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    def authorize(request: HTTPRequest) -> None:
        if not keys:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        supplied = given.strip().encode("utf-8", "replace")
        # every key is compared, so the time taken says nothing about which one nearly matched
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(supplied, key)
        if scheme.lower() != "bearer" or not matched:
            raise APIError(
                401,
                "missing or invalid API key (send 'Authorization: Bearer <key>')",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def read_body(request: HTTPRequest) -> bytes:
        too_large = APIError(
            413,
            f"the request body is over the limit of {limits.max_body_bytes} bytes",
            code="request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise APIError(400, "invalid Content-Length header")
            if int(declared) > limits.max_body_bytes:
                raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise too_large
        return bytes(body)

    def parse_chat(body: bytes) -> ChatCompletionRequest:
        try:
            payload = parse_strict_json(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise APIError(400, "the request body must be a JSON object", code="invalid_json")
        try:
            chat = ChatCompletionRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc.errors()) from None
        if chat.model != model_name:
            raise APIError(
                404,
                f"the model {chat.model!r} does not exist; this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )
        return chat

    @app.exception_handler(APIError)
    async def on_api_error(request: HTTPRequest, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(
        request: HTTPRequest, exc: RequestValidationError
    ) -> JSONResponse:
        return _validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail), code=None).response()

    @app.exception_handler(Exception)
    async def on_unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        logger.error("internal error (%s) on %s", type(exc).__name__, request.url.path)
        return APIError(500, "internal server error", type_="server_error").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "waiting": batcher.waiting,
            "running": batcher.running,
            "batches": batcher.batches_run,
            "batched_requests": batcher.requests_run,
        }

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": started, "owned_by": "tina"}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorize)])
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != model_name:
            raise APIError(404, f"the model {model_id!r} does not exist", code="model_not_found")
        return model_card()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)], response_model=None)
    async def chat_completions(request: HTTPRequest) -> Response:
        chat = parse_chat(await read_body(request))
        engine_req = engine_request(chat, engine, limits)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta | None] = asyncio.Queue()

        def sink(delta: Delta) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        try:
            ticket = batcher.submit(engine_req, sink=sink if chat.stream else None)
        except QueueFull:
            raise APIError(
                429,
                "too many requests are waiting; retry shortly",
                type_="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        except BatcherClosed:
            raise APIError(503, "the server is shutting down", type_="server_error") from None

        if not chat.stream:
            try:
                completion = await asyncio.wrap_future(ticket.future)
            except Exception as exc:
                log_request(cid, engine_req, None, stream=False, error=exc)
                raise APIError(500, "internal server error", type_="server_error") from None
            log_request(cid, engine_req, completion, stream=False)
            response = chat_completion(cid, created, model_name, completion)
            return Response(response.model_dump_json(exclude_none=True), media_type=JSON_TYPE)

        ticket.future.add_done_callback(
            lambda _: loop.call_soon_threadsafe(deltas.put_nowait, None)
        )
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        return StreamingResponse(
            stream_events(cid, created, model_name, ticket, deltas, engine_req, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


# --- the command --------------------------------------------------------------------------------


def run_serve(args: Any) -> int:
    """Entry of `tina serve` (arguments from the CLI parser): load, then serve until stopped."""
    import torch
    import uvicorn

    from tina.serve.runtime import load_engine
    from tina.serve.service_config import load_service_config

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    service = service_with_overrides(load_service_config(args.service_config), args)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine, service = load_engine(args, service)
    app = create_app(engine, service, model_name=served_model_name(args, service))
    if not service.auth.require_auth and service.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without authentication (auth.require_auth)", service.host)
    uvicorn.run(app, host=service.host, port=service.port, log_level=args.log_level)
    return 0
