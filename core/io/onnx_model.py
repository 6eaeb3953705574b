"""``.onnx`` models: parsed without external data, checked, then converted to a torch.fx module.

External data rule: a tensor's ``location`` must be a relative path without ``..`` that resolves
(symlinks followed) inside the model file's own folder, and its ``offset``/``length`` must lie
within that file and match the tensor's declared size. Sizes are checked before allocation:
every tensor's declared element count must be consistent with the bytes that back it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from core.errors import ModelLoadError
from core.io.example_shapes import DataShapes
from core.io.limits import MAX_MODEL_BYTES, checked_file
from core.io.loaded_model import LoadedModel
from core.io.models import register_format


def _fail(path: Path, what: str) -> ModelLoadError:
    return ModelLoadError(f"model file {str(path)!r}: {what}")


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _declared_bytes(tensor: onnx.TensorProto, path: Path) -> tuple[int, int]:
    if any(d < 0 for d in tensor.dims):
        raise _fail(path, f"tensor {tensor.name!r} has negative dimensions {list(tensor.dims)}")
    numel = 1
    for d in tensor.dims:
        numel *= int(d)
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"tensor {tensor.name!r} has unsupported data type {tensor.data_type}") from exc
    return numel, numel * itemsize


def _external_file(tensor: onnx.TensorProto, base: Path, path: Path) -> tuple[Path, int, int | None]:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    accepted = "accepted: a relative path inside the model's folder"
    if not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute():
        raise _fail(
            path,
            f"tensor {tensor.name!r}: external data location {location!r} is absolute or empty; {accepted}",
        )
    if ".." in PurePosixPath(location.replace("\\", "/")).parts:
        raise _fail(
            path, f"tensor {tensor.name!r}: external data location {location!r} contains '..'; {accepted}"
        )
    target = (base / location).resolve()
    if not target.is_relative_to(base):
        raise _fail(
            path, f"tensor {tensor.name!r}: external data {location!r} resolves outside the model's folder"
        )
    if not target.is_file():
        raise _fail(path, f"tensor {tensor.name!r}: external data file {location!r} does not exist")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError as exc:
        raise _fail(path, f"tensor {tensor.name!r}: invalid external data offset/length") from exc
    return target, offset, length


def _check_and_load_external(model: onnx.ModelProto, path: Path) -> None:
    base = path.parent.resolve()
    file_size = path.stat().st_size
    for tensor in _tensors(model.graph):
        numel, nbytes = _declared_bytes(tensor, path)
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            target, offset, length = _external_file(tensor, base, path)
            if length is not None and length != nbytes:
                raise _fail(
                    path, f"tensor {tensor.name!r}: external length {length} != declared {nbytes} bytes"
                )
            if offset < 0 or offset + nbytes > target.stat().st_size:
                raise _fail(path, f"tensor {tensor.name!r}: external data range exceeds {target.name!r}")
            with open(target, "rb") as f:
                f.seek(offset)
                tensor.raw_data = f.read(nbytes)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
        elif tensor.HasField("raw_data"):
            if len(tensor.raw_data) != nbytes:
                raise _fail(
                    path,
                    f"tensor {tensor.name!r} declares {list(tensor.dims)} ({nbytes} bytes) "
                    f"but holds {len(tensor.raw_data)} bytes",
                )
        elif numel > file_size:
            # Typed fields need at least one byte per element: more elements than file bytes is a lie.
            raise _fail(path, f"tensor {tensor.name!r} declares {numel} elements, more than the file holds")


def read_onnx(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Parse an ``.onnx`` file with its external data checked and loaded (see module docstring)."""
    p = checked_file(path, kind="model", suffixes=(".onnx",), max_bytes=MAX_MODEL_BYTES, error=ModelLoadError)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise _fail(p, f"not a valid ONNX protobuf (truncated or corrupt?): {exc}") from exc
    if not model.graph.node:
        raise _fail(p, "the ONNX graph has no nodes; accepted: an ONNX model file")
    _check_and_load_external(model, p)
    return model


def _free_dims(value: onnx.ValueInfoProto) -> dict[int, str]:
    """{axis: name} of the dimensions ``value`` leaves open: its dim_param, or ``<tensor>_dim<axis>``."""
    dims: dict[int, str] = {}
    for axis, dim in enumerate(value.type.tensor_type.shape.dim):
        if not (dim.HasField("dim_value") and dim.dim_value > 0):
            dims[axis] = dim.dim_param or f"{value.name}_dim{axis}"
    return dims


def load_onnx(path: Path, data: DataShapes | None = None) -> LoadedModel:
    """Load an ``.onnx`` file as a LoadedModel whose module is the converted torch.fx GraphModule;
    ``data`` (the calibration file's array shapes) shapes its example inputs."""
    from core.io.onnx_convert import convert

    model = read_onnx(path)
    converted = convert(model, data)
    declared = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    dims = {name: _free_dims(declared[name]) for name in converted.output_names}
    for name, axes in zip(converted.input_names, converted.open_axes, strict=True):
        # Open as probed: the declared open dims, and a fixed size the calibration data does not fill.
        free = _free_dims(declared[name])
        dims[name] = {axis: free.get(axis, f"{name}_dim{axis}") for axis in axes}
    return LoadedModel(
        converted.module,
        converted.example_inputs,
        converted.input_names,
        converted.output_names,
        "onnx",
        Path(path),
        dynamic_axes=tuple(tuple(dims[name]) for name in converted.input_names),
        dynamic_dims={name: axes for name, axes in dims.items() if axes},
    )


register_format("onnx", (".onnx",), load_onnx)
