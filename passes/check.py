"""The last pass of every pipeline: prove the graph is valid ONNX.

A failure here is a bug in an earlier pass, not a user error, so it raises the
checker's own exception with its traceback rather than an ``OnnxNasError``.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import CheckerPass, ShapeInferencePass

__all__ = ["CheckAndInferPass"]


class CheckAndInferPass(ir.passes.InPlacePass):
    """Run the ONNX checker with ``full_check`` (strict shape and type inference), then record shapes.

    Raises:
        onnx.checker.ValidationError, onnx.shape_inference.InferenceError: the graph is invalid.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        CheckerPass(full_check=True)(model)
        return ShapeInferencePass()(model)
