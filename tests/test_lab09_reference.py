"""Lab 09's reference solution agrees with python-stdnum, scikit-learn and (where their rules meet)
course_utils.safety."""

import random
import re

import numpy as np
import pytest
from lab_solutions import solution_namespace
from sklearn.metrics import precision_recall_curve
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn

from course_utils.safety.pii import find_pii


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("09_hallucination_and_guardrails_lab.ipynb", {"re": re})


def _card(rng, valid=True):
    body = "".join(rng.choice("0123456789") for _ in range(rng.choice([12, 15, 18])))
    check = std_luhn.calc_check_digit(body)
    return body + (check if valid else str((int(check) + rng.randint(1, 9)) % 10))


def test_the_lab_card_finder_agrees_with_stdnum_and_with_the_course_detector(lab):
    rng = random.Random(0)
    for _ in range(300):
        parts, expected = [], []
        for _ in range(rng.randint(0, 4)):
            number = _card(rng, valid=rng.random() < 0.6)
            style = rng.choice(["", " ", "-"])
            written = style.join(number[i:i + 4] for i in range(0, len(number), 4)) if style else number
            parts.append(rng.choice(["Card", "ref", "and", "order no."]))
            start = len(" ".join(parts)) + 1
            parts.append(written)
            if std_luhn.is_valid(number):
                expected.append([start, start + len(written)])
        text = " ".join(parts) + " end"
        assert lab["card_spans"](text) == expected, text
        # The course's detector finds every card the lab does; it may also find a Luhn-valid stretch
        # of whole groups inside a longer number that fails (it splits runs of groups, so that two
        # cards written one after the other are two cards): the lab's simpler rule is stricter there.
        course = [[s.start, s.end] for s in find_pii(text, kinds=("CARD",))]
        assert all(span in course for span in expected), text
        candidates = [m.span() for m in re.finditer(r"\d+(?:[ -]\d+)*", text)]
        for start, end in (span for span in course if span not in expected):
            assert any(a <= start and end <= b and (a, b) != (start, end) for a, b in candidates), text


def test_the_lab_iban_check_digits_are_stdnums(lab):
    rng = random.Random(1)
    for _ in range(300):
        country = rng.choice(["GB", "DE", "FR", "NL", "IT", "ES", "CH"])
        bban = "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(10, 26)))
        digits = lab["iban_check_digits"](country, bban)
        assert digits == std_iban.calc_check_digits(country + "00" + bban), (country, bban)
        assert std_iban.mod_97_10.is_valid(bban + country + digits)  # the rearranged number leaves 1


def test_the_lab_threshold_is_the_lowest_one_sklearn_reports_at_that_precision(lab):
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        scores = [float(x) for x in np.round(rng.random(n), 2)]
        labels = [bool(x) for x in rng.random(n) < 0.5]
        target = float(rng.choice([0.5, 0.7, 0.9, 1.0]))
        got = lab["threshold_for_precision"](scores, labels, target)
        if not any(labels):
            assert got is None
            continue
        precision, recall, thresholds = precision_recall_curve(labels, scores)
        ok = [(t, p, r) for p, r, t in zip(precision[:-1], recall[:-1], thresholds, strict=True) if p >= target]
        if not ok:
            assert got is None, (scores, labels, target)
        else:
            t, p, r = min(ok)
            assert got == pytest.approx([t, p, r]), (scores, labels, target)
