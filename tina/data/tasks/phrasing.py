"""How people write an arithmetic question: the surface forms of add, subtract and multiply.

What it does: `phrase` writes the question for given operands in one of three form sets —
`canonical` (the suite's own `Add A and B`, `Subtract B from A`, `Multiply A by B`), `varied`
(the training grammar: an optional lead-in, a core in words or symbols, an optional ending, then
case and spacing noise) and `heldout` (hand-written forms the training grammar never produces,
for measuring whether a model generalises). `training_forms` lists every template the grammar
can produce, so a test can prove the held-out set disjoint from it.

What it does not do: choose the operands, write the think trace or score (see `arithmetic.py`).
Templates use `{x}` and `{y}` for the operands in written order; for subtraction `{x}` is the
minuend and `{y}` what is taken from it.
"""

from __future__ import annotations

import functools
import random
import re
import string

PHRASINGS: tuple[str, ...] = ("canonical", "varied", "heldout")

CANONICAL: dict[str, str] = {
    "add": "Add {x} and {y}",
    "sub": "Subtract {y} from {x}",
    "mul": "Multiply {x} by {y}",
}

#: The training grammar's cores, per operation.
CORES: dict[str, tuple[str, ...]] = {
    "add": (
        "{x} + {y}",
        "{x}+{y}",
        "{x} plus {y}",
        "add {x} and {y}",
        "add {x} to {y}",
        "the sum of {x} and {y}",
        "sum {x} and {y}",
        "{x} added to {y}",
        "{x} and {y} added",
        "{x} + {y} =",
        "{x}+{y}=",
    ),
    "sub": (
        "{x} - {y}",
        "{x}-{y}",
        "{x} − {y}",
        "{x} minus {y}",
        "subtract {y} from {x}",
        "take {y} from {x}",
        "{x} take away {y}",
        "{y} subtracted from {x}",
        "the difference of {x} and {y}",
        "from {x} subtract {y}",
        "{x} less {y}",
        "{x} - {y} =",
        "{x}-{y}=",
    ),
    "mul": (
        "{x} * {y}",
        "{x}*{y}",
        "{x} x {y}",
        "{x}x{y}",
        "{x} × {y}",
        "{x}×{y}",
        "{x} times {y}",
        "multiply {x} by {y}",
        "multiply {x} and {y}",
        "the product of {x} and {y}",
        "{x} multiplied by {y}",
        "{x} * {y} =",
        "{x}x{y}=",
    ),
}

#: Lead-ins of the training grammar (the empty one most often).
LEADS: tuple[str, ...] = (
    "what is ",
    "what's ",
    "whats ",
    "calculate ",
    "compute ",
    "please ",
    "please compute ",
    "can you ",
    "can you do ",
    "tell me ",
    "find ",
    "solve ",
    "evaluate ",
    "work out ",
    "how much is ",
    "question: ",
    "quick question: ",
    "hey, ",
    "hello, what is ",
    "ok so ",
    "i want to know ",
    "math: ",
    "now ",
    "and ",
)

#: Endings of the training grammar (the empty one most often).
ENDINGS: tuple[str, ...] = ("?", ".", "!", " ?", "??", " please", " = ?", " =?", ", thanks")

#: Forms never produced by the training grammar (`training_forms`): new lead-ins, new
#: endings and new word orders around the operation words the grammar knows.
HELDOUT: dict[str, tuple[str, ...]] = {
    "add": (
        "Could you add {x} and {y} for me?",
        "What do you get when you add {x} and {y}?",
        "{x} + {y} equals what?",
        "Give me the sum of {x} and {y}",
        "Help me with {x}+{y}",
        "Work this out: {x} plus {y}",
        "Add up {x} and {y}.",
        "Hi! What's {x} + {y}?",
        "Result of {x} + {y}?",
        "{x} plus {y} is?",
        "Do {x}+{y}",
        "I need the sum of {x} and {y}, please",
        "Mind adding {x} to {y}?",
    ),
    "sub": (
        "Could you subtract {y} from {x} for me?",
        "What do you get when you subtract {y} from {x}?",
        "{x} - {y} equals what?",
        "Give me the difference of {x} and {y}",
        "Help me with {x}-{y}",
        "Work this out: {x} minus {y}",
        "Take {y} away from {x}.",
        "Hi! What's {x} - {y}?",
        "Result of {x} − {y}?",
        "{x} minus {y} is?",
        "Do {x}-{y}",
        "I need {x} minus {y}, please",
        "If you take {y} from {x}, what is left?",
    ),
    "mul": (
        "Could you multiply {x} by {y} for me?",
        "What do you get when you multiply {x} and {y}?",
        "{x} * {y} equals what?",
        "Give me the product of {x} and {y}",
        "Help me with {x}x{y}",
        "Work this out: {x} times {y}",
        "Multiply together {x} and {y}.",
        "Hi! What's {x} × {y}?",
        "Result of {x} * {y}?",
        "{x} times {y} is?",
        "Do {x}*{y}",
        "I need {x} multiplied by {y}, please",
        "What is {x} times {y} exactly?",
    ),
}

