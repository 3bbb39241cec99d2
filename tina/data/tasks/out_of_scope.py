"""Questions outside what the embedded model can do, and its one honest answer to them.

What it does: `REFUSAL` is the answer the embedded model gives to anything that is not
arithmetic or one of the code tasks; `generate_out_of_scope` draws a training record of such a
question (greetings, questions about itself, trivia, requests, numbers without an operation)
from a template grammar, answered with `REFUSAL` and no thinking; `HELDOUT_PROMPTS` are 50
hand-written prompts of the same kinds that the grammar never produces (`training_prompts`
enumerates it), for measuring; `is_refusal` tells an answer that declines from one that tries.

What it does not do: decide at serve time (the model does, having learned it) or score task
answers (`tina.data.tasks.scoring`).
"""

from __future__ import annotations

import random
from typing import Any

from tina.data.tasks.phrasing import normalise, surface
from tina.data.tasks.record import build_record

REFUSAL = "I can only do arithmetic and small Python programs; run a larger model with --base."

TASK = "out_of_scope"  #: the records' task name

FILLERS: dict[str, tuple[str, ...]] = {
    "place": (
        "France",
        "Japan",
        "Brazil",
        "Canada",
        "Kenya",
        "Peru",
        "Norway",
        "Egypt",
        "India",
        "Spain",
        "Mexico",
        "Chile",
        "Italy",
        "Ghana",
        "Nepal",
        "Iceland",
        "Poland",
        "Cuba",
    ),
    "topic": (
        "the ocean",
        "love",
        "winter",
        "my cat",
        "the moon",
        "coffee",
        "friendship",
        "rain",
        "a dragon",
        "the city",
        "music",
        "autumn",
        "a robot",
        "the sea",
        "dogs",
        "summer",
        "history",
        "space",
        "football",
        "trees",
    ),
    "person": (
        "Einstein",
        "Shakespeare",
        "Marie Curie",
        "Napoleon",
        "Mozart",
        "Picasso",
        "Gandhi",
        "Cleopatra",
        "Newton",
        "Darwin",
        "Lincoln",
        "Beethoven",
        "Tesla",
        "Plato",
    ),
    "thing": (
        "a computer",
        "the internet",
        "a car engine",
        "photosynthesis",
        "gravity",
        "a rainbow",
        "democracy",
        "a volcano",
        "the stock market",
        "a vaccine",
        "electricity",
        "a black hole",
        "the weather",
        "a bicycle",
        "bread",
        "a battery",
    ),
    "language": ("French", "German", "Spanish", "Italian", "Chinese", "Japanese", "Russian"),
    "year": ("1492", "1066", "1789", "1914", "1945", "2001", "1969", "1989", "1815", "2020"),
    "count": ("3", "5", "7", "10", "12", "20", "42", "100"),
}

TEMPLATES: tuple[str, ...] = (
    "hello",
    "hi",
    "hey there",
    "good morning",
    "good evening",
    "hi, how are you",
    "how are you today",
    "who are you",
    "what is your name",
    "what can you do",
    "are you a robot",
    "thanks",
    "thank you so much",
    "bye",
    "what is the capital of {place}",
    "where is {place}",
    "tell me about {place}",
    "what language do they speak in {place}",
    "who was {person}",
    "when was {person} born",
    "what did {person} invent",
    "tell me a story about {topic}",
    "write a poem about {topic}",
    "write a song about {topic}",
    "tell me a joke about {topic}",
    "tell me a joke",
    "explain {thing}",
    "how does {thing} work",
    "what is {thing}",
    "why is {thing} important",
    "translate hello into {language}",
    "say thank you in {language}",
    "what happened in {year}",
    "what happened in {place} in {year}",
    "name {count} animals",
    "give me {count} ideas for dinner",
    "list {count} countries",
    "is {count} a lucky number",
    "what is the weather like",
    "what time is it",
    "recommend a good book",
    "what should I eat for lunch",
    "can you help me with my homework",
    "summarize this article",
    "write an email to my boss",
    "what is the meaning of life",
    "do you like {topic}",
    "I feel sad today",
)

ENDINGS: tuple[str, ...] = ("", "", "?", ".", "!", "??", " please")

