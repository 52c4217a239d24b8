"""Explicit INT8 quantization as QuantizeLinear/DequantizeLinear nodes (opset 13+ semantics).

TensorRT takes precision from QDQ nodes, and accepts them only when they are
symmetric, have zero point 0 and strictly positive constant scales, with weights
per output channel. Weights are stored as INT8 initializer -> DequantizeLinear ->
op. TensorRT has no 1-bit or INT4 Conv, so narrower bitwidths are written as INT8
on a coarser grid; the true size is for the caller to report.

Activations come in two flavors (``FLAVORS``): ``tensorrt``, INT8 zero point 0 on every
tensor, and ``ort`` for ONNX Runtime CPU, the same except UINT8 zero point 0 (scale
max/255) on a ReLU's output where ORT then absorbs the ReLU into the Conv before it
(see :func:`unsigned_relu`). The ort flavor's graphs are not for TensorRT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx_ir.passes.common import ShapeInferencePass

from passes._graph import add_initializer, const_array, fresh_name, one_output_node
from passes._weights import MIN_SCALE, QuantizedWeight, dequantize_node

__all__ = [
    "FLAVORS",
    "INTEGER_OPS",
    "QuantizeActivationsPass",
    "QuantizeWeightsPass",
    "activation_tensors",
    "calibrate_activation_ranges",
    "quantize_weight",
    "unsigned_relu",
]

# How activations are quantized: ``tensorrt`` INT8 zero point 0 everywhere (the only Q/DQ TensorRT
# accepts); ``ort`` additionally UINT8 zero point 0 after a ReLU, which ONNX Runtime CPU absorbs.
FLAVORS = ("tensorrt", "ort")

FLOAT_BITS = 32
_QUANTIZED_OPS = ("Conv", "Gemm")
Bits = int | np.ndarray  # one bitwidth, or one per output channel (filter groups)
Range = float | np.ndarray  # one clip range r, or one per output channel


def quantize_weight(weight: np.ndarray, bits: Bits, axis: int = 0, absmax: Range | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel quantization along ``axis``: (INT8 values, float32 scales).

    ``bits`` and ``absmax`` (the clip range r) are one per tensor or one per channel. A
    trained range *is* the grid (UDC's and the filter-level method's quantizers), so
    weights beyond it saturate; without one a plain checkpoint gets max|w| per channel.
    ``bits`` in 2..8 uses the grid [-(2^(b-1)-1), 2^(b-1)-1] with scale r/(2^(b-1)-1);
    ``bits == 1`` keeps the sign with scale r (default mean|w|). The arithmetic is
    float32, as in ``onnxnas.compress.quantizer``, so a trained quantizer's integers are
    reproduced exactly. Exact zeros stay zero, so a masked channel dequantizes to zero.
    """
    rows = np.moveaxis(weight.astype(np.float32), axis, 0).reshape(weight.shape[axis], -1)
    channel_bits = np.broadcast_to(np.asarray(bits, np.int64), (rows.shape[0],))
    if not ((1 <= channel_bits) & (channel_bits <= 8)).all():
        raise ValueError(f"integer weights have 1..8 bits, got {sorted(set(channel_bits.tolist()))}")
    sign_only = (channel_bits == 1)[:, None]
    qmax = np.where(channel_bits == 1, 1, 2 ** (channel_bits - 1) - 1).astype(np.float32)
    if absmax is None:
        r = np.where(sign_only[:, 0], np.abs(rows).mean(axis=1), np.abs(rows).max(axis=1)).astype(np.float32)
    else:
        r = np.broadcast_to(np.asarray(absmax, np.float32), qmax.shape)
    scale = r / qmax
    safe = np.where(scale > 0, scale, np.float32(1.0))[:, None]
    grid = np.clip(np.rint(np.clip(rows, -r[:, None], r[:, None]) / safe), -qmax[:, None], qmax[:, None])
    q = np.where(sign_only, np.sign(rows), grid)
    moved = np.moveaxis(weight, axis, 0).shape
    q = np.moveaxis(q.reshape(moved), 0, axis).astype(np.int8)
    return q, np.where(scale > 0, scale, np.float32(MIN_SCALE)).astype(np.float32)


