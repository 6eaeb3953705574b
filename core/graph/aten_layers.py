"""ATen ops with weights -> torch's own layers (``aten.conv2d`` -> ``nn.Conv2d``, ``aten.linear`` -> ``nn.Linear``).

The layer is built on the meta device and then given the program's own (copied) tensors, so it computes
exactly what the ATen op computed. When a weight is not a parameter/buffer of the program (computed at run
time, e.g. a dynamic convolution) the converter declines and the node stays a float ``call_function``.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from core.graph import aten_math, ops
from core.graph.aten_registry import Conversion, ConversionContext, arg, register_aten


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    values = tuple(value)
    return values * n if len(values) == 1 else values


def _assign(module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
    if tensor is None:
        setattr(module, name, None)
    elif isinstance(tensor, nn.Parameter):
        setattr(module, name, tensor)
    elif name in module._parameters:
        module._parameters[name] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    else:
        module._buffers[name] = tensor


def _weight_normed(item: Any, ctx: ConversionContext) -> torch.Tensor | None:
    """The weight ``aten._weight_norm(v, g, dim)`` computes from program tensors (weight-normalised
    convs, Wav2Vec2's positional conv), computed once here: at inference it is a constant."""
    if not isinstance(item, fx.Node) or item.op != "call_function" or len(item.args) < 2:
        return None
    if getattr(getattr(item.target, "overloadpacket", None), "__name__", None) != "_weight_norm":
        return None
    v, g = ctx.tensor_of(item.args[0]), ctx.tensor_of(item.args[1])
    if v is None or g is None:
        return None
    dim = arg(item, "dim", 2, 0)
    with torch.no_grad():
        return nn.Parameter(torch._weight_norm(v.detach(), g.detach(), dim))


def _tensors(node: fx.Node, ctx: ConversionContext, *nodes: Any) -> list[torch.Tensor | None] | None:
    """Program tensors for weight-like arguments; None if any given one is computed at run time."""
    out: list[torch.Tensor | None] = []
    for item in nodes:
        if item is None:
            out.append(None)
            continue
        tensor = ctx.tensor_of(item)
        if tensor is None:
            tensor = _weight_normed(item, ctx)
        if tensor is None:
            return None
        out.append(tensor)
    return out


_CONV: dict[int, Any] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T: dict[int, Any] = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@register_aten("conv1d", "conv2d", "conv3d")
def _conv(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    weight_node, bias_node = node.args[1], arg(node, "bias", 2)
    tensors = _tensors(node, ctx, weight_node, bias_node)
    if tensors is None:
        return None
    weight, bias = tensors
    assert weight is not None
    dims = weight.dim() - 2
    groups = arg(node, "groups", 6, 1)
    padding = arg(node, "padding", 4, 0)
    module = _CONV[dims](
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_ntuple(arg(node, "stride", 3, 1), dims),
        padding=padding if isinstance(padding, str) else _ntuple(padding, dims),
        dilation=_ntuple(arg(node, "dilation", 5, 1), dims),
        groups=groups,
        bias=bias is not None,
        device="meta",
    )
    _assign(module, "weight", weight)
    _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "conv")


@register_aten("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transpose(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    tensors = _tensors(node, ctx, node.args[1], arg(node, "bias", 2))
    if tensors is None:
        return None
    weight, bias = tensors
    assert weight is not None
    dims = weight.dim() - 2
    groups = arg(node, "groups", 6, 1)
    module = _CONV_T[dims](
        weight.shape[0],
        weight.shape[1] * groups,
        tuple(weight.shape[2:]),
        stride=_ntuple(arg(node, "stride", 3, 1), dims),
        padding=_ntuple(arg(node, "padding", 4, 0), dims),
        output_padding=_ntuple(arg(node, "output_padding", 5, 0), dims),
        groups=groups,
        dilation=_ntuple(arg(node, "dilation", 7, 1), dims),
        bias=bias is not None,
        device="meta",
    )
    _assign(module, "weight", weight)
    _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "conv_transpose")


@register_aten("convolution")
def _convolution(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    """The inference IR's ``aten.convolution`` (what ``run_decompositions`` makes of conv2d and friends):
    ``(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)``."""
    tensors = _tensors(node, ctx, node.args[1], node.args[2])
    if tensors is None or len(node.args) < 9:
        return None
    weight, bias = tensors
    assert weight is not None
    dims = weight.dim() - 2
    stride, padding, dilation, transposed, output_padding, groups = node.args[3:9]
    common: dict[str, Any] = {
        "stride": _ntuple(stride, dims),
        "padding": _ntuple(padding, dims),
        "dilation": _ntuple(dilation, dims),
        "groups": groups,
        "bias": bias is not None,
        "device": "meta",
    }
    if transposed:
        module: nn.Module = _CONV_T[
            dims
        ](
            weight.shape[0],
            weight.shape[1] * groups,  # type: ignore[operator]
            tuple(weight.shape[2:]),
            output_padding=_ntuple(output_padding, dims),
            **common,
        )
    else:
        module = _CONV[
            dims
        ](
            weight.shape[1] * groups,  # type: ignore[operator]
            weight.shape[0],
            tuple(weight.shape[2:]),
            **common,
        )
    _assign(module, "weight", weight)
    _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "conv_transpose" if transposed else "conv")


def _transposed_parameter(item: Any) -> fx.Node | None:
    """The placeholder behind ``aten.permute(w, [1, 0])`` / ``aten.t(w)`` (how the inference IR feeds a
    Linear's weight to ``addmm``), else None."""
    if not isinstance(item, fx.Node) or item.op != "call_function":
        return None
    name = getattr(getattr(item.target, "overloadpacket", None), "__name__", None)
    source = item.args[0] if item.args else None
    if not isinstance(source, fx.Node) or source.op != "placeholder":
        return None
    if name == "t" or (name == "permute" and list(item.args[1]) == [1, 0]):  # type: ignore[arg-type]
        return source
    return None


@register_aten("addmm")
def _addmm_linear(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    """``addmm(bias, x, permute(weight))`` of the inference IR, or ``addmm(bias, x, weight)`` with the
    weight stored (in, out) (GPT-2's ``Conv1D``), with program tensors: an ``nn.Linear`` (anything
    else: the generic Addmm of core.graph.aten_math).

    A layer, not math on two constants: its weight gets the config's weight quantizer (symmetric) and
    its bias none, as aimet-onnx gives the Gemm the exporter writes for it. A (in, out) weight is held
    transposed, (out, in), as the ONNX importer holds a ``Gemm(transB=0)`` weight.
    """
    weight_node, third = _transposed_parameter(node.args[2]), node.args[2]
    stored_in_out = weight_node is None and isinstance(third, fx.Node) and ctx.tensor_of(third) is not None
    if stored_in_out and isinstance(third, fx.Node):
        weight_node = third
    beta, alpha = arg(node, "beta", 3, 1), arg(node, "alpha", 4, 1)
    tensors = _tensors(node, ctx, weight_node, node.args[0]) if weight_node is not None else None
    bias_val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if (
        tensors is None
        or beta != 1
        or alpha != 1
        or not isinstance(bias_val, torch.Tensor)
        or bias_val.dim() != 1
    ):
        return aten_math.addmm(node, ctx)
    weight, bias = tensors
    assert weight is not None
    if stored_in_out:
        weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=weight.requires_grad)
    module = nn.Linear(weight.shape[1], weight.shape[0], device="meta")
    _assign(module, "weight", weight)
    _assign(module, "bias", bias)
    return Conversion(module, (node.args[1],), "linear")


@register_aten("linear")
def _linear(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    tensors = _tensors(node, ctx, node.args[1], arg(node, "bias", 2))
    if tensors is None:
        return None
    weight, bias = tensors
    assert weight is not None
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    _assign(module, "weight", weight)
    _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "linear")


_BN: dict[int, Any] = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _bn_module(node: fx.Node, ctx: ConversionContext, momentum_at: int, eps_at: int) -> nn.Module | None:
    """The eval-mode BatchNorm module of an aten BN node ``(input, weight, bias, running_mean,
    running_var, …)``; ``momentum_at``/``eps_at`` are those arguments' positions, which differ between
    the pre-dispatch op and the inference IR's. None when the statistics are not constants."""
    weight_node, bias_node, mean_node, var_node = node.args[1:5]
    if mean_node is None or var_node is None:
        return None
    tensors = _tensors(node, ctx, weight_node, bias_node, mean_node, var_node)
    val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if tensors is None or not isinstance(val, torch.Tensor) or val.dim() not in _BN:
        return None
    weight, bias, mean, var = tensors
    assert mean is not None and var is not None
    module = _BN[val.dim()](
        mean.shape[0], eps=arg(node, "eps", eps_at, 1e-5), momentum=arg(node, "momentum", momentum_at, 0.1),
        affine=weight is not None, device="meta",
    )  # fmt: skip
    if weight is not None:
        _assign(module, "weight", weight)
        _assign(module, "bias", bias if bias is not None else torch.zeros_like(weight))
    _assign(module, "running_mean", mean)
    _assign(module, "running_var", var)
    _assign(module, "num_batches_tracked", torch.zeros((), dtype=torch.long, device=mean.device))
    return module.eval()


@register_aten("batch_norm")
def _batch_norm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    if arg(node, "training", 5, False):
        return None  # a BN that updates its statistics is training-time behaviour, not a layer to quantize
    module = _bn_module(node, ctx, momentum_at=6, eps_at=7)
    return None if module is None else Conversion(module, (node.args[0],), "batch_norm")


@register_aten("_native_batch_norm_legit_no_training")
def _batch_norm_inference(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    """The inference IR's BatchNorm, ``(input, weight, bias, running_mean, running_var, momentum, eps)``,
    a tuple of which only element 0 (the output) is read: a BatchNorm module standing for that element
    (``first_of_tuple``: the rebuild maps ``getitem(node, 0)`` to the module's output)."""
    # torch.export.load writes a getitem for every element; those of the statistics must be unread.
    if any(user.target is not operator.getitem or (user.args[1] != 0 and user.users) for user in node.users):
        return None
    module = _bn_module(node, ctx, momentum_at=5, eps_at=6)
    if module is None:
        return None
    return Conversion(module, (node.args[0],), "batch_norm", first_of_tuple=True)


@register_aten("layer_norm")
def _layer_norm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    weight_node, bias_node = arg(node, "weight", 2), arg(node, "bias", 3)
    tensors = _tensors(node, ctx, weight_node, bias_node)
    shape = tuple(node.args[1])  # type: ignore[arg-type]
    eps = arg(node, "eps", 4, 1e-5)
    if tensors is None or (tensors[0] is None) != (tensors[1] is None):
        # computed or half-present affine parameters: they become forward arguments
        return Conversion(ops.LayerNormFn(shape, eps), (node.args[0], weight_node, bias_node), "layer_norm")
    weight, bias = tensors
    module = nn.LayerNorm(
        shape, eps=arg(node, "eps", 4, 1e-5), elementwise_affine=weight is not None, device="meta"
    )
    if weight is not None:
        _assign(module, "weight", weight)
        _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "layer_norm")


@register_aten("group_norm")
def _group_norm(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    tensors = _tensors(node, ctx, arg(node, "weight", 2), arg(node, "bias", 3))
    val = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
    if tensors is None or (tensors[0] is None) != (tensors[1] is None) or not isinstance(val, torch.Tensor):
        return None
    weight, bias = tensors
    groups: Any = node.args[1]
    module = nn.GroupNorm(
        groups, val.shape[1], eps=arg(node, "eps", 4, 1e-5), affine=weight is not None, device="meta"
    )
    if weight is not None:
        _assign(module, "weight", weight)
        _assign(module, "bias", bias)
    return Conversion(module, (node.args[0],), "group_norm")


@register_aten("embedding")
def _embedding(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    tensors = _tensors(node, ctx, node.args[0])
    if tensors is None or arg(node, "sparse", 4, False):
        return None
    (weight,) = tensors
    assert weight is not None
    padding_idx = arg(node, "padding_idx", 2, -1)
    module = nn.Embedding(
        weight.shape[0], weight.shape[1], padding_idx=None if padding_idx < 0 else padding_idx, device="meta"
    )
    _assign(module, "weight", weight)
    return Conversion(module, (node.args[1],), "embedding")


@register_aten("prelu", "_prelu_kernel")
def _prelu(node: fx.Node, ctx: ConversionContext) -> Conversion | None:
    tensors = _tensors(node, ctx, node.args[1])
    if tensors is None:
        return None
    (weight,) = tensors
    assert weight is not None
    module = nn.PReLU(weight.numel(), device="meta")
    _assign(module, "weight", weight)
    return Conversion(module, (node.args[0],), "prelu")
