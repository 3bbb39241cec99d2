"""A request's own stop strings (OpenAI's `stop`): where they cut the answer.

What it does: `cut_at_stop` (the answer text before the earliest stop string, or None when none
occurs: the engine ends the answer there, and the stop string is not part of it) and
`streamable` (what of a growing answer can be sent without ever sending a stop string or the
text after it: a tail that may still become a stop string is held back). The engine, the
stream and everything that shows an answer use these two.

What it does not do: Tina's own tags (`</think>`, `</answer>` end thinking and the answer
whatever the request says: `tina.core.tags`), or thinking (stop strings apply to the answer only, as
the hidden chain of thought is not the user's text).
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_at_stop(text: str, stops: Sequence[str]) -> str | None:
    """`text` up to the earliest occurrence of any of `stops`; None when none occurs."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(found)] if found else None


def streamable(text: str, stops: Sequence[str]) -> str:
    """The part of a growing `text` that is safe to send: up to a stop string when one occurs,
    else all but the longest tail that is the beginning of a stop string."""
    cut = cut_at_stop(text, stops)
    if cut is not None:
        return cut
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return text[: len(text) - held]
