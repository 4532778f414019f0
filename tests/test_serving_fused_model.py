"""The engine's fused forward pass gives the course Llama's logits and follows its weights."""

import pytest
import torch
from torch import nn

from course_utils.architecture.rope import RopeScaling
from course_utils.architecture.transformer import KVCache, Llama, LlamaConfig
from course_utils.serving import fused_elementwise
from course_utils.serving.fused_model import FusedLlama
from course_utils.serving.paged_kernel import kernel_status
from course_utils.serving.prepacked import can_pack_for_mkl, can_prepack

pytestmark = pytest.mark.skipif(not can_prepack(nn.Linear(2, 2)), reason="this PyTorch build has no oneDNN packing")


def _logits_both_ways(model: Llama, ids: torch.Tensor, logits_at: torch.Tensor,
                      fuse_elementwise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(ids.shape[1])
    with torch.inference_mode():
        expected = model(ids, KVCache(model.config, 1, ids.shape[1]), positions=positions, logits_at=logits_at)
        fused = FusedLlama(model, rows_hint=8, fuse_elementwise=fuse_elementwise)
        got = fused(ids, KVCache(model.config, 1, ids.shape[1]), positions, logits_at)
    return got, expected


@pytest.mark.parametrize("config", [
    LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96),  # grouped-query
    LlamaConfig(vocab_size=64, dim=48, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim=80, tie_embeddings=False,
                norm_eps=1e-6, rope_base=500.0, attention="naive"),  # multi-head, own head, other attention
    LlamaConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, head_dim=24,
                rope_scaling=RopeScaling("yarn", factor=4.0, original_max_position=16)),
], ids=["gqa", "mha", "yarn-head24"])
@pytest.mark.parametrize("fuse_elementwise", [False, True], ids=["torch-elementwise", "compiled-elementwise"])
def test_fused_logits_equal_the_models(config, fuse_elementwise):
    if fuse_elementwise and not fused_elementwise.available():
        pytest.skip(f"the compiled loops were not built here: {kernel_status()}")
    torch.manual_seed(0)
    model = Llama(config)
    model.init_weights()
    for param in model.parameters():  # norm scales away from 1, so a misplaced scale shows
        if param.dim() == 1:
            nn.init.uniform_(param, 0.5, 1.5)
    ids = torch.randint(0, 64, (1, 12))
    fused, expected = _logits_both_ways(model, ids, torch.tensor([3, 11]), fuse_elementwise)
    assert fused.shape == expected.shape == (1, 2, 64)
    assert torch.allclose(fused, expected, atol=1e-5, rtol=1e-4)


def test_fused_forward_follows_a_weight_changed_after_packing():
    torch.manual_seed(1)
    model = Llama(LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96))
    model.init_weights()
    fused, ids, at = FusedLlama(model, rows_hint=4), torch.randint(0, 64, (1, 6)), torch.tensor([5])
    with torch.no_grad():
        model.layers[1].self_attn.k_proj.weight.mul_(3.0)  # one of the three stacked in qkv
        model.layers[0].post_attention_layernorm.weight.fill_(2.0)  # read at every call, not packed
    with torch.inference_mode():
        got = fused(ids, KVCache(model.config, 1, 6), torch.arange(6), at)
        expected = model(ids, KVCache(model.config, 1, 6), positions=torch.arange(6), logits_at=at)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_a_model_with_lora_layers_is_served_through_a_prepacked_copy_with_its_logits():
    from course_utils.finetune.lora import LoRAConfig, inject_lora
    from course_utils.serving.block_manager import BlockManager
    from course_utils.serving.model_runner import ModelRunner
    from course_utils.serving.sequence import Sequence

    torch.manual_seed(2)
    model = Llama(LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96))
    model.init_weights()
    inject_lora(model, LoRAConfig(r=4, targets=("q_proj", "v_proj")))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the output
            nn.init.normal_(param, std=0.5)
    assert not FusedLlama.supports(model)
    with pytest.raises(ValueError, match="prepacked_copy"):
        FusedLlama(model, rows_hint=4)
    runner, manager = ModelRunner(model, 16, 4, max_num_seqs=4), BlockManager(16, 4, enable_prefix_caching=False)
    seq = Sequence(list(range(1, 8)))
    manager.allocate(seq)
    seq.num_new_tokens = len(seq)
    logits = runner.run([seq], manager, num_decode=0)[0][-1]
    with torch.inference_mode():
        expected = model(torch.tensor([seq.token_ids]))[0, -1]
    assert torch.allclose(logits, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("library", FusedLlama.FULL_BATCH_LIBRARIES)
def test_a_full_batch_gives_the_models_logits_with_either_library(library):
    if library == "mkl" and not can_pack_for_mkl():
        pytest.skip("this PyTorch build has no MKL packing")
    torch.manual_seed(3)
    model = Llama(LlamaConfig(vocab_size=64, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96))
    model.init_weights()
    ids, at = torch.randint(0, 64, (1, 10)), torch.arange(10)  # 10 rows through every projection and the head
    fused = FusedLlama(model, rows_hint=10, full_batch=library)
    assert fused.full_batch == library
    assert all((lin.mkl_packed is not None) == (library == "mkl") for lin in fused.linears)
    with torch.inference_mode():
        got = fused(ids, KVCache(model.config, 1, 10), torch.arange(10), at)
        expected = model(ids, KVCache(model.config, 1, 10), positions=torch.arange(10), logits_at=at)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_the_full_batch_library_is_measured_once_per_shape_and_a_wrong_name_is_refused(monkeypatch):
    torch.manual_seed(4)
    model = Llama(LlamaConfig(vocab_size=64, dim=40, n_layers=1, n_heads=5, n_kv_heads=1, ffn_dim=72))
    model.init_weights()
    timed = []
    monkeypatch.setattr(FusedLlama, "_time_libraries", lambda self: timed.append(1) or "onednn")
    first, second = FusedLlama(model, rows_hint=6), FusedLlama(model, rows_hint=6)
    assert first.full_batch == second.full_batch == "onednn"
    assert len(timed) == (1 if can_pack_for_mkl() else 0)  # without MKL there is nothing to measure
    with pytest.raises(ValueError, match="full_batch must be one of"):
        FusedLlama(model, rows_hint=6, full_batch="blas")


@pytest.mark.skipif(not can_pack_for_mkl(), reason="this PyTorch build has no MKL packing")
def test_measuring_the_libraries_times_both_and_keeps_the_faster(monkeypatch):
    torch.manual_seed(5)
    model = Llama(LlamaConfig(vocab_size=64, dim=24, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=40))
    model.init_weights()
    fused = FusedLlama(model, rows_hint=3, full_batch="onednn")
    seen = []

    def fake_pass(self, rows):  # MKL "takes" 1 s, oneDNN 2 s: the measurement must keep MKL
        seen.append(self.lm_head.mkl_packed is not None)
        return 1.0 if seen[-1] else 2.0

    monkeypatch.setattr(FusedLlama, "weights_pass_seconds", fake_pass)
    assert fused._time_libraries() == "mkl" and set(seen) == {True, False}
