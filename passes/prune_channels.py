"""Drop Conv output channels that are provably zero, and the inputs that read them.

Channel masks applied before export leave channels whose (BN-folded) weight and
bias are exactly zero. Such a channel is zero everywhere downstream until an
operator maps zero to something else (Sigmoid, a bias, BatchNormalization) or
mixes channels. The pass follows every consumer of the channel; only if all of
them can be sliced consistently does it remove the channel, so the output is
numerically unchanged. Anything it does not understand (Add, Concat, a graph
output, a Sigmoid feeding a Conv) blocks the drop for that Conv. Weights may be
float or INT8 -> DequantizeLinear; a quantized one is sliced in its integers and
per-channel scales.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from passes._graph import const_array, optional_input, set_const_input, with_channels
from passes._weights import take_weight, weight_values

__all__ = ["DropZeroChannelsPass"]

# Elementwise ops with f(0) == 0: a zero channel stays zero.
_ZERO_TO_ZERO = frozenset({"Relu", "LeakyRelu", "Elu", "Tanh", "HardSwish", "Identity"})
# Elementwise ops with f(0) != 0: the channel can still be sliced, but is no longer zero.
_ZERO_TO_NONZERO = frozenset({"Sigmoid", "HardSigmoid"})
# Per-channel pooling: zeros in, zeros out, channel axis unchanged.
_POOLS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool"})


@dataclasses.dataclass
class _Plan:
    """What removing channels ``drop`` of one Conv's output touches."""

    channels: int
    drop: np.ndarray
    tensors: dict[ir.Value, bool] = dataclasses.field(default_factory=dict)  # value -> zero on ``drop``
    out_sliced: list[ir.Node] = dataclasses.field(default_factory=list)  # Convs losing output channels
    in_sliced: list[tuple[ir.Node, int, int]] = dataclasses.field(default_factory=list)  # (node, input, axis)
    queue: list[ir.Value] = dataclasses.field(default_factory=list)

    def add(self, value: ir.Value, zero: bool) -> None:
        if value not in self.tensors:
            self.tensors[value] = zero
            self.queue.append(value)


