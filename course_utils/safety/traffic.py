"""Production-like traffic from the course's task sets, for monitoring: windows of user messages
with a chosen topic mix, share of long messages and share carrying personal data.

A window is drawn from three topics (sentiment reviews, arithmetic word problems, questions about
the course's chapters); a *long* message joins two messages of its topic, and a message *with
personal data* gets a made-up e-mail address or card number appended, as a user pasting their
details would. :func:`signals` turns a window into what a monitor sees: the topic, the length in
tokens and whether the personal-data guardrail fired.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["TOPICS", "Message", "signals", "traffic_window"]

TOPICS = ("sentiment", "arithmetic", "chapter_questions")
_FIELD = {"sentiment": "text", "arithmetic": "question", "chapter_questions": "question"}


@dataclass(frozen=True)
class Message:
    topic: str
    text: str


def traffic_window(n: int, mix: dict[str, float], seed: int, long_share: float = 0.0,
                   pii_share: float = 0.0) -> list[Message]:
    """``n`` messages with topics drawn from ``mix`` (shares over :data:`TOPICS`, summing to 1),
    each long with probability ``long_share`` and carrying personal data with ``pii_share``."""
    from course_utils.safety.pii_set import pii_examples
    from course_utils.tasks import load_task

    if set(mix) - set(TOPICS) or abs(sum(mix.values()) - 1) > 1e-9:
        raise ValueError(f"a mix gives shares of {', '.join(TOPICS)} that sum to 1, got {mix}")
    rng = random.Random(seed)
    pool = {topic: [row[_FIELD[topic]] for row in load_task(topic)] for topic in mix}
    details = []
    if pii_share > 0:  # made-up e-mail addresses and card numbers, for users who paste theirs
        details = [e for e in pii_examples(200, seed=seed)
                   if e.spans and not e.hard and e.spans[0][0] in ("EMAIL", "CARD")]
    topics = rng.choices(list(mix), weights=list(mix.values()), k=n)
    window = []
    for topic in topics:
        text = rng.choice(pool[topic])
        if rng.random() < long_share:
            text += " " + rng.choice(pool[topic])
        if rng.random() < pii_share:
            detail = rng.choice(details)
            kind, start, end = detail.spans[0]
            text += f" (my {'e-mail' if kind == 'EMAIL' else 'card'}: {detail.text[start:end]})"
        window.append(Message(topic, text))
    return window


def signals(window: Sequence[Message], count_tokens: Callable[[str], int]) -> dict[str, list]:
    """What a monitor records per message: ``topic`` (str), ``tokens`` (int, by ``count_tokens``)
    and ``pii_flagged`` (bool, whether :func:`course_utils.safety.pii.find_pii` found anything)."""
    from course_utils.safety.pii import find_pii

    return {"topic": [m.topic for m in window], "tokens": [count_tokens(m.text) for m in window],
            "pii_flagged": [bool(find_pii(m.text)) for m in window]}
