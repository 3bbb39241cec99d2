"""`tina chat`: ask the model questions, one-shot or in a REPL; hidden thinking by default.

What it does: loads the engine (`tina.serve.runtime.load_engine`), sends each question through it,
streams the answer as it is produced (and the thinking too with `--visible-cot`), and prints
only the answer unless thinking is visible; `--json` prints one JSON object with the answer and
the telemetry instead. `--effort none|low|medium|high` scales the heads' think budget
(`tina.engine.controller.EFFORT_SCALES`, as the server's `reasoning_effort`).

What it does not do: keep a conversation history (each question stands alone, as the embedded
model was trained) or decide anything itself (the engine does).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from tina.core.tags import tag_ids
from tina.engine.loop import Engine
from tina.engine.stop_strings import streamable
from tina.engine.types import ANSWER, THINK, Request, resolve_visibility
from tina.serve.runtime import load_engine, request_from_args


class Streamer:
    """Prints the text of each phase as tokens arrive, decoding incrementally (byte tokens may
    split a UTF-8 character, so the delta of the decoded text is printed, not single tokens);
    of the answer, what `tina.engine.stop_strings.streamable` allows under the request's stop
    strings,
    the rest once the answer is whole (`finish`)."""

    def __init__(
        self, tokenizer: Any, visible: bool, out: TextIO, stops: tuple[str, ...] = ()
    ) -> None:
        self.tokenizer, self.visible, self.out, self.stops = tokenizer, visible, out, stops
        self.tags = set(tag_ids(tokenizer).values()) | {tokenizer.eos_token_id}
        self.ids: dict[str, list[int]] = {THINK: [], ANSWER: []}
        self.printed: dict[str, str] = {THINK: "", ANSWER: ""}
        self.started: set[str] = set()

    def __call__(self, row: int, phase: str, token: int) -> None:
        if token in self.tags or (phase == THINK and not self.visible):
            return
        if self.visible and phase not in self.started:
            self.out.write("\n[answer] " if phase == ANSWER else "[thinking] ")
            self.started.add(phase)
        self.ids[phase].append(token)
        text = self.tokenizer.decode(self.ids[phase], skip_special_tokens=False)
        if text.endswith("\ufffd"):
            return  # wait for the rest of a multi-byte character
        if phase == ANSWER:
            text = streamable(text, self.stops)
        self._print(phase, text)

    def finish(self, answer: str) -> None:
        """Print what the answer holds beyond what was printed (a held-back tail)."""
        self._print(ANSWER, answer)

    def _print(self, phase: str, text: str) -> None:
        printed = self.printed[phase]
        if len(text) > len(printed) and text.startswith(printed):
            self.out.write(text[len(printed) :])
            self.out.flush()
            self.printed[phase] = text


def answer_question(
    engine: Engine, request: Request, *, stream: bool, as_json: bool, out: TextIO
) -> None:
    """Answer one question, printing to `out`."""
    visible = resolve_visibility(request.visible_cot, engine.config.visible_cot)
    streamer = None
    if stream and not as_json:
        streamer = Streamer(engine.tokenizer, visible, out, request.stop)
    (result,) = engine.generate([request], on_token=streamer)
    if as_json:
        payload = {
            "answer": result.output if not visible else result.answer,
            "telemetry": result.telemetry.to_dict(),
        }
        if visible:
            payload["reasoning"] = result.think_text
        out.write(json.dumps(payload) + "\n")
    elif streamer is not None:
        streamer.finish(result.answer)
        out.write("\n")
    elif visible:
        out.write(f"[thinking] {result.think_text}\n[answer] {result.answer}\n")
    else:
        out.write(result.output + "\n")
    out.flush()


def banner(engine: Any, base: str | None) -> str:
    """The one line interactive chat starts with: which model, how big, what it can do, and
    how to run another."""
    size = sum(p.numel() for p in engine.model.parameters())
    parts = "with" if engine.introspection is not None else "without"
    scale = f"{size / 1e6:.1f}M" if size < 1e9 else f"{size / 1e9:.2f}B"
    if base is None:
        what = (
            f"the embedded model ({scale} parameters, {parts} its introspection parts): "
            "arithmetic (add, subtract, multiply) and small Python programs; "
            "another model: --models-root DIR --base NAME [--adapter NAME]"
        )
    else:
        thinks = "thinks in <think> tags" if engine.reasoning else "answers in its own format"
        what = f"{base} ({scale} parameters, {parts} introspection parts; {thinks})"
    return f"Tina chat, {what}. Type a question, or 'exit' to leave."


def run_chat(args: Any) -> int:
    """Entry of `tina chat` (arguments from the CLI parser)."""
    engine, service = load_engine(args)

    def request(question: str) -> Request:
        return request_from_args(args, question, True if args.visible_cot else None)

    options = {"stream": not args.no_stream, "as_json": args.json, "out": sys.stdout}
    if args.prompt is not None:
        answer_question(engine, request(args.prompt), **options)
        return 0
    print(banner(engine, service.model.base if args.base is None else args.base))
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if line.strip() in {"exit", "quit"}:
            return 0
        if line.strip():
            answer_question(engine, request(line.strip()), **options)
