"""Range setting ("quant schemes"): statistics observed during calibration → an Encoding.

Each scheme is a module that registers itself; ``make_range_setter(name, spec)`` looks it up.

>>> from core.quant.encoding import QuantSpec
>>> rs = make_range_setter("min_max", QuantSpec(bitwidth=8))
>>> rs.observe(torch.tensor([-1.0, 2.0]))
>>> round(float(rs.compute().max[0]), 2)
2.0
"""

import torch  # noqa: F401  (doctest)

from core.quant.range_setters import min_max, mse, percentile, sqnr  # noqa: F401  (registration)
from core.quant.range_setters.base import RangeSetter, make_range_setter, scheme_names

__all__ = ["RangeSetter", "make_range_setter", "scheme_names"]
