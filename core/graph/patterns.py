"""Graph patterns the PTQ techniques need, as functions over the fx nodes of a prepared model.

Names in and out are call-module targets (``layer1.0.conv1``) for module calls and node names otherwise,
so results can be fed straight to ``gm.get_submodule``.

Example::

    gm = prepare_model(model, inputs)
    find_layer_bn_pairs(gm)   # [('conv1', 'bn1'), ('layer1.0.conv1', 'layer1.0.bn1'), ...]
    find_cle_chains(gm)       # [['features.0', 'features.2', 'features.4'], ...]
"""

from __future__ import annotations

from torch import fx, nn

from core.graph.aten_registry import packet_name

LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.PReLU, nn.ELU, nn.Mish, nn.Softplus,
)  # fmt: skip
# Between two CLE layers only scale-equivariant functions may sit: relu(s*x) = s*relu(x) for s > 0.
CLE_JOINERS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.PReLU, nn.Identity, nn.Dropout)
_IDENTITY_FUNCTIONS = frozenset({"dropout", "alias", "clone", "contiguous", "detach"})


def node_label(node: fx.Node) -> str:
    """How patterns name a node: the module path for call_module, else the node name."""
    return str(node.target) if node.op == "call_module" else node.name


def find_node(gm: fx.GraphModule, name: str) -> fx.Node:
    """The node called ``name`` (a call_module target or a node name); KeyError naming it if absent."""
    for node in gm.graph.nodes:
        if node_label(node) == name or node.name == name:
            return node
    raise KeyError(f"no node or module call named {name!r} in the graph")


def producers(gm: fx.GraphModule, node_name: str) -> list[str]:
    """Labels of the nodes whose outputs ``node_name`` reads, in argument order."""
    return [node_label(n) for n in find_node(gm, node_name).all_input_nodes]


def consumers(gm: fx.GraphModule, node_name: str) -> list[str]:
    """Labels of the nodes that read ``node_name``'s output, in graph order."""
    return [node_label(n) for n in find_node(gm, node_name).users]


def _module(gm: fx.GraphModule, node: fx.Node, kinds: tuple[type[nn.Module], ...]) -> nn.Module | None:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(str(node.target))
    return module if isinstance(module, kinds) else None


def _sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return int(module.out_channels)  # type: ignore[arg-type]


def _in_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.in_channels)  # type: ignore[arg-type]


def find_layer_bn_pairs(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(layer, bn) for each Conv/ConvTranspose/Linear whose output is read only by a BatchNorm of its width.

    These are the pairs BN folding may merge (the layer's output is not needed anywhere else).
    """
    pairs = []
    for node in gm.graph.nodes:
        layer = _module(gm, node, LAYERS)
        user = _sole_user(node) if layer is not None else None
        bn = _module(gm, user, BATCH_NORMS) if user is not None else None
        if bn is None or user is None or user.args[:1] != (node,):
            continue
        if bn.num_features == _out_channels(layer):  # type: ignore[arg-type]
            pairs.append((node_label(node), node_label(user)))
    return pairs


def find_layer_activation_pairs(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """(layer, activation) for each Conv/ConvTranspose/Linear/BatchNorm read only by an activation module."""
    pairs = []
    for node in gm.graph.nodes:
        if _module(gm, node, LAYERS + BATCH_NORMS) is None:
            continue
        user = _sole_user(node)
        if user is not None and _module(gm, user, ACTIVATIONS) is not None and user.args[:1] == (node,):
            pairs.append((node_label(node), node_label(user)))
    return pairs


def _is_joiner(gm: fx.GraphModule, node: fx.Node) -> bool:
    if _module(gm, node, CLE_JOINERS) is not None:
        return True
    return node.op == "call_function" and packet_name(node.target) in _IDENTITY_FUNCTIONS


def _cle_layer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    layer = _module(gm, node, LAYERS)
    if layer is None or isinstance(layer, nn.Linear):
        return layer
    groups = layer.groups  # type: ignore[attr-defined]
    depthwise = groups == layer.in_channels == layer.out_channels  # type: ignore[attr-defined]
    return layer if groups == 1 or depthwise else None  # other grouped convs have no 1:1 channel map


def _next_layer(gm: fx.GraphModule, node: fx.Node, layer: nn.Module) -> fx.Node | None:
    previous, current = node, _sole_user(node)
    while current is not None and _is_joiner(gm, current) and current.args[:1] == (previous,):
        previous, current = current, _sole_user(current)
    if current is None or current.args[:1] != (previous,):
        return None
    following = _cle_layer(gm, current)
    if following is None or isinstance(following, nn.Linear) != isinstance(layer, nn.Linear):
        return None
    return current if _in_channels(following) == _out_channels(layer) else None


def find_cle_chains(gm: fx.GraphModule) -> list[list[str]]:
    """Maximal chains (length >= 2) of layers for cross-layer equalization, in graph order.

    Consecutive members are Conv->Conv (depthwise included) or Linear->Linear whose joint tensor has a
    single consumer at every step and passes only through ReLU/PReLU/identity (scale-equivariant).
    """
    successor: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        layer = _cle_layer(gm, node)
        if layer is not None and (nxt := _next_layer(gm, node, layer)) is not None:
            successor[node] = nxt
    has_predecessor = set(successor.values())
    chains = []
    for node in gm.graph.nodes:
        if node in successor and node not in has_predecessor:
            chain = [node]
            while chain[-1] in successor:
                chain.append(successor[chain[-1]])
            chains.append([node_label(n) for n in chain])
    return chains
