import pytest
from rouge_score import rouge_scorer

from course_utils.architecture.transformer import Llama
from course_utils.choosing.temperature import (
    Summaries,
    pairwise_cosine,
    pairwise_rouge_l,
    summarise,
    summary_passages,
    temperature_table,
)
from course_utils.models import load_embedder
from course_utils.serving import LLM


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()


def test_the_passages_are_course_prose_of_the_asked_length():
    passages = summary_passages(5, min_words=150, max_words=500)
    assert len(passages) == len(set(passages)) == 5
    assert all(150 <= len(p.split()) <= 500 for p in passages)
    with pytest.raises(ValueError, match="asked for 9"):
        summary_passages(9, chapters=("02_scaling_laws",))


def test_rouge_l_is_the_longest_common_subsequence_f1_of_rouge_score():
    assert pairwise_rouge_l(["the cat sat on the mat", "the cat lay on the mat"]) == pytest.approx(5 / 6)
    texts = ["Attention mixes tokens.", "Tokens are mixed by attention layers.", "A cache keeps keys."]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(scorer.score(texts[a], texts[b])["rougeL"].fmeasure for a, b in pairs) / 3
    assert pairwise_rouge_l(texts) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least two"):
        pairwise_rouge_l(["alone"])


def test_identical_samples_agree_fully_and_the_table_reports_it(embedder):
    passage = ("The key-value cache stores the keys and values of earlier tokens. Each decoding step then computes "
               "attention for the new token only. The cache grows with the context length and the batch size.")
    same = "The cache stores keys and values of earlier tokens so each step only computes the new token."
    summaries = Summaries([passage, passage], (0.0, 1.0), {
        (0, 0.0): [same, same], (1, 0.0): [same, same],
        (0, 1.0): [same, "Bananas are yellow and grow in bunches on tall plants."],
        (1, 1.0): ["The cache grows with the context length and the batch size.", same]})
    assert pairwise_cosine([same, same], embedder) == pytest.approx(1.0)
    rows = {row["temperature"]: row for row in temperature_table(summaries, embedder)}
    assert rows[0.0]["rouge_l"] == (1.0, 1.0, 1.0) and rows[0.0]["cosine"][0] == pytest.approx(1.0)
    assert rows[1.0]["rouge_l"][0] < 1.0 and rows[1.0]["n"] == 2
    assert rows[1.0]["faithfulness"][0] < rows[0.0]["faithfulness"][0]  # the banana sentence has no support
    mean, low, high = rows[1.0]["cosine"]
    assert low <= mean <= high


def test_greedy_summaries_repeat_and_seeded_sampling_repeats_run_to_run(smollm2):
    model, tokenizer = smollm2
    llm = LLM.from_model(Llama.from_hf(model), tokenizer, num_blocks=128, block_size=16, max_model_len=1024)
    passages = summary_passages(1)
    first = summarise(llm, passages, (0.0, 1.0), samples=2, max_tokens=12, seed=3)
    again = summarise(llm, passages, (0.0, 1.0), samples=2, max_tokens=12, seed=3)
    assert first.texts[(0, 0.0)][0] == first.texts[(0, 0.0)][1]  # temperature 0: the same summary every time
    assert first.texts == again.texts  # each sample's own seed makes the sampled run repeat exactly
    with pytest.raises(ValueError, match="at least 2"):
        summarise(llm, passages, samples=1)
