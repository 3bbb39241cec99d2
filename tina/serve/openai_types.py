"""The OpenAI chat completions wire format that `tina serve` speaks, as pydantic models.

- Requests: `ChatCompletionRequest` (strict types, unknown fields ignored) with its `ChatMessage`,
  `ContentPart` and `StreamOptions`; two fields are Tina's own (`visible_cot`,
  `max_thinking_tokens`).
- Responses: `ChatCompletion` (`Choice`, `AssistantMessage`, `Usage`), streamed chunks
  (`ChatCompletionChunk`, `ChunkChoice`, `DeltaMessage`), and the error body `ErrorResponse`
  (`{"error": {"message", "type", "param", "code"}}`). The engine's telemetry rides along in an
  extra `telemetry` field.

What it does not do: read HTTP, check limits or turn a request into an engine request (see
`tina.serve.app`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- requests -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """The fields of OpenAI's chat completion request that Tina reads, plus its own two."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None  #: the answer ends before the first of these (≤ 4)
    visible_cot: bool | None = None  #: Tina: show the thinking in `reasoning_content`
    max_thinking_tokens: int | None = Field(default=None, ge=0)  #: Tina: cap on thinking


# --- responses ----------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int  #: think + answer tokens, tags excluded
    total_tokens: int
    completion_tokens_details: dict[str, int]  #: `reasoning_tokens`


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    telemetry: dict[str, Any]  #: Tina: the engine's introspection telemetry


# --- streamed chunks ----------------------------------------------------------------------------


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    telemetry: dict[str, Any] | None = None


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None  #: the request field at fault, when one is
    code: str | None = None  #: a machine-readable reason (`invalid_json`, `queue_full`, …)


class ErrorResponse(BaseModel):
    """OpenAI's error body; `null` `param` and `code` are sent, not left out."""

    error: ErrorDetail
