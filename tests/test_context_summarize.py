"""Long-document summarisation with a stub model: the calls each method makes, all within the budget."""

import math

import pytest

from course_utils.context.chunking import fixed_token_chunks
from course_utils.context.summarize import summarize
from course_utils.tokens import count_chat_tokens

MODEL = "cl100k_base"
DOCUMENT = " ".join(f"Paragraph {i} tells of event {i} in some detail, with names and numbers." for i in range(300))


class Recorder:
    """A stand-in model: replies with a short fixed-size 'summary' and records every prompt."""

    def __init__(self, words: int = 30):
        self.prompts, self.batches, self.words = [], [], words

    def __call__(self, prompts):
        self.prompts += prompts
        self.batches.append(len(prompts))
        return [" ".join(["summary"] * self.words) for _ in prompts]


@pytest.mark.parametrize("method", ["map_reduce", "refine", "hierarchical"])
def test_every_prompt_fits_and_the_calls_are_as_the_method_says(method):
    stub = Recorder()
    window, reply = 1024, 64
    run = summarize(DOCUMENT, stub, MODEL, method, window=window, max_new_tokens=reply, chunk_tokens=400,
                    progress=False)
    chunks = len(fixed_token_chunks(DOCUMENT, 400, 0, MODEL))
    assert chunks > 5
    assert all(count_chat_tokens(p, MODEL) <= window - reply for p in stub.prompts)
    assert run.calls == len(stub.prompts)
    assert run.prompt_tokens == sum(count_chat_tokens(p, MODEL) for p in stub.prompts)
    if method == "refine":
        assert stub.batches == [1] * chunks  # one call after another
    elif method == "map_reduce":
        assert stub.batches == [chunks, 1]  # all chunks at once, then one combining call
    else:
        assert stub.batches[0] == chunks and stub.batches[-1] == 1
        assert run.calls >= chunks + 1 and len(stub.batches) <= 1 + math.ceil(math.log2(chunks)) + 1
    assert run.summary.startswith("summary")


def test_hierarchical_handles_what_one_reduce_cannot():
    long_replies = Recorder(words=180)  # chunk summaries too long to combine in one prompt
    with pytest.raises(ValueError, match="exceeds"):
        summarize(DOCUMENT, long_replies, MODEL, "map_reduce", window=1024, max_new_tokens=200, chunk_tokens=300,
                  progress=False)
    run = summarize(DOCUMENT, Recorder(words=180), MODEL, "hierarchical", window=1024, max_new_tokens=200,
                    chunk_tokens=300, progress=False)
    assert run.calls > len(fixed_token_chunks(DOCUMENT, 300, 0, MODEL)) + 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        summarize("text", Recorder(), MODEL, "extractive")
    with pytest.raises(ValueError, match="do not fit"):
        summarize("text", Recorder(), MODEL, window=256, max_new_tokens=128, chunk_tokens=100)


def test_the_embedded_model_completes_a_batch_of_prompts(smollm2):
    from course_utils.context.summarize import model_completer

    model, tokenizer = smollm2
    complete = model_completer(model, tokenizer, max_new_tokens=6)
    replies = complete([[{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "Name a colour."}]])
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)


def test_section_coverage_rewards_a_summary_that_touches_every_section():
    from context_helpers import WordHashEmbedder

    from course_utils.context.summarize import section_coverage

    sections = ["Lockers open with four digit codes.", "Green tea steeps for two minutes.", "Trains leave at noon."]
    everything = "Lockers open with codes. Green tea steeps briefly. Trains leave at noon."
    one_topic = "Lockers open with codes."
    embedder = WordHashEmbedder()
    full, partial = section_coverage(everything, sections, embedder), section_coverage(one_topic, sections, embedder)
    assert len(full) == 3 and all(f >= p - 1e-9 for f, p in zip(full, partial, strict=True))
    assert sum(full) > sum(partial) + 0.5
    assert section_coverage("", sections, embedder) == [0.0, 0.0, 0.0]