class QuantizeWeightsPass(ir.passes.InPlacePass):
    """Replace Conv and Gemm weights by INT8 initializer -> DequantizeLinear(axis=output channel).

    Run it before :class:`passes.fold_bn.FoldBatchNormPass`: BN then folds into the
    per-channel scales and the integers stay those of the trained grid.

    Args:
        bits: one bitwidth for every layer, or a map from Conv/Gemm node name (or
            weight initializer name) to its bitwidth (an int, or one per output
            channel). Layers missing from the map, or with bits >= 32, stay float; a
            key matching no layer is an error.
        ranges: trained clip ranges keyed the same way (one per tensor or one per
            output channel); a layer without one gets max|w| per channel.

    Attributes:
        quantized: node name -> bitwidth applied by the last call (the widest, for per-channel bits).
    """

    def __init__(self, bits: Mapping[str, Bits] | int = 8, ranges: Mapping[str, Range] | None = None) -> None:
        super().__init__()
        for b in [bits] if isinstance(bits, int) else bits.values():
            if not all(1 <= v <= 8 or v >= FLOAT_BITS for v in np.atleast_1d(b).tolist()):
                raise ValueError(f"weight bits must be 1..8 or >= {FLOAT_BITS} (float), got {b}")
        self.bits = bits
        self.ranges = dict(ranges or {})
        self.quantized: dict[str, int] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.quantized = {}
        targets = []
        matched: set[str] = set()
        for node in model.graph:
            if node.op_type not in _QUANTIZED_OPS or node.domain != "" or const_array(node.inputs[1]) is None:
                continue
            bits = self._lookup(node, self.bits, matched, FLOAT_BITS)
            if np.max(bits) < FLOAT_BITS:
                targets.append((node, bits, self._lookup(node, self.ranges, matched, None)))
        if not isinstance(self.bits, int) and set(self.bits) - matched:
            raise ValueError(f"weight bits given for unknown layers: {sorted(set(self.bits) - matched)}")
        if set(self.ranges) - matched:
            raise ValueError(f"weight ranges given for unknown or float layers: {sorted(set(self.ranges) - matched)}")

        dequantized: dict[tuple, ir.Value] = {}  # a shared weight on one grid is quantized once
        for node, bits, absmax in targets:
            key = (node.inputs[1], *(None if a is None else tuple(np.atleast_1d(a).tolist()) for a in (bits, absmax)))
            if key not in dequantized:
                dequantized[key] = _insert_weight_dq(node, bits, absmax)
            node.replace_input_with(1, dequantized[key])
            self.quantized[node.name or ""] = int(np.max(bits))
        return ir.passes.PassResult(model, modified=bool(targets))

    @staticmethod
    def _lookup(node: ir.Node, table: Mapping[str, object] | int, matched: set[str], default: object) -> object:
        if isinstance(table, int):
            return table
        for key in (node.name, node.inputs[1].name):
            if key in table:
                matched.add(key)
                return table[key]
        return default


def _insert_weight_dq(node: ir.Node, bits: Bits, absmax: Range | None) -> ir.Value:
    """Insert INT8 -> DequantizeLinear (-> Cast back to the weight's dtype) before ``node``."""
    weight = const_array(node.inputs[1])
    transposed = node.op_type == "Gemm" and not node.attributes.get_int("transB", 0)
    axis = 1 if transposed else 0  # the output-channel axis
    q, scale = quantize_weight(weight, bits, axis, absmax)
    dtype = ir.DataType.from_numpy(weight.dtype)
    nodes = dequantize_node(node.graph, node.inputs[1].name, QuantizedWeight(q, scale, axis, dtype))
    node.prepend(nodes)
    return nodes[-1].outputs[0]


