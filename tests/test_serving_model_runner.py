"""The paged model runner: decode groups, and attention through block tables against a plain cache."""

import pytest
import torch

from course_utils.architecture.transformer import KVCache, Llama, LlamaConfig
from course_utils.serving.block_manager import BlockManager
from course_utils.serving.model_runner import MAX_DECODE_GROUPS, ModelRunner, decode_groups
from course_utils.serving.paged_kernel import load_kernel
from course_utils.serving.sequence import Sequence


def _allocated(lengths: list[int], manager: BlockManager) -> list[Sequence]:
    seqs = [Sequence(list(range(1, n + 1))) for n in lengths]
    for seq in seqs:
        manager.allocate(seq)
        seq.num_new_tokens = n_new = len(seq) - seq.num_computed_tokens
        assert n_new > 0
    return seqs


def test_decode_groups_sort_by_length_and_pad_only_to_their_own_longest():
    manager = BlockManager(64, 4, enable_prefix_caching=False)
    lengths = [30, 3, 17, 9, 25, 5, 12, 21, 2, 14]
    seqs = _allocated(lengths, manager)
    groups = decode_groups(seqs, num_decode=8, block_size=4, device="cpu")  # the last two are prefills
    assert len(groups) == min(MAX_DECODE_GROUPS, 2)
    rows = torch.cat([g.rows for g in groups]).tolist()
    assert sorted(rows) == list(range(8)) and [lengths[i] for i in rows] == sorted(lengths[:8])
    for g in groups:
        longest = max(lengths[i] for i in g.rows.tolist())
        assert g.block_tables.shape == (len(g.rows), -(-longest // 4))
        assert g.mask.shape == (len(g.rows), 1, 1, g.block_tables.shape[1] * 4)
        assert g.mask.sum(-1).flatten().tolist() == [lengths[i] for i in g.rows.tolist()]
    assert len(decode_groups(seqs, num_decode=1, block_size=4, device="cpu")) == 1


@pytest.mark.parametrize("decode_kernel", [True, False], ids=["in-place", "gather"])
def test_paged_decode_matches_a_contiguous_cache_for_sequences_of_different_lengths(decode_kernel):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96)
    model = Llama(config)
    model.init_weights()
    manager = BlockManager(64, 4, enable_prefix_caching=False)
    runner = ModelRunner(model, 64, 4, max_num_seqs=16, decode_kernel=decode_kernel)
    assert runner.cache.in_place == (decode_kernel and load_kernel() is not None)
    lengths = [3, 11, 6, 19, 1, 8, 14, 5, 9]
    seqs = _allocated(lengths, manager)
    runner.run(seqs, manager, num_decode=0)  # prefill every prompt
    for seq in seqs:
        seq.num_computed_tokens, seq.num_new_tokens = len(seq), 1
        seq.output_token_ids.append(7)
        manager.append_slot(seq)
    paged = runner.run(seqs, manager, num_decode=len(seqs))  # one decode step (gather: several groups)
    for seq, logits in zip(seqs, paged, strict=True):
        logits = logits[-1]  # (1, V): no drafts
        cache = KVCache(config, 1, len(seq))
        expected = model(torch.tensor([seq.token_ids]), cache)[0, -1]
        assert torch.allclose(logits, expected, atol=1e-5)


def test_the_step_profile_accounts_for_the_whole_step_and_finds_each_part():
    from course_utils.serving.config import EngineConfig
    from course_utils.serving.engine import LLMEngine
    from course_utils.serving.sampling import SamplingParams
    from course_utils.serving.step_profile import profile_steps

    class Tokenizer:
        eos_token_id = 0

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    torch.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=50, dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=96))
    model.init_weights()
    engine = LLMEngine(model, Tokenizer(), EngineConfig(num_blocks=64, block_size=4, max_model_len=64, max_num_seqs=8))
    for n in range(1, 9):
        engine.add_request(list(range(1, n + 3)), SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    engine.step()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        profile_steps(engine, 0)
    b = profile_steps(engine, 5)
    assert b.steps == 5 and b.sequences == 8
    assert b.weights_ms > 0 and b.attention_ms > 0 and b.elementwise_ms > 0  # each part is found
    assert sum(b.shares().values()) == pytest.approx(1.0)
    assert b.as_dict()["shares"].keys() == {"weights", "attention", "elementwise", "other"}


def test_a_runner_without_the_kernel_gathers_instead(monkeypatch):
    import course_utils.serving.model_runner as model_runner

    monkeypatch.setattr(model_runner, "load_kernel", lambda: None)  # as on a machine without a C compiler
    model = Llama(LlamaConfig(vocab_size=50, dim=48, n_layers=1, n_heads=6, n_kv_heads=2, ffn_dim=96))
    assert not ModelRunner(model, 16, 4, max_num_seqs=4).cache.in_place
