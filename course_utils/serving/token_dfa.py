"""Constrained decoding from scratch: a regex, compiled to a DFA over bytes, masks the next token.

The mechanism every structured-output engine shares, small enough to read in one sitting:

1. parse a regex (a subset: literals, ASCII classes like ``[a-z0-9]``, groups, ``|``, ``* + ?``
   and ``{m}``/``{m,n}``) into a tree;
2. build a Thompson NFA from the tree and turn it into a DFA over bytes by subset construction,
   dropping the states from which no accepting state can be reached;
3. for a DFA state, a token is allowed iff its bytes walk from that state without leaving the DFA;
   EOS is allowed iff the state accepts. The per-state masks are cached, as outlines' index does.
4. one refinement, found by testing against llguidance: where the grammar *forces* the next bytes
   (one path, no choice), they are tokenized as the tokenizer would and only the first of those
   tokens is allowed, so the model cannot spell a forced word in pieces the tokenizer would never
   produce (:meth:`TokenDFA.forced_token` has the details).

:func:`flat_schema_regex` turns a flat JSON schema (required properties of enums, integers and
booleans, no other properties) into the regex of its compact JSON, the form llguidance produces
with ``whitespace_flexible`` off; tests/test_serving_structured.py checks that the masks of this
module equal llguidance's, token for token, along generated outputs. The engine uses llguidance
(:mod:`course_utils.serving.structured`) for everything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["DFA", "TokenDFA", "compile_regex", "flat_schema_regex"]

_UNSUPPORTED = ".^$"  # and the escapes \d \w \s, which are Unicode classes in llguidance's (Rust) regexes


# ---- 1. regex -> tree ---------------------------------------------------------------------------
# A node is ("bytes", frozenset) for one byte out of a set, ("cat", [nodes]), ("alt", [nodes]) or
# ("rep", node, low, high) with high None for "no limit".

class _Parser:
    def __init__(self, pattern: str):
        self.pattern, self.pos = pattern, 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"regex {self.pattern!r} at {self.pos}: {what} (the course's subset: literals, ASCII "
                          "classes like [a-z0-9], groups, |, * + ? {m,n}; use backend='llguidance' for more)")

    def peek(self) -> str | None:
        return self.pattern[self.pos] if self.pos < len(self.pattern) else None

    def take(self) -> str:
        ch = self.peek()
        if ch is None:
            raise self.error("unexpected end")
        self.pos += 1
        return ch

    def parse(self):
        node = self.alternation()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()!r}")
        return node

    def alternation(self):
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self):
        parts = []
        while self.peek() not in (None, "|", ")"):
            parts.append(self.repetition())
        return ("cat", parts)

    def repetition(self):
        node = self.atom()
        while self.peek() in ("*", "+", "?", "{"):
            op = self.take()
            if op == "{":
                match = re.match(r"(\d+)(,(\d*))?\}", self.pattern[self.pos:])
                if not match:
                    raise self.error("a bound is {m}, {m,} or {m,n}")
                self.pos += match.end()
                low = int(match.group(1))
                high = low if match.group(2) is None else (int(match.group(3)) if match.group(3) else None)
                if high is not None and high < low:
                    raise self.error("{m,n} needs m <= n")
                node = ("rep", node, low, high)
            else:
                node = ("rep", node, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[op])
        return node

    def atom(self):
        ch = self.take()
        if ch == "(":
            if self.pattern.startswith("?:", self.pos):
                self.pos += 2
            node = self.alternation()
            if self.peek() != ")":
                raise self.error("missing )")
            self.take()
            return node
        if ch == "[":
            return ("bytes", self.char_class())
        if ch == "\\":
            escaped = self.take()
            if escaped.isalnum():
                raise self.error(f"unsupported escape \\{escaped} (write [0-9] for ASCII digits)")
            return self.literal(escaped)
        if ch in _UNSUPPORTED or ch in "*+?{)":
            raise self.error(f"{ch!r} is not supported here")
        return self.literal(ch)

    def char_class(self) -> frozenset[int]:
        if self.peek() == "^":
            raise self.error("negated classes are not in the subset")
        members: set[int] = set()
        while (ch := self.take()) != "]":
            if ch == "\\":
                ch = self.take()
                if ch.isalnum():
                    raise self.error(f"unsupported escape \\{ch} in a class")
            if self.peek() == "-" and self.pattern[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.take()
                end = self.take()
                if end == "\\":
                    end = self.take()
                if ord(ch) > 127 or ord(end) > 127 or ord(end) < ord(ch):
                    raise self.error(f"class range {ch}-{end} must be ASCII and ascending")
                members |= set(range(ord(ch), ord(end) + 1))
            elif ord(ch) > 127:
                raise self.error("classes hold ASCII characters only")
            else:
                members.add(ord(ch))
        return frozenset(members)

    @staticmethod
    def literal(ch: str):
        return ("cat", [("bytes", frozenset([b])) for b in ch.encode()])


# ---- 2. tree -> NFA -> DFA ----------------------------------------------------------------------

@dataclass
class _NFA:
    epsilon: list[list[int]] = field(default_factory=list)  # state -> states reached for free
    edges: list[list[tuple[frozenset[int], int]]] = field(default_factory=list)  # state -> (bytes, state)

    def new(self) -> int:
        self.epsilon.append([])
        self.edges.append([])
        return len(self.epsilon) - 1

    def build(self, node, start: int) -> int:
        """Wire ``node`` from ``start``; returns its end state (Thompson's construction)."""
        kind = node[0]
        if kind == "bytes":
            end = self.new()
            self.edges[start].append((node[1], end))
            return end
        if kind == "cat":
            for part in node[1]:
                start = self.build(part, start)
            return start
        if kind == "alt":
            end = self.new()
            for branch in node[1]:
                entry = self.new()
                self.epsilon[start].append(entry)
                self.epsilon[self.build(branch, entry)].append(end)
            return end
        _, inner, low, high = node
        for _ in range(low):
            start = self.build(inner, start)
        if high is None:  # a loop: inner may repeat any number of times more
            loop = self.new()
            self.epsilon[start].append(loop)
            self.epsilon[self.build(inner, loop)].append(loop)
            return loop
        end = self.new()
        self.epsilon[start].append(end)
        for _ in range(high - low):
            start = self.build(inner, start)
            self.epsilon[start].append(end)
        return end

    def closure(self, states) -> frozenset[int]:
        seen, todo = set(states), list(states)
        while todo:
            for nxt in self.epsilon[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)


@dataclass(frozen=True)
class DFA:
    """States 0..n-1 (0 the start); ``moves[s]`` maps a byte to the next state; only states from
    which an accepting one can be reached are kept, so a missing move means "not allowed"."""

    moves: tuple[dict[int, int], ...]
    accepting: frozenset[int]

    def walk(self, state: int, data: bytes) -> int | None:
        """The state after ``data`` from ``state``, or None if it leaves the language."""
        for byte in data:
            state = self.moves[state].get(byte)
            if state is None:
                return None
        return state

    def matches(self, data: bytes) -> bool:
        return self.walk(0, data) in self.accepting


def compile_regex(pattern: str) -> DFA:
    """The trimmed DFA over bytes of ``pattern`` (the whole output must match: an implicit ^...$)."""
    tree = _Parser(pattern).parse()
    nfa = _NFA()
    start = nfa.new()
    final = nfa.build(tree, start)
    subsets = [nfa.closure([start])]
    index = {subsets[0]: 0}
    moves: list[dict[int, int]] = []
    for subset in subsets:  # grows while we iterate: the subset construction's work list
        targets: dict[int, set[int]] = {}
        for state in subset:
            for byte_set, nxt in nfa.edges[state]:
                for byte in byte_set:
                    targets.setdefault(byte, set()).add(nxt)
        row = {}
        for byte, states in targets.items():
            closed = nfa.closure(states)
            if closed not in index:
                index[closed] = len(subsets)
                subsets.append(closed)
            row[byte] = index[closed]
        moves.append(row)
    accepting = {i for i, subset in enumerate(subsets) if final in subset}
    live, changed = set(accepting), True  # states that can still reach an accepting one
    while changed:
        changed = False
        for state, row in enumerate(moves):
            if state not in live and any(nxt in live for nxt in row.values()):
                live.add(state)
                changed = True
    if 0 not in live:
        raise ValueError(f"regex {pattern!r} matches nothing")
    kept = sorted(live)  # 0 stays first
    renumber = {old: new for new, old in enumerate(kept)}
    trimmed = tuple({b: renumber[n] for b, n in moves[old].items() if n in live} for old in kept)
    return DFA(trimmed, frozenset(renumber[s] for s in accepting))


# ---- 3. DFA -> token masks ----------------------------------------------------------------------

class TokenDFA:
    """Token masks of a DFA for one vocabulary: ``mask(state)`` is a (V,) bool tensor of allowed ids.

    ``token_bytes[i]`` is token i's bytes (``logprobs.token_bytes_table``); ``special_ids`` are never
    allowed except ``eos_id``, which is allowed exactly in accepting states. ``tokenize(data)`` is
    the tokenizer's own tokenization of ``data`` ([] where it has none); None: no forcing.
    """

    def __init__(self, dfa: DFA, token_bytes: Sequence[bytes], eos_id: int, special_ids: Sequence[int] = (),
                 tokenize: Callable[[bytes], list[int]] | None = None):
        self.dfa, self.eos_id, self.vocab_size = dfa, eos_id, len(token_bytes)
        self.token_bytes, self.tokenize = token_bytes, tokenize
        excluded = set(special_ids) | {eos_id}
        self._by_first_byte: dict[int, list[int]] = {}
        for token_id, data in enumerate(token_bytes):
            if data and token_id not in excluded:
                self._by_first_byte.setdefault(data[0], []).append(token_id)
        self._cache: dict[int, tuple[torch.Tensor, dict[int, int]]] = {}
        self._masks: dict[tuple[int, int | None], torch.Tensor] = {}  # (state, last token) -> allowed
        self._max_token_len = max(map(len, token_bytes), default=1)

    def forced_bytes(self, state: int) -> bytes:
        """The bytes the grammar allows as the only way on from ``state`` (empty where it branches)."""
        forced = bytearray()
        while state not in self.dfa.accepting and len(self.dfa.moves[state]) == 1:
            (byte, state), = self.dfa.moves[state].items()
            forced.append(byte)
        return bytes(forced)

    def forced_token(self, state: int, last_token: int | None) -> int | None:
        """The one token allowed at ``state`` when the grammar forces the next bytes, else None.

        llguidance's rule (``ff_tokens`` and ``chop_tokens`` in its token parser): tokenize the last
        generated token's bytes and the forced bytes as the tokenizer would (the forced bytes alone if
        that splits the last token differently); drop the final tokens whose bytes could still merge
        with text the grammar allows after the forced bytes (a longer token starts with a suffix of
        them); the first forced token left, if any, is the only one allowed.
        """
        forced = self.forced_bytes(state) if self.tokenize is not None else b""
        if not forced:
            return None
        existing = [] if last_token is None else [last_token]
        tokens = self.tokenize(b"".join(self.token_bytes[t] for t in existing) + forced)
        if tokens[:len(existing)] != existing:
            existing, tokens = [], self.tokenize(forced)
        free = tokens[len(existing):]
        after = self.dfa.walk(state, forced)
        tail = b"".join(self.token_bytes[t] for t in free[-4:])[-self._max_token_len:]
        for start in range(len(tail)):
            suffix = tail[start:]
            if self._extends(suffix, after):
                covered, chop = 0, 0
                while covered < len(suffix):
                    chop += 1
                    covered += len(self.token_bytes[free[-chop]])
                free = free[:-chop]
                break
        return free[0] if free else None

    def _extends(self, suffix: bytes, state: int) -> bool:
        """Is there a token that is ``suffix`` followed by bytes the grammar allows from ``state``?"""
        for token_id in self._by_first_byte.get(suffix[0], ()):
            data = self.token_bytes[token_id]
            if len(data) > len(suffix) and data.startswith(suffix) and \
                    self.dfa.walk(state, data[len(suffix):]) is not None:
                return True
        return False

    def _index(self, state: int) -> tuple[torch.Tensor, dict[int, int]]:
        if state not in self._cache:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            nexts = {}
            for byte in self.dfa.moves[state]:
                for token_id in self._by_first_byte.get(byte, ()):
                    after = self.dfa.walk(state, self.token_bytes[token_id])
                    if after is not None:
                        mask[token_id] = True
                        nexts[token_id] = after
            mask[self.eos_id] = state in self.dfa.accepting
            self._cache[state] = (mask, nexts)
        return self._cache[state]

    def mask(self, state: int, last_token: int | None = None) -> torch.Tensor:
        """(V,) bool: the tokens allowed at ``state``, right after ``last_token`` (None at the start)."""
        key = (state, last_token)
        if key not in self._masks:  # the forced-token rule tokenizes: worth computing once per pair
            forced = self.forced_token(state, last_token)
            if forced is None:
                self._masks[key] = self._index(state)[0]
            else:
                self._masks[key] = torch.zeros(self.vocab_size, dtype=torch.bool)
                self._masks[key][forced] = True
        return self._masks[key]

    def next_state(self, state: int, token_id: int) -> int | None:
        """The state after ``token_id``; None if it is not allowed (EOS included: it ends the text)."""
        return self._index(state)[1].get(token_id)


def flat_schema_regex(schema: dict) -> str:
    """The regex of the compact JSON of a flat object schema: every property required and in schema
    order, each an integer, a boolean or an enum of strings; no other property allowed."""
    if schema.get("type") != "object" or schema.get("additionalProperties", True) is not False:
        raise ValueError("the course's flat subset needs \"type\": \"object\" and \"additionalProperties\": false")
    properties = schema.get("properties", {})
    if sorted(schema.get("required", [])) != sorted(properties):
        raise ValueError("the course's flat subset needs every property in \"required\"")
    parts = []
    for name, spec in properties.items():
        if "enum" in spec:
            values = spec["enum"]
            if not values or not all(isinstance(v, str) and v.isascii() and json.dumps(v)[1:-1] == v for v in values):
                raise ValueError(f"{name}: enums in the subset are plain ASCII strings")
            value = "(" + "|".join(re.escape(json.dumps(v)) for v in values) + ")"
        elif spec.get("type") == "integer":
            value = "-?(0|[1-9][0-9]*)"
        elif spec.get("type") == "boolean":
            value = "(true|false)"
        else:
            raise ValueError(f"{name}: the subset holds integers, booleans and string enums, not {spec}")
        parts.append(re.escape(json.dumps(name)) + ":" + value)
    return r"\{" + ",".join(parts) + r"\}"
