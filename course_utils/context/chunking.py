"""Cutting documents into retrievable pieces.

* :func:`fixed_token_chunks`: windows of at most ``size`` tokens, each starting ``overlap``
  tokens before the previous one ended, cut on character boundaries (as in truncation);
* :func:`markdown_sections` and :func:`section_chunks`: one piece per Markdown section (heading
  included), long sections split at blank lines, fenced code blocks never split;
* :func:`sentence_windows`: each sentence on its own for matching, with its neighbours as the
  text to return;
* :func:`semantic_chunks`: sentences grouped until the embedding of the next one turns away from
  the previous (a cosine distance above a percentile of all neighbouring distances);
* :func:`small_to_big`: small children for precise search, each pointing to the section it came
  from, which is what gets returned.

Every chunk records where it came from (character offsets into the document).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from course_utils.context.retrieval import unit_embeddings
from course_utils.context.truncation import longest_prefix, longest_suffix
from course_utils.tokens import count_tokens

__all__ = ["TextChunk", "fixed_token_chunks", "markdown_sections", "section_chunks", "semantic_chunks",
           "sentence_windows", "small_to_big"]


@dataclass(frozen=True)
class TextChunk:
    """``text`` = document[start:end]; ``context`` is what to return if it differs (a window, a parent)."""

    text: str
    start: int
    end: int
    context: str = ""
    parent: int | None = None  # index of the parent section (small-to-big)
    heading: str = ""


def fixed_token_chunks(text: str, size: int, overlap: int = 0, model: Any = "gpt-4o",
                       offset: int = 0) -> list[TextChunk]:
    """Chunks of at most ``size`` tokens; each begins ``overlap`` tokens before the previous one ends.

    ``offset`` is added to the recorded positions (for text cut from a larger document).
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")

    def count(piece: str) -> int:
        return count_tokens(piece, model)

    chunks: list[TextChunk] = []
    start = 0
    while start < len(text):
        length = max(longest_prefix(text[start:], size, count), 1)  # a lone character over the size still moves on
        end = start + length
        chunks.append(TextChunk(text[start:end], offset + start, offset + end))
        if end >= len(text):
            break
        back = longest_suffix(text[start:end], overlap, count) if overlap else 0
        start = max(end - back, start + 1)
    return chunks


_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _lines_with_offsets(text: str) -> list[tuple[int, str]]:
    out, position = [], 0
    for line in text.splitlines(keepends=True):
        out.append((position, line))
        position += len(line)
    return out


def markdown_sections(text: str) -> list[TextChunk]:
    """One chunk per section: a heading line and everything up to the next heading outside a code fence."""
    starts, headings, fenced = [0], [""], False
    for position, line in _lines_with_offsets(text):
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line.rstrip("\n"))
        if match:
            if position == 0:
                headings[0] = match.group(2).strip()
            else:
                starts.append(position)
                headings.append(match.group(2).strip())
    ends = starts[1:] + [len(text)]
    return [TextChunk(text[s:e], s, e, heading=h) for s, e, h in zip(starts, ends, headings, strict=True)
            if text[s:e].strip()]


def _blocks(section: TextChunk) -> list[TextChunk]:
    """A section split at blank lines outside code fences: paragraphs, and code blocks whole."""
    blocks, current, begin, fenced = [], "", section.start, False
    for position, line in _lines_with_offsets(section.text):
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and not line.strip() and current.strip():
            blocks.append(TextChunk(current, begin, section.start + position, heading=section.heading))
            current, begin = "", section.start + position
            continue
        current += line
    if current.strip():
        blocks.append(TextChunk(current, begin, section.end, heading=section.heading))
    return blocks


def _span(text: str, blocks: list[TextChunk], heading: str) -> TextChunk:
    """One chunk from the first to the last of consecutive ``blocks``."""
    return TextChunk(text[blocks[0].start:blocks[-1].end], blocks[0].start, blocks[-1].end, heading=heading)


def section_chunks(text: str, max_tokens: int, model: Any = "gpt-4o") -> list[TextChunk]:
    """Markdown sections; one over ``max_tokens`` is split into runs of whole paragraphs and code blocks.

    A single paragraph or code block longer than ``max_tokens`` stays whole: splitting code or a
    sentence mid-way makes a chunk nobody can use.
    """
    chunks = []
    for section in markdown_sections(text):
        if count_tokens(section.text, model) <= max_tokens:
            chunks.append(section)
            continue
        run: list[TextChunk] = []
        for block in _blocks(section):
            if run and count_tokens(text[run[0].start:block.end], model) > max_tokens:
                chunks.append(_span(text, run, section.heading))
                run = []
            run.append(block)
        if run:
            chunks.append(_span(text, run, section.heading))
    return chunks


_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)\s*")


def _sentences(text: str) -> list[TextChunk]:
    return [TextChunk(m.group(), m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]


def sentence_windows(text: str, neighbours: int = 1) -> list[TextChunk]:
    """Each sentence as a chunk, with ``context`` = it and ``neighbours`` sentences on each side."""
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    sentences = _sentences(text)
    out = []
    for i, s in enumerate(sentences):
        window = sentences[max(0, i - neighbours):i + neighbours + 1]
        out.append(TextChunk(s.text, s.start, s.end, context=text[window[0].start:window[-1].end]))
    return out


def semantic_chunks(text: str, embedder, percentile: float = 80.0) -> list[TextChunk]:
    """Sentences grouped; a new chunk starts where the cosine distance between neighbouring
    sentences' embeddings is above the ``percentile`` of all such distances."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    sentences = _sentences(text)
    if len(sentences) < 2:
        return [TextChunk(text, 0, len(text))] if text.strip() else []
    vectors = unit_embeddings(embedder, [s.text for s in sentences])
    distances = 1 - np.sum(vectors[1:] * vectors[:-1], axis=1)  # between sentence i and i + 1
    threshold = np.percentile(distances, percentile)
    groups, first = [], 0
    for i, distance in enumerate(distances):
        if distance > threshold:
            groups.append((first, i))
            first = i + 1
    groups.append((first, len(sentences) - 1))
    return [TextChunk(text[sentences[a].start:sentences[b].end], sentences[a].start, sentences[b].end)
            for a, b in groups]


def small_to_big(text: str, child_tokens: int, model: Any = "gpt-4o") -> tuple[list[TextChunk], list[TextChunk]]:
    """(children, parents): parents are the Markdown sections; children are token windows of each,
    with ``parent`` the index of their section and ``context`` its text."""
    parents = markdown_sections(text)
    children = []
    for index, parent in enumerate(parents):
        for child in fixed_token_chunks(parent.text, child_tokens, 0, model, offset=parent.start):
            children.append(TextChunk(child.text, child.start, child.end, context=parent.text, parent=index,
                                      heading=parent.heading))
    return children, parents
