"""QuantSim: simulate a fixed-point target on a PyTorch model.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
>>> x = torch.randn(16, 1, 8, 8)
>>> sim = QuantSim(model, (x[:1],), param_bw=8, output_bw=8, scheme="sqnr")
>>> sim.compute_encodings([x[:8], x[8:]])
>>> y_fp, y_q = model(x), sim.model(x)
>>> bool(torch.nn.functional.cosine_similarity(y_fp.flatten(), y_q.flatten(), dim=0) > 0.99)
True
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import fx, nn

from core.errors import CancelledError, ConfigError
from core.quant.encoding import Encoding
from core.quant.quantizer import Quantizer
from core.quant.range_setters.base import canonical_scheme
from core.quantsim.config import QuantSimConfig, load_config
from core.quantsim.mixin import QuantizationMixin, quantize_module_in_place
from core.quantsim.placement import ModulePlan, QuantParams, plan_quantizers, weight_channel_axis

if TYPE_CHECKING:
    from core.export.records import EncodingsDoc

ProgressFn = Callable[[float], None]
CancelFn = Callable[[], bool]


class QuantSim:
    """A quantization simulation of ``model``.

    ``fp_model`` is the prepared FP32 graph (never modified by QuantSim); ``model`` is a copy whose
    quantized modules carry input/output/param quantizers (see core/quantsim/mixin.py).
    Quantizer keys are ``"<module>.input.<i>"``, ``"<module>.output.<i>"``, ``"<module>.param.<name>"``.
    """

    def __init__(
        self,
        model: nn.Module | Any,
        example_inputs: tuple[Any, ...] | torch.Tensor | None = None,
        config: str | Path | Mapping[str, Any] | QuantSimConfig | None = None,
        *,
        param_bw: int = 8,
        output_bw: int = 8,
        scheme: str = "min_max",
        param_scheme: str | None = None,
        act_scheme: str | None = None,
        per_channel: bool | None = None,
        act_dtype: str = "int",
        block_size: int | None = None,
        overrides: list[Any] | None = None,
        prepared: bool = False,
    ) -> None:
        if hasattr(model, "graph_source") and hasattr(model, "example_inputs"):
            # A core.io.LoadedModel: capture from its program (.pt2) or module, keep its I/O names.
            loaded: Any = model
            example_inputs = example_inputs if example_inputs is not None else loaded.example_inputs
            self.use_io_of(loaded)
            model = loaded.graph_source
        if example_inputs is None:
            raise ConfigError("QuantSim needs example_inputs (a tuple with one tensor per model input)")
        self.example_inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        cfg = load_config(config)
        if overrides:
            cfg = cfg.with_overrides(overrides)
        self.config = cfg
        self.params = QuantParams(
            param_bw=param_bw,
            output_bw=output_bw,
            param_scheme=canonical_scheme(param_scheme or scheme),
            act_scheme=canonical_scheme(act_scheme or scheme),
            per_channel=per_channel,
            act_dtype=act_dtype,
            block_size=block_size,
        )
        if prepared:
            if not isinstance(model, fx.GraphModule):
                raise ConfigError("prepared=True needs a torch.fx.GraphModule from core.graph.prepare_model")
            fp_model = model
        else:
            from core.graph import prepare_model

            fp_model = prepare_model(model, self.example_inputs)
        self.fp_model: fx.GraphModule = fp_model.eval()
        self.model: fx.GraphModule = copy.deepcopy(self.fp_model)
        if cfg.target.rounds_decomposed_ops:
            # Attention as the ONNX nodes the export writes, each quantized as the target does.
            from core.graph.attention import decompose_attention

            decompose_attention(self.model)
        self.plans: dict[str, ModulePlan] = plan_quantizers(self.model, cfg, self.params)
        self._install()

    # -- construction ------------------------------------------------------------------------------
    def _install(self) -> None:
        self._min_constraints: dict[str, float] = {}
        for name, plan in self.plans.items():
            module = self.model.get_submodule(name)

            def make(spec: Any, scheme: str, options: dict[str, Any] | None = None) -> Quantizer | None:
                if spec is None:
                    return None
                q = Quantizer(spec, scheme=scheme, scheme_options=options)
                q.rounding = self.config.target.rounding  # how the target rounds (core/quantsim/target.py)
                return q

            def make_param(pname: str, spec: Any, plan: ModulePlan = plan) -> Quantizer | None:
                # SQNR/MSE weight ranges balance noise across output channels (core/quant/range_setters).
                axis = weight_channel_axis(plan.op_type) if pname == "weight" else None
                balanced = axis is not None and plan.param_scheme in ("sqnr", "mse")
                return make(spec, plan.param_scheme, {"channel_axis": axis} if balanced else None)

            outputs = [make(plan.output, plan.act_scheme)]
            q = outputs[0]
            if q is not None and plan.output_constraint is not None:
                lo, hi = plan.output_constraint
                if hi is None:
                    # AIMET's one-sided constraint: min fixed, max calibrated (see _apply_min_constraints).
                    self._min_constraints[name] = lo
                else:
                    q.set_encoding(
                        Encoding.from_min_max(
                            torch.tensor([lo]),
                            torch.tensor([hi]),
                            bitwidth=q.spec.bitwidth,
                            symmetric=q.spec.symmetric,
                            spec=q.spec,
                        )
                    )
                    q.freeze()
            quantize_module_in_place(
                module,
                plan.op_type,
                inputs=[make(s, plan.act_scheme) for s in plan.inputs],
                outputs=outputs if plan.output is not None else [],
                params={p: make_param(p, s) for p, s in plan.params.items()},
            )
        self._share_tied_quantizers()
        if self.config.target.rounds_decomposed_ops:
            from core.quantsim.decomposed import attach_per_node_rounding

            attach_per_node_rounding(self)

    def _share_tied_quantizers(self) -> None:
        """Install one quantizer object for each set of tied quantizers (core/quantsim/ties.py).

        Outer Concats first, so a Concat tied into another passes the outer one's quantizer on.
        """
        for node in reversed(list(self.model.graph.nodes)):
            plan = self.plans.get(str(node.target)) if node.op == "call_module" else None
            if plan is None or not plan.shares:
                continue
            shared = cast("QuantizationMixin", self.model.get_submodule(plan.name)).output_quantizers[0]
            for key in plan.shares:
                module, role, index = key.rsplit(".", 2)
                getattr(self.model.get_submodule(module), f"{role}_quantizers")[int(index)] = shared

    def use_io_of(self, loaded: Any) -> None:
        """Export with ``loaded``'s (a core.io.LoadedModel) input/output names and dynamic dimensions."""
        self.input_names, self.output_names = list(loaded.input_names), list(loaded.output_names)
        self.dynamic_dims = {name: dict(axes) for name, axes in getattr(loaded, "dynamic_dims", {}).items()}

    # -- introspection -----------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def quantized_modules(self) -> dict[str, QuantizationMixin]:
        return {n: m for n, m in self.model.named_modules() if isinstance(m, QuantizationMixin)}

    def quantizers(self) -> dict[str, Quantizer]:
        found: dict[str, Quantizer] = {}
        for name, module in self.quantized_modules().items():
            for role, q in module.quantizers().items():
                found[f"{name}.{role}"] = q
        return found

    def param_quantizers(self) -> dict[str, Quantizer]:
        return {k: q for k, q in self.quantizers().items() if ".param." in k}

    def activation_quantizers(self) -> dict[str, Quantizer]:
        return {k: q for k, q in self.quantizers().items() if ".param." not in k}

    def summary(self) -> list[dict[str, Any]]:
        """One row per quantizer: key, spec, scheme, enabled, calibrated (for tables and reports)."""
        rows = []
        for key, q in self.quantizers().items():
            s = q.spec
            rows.append(
                {
                    "quantizer": key,
                    "dtype": f"{s.dtype}{s.bitwidth}",
                    "symmetric": s.symmetric,
                    "granularity": s.granularity,
                    "scheme": q.scheme,
                    "enabled": q.enabled,
                    "calibrated": q.is_calibrated,
                }
            )
        return rows

    # -- calibration -------------------------------------------------------------------------------
    def compute_param_encodings(self) -> None:
        """Weights' encodings from their current values (QAT calls this after each step)."""
        for module in self.quantized_modules().values():
            for pname, m in module.param_quantizers.items():
                q = cast("Quantizer | None", m)
                param = module._parameters[pname]
                if q is not None and param is not None and q.enabled and not q.frozen:
                    q.compute_encoding_from(param.detach())
            module.clear_param_cache()

    def compute_encodings(
        self,
        data: Iterable[Any] | Any,
        num_batches: int | None = None,
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        quantized_input_passes: int = 0,
    ) -> None:
        """Calibrate: weights first, then activations observed with quantized weights and float activations.

        ``data`` is an iterable of batches (a tensor or a tuple of tensors per batch) or an object with
        ``.batches(batch_size)`` such as core.io.CalibrationData. ``quantized_input_passes`` > 0 then
        re-observes the activation ranges that many times with upstream quantization active (see
        core/quantsim/refine.py); ``data`` must be re-iterable for that.
        """
        self.compute_param_encodings()
        batches: Any = data.batches(batch_size) if hasattr(data, "batches") else data
        total = num_batches or (len(batches) if hasattr(batches, "__len__") else None)
        # Tied quantizers are one object under several keys: observe it once.
        act = list(
            {id(q): q for q in self.activation_quantizers().values() if q.enabled and not q.frozen}.values()
        )
        device = _device_of(self.model)
        was_training = self.model.training
        self.model.eval()
        seen = 0
        with ExitStack() as stack, torch.no_grad():
            for q in act:
                stack.enter_context(q.observing())
            for batch in batches:
                if cancel is not None and cancel():
                    raise CancelledError("calibration cancelled")
                inputs = batch if isinstance(batch, tuple | list) else (batch,)
                self.model(*(_to(t, device) for t in inputs))
                seen += 1
                if progress is not None and total:
                    progress(min(1.0, seen / total))
                if num_batches is not None and seen >= num_batches:
                    break
        self.model.train(was_training)
        if seen == 0:
            raise ConfigError(
                "compute_encodings got no calibration batches; pass at least one batch of inputs"
            )
        self._apply_min_constraints()
        if quantized_input_passes:
            from core.quantsim.refine import refine_encodings

            refine_encodings(self, data, quantized_input_passes, num_batches, batch_size)
            self._apply_min_constraints()
        self.apply_target_arithmetic()

    def apply_target_arithmetic(self) -> None:
        """What the config's ``target`` says the runtime does once encodings are known (int32 bias)."""
        if self.config.target.bias_int32:
            from core.quantsim.bias import round_biases

            round_biases(self)

    def _apply_min_constraints(self) -> None:
        """Output encodings whose op type fixes only the minimum (AIMET: Relu ``{"min": 0.0}``)."""
        for name, lo in self._min_constraints.items():
            q = cast(
                "Quantizer | None",
                cast("QuantizationMixin", self.model.get_submodule(name)).output_quantizers[0],
            )
            enc = q.encoding if q is not None else None
            if q is None or enc is None or q.frozen or not q.enabled:
                continue
            hi = torch.clamp(enc.max, min=lo).to(torch.float32)
            q.set_encoding(
                Encoding.from_min_max(
                    torch.full_like(hi, lo),
                    hi,
                    bitwidth=q.spec.bitwidth,
                    symmetric=q.spec.symmetric,
                    spec=q.spec,
                )
            )

    # -- enabling and freezing ---------------------------------------------------------------------
    def set_enabled(self, enabled: bool, *, kind: str = "all", pattern: str = "*") -> int:
        """Enable/disable quantizers by kind ('all' | 'param' | 'activation') and key pattern; returns the count."""
        if kind not in ("all", "param", "activation"):
            raise ConfigError(f"unknown quantizer kind {kind!r}; choose all, param or activation")
        chosen = {
            "all": self.quantizers,
            "param": self.param_quantizers,
            "activation": self.activation_quantizers,
        }[kind]()
        count = 0
        for key, q in chosen.items():
            module = key.rsplit(".", 2)[0]
            if fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(module, pattern):
                q.enabled = enabled
                count += 1
        for m in self.quantized_modules().values():
            m.clear_param_cache()
        return count

    def freeze_param_encodings(self) -> None:
        for q in self.param_quantizers().values():
            q.freeze()

    # -- import / export ---------------------------------------------------------------------------
    def load_encodings(
        self,
        source: str | Path | Mapping[str, Any] | EncodingsDoc,
        *,
        freeze: bool = False,
        strict: bool = True,
        user_graph: Any = None,
        ignored: dict[str, str] | None = None,
    ) -> None:
        """Load an encodings file (AIMET 0.6.1 / 1.0.0 / 2.0.0) written for this model (``user_graph``:
        the ONNX graph it was imported from; ``ignored`` collects the entries that set no quantizer and
        why; see core.export.loader.load_encodings)."""
        from core.export import load_encodings

        load_encodings(self, source, freeze=freeze, strict=strict, user_graph=user_graph, ignored=ignored)
        self.apply_target_arithmetic()
        for m in self.quantized_modules().values():
            m.clear_param_cache()

    def export(
        self, out_dir: str | Path, prefix: str = "model", encoding_version: str = "1.0.0", qdq: bool = True
    ) -> Any:
        """Write ``<prefix>.onnx``, ``<prefix>.encodings`` and (if qdq) ``<prefix>_qdq.onnx`` to out_dir."""
        from core.export import export_sim

        return export_sim(self, out_dir, prefix=prefix, encoding_version=encoding_version, qdq=qdq)

    def to(self, device: torch.device | str) -> QuantSim:
        self.fp_model.to(device)
        self.model.to(device)
        for m in self.quantized_modules().values():
            m.clear_param_cache()
        return self


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _to(t: Any, device: torch.device) -> Any:
    return t.to(device) if isinstance(t, torch.Tensor) else t
