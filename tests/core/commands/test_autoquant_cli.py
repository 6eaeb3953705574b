"""`lowbit autoquant` on the digits example: exit code, report, exported model."""

from __future__ import annotations

import json

from core.cli import main


def test_autoquant_cli_meets_a_w8a8_target_on_digits(digits_artifacts, tmp_path, capsys):
    out = tmp_path / "aq"
    code = main(
        [
            "autoquant",
            str(digits_artifacts.model_pt2),
            "--calib",
            str(digits_artifacts.calib_data),
            "--eval",
            str(digits_artifacts.eval_data),
            "--allowed-drop",
            "0.02",
            "--num-calib",
            "128",
            "--out",
            str(out),
            "--json",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["target_met"]
    assert printed["metric"] == "user eval_fn"  # eval.npz has labels: accuracy
    assert printed["best_score"] >= printed["fp32_score"] - 0.02
    assert (out / "autoquant_report.html").is_file() and (out / "model.encodings").is_file()
    assert json.loads((out / "autoquant_report.json").read_text())["best_stage"] == printed["best_stage"]


def test_autoquant_cli_exit_code_when_the_target_is_missed(digits_artifacts, tmp_path, capsys):
    code = main(
        [
            "autoquant",
            str(digits_artifacts.model_pt2),
            "--calib",
            str(digits_artifacts.calib_data),
            "--allowed-drop",
            "0",
            "--output-bw",
            "4",
            "--num-calib",
            "64",
            "--out",
            str(tmp_path / "aq"),
        ]
    )
    assert code == 4
    assert "unreachable" in capsys.readouterr().out