HELDOUT_PROMPTS: tuple[str, ...] = (
    "Hello, who are you?",
    "Good afternoon!",
    "Yo, what's up?",
    "Howdy partner",
    "Nice to meet you.",
    "Are you ChatGPT?",
    "Who made you?",
    "Do you have feelings?",
    "What's the tallest mountain on Earth?",
    "Who painted the Mona Lisa?",
    "What is the largest planet in our solar system?",
    "Which river is the longest in Africa?",
    "How tall is the Eiffel Tower?",
    "What is the boiling point of water?",
    "Who discovered penicillin?",
    "Name the seven wonders of the world.",
    "What year did the Berlin Wall fall?",
    "How many legs does a spider have?",
    "What is the population of Tokyo?",
    "When did humans first land on the Moon?",
    "Write a haiku about spring.",
    "Compose a limerick about a frog.",
    "Draft a cover letter for a nursing job.",
    "Give me a recipe for pancakes.",
    "Suggest a name for my new puppy.",
    "Plan a three-day trip to Rome.",
    "Help me write a birthday message for my mom.",
    "Tell me something interesting.",
    "Can you sing?",
    "What's your favourite colour?",
    "Explain quantum computing in simple terms.",
    "How do airplanes stay in the air?",
    "Why is the sky blue?",
    "What causes earthquakes?",
    "How do I bake sourdough bread?",
    "How can I improve my sleep?",
    "What is machine learning?",
    "Translate 'good night' into Portuguese.",
    "How do you say cheese in Dutch?",
    "Is it going to rain tomorrow?",
    "What's the best phone to buy in 2025?",
    "Recommend a movie for tonight.",
    "I'm bored, any ideas?",
    "Can you keep a secret?",
    "My dog ate my homework, what do I do?",
    "Should I learn the guitar or the piano?",
    "What is the stock price of Apple?",
    "Describe the color red to a blind person.",
    "Who won the World Cup in 2018?",
    "Please summarise the plot of Hamlet.",
)


def training_prompts() -> set[str]:
    """Every prompt the training grammar can produce, normalised (`phrasing.normalise`)."""
    prompts: set[str] = set()
    for template in TEMPLATES:
        fills: list[dict[str, str]] = [{}]
        for slot, values in FILLERS.items():
            if "{" + slot + "}" in template:
                fills = [{**f, slot: v} for f in fills for v in values]
        for fill in fills:
            for ending in ENDINGS:
                prompts.add(normalise(template.format(**fill) + ending))
    return prompts


def out_of_scope_question(rng: random.Random) -> str:
    """One prompt from the training grammar, with case and spacing noise."""
    template = rng.choice(TEMPLATES)
    fill = {slot: rng.choice(values) for slot, values in FILLERS.items()}
    return surface(template.format(**fill) + rng.choice(ENDINGS), rng)


def generate_out_of_scope(
    task: str, rng: random.Random, difficulty: int, style: str, **record_kwargs: Any
) -> dict[str, Any]:
    """A training record: an out-of-scope question, no thinking, `REFUSAL` as the answer."""
    return build_record(
        rng=rng,
        task=TASK,
        question=out_of_scope_question(rng),
        steps=[],
        answer=REFUSAL,
        rechecks=[],
        style=style,
        plan_class="direct",
        difficulty=difficulty,
        meta={},
        **record_kwargs,
    )


def heldout_records() -> list[dict[str, Any]]:
    """The 50 `HELDOUT_PROMPTS` as records (ids `out_of_scope-heldout-<i>`), for measuring."""
    rng = random.Random(0)  # build_record draws nothing for a record without thinking
    records = []
    for i, prompt in enumerate(HELDOUT_PROMPTS):
        record = build_record(
            rng=rng,
            task=TASK,
            question=prompt,
            steps=[],
            answer=REFUSAL,
            rechecks=[],
            style="concise",
            plan_class="direct",
            difficulty=1,
            meta={},
        )
        records.append({"id": f"{TASK}-heldout-{i}", **record})
    return records


def is_refusal(answer: str) -> bool:
    """Whether an answer declines the question (the model's `REFUSAL`, however it ends)."""
    return answer.strip().startswith(REFUSAL[:24])
