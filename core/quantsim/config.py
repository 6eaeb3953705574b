"""Quantsim configuration: AIMET's quantsim config JSON, accepted as is, plus lowbit's per-layer overrides.

AIMET's format (see shared/AIMET-REFERENCE.md §1.4) has six required keys — ``defaults``,
``params``, ``op_type``, ``supergroups``, ``model_input``, ``model_output`` — with booleans
written as the strings "True"/"False" and op types named as in ONNX (Conv, Gemm, Relu, ...).
lowbit adds one optional key, ``overrides``: a list of per-layer rules matched on module names
(fnmatch patterns), e.g. ``{"pattern": "layer4.*", "param_bw": 8, "output_bw": 16}``.

>>> cfg = load_config("default")
>>> cfg.op_rule("Dropout").is_output_quantized
False
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from core.errors import ConfigError, ConfigWarning
from core.quant.range_setters.base import canonical_scheme
from core.quantsim.target import TargetArithmetic

REQUIRED_KEYS = ("defaults", "params", "op_type", "supergroups", "model_input", "model_output")
OPTIONAL_KEYS = ("supergroup_pass_list", "overrides", "target", "name", "description", "version")
# AIMET's graph passes (``supergroup_pass_list``) and what each one means in a prepared graph:
# MatmulAdd runs MatMul + Add (a bias) as one kernel, so no quantizer sits between them: only a
# MatMul with a constant weight whose sole reader adds a constant vector (AIMET's
# ``_get_matmul_add_bias_idx``; a dynamic MatMul such as attention's Q·Kᵀ + mask keeps its output
# quantizer), which placement's ``_matmul_add_biases`` finds, so it is no generic chain; the
# normalization passes match the ops a decomposed LayerNorm/RMSNorm leaves behind, which lowbit's
# preparer already holds as one module each.
SUPERGROUP_PASSES: Mapping[str, tuple[str, ...] | None] = {
    "MatmulAdd": None,
    "LayerNormalization": None,
    "RMSNormalization": None,
}
# Ops whose output is on its input's grid (AIMET's ``_is_grid_preserving_op``): aimet-onnx gives them
# no output quantizer unless the config's op_type names them, so an encodings file that has one is
# rejected by its strict loader. Only those with a lowbit module are listed.
GRID_PRESERVING_OP_TYPES = frozenset({"MaxPool", "DepthToSpace", "SpaceToDepth", "Pad"})
_PRESET_PACKAGE = "core.quantsim.presets"
# Activation dtypes an override may ask for ('auto': float16 at 16 bits, integer otherwise).
ACT_DTYPES = ("int", "float", "auto")


def _bool(value: Any, where: str) -> bool:
    """AIMET writes booleans as strings; accept both forms, reject anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where}: expected a boolean ('True'/'False' or true/false), got {value!r}")


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _kernels(value: Any, where: str) -> tuple[Mapping[str, Any], ...]:
    """supported_kernels: a list of {activation: {...}, param: {...}} objects (kept as given)."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of {{'activation': ..., 'param': ...}} objects")
    return tuple(_obj(k, f"{where}[{i}]") for i, k in enumerate(value))


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """lowbit's own keys (overrides, target): an unknown key is an error (a typo would drop a rule)."""
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}")


def _warn_unknown_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """AIMET's format grows with its releases: a key lowbit does not know is named and ignored."""
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        warnings.warn(
            f"{where}: unknown key(s) {', '.join(unknown)} ignored; lowbit reads {', '.join(allowed)}",
            ConfigWarning,
            stacklevel=3,
        )


def _constraints(value: Any, where: str) -> tuple[float, float | None]:
    """AIMET's encoding_constraints: a fixed ``min`` and an optional fixed ``max`` (absent: calibrated)."""
    c = _obj(value, where)
    _warn_unknown_keys(c, ("min", "max"), where)
    try:
        lo = float(c["min"])
        hi = float(c["max"]) if c.get("max") is not None else None
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number 'min' and optionally a number 'max'") from None
    if hi is not None and not lo < hi:
        raise ConfigError(f"{where}: min must be below max, got {(lo, hi)}")
    return lo, hi


@dataclass(frozen=True)
class ParamRule:
    is_quantized: bool | None = None
    is_symmetric: bool | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> ParamRule:
        raw = _obj(raw, where)
        _warn_unknown_keys(raw, ("is_quantized", "is_symmetric"), where)
        return cls(
            is_quantized=_bool(raw["is_quantized"], f"{where}.is_quantized")
            if "is_quantized" in raw
            else None,
            is_symmetric=_bool(raw["is_symmetric"], f"{where}.is_symmetric")
            if "is_symmetric" in raw
            else None,
        )


