"""Encodings aimet-onnx computed on a transformer ONNX file come into ``lowbit export`` and reproduce AIMET.

Given an ONNX file torch's dynamo exporter wrote for a ``transformers`` ViT or BERT (tests/corpus), when
aimet-onnx's own flow quantizes that file with its default config (``QuantizationSimModel`` +
``compute_encodings`` + ``export``) and the user runs ``lowbit export FILE.onnx --encodings aimet.encodings``,
then every name of AIMET's file lands on a quantizer of lowbit's or is reported as ignored with the
reason it changes nothing, and the QDQ model lowbit writes computes exactly what AIMET simulated.

What the names take (core/export/user_inputs.py, user_chains.py): module inputs that are constants or
computed differently by lowbit's trace (the position embedding, the attention scale, a mask's ``Where``
fill, ViT's class token ``Expand``ed from an initializer) by the user's node behind each module; one
LayerNorm weight initializer the exporter shared among all LayerNorms; GELU, which the dynamo file holds
as ``0.5 · (1 + erf(x/√2)) · x``, rounded on AIMET's calibrated intermediates in that order (lowbit's own
chain and grid-derived encodings gave ViT 25.7 dB); 2.0.0 embedding tables encoded again at their
``Gather`` outputs. BERT's case runs AIMET's int32-bias export, which needs the shared zero biases
duplicated first (``duplicate_shared_initializers``, as aimet-onnx asks): the user's file is that one.

MobileViT (its Resize, LayerNorm weights, SiLU as Sigmoid · x): lowbit's QDQ model computes what
aimet-onnx's own QDQ export of the same sim (``to_onnx_qdq``) computes in ONNX Runtime, bit for bit; both
are 25.9 dB from aimet-onnx's session outputs (top-1 100 %): its QcQuantizeOp kernel rounds half away
from zero where ONNX Runtime's QuantizeLinear rounds half to even, and ties occur. lowbit's sim under the
same config with ``target.rounding: half_away`` computes the session's outputs bit for bit.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from core.cli import main as lowbit
from core.export.runtime import compare_outputs
from core.io import load_model
from core.quantsim import QuantSim
from tests.core.aimet.renamed_entry import export_with_renamed_param
from tests.corpus.build import corpus_entries
from tests.corpus.models import sample_inputs


def _exact_qdq(path, feed: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # the QDQ arithmetic as written
    model = path if isinstance(path, bytes) else str(path)
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]


CASES = [
    pytest.param("vit", "1.0.0", False, "session", id="vit-default-1.0.0"),
    pytest.param(
        "bert", "2.0.0", True, "session", id="bert-default-2.0.0-int32_bias", marks=pytest.mark.slow
    ),
    pytest.param("mobilevit", "1.0.0", False, "qdq", id="mobilevit-default-1.0.0", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "version", "int32_bias", "oracle"), CASES)
def test_aimet_encodings_of_a_transformer_onnx_reproduce_aimets_simulation(
    aimet, tmp_path, capsys, name, version, int32_bias, oracle
):
    entry = corpus_entries([name])[0]
    path = entry.path("onnx")
    cfg = aimet.configs / "default_config.json"
    model = onnx.load(path)
    if int32_bias:  # one bias scale per bias tensor: aimet-onnx refuses shared initializers otherwise
        from aimet_onnx.utils import duplicate_shared_initializers

        duplicate_shared_initializers(model.graph)
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
    asim = aimet.QuantizationSimModel(model, config_file=str(cfg))
    calib = dict(np.load(entry.calibration()))
    names = [i.name for i in asim.session.get_inputs()]
    asim.compute_encodings(lambda session: session.run(None, {n: calib[n] for n in names}))
    (tmp_path / "aimet").mkdir()
    asim.export(str(tmp_path / "aimet"), "aimet", encoding_version=version, export_int32_bias=int32_bias)
    encodings = tmp_path / "aimet" / "aimet.encodings"
    samples = sample_inputs(entry.spec, 4, seed=99)  # not the calibration samples
    feed = {n: samples[n].numpy() for n in names}
    theirs = asim.session.run(None, feed)[0]
    if oracle == "qdq":  # aimet-onnx's own QDQ export of its sim, in ONNX Runtime (see the module docstring)
        session_outputs, theirs = theirs, _exact_qdq(asim.to_onnx_qdq().SerializeToString(), feed)
        assert compare_outputs(session_outputs, theirs)["top1_agreement"] == 1.0
        # lowbit's sim rounding half away from zero, as aimet-onnx's kernel does, computes its session's outputs.
        half_away = json.loads(cfg.read_text()) | {"target": {"rounding": "half_away"}}
        (tmp_path / "half_away.json").write_text(json.dumps(half_away))
        sim = QuantSim(load_model(str(path)), config=str(tmp_path / "half_away.json"))
        sim.load_encodings(encodings, user_graph=model.graph)
        with torch.no_grad():
            ours = sim.model(*(samples[n] for n in names))
        agreement = compare_outputs(session_outputs, np.asarray(getattr(ours, "logits", ours)))
        assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 60.0, agreement  # measured: inf
    fp32 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]

    out = tmp_path / "lowbit"
    argv = ["export", str(path), "--encodings", str(encodings), "--out", str(out), "--config", str(cfg)]
    capsys.readouterr()
    assert lowbit(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    agreement = compare_outputs(theirs, _exact_qdq(out / "model_qdq.onnx", feed))
    assert agreement["top1_agreement"] == 1.0 and agreement["sqnr_db"] >= 60.0, agreement  # measured: inf
    assert compare_outputs(fp32, theirs)["sqnr_db"] < 60  # AIMET's file quantizes: a real comparison
    # What set no quantizer is named with its reason; nothing matched nothing.
    assert all(report["ignored"].values()), report
    assert not [n for n, why in report["ignored"].items() if why.startswith("matches no")], report
    onnx.checker.check_model(onnx.load(out / "model.onnx"))

    # The same file with a LayerNorm weight renamed: both sides' unmatched names, no traceback.
    weight = next(n.input[1] for n in model.graph.node if n.op_type == "LayerNormalization")
    err = export_with_renamed_param(capsys, path, encodings, version, weight, cfg, tmp_path)
    assert re.search(r"no encoding for quantizers [^;]*\.param\.weight \(tensor ", err), err  # lowbit's side
