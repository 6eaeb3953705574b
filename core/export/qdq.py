"""QDQ ONNX: the FP32 export plus QuantizeLinear/DequantizeLinear where the sim quantizes.

What is written, per encoding:

- activations (int): ``QuantizeLinear → DequantizeLinear`` on the tensor. Output quantizers act on
  every reader of the tensor; input quantizers only on the module's own nodes (chained after an
  output quantizer on the same tensor, as in the sim). ``uint8``/``uint16`` with zero point
  ``−offset``, symmetric grids included (zero point 128 / 32768: the same values as ``int8`` with
  zero point 0; ONNX Runtime converts int8 activations to that form itself on x86, and its
  conversion breaks at opset 21 — "output_dtype INT8 does not match y_zero_point type UINT8" — when
  a symmetric activation, such as a dynamic MatMul's second input, precedes a Reshape). Bitwidths other than
  8 and 16 use the next container (8 or 16 bits) behind a ``Clip`` to the encoding's exact
  [min, max], so the values stay on the b-bit grid;
- weights (int): integer initializers (codes computed here, on the b-bit grid, in an 8- or
  16-bit container) + ``DequantizeLinear`` (``axis`` for per-channel, ``block_size`` for
  per-block); the dequantized tensor keeps the parameter's name;
- float16: ``Cast(float16) → Cast(float)`` for activations, a float16 initializer + ``Cast`` for
  weights;
- biases stay float unless the sim quantizes them (bias quantizer enabled).

Opset: 13 covers 8-bit per-tensor/per-channel; 16-bit containers or per-block weights need
opset 21, and the graph is converted up (onnx.version_converter) in that case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper, version_converter

from core.errors import LowbitError
from core.export.tensor_map import TensorBinding
from core.quant.encoding import Encoding
from core.quant.primitives import quantize

QDQ_MIN_OPSET = 13
QDQ_WIDE_OPSET = 21


def _container(bitwidth: int, symmetric: bool) -> tuple[int, np.dtype, int]:
    """(ONNX elem type, numpy dtype, container bits) for a b-bit grid."""
    if bitwidth <= 8:
        return (
            (TensorProto.INT8, np.dtype(np.int8), 8)
            if symmetric
            else (TensorProto.UINT8, np.dtype(np.uint8), 8)
        )
    return (
        (TensorProto.INT16, np.dtype(np.int16), 16)
        if symmetric
        else (TensorProto.UINT16, np.dtype(np.uint16), 16)
    )


def _zero_points(enc: Encoding, np_dtype: np.dtype) -> np.ndarray:
    offset = enc.offset.detach().cpu().double().numpy().reshape(-1)
    if enc.spec.symmetric:
        return (-(2 ** (enc.bitwidth - 1)) - offset).astype(np_dtype)
    return (-offset).astype(np_dtype)


def needs_wide_opset(encodings: Sequence[Encoding]) -> bool:
    return any(
        e.spec.dtype == "int" and (e.bitwidth > 8 or e.spec.granularity == "per_block") for e in encodings
    )


class _Builder:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.quantized_params: set[str] = set()
        self.graph_inputs = {i.name for i in self.graph.input}
        self.by_name = {n.name: n for n in self.nodes}
        self.counter = 0

    def unique(self, base: str) -> str:
        self.counter += 1
        return f"{base}__{self.counter}"

    def add_init(self, name: str, array: np.ndarray) -> str:
        tensor = numpy_helper.from_array(array, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def producer_of(self, tensor: str) -> onnx.NodeProto | None:
        for node in self.nodes:
            if tensor in node.output:
                return node
        return None

    # -- activation quantization -----------------------------------------------------------------
    def _qdq_chain(self, source: str, enc: Encoding, out_name: str, tag: str) -> list[onnx.NodeProto]:
        if enc.spec.dtype == "float":
            mid = self.unique(f"{tag}_fp16")
            return [
                helper.make_node(
                    "Cast", [source], [mid], to=TensorProto.FLOAT16, name=self.unique(f"{tag}/CastF16")
                ),
                helper.make_node(
                    "Cast", [mid], [out_name], to=TensorProto.FLOAT, name=self.unique(f"{tag}/CastF32")
                ),
            ]
        _, np_dtype, bits = _container(enc.bitwidth, False)  # unsigned whatever the symmetry (docstring)
        scale = enc.scale.detach().cpu().float().numpy().reshape(-1)
        zp = (-enc.offset.detach().cpu().double().numpy().reshape(-1)).astype(np_dtype)
        s_name = self.add_init(self.unique(f"{tag}_scale"), scale.reshape(()) if scale.size == 1 else scale)
        z_name = self.add_init(self.unique(f"{tag}_zero_point"), zp.reshape(()) if zp.size == 1 else zp)
        axis: dict[str, Any] = (
            {} if enc.spec.granularity == "per_tensor" else {"axis": int(enc.spec.axis or 0)}
        )
        nodes = []
        if enc.bitwidth != bits:
            lo = (enc.offset * enc.scale).float().numpy().reshape(())
            hi = ((enc.spec.num_steps + enc.offset) * enc.scale).float().numpy().reshape(())
            clipped = self.unique(f"{tag}_clipped")
            lo_n = self.add_init(self.unique(f"{tag}_min"), lo.astype(np.float32))
            hi_n = self.add_init(self.unique(f"{tag}_max"), hi.astype(np.float32))
            nodes.append(
                helper.make_node("Clip", [source, lo_n, hi_n], [clipped], name=self.unique(f"{tag}/Clip"))
            )
            source = clipped
        q_out = self.unique(f"{tag}_q")
        nodes.append(
            helper.make_node(
                "QuantizeLinear", [source, s_name, z_name], [q_out], name=self.unique(f"{tag}/Q"), **axis
            )
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [q_out, s_name, z_name], [out_name], name=self.unique(f"{tag}/DQ"), **axis
            )
        )
        return nodes

    def quantize_output(self, tensor: str, enc: Encoding, tag: str) -> None:
        """QDQ on ``tensor`` for all its readers; the dequantized value keeps the name."""
        if tensor in self.graph_inputs:
            new = self.unique(f"{tensor}_dq")
            for node in self.nodes:
                node.input[:] = [new if n == tensor else n for n in node.input]
            self._insert_front(self._qdq_chain(tensor, enc, new, tag))
            return
        producer = self.producer_of(tensor)
        if producer is None:
            raise LowbitError(f"QDQ export: no node produces tensor {tensor!r}")
        raw = self.unique(f"{tensor}_float")
        producer.output[:] = [raw if n == tensor else n for n in producer.output]
        self._insert_after(producer, self._qdq_chain(raw, enc, tensor, tag))

    def quantize_input(self, tensor: str, consumers: Sequence[str], enc: Encoding, tag: str) -> None:
        """QDQ on ``tensor`` as read by ``consumers`` only."""
        targets = [self.by_name[c] for c in consumers if c in self.by_name]
        if not targets:
            return
        new = self.unique(f"{tensor}_in")
        for node in targets:
            node.input[:] = [new if n == tensor else n for n in node.input]
        chain = self._qdq_chain(tensor, enc, new, tag)
        first = min(self.nodes.index(n) for n in targets)
        self.nodes[first:first] = chain

    def _insert_front(self, chain: list[onnx.NodeProto]) -> None:
        self.nodes[0:0] = chain

    def _insert_after(self, node: onnx.NodeProto, chain: list[onnx.NodeProto]) -> None:
        i = self.nodes.index(node) + 1
        self.nodes[i:i] = chain

    # -- weights ---------------------------------------------------------------------------------
    def quantize_param(self, name: str, enc: Encoding) -> None:
        if name in self.quantized_params:
            return  # a shared (tied) parameter: its quantizers hold one encoding, applied once
        self.quantized_params.add(name)
        init = self.inits.get(name)
        if init is None:
            raise LowbitError(f"QDQ export: parameter {name!r} is not an initializer")
        weight = numpy_helper.to_array(init)
        self.graph.initializer.remove(init)
        del self.inits[name]
        if enc.spec.dtype == "float":
            half = self.add_init(f"{name}_float16", weight.astype(np.float16))
            self._insert_front(
                [helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=f"{name}/Cast")]
            )
            return
        _, np_dtype, _ = _container(enc.bitwidth, enc.spec.symmetric)
        codes = quantize(torch.from_numpy(weight.astype(np.float32)), enc).numpy()
        if enc.spec.symmetric:
            codes = codes - 2 ** (enc.bitwidth - 1)
        q_name = self.add_init(f"{name}_quantized", codes.astype(np_dtype))
        scale, zp, attrs = self._param_scale_zp(weight.shape, enc, np_dtype)
        s_name = self.add_init(f"{name}_scale", scale)
        z_name = self.add_init(f"{name}_zero_point", zp)
        node = helper.make_node(
            "DequantizeLinear", [q_name, s_name, z_name], [name], name=f"{name}/DQ", **attrs
        )
        self._insert_front([node])

    def _param_scale_zp(
        self, shape: tuple[int, ...], enc: Encoding, np_dtype: np.dtype
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        spec = enc.spec
        scale = enc.scale.detach().cpu().float().numpy().reshape(-1)
        zp = _zero_points(enc, np_dtype)
        if spec.granularity == "per_tensor":
            return scale.reshape(()), zp.reshape(()), {}
        axis = int(spec.axis or 0) % len(shape)
        if spec.granularity == "per_channel":
            return scale, zp, {"axis": axis}
        # Per-block: ONNX wants the scale at the weight's rank, the block axis shrunk by block_size.
        block_axis = spec.block_axis if spec.block_axis is not None else (1 if axis == 0 else 0)
        block_axis %= len(shape)
        channels, blocks = shape[axis], shape[block_axis] // int(spec.block_size or 1)
        rest = [d for d in range(len(shape)) if d not in (axis, block_axis)]
        full_shape = [channels, blocks] + [shape[d] for d in rest]
        perm = [axis, block_axis, *rest]
        inverse = list(np.argsort(perm))

        def expand(values: np.ndarray) -> np.ndarray:
            grid = values.reshape(channels, blocks, *([1] * len(rest)))
            return np.ascontiguousarray(np.broadcast_to(grid, full_shape).transpose(inverse))

        return expand(scale), expand(zp), {"axis": block_axis, "block_size": int(spec.block_size or 1)}

    def finish(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)


def build_qdq_model(
    fp_model: onnx.ModelProto, items: Sequence[tuple[TensorBinding, Encoding]]
) -> onnx.ModelProto:
    """A QDQ copy of ``fp_model`` with one QDQ (or Cast pair / DQ weight) per (binding, encoding)."""
    opset = next((o.version for o in fp_model.opset_import if o.domain in ("", "ai.onnx")), QDQ_MIN_OPSET)
    model = onnx.ModelProto()
    model.CopyFrom(fp_model)
    if needs_wide_opset([e for _, e in items]) and opset < QDQ_WIDE_OPSET:
        model = version_converter.convert_version(model, QDQ_WIDE_OPSET)
        model.ir_version = max(model.ir_version, 10)  # opset 21 needs IR version 10
    elif opset < QDQ_MIN_OPSET:
        model = version_converter.convert_version(model, QDQ_MIN_OPSET)
    builder = _Builder(model)
    tags = lambda b: b.quantizer.replace("/", "_")  # noqa: E731
    for binding, enc in items:
        if binding.role == "param":
            builder.quantize_param(binding.tensor, enc)
    for binding, enc in items:
        if binding.role == "output":
            builder.quantize_output(binding.tensor, enc, tags(binding))
    for binding, enc in items:
        if binding.role == "input":
            builder.quantize_input(binding.tensor, binding.consumers, enc, tags(binding))
    builder.finish()
    # Shapes recorded by the exporter still hold, except for renamed float tensors; drop them all.
    del model.graph.value_info[:]
    return model
