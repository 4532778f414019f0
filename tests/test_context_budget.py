"""ContextBudget and build_context: every slot enforced, exact totals, the input never dropped."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.context import Chunk, ContextBudget, ContextOverflowError, build_context
from course_utils.context.budget import SLOTS
from course_utils.tokens import count_chat_tokens

MODEL = "cl100k_base"
WORDS = st.lists(st.sampled_from(["alpha", "beta", "gamma", "Köln", "日本", "🎉", "delta", "the", "of"]),
                 min_size=1, max_size=40).map(" ".join)


def turn(i: int, words: str) -> list[dict]:
    return [{"role": "user", "content": f"question {i}: {words}"}, {"role": "assistant", "content": f"answer {i}"}]


@st.composite
def situations(draw):
    fractions = [draw(st.floats(0, 1)) for _ in range(4)]
    scale = sum(fractions) or 1.0
    budget = ContextBudget(window=draw(st.integers(120, 700)), response_reserve=draw(st.integers(0, 60)),
                           safety_margin=draw(st.integers(0, 20)),
                           **{s: f / scale for s, f in zip(SLOTS, fractions, strict=True)})
    history = [m for i in range(draw(st.integers(0, 6))) for m in turn(i, draw(WORDS))]
    chunks = [Chunk(draw(WORDS), draw(st.floats(-5, 5)), f"doc{i}") for i in range(draw(st.integers(0, 6)))]
    return budget, draw(WORDS), draw(st.one_of(st.just(""), WORDS)), history, chunks


@settings(max_examples=80, deadline=None)
@given(situations())
def test_for_any_inputs_the_total_fits_order_is_kept_and_the_input_survives(situation):
    budget, user_input, system, history, chunks = situation
    try:
        built = build_context(budget, user_input, system, history, chunks, MODEL)
    except ContextOverflowError:
        # only when the input and the formatting alone exceed the usable window
        assert count_chat_tokens([{"role": "user", "content": user_input}], MODEL) > budget.usable
        return
    assert built.total == count_chat_tokens(built.messages, MODEL) <= budget.usable
    assert built.messages[-1]["role"] == "user" and built.messages[-1]["content"].endswith(user_input)
    kept_history = [m for m in built.messages[:-1] if m["role"] != "system"]
    assert kept_history == history[len(history) - len(kept_history):]  # the newest whole turns, in order
    best = sorted(chunks, key=lambda c: c.score, reverse=True)[:built.usage["retrieval"].kept]
    assert "".join(f"[{i}] {c.text}\n\n" for i, c in enumerate(best, 1)) in built.messages[-1]["content"]
    for slot, usage in built.usage.items():
        assert usage.used <= usage.allowed or slot == "input", (slot, usage)


def test_an_empty_slot_gives_its_tokens_to_the_others():
    budget = ContextBudget(window=400, response_reserve=50, safety_margin=0)
    history = [m for i in range(12) for m in turn(i, "alpha beta gamma delta " * 3)]
    with_system = build_context(budget, "What now?", "You are terse. " * 40, history, model=MODEL)
    without = build_context(budget, "What now?", "", history, model=MODEL)
    assert without.usage["history"].allowed > with_system.usage["history"].allowed
    assert without.usage["history"].kept > with_system.usage["history"].kept


def test_the_system_prompt_is_enforced_too_and_said_so():
    budget = ContextBudget(window=300, response_reserve=40, safety_margin=0, system=0.1, history=0.5, retrieval=0.3,
                           input=0.1)
    history = [m for i in range(10) for m in turn(i, "alpha beta " * 6)]
    built = build_context(budget, "Go.", "Rule number one. " * 60, history, model=MODEL)
    assert built.usage["system"].dropped == 1 and built.usage["system"].used <= built.usage["system"].allowed
    assert any("system prompt cut" in w for w in built.warnings)
    assert built.messages[0]["content"].startswith("Rule number one.")


def test_chunks_are_chosen_by_score_and_a_full_window_warns():
    budget = ContextBudget(window=200, response_reserve=10, safety_margin=0, system=0.0, history=0.0, retrieval=0.9,
                           input=0.1)
    chunks = [Chunk(f"passage {i} " + "words " * 20, score=float(i), source=str(i)) for i in range(8)]
    built = build_context(budget, "Which passage?", retrieved=chunks, model=MODEL)
    kept = built.usage["retrieval"].kept
    assert 0 < kept < 8
    content = built.messages[-1]["content"]
    assert all(f"passage {i} " in content for i in range(8 - kept, 8)) and "passage 0 " not in content
    assert built.fill > 0.8 and any("fills" in w for w in built.warnings)


def test_an_input_that_cannot_fit_is_an_explicit_error():
    budget = ContextBudget(window=100, response_reserve=20, safety_margin=0)
    with pytest.raises(ContextOverflowError, match="user input alone takes"):
        build_context(budget, "many words " * 100, model=MODEL)
    with pytest.raises(ValueError, match="non-empty"):
        build_context(budget, "   ", model=MODEL)
    with pytest.raises(ValueError, match="sum to at most 1"):
        ContextBudget(window=1000, system=0.5, history=0.5, retrieval=0.5)
    with pytest.raises(ValueError, match="leave nothing"):
        ContextBudget(window=100, response_reserve=100)
