"""The course's fine-tuning data: booking extraction (with label noise) and concise-vs-rambling pairs."""

import json

import pytest

from course_utils.finetune.bookings import (
    FIELDS,
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    make_bookings,
    parse_answer,
    score_extractions,
    with_label_noise,
)
from course_utils.finetune.concise import concise_pairs


def test_bookings_are_seeded_and_every_answer_is_in_its_message():
    assert make_bookings(20) == make_bookings(20) and make_bookings(20) != make_bookings(20, seed=1)
    for booking in make_bookings(40) + make_bookings(12, "held_out"):
        assert list(booking.answer) == list(FIELDS)
        for field in FIELDS:
            assert str(booking.answer[field]) in booking.message
        assert json.loads(booking.answer_text) == booking.answer
    assert not set(TRAIN_TEMPLATES) & set(HELD_OUT_TEMPLATES)
    with pytest.raises(ValueError, match="split"):
        make_bookings(3, "test")


def test_label_noise_changes_exactly_the_requested_share_in_three_habits():
    clean = make_bookings(60)
    noisy, changed = with_label_noise(clean, 0.3, seed=2)
    assert sum(changed) == 18
    for before, after, was_changed in zip(clean, noisy, changed, strict=True):
        assert after.message == before.message
        assert (after.answer != before.answer) == was_changed
    habits = {tuple(b.answer) != FIELDS for b, c in zip(noisy, changed, strict=True) if c}
    assert habits == {True, False}  # some renamed a key, some changed a value


def test_scores_on_hand_made_replies():
    bookings = make_bookings(4)
    replies = [bookings[0].answer_text,  # right
               json.dumps({**bookings[1].answer, "time": "wrong"}),  # 3 of 4 fields
               json.dumps(dict(reversed(list(bookings[2].answer.items())))),  # keys out of order: not compliant
               "Sure! Here is the JSON you asked for."]
    score = score_extractions(replies, bookings)
    assert score.compliance == 0.5 and score.exact == 0.25
    assert score.field_accuracy == (4 + 3) / 16 and score.per_field["time"] == 0.25
    assert score.per_booking == (1.0, 0.75, 0.0, 0.0)
    assert parse_answer("  " + bookings[0].answer_text + "\n") == bookings[0].answer
    with pytest.raises(ValueError, match="one reply per booking"):
        score_extractions(replies[:2], bookings)


def test_concise_pairs_differ_only_in_padding():
    train, held_out = concise_pairs(), concise_pairs("held_out")
    assert len(train) == 100 and len(held_out) == 20
    questions = {p[0][-1]["content"] for p in train}
    assert not questions & {p[0][-1]["content"] for p in held_out}
    for _prompt, chosen, rejected in train:
        answer = chosen.removeprefix("The answer is ").removesuffix(".")
        assert answer in rejected and len(rejected) > 4 * len(chosen)
