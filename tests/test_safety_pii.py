"""Personal data (course_utils/safety/pii.py): each kind on known cases, the checksums against
python-stdnum, and the redaction property (no detected datum survives; offsets kept on request)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn

from course_utils.safety.pii import PII_KINDS, find_pii, iban_valid, luhn_valid, redact

VALID_IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606",
               "NL91ABNA0417164300"]


@pytest.mark.parametrize("text, kind, found", [
    ("Write to ana.lopez@example.co.uk today.", "EMAIL", "ana.lopez@example.co.uk"),
    ("Card 4539 1488 0343 6467 expires soon.", "CARD", "4539 1488 0343 6467"),
    ("Pay into GB82 WEST 1234 5698 7654 32 by Friday.", "IBAN", "GB82 WEST 1234 5698 7654 32"),
    ("Call 020 7946 0958 after nine.", "PHONE", "020 7946 0958"),
    ("Call +1 415-555-2671 after nine.", "PHONE", "+1 415-555-2671"),
    ("She lives at 221B Baker Street, London.", "ADDRESS", "221B Baker Street"),
    ("Send it to 12 Mill Lane.", "ADDRESS", "12 Mill Lane"),
    ("Send it to 12 Mill Rd. today", "ADDRESS", "12 Mill Rd."),
])
def test_each_kind_is_found_with_its_exact_span(text, kind, found):
    spans = find_pii(text)
    assert [(s.kind, s.text) for s in spans] == [(kind, found)]
    assert all(text[s.start:s.end] == s.text for s in spans)


@pytest.mark.parametrize("text", [
    "Order 4539 1488 0343 6468 shipped.",  # 16 digits that fail the Luhn check
    "The IBAN GB82 WEST 1234 5698 7654 33 has a bad check digit.",
    "We measured 1234 5678 tokens in 2026-12-01 at 14:05.",
    "Chapter 4 serves 64 sequences at once on 2 cores.",
    "Email me at the usual address.",
    "Reference GB00BARC80274955699529 is not an account.",  # Luhn-valid digits inside a code are no card
    "Part SKU4539148803436467 is back in stock.",
])
def test_look_alikes_without_a_valid_checksum_or_shape_are_left_alone(text):
    assert find_pii(text) == []


def test_two_cards_in_a_row_are_two_cards():
    text = "4539 1488 0343 6467 4539 1488 0343 6467 and 4539148803436467"
    assert [s.text for s in find_pii(text)] == ["4539 1488 0343 6467"] * 2 + ["4539148803436467"]


def test_the_luhn_check_agrees_with_python_stdnum():
    rng = random.Random(0)
    numbers = [str(rng.randrange(10 ** 12, 10 ** 19)) for _ in range(2000)]
    numbers += [n[:-1] + std_luhn.calc_check_digit(n[:-1]) for n in numbers[:500]]  # valid ones too
    assert sum(luhn_valid(n) for n in numbers) >= 500
    assert all(luhn_valid(n) == std_luhn.is_valid(n) for n in numbers)
    assert not luhn_valid("4539-1488") and not luhn_valid("")


def test_the_iban_check_agrees_with_python_stdnum():
    rng = random.Random(1)
    candidates = list(VALID_IBANS)
    for iban in VALID_IBANS:
        compact = iban.replace(" ", "")
        for _ in range(200):  # every single-character change: a typo the check must catch
            i = rng.randrange(len(compact))
            candidates.append(compact[:i] + rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") + compact[i + 1:])
    for iban in candidates:
        assert iban_valid(iban) == std_iban.is_valid(iban) or not std_iban.is_valid(iban) and iban_valid(iban) \
            and _only_country_rules_differ(iban), iban
    assert all(iban_valid(i) for i in VALID_IBANS)


def _only_country_rules_differ(iban: str) -> bool:
    """stdnum also checks each country's length and format (ISO 13616's registry); the bare mod-97
    check does not, so a changed character can pass mod-97 yet break the country's format."""
    from stdnum.exceptions import InvalidChecksum, ValidationError

    try:
        std_iban.validate(iban)
    except InvalidChecksum:
        return False
    except ValidationError:
        return True
    return False


def test_redaction_labels_every_kind_and_keeps_offsets_on_request():
    text = ("Ana (ana@example.org, 020 7946 0958) paid with 4539 1488 0343 6467 from GB82 WEST 1234 5698 7654 32; "
            "post to 12 Mill Lane.")
    labelled = redact(text)
    for kind in PII_KINDS:
        assert f"[{kind}]" in labelled
    assert find_pii(labelled) == []
    masked = redact(text, keep_offsets=True)
    assert len(masked) == len(text) and find_pii(masked) == []
    assert masked.index("paid with") == text.index("paid with")
    assert redact(text, kinds=("EMAIL",)).count("[") == 1
    with pytest.raises(ValueError, match="unknown PII kinds"):
        find_pii(text, kinds=("SSN",))


_fragment = st.sampled_from(["ana@example.org", "4539 1488 0343 6467", "GB82 WEST 1234 5698 7654 32",
                             "020 7946 0958", "12 Mill Lane", "hello", "order 5521", " ", ", ", "\n"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_fragment, max_size=12))
def test_no_detected_datum_survives_redaction_and_masking_keeps_every_offset(parts):
    text = " ".join(parts)
    masked = redact(text, keep_offsets=True)
    assert len(masked) == len(text)
    for span in find_pii(text):
        assert set(masked[span.start:span.end]) == {"*"}
    assert all(a == b for a, b in zip(masked, text, strict=True) if a != "*")
    assert find_pii(redact(text)) == []


def test_the_labelled_set_is_reproducible_and_its_labels_are_what_they_claim():
    from stdnum import iban as std_iban
    from stdnum import luhn as std_luhn

    from course_utils.safety.pii_set import evaluate_detector, pii_examples

    examples = pii_examples(300, seed=4)
    assert examples == pii_examples(300, seed=4) and examples != pii_examples(300, seed=5)
    kinds = {span[0] for e in examples for span in e.spans}
    assert kinds == set(PII_KINDS) and any(e.hard for e in examples) and any(not e.spans for e in examples)
    for example in examples:
        for kind, start, end in example.spans:
            value = example.text[start:end]
            digits = "".join(ch for ch in value if ch.isdigit())
            if kind == "CARD":
                assert std_luhn.is_valid(digits), value
            if kind == "IBAN" and not example.hard:
                assert std_iban.is_valid(value), value
    report = evaluate_detector(examples)
    assert set(report) == set(PII_KINDS) | {"look-alikes"}
    assert report["ADDRESS"]["recall_hard"] is None and report["EMAIL"]["recall"]["n"] > 0
    assert 0 <= report["look-alikes"]["false_positive"]["rate"] <= 1
