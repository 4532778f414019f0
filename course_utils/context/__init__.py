"""Context management: exact token budgets and truncation by tokens."""

from course_utils.context.budget import BuiltContext, Chunk, ContextBudget, ContextOverflowError, build_context
from course_utils.context.truncation import truncate_tokens

__all__ = ["BuiltContext", "Chunk", "ContextBudget", "ContextOverflowError", "build_context", "truncate_tokens"]
