"""The compressed-size bound of DESIGN.md section 7: ``bits = (s * b + H(s)) * N``.

Minimal placeholder so that the costs run before the compress branch lands; that branch's
file (same two functions, same formula, plus the per-arch report) replaces this one.
"""

from __future__ import annotations

import math


def binary_entropy(s: float) -> float:
    """H(s) in bits, with H(0) = H(1) = 0: the cost of coding where the non-zeros are."""
    if s <= 0.0 or s >= 1.0:
        return 0.0
    return -s * math.log2(s) - (1.0 - s) * math.log2(1.0 - s)


def bound_bits(num_weights: int, bits: int, nonzero_fraction: float) -> float:
    """Upper bound on the coded size of a tensor: each element costs s * b value bits plus H(s) mask bits."""
    return (nonzero_fraction * bits + binary_entropy(nonzero_fraction)) * num_weights
