"""The compressed-size bound of DESIGN.md section 7: ``bits = (s b + H(s)) N`` per layer.

A fixed interface (searches, ``arch stats`` and the manifest import it). N counts the
conv/linear weight elements of a layer at its widths, SE convs and pruned zeros included,
biases and BN not. Stem, head conv and classifier are costed at 8 bits, dense.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from onnxnas.arch import Arch
from onnxnas.blocks.builder import Head, build_block

MIB = 2**20
FIXED_BITS = 8  # stem, head conv and classifier deploy (and are costed) at 8 bits, dense


def binary_entropy(s: float) -> float:
    """H(s) in bits; H(0) = H(1) = 0."""
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"a fraction lies in [0, 1], got {s}")
    if s in (0.0, 1.0):
        return 0.0
    return -s * math.log2(s) - (1.0 - s) * math.log2(1.0 - s)


def bound_bits(num_weights: int, bits: int, nonzero_fraction: float) -> float:
    """``(s b + H(s)) N``: the mask's entropy plus b bits per kept weight (b = 32 is float, costed at 32)."""
    return (nonzero_fraction * bits + binary_entropy(nonzero_fraction)) * num_weights


def bits_to_mib(bits: float) -> float:
    """Bits to MiB (bytes = bits / 8, MiB = 2^20 bytes; the UDC paper's "MB")."""
    return bits / 8 / MIB


@dataclasses.dataclass(frozen=True)
class LayerSize:
    name: str  # "stem", "layers.3", "head", "classifier"
    num_weights: int
    bits: int
    nonzero_fraction: float
    bound_bits: float


@dataclasses.dataclass(frozen=True)
class SizeReport:
    layers: tuple[LayerSize, ...]

    @property
    def total_bits(self) -> float:
        return sum(layer.bound_bits for layer in self.layers)

    @property
    def total_mib(self) -> float:
        return bits_to_mib(self.total_bits)


def weight_count(module: nn.Module) -> int:
    """Elements of the conv/linear ``weight`` tensors of a module (biases and BN excluded)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _layer(name: str, module: nn.Module, bits: int, nonzero_fraction: float) -> LayerSize:
    n = weight_count(module)
    return LayerSize(name, n, bits, nonzero_fraction, bound_bits(n, bits, nonzero_fraction))


def arch_size(arch: Arch) -> SizeReport:
    """The bound per layer of an arch, from its real modules (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        head = Head(arch.head)
        layers = [_layer("stem", build_block(arch.stem), FIXED_BITS, 1.0)]
        layers += [_layer(f"layers.{i}", build_block(spec), spec.weight_bits, spec.nonzero_fraction)
                   for i, spec in enumerate(arch.layers) if spec.type != "skip"]
        layers += [_layer("head", head.conv, FIXED_BITS, 1.0), _layer("classifier", head.fc, FIXED_BITS, 1.0)]
    return SizeReport(tuple(layers))