@dataclass(frozen=True)
class OpRule:
    is_input_quantized: bool | None = None
    is_output_quantized: bool | None = None
    is_symmetric: bool | None = None
    per_channel_quantization: bool | None = None
    params: Mapping[str, ParamRule] = field(default_factory=dict)
    # (fixed min, fixed max or None: max calibrated), as AIMET's set_fixed_encoding_range.
    encoding_constraints: tuple[float, float | None] | None = None
    supported_kernels: tuple[Mapping[str, Any], ...] = ()

    _KEYS = (
        "is_input_quantized",
        "is_output_quantized",
        "is_symmetric",
        "per_channel_quantization",
        "params",
        "encoding_constraints",
        "supported_kernels",
    )

    @classmethod
    def parse(cls, raw: Any, where: str) -> OpRule:
        raw = _obj(raw, where)
        _warn_unknown_keys(raw, cls._KEYS, where)
        flags = {
            k: _bool(raw[k], f"{where}.{k}")
            for k in ("is_input_quantized", "is_output_quantized", "is_symmetric", "per_channel_quantization")
            if k in raw
        }
        params = {
            n: ParamRule.parse(v, f"{where}.params.{n}")
            for n, v in _obj(raw.get("params", {}), where).items()
        }
        constraints = None
        if "encoding_constraints" in raw:
            constraints = _constraints(raw["encoding_constraints"], f"{where}.encoding_constraints")
        kernels = _kernels(raw.get("supported_kernels", []), f"{where}.supported_kernels")
        return cls(**flags, params=params, encoding_constraints=constraints, supported_kernels=kernels)


@dataclass(frozen=True)
class Override:
    """A per-layer rule (lowbit extension): fields left None keep what the config decided."""

    pattern: str
    enabled: bool | None = None
    param_bw: int | None = None
    output_bw: int | None = None
    param_symmetric: bool | None = None
    act_symmetric: bool | None = None
    per_channel: bool | None = None
    act_dtype: str | None = None
    param_scheme: str | None = None
    act_scheme: str | None = None
    block_size: int | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> Override:
        if isinstance(raw, Override):
            return raw
        raw = _obj(raw, where)
        names = tuple(f.name for f in fields(cls))
        _check_keys(raw, names, where)
        if not isinstance(raw.get("pattern"), str) or not raw["pattern"]:
            raise ConfigError(f"{where}: 'pattern' (a module-name pattern such as 'layer1.*') is required")
        values: dict[str, Any] = {"pattern": raw["pattern"]}
        for name in ("enabled", "param_symmetric", "act_symmetric", "per_channel"):
            if name in raw:
                values[name] = _bool(raw[name], f"{where}.{name}")
        for name in ("param_bw", "output_bw", "block_size"):
            if name in raw:
                if not isinstance(raw[name], int) or isinstance(raw[name], bool):
                    raise ConfigError(f"{where}.{name}: expected an integer, got {raw[name]!r}")
                values[name] = raw[name]
        for name in ("param_bw", "output_bw"):
            if name in values and not 2 <= values[name] <= 16:
                raise ConfigError(f"{where}.{name}: bitwidth {values[name]} not supported; choose 2..16")
        if "block_size" in values and values["block_size"] < 1:
            raise ConfigError(f"{where}.block_size: expected a positive integer, got {values['block_size']}")
        if "act_dtype" in raw:
            if raw["act_dtype"] not in ACT_DTYPES:
                raise ConfigError(
                    f"{where}.act_dtype: unknown dtype {raw['act_dtype']!r}; choose {', '.join(ACT_DTYPES)}"
                )
            values["act_dtype"] = raw["act_dtype"]
        for name in ("param_scheme", "act_scheme"):
            if name in raw:
                if not isinstance(raw[name], str):
                    raise ConfigError(f"{where}.{name}: expected a scheme name, got {raw[name]!r}")
                try:
                    values[name] = canonical_scheme(raw[name])
                except ConfigError as exc:
                    raise ConfigError(f"{where}.{name}: {exc}") from None
        return cls(**values)


