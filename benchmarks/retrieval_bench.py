"""Retrieval over the course's own chapters: chunking strategies x BM25 / dense / hybrid, plus re-ranking.

All 35 questions of course_utils/data/chapter_questions.jsonl over chapters 00-06: recall@5, MRR
and the tokens the top 5 passages would cost, for every chunking in context.corpus.CHUNKINGS and
every retriever; then the hybrid top 10 over sentence windows re-ranked by SmolLM2. Notebook 07
runs three chapters in QUICK mode and shows this file's full table. A few minutes on 2 CPU cores.

Writes benchmarks/results/retrieval.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from course_utils.defaults import DEFAULT_MODEL

RESULTS = Path(__file__).parent / "results" / "retrieval.json"
RERANK_CHUNKING, RERANK_TOP = "sentence windows", 10


def main() -> None:
    from course_utils.context import corpus
    from course_utils.environment import record_benchmark
    from course_utils.models import load_embedder, load_model

    questions, embedder = corpus.load_questions(), load_embedder()
    start = time.perf_counter()
    rows = corpus.compare_retrieval(questions, embedder)
    retrieval_s = time.perf_counter() - start
    model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    texts = [corpus.chapter_text(c) for c in sorted({q.chapter for q in questions})]
    chunks = corpus.chunk_chapters(texts, RERANK_CHUNKING, embedder)
    hybrid = corpus.rank_questions(chunks, questions, embedder)["hybrid"]
    start = time.perf_counter()
    reranked = corpus.rerank_top(questions, chunks, hybrid, model, tokenizer, RERANK_TOP)
    rerank_s = time.perf_counter() - start
    for name, rankings in (("hybrid (same run)", hybrid), (f"hybrid, top {RERANK_TOP} re-ranked by SmolLM2", reranked)):
        score = corpus.score_rankings(rankings, chunks, questions)
        rows.append({"chunking": RERANK_CHUNKING, "retriever": name, "chunks": len(chunks),
                     "recall@5": score.recall_at_k, "MRR": score.mrr, "tokens@5": score.tokens_at_k})
    for row in rows:
        print(f"{row['chunking']:>22} {row['retriever']:>40}: recall@5 {row['recall@5']:.2f}  MRR {row['MRR']:.2f}")
    record_benchmark(RESULTS, "retrieval", questions=len(questions), embedder="all-MiniLM-L6-v2", rows=rows,
                     retrieval_seconds=retrieval_s, rerank_seconds=rerank_s)

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
