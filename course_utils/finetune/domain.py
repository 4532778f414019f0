"""Continued pre-training: plain next-token training on a domain's own text, before any instruction tuning.

The domain here is the documentation strings of Python's standard library: technical prose full
of identifiers, signatures and markup that general text rarely contains, and present offline on
every machine that runs the course (the interpreter ships it). Files are split into training
and held-out text by a hash of their path, as chapter 2's corpus is, so held-out docstrings come
from modules training never saw.

Every token of a training chunk is a label (no prompt to mask out), which is all that separates
this from instruction tuning: :func:`packed_examples` packs the texts into chunks of ``seq_len``
tokens as :class:`~course_utils.finetune.sft.SFTExample` with labels equal to the ids, so the
course's trainer runs it unchanged. :func:`fertility` measures the "vocabulary gap" a domain can
have: how many tokens the tokenizer spends per word there, against general prose.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Sequence

import torch

from course_utils.finetune.sft import SFTExample
from course_utils.scaling.training import stdlib_files

__all__ = ["MIN_DOCSTRING_CHARS", "domain_texts", "fertility", "packed_examples", "source_docstrings"]

MIN_DOCSTRING_CHARS = 200  # shorter docstrings ("Return x.") carry little of the domain's language


def source_docstrings(source: str | bytes) -> list[str]:
    """The module, class and function docstrings of one Python file of at least MIN_DOCSTRING_CHARS
    characters, in the order they appear; an empty list for a file that does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = [(getattr(n, "lineno", 0), ast.get_docstring(n)) for n in nodes]
    return [text for _, text in sorted(found, key=lambda pair: pair[0])
            if text and len(text) >= MIN_DOCSTRING_CHARS]


@functools.lru_cache(maxsize=2)
def domain_texts(held_out: bool) -> tuple[str, ...]:
    """The standard library's docstrings from the held-out files (about 5%) or from the training ones."""
    return tuple(text for f in stdlib_files() if f.held_out == held_out for text in source_docstrings(f.text))


def fertility(tokenizer, texts: Sequence[str]) -> float:
    """Tokens per whitespace-separated word over ``texts`` (special tokens not counted)."""
    words = sum(len(t.split()) for t in texts)
    if not words:
        raise ValueError("the texts have no words")
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / words


def packed_examples(tokenizer, texts: Sequence[str], seq_len: int, max_examples: int | None = None
                    ) -> list[SFTExample]:
    """``texts`` tokenized, joined with the end-of-text token between them and cut into chunks of
    ``seq_len`` tokens (the last partial chunk dropped), each labelled on every token."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    separator = [tokenizer.eos_token_id]
    ids: list[int] = []
    limit = None if max_examples is None else max_examples * seq_len
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + separator
        if limit is not None and len(ids) >= limit:
            break
    chunks = [torch.tensor(ids[i:i + seq_len]) for i in range(0, len(ids) - seq_len + 1, seq_len)]
    return [SFTExample(chunk, chunk.clone()) for chunk in chunks[:max_examples]]
