"""The target's integer arithmetic, as far as the simulation models it (a preset's ``target`` key).

AIMET's quantsim config says where quantizers go; it does not say how the target multiplies.
Two properties of integer runtimes change results measurably and are modelled here:

* ``bias``: ``"int32"`` — the runtime rounds a Conv/Gemm bias to int32 at scale
  ``input_scale × weight_scale`` (per output channel) before it adds it to the accumulator, as
  ONNX Runtime does when it fuses DQ→Conv→Q into QLinearConv and as QNN does for HTP.
  ``"float"`` keeps the bias unquantized (the sim's historical behaviour).
* ``max_weight_bits``: the widest weight grid the runtime multiplies without saturating. ONNX
  Runtime's x86 kernels without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 activations by
  int8 weights with 16-bit saturating pair sums (``vpmaddubsw``): 2·255·127 overflows int16, 2·255·64
  does not. ORT's documented remedy is ``reduce_range`` — "quantize weights with 7-bits. It may
  improve the accuracy for some models running on non-VNNI machine" (onnxruntime.quantization,
  ``StaticQuantConfig``). Weights asked for at more bits are quantized to this many.
* ``accumulator_bits``: the accumulator width the target sums into (32 on both runtimes above);
  recorded so a preset says it, and checked against the bias width.
* ``decomposed_ops``: how the target computes an activation that ONNX (opset 17, lowbit's export)
  has no op for and writes as a chain of elementwise nodes (GELU as Div → Erf → Add → Mul → Mul,
  SiLU as Sigmoid · x; core/quantsim/decomposed.py). ``"per_node"``: every node output of the chain
  is rounded to its own 8-bit grid — the placement AIMET's config files describe (aimet-onnx puts an
  output quantizer on every ONNX node) and what aimet-onnx's simulation and a QNN graph built from
  its encodings compute. ``"fused"``: the chain runs in float between the op's input and output
  grids, as ONNX Runtime runs lowbit's QDQ model (no Q/DQ inside the chain). A config without a
  ``target`` (an AIMET file as shipped) is ``"per_node"``.
* ``rounding``: how a value is rounded onto the grid. ``"half_even"`` (default): ``x·(1/s)``
  rounded half to even, then shifted by the zero point (torch's fused fake-quant; ONNX
  QuantizeLinear rounds ``x / s`` the same way). ``"half_away"``: AIMET's simulation kernel
  (aimet-onnx QcQuantizeOp), which shifts by the offset first and rounds half away from zero,
  ``roundf(x / s − offset)`` in float32. They differ only on values at (or within a float32
  rounding of) a half step, but a model whose weights or tables were stored coarser than the grid
  has many: MiniLM's fp16-trained word embeddings put 606 of 11.7 M entries on exact ties, and one
  such 1-LSB step at the embedding sum grows through 6 layers to 9.8 dB between the two sims.

>>> TargetArithmetic.parse({"bias": "int32", "max_weight_bits": 7}, "target").weight_bits(8)
7
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError

BIAS_MODES = ("float", "int32")
DECOMPOSED_OP_MODES = ("per_node", "fused")
ROUNDING_MODES = ("half_even", "half_away")
_KEYS = ("bias", "max_weight_bits", "accumulator_bits", "decomposed_ops", "rounding", "description")


@dataclass(frozen=True)
class TargetArithmetic:
    bias: str = "float"
    max_weight_bits: int | None = None
    accumulator_bits: int = 32
    decomposed_ops: str = "per_node"
    rounding: str = "half_even"
    description: str = ""

    @property
    def bias_int32(self) -> bool:
        return self.bias == "int32"

    @property
    def rounds_decomposed_ops(self) -> bool:
        return self.decomposed_ops == "per_node"

    def weight_bits(self, asked: int) -> int:
        """The weight bitwidth the target runs for ``asked`` bits."""
        return asked if self.max_weight_bits is None else min(asked, self.max_weight_bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bias": self.bias,
            "max_weight_bits": self.max_weight_bits,
            "accumulator_bits": self.accumulator_bits,
            "decomposed_ops": self.decomposed_ops,
            "rounding": self.rounding,
            "description": self.description,
        }

    @classmethod
    def parse(cls, raw: Any, where: str) -> TargetArithmetic:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected an object with keys {', '.join(_KEYS)}")
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(_KEYS)}")
        bias = raw.get("bias", "float")
        if bias not in BIAS_MODES:
            raise ConfigError(f"{where}.bias: unknown bias mode {bias!r}; choose {', '.join(BIAS_MODES)}")
        bits = raw.get("max_weight_bits")
        if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16):
            raise ConfigError(f"{where}.max_weight_bits: expected an integer in 2..16, got {bits!r}")
        acc = raw.get("accumulator_bits", 32)
        if not isinstance(acc, int) or isinstance(acc, bool) or acc not in (16, 32, 64):
            raise ConfigError(f"{where}.accumulator_bits: expected 16, 32 or 64, got {acc!r}")
        if bias == "int32" and acc < 32:
            raise ConfigError(f"{where}: an int32 bias needs an accumulator of at least 32 bits, got {acc}")
        decomposed = raw.get("decomposed_ops", "per_node")
        if decomposed not in DECOMPOSED_OP_MODES:
            raise ConfigError(
                f"{where}.decomposed_ops: unknown mode {decomposed!r}; choose {', '.join(DECOMPOSED_OP_MODES)}"
            )
        rounding = raw.get("rounding", "half_even")
        if rounding not in ROUNDING_MODES:
            raise ConfigError(
                f"{where}.rounding: unknown rounding {rounding!r}; choose {', '.join(ROUNDING_MODES)}"
            )
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(f"{where}.description: expected a string")
        return cls(
            bias=bias,
            max_weight_bits=bits,
            accumulator_bits=acc,
            decomposed_ops=decomposed,
            rounding=rounding,
            description=description,
        )
