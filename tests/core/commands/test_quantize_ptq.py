"""`lowbit quantize --ptq ...` applies PTQ techniques before calibration."""

from __future__ import annotations

import json

from core.cli import main


def _args(artifacts, out, *extra):
    return [
        "quantize",
        str(artifacts.model_pt2),
        "--calib",
        str(artifacts.calib_data),
        "--eval",
        str(artifacts.eval_data),
        "--num-calib",
        "128",
        "--out",
        str(out),
        "--json",
        *extra,
    ]


def test_quantize_with_cle_records_the_technique(digits_artifacts, tmp_path, capsys):
    code = main(_args(digits_artifacts, tmp_path / "q", "--ptq", "cle", "--per-tensor"))
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0
    assert metrics["technique"] == "ptq" and metrics["ptq"]["cle"]["cls_sets"] >= 2
    # DFQ: CLE without AdaRound is followed by bias correction on every layer.
    corrected = metrics["ptq"]["bias_correction"]
    assert corrected["implied_by"] == "cle" and len(corrected["empirical"] + corrected["analytical"]) >= 3
    saved = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert saved["ptq"] == metrics["ptq"]


def test_quantize_rejects_an_unknown_technique(digits_artifacts, tmp_path, capsys):
    code = main(_args(digits_artifacts, tmp_path / "q", "--ptq", "cle,magic"))
    assert code == 3
    assert "magic" in capsys.readouterr().err