@dataclass(frozen=True)
class QuantSimConfig:
    """A parsed quantsim config. Look-ups fall back from op-specific rules to the defaults."""

    ops_output_quantized: bool = True
    ops_symmetric: bool = False
    params_quantized: bool = True
    params_symmetric: bool = True
    per_channel_quantization: bool = False
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    hw_version: str | None = None
    supported_kernels: tuple[Mapping[str, Any], ...] = ()
    params: Mapping[str, ParamRule] = field(default_factory=dict)
    op_type: Mapping[str, OpRule] = field(default_factory=dict)
    supergroups: tuple[tuple[str, ...], ...] = ()
    supergroup_passes: tuple[str, ...] = ()
    model_input_quantized: bool = True
    model_output_quantized: bool | None = None
    overrides: tuple[Override, ...] = ()
    target: TargetArithmetic = field(default_factory=TargetArithmetic)
    source: str = "<dict>"

    def op_rule(self, op_type: str) -> OpRule:
        rule = self.op_type.get(op_type, OpRule())
        if op_type in GRID_PRESERVING_OP_TYPES and op_type not in self.op_type:
            rule = OpRule(is_output_quantized=False)
        return OpRule(
            is_input_quantized=rule.is_input_quantized,
            is_output_quantized=(
                rule.is_output_quantized
                if rule.is_output_quantized is not None
                else self.ops_output_quantized
            ),
            is_symmetric=rule.is_symmetric if rule.is_symmetric is not None else self.ops_symmetric,
            per_channel_quantization=(
                rule.per_channel_quantization
                if rule.per_channel_quantization is not None
                else self.per_channel_quantization
            ),
            params=rule.params,
            encoding_constraints=rule.encoding_constraints,
            supported_kernels=rule.supported_kernels,
        )

    def param_rule(self, op_type: str, param_name: str) -> ParamRule:
        """op_type.params[name] > params[name] > defaults.params."""
        chain = [self.op_type.get(op_type, OpRule()).params.get(param_name), self.params.get(param_name)]
        quantized = next(
            (r.is_quantized for r in chain if r and r.is_quantized is not None), self.params_quantized
        )
        symmetric = next(
            (r.is_symmetric for r in chain if r and r.is_symmetric is not None), self.params_symmetric
        )
        return ParamRule(is_quantized=quantized, is_symmetric=symmetric)

    def with_overrides(self, overrides: list[Any] | tuple[Any, ...]) -> QuantSimConfig:
        extra = tuple(Override.parse(o, f"overrides[{i}]") for i, o in enumerate(overrides))
        return QuantSimConfig(
            **{**{f.name: getattr(self, f.name) for f in fields(self)}, "overrides": self.overrides + extra}
        )


def parse_config(raw: Mapping[str, Any], source: str = "<dict>") -> QuantSimConfig:
    """Parse an AIMET-format config (dict) with clear errors naming the key and what is accepted."""
    raw = _obj(raw, source)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ConfigError(
            f"{source}: missing required key(s) {', '.join(missing)}; an AIMET quantsim config has {', '.join(REQUIRED_KEYS)}"
        )
    _warn_unknown_keys(raw, REQUIRED_KEYS + OPTIONAL_KEYS, source)
    d = _obj(raw["defaults"], f"{source}: defaults")
    _warn_unknown_keys(d, _DEFAULTS_KEYS, f"{source}: defaults")
    ops = OpRule.parse(d.get("ops", {}), f"{source}: defaults.ops")
    dparams = ParamRule.parse(d.get("params", {}), f"{source}: defaults.params")
    groups = _supergroups(raw["supergroups"], source)
    passes = _supergroup_passes(raw.get("supergroup_pass_list", []), source)
    # A pass that fuses a chain is honoured as that chain's supergroup (AIMET: passes come first).
    groups = [p for name in passes if (p := SUPERGROUP_PASSES[name]) is not None] + groups
    mi = _obj(raw["model_input"], f"{source}: model_input")
    mo = _obj(raw["model_output"], f"{source}: model_output")
    _warn_unknown_keys(mi, ("is_input_quantized",), f"{source}: model_input")
    _warn_unknown_keys(mo, ("is_output_quantized",), f"{source}: model_output")
    overrides = raw.get("overrides", [])
    if not isinstance(overrides, list):
        raise ConfigError(f"{source}: overrides must be a list of {{'pattern': ..., ...}} objects")
    hw = d.get("hw_version")
    return QuantSimConfig(
        ops_output_quantized=bool(ops.is_output_quantized) if ops.is_output_quantized is not None else True,
        ops_symmetric=bool(ops.is_symmetric),
        params_quantized=dparams.is_quantized if dparams.is_quantized is not None else True,
        params_symmetric=dparams.is_symmetric if dparams.is_symmetric is not None else True,
        per_channel_quantization=_bool(
            d.get("per_channel_quantization", "False"), f"{source}: defaults.per_channel_quantization"
        ),
        strict_symmetric=_bool(d.get("strict_symmetric", "False"), f"{source}: defaults.strict_symmetric"),
        unsigned_symmetric=_bool(
            d.get("unsigned_symmetric", "False"), f"{source}: defaults.unsigned_symmetric"
        ),
        hw_version=str(hw) if hw is not None else None,
        supported_kernels=_kernels(d.get("supported_kernels", []), f"{source}: defaults.supported_kernels"),
        params={
            n: ParamRule.parse(v, f"{source}: params.{n}")
            for n, v in _obj(raw["params"], f"{source}: params").items()
        },
        op_type={
            n: OpRule.parse(v, f"{source}: op_type.{n}")
            for n, v in _obj(raw["op_type"], f"{source}: op_type").items()
        },
        supergroups=tuple(dict.fromkeys(groups)),
        supergroup_passes=passes,
        model_input_quantized=_bool(
            mi.get("is_input_quantized", "False"), f"{source}: model_input.is_input_quantized"
        ),
        model_output_quantized=(
            _bool(mo["is_output_quantized"], f"{source}: model_output.is_output_quantized")
            if "is_output_quantized" in mo
            else None
        ),
        overrides=tuple(Override.parse(o, f"{source}: overrides[{i}]") for i, o in enumerate(overrides)),
        target=TargetArithmetic.parse(raw.get("target", {}), f"{source}: target"),
        source=source,
    )


