"""QuantSim: quantizers placed on a prepared model from an (AIMET-compatible) config."""

from core.quantsim.config import Override, QuantSimConfig, load_config, parse_config, preset_names
from core.quantsim.mixin import QuantizationMixin
from core.quantsim.placement import ModulePlan, QuantParams, plan_quantizers
from core.quantsim.sim import QuantSim

__all__ = [
    "ModulePlan",
    "Override",
    "QuantParams",
    "QuantSim",
    "QuantSimConfig",
    "QuantizationMixin",
    "load_config",
    "parse_config",
    "plan_quantizers",
    "preset_names",
]
