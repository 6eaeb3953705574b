"""aimet-onnx, the outside consumer of lowbit's encodings, imported once per session (it takes seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest


def aimet_oracle() -> SimpleNamespace:
    """aimet_onnx's QuantizationSimModel, load_encodings_to_sim and the config files its wheel ships."""
    from aimet_onnx.quantsim import QuantizationSimModel, load_encodings_to_sim

    spec = importlib.util.find_spec("aimet_onnx")
    assert spec is not None and spec.submodule_search_locations
    configs = Path(next(iter(spec.submodule_search_locations))) / "common" / "quantsim_config"
    return SimpleNamespace(
        QuantizationSimModel=QuantizationSimModel, load=load_encodings_to_sim, configs=configs
    )


@pytest.fixture(scope="session")
def aimet() -> SimpleNamespace:
    return aimet_oracle()
