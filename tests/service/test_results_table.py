"""The client's results table shows what ships next to the simulation, and the worker's warning."""

from __future__ import annotations

from service.commands.results import results_table


def test_table_shows_runtime_agreement_and_warning():
    table = results_table(
        {
            "evaluation": {
                "metric": "accuracy",
                "fp32": 0.99,
                "sim": 0.991,
                "onnxruntime": 0.978,
                "sim_vs_onnxruntime": {"top1_agreement": 0.976, "sqnr_db": 12.25},
                "warning": "ONNX Runtime disagrees with the simulation: likely cause: ...",
            }
        }
    )
    assert "ONNX Runtime (model_qdq.onnx)" in table and "0.9780" in table
    assert "top-1 agreement 0.9760, SQNR 12.2 dB" in table
    assert "WARNING: ONNX Runtime disagrees" in table
    assert "WARNING" not in results_table({"evaluation": {"metric": "accuracy", "fp32": 0.99, "sim": 0.98}})
