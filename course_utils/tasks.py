"""The course's own small data sets: arithmetic word problems, sentiment labels, multiple choice, prose passages.

Each set is a JSON-lines file in ``course_utils/data/`` with a datasheet in
``course_utils/data/README.md``. The arithmetic and sentiment sets are *generated* by the
functions here from templates we wrote, with a fixed seed, so every answer is exact by
construction; ``python -m course_utils.tasks`` rewrites the files and the tests check that the
files and the generators agree. The multiple-choice questions are written by hand.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["DATA_DIR", "arithmetic_problems", "load_task", "sentiment_texts"]

DATA_DIR = Path(__file__).parent / "data"
TASKS = ("arithmetic", "sentiment", "multiple_choice", "passages", "cache_queries", "chapter_questions",
         "tool_requests")

# (template, answer as a function of the drawn numbers); every answer is a non-negative integer.
_ARITHMETIC = [
    ("A baker makes {a} loaves in the morning and {b} in the afternoon, then sells {c}. How many loaves are left?",
     lambda a, b, c: a + b - c),
    ("Tom has {a} marbles. He gives {c} to his sister and then buys {b} more. How many marbles does he have now?",
     lambda a, b, c: a - c + b),
    ("A box holds {a} pencils. How many pencils are in {b} boxes?", lambda a, b, c: a * b),
    ("A school orders {b} crates of {a} apples each and {c} loose apples. How many apples is that?",
     lambda a, b, c: a * b + c),
    ("A train carries {a} passengers. At the first stop {c} get off and {b} get on. How many are on the train?",
     lambda a, b, c: a - c + b),
    ("Each ticket costs {b} dollars. How much do {a} tickets cost, in dollars?", lambda a, b, c: a * b),
    ("A farmer has {a} hens. Each hen lays {b} eggs a week. How many eggs does he collect in {c} weeks?",
     lambda a, b, c: a * b * c),
    ("Sara reads {a} pages on Monday, twice as many on Tuesday and {c} on Wednesday. How many pages in total?",
     lambda a, b, c: a + 2 * a + c),
    ("A shop had {a} shirts, sold {c} of them, and received a delivery of {b} boxes with 10 shirts each. "
     "How many shirts does it have?", lambda a, b, c: a - c + 10 * b),
    ("{b} friends share {a} stickers each and put them into one album, then remove {c}. How many stickers are "
     "in the album?", lambda a, b, c: a * b - c),
]


def arithmetic_problems(count: int = 120, seed: int = 0) -> list[dict]:
    """Distinct word problems of one to three steps, {"question", "answer"}; answers are exact integers."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        template, solve = _ARITHMETIC[len(out) % len(_ARITHMETIC)]
        a, b = rng.randint(12, 60), rng.randint(2, 9)
        c = rng.randint(1, a - 1)
        question = template.format(a=a, b=b, c=c)
        if question not in seen:
            seen.add(question)
            out.append({"question": question, "answer": solve(a, b, c)})
    return out


_SUBJECTS = ["the hotel", "this phone", "the new album", "the restaurant", "this laptop", "the film",
             "the delivery service", "this book", "the museum tour", "this speaker"]
_POSITIVE = ["was wonderful from start to finish", "exceeded every expectation I had",
             "is worth every penny", "made my whole week better", "works perfectly and looks great",
             "was a genuine pleasure", "is the best I have tried in years", "left me smiling for hours",
             "was friendly, quick and careful", "is beautifully made and easy to use",
             "delighted the whole family", "turned out far better than the reviews suggested",
             "is something I would happily buy again", "felt thoughtful in every detail",
             "was a bargain for the quality", "never once let me down", "impressed even my picky friends",
             "is a joy to come back to", "was simply excellent", "deserves all the praise it gets"]
_NEGATIVE = ["was a complete waste of money", "broke within a week", "was rude, slow and careless",
             "is the worst I have tried in years", "left me angry and disappointed",
             "does not do what it promises", "was dirty and overpriced", "stopped working after one day",
             "bored me to tears", "is impossible to recommend", "arrived late and damaged",
             "felt cheap in every detail", "was a frustrating mess", "let me down again and again",
             "made the whole trip worse", "is not worth half the price", "annoyed everyone who tried it",
             "gave me nothing but trouble", "was simply awful", "deserves every bad review it gets"]


def sentiment_texts(seed: int = 0) -> list[dict]:
    """200 one-sentence reviews, {"text", "label"}: 100 "positive" and 100 "negative", shuffled."""
    rng = random.Random(seed)
    rows = []
    for phrases, label in ((_POSITIVE, "positive"), (_NEGATIVE, "negative")):
        combos = [f"{subject[0].upper()}{subject[1:]} {phrase}." for subject in _SUBJECTS for phrase in phrases]
        rows += [{"text": text, "label": label} for text in rng.sample(combos, 100)]
    rng.shuffle(rows)
    return rows


def load_task(name: str) -> list[dict]:
    """The records of one of the course's data sets: ``arithmetic``, ``sentiment``, ``multiple_choice``,
    ``passages`` (held-out prose for perplexity), ``cache_queries`` (the semantic-cache questions) or
    ``chapter_questions`` (retrieval questions over the chapters)."""
    if name not in TASKS:
        raise ValueError(f"unknown task set {name!r}; choose one of {', '.join(TASKS)}")
    with open(DATA_DIR / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(name: str, rows: list[dict]) -> None:
    (DATA_DIR / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    _write("arithmetic", arithmetic_problems())
    _write("sentiment", sentiment_texts())
