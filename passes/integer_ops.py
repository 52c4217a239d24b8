"""Rewrite float ops into the equal ops that ONNX Runtime has INT8 kernels for.

ORT fuses ``DequantizeLinear -> op -> QuantizeLinear`` into an integer kernel only
for a fixed set of ops. Two ops the exporter emits fall outside it although an
equal op is inside:

- ``ReduceMean`` over H and W (``x.mean((2, 3))``, the SE squeeze and the head's
  pool) is ``GlobalAveragePool`` (QLinearGlobalAveragePool), followed by a
  ``Reshape`` to N x C when the reduced axes are dropped (ORT runs a Reshape
  between equal-scale Q/DQ on the INT8 tensor).
- ``Relu`` is ``LeakyRelu(alpha=0)`` (QLinearLeakyRelu, a 256-entry table). With a
  symmetric zero point (TensorRT's rule) ORT cannot absorb a Relu into the Q after a
  Conv, so a Relu would otherwise run in float between a DQ and a Q. A Relu whose
  output is read twice (the SE's pool and Mul) stays float: it is then the fan-out node
  that gives each integer reader its private Q (``DQ -> Relu -> Q, Q``), one node fewer
  than ``QLinearLeakyRelu -> DQ -> Max -> Q, Q``. In the ``ort`` flavor a Relu between
  two Convs stays a Relu (:func:`passes.qdq.unsigned_relu`): ORT absorbs it into the
  Conv under a UINT8 Q.
- ``Gemm(A, B, C)`` is ``Gemm(A, B) + C``: ORT's QGemm takes a bias only as INT32 from a
  DequantizeLinear, which TensorRT has no form of, so a float bias keeps the classifier
  a float Gemm that dequantizes its weight on every call (GPUNet-1: 1.28 M weights).

The rewrites are exact; TensorRT fuses GlobalAveragePool, LeakyRelu and a bias Add as
it does ReduceMean, Relu and Gemm's bias. Run it only for INT8 graphs, right before
activation QDQ.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes._graph import add_initializer, const_array, optional_input
from passes.qdq import FLAVORS, unsigned_relu

__all__ = ["IntegerOpsPass"]


class IntegerOpsPass(ir.passes.InPlacePass):
    """ReduceMean over H, W -> GlobalAveragePool [-> Reshape]; Relu read once -> LeakyRelu(alpha=0); Gemm bias -> Add.

    Attributes:
        rewritten: op type -> how many nodes of it the last call replaced.
    """

    def __init__(self, flavor: str = "tensorrt") -> None:
        super().__init__()
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.flavor = flavor
        self.rewritten: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.rewritten = {}
        # Relus last: whether one stays a Relu (ort flavor) depends on its readers being rewritten already
        for node in sorted(model.graph, key=lambda n: n.op_type == "Relu"):
            if node.domain != "":
                continue
            if node.op_type == "Relu" and len(node.outputs[0].uses()) == 1 and not (
                    self.flavor == "ort" and unsigned_relu(node)):
                replacement = [ir.node("LeakyRelu", [node.inputs[0]], {"alpha": 0.0}, name=node.name)]
            elif node.op_type == "ReduceMean" and _spatial_mean(node):
                replacement = _global_average_pool(node)
            elif node.op_type == "Gemm" and _plain_bias(node):
                replacement = _bias_add(node)
            else:
                continue
            out = node.outputs[0]
            was_output, name = out.is_graph_output(), out.name
            node.append(replacement)
            new_out = replacement[-1].outputs[0]
            new_out.dtype, new_out.shape = out.dtype, out.shape
            ir.convenience.replace_all_uses_with(out, new_out, replace_graph_outputs=True)
            model.graph.remove(node, safe=True)
            new_out.name = name if was_output or name else new_out.name
            self.rewritten[node.op_type] = self.rewritten.get(node.op_type, 0) + 1
        return ir.passes.PassResult(model, modified=bool(self.rewritten))


def _spatial_mean(node: ir.Node) -> bool:
    """A ReduceMean of a 4-D tensor over exactly axes 2 and 3."""
    shape = node.inputs[0].shape
    axes_value = optional_input(node, 1)
    axes = node.attributes.get_ints("axes", None) if axes_value is None else const_array(axes_value)
    if shape is None or len(shape) != 4 or axes is None:
        return False
    return sorted(int(a) % 4 for a in axes) == [2, 3]


def _global_average_pool(node: ir.Node) -> list[ir.Node]:
    pool = ir.node("GlobalAveragePool", [node.inputs[0]], name=node.name)
    if node.attributes.get_int("keepdims", 1):
        return [pool]
    pool.outputs[0].dtype = node.inputs[0].dtype
    shape = add_initializer(node.graph, f"{node.name or 'pool'}_flat_shape", np.array([0, -1], np.int64))
    return [pool, ir.node("Reshape", [pool.outputs[0], shape], name=f"{node.name}_flatten")]


def _plain_bias(node: ir.Node) -> bool:
    """A Gemm with a bias input added as it is (beta = 1)."""
    bias = optional_input(node, 2)
    return bias is not None and node.attributes.get_float("beta", 1.0) == 1.0


def _bias_add(node: ir.Node) -> list[ir.Node]:
    attributes = {name: attr.value for name, attr in node.attributes.items() if name != "beta"}
    gemm = ir.node("Gemm", node.inputs[:2], attributes, name=node.name)
    gemm.outputs[0].dtype = node.outputs[0].dtype
    return [gemm, ir.node("Add", [gemm.outputs[0], node.inputs[2]], name=f"{node.name}_bias")]
