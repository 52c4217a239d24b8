"""The compressed-size bound of docs/design.md §7: ``bits = (s b + H(s)) N`` per tensor or layer.

The formula's primitives; :mod:`onnxnas.cost` applies them to whole archs (``SizeCost``,
``size_report``): N counts the conv/linear weight elements of a layer at its widths, SE
convs and pruned zeros included, biases and BN not; stem, head conv and classifier are
costed at 8 bits, dense.
"""

from __future__ import annotations

import math

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
