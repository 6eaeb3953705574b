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


def test_quantized_input_passes_are_applied_and_recorded(digits_artifacts, tmp_path, capsys):
    code = main(
        _args(digits_artifacts, tmp_path / "q", "--quantized-input-passes", "2", "--scheme", "min_max")
    )
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["quantized_input_passes"] == 2
    plain = main(_args(digits_artifacts, tmp_path / "p", "--scheme", "min_max"))
    assert plain == 0
    # The re-observed ranges differ from the float-input ones, and the exported encodings say so.
    refined = json.loads((tmp_path / "q" / "model.encodings").read_text())
    baseline = json.loads((tmp_path / "p" / "model.encodings").read_text())
    assert refined["activation_encodings"] != baseline["activation_encodings"]
    assert refined["param_encodings"] == baseline["param_encodings"]  # weights are not re-observed


def test_quantized_input_passes_out_of_range_is_a_usage_error(digits_artifacts, tmp_path, capsys):
    try:
        code = main(_args(digits_artifacts, tmp_path / "q", "--quantized-input-passes", "-1"))
    except SystemExit as exc:  # argparse reports usage errors by exiting
        code = exc.code
    assert code == 2
    assert "0 to 8" in capsys.readouterr().err


def test_quantize_with_outlier_clip_records_the_search(digits_artifacts, tmp_path, capsys):
    """`--ptq outlier_clip` calibrates, searches the outlier-dominated activation ranges by output error and
    records what it did; whatever it clipped is the range the exported encodings carry."""
    code = main(_args(digits_artifacts, tmp_path / "q", "--ptq", "outlier_clip", "--scheme", "min_max"))
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and metrics["technique"] == "ptq"
    clip = metrics["ptq"]["outlier_clip"]
    before, after = clip["output_error"]
    assert after <= before and clip["searched"] >= len(clip["clipped"])
    encodings = json.loads((tmp_path / "q" / "model.encodings").read_text())["activation_encodings"]
    for _key, (observed, chosen) in clip["clipped"].items():
        assert chosen <= observed
        assert any(abs(max(-e["min"], e["max"]) - chosen) < 1e-3 * chosen for e in _flat(encodings))


def _flat(encodings):
    return [e for entry in encodings for e in (entry if isinstance(entry, list) else [entry])]
