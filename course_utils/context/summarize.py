"""Summarising a document longer than the window, three ways, every call inside a token budget.

The document is cut into chunks of ``chunk_tokens`` (:func:`~course_utils.context.chunking.fixed_token_chunks`).

* **map-reduce**: summarise every chunk independently (one batch), then summarise the summaries
  together. Parallel and cheap in wall time; the final call sees only summaries.
* **refine**: summarise the first chunk, then repeatedly rewrite the running summary with the
  next chunk. Sequential; later text can correct earlier summaries, but the first chunks' detail
  fades through many rewrites.
* **hierarchical**: like map-reduce, but the summaries are grouped into batches that fit the
  budget and summarised level by level until one remains: it works for documents whose chunk
  summaries would not fit one final prompt.

The model is a function ``complete(prompts) -> replies`` over chat prompts, so the same code runs
the embedded model (:func:`model_completer`), an API client, or a test stub. Every prompt is
checked against ``window - max_new_tokens`` before it is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from course_utils.context.chunking import fixed_token_chunks, sentence_windows
from course_utils.context.retrieval import unit_embeddings
from course_utils.tokens import count_chat_tokens, count_tokens

__all__ = ["METHODS", "SummaryRun", "model_completer", "section_coverage", "summarize"]

METHODS = ("map_reduce", "refine", "hierarchical")
Messages = list[dict[str, str]]
Completer = Callable[[list[Messages]], list[str]]


@dataclass(frozen=True)
class SummaryRun:
    summary: str
    calls: int
    prompt_tokens: int
    output_tokens: int
    seconds: float


def model_completer(model, tokenizer, max_new_tokens: int = 128) -> Completer:
    """``complete(prompts)`` by greedy generation with a Hugging Face model, in one batch."""
    from course_utils.chat import generate_batch

    def complete(prompts: list[Messages]) -> list[str]:
        return [c[0].text.strip() for c in generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens)]

    return complete


def _ask(instruction: str, text: str) -> Messages:
    return [{"role": "user", "content": f"{instruction}\n\n{text}"}]


def summarize(text: str, complete: Completer, model: Any, method: str = "map_reduce", window: int = 2048,
              max_new_tokens: int = 128, chunk_tokens: int | None = None, progress: bool = True) -> SummaryRun:
    """Summarise ``text`` by ``method``; ``model`` (a name or tokenizer) counts the tokens of each prompt."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    limit = window - max_new_tokens
    chunk_tokens = chunk_tokens or limit // 2
    if chunk_tokens < 1 or chunk_tokens + 2 * max_new_tokens + 64 > window:
        raise ValueError(f"chunks of {chunk_tokens} tokens plus a running summary of {max_new_tokens} and the "
                         f"instructions do not fit a {window}-token window; use smaller chunks or a larger window")
    calls = prompt_tokens = output_tokens = 0
    start = time.perf_counter()

    def run(prompts: list[Messages]) -> list[str]:
        nonlocal calls, prompt_tokens, output_tokens
        sizes = [count_chat_tokens(p, model) for p in prompts]
        if max(sizes) > limit:
            raise ValueError(f"a prompt of {max(sizes)} tokens exceeds the {limit} left after {max_new_tokens} "
                             "for the reply")
        replies = complete(prompts)
        calls += len(prompts)
        prompt_tokens += sum(sizes)
        output_tokens += sum(count_tokens(r, model) for r in replies)
        return replies

    chunks = [c.text for c in fixed_token_chunks(text, chunk_tokens, 0, model)]
    bar = tqdm(total=len(chunks), desc=f"summarising ({method})", disable=not progress)
    if method == "refine":
        summary = run([_ask("Summarise this text in a few sentences.", chunks[0])])[0]
        bar.update(1)
        for chunk in chunks[1:]:
            summary = run([_ask("Here is a summary so far and the next part of the text. Rewrite the summary, in a "
                                "few sentences, so that it covers both.",
                                f"Summary so far:\n{summary}\n\nNext part:\n{chunk}")])[0]
            bar.update(1)
    else:
        summaries = run([_ask("Summarise this part of a longer text in a few sentences.", c) for c in chunks])
        bar.update(len(chunks))
        if method == "map_reduce":
            summary = run([_ask("Combine these summaries of consecutive parts into one summary.",
                                "\n\n".join(summaries))])[0]
        else:
            while len(summaries) > 1:
                summaries = run([_ask("Combine these summaries of consecutive parts into one summary.",
                                      "\n\n".join(group)) for group in _groups(summaries, limit, model)])
            summary = summaries[0]
    bar.close()
    return SummaryRun(summary, calls, prompt_tokens, output_tokens, time.perf_counter() - start)


def _groups(summaries: Sequence[str], limit: int, model: Any) -> list[list[str]]:
    """Consecutive summaries packed into groups whose combining prompt fits ``limit`` (at least two per group)."""
    groups: list[list[str]] = [[]]
    for summary in summaries:
        candidate = groups[-1] + [summary]
        prompt = _ask("Combine these summaries of consecutive parts into one summary.", "\n\n".join(candidate))
        if len(groups[-1]) >= 2 and count_chat_tokens(prompt, model) > limit:
            groups.append([summary])
        else:
            groups[-1] = candidate
    return groups


def section_coverage(summary: str, sections: Sequence[str], embedder) -> list[float]:
    """For each section of the document, the cosine similarity of its embedding with the closest
    sentence of ``summary``: a rough, reference-free check of which parts a summary touches
    (0 for every section when the summary is empty)."""
    sentences = [s.text for s in sentence_windows(summary, 0)]
    if not sentences:
        return [0.0] * len(sections)
    similarity = unit_embeddings(embedder, sections) @ unit_embeddings(embedder, sentences).T  # (sections, sentences)
    return [float(row.max()) for row in similarity]