class QuantizeActivationsPass(ir.passes.InPlacePass):
    """Give every activation an integer kernel touches a per-tensor zero-point-0 Q -> DQ pair.

    ORT (and TensorRT) run an op as an integer kernel only when each float data input
    comes from DequantizeLinear and its output goes straight into QuantizeLinear. So
    the pair goes on each tensor produced or consumed by one of ``INTEGER_OPS``: the
    Conv output is quantized *before* its activation (a Relu is not absorbed under a
    zero point of 0), the activation output again, residual Add inputs and output, the
    SE gate's Sigmoid and Mul, the pool. Swish (``x * Sigmoid(x)``) stays float between
    a DQ and a Q: ORT runs it as one QuickGelu, cheaper than two integer ops. A tensor
    through a data-movement op (Reshape, ...) keeps its input's scale so ORT runs the
    op on INT8. Logits from Gemm stay float (QGemm outputs float directly), and so does
    the classifier's bias Add (see :class:`passes.integer_ops.IntegerOpsPass`).

    Give either ``ranges`` (tensor name -> absmax, or (min, max)) or ``batches`` of
    sample inputs; with batches the ranges are calibrated with ONNX Runtime on the
    model as this pass receives it, so tensor names match after earlier passes. ``flavor``
    ``ort`` quantizes the output of each :func:`unsigned_relu` (and of a pool or Reshape of
    it) to UINT8 instead, with no pair between the Conv and that Relu.

    Attributes:
        scales: tensor name -> scale used by the last call.
    """

    def __init__(
        self,
        ranges: Mapping[str, float | tuple[float, float]] | None = None,
        *,
        batches: Sequence[np.ndarray] | None = None,
        flavor: str = "tensorrt",
    ) -> None:
        super().__init__()
        if (ranges is None) == (batches is None):
            raise ValueError("give exactly one of ranges or batches")
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.flavor = flavor
        self.ranges = ranges
        self.batches = batches
        self.scales: dict[str, float] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        ShapeInferencePass()(model)  # only float32 tensors are quantized: dtypes must be known
        graph = model.graph
        targets = activation_tensors(graph, self.flavor)
        if self.batches is not None:
            ranges = calibrate_activation_ranges(ir.to_proto(model), self.batches, [v.name for v in targets])
        else:
            ranges = {k: max(abs(r[0]), abs(r[1])) if isinstance(r, tuple) else r for k, r in self.ranges.items()}
        self.scales = {}
        unsigned = {v.name for v in targets if _unsigned_output(v, self.flavor)}
        for value in targets:
            source = _same_scale_source(value)
            if source is not None and source.name in self.scales:
                self.scales[value.name] = self.scales[source.name]
            elif value.name in ranges:
                qmax = 255.0 if value.name in unsigned else 127.0
                self.scales[value.name] = max(float(ranges[value.name]) / qmax, MIN_SCALE)
            else:
                raise ValueError(f"no calibration range for {value.name!r}")
        for value in targets:
            zero_point = np.uint8(0) if value.name in unsigned else np.int8(0)
            _insert_activation_qdq(graph, value, self.scales[value.name], zero_point)
        return ir.passes.PassResult(model, modified=bool(targets))


# ORT CPU fuses DQ -> op -> Q into QLinearConv, QGemm, QLinearAdd, QLinearMul, QLinearSigmoid, ...
INTEGER_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "Mul", "Sigmoid", "LeakyRelu",
                         "GlobalAveragePool", "AveragePool", "Concat"})
# Data-movement ops ORT runs on the INT8 tensor when input and output share one scale.
_SAME_SCALE_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose", "MaxPool"})
# Integer forms with a float output (QGemm, MatMulIntegerToFloat): a graph output they produce stays float.
_FLOAT_OUTPUT_OPS = frozenset({"Gemm", "MatMul"})


def activation_tensors(graph: ir.Graph, flavor: str = "tensorrt") -> list[ir.Value]:
    """The float32 activations (not constants) that ``QuantizeActivationsPass`` quantizes, in graph order."""
    candidates = [*graph.inputs, *(out for node in graph for out in node.outputs)]
    return [v for v in candidates if v.dtype == ir.DataType.FLOAT and _wants_qdq(v, flavor)]


def unsigned_relu(node: ir.Node) -> bool:
    """A Relu the ``ort`` flavor quantizes to UINT8 zero point 0, so ORT fuses Conv + Relu + Q into one QLinearConv.

    ORT drops a Relu before a Q whose zero point is the type's minimum (never so for INT8
    zero point 0), and only while the Relu is a Conv's only reader and feeds one Q. Its
    UINT8 output may reach only readers that take UINT8 whatever their other inputs are
    (see :func:`_takes_unsigned`): QLinearAdd and QLinearMul want both inputs of one type.
    """
    if node.domain != "" or node.op_type != "Relu":
        return False
    producer, out = node.inputs[0].producer(), node.outputs[0]
    return (producer is not None and producer.op_type == "Conv" and producer.domain == ""
            and len(node.inputs[0].uses()) == 1 and not node.inputs[0].is_graph_output()
            and len(out.uses()) == 1 and _takes_unsigned(out))


