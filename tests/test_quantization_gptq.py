"""GPTQ: the Hessian, exactness of the lazy block updates, and beating round-to-nearest on a real layer."""

import pytest
import torch

from course_utils.quantization.gptq import HessianAccumulator, gptq_quantize, rtn_quantize, rtn_round_trip
from course_utils.tasks import load_task


def test_the_hessian_is_two_over_n_times_x_transpose_x():
    torch.manual_seed(0)
    x = torch.randn(3, 50, 16)
    acc = HessianAccumulator(16)
    acc.add(x[0])
    acc.add(x[1:])
    rows = x.reshape(-1, 16).double()
    assert torch.allclose(acc.hessian.double(), 2 / 150 * rows.T @ rows, rtol=1e-6)
    with pytest.raises(ValueError, match="no calibration"):
        _ = HessianAccumulator(4).hessian


def _synthetic(seed: int = 0):
    torch.manual_seed(seed)
    mixing = torch.randn(64, 64) / 8
    x = torch.randn(512, 64) @ mixing + 0.1 * torch.randn(512, 64)  # correlated inputs, as real ones are
    acc = HessianAccumulator(64)
    acc.add(x)
    return torch.randn(48, 64) * 0.05, acc.hessian, x


@pytest.mark.parametrize("shape", [(48, 576), (16, 1536), (8, 100)], ids=str)
@pytest.mark.parametrize("group_size", [128, 32, None])
def test_the_round_trip_without_codes_equals_round_to_nearest_decoded(shape, group_size):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 0.05
    w[0, -1] = 1.0  # an outlier in the last (shorter) group
    assert torch.equal(rtn_round_trip(w, 4, group_size), rtn_quantize(w, 4, group_size).dequantize())


def test_lazy_block_updates_give_the_same_codes_as_one_column_at_a_time():
    weight, hessian, _ = _synthetic()
    one_block = gptq_quantize(weight, hessian, 4, 16, act_order=True, block_size=1)
    blocks = gptq_quantize(weight, hessian, 4, 16, act_order=True, block_size=16)
    assert (one_block.q == blocks.q).float().mean() > 0.999


def test_weights_stacked_on_one_hessian_quantize_as_each_would_alone():
    weight, hessian, _ = _synthetic(3)  # as q, k and v share their input, and so its Hessian
    parts = gptq_quantize(weight, hessian, 4, 16).split([20, 28])
    for part, alone in zip(parts, (weight[:20], weight[20:]), strict=True):
        single = gptq_quantize(alone, hessian, 4, 16)
        assert (part.q == single.q).float().mean() > 0.999
        assert torch.allclose(part.scale, single.scale) and torch.equal(part.group_index, single.group_index)


def test_groups_follow_the_activation_order_and_decode_consistently():
    weight, hessian, _ = _synthetic(1)
    result = gptq_quantize(weight, hessian, 4, group_size=16, act_order=True)
    assert result.q.max() <= 15 and result.scale.shape == (48, 4)
    assert torch.bincount(result.group_index).tolist() == [16] * 4
    order = torch.argsort(torch.diag(hessian), descending=True)
    assert result.group_index[order].tolist() == sorted(result.group_index.tolist())  # busiest inputs first
    g = result.group_index
    assert torch.equal(result.dequantize(), (result.q.float() - result.zero[:, g]) * result.scale[:, g])


def test_an_input_that_is_always_zero_gets_a_zero_weight_and_shapes_are_checked():
    weight, hessian, _ = _synthetic(2)
    hessian[5, :] = 0
    hessian[:, 5] = 0
    assert torch.all(gptq_quantize(weight, hessian, 4, 16).dequantize()[:, 5] == 0)
    with pytest.raises(ValueError, match="Hessian must be"):
        gptq_quantize(weight, hessian[:10, :10])


LAYERS = ["self_attn.q_proj", "mlp.down_proj"]


@pytest.fixture(scope="module")
def real_inputs(smollm2):
    """Inputs of two linear layers of SmolLM2 (block 6): 4 calibration passages and 4 others,
    each about 40 of the course's prompts joined (some 3,000 tokens for each side, more than the
    1,536 inputs of down_proj, so that the Hessian has full rank)."""
    model, tokenizer = smollm2
    layers = {name: model.model.layers[6].get_submodule(name) for name in LAYERS}
    captured = {name: [] for name in LAYERS}
    hooks = [layer.register_forward_hook(lambda _m, inputs, _out, name=name: captured[name].append(inputs[0]))
             for name, layer in layers.items()]
    texts = [r["question"] for r in load_task("arithmetic")] + [r["text"] for r in load_task("sentiment")]
    passages = [" ".join(texts[i::8]) for i in range(8)]
    try:
        with torch.no_grad():
            for passage in passages:
                model(**tokenizer(passage, return_tensors="pt"))
    finally:
        for hook in hooks:
            hook.remove()
    split = {}
    for name in LAYERS:
        rows = [c.reshape(-1, c.shape[-1]) for c in captured[name]]
        # even passages calibrate, odd ones measure: no credit for fitting the calibration set
        split[name] = (layers[name].weight.detach(), torch.cat(rows[0::2]), torch.cat(rows[1::2]))
    return split


@pytest.mark.parametrize("which", LAYERS)
def test_gptq_beats_round_to_nearest_on_a_real_layer_with_real_calibration_data(real_inputs, which):
    weight, calibration, held_out = real_inputs[which]
    acc = HessianAccumulator(weight.shape[1])
    acc.add(calibration)

    def output_error(result):
        return ((held_out @ (weight - result.dequantize()).T) ** 2).mean().item()

    rtn = output_error(rtn_quantize(weight, 4, 64))
    for act_order in (False, True):
        assert output_error(gptq_quantize(weight, acc.hessian, 4, 64, act_order=act_order)) < 0.8 * rtn
