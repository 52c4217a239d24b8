"""``compressed.bin`` of a finalized model: its INT8 weights coded, and the four sizes the manifest reports.

The INT8 weights are found by the one rule every Q/DQ layout keeps: an INT8 initializer
feeding input 0 of a DequantizeLinear. Each tensor's bits come from its integers' range
(the smallest b whose grid holds max|v|), so a 4-bit layer codes at 4 bits however the
graph names it (docs/design.md §7 and §8).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxnas.arch import Arch
from onnxnas.compress.codec import QuantTensor, encode, entropy_coded_bytes, int8_mask_bytes
from onnxnas.compress.quantizer import max_level
from onnxnas.cost import size_report
from onnxnas.errors import OnnxNasError


@dataclasses.dataclass(frozen=True)
class CompressedWeights:
    """The file's bytes and the manifest's sizes (bound of the arch; the rest of these tensors)."""

    data: bytes
    tensors: int
    bound_bits: float
    entropy_coded_bytes: int
    int8_mask_bytes: int

    @property
    def coded_bytes(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "bound_bits": self.bound_bits, "bound_bytes": math.ceil(self.bound_bits / 8),
                "coded_bytes": self.coded_bytes, "entropy_coded_bytes": self.entropy_coded_bytes,
                "int8_mask_bytes": self.int8_mask_bytes}


def grid_bits(values: np.ndarray, name: str) -> int:
    """The narrowest symmetric grid (1..8 bits) that holds these integers."""
    top = int(np.abs(values.astype(np.int16)).max()) if values.size else 0
    bits = next((b for b in range(1, 9) if top <= max_level(b)), None)
    if bits is None:
        raise OnnxNasError(f"INT8 weight {name!r} holds -128, off the symmetric grid", fix="re-run onnxnas finalize")
    return bits


def int8_weights(model: onnx.ModelProto) -> list[QuantTensor]:
    """Every INT8 initializer that is input 0 of a DequantizeLinear, in graph order, with its grid bits."""
    initializers = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    names = dict.fromkeys(node.input[0] for node in model.graph.node
                          if node.op_type == "DequantizeLinear" and node.input and node.input[0] in initializers)
    tensors = []
    for name in names:
        values = numpy_helper.to_array(initializers[name])
        tensors.append(QuantTensor(name, values, grid_bits(values, name)))
    return tensors


def compress_weights(model: onnx.ModelProto, arch: Arch, precision: str) -> CompressedWeights | None:
    """The coded INT8 weights of a finalized model, or None when it has none (a float model).

    The bound is the arch's at its deployed bits: ``int8`` puts 32-bit layers on 8 bits. Float
    layers of a mixed fp32 model stay in the bound at 32 bits but are not in the file.
    """
    tensors = int8_weights(model)
    if not tensors:
        return None
    if precision == "int8":
        arch = dataclasses.replace(arch, layers=tuple(dataclasses.replace(layer, weight_bits=min(layer.weight_bits, 8))
                                                      for layer in arch.layers))
    return CompressedWeights(encode(tensors).data, len(tensors), size_report(arch).total_bits,
                             entropy_coded_bytes(tensors), int8_mask_bytes(tensors))


def checkpoint_coded_size(arch: Arch, weights: Path) -> CompressedWeights | None:
    """The coded size of a checkpoint's weights at the arch's own bits (``arch stats --weights``).

    The weights go through finalize's own pipeline (weights-only Q/DQ), so the number is the
    size of the compressed.bin ``onnxnas finalize`` would write at fp32 precision.
    """
    from onnxnas.deploy.checkpoint import load_checkpoint
    from onnxnas.deploy.concrete import build_concrete, layer_weight_bits
    from onnxnas.deploy.graph import deployable_onnx

    concrete = build_concrete(arch, load_checkpoint(weights))
    proto, _ = deployable_onnx(concrete.module, arch.input_shape, "fp32", layer_weight_bits(arch, "fp32"))
    return compress_weights(proto, arch, "fp32")
