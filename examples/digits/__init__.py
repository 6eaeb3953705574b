"""The bundled example: a small CNN trained on scikit-learn's digits data, exported as .pt2 and .onnx.

``build(out_dir)`` returns the artifact :class:`Paths`; ``python -m examples.digits`` builds them.
"""

from examples.digits.build import Paths, build

__all__ = ["Paths", "build"]
