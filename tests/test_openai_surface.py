"""The OpenAI surface of `tina serve` that clients of vLLM, SGLang and Ollama expect, through the
official `openai` client against a live server running the embedded model with its shipped
heads: whole conversations through the chat template (a single user turn rendered exactly as
the model was trained), history thinking dropped, visible thinking in `reasoning_content` and
`reasoning`, `reasoning_effort` and `thinking_token_budget`, usage with reasoning tokens in the
last stream chunk, a stream the client closes freeing its row, Prometheus metrics behind the
API's auth, and 400s naming unsupported fields."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from types import SimpleNamespace

import httpx
import openai
import pytest
from conftest import GatedEngine, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_serve import KEY, MODEL, SERVICE, LiveServer, assert_openai_error, live

from tina.core.models import render_messages, render_prompt
from tina.engine.controller import EFFORT_SCALES, Prediction, choose_budget
from tina.engine.types import EngineConfig, Request
from tina.serve.app import create_app
from tina.serve.chat_request import APIError, engine_request
from tina.serve.openai_types import ChatCompletionRequest
from tina.serve.runtime import add_decoding_arguments, add_model_arguments, load_engine

#: a service with room for twice the heads' budget (`reasoning_effort: high`)
SURFACE = replace(
    SERVICE,
    slack_ratio=0.5,
    budget_cap=128,
    limits=replace(SERVICE.limits, max_prompt_chars=400, max_tokens=256, max_body_bytes=8192),
)
#: the embedded template before conversations (what the shipped parts were trained on)
TRAINED_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ message['content'] }}\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<think>{% endif %}"
)
SYSTEM = "You answer arithmetic questions."
HISTORY = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Add 1 and 2"},
    {
        "role": "assistant",
        "content": "<think>1+2=3 secret-a</think>3",
        "reasoning_content": "secret-b",
        "reasoning": "secret-c",
    },
    {"role": "user", "content": "Add 37 and 45"},
]
RENDERED_HISTORY = f"{SYSTEM}\nAdd 1 and 2\n<answer>3</answer>\nAdd 37 and 45\n<think>"


@pytest.fixture(scope="module")
def shipped():
    """The embedded model with its shipped introspection parts and calibration."""
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    engine, _ = load_engine(parser.parse_args(["--device", "cpu"]), SURFACE)
    return engine


@pytest.fixture(scope="module")
def server(shipped):
    with live(GatedEngine(shipped), SURFACE) as s:
        yield s


@pytest.fixture
def client(server):
    return server.client()


def chat(client: openai.OpenAI, messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


def user(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def served(engine, prompt: str, **kw):
    """The engine's result for the request the server builds for rendered `prompt`."""
    request = Request(prompt, rendered=True, max_tokens=SURFACE.limits.max_tokens, **kw)
    return engine.generate([request])[0]


# --- conversations through the chat template ----------------------------------------------------


QUESTIONS = ["Add 37 and 45", "Multiply 4821 by 7", "", "  spaced \n lines  ", "naïve ∑ 3"]


