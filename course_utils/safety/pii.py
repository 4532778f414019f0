"""Personal data in text: find it, check it, redact it.

Five kinds, each found by a pattern and, where the kind has one, confirmed by its checksum so that
an order number or a timestamp is not taken for a card:

* ``EMAIL``: a local part, ``@``, a domain with a dot;
* ``PHONE``: found by ``phonenumbers`` (the Python port of Google's libphonenumber, which knows
  every country's numbering plan), numbers that are valid in their region only;
* ``CARD``: 13 to 19 digits, spaces or dashes allowed, passing the Luhn check (:func:`luhn_valid`);
* ``IBAN``: two letters, two check digits and up to 30 letters or digits (grouped by four or not),
  passing ISO 13616's mod-97 check (:func:`iban_valid`);
* ``ADDRESS``: a house number, one to four capitalised words and a street suffix ("12 Mill Lane",
  "221B Baker Street").

:func:`redact` replaces each span by ``[KIND]``, or, with ``keep_offsets=True``, by as many ``*``
as it had characters, so that every other offset in the text stays where it was (for tools that
hold spans into the original). The Luhn and IBAN checks are written here because the course teaches
them; ``python-stdnum`` implements both and the tests check that the two agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PII_KINDS", "PiiSpan", "find_pii", "iban_valid", "luhn_valid", "redact"]

PII_KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "ADDRESS")
PHONE_REGION = "GB"  # how a number written without a country code is read

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# digits in groups, one space or dash between groups, not glued to a letter (an account or product code)
_DIGIT_RUN = re.compile(r"(?<![A-Za-z0-9])\d+(?:[ -]\d+)*(?![A-Za-z0-9])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_STREET = (r"(?:Street|Road|Avenue|Lane|Drive|Way|Close|Court|Place|Square|Crescent|Terrace|Boulevard|Gardens|"
           r"Hill|Row|Walk)\b|(?:St|Rd|Ave|Ln|Dr|Ct|Pl|Sq|Blvd)\b\.?")  # an abbreviation keeps its full stop
_ADDRESS = re.compile(rf"\b\d{{1,5}}[A-Z]?,? (?:[A-Z][a-z']+ ){{1,4}}(?:{_STREET})")


@dataclass(frozen=True)
class PiiSpan:
    kind: str  # one of PII_KINDS
    start: int  # character offsets into the text: text[start:end] is the personal datum
    end: int
    text: str


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a card number (digits only): from the right, double every second digit,
    subtract 9 from any double above 9, and the sum must end in 0."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616's check: move the first four characters to the end, write each letter as two
    digits (A = 10 ... Z = 35), and the number must leave 1 when divided by 97."""
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _card_grouping(sizes: list[int]) -> bool:
    """How card numbers are written: in one block, in fours (the last group may be shorter), or
    4-6-5 / 4-6-4 (American Express, Diners Club)."""
    return len(sizes) == 1 or sizes in ([4, 6, 5], [4, 6, 4]) or (
        all(size == 4 for size in sizes[:-1]) and 1 <= sizes[-1] <= 4)


def _cards(text: str) -> list[PiiSpan]:
    """Card numbers inside runs of digit groups: from each group on, the longest stretch of whole
    groups, written as cards are, holding 13 to 19 digits that pass the Luhn check (so two cards
    one after the other are two cards, and a stray digit group next to a card does not hide it)."""
    spans = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in re.finditer(r"\d+", run.group())]
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                digits = "".join(text[a:b] for a, b in groups[i:j])
                if 13 <= len(digits) <= 19 and _card_grouping([b - a for a, b in groups[i:j]]) and luhn_valid(digits):
                    spans.append(PiiSpan("CARD", groups[i][0], groups[j - 1][1], text[groups[i][0]:groups[j - 1][1]]))
                    i = j
                    break
            else:
                i += 1
    return spans


def _ibans(text: str) -> list[PiiSpan]:
    """IBANs: at each IBAN-shaped match, the longest prefix ending at a group boundary that passes
    the mod-97 check (the pattern alone runs on into a following word, number or IBAN); the search
    goes on right after what was found, or one character on."""
    spans, pos = [], 0
    while (m := _IBAN.search(text, pos)) is not None:
        ends = [k for k in range(len(m.group()), 14, -1) if k == len(m.group()) or m.group()[k] == " "]
        valid = next((k for k in ends if iban_valid(m.group()[:k])), None)
        if valid is None:
            pos = m.start() + 1
            continue
        spans.append(PiiSpan("IBAN", m.start(), m.start() + valid, m.group()[:valid]))
        pos = m.start() + valid
    return spans


def _emails(text: str) -> list[PiiSpan]:
    return [PiiSpan("EMAIL", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)]


def _addresses(text: str) -> list[PiiSpan]:
    return [PiiSpan("ADDRESS", m.start(), m.end(), m.group()) for m in _ADDRESS.finditer(text)]


def _phones(text: str) -> list[PiiSpan]:
    import phonenumbers

    matcher = phonenumbers.PhoneNumberMatcher(text, PHONE_REGION, leniency=phonenumbers.Leniency.VALID)
    return [PiiSpan("PHONE", m.start, m.end, m.raw_string) for m in matcher]


def find_pii(text: str, kinds: tuple[str, ...] = PII_KINDS) -> list[PiiSpan]:
    """Every span of personal data of the given ``kinds`` in ``text``, sorted by position and
    non-overlapping."""
    unknown = set(kinds) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {', '.join(PII_KINDS)}")
    # Most specific first; each kind is looked for only where no earlier kind was found (found
    # spans are masked with x, which keeps offsets and breaks runs of digits), so that the digits of
    # an IBAN are not read as part of a card, nor a card's as a phone number.
    detectors = {"IBAN": _ibans, "EMAIL": _emails, "CARD": _cards, "ADDRESS": _addresses, "PHONE": _phones}
    found: list[PiiSpan] = []
    rest = text
    for kind, detect in detectors.items():
        if kind in kinds:
            new = [PiiSpan(kind, s.start, s.end, text[s.start:s.end]) for s in detect(rest)]
            for span in new:
                rest = rest[:span.start] + "x" * (span.end - span.start) + rest[span.end:]
            found += new
    return sorted(found, key=lambda s: s.start)


def redact(text: str, kinds: tuple[str, ...] = PII_KINDS, keep_offsets: bool = False) -> str:
    """``text`` with every span :func:`find_pii` finds replaced by ``[KIND]`` (or, with
    ``keep_offsets``, by ``*`` of the same length)."""
    out, last = [], 0
    for span in find_pii(text, kinds):
        out += [text[last:span.start], "*" * (span.end - span.start) if keep_offsets else f"[{span.kind}]"]
        last = span.end
    return "".join(out) + text[last:]
