"""Near-duplicate removal, quality heuristics and contamination checks on texts with known answers."""

import random

import pytest

from course_utils.scaling.data_quality import (
    contamination,
    deduplicate,
    jaccard,
    minhash,
    near_duplicates,
    quality_failures,
    quality_signals,
    shingles,
)

WORDS = ("model data token train loss layer scale compute budget size law curve fit point value head "
         "attention memory cache batch step rate paper table figure result error noise sample").split()


def _doc(seed: int, length: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(length))


def _edit(text: str, changes: int, seed: int) -> str:
    rng = random.Random(seed)
    tokens = text.split()
    for _ in range(changes):
        tokens[rng.randrange(len(tokens))] = "edited"
    return " ".join(tokens)


def test_minhash_estimates_the_exact_jaccard():
    base = _doc(0, 400)
    for changes in (2, 10, 30, 80):
        a, b = shingles(base), shingles(_edit(base, changes, changes))
        exact = jaccard(a, b)
        estimate = minhash(a, num_perm=256).jaccard(minhash(b, num_perm=256))
        assert abs(estimate - exact) < 0.1, (changes, exact, estimate)  # sd of the estimate is about 0.03


def test_near_duplicates_are_found_and_unrelated_documents_are_not():
    docs = [_doc(i) for i in range(20)]
    docs += [_edit(docs[3], 1, 1), _edit(docs[7], 1, 2), _edit(docs[3], 2, 3)]  # 20, 21, 22
    found = near_duplicates(docs, threshold=0.7)  # the edited pairs have Jaccard 0.85 to 0.98
    assert {(p.first, p.second) for p in found} == {(3, 20), (7, 21), (3, 22), (20, 22)}
    assert all(p.jaccard >= 0.7 and abs(p.estimated_jaccard - p.jaccard) < 0.15 for p in found)
    assert deduplicate(docs, threshold=0.7) == list(range(20))


def test_quality_rules_drop_boilerplate_and_keep_prose():
    prose = ("The model was trained on a mix of books and web pages, and the authors report that the loss "
             "kept falling with more data. They also note that the largest runs were stopped early because "
             "of a hardware fault, which is why the last point of the curve is missing from the figure. "
             "With that caveat, the trend is smooth and matches the earlier paper closely enough to be useful.")
    assert quality_failures(prose) == []
    menu = "\n".join(["Home", "About", "Contact", "Login"] * 20)
    assert {"duplicate_line_fraction", "stop_words"} <= set(quality_failures(menu))
    spam = "buy cheap buy cheap " * 40
    assert "top_bigram_char_fraction" in quality_failures(spam)
    symbols = "# ## ### " * 30 + prose
    assert "symbol_to_word_ratio" in quality_failures(symbols)
    assert quality_signals("")["words"] == 0 and quality_failures("") == ["words", "mean_word_length",
                                                                         "alphabetic_word_fraction", "stop_words"]


def test_contamination_flags_leaked_held_out_documents():
    train = [_doc(i, 300) for i in range(10)]
    held_out = [_doc(100, 300), " ".join(train[4].split()[:120]), _doc(101, 300)]
    report = contamination(train, held_out, n=13)
    assert report.flagged == [1]
    assert report.overlap[1] == 1.0 and report.overlap[0] < 0.05


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(["a b c"], threshold=0)
    with pytest.raises(ValueError, match="n must be"):
        shingles("a b c", n=0)
