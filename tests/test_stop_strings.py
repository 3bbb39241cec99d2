"""A request's stop strings: where they cut an answer, and what of a growing answer may be sent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tina.engine.stop_strings import cut_at_stop, streamable


def test_cut_at_the_earliest_stop_string():
    assert cut_at_stop("the answer is 82. Done", [". ", "is"]) == "the answer "
    assert cut_at_stop("82", ["\n"]) is None
    assert cut_at_stop("82\nmore", ["\n"]) == "82"
    assert cut_at_stop("stop", ["stop"]) == ""
    assert cut_at_stop("82", ["", "x"]) is None  # an empty string stops nothing


def test_streamable_holds_back_a_tail_that_may_become_a_stop_string():
    assert streamable("the answer is 8", ["82"]) == "the answer is "
    assert streamable("the answer is 9", ["82"]) == "the answer is 9"
    assert streamable("a END", ["ENDING", "EN"]) == "a "  # both could still follow
    assert streamable("a END", ["END"]) == "a "  # a whole stop string: cut before it
    assert streamable("abc", []) == "abc"


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab\n ", max_size=20),
    stops=st.lists(st.text(alphabet="ab\n ", min_size=1, max_size=3), max_size=3),
)
def test_what_is_streamed_is_always_a_prefix_of_the_final_answer(text, stops):
    """A text grows a character at a time; as the engine does, the answer ends at the first
    length where a stop string occurs (cut before it). Sending `streamable` of every shorter
    text never sends what that answer lacks, and never takes text back."""
    ends = [n for n in range(len(text) + 1) if cut_at_stop(text[:n], stops) is not None]
    answer = text if not ends else cut_at_stop(text[: ends[0]], stops)
    assert answer is not None
    sent = ""
    for n in range(ends[0] if ends else len(text) + 1):
        now = streamable(text[:n], stops)
        assert answer.startswith(now)
        assert now.startswith(sent)  # a stream never takes text back
        sent = now