#: Words people put around a question that carry no arithmetic. The grammar sprinkles them (and
#: made-up words) before and after a question so a model learns to find the operation among words
#: it does not know. None of them occurs in a held-out form (`heldout_vocabulary`, tested).
_FILLER_TEXT = """
    so well okay ok um uh hmm yo hey quick just really simple easy now then also again maybe
    kindly friend buddy sir madam teacher homework task problem puzzle number numbers math maths
    answer reply quickly fast right sure yes alright good morning evening today tonight here
    there next first another one more try check see know wonder think guess want wanted like
    would love can tell show write say figure compute calculate solve find correct correctly
    hurry dear assistant bot computer calculator tina model lol pls plz thx ty dude mate folks
    everyone thanks thank asap mentally in your head my our class test exam school kid son
    daughter mom dad boss wait question hard oh ah btw urgent honestly seriously curious am are
    we they it that these an a on at as or but not no very much many some any how which why who
    where go went got make made
"""
FILLER_WORDS: tuple[str, ...] = tuple(_FILLER_TEXT.split())
FILLER_LEAD_SHARE = 0.3  #: share of varied questions with filler words before them
FILLER_TAIL_SHARE = 0.2  #: share of varied questions with filler words after the operation
PSEUDO_WORD_SHARE = 0.35  #: share of filler words that are made up (random letters)
LEAD_SHARE = 0.6  #: share of varied questions with a lead-in
ENDING_SHARE = 0.5  #: share of varied questions with an ending


def _operation(task: str) -> str:
    return "mul" if task in ("mul", "mul2") else task


def surface(text: str, rng: random.Random) -> str:
    """Case and spacing noise as people type: first letter capitalised or not, sometimes all
    upper or lower case, sometimes a trailing space."""
    roll = rng.random()
    if roll < 0.5:
        text = text[:1].upper() + text[1:]
    elif roll < 0.62:
        text = text.upper()
    elif roll < 0.72:
        text = text.lower()
    if rng.random() < 0.1:
        text += " "
    return text


def phrase(task: str, x: int, y: int, rng: random.Random, phrasing: str) -> str:
    """The question for operands `x`, `y` (in written order) in the `phrasing` form set."""
    op = _operation(task)
    if phrasing == "canonical":
        return CANONICAL[op].format(x=x, y=y)
    if phrasing == "heldout":
        return surface(rng.choice(HELDOUT[op]).format(x=x, y=y), rng)
    if phrasing != "varied":
        raise ValueError(f"unknown phrasing {phrasing!r}; expected one of {PHRASINGS}")
    lead = rng.choice(LEADS) if rng.random() < LEAD_SHARE else ""
    ending = rng.choice(ENDINGS) if rng.random() < ENDING_SHARE else ""
    core = rng.choice(CORES[op])
    if core.endswith("=") and ending.startswith(" ="):
        ending = ""
    if rng.random() < FILLER_LEAD_SHARE:
        lead = _fillers(rng, 3) + rng.choice(("", ",", ":", "!", " -", ".")) + " " + lead
    if rng.random() < FILLER_TAIL_SHARE:
        core += " " + _fillers(rng, 2)
    return surface((lead + core + ending).format(x=x, y=y), rng)


def _fillers(rng: random.Random, most: int) -> str:
    """One to `most` filler words, some of them made up, none from a held-out form."""
    words = []
    for _ in range(rng.randint(1, most)):
        if rng.random() < PSEUDO_WORD_SHARE:
            word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 8)))
            if word in heldout_vocabulary():
                word = rng.choice(FILLER_WORDS)
        else:
            word = rng.choice(FILLER_WORDS)
        words.append(word)
    return " ".join(words)


@functools.cache
def heldout_vocabulary() -> frozenset[str]:
    """Every word of the held-out forms, lower case (filler words must avoid them)."""
    return frozenset(
        w for forms in HELDOUT.values() for f in forms for w in re.findall(r"[a-z]+", f.lower())
    )


def normalise(form: str) -> str:
    """A form without case, punctuation or extra spaces (so near-identical forms compare equal)."""
    text = re.sub(r"[?.!,:=]", " ", form.lower())
    return " ".join(text.split())


def training_forms(op: str) -> set[str]:
    """Every template of the training grammar for `op`, normalised (`normalise`)."""
    forms = {normalise(CANONICAL[op])}
    for lead in ("", *LEADS):
        for core in CORES[op]:
            for ending in ("", *ENDINGS):
                forms.add(normalise(lead + core + ending))
    return forms
