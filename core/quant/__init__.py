"""Quantization primitives → encoding value object → range setting → quantizer module.

Four layers, each importing only the ones before it (as in AIMET v2 and optimum-quanto).
"""

from core.quant.encoding import Encoding, QuantSpec
from core.quant.primitives import dequantize, fake_quantize, quantize
from core.quant.quantizer import Quantizer
from core.quant.range_setters import make_range_setter, scheme_names

__all__ = [
    "Encoding",
    "QuantSpec",
    "Quantizer",
    "dequantize",
    "fake_quantize",
    "make_range_setter",
    "quantize",
    "scheme_names",
]
