"""The last pass of every pipeline: prove the graph is valid ONNX (and, for TensorRT, valid Q/DQ).

A failure here is a bug in an earlier pass, not a user error, so it raises the
checker's own exception (or ``ValueError`` for a TensorRT Q/DQ rule) with its
traceback rather than an ``OnnxNasError``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, ShapeInferencePass

from passes._graph import const_array, optional_input

__all__ = ["CheckAndInferPass", "check_tensorrt_qdq"]


class CheckAndInferPass(ir.passes.InPlacePass):
    """Run the ONNX checker with ``full_check`` (strict shape and type inference), then record shapes.

    With ``tensorrt_rules`` it also checks :func:`check_tensorrt_qdq` (the ``tensorrt`` flavor).

    Raises:
        onnx.checker.ValidationError, onnx.shape_inference.InferenceError: the graph is invalid.
        ValueError: a Q/DQ node breaks TensorRT's rules.
    """

    def __init__(self, tensorrt_rules: bool = False) -> None:
        super().__init__()
        self.tensorrt_rules = tensorrt_rules

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        CheckerPass(full_check=True)(model)
        if self.tensorrt_rules:
            check_tensorrt_qdq(model.graph)
        return ShapeInferencePass()(model)


def check_tensorrt_qdq(graph: ir.Graph) -> None:
    """Raise ValueError unless every Q/DQ is what TensorRT accepts.

    Constant float32 scales > 0, a constant INT8 zero point of 0 (a missing one means
    UINT8), and a per-channel scale only along axis 0 (the Conv weights' output channels).
    """
    for node in graph:
        if node.domain != "" or node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale, zero_point = const_array(node.inputs[1]), const_array(optional_input(node, 2))
        if scale is None or scale.dtype != np.float32 or not (scale > 0).all():
            raise ValueError(f"{node.op_type} {node.name!r}: TensorRT needs a constant float32 scale > 0")
        if zero_point is None or zero_point.dtype != np.int8 or zero_point.any():
            raise ValueError(f"{node.op_type} {node.name!r}: TensorRT needs a constant INT8 zero point of 0")
        if scale.ndim > 0 and scale.size > 1 and node.attributes.get_int("axis", 1) != 0:
            raise ValueError(f"{node.op_type} {node.name!r}: TensorRT takes per-channel scales along axis 0 only")
