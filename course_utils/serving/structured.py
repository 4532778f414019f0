"""Structured outputs: the tokens a grammar allows next, for the engine's sampler.

A request asks for one of five shapes (:class:`StructuredOutputs`, vLLM's names): a JSON schema, any
JSON object, a regex, one string out of a list, or a Lark grammar (llguidance's dialect, which may
embed JSON schemas with ``%json``: how tool calls are constrained). The engine keeps a :class:`Matcher` per
sequence; before each draw the logits of the tokens the matcher forbids are set to -inf, and the
drawn token is fed back to it. Two backends:

* ``"llguidance"`` (default): the library vLLM and llama.cpp also use (Rust, a ~50 µs mask per
  step), for full JSON Schema, regexes and grammars; JSON is compact (``whitespace_flexible`` off),
  so a small model cannot wander into endless whitespace. (xgrammar, vLLM's other backend, pulls
  in triton when installed here; llguidance is one 3 MB wheel with JSON Schema, regexes and Lark.)
* ``"course"``: :mod:`course_utils.serving.token_dfa`, the from-scratch DFA, for regexes of its
  subset and flat schemas; its masks equal llguidance's on that subset (a test checks it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = ["BACKENDS", "DFAMatcher", "GuidanceMatcher", "Matcher", "MatcherFactory", "StructuredOutputs"]

BACKENDS = ("llguidance", "course")
MAX_GRAMMAR_CHARS = 100_000  # a schema or regex longer than this is refused before compiling
JSON_OPTIONS = {"whitespace_flexible": False}


@dataclass(frozen=True)
class StructuredOutputs:
    """Exactly one of: ``json`` (a JSON schema, as a dict or its text), ``json_object`` (any JSON
    object), ``regex``, ``choice`` (one of these strings), ``grammar`` (Lark, llguidance's dialect)."""

    json: dict[str, Any] | str | None = None
    regex: str | None = None
    choice: tuple[str, ...] | list[str] | None = None
    json_object: bool = False
    grammar: str | None = None
    backend: str = "llguidance"

    def __post_init__(self):
        given = [name for name in ("json", "regex", "choice", "grammar") if getattr(self, name) is not None]
        given += ["json_object"] if self.json_object else []
        if len(given) != 1:
            raise ValueError("structured outputs take exactly one of json, json_object, regex, choice, grammar; "
                             f"got {given or 'none'}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown structured-output backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if isinstance(self.json, str):
            try:
                object.__setattr__(self, "json", json.loads(self.json))
            except ValueError as err:
                raise ValueError(f"the JSON schema is not valid JSON: {err}") from None
        if self.json is not None and not isinstance(self.json, dict):
            raise ValueError(f"a JSON schema is a JSON object, got {type(self.json).__name__}")
        for name in ("regex", "grammar"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if self.choice is not None:
            if not isinstance(self.choice, (list, tuple)) or not self.choice or \
                    not all(isinstance(c, str) and c for c in self.choice):
                raise ValueError("choice must be a non-empty list of non-empty strings")
            object.__setattr__(self, "choice", tuple(self.choice))
        if len(self.key) > MAX_GRAMMAR_CHARS:
            raise ValueError(f"the grammar is longer than {MAX_GRAMMAR_CHARS} characters")

    @property
    def key(self) -> str:
        """A canonical text of the request's grammar (the compile cache's key)."""
        return json.dumps([self.backend, self.json, self.regex, self.choice, self.json_object, self.grammar],
                          sort_keys=True)


class Matcher(Protocol):
    """Where one sequence stands in its grammar (what the engine needs of either backend)."""

    def allowed(self) -> torch.Tensor:
        """(V,) bool: the tokens that may come next (EOS once the output is complete)."""
        ...

    def consume(self, token_id: int) -> None:
        """Advance past ``token_id``; ValueError if the grammar did not allow it."""
        ...


class GuidanceMatcher:
    def __init__(self, matcher, vocab_size: int):
        import llguidance.torch as llg_torch

        self._matcher, self._llg_torch, self.vocab_size = matcher, llg_torch, vocab_size
        self._bitmask = llg_torch.allocate_token_bitmask(1, vocab_size)
        self._bits = torch.arange(32, dtype=torch.int32)

    def allowed(self) -> torch.Tensor:
        self._llg_torch.fill_next_token_bitmask(self._matcher, self._bitmask, 0)
        unpacked = (self._bitmask[0].unsqueeze(1) >> self._bits) & 1  # (V/32, 32): bit j of word i is token 32i+j
        return unpacked.flatten()[: self.vocab_size].bool()

    def consume(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id):
            raise ValueError(f"the grammar did not allow token {token_id}: {self._matcher.get_error()}")


class DFAMatcher:
    def __init__(self, token_dfa):
        self._dfa, self.state, self.last_token = token_dfa, 0, None

    def allowed(self) -> torch.Tensor:
        return self._dfa.mask(self.state, self.last_token)

    def consume(self, token_id: int) -> None:
        if not self.allowed()[token_id]:
            raise ValueError(f"the grammar did not allow token {token_id}")
        if token_id != self._dfa.eos_id:
            self.state, self.last_token = self._dfa.next_state(self.state, token_id), token_id


class MatcherFactory:
    """Compiles each distinct grammar once per engine and hands out a fresh matcher per sequence.

    ``vocab_size`` is the width of the model's logits (it may exceed the tokenizer's length).
    """

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self._llg_tokenizer = None
        self._token_bytes: list[bytes] | None = None
        self._compiled: dict[str, Any] = {}

    def create(self, spec: StructuredOutputs) -> Matcher:
        """A matcher at the start of ``spec``'s grammar; ValueError (one line) for a grammar that
        does not compile."""
        if spec.backend == "course":
            return DFAMatcher(self._course(spec))
        import llguidance

        grammar = self._compiled.get(spec.key)
        if grammar is None:
            grammar = self._guidance_grammar(spec)
            error = llguidance.LLMatcher.validate_grammar(grammar, self._guidance_tokenizer())
            if error:
                raise ValueError(f"the grammar does not compile: {error.splitlines()[0][:300]}")
            self._compiled[spec.key] = grammar
        matcher = llguidance.LLMatcher(self._guidance_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"the grammar does not compile: {matcher.get_error()[:300]}")
        return GuidanceMatcher(matcher, self.vocab_size)

    def _guidance_tokenizer(self):
        if self._llg_tokenizer is None:
            import llguidance.hf

            self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size)
        return self._llg_tokenizer

    @staticmethod
    def _guidance_grammar(spec: StructuredOutputs) -> str:
        from llguidance import LLMatcher

        if spec.json is not None or spec.json_object:
            schema = spec.json if spec.json is not None else {"type": "object"}
            try:
                return LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
            except ValueError as err:
                raise ValueError(f"the JSON schema is not usable: {str(err).splitlines()[0][:300]}") from None
        if spec.regex is not None:
            return LLMatcher.grammar_from_regex(spec.regex)
        if spec.grammar is not None:
            return LLMatcher.grammar_from_lark(spec.grammar)
        return LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec.choice))

    def _tokenize(self, data: bytes) -> list[int]:
        """The tokenizer's own tokenization of ``data`` ([] if it is not whole UTF-8)."""
        try:
            return self.tokenizer.encode(data.decode("utf-8"), add_special_tokens=False)
        except UnicodeDecodeError:
            return []

    def _course(self, spec: StructuredOutputs):
        from course_utils.serving.logprobs import token_bytes_table
        from course_utils.serving.token_dfa import TokenDFA, compile_regex, flat_schema_regex

        if spec.key not in self._compiled:
            if spec.json_object or spec.grammar is not None:
                raise ValueError("the course backend has no json_object or Lark grammar; use backend='llguidance'")
            if spec.json is not None:
                pattern = flat_schema_regex(spec.json)
            elif spec.regex is not None:
                pattern = spec.regex
            else:
                pattern = "|".join(re.sub(r"([^\w])", r"\\\1", c) for c in spec.choice)
            if self._token_bytes is None:
                table = token_bytes_table(self.tokenizer)
                self._token_bytes = table + [b""] * (self.vocab_size - len(table))
            self._compiled[spec.key] = TokenDFA(compile_regex(pattern), self._token_bytes, self.tokenizer.eos_token_id,
                                                self.tokenizer.all_special_ids, self._tokenize)
        return self._compiled[spec.key]
