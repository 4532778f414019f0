"""A labelled set for the personal-data guardrail: sentences with personal data at known offsets,
and sentences with look-alikes that are not personal data.

Generated from a seed by templates written for the course, like the course's arithmetic and
sentiment sets, so every label and offset is exact by construction. The personal data is made up:
card numbers get a Luhn check digit (so they pass the check, as real ones do), IBANs get ISO 13616
check digits on made-up bank and account numbers, phone numbers and addresses are drawn from
formats, not from a directory. Each kind also comes in *hard* spellings a rule-based detector
should be expected to miss (an e-mail written "at ... dot ...", a card split by dots, an IBAN in
groups of three): they stay labelled as personal data, so that recall is not measured only on the
spellings the rules were written for. Look-alikes are order numbers failing the Luhn check,
IBAN-shaped strings with wrong check digits, dates, times, versions and room numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["LabelledText", "pii_examples"]

_FIRST = ["ana", "ben", "chloe", "dev", "elena", "farid", "grace", "hugo", "ines", "jonas"]
_DOMAINS = ["example.org", "mail.example.com", "uni.example.ac.uk", "example.net"]
_STREETS = ["Mill", "Station", "Church", "Park", "Victoria", "High", "Orchard", "Baker", "King Edward"]
_SUFFIXES = ["Street", "Road", "Lane", "Avenue", "Close", "Way", "Rd.", "St."]


@dataclass(frozen=True)
class LabelledText:
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (kind, start, end) of each personal datum
    hard: bool = False  # a spelling rules are not expected to catch


def _card(rng: random.Random) -> str:
    from stdnum import luhn

    body = rng.choice(["4", "51", "52", "55", "37"]) + "".join(rng.choice("0123456789") for _ in range(13))
    body = body[:15]
    number = body + luhn.calc_check_digit(body)
    style = rng.choice([" ", "-", ""])
    return style.join(number[i:i + 4] for i in range(0, 16, 4)) if style else number


def _iban(rng: random.Random) -> str:
    from stdnum import iban

    country = rng.choice(["GB", "DE", "NL"])
    if country == "GB":
        bban = rng.choice(["WEST", "BARC", "LOYD"]) + "".join(rng.choice("0123456789") for _ in range(14))
    elif country == "DE":
        bban = "".join(rng.choice("0123456789") for _ in range(18))
    else:
        bban = rng.choice(["ABNA", "INGB", "RABO"]) + "".join(rng.choice("0123456789") for _ in range(10))
    compact = country + iban.calc_check_digits(country + "00" + bban) + bban
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.6 else compact


def _phone(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(8))
    return rng.choice([f"020 7946 {digits[:4]}", f"+44 20 7946 {digits[:4]}", f"(020) 7946 {digits[:4]}",
                       f"07{digits[0]}{digits[1]}{digits[2]} {digits[3:]}{digits[0]}",
                       f"+1 212 555 {digits[4:8]}", f"+33 1 42 {digits[:2]} {digits[2:4]} {digits[4:6]}"])


_TEMPLATES = {
    "EMAIL": ["Please send the invoice to {v} by Monday.", "My address for the refund is {v}.",
              "Contact {v} if the parcel is late."],
    "CARD": ["My card number is {v}, expiry 09/27.", "It was charged to {v} twice.",
             "Card {v} was declined at the till."],
    "IBAN": ["Please transfer the deposit to {v} before Friday.", "Refund to IBAN {v}, thanks.",
             "The account is {v} in my name."],
    "PHONE": ["You can reach me on {v} after six.", "Call {v} to rebook.", "My number changed to {v} last week."],
    "ADDRESS": ["Deliver it to {v}, Leeds.", "I moved to {v} in May.", "The keys are at {v}."],
}
_VALUES = {
    "EMAIL": lambda rng: f"{rng.choice(_FIRST)}.{rng.choice(_FIRST)}{rng.randint(1, 99)}@{rng.choice(_DOMAINS)}",
    "CARD": _card,
    "IBAN": _iban,
    "PHONE": _phone,
    "ADDRESS": lambda rng: f"{rng.randint(1, 240)} {rng.choice(_STREETS)} {rng.choice(_SUFFIXES)}",
}


def _positive(rng: random.Random) -> LabelledText:
    kind = rng.choice(["EMAIL", "CARD", "IBAN", "PHONE", "ADDRESS"])
    value = _VALUES[kind](rng)
    template = rng.choice(_TEMPLATES[kind])
    start = template.index("{v}")
    return LabelledText(template.format(v=value), ((kind, start, start + len(value)),))


def _hard(rng: random.Random) -> LabelledText:
    kind = rng.choice(["EMAIL", "CARD", "IBAN", "PHONE"])
    if kind == "EMAIL":
        value = f"{rng.choice(_FIRST)} at {rng.choice(_DOMAINS).replace('.', ' dot ')}"
    elif kind == "CARD":
        value = _card(rng).replace(" ", "").replace("-", "")
        value = ".".join(value[i:i + 4] for i in range(0, 16, 4))
    elif kind == "IBAN":
        compact = _iban(rng).replace(" ", "")
        value = " ".join(compact[i:i + 3] for i in range(0, len(compact), 3))
    else:
        value = " ".join("".join(rng.choice("0123456789") for _ in range(3)) for _ in range(3)) + "0"
        value = "0" + value.replace(" ", "-")
    template = "Write it down: {v}, and keep it safe."
    start = template.index("{v}")
    return LabelledText(template.format(v=value), ((kind, start, start + len(value)),), hard=True)


def _negative(rng: random.Random) -> LabelledText:
    from stdnum import luhn

    body = "".join(rng.choice("0123456789") for _ in range(15))
    wrong = str((int(luhn.calc_check_digit(body)) + rng.randint(1, 9)) % 10)
    compact = _iban(rng).replace(" ", "")
    bad_iban = compact[:2] + f"{(int(compact[2:4]) + rng.randint(1, 50)) % 100:02d}" + compact[4:]
    return LabelledText(rng.choice([
        f"Order {body + wrong} shipped on 2026-11-{rng.randint(10, 28)}.",
        f"Reference {bad_iban} is not an account.",
        f"The meeting moved to {rng.randint(10, 18)}:{rng.randint(10, 59)} in room {rng.randint(100, 999)}.",
        f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)} before the release.",
        f"Chapter {rng.randint(1, 12)} covers {rng.randint(2, 64)} sequences on {rng.randint(2, 16)} cores.",
        f"The invoice total was {rng.randint(100, 99999)} pounds for {rng.randint(2, 40)} items.",
    ]), ())


def pii_examples(count: int = 400, seed: int = 0) -> list[LabelledText]:
    """``count`` labelled sentences: about 45% with one personal datum in a common spelling, 10% in
    a hard spelling, 45% with look-alikes and none."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        draw = rng.random()
        out.append(_positive(rng) if draw < 0.45 else _hard(rng) if draw < 0.55 else _negative(rng))
    return out


def evaluate_detector(examples: list[LabelledText]) -> dict[str, dict]:
    """:func:`course_utils.safety.pii.find_pii` scored on ``examples``: per kind, recall on the
    common spellings and on the hard ones (a datum counts as found when a span of its kind covers
    it exactly), and over the look-alike sentences the share with any detection (false positives);
    every share a :class:`course_utils.stats.Rate` as a dict."""
    from course_utils.safety.pii import PII_KINDS, find_pii
    from course_utils.stats import rate

    def share(flags: list[bool]) -> dict | None:
        return rate(sum(flags), len(flags)).as_dict() if flags else None

    hits: dict[tuple[str, bool], list[bool]] = {}
    false_alarms = []
    for example in examples:
        found = {(s.kind, s.start, s.end) for s in find_pii(example.text)}
        if not example.spans:
            false_alarms.append(bool(found))
        for span in example.spans:
            hits.setdefault((span[0], example.hard), []).append(span in found)
    report = {kind: {"recall": share(hits.get((kind, False), [])), "recall_hard": share(hits.get((kind, True), []))}
              for kind in PII_KINDS}
    report["look-alikes"] = {"false_positive": share(false_alarms)}
    return report
