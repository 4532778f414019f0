"""Self-consistency (course_utils/safety/consistency.py)."""

import pytest

from course_utils.safety.consistency import agreement, calibration, sample_answers


def test_agreement_takes_the_majority_and_breaks_ties_by_first_seen():
    assert agreement(["a", "b", "a"]) == ("a", pytest.approx(2 / 3))
    assert agreement(["b", "a", "a", "b"]) == ("b", 0.5)
    assert agreement(["x"]) == ("x", 1.0)
    with pytest.raises(ValueError, match="at least one sample"):
        agreement([])


def test_calibration_has_one_row_per_agreement_level_with_its_accuracy():
    rows = calibration([0.6, 1.0, 0.6, 1.0, 1.0], [False, True, True, True, False])
    assert [(r["agreement"], r["n"], r["accuracy"]["k"]) for r in rows] == [(0.6, 2, 1), (1.0, 3, 2)]
    assert rows[0]["accuracy"]["ci95"][0] < 0.5 < rows[0]["accuracy"]["ci95"][1]


def test_samples_are_k_constrained_answers_per_prompt_and_reproducible(smollm2):
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM, StructuredOutputs

    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=128, block_size=16, max_model_len=256)
    asks = [f"Is this review positive or negative?\n\n{t}"
            for t in ("The hotel was wonderful.", "The phone broke within a week.")]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False,
                                             add_generation_prompt=True) for ask in asks]
    choice = StructuredOutputs(choice=["positive", "negative"])
    first = sample_answers(llm, prompts, choice, k=4, seed=3)
    assert [len(s) for s in first] == [4, 4] and all(a in ("positive", "negative") for s in first for a in s)
    assert sample_answers(llm, prompts, choice, k=4, seed=3) == first
