"""Prompt construction, example selection, answer extraction, voting and program-of-thought."""

import numpy as np
import pytest

from course_utils.icl.prompting import (
    CONTENT_FREE,
    ZERO_SHOT_COT,
    Example,
    cached_embed,
    contextual_calibration,
    corrupt_labels,
    extract_code,
    extract_number,
    few_shot_messages,
    majority_vote,
    order_examples,
    run_program,
    select_examples,
)

POOL = [Example("The film was a delight from start to finish.", "positive"),
        Example("I want my two hours back.", "negative"),
        Example("The soup was cold and the waiter rude.", "negative"),
        Example("Best pizza I have had in years.", "positive"),
        Example("The battery died after one day.", "negative"),
        Example("A moving, beautifully acted drama.", "positive")]


def test_few_shot_messages_alternate_user_and_assistant():
    messages = few_shot_messages(POOL[:2], "Great value for money.", instruction="Label the sentiment.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "positive" and messages[-1]["content"] == "Great value for money."
    assert few_shot_messages([], "hi") == [{"role": "user", "content": "hi"}]


def test_dynamic_selection_returns_the_true_nearest_neighbours():
    from sentence_transformers.util import cos_sim

    from course_utils.models import load_embedder

    embedder = load_embedder()
    query = "The pasta was overcooked and the staff were unfriendly."
    chosen = select_examples(POOL, query, k=3, strategy="dynamic", embed=embedder.encode)
    vectors = embedder.encode([query] + [ex.input for ex in POOL])
    similarity = cos_sim(vectors[:1], vectors[1:])[0].numpy()
    assert chosen == [POOL[i] for i in np.argsort(-similarity)[:3]]
    assert chosen[0] == POOL[2]  # the restaurant complaint


def test_cached_embed_embeds_each_text_once_and_returns_the_same_vectors():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("e")] for t in texts], dtype=float)

    cached = cached_embed(embed)
    first = cached(["a cat", "the eel", "a cat"])
    assert np.array_equal(first, embed(["a cat", "the eel", "a cat"]))
    calls.clear()
    again = cached(["the eel", "new text", "a cat"])
    assert calls == [["new text"]]
    assert np.array_equal(again, embed(["the eel", "new text", "a cat"]))


def test_static_and_random_selection_and_bad_arguments():
    assert select_examples(POOL, "anything", 2) == POOL[:2]
    drawn = select_examples(POOL, "anything", 3, strategy="random", seed=1)
    assert len(set(drawn)) == 3 and drawn == select_examples(POOL, "x", 3, strategy="random", seed=1)
    with pytest.raises(ValueError, match="k must be"):
        select_examples(POOL, "q", 7)
    with pytest.raises(ValueError, match="embed="):
        select_examples(POOL, "q", 2, strategy="dynamic")
    with pytest.raises(ValueError, match="strategy"):
        select_examples(POOL, "q", 2, strategy="best")


def test_order_and_label_noise():
    assert order_examples(POOL, "reversed") == POOL[::-1]
    shuffled = order_examples(POOL, "shuffled", seed=3)
    assert sorted(shuffled, key=POOL.index) == POOL and shuffled != POOL
    noisy = corrupt_labels(POOL, 0.5, ["positive", "negative"], seed=0)
    changed = [a.output != b.output for a, b in zip(POOL, noisy, strict=True)]
    assert sum(changed) == 3 and [a.input for a in noisy] == [a.input for a in POOL]
    assert corrupt_labels(POOL, 0.0, ["positive", "negative"]) == POOL
    with pytest.raises(ValueError, match="fraction"):
        corrupt_labels(POOL, 1.5, ["a", "b"])
    with pytest.raises(ValueError, match="order"):
        order_examples(POOL, "sorted")


@pytest.mark.parametrize("text, expected", [
    ("She has 3 apples, buys 4 more, so 3 + 4 = 7. The answer is 7.", 7),
    ("#### 1,250", 1250),
    ("The answer is -3.5 degrees", -3.5),
    ("First 12, then 30. Answer: 42", 42),
    ("So the total is 18.", 18),
    ("I cannot tell.", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_majority_vote_and_the_cot_trigger():
    assert majority_vote([3, 5, 5, None, 3, 5]) == 5
    assert majority_vote([2, 4, 4, 2]) == 2  # a tie goes to the answer seen first
    assert majority_vote([None, None]) is None
    assert ZERO_SHOT_COT == "Let's think step by step."


def test_program_of_thought_runs_in_the_sandbox():
    text = "Let me compute it.\n```python\napples = 3 + 4\nprint(apples * 2)\n```\nDone."
    assert extract_code(text) == "apples = 3 + 4\nprint(apples * 2)\n"
    assert run_program(extract_code(text)) == (14, "ok")
    assert extract_code("no code here") is None
    assert extract_code("Sure:\n```python\nx = 1\nprint(x)") == "x = 1\nprint(x)"  # cut before the closing fence
    value, status = run_program("import os\nos.remove('/etc/hostname')")
    # Refused by Landlock (PermissionError) or by the sandbox's read-only view of /etc.
    assert value is None and ("PermissionError" in status or "Read-only file system" in status)
    value, status = run_program("while True:\n    pass", timeout_s=1)
    assert value is None and "timed out" in status


def test_contextual_calibration_removes_a_prompt_bias():
    log = np.log
    # the prompt alone pushes 90:10 toward the first label; a query scored 90:10 is therefore neutral
    assert contextual_calibration(log([0.9, 0.1]), log([0.9, 0.1])) == pytest.approx([0.5, 0.5])
    # a query the model scores 60:40 under that bias really leans to the second label
    calibrated = contextual_calibration(log([0.6, 0.4]), log([0.9, 0.1]))
    assert calibrated == pytest.approx([0.6 / 0.9 / (0.6 / 0.9 + 0.4 / 0.1), 0.4 / 0.1 / (0.6 / 0.9 + 0.4 / 0.1)])
    assert calibrated[1] > calibrated[0] and sum(calibrated) == pytest.approx(1.0)
    # no bias: unchanged, up to normalisation over the options
    assert contextual_calibration(log([0.3, 0.2]), [0.0, 0.0]) == pytest.approx([0.6, 0.4])
    assert CONTENT_FREE == "N/A"
    with pytest.raises(ValueError, match="one score per option"):
        contextual_calibration([0.0], [0.0, 1.0])