# Ops whose output is non-negative when their data input is, and that run on UINT8 then.
_SIGN_KEEPING_OPS = _SAME_SCALE_OPS | {"GlobalAveragePool", "AveragePool"}


def _takes_unsigned(value: ir.Value) -> bool:
    """Whether every reader of the non-negative ``value`` runs on UINT8: a Conv/Gemm's data input, or a pool/Reshape that passes it on."""
    if value.is_graph_output():
        return False
    for node, index in value.uses():
        if node.domain != "" or index != 0:
            return False
        if node.op_type not in ("Conv", "Gemm", "MatMul") and not (
                node.op_type in _SIGN_KEEPING_OPS and _takes_unsigned(node.outputs[0])):
            return False
    return True


def _unsigned_output(value: ir.Value, flavor: str) -> bool:
    """In the ``ort`` flavor: the output of an absorbed Relu, or of a pool/Reshape of one."""
    producer = value.producer()
    if flavor != "ort" or producer is None or producer.domain != "":
        return False
    return unsigned_relu(producer) or (producer.op_type in _SIGN_KEEPING_OPS and _unsigned_output(producer.inputs[0], flavor))


def _wants_qdq(value: ir.Value, flavor: str = "tensorrt") -> bool:
    producer = value.producer()
    if flavor == "ort" and any(unsigned_relu(node) for node, _ in value.uses()):
        return False  # the Conv output before an absorbed Relu: the Q after the Relu is its output
    if value.const_value is not None or (producer is not None and producer.op_type in ("DequantizeLinear", "Constant")):
        return False
    if any(_reads_integer(node, index) for node, index in value.uses()):
        return True
    if producer is None or producer.domain != "" or producer.op_type in _FLOAT_OUTPUT_OPS:
        return False  # a float-output integer kernel has no consumer that reads INT8 (checked above)
    return _integer_op(producer) or (producer.op_type in _SAME_SCALE_OPS and _wants_qdq(producer.inputs[0], flavor))


def _reads_integer(node: ir.Node, index: int) -> bool:
    """Whether input ``index`` of ``node`` is a data input its integer kernel takes as INT8."""
    if node.domain != "":
        return False
    if node.op_type in ("Conv", "Gemm", "MatMul"):
        return index == 0  # weights are quantized by QuantizeWeightsPass
    return _integer_op(node) or (node.op_type in _SAME_SCALE_OPS and index == 0)


def _integer_op(node: ir.Node) -> bool:
    """One of ``INTEGER_OPS`` that is to run as an integer kernel.

    Not swish (it stays float, see :func:`_is_float_swish`), and not an Add or Mul with a
    constant operand (the classifier's bias): ORT has no QLinear form for a float constant.
    """
    if node.domain != "" or node.op_type not in INTEGER_OPS or _is_float_swish(node):
        return False
    return node.op_type not in ("Add", "Mul") or all(const_array(v) is None for v in node.inputs)


def _is_float_swish(node: ir.Node) -> bool:
    """The Sigmoid or Mul of swish ``x * Sigmoid(x)``, which stays float.

    ORT fuses the float pair into one QuickGelu node; as QLinearSigmoid + QLinearMul it
    costs two integer nodes plus a private Q for each (tiny: 52 nodes -> 48, and faster).
    """
    if node.domain != "":
        return False
    if node.op_type == "Sigmoid":
        return any(_is_float_swish(user) for user in node.outputs[0].consumers())
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return False
    for x, gate in (node.inputs, node.inputs[::-1]):
        producer = gate.producer()
        if producer is not None and producer.op_type == "Sigmoid" and producer.domain == "" and producer.inputs[0] is x:
            return True
    return False


def _same_scale_source(value: ir.Value) -> ir.Value | None:
    producer = value.producer()
    if producer is None or producer.domain != "" or producer.op_type not in _SAME_SCALE_OPS:
        return None
    return producer.inputs[0]


