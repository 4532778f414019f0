import pytest

from course_utils.chat import chat_inputs, generate, generate_batch
from course_utils.evaluation import distinct_n, late_window_perplexity


def test_chat_inputs_end_with_the_assistant_header(smollm2):
    _, tokenizer = smollm2
    inputs = chat_inputs(tokenizer, "Hi")
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape
    assert tokenizer.decode(inputs["input_ids"][0]).rstrip().endswith("<|im_start|>assistant")


def test_greedy_is_deterministic_and_sampling_is_seeded(smollm2):
    model, tokenizer = smollm2
    a = generate(model, tokenizer, "Name a colour.", max_new_tokens=8)
    b = generate(model, tokenizer, "Name a colour.", max_new_tokens=8)
    assert a[0].token_ids == b[0].token_ids
    s1 = generate(model, tokenizer, "Name a colour.", n=3, temperature=1.0, max_new_tokens=8, seed=3)
    s2 = generate(model, tokenizer, "Name a colour.", n=3, temperature=1.0, max_new_tokens=8, seed=3)
    assert [c.token_ids for c in s1] == [c.token_ids for c in s2]


def test_a_left_padded_batch_decodes_like_one_prompt_at_a_time(smollm2):
    model, tokenizer = smollm2
    prompts = ["Name a colour.", "What is the capital of France? Answer in one word, please.", "Count to five."]
    batched = generate_batch(model, tokenizer, prompts, max_new_tokens=12)
    assert [len(group) for group in batched] == [1, 1, 1]
    for prompt, [completion] in zip(prompts, batched, strict=True):
        [alone] = generate(model, tokenizer, prompt, max_new_tokens=12)
        assert completion.token_ids == alone.token_ids
    sampled = generate_batch(model, tokenizer, prompts[:2], n=3, temperature=1.0, max_new_tokens=4, seed=0)
    assert [len(group) for group in sampled] == [3, 3]
    with pytest.raises(ValueError, match="prompts"):
        generate_batch(model, tokenizer, [])


def test_stop_strings_end_the_completion_before_them(smollm2):
    model, tokenizer = smollm2
    [full] = generate(model, tokenizer, "Count from 1 to 10, separated by commas.", max_new_tokens=30)
    assert "4" in full.text
    [cut] = generate(model, tokenizer, "Count from 1 to 10, separated by commas.", max_new_tokens=30, stop=["4"])
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.index("4")]
    assert cut.n_tokens < full.n_tokens and tokenizer.decode(cut.token_ids).startswith(cut.text)
    with pytest.raises(ValueError, match="stop"):
        generate(model, tokenizer, "Hi", stop="4")


def test_finish_reason_and_length_cap(smollm2):
    model, tokenizer = smollm2
    [short] = generate(model, tokenizer, "Write a long story about a dragon.", max_new_tokens=3)
    assert short.finish_reason == "length" and short.n_tokens == 3
    [done] = generate(model, tokenizer, "What is the capital of France?", max_new_tokens=60)
    assert done.finish_reason == "stop" and done.n_tokens < 60


@pytest.mark.parametrize(
    "kwargs, message",
    [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
     ({"n": 0}, "n and max_new_tokens"), ({"n": 2}, "greedy"), ({"top_k": -1}, "top_k")],
)
def test_bad_sampling_settings_are_explained(smollm2, kwargs, message):
    model, tokenizer = smollm2
    with pytest.raises(ValueError, match=message):
        generate(model, tokenizer, "Hi", **kwargs)


def test_bad_messages_are_explained(smollm2):
    _, tokenizer = smollm2
    with pytest.raises(TypeError, match="role"):
        chat_inputs(tokenizer, [{"text": "hi"}])


def test_distinct_n():
    assert distinct_n(["a b c", "a b c"], 2) == 0.5
    assert distinct_n(["a b c d"], 1) == 1.0
    assert distinct_n(["a"], 2) == 0.0
    assert distinct_n([], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)


def test_late_window_perplexity_matches_the_loss_by_hand(smollm2):
    import torch

    model, tokenizer = smollm2
    ids = tokenizer("one two three four five six seven eight nine ten eleven twelve", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
    assert late_window_perplexity(model, ids, ids.shape[1], 1.0) == pytest.approx(float(nll.mean().exp()), rel=1e-5)
    assert late_window_perplexity(model, ids, ids.shape[1], 0.25) == pytest.approx(
        float(nll[-round((ids.shape[1] - 1) * 0.25):].mean().exp()), rel=1e-5)
    with pytest.raises(ValueError, match="window"):
        late_window_perplexity(model, ids, 10_000)
