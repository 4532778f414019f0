"""Incremental detokenisation against decoding the whole token list each time."""

import random

import pytest

from course_utils.serving.detokenizer import IncrementalText


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return smollm2[1]


def _sequences(tokenizer) -> list[list[int]]:
    texts = ["Hello, world! Ça va? 東京タワーは高い。 🎉🎉 naïve café — ∑ x² ≤ 1", "def f(x):\n    return x ** 2\n"]
    rng = random.Random(0)
    vocab = tokenizer.vocab_size
    out = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    out += [[rng.randrange(vocab) for _ in range(rng.randint(1, 60))] for _ in range(40)]  # any bytes at all
    out.append(out[0][:5] + [tokenizer.eos_token_id] + out[0][5:])  # a special token is skipped
    return out


def test_committed_text_is_always_a_prefix_of_the_full_decode_and_equals_it_at_the_end(tokenizer):
    for ids in _sequences(tokenizer):
        text, grown = IncrementalText(), []
        for n in range(1, len(ids) + 1):
            grown.append(ids[n - 1])
            piece = text.update(tokenizer, grown)
            assert not piece.endswith("\ufffd") or piece == ""  # never half a character
            full = tokenizer.decode(grown, skip_special_tokens=True)
            assert full.startswith(text.text), (ids[:n], text.text, full)
        text.finish(tokenizer, grown)
        assert text.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_character_split_over_tokens_is_held_back_until_complete(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # byte-level: the emoji's four bytes span several tokens
    text = IncrementalText()
    pieces = [text.update(tokenizer, ids[:n]) for n in range(1, len(ids) + 1)]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "🎉"


def test_each_step_decodes_a_window_not_the_whole_reply(tokenizer):
    class Counting:
        def __init__(self):
            self.decoded = 0

        def decode(self, ids, skip_special_tokens):
            self.decoded += len(ids)
            return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    counting, text = Counting(), IncrementalText()
    ids = tokenizer("word " * 400, add_special_tokens=False)["input_ids"]
    for n in range(1, len(ids) + 1):
        text.update(counting, ids[:n])
    assert text.text == "word " * 400
    assert counting.decoded < 4 * len(ids)  # a full decode per step would be len(ids)**2 / 2
