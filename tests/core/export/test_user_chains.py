"""The user's own decomposition of an activation is read from their ONNX graph, and only where it computes
the module's function (core/export/user_chains.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.export.user_chains import same_function, user_chain
from core.quantsim.decomposed import CHAINS


def _dynamo_gelu(sqrt2: float) -> onnx.GraphProto:
    """GELU as torch's dynamo exporter writes it: 0.5 * (1 + erf(x / sqrt2)) first, times x last;
    ``x`` is a Gemm output, so the walk stops there."""
    consts = [numpy_helper.from_array(np.array(v, dtype=np.float32), n) for n, v in
              (("c_sqrt2", sqrt2), ("c_one", 1.0), ("c_half", 0.5))]  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["a", "w"], ["x"]),
        helper.make_node("Div", ["x", "c_sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "c_one"], ["p"]),
        helper.make_node("Mul", ["c_half", "p"], ["h"]),
        helper.make_node("Mul", ["x", "h"], ["y"]),
    ]
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    return helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w, *consts],
    )


def test_the_dynamo_exporters_gelu_is_read_in_its_own_order_and_computes_gelu():
    chain = user_chain(_dynamo_gelu(float(np.sqrt(2.0))), "y", stops=set())
    assert chain is not None
    assert [(n.name, n.op) for n in chain] == [
        ("d", "Div"),
        ("e", "Erf"),
        ("p", "Add"),
        ("h", "Mul"),
        ("y", "Mul"),
    ]
    assert chain[-1].args == ("x", "h") and chain[3].args == (0.5, "p")
    assert same_function(chain, CHAINS["gelu"])


@pytest.mark.parametrize("sqrt2", [2.0, 1.3])
def test_a_chain_that_computes_another_function_is_not_taken(sqrt2):
    chain = user_chain(_dynamo_gelu(sqrt2), "y", stops=set())
    assert chain is not None and not same_function(chain, CHAINS["gelu"])


def test_a_stop_tensor_ends_the_walk():
    # "d" recorded as a module's output: the chain from there is Erf/Add/Mul with two inputs (d and x).
    assert user_chain(_dynamo_gelu(float(np.sqrt(2.0))), "y", stops={"d"}) is None
