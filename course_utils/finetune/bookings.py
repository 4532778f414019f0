"""A strict-format task the course writes itself: table-booking messages -> JSON with fixed keys.

Each booking is a name, a number of guests, a date and a time, written into a short message by
one of the templates below (all written for the course). The answer is one line of JSON with the
keys in a fixed order, values copied as the message writes them, ``guests`` as a number:

    {"name": "Ines Okafor", "guests": 4, "date": "12 March", "time": "7:30 pm"}

The templates are split: held-out messages use phrasings never seen in training, and the names,
dates and times are drawn afresh, so a fine-tuned model is scored on what it generalised.

:func:`with_label_noise` imitates a data set labelled by several people with different habits,
the failure the article's triage case study describes: some answers name a key differently, give
the time on a 24-hour clock, or write the number of guests as a word.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from course_utils.chat import generate_batch

__all__ = ["FIELDS", "INSTRUCTION", "Booking", "ExtractionScore", "booking_messages", "extract", "make_bookings",
           "parse_answer", "score_extractions", "with_label_noise"]

FIELDS = ("name", "guests", "date", "time")
INSTRUCTION = "Extract the booking as one line of JSON with the keys name, guests, date and time."

TRAIN_TEMPLATES = (
    "Hi, this is {name}. Could I book a table for {guests} on {date} at {time}? Thanks!",
    "{name} here. We are {guests} people and would love to come by at {time} on {date}.",
    "Booking request: {guests} guests, {date}, {time}. Name: {name}.",
    "Good morning! Please reserve a table at {time} on {date} for {guests}. It is under {name}.",
    "Dear team, {name} would like a table for {guests} on {date}, around {time}. Kind regards.",
    "Can you fit {guests} of us in on {date}? {time} would be ideal. Cheers, {name}",
    "Table for {guests}, please, {date} at {time}. The booking is for {name}.",
    "Hello, my name is {name} and I want to book dinner on {date} at {time} for {guests} people.",
)
HELD_OUT_TEMPLATES = (
    "Quick one from {name}: {guests} seats on {date}, arriving at {time}.",
    "We would like to celebrate on {date}. {guests} guests at {time}, booked by {name}. Is that possible?",
    "Reservation for {name}: {date}, {time}, party of {guests}.",
)
FIRST = ("Ines", "Tomasz", "Priya", "Kwame", "Lucia", "Hiroshi", "Amara", "Jonas", "Fatima", "Mateo", "Sofia",
         "Dmitri", "Aisha", "Lars", "Mei", "Rafael", "Noor", "Emil", "Zanele", "Oskar")
LAST = ("Okafor", "Lindqvist", "Natarajan", "Mensah", "Ferreira", "Tanaka", "Diallo", "Becker", "Haddad", "Rossi",
        "Novak", "Petrov", "Kowalski", "Moreau", "Chen", "Alvarez", "Sato", "Hughes", "Dlamini", "Berg")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")


@dataclass(frozen=True)
class Booking:
    message: str
    answer: dict  # the four fields, in FIELDS order

    @property
    def answer_text(self) -> str:
        return json.dumps(self.answer)


def make_bookings(n: int, split: str = "train", seed: int = 0) -> list[Booking]:
    """``n`` bookings written with the ``split``'s templates ("train" or "held_out"), seeded."""
    templates = {"train": TRAIN_TEMPLATES, "held_out": HELD_OUT_TEMPLATES}.get(split)
    if templates is None:
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    bookings = []
    for i in range(n):
        minute = rng.choice(("", ":15", ":30", ":45"))
        answer = {"name": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "guests": rng.randint(2, 12),
                  "date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)}", "time": f"{rng.randint(5, 10)}{minute} pm"}
        bookings.append(Booking(templates[i % len(templates)].format(**answer), answer))
    return bookings


