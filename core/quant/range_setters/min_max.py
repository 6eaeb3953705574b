"""Min-max ("tf"): the encoding covers everything observed. No clipping, most rounding noise."""

from core.quant.range_setters.base import RangeSetter, register_scheme


@register_scheme("min_max", "tf", "post_training_tf", "minmax")
class MinMaxRangeSetter(RangeSetter):
    pass
