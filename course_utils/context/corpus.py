"""The course's own chapters as a retrieval corpus, and the question set written over them.

Each question in ``course_utils/data/chapter_questions.jsonl`` names its chapter and an
*evidence* phrase copied from that chapter's text. A passage is relevant to a question when it
contains the evidence (compared with white space collapsed), whatever the chunking that made the
passage: so one question set scores every chunking strategy, and a fixed-size chunk boundary that
cuts through the evidence counts as the miss it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from course_utils.context import chunking
from course_utils.context.chunking import TextChunk
from course_utils.context.retrieval import (
    BM25,
    DenseIndex,
    cached_embedder,
    mean_reciprocal_rank,
    reciprocal_rank_fusion,
    rerank,
)
from course_utils.tasks import load_task
from course_utils.tokens import count_tokens

__all__ = ["CHAPTERS_DIR", "CHUNKINGS", "Question", "RetrievalScore", "chunk_chapters",
           "compare_retrieval", "rank_questions", "rerank_top", "chapter_text", "contains_evidence",
           "course_text", "gold_passages", "load_questions", "returned_passages", "score_rankings"]

CHAPTERS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class Question:
    question: str
    chapter: str  # notebook name without .ipynb, e.g. "04_serving"
    evidence: str  # a phrase of that chapter's text that answers the question


def chapter_text(chapter: str, folder: str | Path = CHAPTERS_DIR) -> str:
    """The prose of one chapter notebook: its Markdown cells, joined by blank lines (code cells left out)."""
    path = Path(folder) / f"{chapter}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"chapter notebook {path} not found; run from a clone of the course, or pass the "
                                "folder that holds the notebooks")
    notebook = nbformat.read(path, as_version=4)
    return "\n\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def course_text(folder: str | Path = CHAPTERS_DIR) -> str:
    """The prose of every chapter the question set covers, in chapter order: a long plain-English text."""
    chapters = sorted({q.chapter for q in load_questions()})
    return "\n\n".join(chapter_text(chapter, folder) for chapter in chapters)


def load_questions() -> list[Question]:
    """The question set, ``course_utils/data/chapter_questions.jsonl`` (see the data README)."""
    return [Question(**row) for row in load_task("chapter_questions")]


def _collapse(text: str) -> str:
    return " ".join(text.split())


def contains_evidence(passage: str, evidence: str) -> bool:
    """Whether ``passage`` contains ``evidence``, line breaks and runs of spaces counting as one space."""
    return _collapse(evidence) in _collapse(passage)


def gold_passages(passages: Sequence[str], evidence: str) -> set[int]:
    """Indices of the passages that contain ``evidence``."""
    return {i for i, passage in enumerate(passages) if contains_evidence(passage, evidence)}


@dataclass(frozen=True)
class RetrievalScore:
    recall_at_k: float  # share of questions whose evidence is in one of the first k passages returned
    mrr: float  # mean of 1 / rank of the first returned passage holding the evidence (0 if none does)
    tokens_at_k: float  # mean tokens of the first k passages returned: what they would cost in a prompt
    hits: tuple[bool, ...] = ()  # per question, whether its evidence is in the first k (for paired comparisons)


def _handed_over(chunk: TextChunk) -> str:
    """What the model receives for a matched chunk: its window or parent section if it has one."""
    return chunk.context or chunk.text


def returned_passages(order: Sequence[int], chunks: Sequence[TextChunk]) -> list[str]:
    """What a ranking of ``chunks`` hands to the model, best first: each chunk's ``context`` (its
    sentence window or parent section) where it has one, else its text; a passage returned twice
    (two children of one section) is kept at its first place only."""
    return list(dict.fromkeys(_handed_over(chunks[i]) for i in order))


def score_rankings(rankings: Sequence[Sequence[int]], chunks: Sequence[TextChunk], questions: Sequence[Question],
                   k: int = 5, model: Any = "cl100k_base") -> RetrievalScore:
    """Recall@k and MRR of one ranking of ``chunks`` per question, relevance judged by the evidence."""
    if len(rankings) != len(questions) or not questions:
        raise ValueError(f"need one ranking per question, got {len(rankings)} for {len(questions)}")
    returned = [returned_passages(order, chunks) for order in rankings]
    golds = [gold_passages(passages, q.evidence) for passages, q in zip(returned, questions, strict=True)]
    hits = tuple(any(i < k for i in gold) for gold in golds)
    mrr = mean_reciprocal_rank([range(len(passages)) for passages in returned], golds)
    tokens = sum(count_tokens("".join(passages[:k]), model) for passages in returned) / len(questions)
    return RetrievalScore(sum(hits) / len(questions), mrr, tokens, hits)


CHUNKINGS = ("fixed 128", "fixed 128, overlap 32", "sections", "sentence windows", "semantic", "small-to-big")


def chunk_chapters(texts: Sequence[str], strategy: str, embedder=None, model: Any = "cl100k_base") -> list[TextChunk]:
    """Every text cut by one of :data:`CHUNKINGS` (token sizes in ``model``'s tokens), chunks in text order."""
    cut = {"fixed 128": lambda t: chunking.fixed_token_chunks(t, 128, 0, model),
           "fixed 128, overlap 32": lambda t: chunking.fixed_token_chunks(t, 128, 32, model),
           "sections": lambda t: chunking.section_chunks(t, 384, model),
           "sentence windows": lambda t: chunking.sentence_windows(t, 1),
           "semantic": lambda t: chunking.semantic_chunks(t, embedder, 80.0),
           "small-to-big": lambda t: chunking.small_to_big(t, 64, model)[0]}
    if strategy not in cut:
        raise ValueError(f"unknown chunking {strategy!r}; choose from {', '.join(CHUNKINGS)}")
    if strategy == "semantic" and embedder is None:
        raise ValueError("semantic chunking needs an embedder (course_utils.models.load_embedder())")
    return [chunk for text in texts for chunk in cut[strategy](text)]


def rank_questions(chunks: Sequence[TextChunk], questions: Sequence[Question], embedder) -> dict[str, list[list[int]]]:
    """{"BM25", "dense", "hybrid"}: for each, one ranking of ``chunks`` (by their text) per question;
    hybrid fuses the other two with reciprocal rank fusion (k = 60)."""
    texts = [c.text for c in chunks]
    bm25, dense = BM25(texts), DenseIndex(texts, embedder)
    sparse = [bm25.rank(q.question) for q in questions]
    semantic = [dense.rank(q.question) for q in questions]
    return {"BM25": sparse, "dense": semantic,
            "hybrid": [reciprocal_rank_fusion([a, b]) for a, b in zip(sparse, semantic, strict=True)]}


def rerank_top(questions: Sequence[Question], chunks: Sequence[TextChunk], rankings: Sequence[Sequence[int]],
               model, tokenizer, top: int = 10, progress: bool = True) -> list[list[int]]:
    """Each ranking with its first ``top`` chunks reordered by the language model's relevance
    judgement (:func:`~course_utils.context.retrieval.rerank` on the passages they return)."""
    from tqdm.auto import tqdm

    passages = [_handed_over(c) for c in chunks]
    pairs = zip(questions, rankings, strict=True)
    return [rerank(q.question, passages, list(order[:top]), model, tokenizer) + list(order[top:])
            for q, order in tqdm(pairs, total=len(questions), desc="re-ranking", disable=not progress)]


def compare_retrieval(questions: Sequence[Question], embedder, strategies: Sequence[str] = CHUNKINGS, k: int = 5,
                      folder: str | Path = CHAPTERS_DIR, progress: bool = True) -> list[dict[str, Any]]:
    """Recall@k, MRR and tokens@k of BM25, dense and hybrid retrieval under each chunking strategy,
    over the chapters the questions come from: one row per (chunking, retriever), with each question's
    hit or miss in the top k (``hits@k``, 1 or 0 in question order) for paired comparisons."""
    from tqdm.auto import tqdm

    texts = [chapter_text(chapter, folder) for chapter in sorted({q.chapter for q in questions})]
    embedder = cached_embedder(embedder)  # sentences are shared by two strategies
    rows = []
    for strategy in tqdm(strategies, desc="chunkings", disable=not progress):
        chunks = chunk_chapters(texts, strategy, embedder)
        for retriever, rankings in rank_questions(chunks, questions, embedder).items():
            score = score_rankings(rankings, chunks, questions, k)
            rows.append({"chunking": strategy, "retriever": retriever, "chunks": len(chunks),
                         f"recall@{k}": score.recall_at_k, "MRR": score.mrr, f"tokens@{k}": score.tokens_at_k,
                         f"hits@{k}": [int(h) for h in score.hits]})
    return rows
