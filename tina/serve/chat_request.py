"""From an OpenAI chat request to an engine request, and the errors on the way.

What it does: `APIError` (answered with OpenAI's error body); `conversation_of` (roles — developer
is system — and text; the last turn a user turn; fields such as `reasoning_content` are never
re-fed); `thinking_cap` (`max_thinking_tokens` or vLLM's `thinking_token_budget`); and
`engine_request`: limits, stop strings, `reasoning_effort`, the conversation through the chat
template (`tina.core.models.render_messages`), visibility.

What it does not do: HTTP, batching or the response (`tina.serve.app`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from tina.engine.controller import EFFORT_SCALES
from tina.engine.loop import Engine
from tina.engine.types import Request, resolve_visibility
from tina.serve.openai_types import ChatCompletionRequest, ChatMessage, ErrorDetail, ErrorResponse
from tina.serve.service_config import Limits

MAX_STOP_STRINGS = 4  #: as OpenAI's API allows


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


# --- from a chat request to an engine request ---------------------------------------------------


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def text_of(message: ChatMessage) -> str:
    """A message's text (text parts joined by newlines)."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(part.type != "text" for part in message.content):
        raise APIError(400, "only text content is supported", param="messages")
    return "\n".join(part.text or "" for part in message.content)


def conversation_of(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The turns `render_messages` takes (role and text only: a `reasoning_content` sent back
    never reaches the model); the last one must be a user turn."""
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if message.role not in ROLES:
            raise APIError(
                400,
                f"messages.{i}.role: {message.role!r}"[:120] + f" is not one of {', '.join(ROLES)}",
                param=f"messages.{i}.role",
                code="invalid_value",
            )
        turns.append({"role": ROLES[message.role], "content": text_of(message)})
    if turns[-1]["role"] != "user":
        raise APIError(400, "messages: the last message must have role 'user'", param="messages")
    return turns


def thinking_cap(chat: ChatCompletionRequest) -> int | None:
    """`max_thinking_tokens`, or its alias `thinking_token_budget` (both: the same value)."""
    given = {chat.max_thinking_tokens, chat.thinking_token_budget} - {None}
    if len(given) > 1:
        raise APIError(
            400,
            "thinking_token_budget: differs from max_thinking_tokens (send one of them)",
            param="thinking_token_budget",
            code="invalid_value",
        )
    return given.pop() if given else None


def engine_request(chat: ChatCompletionRequest, engine: Engine, limits: Limits) -> Request:
    """The engine request for a validated chat request (its conversation rendered), or an
    `APIError` (limits, roles, effort)."""
    turns = conversation_of(chat.messages)
    chars = sum(len(t["content"]) for t in turns)
    if chars > limits.max_prompt_chars:
        raise APIError(
            400,
            f"the prompt has {chars} characters; the limit is {limits.max_prompt_chars}",
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
    if chat.reasoning_effort is not None and chat.reasoning_effort not in EFFORT_SCALES:
        raise APIError(
            400,
            f"reasoning_effort: must be one of {', '.join(EFFORT_SCALES)}",
            param="reasoning_effort",
            code="invalid_value",
        )
    try:
        prompt = engine.render_messages(turns)
    except TemplateError as exc:  # a model's template may refuse an order of roles
        raise APIError(
            400, f"messages: the chat template refused them: {exc}"[:300], param="messages"
        ) from None
    config = engine.config
    budget_cap = config.budget_cap
    cap = thinking_cap(chat)
    if cap is not None:  # the soft cap, slack included, stays within it
        budget_cap = min(budget_cap, math.floor(cap / (1 + config.slack_ratio)))
    return Request(
        prompt=prompt,
        rendered=True,
        effort=chat.reasoning_effort,
        budget_cap=budget_cap,
        temperature=0.0 if chat.temperature is None else chat.temperature,
        top_p=1.0 if chat.top_p is None else chat.top_p,
        seed=chat.seed,
        visible_cot=resolve_visibility(chat.visible_cot, config.visible_cot),
        max_tokens=max_tokens,
        stop=tuple(stops),
    )
