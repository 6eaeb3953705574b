"""A name mismatch between an AIMET encodings file and the model: ``lowbit export`` refuses it and
lists both sides' unmatched names (shared by the tests that bring aimet-onnx's files in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main as lowbit


def export_with_renamed_param(
    capsys: pytest.CaptureFixture[str],
    model: Path,
    encodings: Path,
    version: str,
    param: str,
    cfg: Path,
    tmp: Path,
) -> str:
    """Rename ``param``'s entry in AIMET's file to ``not_in_the_graph_0``, run ``lowbit export`` on it
    (it must fail without a traceback and name that entry as matching nothing); its stderr."""
    doc = json.loads(encodings.read_text())
    entries = doc["encodings"] if version == "2.0.0" else doc["param_encodings"]
    next(e for e in entries if e["name"] == param)["name"] = "not_in_the_graph_0"
    bad = tmp / "renamed.encodings"
    bad.write_text(json.dumps(doc))
    capsys.readouterr()
    argv = ["export", str(model), "--encodings", str(bad), "--out", str(tmp / "bad"), "--config", str(cfg)]
    assert lowbit(argv) != 0
    err = capsys.readouterr().err
    assert "names that match no quantizer of this sim: not_in_the_graph_0" in err, err  # AIMET's side
    assert "Traceback" not in err
    return err
