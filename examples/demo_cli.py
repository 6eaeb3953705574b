"""`make demo-cli`: quantize the bundled example with the engine CLI alone (no service); print the results.

Builds the digits CNN (trained here on scikit-learn's bundled digits data in seconds; cached),
then runs `lowbit quantize` on it at W8A8: QuantSim calibration, export of model.onnx +
model.encodings + model_qdq.onnx, and the FP32 / simulated / ONNX Runtime accuracy table.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.cli import main as lowbit
from examples.digits import build


def main() -> int:
    paths = build()
    out = Path("out/demo")
    print(f"example model: {paths.model_pt2} (FP32 accuracy {paths.fp32_accuracy:.3f})", flush=True)
    argv = [
        "quantize",
        str(paths.model_pt2),
        "--calib",
        str(paths.calib_data),
        "--eval",
        str(paths.eval_data),
    ]
    return lowbit([*argv, "--param-bw", "8", "--output-bw", "8", "--out", str(out)])


if __name__ == "__main__":
    sys.exit(main())
