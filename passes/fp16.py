"""Convert a float32 graph to float16 for strongly typed TensorRT.

TensorRT 11 networks are strongly typed: precision comes from the tensor types in
the graph, not from builder flags. Every float32 tensor becomes float16 except
where the operator schema at the model's opset allows only float32 (for example
the scale and output of opset-13 DequantizeLinear); there the pass keeps float32
and inserts Casts, so the graph stays valid ONNX that ONNX Runtime (CPU) runs.
ORT's CPU provider has no float16 kernels for Conv, Gemm, Mul, Sigmoid and the
like; it inserts its own Casts and computes them in float32, so an ORT check of
this graph tests the float16 weights and I/O, not float16 arithmetic.

Not handled: subgraphs (If/Loop bodies) and ops whose output type comes from an
attribute other than Cast's ``to`` (ConstantOfShape, RandomNormal, EyeLike).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, ShapeInferencePass

from passes._graph import fresh_name

__all__ = ["ConvertFloat16Pass"]

_F32, _F16 = ir.DataType.FLOAT, ir.DataType.FLOAT16


class ConvertFloat16Pass(ir.passes.InPlacePass):
    """Turn float32 initializers, graph inputs/outputs, activations and Cast targets into float16.

    Args:
        keep_io_types: keep float32 graph inputs and outputs and insert Casts at
            the boundary instead (for callers that feed float32 buffers).

    Attributes:
        kept_float32: names of the float32 tensors left by the last call: the graph
            I/O with ``keep_io_types``, and tensors whose op allows only float32.
    """

    def __init__(self, keep_io_types: bool = False) -> None:
        super().__init__()
        self.keep_io_types = keep_io_types
        self.kept_float32: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        LiftConstantsToInitializersPass(size_limit=0)(model)
        ShapeInferencePass()(model)  # intermediate tensors need a dtype to be converted
        graph, opset = model.graph, model.opset_imports.get("", 1)
        originally_float = {v for v in _values(graph) if v.dtype == _F32}
        if not originally_float:
            return ir.passes.PassResult(model, modified=False)

        for value in graph.inputs:
            if value.dtype == _F32 and not self.keep_io_types:
                _retype(value)
        for value in graph.initializers.values():
            if value.dtype == _F32 and any(_accepts_f16(opset, n, i) for n, i in value.uses()):
                _retype(value)
        for node in graph:
            for index, out in enumerate(node.outputs):
                if out.dtype == _F32 and _accepts_f16(opset, node, index, output=True):
                    _retype(out)
                    if node.op_type == "Cast":
                        node.attributes["to"] = ir.AttrInt64("to", _F16)

        casts = _Casts(graph)
        for node in list(graph):
            for index, value in enumerate(node.inputs):
                if value in originally_float and node.op_type != "Cast":
                    wanted = _F16 if _accepts_f16(opset, node, index) else _F32
                    if value.dtype != wanted:
                        node.replace_input_with(index, casts.get(value, wanted))
        wanted = _F32 if self.keep_io_types else _F16
        for index, value in enumerate(graph.outputs):
            if value in originally_float and value.dtype != wanted:
                graph.outputs[index] = casts.output(value, wanted)
        self.kept_float32 = sorted(v.name or "" for v in _values(graph) if v.dtype == _F32)
        return ir.passes.PassResult(model, modified=True)


def _values(graph: ir.Graph) -> list[ir.Value]:
    return [*graph.inputs, *graph.initializers.values(), *(out for node in graph for out in node.outputs)]


def _retype(value: ir.Value) -> None:
    value.dtype = _F16
    if value.const_value is not None:
        array = value.const_value.numpy().astype(np.float16)
        value.const_value = ir.tensor(array, name=value.name)


def _accepts_f16(opset: int, node: ir.Node, index: int, output: bool = False) -> bool:
    return _port_types(node.domain, node.op_type, opset, index, output) >= {"tensor(float16)"}


@functools.cache
def _port_types(domain: str, op_type: str, opset: int, index: int, output: bool) -> frozenset[str]:
    """Types the schema allows at one input or output (the last one for variadic ports)."""
    if domain != "":
        return frozenset()  # unknown op: keep float32
    schema = onnx.defs.get_schema(op_type, opset, domain)
    params = schema.outputs if output else schema.inputs
    type_str = params[min(index, len(params) - 1)].type_str
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return frozenset(constraints.get(type_str, [type_str]))


class _Casts:
    """One Cast per (tensor, target dtype), placed right after the tensor is produced."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.made: dict[tuple[ir.Value, ir.DataType], ir.Value] = {}

    def get(self, value: ir.Value, dtype: ir.DataType) -> ir.Value:
        if (value, dtype) not in self.made:
            cast = ir.node("Cast", [value], {"to": dtype}, name=fresh_name(self.graph, f"{value.name}_Cast"))
            out = cast.outputs[0]
            out.name, out.dtype, out.shape = fresh_name(self.graph, f"{value.name}_{dtype.name.lower()}"), dtype, value.shape
            producer = value.producer()
            if producer is not None:
                self.graph.insert_after(producer, cast)
            else:
                self.graph.insert_before(next(iter(self.graph)), cast)
            self.made[value, dtype] = out
        return self.made[value, dtype]

    def output(self, value: ir.Value, dtype: ir.DataType) -> ir.Value:
        """A Cast for a graph output: the cast takes over the output's name."""
        name = value.name
        value.name = fresh_name(self.graph, f"{name}_{value.dtype.name.lower()}")
        out = self.get(value, dtype)
        out.name = name
        return out
