"""Fitting a system prompt, history, retrieved passages and the user's input into a context window.

A :class:`ContextBudget` splits the *usable* window (the window less a reserve for the response
and a safety margin) into four slots by fractions. :func:`build_context` fills them:

* every slot is enforced, the system prompt too (cut by tokens, keeping its beginning, with a
  warning), and a slot's unused tokens go to the slots that need more, in proportion to their
  fractions;
* history is cut by whole turns (a user message and the replies after it), newest kept, order
  preserved;
* retrieved chunks are kept by relevance score, best first, while they fit;
* the user's input is never cut or dropped: if it cannot fit even with every other slot's
  tokens, :class:`ContextOverflowError` says so with the numbers;
* the finished messages are counted again with the model's chat formatting, and trimmed further
  if formatting pushed them over, so the total is exact, not estimated.

The result carries the messages and a per-slot report, with a warning once the prompt passes
``warn_at`` (80%) of the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from course_utils.context.truncation import truncate_tokens
from course_utils.tokens import count_chat_tokens, count_tokens

__all__ = ["SLOTS", "BuiltContext", "Chunk", "ContextBudget", "ContextOverflowError", "SlotUsage", "build_context"]

SLOTS = ("system", "history", "retrieval", "input")
Message = dict[str, str]


class ContextOverflowError(ValueError):
    """The parts that must be sent (the user's input and the chat formatting) do not fit."""


@dataclass(frozen=True)
class ContextBudget:
    """A window of ``window`` tokens, less ``response_reserve`` and ``safety_margin``, split by fractions."""

    window: int
    response_reserve: int = 512
    safety_margin: int = 32
    system: float = 0.15
    history: float = 0.35
    retrieval: float = 0.35
    input: float = 0.15
    warn_at: float = 0.8

    def __post_init__(self) -> None:
        if self.window < 1 or self.response_reserve < 0 or self.safety_margin < 0:
            raise ValueError("window must be positive and the reserve and margin non-negative, got "
                             f"{self.window}, {self.response_reserve}, {self.safety_margin}")
        if self.usable < 1:
            raise ValueError(f"the reserve ({self.response_reserve}) and margin ({self.safety_margin}) leave nothing "
                             f"of the {self.window}-token window for the prompt")
        fractions = self.fractions
        if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
            raise ValueError(f"slot fractions must be non-negative and sum to at most 1, got {fractions}")

    @property
    def usable(self) -> int:
        """Tokens the prompt may use."""
        return self.window - self.response_reserve - self.safety_margin

    @property
    def fractions(self) -> dict[str, float]:
        return {slot: getattr(self, slot) for slot in SLOTS}


@dataclass(frozen=True)
class Chunk:
    """A retrieved passage and its relevance score (higher is more relevant)."""

    text: str
    score: float
    source: str = ""


@dataclass
class SlotUsage:
    allowed: int  # tokens the slot could use after redistribution
    used: int  # tokens its content takes (formatting included)
    kept: int  # turns, chunks or messages kept
    dropped: int  # turns or chunks left out (1 for a cut system prompt)


@dataclass
class BuiltContext:
    messages: list[Message]
    usage: dict[str, SlotUsage]
    total: int  # prompt tokens of ``messages``, counted with the model's chat formatting
    budget: ContextBudget
    warnings: list[str] = field(default_factory=list)

    @property
    def fill(self) -> float:
        """Share of the whole window the prompt takes."""
        return self.total / self.budget.window


def _turns(history: Sequence[Message]) -> list[list[Message]]:
    """History grouped into turns: each user message with the messages that follow it."""
    turns: list[list[Message]] = []
    for message in history:
        if message.get("role") == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def _retrieval_block(chunks: Sequence[Chunk]) -> str:
    return "".join(f"[{i}] {c.text}\n\n" for i, c in enumerate(chunks, 1))


def _final_user_message(chunks: Sequence[Chunk], user_input: str) -> Message:
    """The retrieved passages, if any, then the input: the input always ends the prompt."""
    context = f"Use these passages if they help:\n\n{_retrieval_block(chunks)}" if chunks else ""
    return {"role": "user", "content": context + user_input}


def _water_fill(demand: dict[str, int], fractions: dict[str, float], total: int) -> dict[str, int]:
    """Give each slot min(its demand, its share of ``total``); hand what is left to slots still short."""
    allowed = {s: min(demand[s], int(fractions[s] * total)) for s in SLOTS}
    while True:
        left = total - sum(allowed.values())
        short = [s for s in SLOTS if allowed[s] < demand[s] and fractions[s] > 0]
        if left <= 0 or not short:
            return allowed
        weight = sum(fractions[s] for s in short)
        grants = {s: min(demand[s] - allowed[s], int(left * fractions[s] / weight)) for s in short}
        if not any(grants.values()):  # rounding left a few tokens: give them one at a time
            grants = {short[0]: min(demand[short[0]] - allowed[short[0]], left)}
        for s, extra in grants.items():
            allowed[s] += extra


def build_context(budget: ContextBudget, user_input: str, system: str = "", history: Sequence[Message] = (),
                  retrieved: Sequence[Chunk] = (), model: Any = "gpt-4o") -> BuiltContext:
    """Messages for ``model`` holding as much of each part as its slot allows; see the module docstring."""
    if not isinstance(user_input, str) or not user_input.strip():
        raise ValueError("user_input must be a non-empty string: it is what the model is asked to answer")

    def cost(messages: list[Message]) -> int:
        return count_chat_tokens(messages, model)

    probe = {"role": "user", "content": ""}
    fixed = cost([probe])  # formatting of one empty message plus the reply priming
    per_message = cost([probe, probe]) - fixed
    turns = _turns(history)
    ranked = sorted(retrieved, key=lambda c: c.score, reverse=True)
    demand = {
        "system": count_tokens(system, model) + per_message if system else 0,
        "history": sum(cost(turn) - fixed + per_message for turn in turns),
        "retrieval": cost([_final_user_message(ranked, "")]) - fixed if ranked else 0,
        "input": count_tokens(user_input, model),
    }
    room = budget.usable - fixed
    if demand["input"] > room:
        raise ContextOverflowError(
            f"the user input alone takes {demand['input']} tokens; with the chat formatting ({fixed}) it exceeds "
            f"the {budget.usable} usable tokens (window {budget.window} - response reserve {budget.response_reserve} "
            f"- margin {budget.safety_margin}). Shorten it on purpose (course_utils.context.truncate_tokens) or "
            "use a larger window.")
    # the input is mandatory: it gets what it needs first, the other slots share the rest
    others = _water_fill({**demand, "input": 0}, {**budget.fractions, "input": 0.0}, room - demand["input"])
    allowed = {**others, "input": demand["input"]}
    warnings: list[str] = []

    system_text = system
    if system and demand["system"] > allowed["system"]:
        system_text = truncate_tokens(system, max(allowed["system"] - per_message, 0), model, keep="head")
        warnings.append(f"system prompt cut from {demand['system'] - per_message} to {allowed['system'] - per_message} "
                        "tokens (its beginning kept)")
    kept_turns: list[list[Message]] = []
    spent = 0
    for turn in reversed(turns):  # newest first
        size = cost(turn) - fixed + per_message
        if spent + size > allowed["history"]:
            break
        kept_turns.insert(0, turn)
        spent += size
    kept_chunks: list[Chunk] = []
    for chunk in ranked:  # most relevant first
        if cost([_final_user_message([*kept_chunks, chunk], "")]) - fixed > allowed["retrieval"]:
            break
        kept_chunks.append(chunk)

    def assemble() -> list[Message]:
        head = [{"role": "system", "content": system_text}] if system_text else []
        return head + [m for turn in kept_turns for m in turn] + [_final_user_message(kept_chunks, user_input)]

    messages = assemble()
    total = cost(messages)
    while total > budget.usable:  # formatting at the seams can add a token or two: trim until it fits
        if kept_chunks:
            kept_chunks.pop()
        elif kept_turns:
            kept_turns.pop(0)
        elif system_text:
            system_text = truncate_tokens(system_text, max(count_tokens(system_text, model) - (total - budget.usable),
                                                           0), model, keep="head")
        else:
            raise ContextOverflowError(f"the input and formatting take {total} tokens, over the {budget.usable} usable")
        messages = assemble()
        total = cost(messages)

    def measured(part: list[Message]) -> int:
        return cost(part) - fixed + per_message if part else 0

    usage = {
        "system": SlotUsage(allowed["system"], measured(messages[:1] if system_text else []), int(bool(system_text)),
                            int(system_text != system)),
        "history": SlotUsage(allowed["history"], sum(measured(t) for t in kept_turns), len(kept_turns),
                             len(turns) - len(kept_turns)),
        "retrieval": SlotUsage(allowed["retrieval"],
                               cost([_final_user_message(kept_chunks, "")]) - fixed if kept_chunks else 0,
                               len(kept_chunks), len(ranked) - len(kept_chunks)),
        "input": SlotUsage(allowed["input"], demand["input"], 1, 0),
    }
    if total > budget.warn_at * budget.window:
        warnings.append(f"the prompt fills {total / budget.window:.0%} of the {budget.window}-token window "
                        f"(warning above {budget.warn_at:.0%})")
    return BuiltContext(messages, usage, total, budget, warnings)