_DEFAULTS_KEYS = (
    "ops",
    "params",
    "strict_symmetric",
    "unsigned_symmetric",
    "per_channel_quantization",
    "hw_version",
    "supported_kernels",
)


def _supergroups(raw: Any, source: str) -> list[tuple[str, ...]]:
    if not isinstance(raw or [], list):
        raise ConfigError(f"{source}: supergroups must be a list of {{'op_list': [...]}} objects")
    groups = []
    for i, g in enumerate(raw or []):
        _warn_unknown_keys(
            _obj(g, f"{source}: supergroups[{i}]"), ("op_list",), f"{source}: supergroups[{i}]"
        )
        op_list = g.get("op_list")
        if not isinstance(op_list, list) or len(op_list) < 2 or not all(isinstance(o, str) for o in op_list):
            raise ConfigError(f"{source}: supergroups[{i}].op_list must list at least two ONNX op types")
        groups.append(tuple(op_list))
    return groups


def _supergroup_passes(raw: Any, source: str) -> tuple[str, ...]:
    where = f"{source}: supergroup_pass_list"
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"{where}: expected a list of pass names ({', '.join(SUPERGROUP_PASSES)})")
    unknown = [p for p in raw if p not in SUPERGROUP_PASSES]
    if unknown:
        warnings.warn(
            f"{where}: unknown pass(es) {', '.join(unknown)} ignored; lowbit knows {', '.join(SUPERGROUP_PASSES)}",
            ConfigWarning,
            stacklevel=3,
        )
    return tuple(p for p in raw if p in SUPERGROUP_PASSES)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(_PRESET_PACKAGE).iterdir() if p.name.endswith(".json"))


def load_config(source: str | Path | Mapping[str, Any] | QuantSimConfig | None = None) -> QuantSimConfig:
    """A config from a preset name ('default', 'htp_v73', ...), a JSON file path, a dict, or None (default)."""
    if isinstance(source, QuantSimConfig):
        return source
    if source is None:
        source = "default"
    if isinstance(source, Mapping):
        return parse_config(source)
    text_source = str(source)
    if isinstance(source, str) and text_source in preset_names():
        text = resources.files(_PRESET_PACKAGE).joinpath(f"{text_source}.json").read_text()
        return parse_config(json.loads(text), source=f"preset {text_source!r}")
    path = Path(text_source)
    if not path.is_file():
        raise ConfigError(
            f"quantsim config {text_source!r} is neither a preset ({', '.join(preset_names())}) nor a readable JSON file"
        )
    if path.stat().st_size > 1_000_000:
        raise ConfigError(f"{path}: quantsim config larger than 1 MB; a config is a small JSON file")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return parse_config(raw, source=str(path))
