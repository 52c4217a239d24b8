"""Small graph helpers shared by the passes: constant lookup and fresh names.

Passes never edit an initializer in place: the legacy exporter shares equal
initializers between nodes (through ``Identity``), so a pass makes a new
initializer and points only its own node at it; cleanup drops the old one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` (initializer or Constant, through Identity nodes), or None."""
    while value is not None:
        tensor = ir.convenience.get_const_tensor(value)
        if tensor is not None:
            return tensor.numpy()
        producer = value.producer()
        if producer is None or producer.op_type != "Identity" or producer.domain != "":
            return None
        value = producer.inputs[0]
    return None


def optional_input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def fresh_name(graph: ir.Graph, hint: str) -> str:
    """``hint``, or ``hint_<n>`` if a value of the graph already uses that name."""
    taken = {v.name for v in graph.inputs} | set(graph.initializers)
    taken |= {out.name for node in graph for out in node.outputs}
    name, n = hint, 1
    while name in taken:
        name, n = f"{hint}_{n}", n + 1
    return name


def one_output_node(graph: ir.Graph, op: str, inputs: Sequence[ir.Value], attributes: dict, out_name: str,
                    dtype: ir.DataType) -> ir.Node:
    """A one-output node (not yet inserted) whose output gets a fresh name derived from ``out_name``."""
    name = fresh_name(graph, out_name)
    node = ir.node(op, inputs, attributes, name=f"{name}_{op}")
    node.outputs[0].name = name
    node.outputs[0].dtype = dtype
    return node


def add_initializer(graph: ir.Graph, hint: str, array: np.ndarray) -> ir.Value:
    name = fresh_name(graph, hint)
    value = ir.val(name, const_value=ir.tensor(np.asarray(array, order="C"), name=name))
    graph.register_initializer(value)
    return value


def set_const_input(node: ir.Node, index: int, array: np.ndarray, suffix: str) -> None:
    """Point input ``index`` of ``node`` at a new initializer holding ``array``.

    The name derives from the old input's name (or the node's) plus ``suffix``.
    """
    graph = node.graph
    assert isinstance(graph, ir.Graph), "passes run on the main graph only"
    old = optional_input(node, index)
    hint = f"{old.name if old is not None and old.name else node.name}_{suffix}"
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, add_initializer(graph, hint, array))


def with_channels(value: ir.Value, channels: int) -> None:
    """Record that axis 1 of ``value`` now has ``channels`` entries (if its shape is known)."""
    if value.shape is not None and len(value.shape) > 1:
        dims = list(value.shape.dims)
        dims[1] = channels
        value.shape = ir.Shape(dims)
