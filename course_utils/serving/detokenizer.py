"""Text of a growing reply at a constant cost per token (incremental detokenisation).

Decoding the whole reply again after every token costs time proportional to its length, so a
long reply makes every step slower. :class:`IncrementalText` decodes only a short window: the
tokens since the last piece of text it committed, plus the piece before as context. New text is
committed only once it does not end in half a character (a multi-byte character split over
several byte-level tokens decodes to U+FFFD until its last byte arrives); :meth:`IncrementalText.finish`
commits whatever is left. The committed text always equals ``tokenizer.decode`` of the same tokens
cut at a character boundary, and after ``finish`` equals it exactly (a test checks this on random
token sequences). vLLM and Text Generation Inference detokenise the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IncrementalText"]

_INCOMPLETE = "\ufffd"  # what a decoder yields for bytes that are not (yet) a whole character


@dataclass
class IncrementalText:
    """The committed text of ``token_ids`` (owned by the caller, appended to between calls)."""

    text: str = ""
    _prefix_offset: int = 0  # window start: the tokens of the last committed piece, kept as context
    _read_offset: int = 0  # tokens before this index are committed to ``text``

    def update(self, tokenizer, token_ids: list[int], final: bool = False) -> str:
        """Commit the text of tokens appended since the last call; returns the newly committed piece."""
        prefix = tokenizer.decode(token_ids[self._prefix_offset:self._read_offset], skip_special_tokens=True)
        window = tokenizer.decode(token_ids[self._prefix_offset:], skip_special_tokens=True)
        if not final and (len(window) <= len(prefix) or window.endswith(_INCOMPLETE)):
            return ""  # nothing new, or a character still missing bytes: wait for the next token
        piece = window[len(prefix):]
        self.text += piece
        self._prefix_offset, self._read_offset = self._read_offset, len(token_ids)
        return piece

    def finish(self, tokenizer, token_ids: list[int]) -> str:
        """Commit everything, incomplete characters included (as U+FFFD, like a full decode)."""
        return self.update(tokenizer, token_ids, final=True)
