"""Truncation by tokens: within the budget, on character boundaries, for any text."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.context import truncate_tokens
from course_utils.tokens import count_tokens

MODEL = "cl100k_base"
# text rich in characters that byte-level BPE splits across tokens: accents, CJK, emoji
TEXT = st.text(alphabet=st.sampled_from(list("ab cdé,.Köln日本語テキスト🎉🚀\n")), max_size=120)


@settings(max_examples=60, deadline=None)
@given(text=TEXT, max_tokens=st.integers(0, 40), keep=st.sampled_from(["head", "tail"]))
def test_head_and_tail_fit_and_are_pieces_of_the_text(text, max_tokens, keep):
    cut = truncate_tokens(text, max_tokens, MODEL, keep=keep)
    assert count_tokens(cut, MODEL) <= max_tokens
    assert (text.startswith(cut) if keep == "head" else text.endswith(cut))
    assert "\ufffd" not in cut  # no half characters
    if count_tokens(text, MODEL) <= max_tokens:
        assert cut == text


@settings(max_examples=60, deadline=None)
@given(text=TEXT, max_tokens=st.integers(3, 40), share=st.floats(0, 1))
def test_the_middle_cut_keeps_both_ends_within_the_budget(text, max_tokens, share):
    cut = truncate_tokens(text, max_tokens, MODEL, keep="middle", head_share=share, marker=" … ")
    assert count_tokens(cut, MODEL) <= max_tokens and "\ufffd" not in cut
    if cut != text:
        head, tail = cut.split(" … ", 1) if " … " in cut else (cut, "")
        assert text.startswith(head) and text.endswith(tail)


def test_the_middle_cut_spends_the_budget_by_the_share():
    text = " ".join(f"word{i}" for i in range(400))
    cut = truncate_tokens(text, 60, MODEL, keep="middle", head_share=0.75)
    head, tail = cut.split(" … ")
    assert count_tokens(cut, MODEL) <= 60
    assert count_tokens(head, MODEL) > 2 * count_tokens(tail, MODEL)
    assert head.startswith("word0 word1") and tail.endswith("word399")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_tokens"):
        truncate_tokens("text", -1, MODEL)
    with pytest.raises(ValueError, match="keep"):
        truncate_tokens("text", 3, MODEL, keep="start")
    with pytest.raises(ValueError, match="marker"):
        truncate_tokens("a long text " * 20, 1, MODEL, keep="middle", marker=" [... cut ...] ")
