"""Fidelity: does the simulation predict what ONNX Runtime computes on the exported QDQ model?

model × recipe → simulated accuracy, ONNX Runtime accuracy with its default graph optimizations
(QDQ fused into QLinearConv/QGemm: the integer kernels users deploy), ONNX Runtime with QDQ fusion
off (``session.disable_quant_qdq=1``: float kernels on dequantized values, the exact QDQ arithmetic),
and the simulation's top-1 agreement and logits SQNR against the default-optimized runtime.

Models: the demo's digits CNN after BN folding (.pt2), and a MobileNetV2-style network (inverted
residuals, depthwise convs, ReLU6) exported to ONNX with BN folded and ReLU6 as Clip, loaded
through lowbit's ONNX import. Recipes: W8A8 and W4A8 with the plain ``default`` config and with the
``onnxruntime_cpu`` preset (7-bit weights where ORT's u8×s8 kernels saturate, int32 bias).

``python -m bench fidelity``
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.registry import register
from bench.table import print_table

RECIPES = (("default", 8), ("onnxruntime_cpu", 8), ("default", 4), ("onnxruntime_cpu", 4))


def _cpu_isa() -> str:
    from core.runtime_verdict import cpu_has_vnni

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?"
    )
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}: {isa}, {'VNNI' if cpu_has_vnni() else 'no VNNI'}"


def _session(path: Path, fused: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not fused:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run(session: Any, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x.astype(np.float32)})[0])


def _digits() -> tuple[str, Any, tuple[Any, ...], torch.Tensor, torch.Tensor, np.ndarray]:
    from core.graph import prepare_model
    from core.io.models import load_exported_program
    from core.ptq.bn_fold import fold_all_batch_norms
    from examples.digits import build
    from examples.digits.model import DigitsCNN

    paths = build()
    model = DigitsCNN()
    model.load_state_dict(dict(load_exported_program(paths.model_pt2).state_dict), strict=False)
    calib = torch.from_numpy(np.load(paths.calib_data)["input"])
    data = np.load(paths.eval_data)
    gm = prepare_model(model.eval(), (calib[:1],))
    fold_all_batch_norms(gm)
    return (
        "digits CNN (.pt2, BN folded)",
        gm,
        (calib[:1],),
        calib,
        torch.from_numpy(data["input"]),
        data["labels"],
    )


def _mobilenet(tmp: Path) -> tuple[str, Any, tuple[Any, ...], torch.Tensor, torch.Tensor, np.ndarray]:
    from bench.models.mobilenet_digits import build_trained_mobilenet_digits
    from core.io import load_model

    bundle = build_trained_mobilenet_digits()
    path = tmp / "mobilenet_digits.onnx"
    # The legacy exporter in eval mode folds BN into the convs; ReLU6 leaves as Clip.
    torch.onnx.export(
        bundle.model.eval(), (bundle.calib[:1],), str(path), input_names=["input"], output_names=["logits"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    loaded = load_model(path)
    eval_x, eval_y = bundle.eval
    return (
        "MobileNetV2-style (.onnx, BN folded, ReLU6 as Clip)",
        loaded,
        tuple(loaded.example_inputs),
        bundle.calib,
        eval_x,
        eval_y.numpy(),
    )


def _row(name: str, model: Any, example: tuple[Any, ...], calib: torch.Tensor, x: torch.Tensor,
         y: np.ndarray, config: str, bw: int, tmp: Path) -> list[Any]:  # fmt: skip
    from core.export.runtime import compare_outputs
    from core.quantsim import QuantSim

    prepared = isinstance(model, torch.fx.GraphModule)
    sim = (
        QuantSim(model, example, config=config, param_bw=bw, output_bw=8, prepared=True)
        if prepared
        else QuantSim(model, config=config, param_bw=bw, output_bw=8)
    )
    sim.compute_encodings([calib])
    out = tmp / f"{abs(hash(name))}-{config}-{bw}"
    result = sim.export(out)
    with torch.no_grad():
        simulated = sim(x)
    simulated = (simulated[0] if isinstance(simulated, tuple | list) else simulated).numpy()
    fused = _run(_session(result.qdq_onnx, True), x.numpy())
    exact = _run(_session(result.qdq_onnx, False), x.numpy())
    agreement = compare_outputs(simulated, fused)

    def acc(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == y).mean())

    return [name, f"W{bw}A8 {config}", acc(simulated), acc(fused), acc(exact),
            agreement["top1_agreement"], agreement["sqnr_db"]]  # fmt: skip


@register(
    "fidelity", "simulated vs ONNX Runtime (default optimizations / QDQ fusion off) per model and recipe"
)
def run(args: list[str]) -> None:
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lowbit-fidelity-") as tmp_dir:
        tmp = Path(tmp_dir)
        for build in (_digits, lambda: _mobilenet(tmp)):
            name, model, example, calib, x, y = build()
            for config, bw in RECIPES:
                rows.append(_row(name, model, example, calib, x, y, config, bw, tmp))
    print_table(
        f"fidelity on {_cpu_isa()} (ONNX Runtime {__import__('onnxruntime').__version__})",
        ["model", "recipe", "sim acc", "ORT acc (default opt)", "ORT acc (QDQ fusion off)",
         "top-1 agreement sim vs ORT", "SQNR sim vs ORT (dB)"],
        rows,
    )  # fmt: skip
