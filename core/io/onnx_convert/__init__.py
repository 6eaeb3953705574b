"""ONNX → torch.fx conversion for the common op set (see ``supported_ops()``).

Why our own: the PyPI converter onnx2torch depends on torchvision, which does not import beside
this project's torch build.
"""

from core.io.onnx_convert.converter import ConvertedGraph, convert
from core.io.onnx_convert.registry import supported_ops

__all__ = ["ConvertedGraph", "convert", "supported_ops"]
