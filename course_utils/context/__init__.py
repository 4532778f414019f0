"""Context management: exact token budgets, truncation by tokens, chunking and retrieval."""

from course_utils.context.budget import BuiltContext, Chunk, ContextBudget, ContextOverflowError, build_context
from course_utils.context.retrieval import (
    BM25,
    DenseIndex,
    mean_reciprocal_rank,
    recall_at_k,
    reciprocal_rank_fusion,
)
from course_utils.context.truncation import truncate_tokens

__all__ = [
    "BM25", "BuiltContext", "Chunk", "ContextBudget", "ContextOverflowError", "DenseIndex", "build_context",
    "mean_reciprocal_rank", "recall_at_k", "reciprocal_rank_fusion", "truncate_tokens",
]
