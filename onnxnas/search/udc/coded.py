"""The coded size finalize will write for an arch and its weights, per layer and in total, without ONNX.

The integers are exactly finalize's: magnitude pruning to each layer's non-zero fraction
(:func:`~onnxnas.deploy.sparsity.prune_layers_`), then per-output-channel symmetric quantization
at the deployed bits (:func:`passes.quantize_weight`; BN folding scales channels and keeps the
integers; a trained range, where given, is the grid), coded with :mod:`onnxnas.compress.codec` at
the narrowest grid that holds them (a 2-bit tensor's non-zeros are +-1: one bit each, below the bound).
Used for ``provenance.predicted_size_bits`` and by the bench's bound-against-coder table.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from onnxnas.arch import Arch
from onnxnas.compress.codec import QuantTensor, encode
from onnxnas.cost import size_report
from onnxnas.deploy.checkpoint import Checkpoint
from onnxnas.deploy.compressed import grid_bits
from onnxnas.deploy.concrete import bits_for, build_concrete, layer_weight_bits
from passes import quantize_weight

ROW_PREFIX = {"stem": "stem.", "head": "head.conv.", "classifier": "head.fc."}  # size_report rows -> parameter prefixes


@dataclasses.dataclass(frozen=True)
class CodedSize:
    """compressed.bin's bytes, and per size_report row (bound bits, coded payload bits: mask + values)."""

    total_bytes: int
    rows: dict[str, tuple[float, int]]


def coded_size(arch: Arch, state_dict: dict[str, torch.Tensor], quant_ranges: dict[str, float] | None = None) -> CodedSize:
    """What ``finalize --precision int8`` codes for these weights (32-bit layers deploy at 8 bits), on the
    trained grids of ``quant_ranges`` where given (finalize's rule), else at max|w| per channel."""
    concrete = build_concrete(arch, Checkpoint(state_dict, {}, arch.hash, "search weights"))
    bits = layer_weight_bits(arch, "int8")
    tensors: dict[str, QuantTensor] = {}
    for name, module in concrete.module.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            b = bits_for(name + ".", bits)
            ints, _ = quantize_weight(module.weight.detach().numpy(), b, axis=0,
                                      absmax=(quant_ranges or {}).get(name + ".weight"))
            tensors[name] = QuantTensor(name + ".weight", ints, grid_bits(ints, name))  # as finalize codes them
    rows = {}
    for row in size_report(arch).layers:
        prefix = ROW_PREFIX.get(row.name, row.name.replace("layers.", "blocks.") + ".")
        encoded = encode([t for n, t in tensors.items() if (n + ".").startswith(prefix)])
        rows[row.name] = (row.bound_bits, 8 * (encoded.mask_bytes + encoded.value_bytes))
    return CodedSize(len(encode(list(tensors.values())).data), rows)