def _insert_activation_qdq(graph: ir.Graph, value: ir.Value, scale: float, zero_point: np.generic) -> None:
    """value -> Q -> DQ for one reader; a fan-out gives each integer reader a pair of its own.

    ORT turns INT8 Q/DQ into the UINT8 its x86 kernels take only where a Q feeds exactly
    one DQ, and it splits a DQ with two readers; and an integer kernel fuses only if its
    output feeds one Q. So a tensor read twice (a residual Add and the next Conv, the SE
    pool and Mul) gives each integer reader a private Q -> DQ from one float fan-out
    node. Where the tensor comes from a float op (a Relu left float, see
    :class:`passes.integer_ops.IntegerOpsPass`) or is the graph input, that op is the
    fan-out node. After an integer kernel it is ``Max(x, lowest float32)`` behind the
    kernel's own pair, the identity on every finite value: unlike the Reshape used
    before, an elementwise op that ORT's layout optimizer moves its channels-last
    Transposes through (tiny: 14 Transposes -> 2). ORT deletes ``Mul(x, 1)`` or
    ``Add(x, 0)`` as no-ops, and ``Max(x, x)`` reads its DQ twice.
    """
    name = value.name
    uses = list(value.uses())
    was_output = value.is_graph_output()
    fans_out = len(uses) + was_output > 1
    private = [fans_out and _reads_integer(node, index) for node, index in uses]  # before any rewiring
    if fans_out and not _needs_own_pair(value):
        readers = value
    else:
        readers = _qdq_pair(graph, value, scale, zero_point, name)
        if fans_out:
            lowest = add_initializer(graph, f"{name}_fanout_lowest", np.array(np.finfo(np.float32).min, np.float32))
            fanout = one_output_node(graph, "Max", [readers, lowest], {}, f"{name}_fanout", ir.DataType.FLOAT)
            fanout.outputs[0].shape = value.shape
            graph.insert_after(readers.producer(), fanout)
            readers = fanout.outputs[0]
    for (node, index), own_pair in zip(uses, private):
        node.replace_input_with(index, _qdq_pair(graph, readers, scale, zero_point, name) if own_pair else readers)
    if was_output and readers is not value:  # the graph output keeps its name, now on the dequantized tensor
        graph.outputs[graph.outputs.index(value)] = readers
        value.name = fresh_name(graph, f"{name}_float")
        readers.name = name


def _needs_own_pair(value: ir.Value) -> bool:
    """Whether ``value``'s producer runs on INT8 only if its output feeds one Q (integer and data-movement ops)."""
    producer = value.producer()
    return producer is not None and (_integer_op(producer) or producer.op_type in _SAME_SCALE_OPS)


def _qdq_pair(graph: ir.Graph, value: ir.Value, scale: float, zero_point: np.generic, name: str) -> ir.Value:
    """Insert Q -> DQ of ``value`` (scale and zero point its own initializers) after its producer."""
    inputs = [
        add_initializer(graph, f"{name}_scale", np.array(scale, np.float32)),
        add_initializer(graph, f"{name}_zero_point", np.array(zero_point)),
    ]
    quantized = ir.DataType.from_numpy(np.asarray(zero_point).dtype)
    quant = one_output_node(graph, "QuantizeLinear", [value, *inputs], {}, f"{name}_quantized", quantized)
    dequant = one_output_node(graph, "DequantizeLinear", [quant.outputs[0], *inputs], {}, f"{name}_dequantized", ir.DataType.FLOAT)
    quant.outputs[0].shape = dequant.outputs[0].shape = value.shape
    producer = value.producer()
    if producer is not None:
        graph.insert_after(producer, [quant, dequant])
    else:
        graph.insert_before(next(iter(graph)), [quant, dequant])
    return dequant.outputs[0]


def calibrate_activation_ranges(
    model: onnx.ModelProto | bytes,
    batches: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Max |value| of each tensor in ``names`` (default: :func:`activation_tensors`) over ``batches``.

    Works on a copy whose graph outputs include the wanted tensors, run by ONNX
    Runtime on CPU; the model must have exactly one input.
    """
    if not batches:
        raise ValueError("calibration needs at least one batch")
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.ModelProto.FromString(model.SerializeToString())
    if names is None:
        names = [v.name for v in activation_tensors(ir.from_proto(onnx.shape_inference.infer_shapes(proto)).graph)]
    inferred = onnx.shape_inference.infer_shapes(proto)
    infos = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    outputs = {o.name for o in proto.graph.output}
    untyped = onnx.helper.make_tensor_value_info  # ORT accepts an output without a shape
    proto.graph.output.extend(
        infos.get(n) or untyped(n, onnx.TensorProto.FLOAT, None) for n in names if n not in outputs
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    absmax = dict.fromkeys(names, 0.0)
    for batch in batches:
        for name, out in zip(names, session.run(list(names), {model_input.name: batch})):
            absmax[name] = max(absmax[name], float(np.abs(out).max()))
    return absmax
