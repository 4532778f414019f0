"""The llama.cpp anchor of the serving benchmark: the float32 GGUF holds the engine's own weights,
and llama.cpp's server (where the optional extra is installed) answers the benchmark's requests."""

from pathlib import Path

import gguf
import pytest
import torch

from course_utils import assets
from course_utils.defaults import DEFAULT_MODEL
from course_utils.models import load_model
from course_utils.serving.llama_cpp_anchor import (
    LlamaCppServer,
    concurrent_completions,
    dequantized_gguf,
    llama_cpp_missing,
)


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory):
    return dequantized_gguf(assets.asset_path(DEFAULT_MODEL), tmp_path_factory.mktemp("anchor") / "f32.gguf")


def test_the_float32_gguf_keeps_the_metadata_and_stores_every_tensor_as_float32(f32_gguf):
    source, written = gguf.GGUFReader(assets.asset_path(DEFAULT_MODEL)), gguf.GGUFReader(f32_gguf)
    assert {t.tensor_type for t in source.tensors} != {gguf.GGMLQuantizationType.F32}  # the asset is quantized
    assert {t.tensor_type for t in written.tensors} == {gguf.GGMLQuantizationType.F32}
    assert [(t.name, list(t.shape)) for t in written.tensors] == [(t.name, list(t.shape)) for t in source.tensors]
    assert set(written.fields) == set(source.fields)
    for name, field in source.fields.items():
        if name == gguf.Keys.General.FILE_TYPE:
            assert written.fields[name].contents() == gguf.LlamaFileType.ALL_F32
        elif not name.startswith("GGUF."):
            assert written.fields[name].contents() == field.contents(), name


def test_transformers_reads_the_float32_gguf_as_exactly_the_engines_weights(f32_gguf):
    engine_weights = load_model(DEFAULT_MODEL, device="cpu")[0].state_dict()  # the de-quantized asset
    anchor_weights = load_model(f32_gguf, device="cpu")[0].state_dict()
    assert anchor_weights.keys() == engine_weights.keys()
    for name, tensor in engine_weights.items():
        assert torch.equal(anchor_weights[name], tensor), name


@pytest.mark.skipif(llama_cpp_missing() is not None, reason=f"{llama_cpp_missing()}")
def test_llama_cpp_on_the_float32_gguf_answers_as_the_engine_does_greedy(f32_gguf):
    from course_utils.architecture.transformer import Llama
    from course_utils.serving import LLM, SamplingParams

    hf_model, tokenizer = load_model(DEFAULT_MODEL, device="cpu")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True)
               for q in ("Name three colours.", "What is 12 times 3?")]
    with LlamaCppServer(f32_gguf, threads=2) as server:
        result = concurrent_completions(server.url, prompts, max_tokens=12)
    assert result["requests"] == 2 and result["output_tokens"] == 24 and result["tokens_per_s"] > 0
    engine = LLM.from_model(Llama.from_hf(hf_model), tokenizer, max_num_seqs=2)
    answers = [o.outputs[0].text for o in engine.generate(prompts, SamplingParams(temperature=0, max_tokens=12))]
    assert all(answers)
    for theirs, ours in zip(result["texts"], answers, strict=True):  # ours may stop early at end-of-text
        assert theirs.startswith(ours)


def test_a_missing_server_module_is_named_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    message = llama_cpp_missing()
    assert message.startswith("llama_cpp is not installed") and ".[anchor]" in message
    with pytest.raises(RuntimeError, match="anchor"):
        LlamaCppServer(Path("model.gguf"), threads=1)
