"""The chapter question set: every evidence phrase is in its chapter once, and relevance follows it."""

from collections import Counter

import pytest
from context_helpers import WordHashEmbedder

from course_utils.context.chunking import fixed_token_chunks
from course_utils.context.corpus import chapter_text, contains_evidence, gold_passages, load_questions


def test_every_evidence_phrase_occurs_exactly_once_in_its_chapter():
    questions = load_questions()
    assert len(questions) == 35 and len({q.question for q in questions}) == 35
    assert set(Counter(q.chapter for q in questions).values()) == {5}
    texts = {}
    for q in questions:
        text = texts.setdefault(q.chapter, " ".join(chapter_text(q.chapter).split()))
        assert text.count(" ".join(q.evidence.split())) == 1, (q.chapter, q.evidence)


def test_relevance_ignores_line_breaks_but_not_a_cut_through_the_evidence():
    assert contains_evidence("the cache\n  of a single   conversation", "cache of a single conversation")
    assert not contains_evidence("the cache of a", "cache of a single conversation")
    text = chapter_text("01_transformer_architecture")
    evidence = "SmolLM2 was trained with an 8,192-token context"
    chunks = [c.text for c in fixed_token_chunks(text, 32, 0, "cl100k_base")]
    overlapping = [c.text for c in fixed_token_chunks(text, 32, 16, "cl100k_base")]
    assert len(gold_passages(overlapping, evidence)) >= 1  # 16 tokens of overlap hold this 11-token phrase
    assert len(gold_passages(chunks, evidence)) <= 1


def test_a_missing_chapter_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        chapter_text("99_nothing", tmp_path)


def test_scores_follow_the_evidence_through_contexts_and_duplicates():
    from course_utils.context.chunking import TextChunk
    from course_utils.context.corpus import Question, returned_passages, score_rankings

    parent = "Section A. The answer is forty-two. More text."
    chunks = [TextChunk("The answer is", 10, 23, context=parent, parent=0),
              TextChunk("forty-two. More text.", 24, 45, context=parent, parent=0),
              TextChunk("Unrelated words here.", 0, 21)]
    assert returned_passages([1, 0, 2], chunks) == [parent, "Unrelated words here."]  # one parent, once
    questions = [Question("q1", "x", "answer is forty-two"), Question("q2", "x", "not anywhere")]
    score = score_rankings([[2, 0], [0, 2]], chunks, questions, k=1)
    assert score.recall_at_k == 0.0 and score.mrr == pytest.approx(0.25)  # q1 at rank 2; q2 never
    at_2 = score_rankings([[2, 0], [0, 2]], chunks, questions, k=2)
    assert at_2.recall_at_k == 0.5 and at_2.hits == (True, False) and score.hits == (False, False)
    with pytest.raises(ValueError, match="one ranking per question"):
        score_rankings([[0]], chunks, questions)


def _chapter(folder, name, paragraphs):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(p) for p in paragraphs]
    nbformat.write(nb, folder / f"{name}.ipynb")


def test_compare_retrieval_scores_every_chunking_and_retriever(tmp_path):
    from course_utils.context.corpus import CHUNKINGS, Question, chunk_chapters, compare_retrieval

    filler = " ".join(f"Sentence {i} says nothing in particular about anything." for i in range(40))
    _chapter(tmp_path, "01_a", ["# One", filler, "## Lockers\n\nThe blue locker opens with code 7342.", filler])
    _chapter(tmp_path, "02_b", ["# Two", filler, "## Tea\n\nGreen tea steeps for two minutes at 80 degrees.", filler])
    questions = [Question("Which code opens the blue locker?", "01_a", "The blue locker opens with code 7342."),
                 Question("How long does green tea steep?", "02_b", "Green tea steeps for two minutes")]
    rows = compare_retrieval(questions, WordHashEmbedder(), folder=tmp_path, progress=False)
    assert [(r["chunking"], r["retriever"]) for r in rows] == [
        (c, r) for c in CHUNKINGS for r in ("BM25", "dense", "hybrid")]
    by = {(r["chunking"], r["retriever"]): r for r in rows}
    assert by["sections", "BM25"]["recall@5"] == 1.0 and by["sections", "BM25"]["MRR"] == 1.0
    assert all(0 <= r["recall@5"] <= 1 and r["recall@5"] / 5 <= r["MRR"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="unknown chunking"):
        chunk_chapters(["text"], "paragraphs")
    with pytest.raises(ValueError, match="needs an embedder"):
        chunk_chapters(["text"], "semantic")