@pytest.mark.parametrize("question", QUESTIONS, ids=repr)
def test_a_single_user_message_renders_as_the_model_was_trained(embedded, question):
    _, tokenizer = embedded
    trained = tokenizer.apply_chat_template(
        user(question), chat_template=TRAINED_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert render_prompt(tokenizer, question) == trained == question + "\n<think>"
    assert render_messages(tokenizer, user(question)) == trained


CONVERSATIONS = [
    ("system-then-user", [HISTORY[0], HISTORY[3]], f"{SYSTEM}\nAdd 37 and 45\n<think>"),
    ("history-thinking-dropped", HISTORY, RENDERED_HISTORY),
    (
        "unclosed-thinking-dropped",
        [*user("Q1"), {"role": "assistant", "content": "<think>never closed"}, *user("Q2")],
        "Q1\n<answer></answer>\nQ2\n<think>",
    ),
    (
        "answer-tags-kept-once",
        [*user("Q1"), {"role": "assistant", "content": "</think><answer>7</answer>"}, *user("Q2")],
        "Q1\n<answer>7</answer>\nQ2\n<think>",
    ),
]


@pytest.mark.parametrize(
    "messages,want", [c[1:] for c in CONVERSATIONS], ids=[c[0] for c in CONVERSATIONS]
)
def test_conversations_render_without_earlier_thinking(
    embedded, byte_char_tokenizer, messages, want
):
    _, tokenizer = embedded
    assert render_messages(tokenizer, messages) == want
    # a tokenizer without a template gets the embedded model's
    assert byte_char_tokenizer.chat_template is None
    assert render_messages(byte_char_tokenizer, messages) == want


def test_the_server_renders_the_whole_conversation(shipped):
    body = {"model": MODEL, "messages": [{**HISTORY[0], "role": "developer"}, *HISTORY[1:]]}
    request = engine_request(ChatCompletionRequest.model_validate(body), shipped, SURFACE.limits)
    assert request.rendered and request.prompt == RENDERED_HISTORY
    assert "secret" not in request.prompt


def test_a_template_that_refuses_the_turns_is_a_400(byte_char_tokenizer):
    byte_char_tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    engine = SimpleNamespace(
        tokenizer=byte_char_tokenizer,
        config=EngineConfig(),
        render_messages=lambda turns: render_messages(byte_char_tokenizer, turns),
    )
    body = ChatCompletionRequest.model_validate({"model": MODEL, "messages": HISTORY})
    with pytest.raises(APIError) as info:
        engine_request(body, engine, SURFACE.limits)
    assert info.value.status == 400 and info.value.param == "messages"
    assert "roles must alternate" in info.value.message


def test_multi_turn_with_a_system_message_through_the_openai_client(shipped, client):
    want = served(shipped, RENDERED_HISTORY)
    got = chat(client, HISTORY)
    assert got.choices[0].message.content == want.output
    tokens = shipped.tokenizer.encode(RENDERED_HISTORY, add_special_tokens=False)
    assert got.usage.prompt_tokens == len(tokens)
    assert got.model_extra["telemetry"]["think_tokens"] == want.telemetry.think_tokens


BAD_MESSAGES = [
    ("tool-role", [{"role": "tool", "content": "x"}, *user("Q")], "messages.0.role"),
    ("last-is-assistant", [*user("Q"), {"role": "assistant", "content": "A"}], "messages"),
    ("only-system", [HISTORY[0]], "messages"),
]


@pytest.mark.parametrize(
    "messages,param", [c[1:] for c in BAD_MESSAGES], ids=[c[0] for c in BAD_MESSAGES]
)
def test_conversations_the_model_cannot_continue_are_400(client, messages, param):
    with pytest.raises(openai.BadRequestError) as info:
        chat(client, messages)
    assert info.value.body["param"] == param


# --- reasoning fields and budget controls -------------------------------------------------------


def test_visible_thinking_is_in_both_reasoning_fields(shipped, client):
    want = served(shipped, render_prompt(shipped.tokenizer, "Add 37 and 45"), visible_cot=True)
    message = chat(client, user("Add 37 and 45"), extra_body={"visible_cot": True}).choices[0]
    assert message.message.content == want.answer
    assert message.message.reasoning_content == message.message.reasoning == want.think_text
    chunks = list(
        chat(client, user("Add 37 and 45"), stream=True, extra_body={"visible_cot": True})
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    for field in ("reasoning_content", "reasoning"):
        assert "".join(getattr(d, field, None) or "" for d in deltas) == want.think_text
    hidden = chat(client, user("Add 37 and 45")).choices[0].message
    assert getattr(hidden, "reasoning", None) is None
    assert getattr(hidden, "reasoning_content", None) is None


def test_reasoning_effort_scales_the_heads_budget(shipped, client):
    question = "Multiply 4821 by 7"
    got = {
        effort: chat(client, user(question), reasoning_effort=effort).model_extra["telemetry"]
        for effort in (None, *EFFORT_SCALES)
    }
    predicted = got[None]["predicted_budget"]
    assert predicted > 0 and got["medium"]["budget"] == got[None]["budget"] == round(predicted)
    assert got["none"]["budget"] == got["none"]["think_tokens"] == 0
    assert got["low"]["budget"] == round(predicted * 0.5)
    assert got["high"]["budget"] == min(SURFACE.budget_cap, round(predicted * 2))
    assert got["low"]["think_tokens"] < got["medium"]["think_tokens"] < got["high"]["think_tokens"]


def test_chat_effort_flag_makes_the_same_request():
    parser = argparse.ArgumentParser()
    add_decoding_arguments(parser)
    args = parser.parse_args(["--effort", "high"])
    from tina.serve.runtime import request_from_args

    request = request_from_args(args, "Multiply 4821 by 7", None)
    assert request.effort == "high"
    with pytest.raises(SystemExit):
        parser.parse_args(["--effort", "extreme"])


CAP, CONFIG = 100, EngineConfig(budget_cap=100, min_think=4)
BUDGETS = [
    ("default", {}, Prediction(False, 30.0), 30),
    ("none", {"effort": "none"}, Prediction(False, 30.0), 0),
    ("low", {"effort": "low"}, Prediction(False, 30.0), 15),
    ("medium", {"effort": "medium"}, Prediction(False, 30.0), 30),
    ("high", {"effort": "high"}, Prediction(False, 30.0), 60),
    ("high-capped", {"effort": "high"}, Prediction(False, 70.0), CAP),
    ("high-request-cap", {"effort": "high", "budget_cap": 50}, Prediction(False, 30.0), 50),
    ("low-min-think", {"effort": "low"}, Prediction(False, 5.0), 4),
    ("direct-high", {"effort": "high"}, Prediction(True, 30.0), 0),
    ("no-heads-low", {"effort": "low"}, None, 50),
    ("no-heads-high", {"effort": "high"}, None, CAP),
    ("no-heads-none", {"effort": "none"}, None, 0),
    ("fixed-wins", {"effort": "high", "budget": 7}, Prediction(False, 30.0), 7),
]


@pytest.mark.parametrize(
    "fields,prediction,want", [b[1:] for b in BUDGETS], ids=[b[0] for b in BUDGETS]
)
def test_effort_is_a_multiple_of_the_heads_budget(fields, prediction, want):
    assert choose_budget(Request("q", **fields), CONFIG, prediction) == want


def test_an_unknown_effort_is_refused_by_the_engine_rule():
    with pytest.raises(ValueError, match="effort"):
        choose_budget(Request("q", effort="max"), CONFIG, None)


def test_thinking_token_budget_is_max_thinking_tokens(client, server):
    vllm = chat(client, user("Multiply 4821 by 7"), extra_body={"thinking_token_budget": 9})
    tina = chat(client, user("Multiply 4821 by 7"), extra_body={"max_thinking_tokens": 9})
    assert vllm.model_extra["telemetry"]["think_tokens"] <= 9
    assert vllm.model_extra["telemetry"]["budget"] == tina.model_extra["telemetry"]["budget"]
    both = _body(max_thinking_tokens=9, thinking_token_budget=12)
    assert assert_openai_error(_post(server, both), 400)["param"] == "thinking_token_budget"
    same = _body(max_thinking_tokens=9, thinking_token_budget=9)
    assert _post(server, same).status_code == 200


def test_usage_with_reasoning_tokens_ends_the_stream(client):
    chunks = list(
        chat(client, user("Add 37 and 45"), stream=True, stream_options={"include_usage": True})
    )
    (final,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    think = final.model_extra["telemetry"]["think_tokens"]
    last = chunks[-1]
    assert last.choices == [] and think > 0
    assert last.usage.completion_tokens_details.reasoning_tokens == think
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    plain = list(chat(client, user("Add 37 and 45"), stream=True))
    assert all(c.usage is None for c in plain)


def test_closing_an_openai_stream_mid_thinking_frees_its_row(shipped, server, client):
    batcher = server.batcher
    gate = batcher.engine.gate
    before = batcher.cancelled
    stream = chat(
        client,
        user("Multiply 4821 by 7"),
        stream=True,
        reasoning_effort="high",
        extra_body={"visible_cot": True},
    )
    try:
        for chunk in stream:  # the first thinking text has reached the client
            if chunk.choices and getattr(chunk.choices[0].delta, "reasoning_content", None):
                break
        gate.clear()  # hold the row mid-thinking while the client leaves
        wait_until(lambda: batcher.running == 1, "the row to be decoding")
        stream.close()
    finally:
        gate.set()
    wait_until(lambda: batcher.cancelled == before + 1, "the row to be released")
    wait_until(lambda: batcher.running == 0, "the batch to empty")
    after = chat(client, user("Add 37 and 45"))  # the server goes on as before
    want = served(shipped, render_prompt(shipped.tokenizer, "Add 37 and 45"))
    assert after.choices[0].message.content == want.output


# --- unsupported fields, bad values -------------------------------------------------------------


def _body(**fields) -> bytes:
    return json.dumps({"model": MODEL, "messages": user("Add 1 and 2"), **fields}).encode()


def _post(server: LiveServer, body: bytes, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{server.url}/v1/chat/completions", content=body, headers=headers, timeout=60
    )


UNSUPPORTED = [
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "required"),
    ("functions", [{"name": "f"}]),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("logit_bias", {"50": 10}),
    ("response_format", {"type": "json_object"}),
    ("audio", {"voice": "alloy"}),
    ("modalities", ["text", "audio"]),
    ("n", 2),
    ("n", "two"),
]


@pytest.mark.parametrize("field,value", UNSUPPORTED, ids=[f"{f}={v!r}" for f, v in UNSUPPORTED])
def test_unsupported_fields_are_400_naming_the_field(server, field, value):
    error = assert_openai_error(_post(server, _body(**{field: value})), 400)
    assert error["param"] == field and field in error["message"]


HARMLESS = [("tools", []), ("tool_choice", "none"), ("logprobs", False), ("n", 1)]
HARMLESS += [("response_format", {"type": "text"}), ("modalities", ["text"]), ("audio", None)]


@pytest.mark.parametrize("field,value", HARMLESS, ids=[f"{f}={v!r}" for f, v in HARMLESS])
def test_fields_that_ask_for_nothing_are_accepted(server, field, value):
    assert _post(server, _body(**{field: value})).status_code == 200


BAD_EFFORT = [("word", "extreme"), ("empty", ""), ("number", 2), ("list", ["low"])]


@pytest.mark.parametrize("value", [b[1] for b in BAD_EFFORT], ids=[b[0] for b in BAD_EFFORT])
def test_a_bad_reasoning_effort_is_400_naming_it(server, value):
    error = assert_openai_error(_post(server, _body(reasoning_effort=value)), 400)
    assert error["param"] == "reasoning_effort"


# --- metrics --------------------------------------------------------------------------------------


def scrape(server: LiveServer, key: str | None = KEY) -> dict[tuple[str, tuple], float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_move_after_requests(server, client):
    before = scrape(server)
    assert before[("tina_queue_depth", ())] == 0 and ("tina_running_rows", ()) in before
    reply = chat(client, user("Add 37 and 45"))
    list(chat(client, user("Add 37 and 45"), stream=True))
    _post(server, _body(logprobs=True))
    _post(server, _body(), key="sk-wrong")

    def moved(name: str, labels: tuple = ()) -> float:
        return scrape(server).get((name, labels), 0.0) - before.get((name, labels), 0.0)

    wait_until(lambda: moved("tina_requests_total", (("status", "200"),)) == 2, "2 answered")
    assert moved("tina_requests_total", (("status", "400"),)) == 1
    assert moved("tina_requests_total", (("status", "401"),)) == 1
    t = reply.model_extra["telemetry"]
    assert moved("tina_tokens_total", (("kind", "prompt"),)) == 2 * reply.usage.prompt_tokens
    assert moved("tina_tokens_total", (("kind", "think"),)) == 2 * t["think_tokens"]
    assert moved("tina_tokens_total", (("kind", "answer"),)) == 2 * t["answer_tokens"]
    for source, value in (("predicted", t["predicted_budget"]), ("used", t["think_tokens"])):
        labels = (("source", source),)
        assert moved("tina_think_tokens_count", labels) == 2
        assert moved("tina_think_tokens_sum", labels) == pytest.approx(2 * value, rel=1e-6)
    assert moved("tina_request_latency_seconds_count") == 2
    assert moved("tina_time_to_first_token_seconds_count") == 1  # the stream's


def test_metrics_need_the_key_when_auth_is_on(server, shipped):
    assert_openai_error(httpx.get(f"{server.url}/metrics"), 401)
    assert_openai_error(httpx.get(f"{server.url}/metrics", headers={"Authorization": "x"}), 401)
    open_service = replace(SURFACE, auth=replace(SURFACE.auth, require_auth=False))
    app = create_app(shipped, open_service, model_name=MODEL)
    open_server = LiveServer(app)
    try:
        assert ("tina_queue_depth", ()) in scrape(open_server, key=None)
    finally:
        open_server.stop()
