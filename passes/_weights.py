"""Conv/Gemm weights that are either a float constant or INT8 -> DequantizeLinear (-> Cast).

Weights are quantized before BN is folded (docs/design.md §7 and §8: the integers a
trained quantizer chose must reach the artefact unchanged), so the passes after
:class:`passes.qdq.QuantizeWeightsPass` see both forms. They read and rewrite a weight
only through this module: a rewrite of a quantized weight changes the integers and the
per-channel scales and inserts a fresh DequantizeLinear for its node alone (a shared
DQ stays as it is for its other readers; cleanup drops one left unused).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from passes._graph import add_initializer, const_array, one_output_node, set_const_input

__all__ = ["QuantizedWeight", "quantized_weight", "weight_values", "rescale_weight", "take_weight", "dequantize_node"]

# Scale for an all-zero channel: positive (TensorRT rejects 0) and a normal fp16 number.
MIN_SCALE = float(np.finfo(np.float16).tiny)


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """INT8 values, per-channel float32 scales on ``axis``, and the dtype the weight is cast to."""

    values: np.ndarray
    scale: np.ndarray
    axis: int
    dtype: ir.DataType

    def dequantized(self) -> np.ndarray:
        shape = [1] * self.values.ndim
        shape[self.axis] = -1
        return (self.values.astype(np.float32) * self.scale.reshape(shape)).astype(self.dtype.numpy())


def quantized_weight(value: ir.Value | None) -> QuantizedWeight | None:
    """The constant INT8 weight behind ``value`` (DQ of constants, zero point 0, through a Cast), or None."""
    producer = value.producer() if value is not None else None
    dtype = value.dtype if value is not None else None
    if producer is not None and producer.op_type == "Cast" and producer.domain == "":
        producer = producer.inputs[0].producer()
    if producer is None or producer.op_type != "DequantizeLinear" or producer.domain != "" or dtype is None:
        return None
    values, scale = const_array(producer.inputs[0]), const_array(producer.inputs[1])
    zero_point = const_array(producer.inputs[2]) if len(producer.inputs) > 2 else None
    if values is None or scale is None or values.dtype != np.int8 or (zero_point is not None and zero_point.any()):
        return None
    axis = producer.attributes.get_int("axis", 1) % values.ndim
    return QuantizedWeight(values, np.broadcast_to(scale, (values.shape[axis],)).astype(np.float32), axis, dtype)


def weight_values(value: ir.Value | None) -> np.ndarray | None:
    """The weight as numbers: the float constant, or the dequantized INT8 one."""
    quantized = quantized_weight(value)
    return quantized.dequantized() if quantized is not None else (const_array(value) if value is not None else None)


def rescale_weight(node: ir.Node, factor: np.ndarray) -> None:
    """Multiply output channel c (axis 0) of input 1 by ``factor[c]``: BN folding.

    A quantized weight keeps its integers: the scale takes |factor|, and a channel with
    factor < 0 has its integers negated, so every scale stays positive; factor 0 zeroes it.
    """
    quantized = quantized_weight(node.inputs[1])
    if quantized is None:
        weight = const_array(node.inputs[1])
        folded = weight.astype(np.float64) * factor.reshape(-1, *([1] * (weight.ndim - 1)))
        set_const_input(node, 1, folded.astype(weight.dtype), "folded")
        return
    assert quantized.axis == 0, "BN folds into output channels, which are axis 0"
    sign = np.sign(factor).reshape(-1, *([1] * (quantized.values.ndim - 1)))
    values = (quantized.values * sign).astype(np.int8)
    scale = (quantized.scale.astype(np.float64) * np.abs(factor)).astype(np.float32)
    live = values.reshape(len(values), -1).any(axis=1) & (scale > 0)
    _replace(node, "folded", dataclasses.replace(quantized, values=values, scale=np.where(live, scale, MIN_SCALE)
                                                 .astype(np.float32)))


def take_weight(node: ir.Node, index: int, keep: np.ndarray, axis: int) -> None:
    """Keep only entries ``keep`` of input ``index`` along ``axis`` (channel pruning)."""
    quantized = quantized_weight(node.inputs[index])
    if quantized is None:
        set_const_input(node, index, np.take(const_array(node.inputs[index]), keep, axis=axis), "pruned")
        return
    scale = quantized.scale[keep] if axis == quantized.axis else quantized.scale
    _replace(node, "pruned", dataclasses.replace(quantized, values=np.take(quantized.values, keep, axis=axis),
                                                 scale=scale), index)


def dequantize_node(graph: ir.Graph, name: str, weight: QuantizedWeight) -> list[ir.Node]:
    """INT8 initializer -> DequantizeLinear(axis) [-> Cast to the weight's dtype], named after ``name``."""
    inputs = [
        add_initializer(graph, f"{name}_int8", weight.values),
        add_initializer(graph, f"{name}_scale", weight.scale),
        add_initializer(graph, f"{name}_zero_point", np.zeros(weight.scale.shape, np.int8)),
    ]
    nodes = [one_output_node(graph, "DequantizeLinear", inputs, {"axis": weight.axis}, f"{name}_dequantized",
                         ir.DataType.FLOAT)]
    if weight.dtype != ir.DataType.FLOAT:  # opset 13 DequantizeLinear only outputs float32
        nodes.append(one_output_node(graph, "Cast", nodes[-1].outputs, {"to": weight.dtype},
                                 f"{name}_dequantized_cast", weight.dtype))
    nodes[-1].outputs[0].shape = ir.Shape(weight.values.shape)
    return nodes


def _replace(node: ir.Node, suffix: str, weight: QuantizedWeight, index: int = 1) -> None:
    graph = node.graph
    assert isinstance(graph, ir.Graph), "passes run on the main graph only"
    old = node.inputs[index].producer()
    while old is not None and old.op_type != "DequantizeLinear":
        old = old.inputs[0].producer()
    nodes = dequantize_node(graph, f"{old.inputs[0].name.removesuffix('_int8')}_{suffix}", weight)
    node.prepend(nodes)
    node.replace_input_with(index, nodes[-1].outputs[0])
