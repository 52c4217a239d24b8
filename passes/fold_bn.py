"""Fold inference-mode BatchNormalization into the Conv in front of it.

Folding in the graph (rather than leaving it to TensorRT) lets the later passes
see the real per-channel weights: a channel whose folded weight and bias are
zero can be dropped. A weight already quantized (INT8 -> DequantizeLinear) keeps
its integers: BN folds into the per-channel scales, and a channel with gamma < 0
has its integers negated so that every scale stays positive (docs/design.md §7).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from passes._graph import const_array, optional_input, set_const_input
from passes._weights import rescale_weight, weight_values

__all__ = ["FoldBatchNormPass"]


class FoldBatchNormPass(ir.passes.InPlacePass):
    """Fold ``Conv -> BatchNormalization`` where the Conv output has no other consumer.

    BN parameters may arrive through ``Identity`` nodes (the legacy exporter
    shares equal initializers that way). The BN parameters left dead are removed
    by :func:`passes.eliminate.cleanup_passes`.

    Attributes:
        folded: names of the BatchNormalization nodes folded by the last call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folded: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.folded = []
        for node in list(model.graph):
            if node.op_type == "BatchNormalization" and node.domain == "" and _fold(node):
                self.folded.append(node.name or node.outputs[0].name or "")
        return ir.passes.PassResult(model, modified=bool(self.folded))


def _fold(bn: ir.Node) -> bool:
    conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain != "":
        return False
    conv_out = conv.outputs[0]
    if len(conv_out.uses()) != 1 or conv_out.is_graph_output():
        return False
    if bn.attributes.get_int("training_mode", 0) != 0:
        return False
    if any(out.uses() or out.is_graph_output() for out in bn.outputs[1:]):
        return False
    weight = weight_values(conv.inputs[1])
    params = [const_array(v) for v in bn.inputs[1:5]]
    bias_value = optional_input(conv, 2)
    bias = const_array(bias_value) if bias_value is not None else None
    if weight is None or any(p is None for p in params) or (bias_value is not None and bias is None):
        return False

    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    scale = gamma / np.sqrt(var + bn.attributes.get_float("epsilon", 1e-5))
    old_bias = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    new_bias = (old_bias - mean) * scale + beta
    rescale_weight(conv, scale)
    set_const_input(conv, 2, new_bias.astype(weight.dtype), "folded" if bias is not None else "bias_folded")

    bn_out = bn.outputs[0]
    was_output = bn_out.is_graph_output()
    ir.convenience.replace_all_uses_with(bn_out, conv_out, replace_graph_outputs=True)
    # The exporter types graph outputs only: the Conv output taking the BN's place needs its dtype
    # as well as its shape, or onnx_ir skips serializing the shape ("value type ... is not known").
    conv_out.type = conv_out.type or bn_out.type
    conv_out.shape = conv_out.shape or bn_out.shape
    bn.graph.remove(bn, safe=True)
    if was_output:
        conv_out.name = bn_out.name
    return True