def booking_messages(booking: Booking, with_answer: bool = True,
                     examples: Sequence[Booking] = ()) -> list[dict[str, str]]:
    """The chat for one booking: the instruction and message, optional worked ``examples`` before it
    (few-shot prompting), and the answer as the assistant's turn when ``with_answer``."""
    chat = [{"role": "system", "content": "You turn booking messages into JSON."}]
    for shot in examples:
        chat += [{"role": "user", "content": f"{INSTRUCTION}\n\n{shot.message}"},
                 {"role": "assistant", "content": shot.answer_text}]
    chat.append({"role": "user", "content": f"{INSTRUCTION}\n\n{booking.message}"})
    if with_answer:
        chat.append({"role": "assistant", "content": booking.answer_text})
    return chat


def extract(model, tokenizer, bookings: Sequence[Booking], examples: Sequence[Booking] = (),
            max_new_tokens: int = 48) -> list[str]:
    """The model's greedy replies to the ``bookings``' messages, with ``examples`` as few-shot turns."""
    prompts = [booking_messages(b, with_answer=False, examples=examples) for b in bookings]
    return [c[0].text for c in generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens)]


def _to_24_hours(time: str) -> str:
    clock = time.removesuffix(" pm")
    hour, _, minute = clock.partition(":")
    return f"{int(hour) + 12}:{minute or '00'}"


def with_label_noise(bookings: Sequence[Booking], fraction: float, seed: int = 0) -> tuple[list[Booking], list[bool]]:
    """A copy of ``bookings`` in which ``fraction`` of the answers follow another labeller's habits
    (a renamed key, a 24-hour time, or guests as a word); returns it and which ones were changed."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    noisy = set(rng.sample(range(len(bookings)), round(fraction * len(bookings))))
    out = []
    for i, booking in enumerate(bookings):
        answer = dict(booking.answer)
        if i in noisy:
            habit = i % 3
            if habit == 0:
                answer = {("party_size" if k == "guests" else k): v for k, v in answer.items()}
            elif habit == 1:
                answer["time"] = _to_24_hours(answer["time"])
            else:
                answer["guests"] = NUMBER_WORDS[answer["guests"]]
        out.append(Booking(booking.message, answer))
    return out, [i in noisy for i in range(len(bookings))]


def parse_answer(text: str) -> dict | None:
    """The JSON object a model wrote, if its reply is exactly one with the four keys; else None."""
    try:
        value = json.loads(text.strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or list(value) != list(FIELDS):
        return None
    return value


@dataclass(frozen=True)
class ExtractionScore:
    compliance: float  # share of replies that are exactly a JSON object with the four keys in order
    field_accuracy: float  # share of all fields (4 per booking) reproduced exactly; a non-compliant reply scores 0
    exact: float  # share of bookings with every field right
    per_field: dict[str, float]
    per_booking: tuple[float, ...] = ()  # each booking's share of fields right, for paired comparisons


def score_extractions(replies: Sequence[str], bookings: Sequence[Booking]) -> ExtractionScore:
    """Format compliance and field accuracy of model ``replies`` against the ``bookings``' answers."""
    if len(replies) != len(bookings) or not bookings:
        raise ValueError(f"need one reply per booking, got {len(replies)} replies for {len(bookings)} bookings")
    parsed = [parse_answer(r) for r in replies]
    right = {f: [p is not None and p[f] == b.answer[f] for p, b in zip(parsed, bookings, strict=True)]
             for f in FIELDS}
    n = len(bookings)
    return ExtractionScore(
        compliance=sum(p is not None for p in parsed) / n,
        field_accuracy=sum(sum(v) for v in right.values()) / (n * len(FIELDS)),
        exact=sum(all(right[f][i] for f in FIELDS) for i in range(n)) / n,
        per_field={f: sum(v) / n for f, v in right.items()},
        per_booking=tuple(sum(right[f][i] for f in FIELDS) / len(FIELDS) for i in range(n)),
    )
