"""Retrieval: our BM25 against bm25s, dense ranking with the embedded MiniLM, RRF and the metrics by hand."""

import bm25s
import numpy as np
import pytest

from course_utils.context.retrieval import (
    BM25,
    DenseIndex,
    mean_reciprocal_rank,
    recall_at_k,
    reciprocal_rank_fusion,
    words,
)
from course_utils.tasks import load_task

PASSAGES = [r["text"] for r in load_task("passages")] + [r["question"] for r in load_task("arithmetic")[:40]]


@pytest.mark.parametrize("query", ["how do bees find flowers", "the baker sells loaves of bread",
                                   "map projections distort the size of countries", "lithium battery cells sleep"])
def test_our_bm25_scores_equal_bm25s(query):
    ours = BM25(PASSAGES)
    reference = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    reference.index([words(p) for p in PASSAGES], show_progress=False)
    assert np.allclose(ours.scores(query), reference.get_scores(words(query)), rtol=1e-5, atol=1e-6)
    assert ours.rank(query)[0] == int(np.argmax(reference.get_scores(words(query))))


def test_bm25_ranks_only_passages_that_share_a_word():
    index = BM25(["red apples and green pears", "a blue car", "apples, apples, apples"])
    assert index.rank("apples") == [2, 0]  # more occurrences in a shorter passage first
    assert index.rank("zebra") == []
    with pytest.raises(ValueError, match="at least one passage"):
        BM25([])


def test_reciprocal_rank_fusion_by_hand():
    # item 7: ranks 1 and 3 -> 1/61 + 1/63; item 3: ranks 2 and 1 -> 1/62 + 1/61; item 9: rank 3 only
    fused = reciprocal_rank_fusion([[7, 3, 9], [3, 5, 7]])
    assert fused[:2] == [3, 7] and set(fused) == {3, 5, 7, 9}
    assert reciprocal_rank_fusion([[1, 2]], k=0) == [1, 2]
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([[1]], k=-1)


def test_recall_and_mrr_by_hand():
    assert recall_at_k([4, 2, 9, 1], {2, 1}, k=2) == 0.5
    assert recall_at_k([4, 2, 9, 1], {2, 1}, k=4) == 1.0
    assert mean_reciprocal_rank([[4, 2, 9], [1, 5], [8]], [{2}, {1}, {3}]) == pytest.approx((1 / 2 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="gold"):
        recall_at_k([1], set(), 1)


def test_dense_retrieval_finds_a_paraphrase_that_shares_no_word():
    from course_utils.models import load_embedder

    passages = ["The cat slept on the warm windowsill all afternoon.", "Interest rates rose again this quarter.",
                "Our team won the football match in extra time."]
    index = DenseIndex(passages, load_embedder())
    query = "borrowing money became more expensive"
    assert BM25(passages).rank(query) == []  # no word in common
    assert index.rank(query)[0] == 1
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0)


def test_reranking_orders_candidates_by_the_models_yes_minus_no(smollm2):
    # The 135M model judges relevance barely better than chance (chapter 7 measures it); this checks
    # the mechanism: the order is that of log P(Yes) - log P(No), each prompt scored on its own.
    from course_utils.context.retrieval import RERANK_PROMPT, rerank
    from course_utils.evaluation import option_logprobs

    model, tokenizer = smollm2
    passages = ["Knead the dough for ten minutes, then let it rise in a warm place.",
                "The Nile flows north through Cairo before it reaches the Mediterranean Sea.",
                "A good running shoe should fit snugly at the heel."]
    question = "Which river flows through Cairo?"
    candidates = [0, 2, 1]
    scores = {}
    for i in candidates:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": RERANK_PROMPT.format(question=question, passage=passages[i])}],
            tokenize=False, add_generation_prompt=True)
        yes, no = option_logprobs(model, tokenizer, prompt, ["Yes", "No"])
        scores[i] = yes - no
    assert rerank(question, passages, candidates, model, tokenizer) == sorted(candidates, key=lambda i: -scores[i])
    assert rerank("anything", passages, [], model, tokenizer) == []
