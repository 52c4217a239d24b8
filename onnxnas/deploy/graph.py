"""Concrete module -> deployable ONNX: export with BN kept, then the ``passes`` pipeline.

Export keeps BatchNormalization (``fold_constants=False``) so that the BN fold is a
graph pass and quantization scales come from the folded weights. Per-layer weight
bitwidths and trained ranges reach the QDQ pass as maps keyed by Conv/Gemm node name,
found through each node's weight initializer, whose name is the PyTorch parameter name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from torch import nn

import passes
from onnxnas.deploy.concrete import bits_for
from onnxnas.deploy.grids import WeightGrid, grid_for
from onnxnas.export import export_bytes


def deployable_onnx(module: nn.Module, input_shape: tuple[int, ...], precision: str, bits: dict[str, int],
                    calibration: Sequence[np.ndarray] | None = None,
                    grids: Mapping[str, WeightGrid] | None = None,
                    flavor: str = "tensorrt") -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Export ``module`` and run weight QDQ -> fold BN -> drop zero channels -> activation QDQ -> fp16 -> check.

    ``grids`` (parameter name -> trained range and bits, :mod:`onnxnas.deploy.grids`) put
    those weights on their trained grids instead of max|w|; BN then folds into the scales.
    ``flavor`` is the int8 Q/DQ layout's runtime (``passes.FLAVORS``: ``tensorrt`` or ``ort``).

    Works on any module with one input, a whole network or a single block: ``bits`` maps
    parameter-name prefixes to weight bits (``{"": 8}`` puts every weight of a block on 8
    bits), and ``calibration`` holds input batches (random ones are fine for timing). At
    ``int8`` the block's input and output get the same Q/DQ pairs the deployed network has
    around it, so e.g. the int8 LUT builder times exactly what ships:
    ``deployable_onnx(block, (1, C, H, W), "int8", {"": 8}, [np.random.randn(1, C, H, W).astype("f4")])``.
    """
    exported = onnx.load_from_string(export_bytes(module, input_shape, "fp32", fold_constants=False))
    node_grids = {node: grid_for(param, grids, bits_for(param, bits)) for node, param in weight_params(exported).items()}
    pipeline = passes.default_pipeline(precision, weight_bits={node: b for node, (b, _) in node_grids.items()},
                                       weight_ranges={node: r for node, (_, r) in node_grids.items() if r is not None},
                                       calibration_batches=calibration, flavor=flavor)
    return passes.run_passes(exported, pipeline), _pass_report(pipeline)


def weight_params(model: onnx.ModelProto) -> dict[str, str]:
    """Conv/Gemm node name -> the parameter name behind its weight input (the exporter names initializers so)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    result = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            name = node.input[1]
            while name in producers and producers[name].op_type == "Identity":  # shared initializers
                name = producers[name].input[0]
            result[node.name] = name
    return result


def _pass_report(pipeline: Any) -> dict[str, Any]:
    """What the passes recorded: BNs folded, channels dropped, layers quantized."""
    report: dict[str, Any] = {}
    for step in _flatten(pipeline):
        if isinstance(step, passes.FoldBatchNormPass):
            report["batchnorms_folded"] = len(step.folded)
        elif isinstance(step, passes.DropZeroChannelsPass):
            report["zero_channels_dropped"] = {k: len(v) for k, v in step.dropped.items()}
        elif isinstance(step, passes.QuantizeWeightsPass):
            report["quantized_weights"] = dict(step.quantized)
        elif isinstance(step, passes.QuantizeActivationsPass):
            report["quantized_activations"] = len(step.scales)
    return report


def _flatten(step: Any) -> list[Any]:
    return [leaf for child in step.passes for leaf in _flatten(child)] if hasattr(step, "passes") else [step]
