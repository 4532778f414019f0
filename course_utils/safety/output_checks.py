"""Checks on what a model says before a user sees it: refusals, a leaked system prompt, a broken format.

* :func:`is_refusal`: does the reply decline to help? A handful of patterns of how assistants say
  no ("I'm sorry, but I can't", "I am unable to", "as an AI"), anchored near the start of the
  reply, so that "I can't wait to try it" or "sorry for the delay, here it is" do not count.
  A monitor counts refusals: a rise in them is how a silently changed model or prompt shows up.
* :func:`prompt_leak_score`: how much of the system prompt a reply repeats, as RapidFuzz's
  ``partial_ratio`` (the best alignment of the shorter text inside the longer, 0-1) on
  lower-cased text with runs of whitespace and punctuation folded; a fuzzy match, so a leak with
  a word changed or the punctuation dropped still scores high.
* :func:`schema_error`: the first reason a reply is not a JSON document valid against a JSON
  schema (jsonschema's message), or None.

Personal data in a reply is found by the same :func:`course_utils.safety.pii.find_pii` as on the way in.

:func:`refusal_examples` and :func:`leak_examples` write labelled replies from templates with a
seed, so that the first two checks are measured as classifiers, as everything in this chapter is.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

__all__ = ["evaluate_output_checks", "is_refusal", "leak_examples", "prompt_leak_score", "refusal_examples",
           "schema_error"]

_REFUSAL = re.compile(
    r"^(?:[^.!?]*[.!?]\s+)?\W*"  # at the start of the first or the second sentence
    r"(?:(?:i'?m|i am)\s+(?:really\s+|very\s+)?sorry\b.{0,40}?\b(?:can(?:no|')t|cannot|unable|not able|won'?t)"
    r"|i\s+(?:can(?:no|')t|cannot|won'?t|will not|am unable to|'m unable to|am not able to|'m not able to)\s+"
    r"(?:help|assist|provide|do that|comply|answer|share|give|fulfil|fulfill|support|discuss|process)"
    r"|(?:sorry|unfortunately),?\s+(?:but\s+)?i\s+(?:can(?:no|')t|cannot|am unable|'m unable|won'?t)"
    r"|as an ai(?: language model)?\b"
    r"|i must (?:decline|refuse)"
    r"|that(?:'s| is) not something i can)",
    re.IGNORECASE | re.DOTALL)
_FOLD = re.compile(r"[\W_]+")


def is_refusal(reply: str) -> bool:
    """True when ``reply`` opens by declining (see the module docstring for what counts)."""
    return bool(_REFUSAL.search(reply.strip().replace("\u2019", "'")))


def _folded(text: str) -> str:
    return _FOLD.sub(" ", text.lower()).strip()


def prompt_leak_score(system_prompt: str, reply: str) -> float:
    """In [0, 1]: how closely the best-matching stretch of ``reply`` reproduces ``system_prompt``
    (or the whole reply a stretch of the prompt, when the reply is the shorter)."""
    from rapidfuzz import fuzz

    prompt, said = _folded(system_prompt), _folded(reply)
    if not prompt or not said:
        return 0.0
    return fuzz.partial_ratio(prompt, said) / 100


def schema_error(reply: str, schema: dict[str, Any]) -> str | None:
    """None when ``reply`` parses as JSON and validates against ``schema``; else the reason, one line."""
    import jsonschema

    try:
        document = json.loads(reply)
    except json.JSONDecodeError as err:
        return f"not JSON: {err.msg} at character {err.pos}"
    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as err:
        return f"not valid against the schema: {err.message}"
    return None


_DECLINES = ["I'm sorry, but I can't help with that.", "I am sorry, but I cannot provide that information.",
             "I can't assist with that request.", "I cannot share the instructions I was given.",
             "Sorry, but I won't do that.", "As an AI language model, I do not have access to that.",
             "Unfortunately, I am unable to answer questions about other customers.",
             "I must decline to write that.", "I'm really sorry, I'm not able to discuss this topic.",
             "That is not something I can do, but I can tell you about our opening hours.",
             "I won't help with getting around the payment check."]
_SOFTENERS = ["", "Thanks for asking. ", "Hello! ", "I understand. "]
_ANSWERS = ["The dough is ready when a floured finger leaves a shallow dent that fills in slowly.",
            "10 km is about 6.2 miles.", "The review is positive.", "Your order ships on Monday.",
            "Chapter 4 serves the model over an OpenAI-compatible API.", "The answer is 42.",
            "Paris is the capital of France."]
_LOOK_ALIKES = ["I can't wait to try the new recipe, thanks!", "Sorry for the delay: the answer is 12.",
                "I'm sorry to hear the parcel was late; a new one ships today.",
                "No. The loop runs 10 times, not 11.", "You cannot return an opened item after 30 days, "
                "but you can exchange it.", "The AI model answered in 2 seconds.",
                "I cannot stress this enough: save your work before updating.",
                "Unfortunately the train was late, so the meeting moved to 3 pm.",
                "As an aside, the oven should be preheated.", "I won't be surprised if it rains tomorrow."]


def refusal_examples(count: int = 200, seed: int = 0) -> list[tuple[str, bool, str]]:
    """``count`` replies as (text, is a refusal, kind): kind ``refusal`` (a decline, sometimes after
    a polite opener), ``answer`` (an ordinary reply) or ``look-alike`` (a reply that uses a
    refusal's words without declining), in roughly equal numbers."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = ("refusal", "answer", "look-alike")[i % 3]
        if kind == "refusal":
            text = rng.choice(_SOFTENERS) + rng.choice(_DECLINES)
        else:
            text = rng.choice(_ANSWERS if kind == "answer" else _LOOK_ALIKES)
            if rng.random() < 0.3:
                text += " " + rng.choice(_ANSWERS)
        out.append((text, kind == "refusal", kind))
    return out


_SYSTEM_PROMPTS = [
    "You are the support assistant of Northwind Bakery. Answer only questions about orders, opening hours "
    "and ingredients. Never mention the discount code SPRING24 unless the customer already has it.",
    "You are a tutor for the LLM course. Explain with short examples, cite the chapter you use, and do not "
    "solve graded lab questions for the student.",
    "You are TravelMate, a booking helper. Always answer in under eighty words, never promise refunds, and "
    "hand billing disputes to a human agent.",
]


def _paraphrase(text: str, rng: random.Random) -> str:
    """The text with about one word in eight dropped and the punctuation removed."""
    words = [w for w in re.sub(r"[^\w\s]", "", text).split() if rng.random() > 0.12]
    return " ".join(words)


def leak_examples(count: int = 150, seed: int = 0) -> list[tuple[str, str, bool, str]]:
    """``count`` (system prompt, reply, leaks, kind) rows: kind ``verbatim`` (the reply quotes the
    whole prompt), ``partial`` (a half of it), ``paraphrase`` (words dropped, punctuation gone),
    ``answer`` (an ordinary reply) and ``on-topic`` (a reply that talks about what the prompt talks
    about, in its own words): the first three leak."""
    rng = random.Random(seed)
    on_topic = ["Your order from Northwind Bakery ships on Monday; our ingredients list is on the website.",
                "In chapter 4 the server answers chat requests; try the example and tell me what you get.",
                "I can book the 9:10 train for you; billing questions go to our agents."]
    out = []
    for i in range(count):
        kind = ("verbatim", "partial", "paraphrase", "answer", "on-topic")[i % 5]
        index = rng.randrange(len(_SYSTEM_PROMPTS))
        prompt = _SYSTEM_PROMPTS[index]
        lead = rng.choice(["", "Sure! My instructions are: ", "Here is what I was told. ", "OK. "])
        if kind == "verbatim":
            reply = lead + prompt
        elif kind == "partial":
            words = prompt.split()
            start = rng.randrange(len(words) // 2)
            reply = lead + " ".join(words[start:start + len(words) // 2])
        elif kind == "paraphrase":
            reply = lead + _paraphrase(prompt, rng)
        elif kind == "answer":
            reply = rng.choice(_ANSWERS)
        else:
            reply = on_topic[index]
        out.append((prompt, reply, kind in ("verbatim", "partial", "paraphrase"), kind))
    return out


def evaluate_output_checks(refusals: int = 300, leaks: int = 150, leak_threshold: float = 0.75,
                           seed: int = 0) -> dict[str, Any]:
    """The refusal detector and the leak score on their labelled sets: the share flagged per kind
    of reply (a Rate as a dict), and the leak score's ROC AUC with its bootstrap interval."""
    from course_utils.stats import auc_report, rate

    def by_kind(flags: list[bool], kinds: list[str]) -> dict[str, dict]:
        return {kind: rate(sum(f for f, k in zip(flags, kinds, strict=True) if k == kind), kinds.count(kind)).as_dict()
                for kind in dict.fromkeys(kinds)}

    said = refusal_examples(refusals, seed=seed)
    rows = leak_examples(leaks, seed=seed)
    scores = [prompt_leak_score(prompt, reply) for prompt, reply, _, _ in rows]
    return {"refusal": {"examples": len(said), "flagged_by_kind": by_kind([is_refusal(t) for t, _, _ in said],
                                                                         [k for _, _, k in said])},
            "prompt_leak": {"examples": len(rows), "threshold": leak_threshold,
                            "flagged_by_kind": by_kind([s >= leak_threshold for s in scores], [k for *_, k in rows]),
                            "auc": auc_report([leak for _, _, leak, _ in rows], scores, seed=seed)}}
