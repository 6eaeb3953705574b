"""`lowbit analyze` on the digits example: exit code, files, and a ranking printed as JSON."""

from __future__ import annotations

import json

from core.cli import main


def test_analyze_cli_writes_the_report_for_the_digits_model(digits_artifacts, tmp_path, capsys):
    out = tmp_path / "analysis"
    code = main(
        [
            "analyze",
            str(digits_artifacts.model_onnx),
            "--calib",
            str(digits_artifacts.calib_data),
            "--eval",
            str(digits_artifacts.eval_data),
            "--out",
            str(out),
            "--param-bw",
            "4",
            "--num-batches",
            "2",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metric"] == "eval_fn"  # eval.npz has labels: top-1 accuracy
    assert 0.9 <= printed["global"]["fp32"] <= 1.0
    assert printed["global"]["weights_only"] <= printed["global"]["fp32"]
    ranking = json.loads((out / "ranking.json").read_text())
    assert {"conv1", "conv2", "conv3", "fc"} <= {row["layer"] for row in ranking}
    assert (out / "report.html").stat().st_size > 20_000


def test_analyze_cli_rejects_a_missing_data_file(digits_artifacts, tmp_path, capsys):
    code = main(
        [
            "analyze",
            str(digits_artifacts.model_onnx),
            "--calib",
            str(tmp_path / "nope.npz"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 3
    assert "nope.npz" in capsys.readouterr().err
