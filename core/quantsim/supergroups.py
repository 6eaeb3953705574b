"""Supergroups: chains of ops the target runs as one kernel, so no quantizer sits inside them.

A chain follows single-consumer module nodes whose op types match a config's ``op_list``; a
foldable BatchNorm after Conv/ConvTranspose/Gemm is part of the chain (it folds on target).
Depthwise and 3-D convolutions are never part of one, as in AIMET.
"""

from __future__ import annotations

from torch import fx, nn

# Layers a following BatchNorm folds into.
FOLDABLE_INTO = frozenset({"Conv", "ConvTranspose", "Gemm"})


def excluded_from_supergroups(modules: dict[str, nn.Module]) -> set[str]:
    """Depthwise and 3-D convolutions, which AIMET keeps out of every supergroup (its graph searcher's
    ``_check_if_conv3d_or_depthwise_conv``): their outputs are quantized even before an activation."""
    excluded = set()
    for name, m in modules.items():
        conv3d = isinstance(m, nn.Conv3d | nn.ConvTranspose3d)
        depthwise = isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups > 1 and m.weight.shape[1] == 1
        depthwise_t = (
            isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d)
            and m.groups > 1
            and m.weight.shape[0] == m.groups
        )
        if conv3d or depthwise or depthwise_t:
            excluded.add(name)
    return excluded


def exported_op_types(op_types: dict[str, str], modules: dict[str, nn.Module]) -> dict[str, str]:
    """Op types as the exported graph holds them, which is what AIMET's supergroups match: a linear
    without bias exports as MatMul, not Gemm (so a T5 FFN's MatMul→Relu is no Gemm+Relu chain)."""
    return {
        name: "MatMul"
        if op == "Gemm" and isinstance(modules[name], nn.Linear) and modules[name].bias is None
        else op
        for name, op in op_types.items()
    }


def supergroup_chains(
    qnodes: list[fx.Node],
    op_types: dict[str, str],
    supergroups: tuple[tuple[str, ...], ...],
    excluded: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[list[str]]:
    """Chains of single-consumer module nodes matching a supergroup's op list (BN after a layer skipped)."""
    chains = []
    for n in qnodes:
        if str(n.target) in excluded:
            continue
        for group in supergroups:
            if op_types[str(n.target)] != group[0]:
                continue
            chain = [str(n.target)]
            cur = n
            ok = True
            for want in group[1:]:
                nxt = _single_module_user(cur, op_types)
                if (
                    nxt is not None
                    and op_types[str(nxt.target)] == "BatchNormalization"
                    and want != "BatchNormalization"
                    and op_types[str(cur.target)] in FOLDABLE_INTO
                ):
                    chain.append(str(nxt.target))
                    cur = nxt
                    nxt = _single_module_user(cur, op_types)
                if nxt is None or op_types[str(nxt.target)] != want:
                    ok = False
                    break
                chain.append(str(nxt.target))
                cur = nxt
            if ok and not excluded.intersection(chain):
                chains.append(chain)
                break
    return chains


def _single_module_user(node: fx.Node, op_types: dict[str, str]) -> fx.Node | None:
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    if user.op == "call_module" and str(user.target) in op_types and user.args and user.args[0] is node:
        return user
    return None
