"""Parameters and MACs read from an ONNX graph itself, so a model from any tool compares with one command.

Parameters are the elements of the constant tensors that Conv, Gemm and MatMul consume as
weights and biases, followed back through DequantizeLinear (INT8 weights), Identity, Cast,
Transpose and Reshape; each tensor counts once, and quantization scales do not count.
MACs are Conv ``out elements x (C_in / groups) x kh x kw`` and Gemm/MatMul
``out elements x K`` at the graph's static shapes (batch included), from ONNX shape inference.
"""

from __future__ import annotations

import dataclasses
import math

import onnx
from onnx import numpy_helper

from onnxnas.errors import OnnxNasError

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
PASS_THROUGH = ("DequantizeLinear", "Identity", "Cast", "Transpose", "Reshape")


@dataclasses.dataclass(frozen=True)
class OnnxCounts:
    params: int
    macs: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def onnx_counts(model: onnx.ModelProto, where: str = "model.onnx") -> OnnxCounts:
    """Weight parameters and MACs of ``model``'s Conv/Gemm/MatMul nodes (shapes must be static)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    constants = {t.name: math.prod(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = math.prod(numpy_helper.to_array(node.attribute[0].t).shape)
    producers = {out: node for node in graph.node for out in node.output}
    shapes = {v.name: _dims(v) for v in (*graph.input, *graph.value_info, *graph.output)}
    shapes.update({t.name: tuple(t.dims) for t in graph.initializer})
    counted: set[str] = set()
    params = macs = 0
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for name in node.input[1:] if node.op_type != "MatMul" else node.input:
            source = _constant_source(name, producers, constants)
            if source is not None and source not in counted:
                counted.add(source)
                params += constants[source]
        macs += _macs(node, shapes, where)
    return OnnxCounts(params, macs)


def _constant_source(name: str, producers: dict[str, onnx.NodeProto], constants: dict[str, int]) -> str | None:
    """The constant tensor behind ``name`` (through dequantize/reshape-like nodes), or None for an activation."""
    while name not in constants:
        node = producers.get(name)
        if node is None or node.op_type not in PASS_THROUGH:
            return None
        name = node.input[0]
    return name


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    if not value.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _shape(name: str, shapes: dict[str, tuple[int, ...] | None], node: onnx.NodeProto, where: str) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None:
        raise OnnxNasError(f"{node.op_type} node {node.name or node.output[0]!r}: the shape of {name!r} is not static",
                           where=where, fix="export with a static input shape (batch included) to count its MACs")
    return shape


def _macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...] | None], where: str) -> int:
    out = _shape(node.output[0], shapes, node, where)
    if node.op_type == "Conv":
        return math.prod(out) * math.prod(_shape(node.input[1], shapes, node, where)[1:])
    a = _shape(node.input[0], shapes, node, where)
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    k = a[-2] if node.op_type == "Gemm" and trans_a else a[-1]
    return math.prod(out) * k

