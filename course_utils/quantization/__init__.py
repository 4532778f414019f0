"""Quantization: from integer rounding to the formats models ship in, each tested against its reference.

* :mod:`~course_utils.quantization.integer`: absmax and zero-point integers, per tensor, channel or group;
* :mod:`~course_utils.quantization.gguf_blocks`: llama.cpp's Q8_0, Q4_0 and Q4_1, byte-exact with ``gguf``;
* :mod:`~course_utils.quantization.nf4`: QLoRA's NF4 with double quantization, as bitsandbytes stores it;
* :mod:`~course_utils.quantization.llm_int8`: LLM.int8()'s int8 matmul with outliers in float;
* :mod:`~course_utils.quantization.gptq`: GPTQ and its round-to-nearest baseline;
* :mod:`~course_utils.quantization.model`: whole models, layers stored quantized, memory measured.
"""

from course_utils.quantization.gguf_blocks import dequantize_gguf, quantize_gguf
from course_utils.quantization.gptq import HessianAccumulator, gptq_quantize, rtn_quantize
from course_utils.quantization.integer import dequantize_int, quantize_int
from course_utils.quantization.llm_int8 import int8_matmul
from course_utils.quantization.model import (
    SCHEMES,
    QuantizedLinear,
    dequantize_model,
    linear_bits_per_weight,
    model_bytes,
    quantize_model,
)
from course_utils.quantization.nf4 import dequantize_nf4, quantize_nf4

__all__ = ["SCHEMES", "HessianAccumulator", "QuantizedLinear", "dequantize_gguf", "dequantize_int", "dequantize_model",
           "dequantize_nf4", "gptq_quantize", "int8_matmul", "linear_bits_per_weight", "model_bytes", "quantize_gguf",
           "quantize_int", "quantize_model", "quantize_nf4", "rtn_quantize"]
