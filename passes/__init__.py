"""ONNX graph passes that turn an exported network into a deployable one.

Each pass is an ``onnx_ir.passes`` pass in its own module; :func:`default_pipeline`
chains them the way ``finalize`` uses them and :func:`run_passes` applies a
pipeline to an ``onnx.ModelProto``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from onnxnas.errors import OnnxNasError, choice_error
from passes.check import CheckAndInferPass, check_tensorrt_qdq
from passes.eliminate import cleanup_passes
from passes.fold_bn import FoldBatchNormPass
from passes.fp16 import ConvertFloat16Pass
from passes.integer_ops import IntegerOpsPass
from passes.prune_channels import DropZeroChannelsPass
from passes.qdq import (
    FLAVORS,
    FLOAT_BITS,
    Bits,
    Range,
    QuantizeActivationsPass,
    QuantizeWeightsPass,
    calibrate_activation_ranges,
    quantize_weight,
)

__all__ = [
    "CheckAndInferPass",
    "ConvertFloat16Pass",
    "DropZeroChannelsPass",
    "FLAVORS",
    "FoldBatchNormPass",
    "IntegerOpsPass",
    "PRECISIONS",
    "QuantizeActivationsPass",
    "QuantizeWeightsPass",
    "calibrate_activation_ranges",
    "check_tensorrt_qdq",
    "cleanup_passes",
    "default_pipeline",
    "quantize_weight",
    "run_passes",
]

PRECISIONS = ("fp32", "fp16", "int8")


def default_pipeline(
    precision: str = "fp32",
    *,
    weight_bits: Mapping[str, Bits] | int | None = None,
    weight_ranges: Mapping[str, Range] | None = None,
    calibration_batches: Sequence[np.ndarray] | None = None,
    flavor: str = "tensorrt",
) -> ir.passes.PassManager:
    """Weight QDQ -> fold BN -> cleanup -> drop zero channels -> cleanup -> activation QDQ -> fp16 -> cleanup -> check.

    ``int8`` quantizes activations (calibrated on ``calibration_batches``) and
    weights (8 bits unless ``weight_bits`` says otherwise); other precisions add
    weight QDQ only where ``weight_bits`` is below 32. Weights are quantized before
    BN folds into their scales, on ``weight_ranges`` (trained clip ranges, keyed like
    ``weight_bits``) where given, so a trained grid's integers ship unchanged. Read what
    the passes recorded (e.g. ``DropZeroChannelsPass.dropped``) from ``pipeline.passes``.
    ``flavor`` (int8 only) is the runtime the Q/DQ layout is for: ``tensorrt`` (INT8 zero
    point 0 everywhere) or ``ort`` (also UINT8 after a ReLU between Convs, see
    :func:`passes.qdq.unsigned_relu`).
    """
    if flavor not in FLAVORS:
        raise choice_error("flavor", flavor, FLAVORS)
    if precision not in PRECISIONS:
        raise choice_error("precision", precision, PRECISIONS)
    if precision == "int8":
        if not calibration_batches:
            raise OnnxNasError(
                "int8 needs calibration data for the activation scales",
                fix="pass a few batches of real inputs, or use --precision fp16",
            )
        weight_bits = 8 if weight_bits is None else weight_bits
    steps: list[ir.passes.PassBase] = []
    if weight_bits is not None and _quantizes(weight_bits):
        steps.append(QuantizeWeightsPass(weight_bits, weight_ranges))
    steps += [FoldBatchNormPass(), cleanup_passes(), DropZeroChannelsPass(), cleanup_passes()]
    if precision == "int8":
        steps += [IntegerOpsPass(flavor), QuantizeActivationsPass(batches=calibration_batches, flavor=flavor)]
    if precision == "fp16":
        steps.append(ConvertFloat16Pass())
    steps += [cleanup_passes(), CheckAndInferPass(tensorrt_rules=flavor == "tensorrt")]
    return ir.passes.PassManager(steps)


def _quantizes(bits: Mapping[str, Bits] | int) -> bool:
    return any(np.min(b) < FLOAT_BITS for b in ([bits] if isinstance(bits, int) else bits.values()))


def run_passes(model: onnx.ModelProto, pipeline: ir.passes.PassBase) -> onnx.ModelProto:
    """Apply ``pipeline`` to ``model`` through onnx_ir; ``model`` itself is not changed."""
    return ir.to_proto(pipeline(ir.from_proto(model)).model)
