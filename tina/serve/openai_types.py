"""The OpenAI chat completions wire format that `tina serve` speaks, as pydantic models.

- Requests: `ChatCompletionRequest` (strict types, unknown fields ignored) with its `ChatMessage`,
  `ContentPart` and `StreamOptions`; two fields are Tina's own (`visible_cot`,
  `max_thinking_tokens`), one vLLM's (`thinking_token_budget`). `unsupported_field` names the
  first field of a raw body that asks for what Tina cannot do (`tools`, `logprobs`, …).
- Responses: `ChatCompletion` (`Choice`, `AssistantMessage`, `Usage`), streamed chunks
  (`ChatCompletionChunk`, `ChunkChoice`, `DeltaMessage`), and the error body `ErrorResponse`
  (`{"error": {"message", "type", "param", "code"}}`). Visible thinking is in both
  `reasoning_content` (DeepSeek's name) and `reasoning` (vLLM's). The engine's telemetry rides
  along in an extra `telemetry` field.

What it does not do: read HTTP, check limits or turn a request into an engine request (see
`tina.serve.app`).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The fields of OpenAI's chat completion request that Tina reads, plus its own two and
    vLLM's `thinking_token_budget`."""

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
    thinking_token_budget: int | None = Field(default=None, ge=0)  #: vLLM's name for the cap
    #: `none | low | medium | high`: a multiple of the heads' budget (`EFFORT_SCALES`)
    reasoning_effort: str | None = None


#: fields of OpenAI's request Tina cannot honour, each with the test of a value asking for it
#: (the values that ask for nothing, such as `"tools": []` or `"logprobs": false`, pass)
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": bool,
    "functions": bool,
    "tool_choice": lambda v: v not in (None, "none", "auto"),
    "function_call": lambda v: v not in (None, "none", "auto"),
    "logprobs": lambda v: v not in (None, False),
    "top_logprobs": lambda v: v not in (None, 0),
    "logit_bias": bool,
    "response_format": lambda v: v not in (None, {"type": "text"}),
    "audio": lambda v: v is not None,
    "modalities": lambda v: v not in (None, ["text"]),
    "n": lambda v: v not in (None, 1),
}


def unsupported_field(payload: dict[str, Any]) -> str | None:
    """The first field of a raw request body (a JSON object) that asks for what Tina does not
    support, or None."""
    return next((k for k, asks in UNSUPPORTED.items() if k in payload and asks(payload[k])), None)


# --- responses ----------------------------------------------------------------------------------


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int  #: think tokens (`telemetry.think_tokens`)


class Usage(BaseModel):
    prompt_tokens: int  #: tokens of the rendered prompt
    completion_tokens: int  #: think + answer tokens, tags excluded
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = None  #: visible thinking (DeepSeek's name)
    reasoning: str | None = None  #: the same (vLLM's name)


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
    #: Tina: the engine's introspection telemetry; `confidence_before` is the calibrated
    #: probability that the answer is right
    telemetry: dict[str, Any]


# --- streamed chunks ----------------------------------------------------------------------------


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None  #: new visible thinking (DeepSeek's name)
    reasoning: str | None = None  #: the same (vLLM's name)


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