class DropZeroChannelsPass(ir.passes.InPlacePass):
    """Remove all-zero output channels of ``group=1`` Convs where every consumer allows it.

    Run it after :class:`passes.fold_bn.FoldBatchNormPass`, so that "zero" means
    zero after BN. Shapes are inferred first (Mul broadcasting and Flatten need them).

    Attributes:
        dropped: Conv name -> original output-channel indices removed by the last
            call; includes the depthwise and SE Convs sliced along with a root Conv.
        blocked: Conv name -> zero channels kept because a consumer forbids the drop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dropped: dict[str, list[int]] = {}
        self.blocked: dict[str, list[int]] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.dropped, self.blocked = {}, {}
        ShapeInferencePass()(model)
        for node in list(model.graph):
            found = _zero_channels(node)
            if found is None:
                continue
            channels, drop = found
            plan = _plan(node, channels, drop)
            if plan is None:
                self.blocked[_name(node)] = drop.tolist()
                continue
            for name, channels in _apply(plan).items():
                self.dropped[name] = _in_original_indices(self.dropped.get(name, []), channels, plan.channels)
        return ir.passes.PassResult(model, modified=bool(self.dropped))


def _in_original_indices(before: list[int], now: list[int], channels_now: int) -> list[int]:
    """Merge channels dropped now (indices into the already-sliced Conv) with earlier drops."""
    remaining = np.setdiff1d(np.arange(channels_now + len(before)), before)
    return sorted([*before, *remaining[now].tolist()])


def _name(node: ir.Node) -> str:
    return node.name or node.outputs[0].name or ""


def _zero_channels(node: ir.Node) -> tuple[int, np.ndarray] | None:
    """(output channels, those whose weight and bias are exactly zero) of a ``group=1`` Conv."""
    if node.op_type != "Conv" or node.domain != "" or node.attributes.get_int("group", 1) != 1:
        return None
    weight = weight_values(node.inputs[1])
    bias_value = optional_input(node, 2)
    bias = const_array(bias_value) if bias_value is not None else np.zeros(1)
    if weight is None or bias is None:
        return None
    zero = ~weight.reshape(weight.shape[0], -1).any(axis=1) & (bias == 0)
    drop = np.flatnonzero(zero)
    if len(drop) == weight.shape[0]:  # keep one channel: tensors cannot be empty
        drop = drop[1:]
    return (weight.shape[0], drop) if len(drop) else None


def _plan(root: ir.Node, channels: int, drop: np.ndarray) -> _Plan | None:
    plan = _Plan(channels, drop)
    plan.out_sliced.append(root)
    plan.add(root.outputs[0], True)
    visited: set[ir.Node] = set()
    while plan.queue:
        value = plan.queue.pop()
        if value.is_graph_output():
            return None
        for node in value.consumers():
            if node not in visited:
                visited.add(node)
                if not _visit(node, plan):
                    return None
    return plan


def _visit(node: ir.Node, plan: _Plan) -> bool:
    """Check that ``node`` tolerates the sliced channels; record what it needs."""
    if node.domain != "":
        return False
    if node.op_type == "Mul":
        return _visit_mul(node, plan)
    x = node.inputs[0]
    if x not in plan.tensors or any(v in plan.tensors for v in node.inputs[1:]):
        return False
    zero = plan.tensors[x]
    op = node.op_type
    if op in _ZERO_TO_ZERO or op in _ZERO_TO_NONZERO or op == "Clip":
        plan.add(node.outputs[0], zero and _maps_zero_to_zero(node))
        return True
    if op in _POOLS or op == "ReduceMean" or op == "Flatten":
        if len(node.outputs) != 1 or not _keeps_channel_axis(node):
            return False
        plan.add(node.outputs[0], zero)
        return True
    if op == "Conv":
        return _visit_conv(node, plan, zero)
    if op in ("Gemm", "MatMul"):
        return _visit_matmul(node, plan, zero)
    return False


def _maps_zero_to_zero(node: ir.Node) -> bool:
    if node.op_type in _ZERO_TO_ZERO:
        return True
    if node.op_type != "Clip":
        return False
    bounds = [optional_input(node, i) for i in (1, 2)]
    arrays = [const_array(v) if v is not None else None for v in bounds]
    if any(v is not None and a is None for v, a in zip(bounds, arrays)):
        return False
    low, high = arrays
    return (low is None or float(low) <= 0.0) and (high is None or float(high) >= 0.0)


def _keeps_channel_axis(node: ir.Node) -> bool:
    """Pools always do; ReduceMean if it reduces neither axis 0 nor 1; Flatten(axis=1) of Nx C x1x1."""
    shape = node.inputs[0].shape
    if node.op_type in _POOLS:
        return True
    if node.op_type == "Flatten":
        return (
            node.attributes.get_int("axis", 1) == 1
            and shape is not None
            and all(d == 1 for d in shape.dims[2:])
        )
    axes_value = optional_input(node, 1)
    axes = node.attributes.get_ints("axes", None) if axes_value is None else const_array(axes_value)
    if axes is None or len(axes) == 0 or shape is None:
        return False
    return all(int(a) % len(shape) > 1 for a in axes)


def _visit_conv(node: ir.Node, plan: _Plan, zero: bool) -> bool:
    weight = weight_values(node.inputs[1])
    if weight is None:
        return False
    group = node.attributes.get_int("group", 1)
    if group == 1:
        # Input channels are summed: the dropped ones must be zero to contribute nothing.
        if zero:
            plan.in_sliced.append((node, 1, 1))
        return zero
    if group != plan.channels or weight.shape[0] != plan.channels or weight.shape[1] != 1:
        return False
    bias_value = optional_input(node, 2)
    bias = const_array(bias_value) if bias_value is not None else None
    if bias_value is not None and bias is None:
        return False
    plan.out_sliced.append(node)
    plan.add(node.outputs[0], zero and (bias is None or not bias[plan.drop].any()))
    return True


def _visit_matmul(node: ir.Node, plan: _Plan, zero: bool) -> bool:
    x, weight = node.inputs[0], weight_values(node.inputs[1])
    if not zero or weight is None or weight.ndim != 2 or x.shape is None or len(x.shape) != 2:
        return False
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
        return False
    plan.in_sliced.append((node, 1, 1 if node.attributes.get_int("transB", 0) else 0))
    return True


def _visit_mul(node: ir.Node, plan: _Plan) -> bool:
    """``x * y`` is zero on channels where either factor is; both factors are sliced."""
    out_rank = max((len(v.shape) for v in node.inputs if v.shape is not None), default=0)
    zero = False
    for value in node.inputs:
        if value.shape is None:
            return False
        axis = 1 - (out_rank - len(value.shape))
        if value not in plan.tensors:
            if axis < 0 or value.shape[axis] == 1:
                continue  # broadcast over channels: nothing to slice
            if not _slice_back(value, plan):
                return False
        elif axis != 1:
            return False
        zero = zero or plan.tensors[value]
    plan.add(node.outputs[0], zero)
    return True


def _slice_back(value: ir.Value, plan: _Plan) -> bool:
    """Slice the channels of a Mul factor by walking back to a Conv (an SE gate)."""
    producer = value.producer()
    if producer is None or producer.domain != "":
        return False
    op = producer.op_type
    if op in _ZERO_TO_ZERO or op in _ZERO_TO_NONZERO or op == "Clip":
        source = producer.inputs[0]
        if source not in plan.tensors and not _slice_back(source, plan):
            return False
        plan.add(value, plan.tensors[source] and _maps_zero_to_zero(producer))
        return True
    if op != "Conv" or producer.attributes.get_int("group", 1) != 1:
        return False
    weight = weight_values(producer.inputs[1])
    bias_value = optional_input(producer, 2)
    if weight is None or weight.shape[0] != plan.channels:
        return False
    if bias_value is not None and const_array(bias_value) is None:
        return False
    plan.out_sliced.append(producer)
    plan.add(value, False)
    return True


def _apply(plan: _Plan) -> dict[str, list[int]]:
    keep = np.setdiff1d(np.arange(plan.channels), plan.drop)
    for node in plan.out_sliced:
        take_weight(node, 1, keep, 0)
        bias_value = optional_input(node, 2)
        if bias_value is not None:
            set_const_input(node, 2, const_array(bias_value)[keep], "pruned")
        if node.attributes.get_int("group", 1) != 1:
            node.attributes["group"] = ir.AttrInt64("group", len(keep))
    for node, index, axis in plan.in_sliced:
        take_weight(node, index, keep, axis)
    for value in plan.tensors:
        with_channels(value, len(keep))
    return {_name(node): plan.drop.tolist() for node in plan.out_sliced}
