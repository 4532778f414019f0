"""Chunking: token limits and overlap for any text, Markdown sections with code kept whole,
sentence windows, semantic breaks between topics, small-to-big parents."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_utils.context.chunking import (
    fixed_token_chunks,
    markdown_sections,
    section_chunks,
    semantic_chunks,
    sentence_windows,
    small_to_big,
)
from course_utils.tokens import count_tokens

MODEL = "cl100k_base"
DOC = """# Install

Run the installer. It needs Python 3.11.

```python
# this is a comment, not a heading
print("hello")
```

## Configure

Set the window size. Then set the reserve.

More text about configuration, which goes on for a while and says little.

# Use

Ask a question and read the answer.
"""


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab cd.é日本🎉\n")), max_size=150),
       size=st.integers(2, 20), overlap_share=st.floats(0, 0.9))
def test_fixed_chunks_respect_the_size_cover_the_text_and_overlap(text, size, overlap_share):
    overlap = min(int(size * overlap_share), size - 1)
    chunks = fixed_token_chunks(text, size, overlap, MODEL)
    if not text:
        assert chunks == []
        return
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for chunk in chunks:
        assert chunk.text == text[chunk.start:chunk.end] and "\ufffd" not in chunk.text
        assert count_tokens(chunk.text, MODEL) <= size or len(chunk.text) == 1
    for before, after in zip(chunks, chunks[1:], strict=False):  # neighbours
        assert before.start < after.start <= before.end  # no gap, always progress
        if overlap == 0:
            assert after.start == before.end


def test_overlap_repeats_the_end_of_the_previous_chunk():
    text = " ".join(f"w{i}" for i in range(200))
    chunks = fixed_token_chunks(text, 30, 10, MODEL)
    shared = text[chunks[1].start:chunks[0].end]
    assert 5 <= count_tokens(shared, MODEL) <= 10
    with pytest.raises(ValueError, match="overlap"):
        fixed_token_chunks(text, 10, 10, MODEL)


def test_sections_follow_headings_and_ignore_hashes_inside_code():
    sections = markdown_sections(DOC)
    assert [s.heading for s in sections] == ["Install", "Configure", "Use"]
    assert "# this is a comment" in sections[0].text
    assert "".join(s.text for s in sections) == DOC


def test_a_long_section_splits_at_paragraphs_and_never_inside_code():
    chunks = section_chunks(DOC, max_tokens=25, model=MODEL)
    code = [c for c in chunks if "```python" in c.text]
    assert len(code) == 1 and code[0].text.count("```") == 2  # the fence opens and closes in one chunk
    assert all(c.text == DOC[c.start:c.end] for c in chunks)
    assert len(chunks) > len(markdown_sections(DOC))


def test_sentence_windows_return_the_neighbours():
    text = "One is first. Two follows! Three asks? Four ends."
    windows = sentence_windows(text, neighbours=1)
    assert [w.text.strip() for w in windows] == ["One is first.", "Two follows!", "Three asks?", "Four ends."]
    assert windows[1].context.strip() == "One is first. Two follows! Three asks?"
    assert windows[0].context.strip() == "One is first. Two follows!"


def test_semantic_chunks_break_where_the_topic_changes():
    from course_utils.models import load_embedder

    cooking = ("Chop the onions finely. Fry them in butter until golden. Add the garlic and stir. "
               "Season the sauce with salt and pepper. ")
    space = ("The rocket left the launch pad at dawn. Its second stage reached orbit. "
             "The satellite deployed its solar panels.")
    chunks = semantic_chunks(cooking + space, load_embedder(), percentile=80)
    assert len(chunks) >= 2
    assert any(c.text.rstrip().endswith("salt and pepper.") for c in chunks)  # a break between the topics


def test_small_children_point_to_their_section():
    children, parents = small_to_big(DOC, child_tokens=8, model=MODEL)
    assert len(children) > len(parents)
    for child in children:
        parent = parents[child.parent]
        assert parent.start <= child.start and child.end <= parent.end and child.context == parent.text
