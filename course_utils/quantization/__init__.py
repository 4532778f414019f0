"""Quantization: from integer rounding to the formats models ship in, each tested against its reference.

* :mod:`~course_utils.quantization.schemes`: the registry every scheme is looked up in;
* :mod:`~course_utils.quantization.integer`: absmax and zero-point integers, per tensor, channel or group;
* :mod:`~course_utils.quantization.gguf_blocks`: llama.cpp's Q8_0, Q4_0 and Q4_1, byte-exact with ``gguf``;
* :mod:`~course_utils.quantization.nf4`: QLoRA's NF4 with double quantization, as bitsandbytes stores it;
* :mod:`~course_utils.quantization.llm_int8`: LLM.int8()'s int8 matmul with outliers in float, and
  the census of outlier features in a model's layer inputs;
* :mod:`~course_utils.quantization.gptq`: GPTQ and its round-to-nearest baseline;
* :mod:`~course_utils.quantization.awq`: AWQ's activation-aware scale search and folding;
* :mod:`~course_utils.quantization.calibrated`: GPTQ and AWQ over a whole model, block by block;
* :mod:`~course_utils.quantization.model`: whole models, layers stored quantized, memory measured;
* :mod:`~course_utils.quantization.measuring`: perplexity, size and time of every scheme, one loop.
"""

from course_utils.quantization.awq import activation_magnitude, awq_weight, fold_scales, search_scales
from course_utils.quantization.calibrated import awq_model, gptq_model  # registers the calibrated schemes
from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import HessianAccumulator, gptq_quantize, rtn_quantize
from course_utils.quantization.integer import dequantize_int, quantize_int
from course_utils.quantization.llm_int8 import int8_matmul, linear_inputs, outlier_census
from course_utils.quantization.model import (
    QuantizedLinear,
    dequantize_model,
    linear_bits_per_weight,
    model_bytes,
    quantize_model,
)
from course_utils.quantization.nf4 import dequantize_nf4, quantize_nf4
from course_utils.quantization.schemes import SCHEMES, Scheme, get_scheme, register_scheme

__all__ = ["SCHEMES", "HessianAccumulator", "activation_magnitude", "awq_model", "awq_weight", "fold_scales",
           "gptq_model", "search_scales", "QuantizedLinear", "Scheme", "dequantize_gguf", "dequantize_int",
           "dequantize_model", "dequantize_nf4", "get_scheme", "gptq_quantize", "int8_matmul", "linear_bits_per_weight",
           "linear_inputs", "model_bytes", "outlier_census", "quantize_gguf", "quantize_int", "quantize_model",
           "quantize_nf4", "register_scheme", "rtn_quantize"]
