"""Continued pre-training's data: docstrings from source, packed chunks labelled on every token, fertility."""

import pytest
import torch

from course_utils.finetune.domain import (
    MIN_DOCSTRING_CHARS,
    domain_texts,
    fertility,
    packed_examples,
    source_docstrings,
)

LONG = "x" * MIN_DOCSTRING_CHARS
SOURCE = f'''"""Module. {LONG}"""

def short():
    """Too short."""

class Thing:
    """Class. {LONG}"""

    def method(self):
        """Method. {LONG}"""
'''


def test_docstrings_come_in_source_order_and_short_ones_are_skipped():
    found = source_docstrings(SOURCE)
    assert [d.split(".")[0] for d in found] == ["Module", "Class", "Method"]
    assert source_docstrings("def broken(:\n") == []


def test_the_domain_split_is_by_file_and_both_sides_have_text():
    train, held_out = domain_texts(held_out=False), domain_texts(held_out=True)
    assert len(train) > 20 * len(held_out) > 0
    assert len(set(train) & set(held_out)) < 5  # different files; at most a few copied docstrings repeat
    assert all(len(t) >= MIN_DOCSTRING_CHARS for t in held_out)


def test_packed_chunks_are_full_labelled_everywhere_and_separated_by_end_of_text(smollm2):
    tokenizer = smollm2[1]
    texts = ["The first text is short.", "A second one follows it, a little longer than the first one was."] * 20
    chunks = packed_examples(tokenizer, texts, seq_len=16)
    ids = sum((tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts), [])
    assert len(chunks) == len(ids) // 16
    assert torch.equal(torch.cat([c.input_ids for c in chunks]), torch.tensor(ids[:16 * len(chunks)]))
    assert all(torch.equal(c.labels, c.input_ids) and c.n_labelled == 16 for c in chunks)
    assert len(packed_examples(tokenizer, texts, seq_len=16, max_examples=3)) == 3
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        packed_examples(tokenizer, texts, seq_len=1)


def test_fertility_counts_tokens_per_word(smollm2):
    tokenizer = smollm2[1]
    texts = ["the cat sat", "os.path.join(a, b) returns str"]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert fertility(tokenizer, texts) == tokens / 7
    assert fertility(tokenizer, ["os.path.join(a, b)"]) > fertility(tokenizer, ["the cat sat on the mat"])
    with pytest.raises(ValueError, match="no words"):
        fertility(tokenizer, ["   "])
