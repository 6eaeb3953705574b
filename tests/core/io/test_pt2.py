"""``.pt2`` loading: round trip of the example, and archives that would run code are refused."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ModelLoadError
from core.io import LoadedModel, load_exported_program, load_model
from core.io.pickle_scan import UnsafePickleError, check_pickle

MARKER = "lowbit_pwned_marker"


class _RunsCode:
    """Unpickling this writes a marker file: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('x')",))


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing members whose name ends with a key of ``replace``, adding ``add``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_round_trip_matches_original_outputs(digits_artifacts):
    program = torch.export.load(digits_artifacts.model_pt2)  # trusted file written by this test suite
    loaded = load_model(digits_artifacts.model_pt2)
    x = torch.from_numpy(np.load(digits_artifacts.eval_data)["input"][:32])
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), program.module()(x), rtol=0, atol=0)
    assert loaded.source_format == "pt2" and loaded.path == digits_artifacts.model_pt2
    # the sample inputs torch.export.save stored (batch 2); the batch axis is declared dynamic
    assert [tuple(t.shape) for t in loaded.example_inputs] == [(2, 1, 8, 8)]
    assert loaded.dynamic_axes == ((0,),)
    assert len(loaded.input_names) == 1 and len(loaded.output_names) == 1
    assert isinstance(load_exported_program(digits_artifacts.model_pt2), torch.export.ExportedProgram)


def test_from_module_wraps_a_python_model():
    net = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Dropout(0.5)).train()
    loaded = LoadedModel.from_module(net, torch.zeros(1, 4))
    assert (
        not loaded.module.training and loaded.input_names == ["input"] and loaded.output_names == ["output"]
    )
    with pytest.raises(ModelLoadError, match="example_inputs"):
        LoadedModel.from_module(net, [])


def test_pickled_sample_inputs_that_run_code_are_refused(digits_artifacts, tmp_path):
    marker = tmp_path / MARKER
    evil = io.BytesIO()
    torch.save(_RunsCode(str(marker)), evil)  # a torch.save archive whose pickle calls exec
    bad = _rewrite(
        digits_artifacts.model_pt2, tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": evil.getvalue()}
    )
    with pytest.raises(ModelLoadError, match=r"sample_inputs.*\.exec, which is not an allowed"):
        load_model(bad)
    assert not marker.exists()


def test_pickled_weights_are_refused(digits_artifacts, tmp_path):
    with zipfile.ZipFile(digits_artifacts.model_pt2) as z:
        name = next(n for n in z.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(z.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    bad = _rewrite(digits_artifacts.model_pt2, tmp_path / "w.pt2", {name: json.dumps(config).encode()})
    with pytest.raises(ModelLoadError, match="stored as a pickle"):
        load_model(bad)


def test_shape_expressions_that_would_be_evaluated_are_refused(digits_artifacts, tmp_path):
    with zipfile.ZipFile(digits_artifacts.model_pt2) as z:
        text = z.read("model/models/model.json").decode()
    assert "Symbol('s" in text  # the example has a dynamic batch dimension, hence a shape expression
    poisoned = text.replace("Symbol('s", "__import__('os').system('true') or Symbol('s", 1)
    bad = _rewrite(digits_artifacts.model_pt2, tmp_path / "e.pt2", {"models/model.json": poisoned.encode()})
    with pytest.raises(ModelLoadError, match="not plain arithmetic"):
        load_model(bad)


def test_guard_code_is_kept_as_data_and_never_executed(digits_artifacts, tmp_path):
    """torch 2.13 writes guards on dynamic dimensions as Python source; ExportedProgram.module() would
    exec() them. Given a program whose guard would write a marker file, when it is loaded, run and
    prepared, then the marker never appears and the module carries no _guards_fn."""
    from core.graph import prepare_model

    marker = tmp_path / MARKER
    with zipfile.ZipFile(digits_artifacts.model_pt2) as z:
        program = json.loads(z.read("model/models/model.json"))
    program["guards_code"] = [f"open({str(marker)!r}, 'w').write('x') is None"]
    bad = _rewrite(
        digits_artifacts.model_pt2, tmp_path / "g.pt2", {"models/model.json": json.dumps(program).encode()}
    )
    loaded = load_model(bad)
    with torch.no_grad():
        loaded.module(torch.zeros(3, 1, 8, 8))
        prepare_model(loaded.graph_source, loaded.example_inputs)(torch.zeros(3, 1, 8, 8))
    assert not hasattr(loaded.module, "_guards_fn") and loaded.program._guards_code == []
    assert not marker.exists()
    program["guards_code"] = [{"not": "a string"}]
    odd = _rewrite(
        digits_artifacts.model_pt2, tmp_path / "o.pt2", {"models/model.json": json.dumps(program).encode()}
    )
    with pytest.raises(ModelLoadError, match="guards_code is not a list of strings"):
        load_model(odd)


@pytest.mark.parametrize("depth", [100_000, 950])  # past the JSON parser's limit; just under it
def test_deeply_nested_program_is_refused_not_crashed(digits_artifacts, tmp_path, depth):
    nested = ("[" * depth + "]" * depth).encode()
    bad = _rewrite(digits_artifacts.model_pt2, tmp_path / "n.pt2", {"models/model.json": nested})
    with pytest.raises(
        ModelLoadError
    ):  # a clear refusal (too deep, or not a program), never a RecursionError
        load_model(bad)


def test_graph_calling_arbitrary_functions_is_refused(digits_artifacts, tmp_path):
    with zipfile.ZipFile(digits_artifacts.model_pt2) as z:
        text = z.read("model/models/model.json").decode()
    assert '"torch.ops.aten.relu.default"' in text
    # torch resolves targets by getattr from the torch module: torch.os.system is reachable.
    poisoned = text.replace('"torch.ops.aten.relu.default"', '"torch.os.system"', 1)
    bad = _rewrite(digits_artifacts.model_pt2, tmp_path / "t.pt2", {"models/model.json": poisoned.encode()})
    with pytest.raises(ModelLoadError):
        load_model(bad)


@pytest.mark.parametrize("member", ["model/data/aotinductor/model/lib.so", "model/unknown.bin", "version"])
def test_compiled_unknown_and_legacy_members_are_refused(digits_artifacts, tmp_path, member):
    bad = _rewrite(digits_artifacts.model_pt2, tmp_path / "m.pt2", {}, {member: b"\x7fELF"})
    with pytest.raises(ModelLoadError, match=r"compiled code|unexpected member|one root folder"):
        load_model(bad)


def test_truncated_and_non_zip_files_are_refused(digits_artifacts, tmp_path):
    data = digits_artifacts.model_pt2.read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a zip archive"):
        load_model(tmp_path / "cut.pt2")
    (tmp_path / "empty.pt2").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        load_model(tmp_path / "empty.pt2")


def test_pickled_module_files_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"unsupported format '\.pth'.*\.onnx, \.pt2"):
        load_model(tmp_path / "model.pth")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "absent.pt2")


def test_pickle_scan_allows_tensors_and_refuses_other_globals():
    buffer = io.BytesIO()
    torch.save((torch.ones(2), {"a": torch.zeros(1)}), buffer)
    with zipfile.ZipFile(buffer) as z:
        check_pickle(z.read(next(n for n in z.namelist() if n.endswith(".pkl"))))
    for protocol in (2, 4):
        with pytest.raises(UnsafePickleError, match="exec"):
            check_pickle(pickle.dumps(_RunsCode("/nonexistent"), protocol=protocol))
