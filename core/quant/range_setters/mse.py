"""MSE-optimal range: minimise the mean squared quantization error (clipping counted as is)."""

from core.quant.range_setters.base import register_scheme
from core.quant.range_setters.sqnr import HistogramSearchRangeSetter


@register_scheme("mse")
class MseRangeSetter(HistogramSearchRangeSetter):
    gamma = 1.0
