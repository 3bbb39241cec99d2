"""`tina serve`: an OpenAI-compatible HTTP API over the engine (FastAPI + uvicorn).

What it does: `POST /v1/chat/completions` (JSON, or SSE with `"stream": true`), `GET /v1/models`,
`GET /v1/models/{id}`, `GET /health`, `GET /metrics` (Prometheus, `tina.serve.metrics`). Every
request becomes one engine `Request` (`tina.serve.chat_request`) and joins the running batch of
`tina.serve.batcher.Batcher` at the next step; a client that disconnects has its row released.
Responses carry `reasoning_content` / `reasoning` when the thinking is visible, `usage` with
reasoning tokens and the engine's `telemetry`. Bearer API keys when `auth.require_auth`; body,
prompt and token limits; a full queue is 429; every error has OpenAI's error body; logs carry the
prompt redacted, never the key, the thinking or the answer. Every field and rule: docs/serving.md.

What it does not do: tools, logprobs, `n > 1`, TLS, or rate limiting per key (a full queue is
the only back-pressure); the wire models are `tina.serve.openai_types`, the flags
`tina.serve.flags`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
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
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from tina.core.checks import ConfigError, Problem, parse_strict_json
from tina.engine.loop import Engine
from tina.engine.types import Request
from tina.serve.batcher import Batcher, BatcherClosed, Completion, Delta, QueueFull, Ticket
from tina.serve.chat_request import APIError, engine_request
from tina.serve.flags import EMBEDDED_MODEL_NAME, served_model_name, service_with_overrides
from tina.serve.metrics import CONTENT_TYPE, ServeMetrics, StatusCounter
from tina.serve.openai_types import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    DeltaMessage,
    Usage,
    unsupported_field,
)
from tina.serve.redact import redact
from tina.serve.service_config import ServiceConfig

logger = logging.getLogger("tina.serve.app")

_LOGGED_PROMPT_CHARS = 80
JSON_TYPE = "application/json"


def error_response(error: APIError) -> JSONResponse:
    """`error` as a JSON response with its status and headers."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _validation_error(errors: Sequence[Any]) -> APIError:
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else "invalid request body"
    return APIError(400, message, param=param, code="invalid_value")


def _usage(completion: Completion) -> Usage:
    t = completion.result.telemetry
    generated = t.think_tokens + t.answer_tokens
    return Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=generated,
        total_tokens=completion.prompt_tokens + generated,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=t.think_tokens),
    )


def _finish_reason(completion: Completion) -> str:
    return "length" if completion.result.telemetry.forced_answer_close else "stop"


def chat_completion(cid: str, created: int, model: str, completion: Completion) -> ChatCompletion:
    """The non-streaming response: hidden thinking shows only the answer."""
    result = completion.result
    if completion.visible:
        think = result.think_text
        message = AssistantMessage(content=result.answer, reasoning_content=think, reasoning=think)
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
            think = delta.reasoning or None
            text = DeltaMessage(
                content=delta.content or None, reasoning_content=think, reasoning=think
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
        ticket.cancel()  # the client left: its row goes at the next step (no-op once done)


async def completion_unless_gone(http: HTTPRequest, ticket: Ticket) -> Completion | None:
    """The ticket's completion; None when the client disconnects first (the ticket is then
    cancelled, so its row is released at the next step)."""
    done = asyncio.wrap_future(ticket.future)
    gone = asyncio.ensure_future(_disconnect(http))
    waiters: set[asyncio.Future[Any]] = {done, gone}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not done.done():
        ticket.cancel()
        return None
    return done.result()


async def _disconnect(http: HTTPRequest) -> None:
    """Returns when the client has disconnected (the body is already read)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


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
    metrics = ServeMetrics(batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)  # uvicorn has finished the requests in flight

    app = FastAPI(title="Tina", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.add_middleware(StatusCounter, metrics=metrics, path="/v1/chat/completions")

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
        field = unsupported_field(payload)
        if field is not None:
            raise APIError(
                400, f"{field}: not supported by this server", param=field, code="unsupported_value"
            )
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
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(
        request: HTTPRequest, exc: RequestValidationError
    ) -> JSONResponse:
        return error_response(_validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: HTTPRequest, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(exc.status_code, str(exc.detail), code=None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: HTTPRequest, exc: Exception) -> JSONResponse:
        logger.error("internal error (%s) on %s", type(exc).__name__, request.url.path)
        return error_response(APIError(500, "internal server error", type_="server_error"))

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

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

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
        arrived = time.perf_counter()
        chat = parse_chat(await read_body(request))
        engine_req = engine_request(chat, engine, limits)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[Delta | None] = asyncio.Queue()

        def sink(delta: Delta) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, delta)

        try:
            timed = metrics.timed_sink(sink, arrived)
            ticket = batcher.submit(engine_req, sink=timed if chat.stream else None, label=cid)
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
        ticket.future.add_done_callback(lambda future: metrics.finished(future, arrived))

        if not chat.stream:
            try:
                completion = await completion_unless_gone(request, ticket)
            except Exception as exc:
                log_request(cid, engine_req, None, stream=False, error=exc)
                raise APIError(500, "internal server error", type_="server_error") from None
            if completion is None:  # the client left; the batcher logged the release
                return Response(status_code=499)
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
            # also when the client left before the stream began (the generator never ran)
            background=BackgroundTask(ticket.cancel),
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
