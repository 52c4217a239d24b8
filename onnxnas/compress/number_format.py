"""UDC's number format for sparse quantized tensors (docs/design.md §7, paper section 5).

Pruning removes every |theta| <= beta, so the kept weights start at beta: shifting them by
beta towards zero before quantizing spends the grid on the range the kept weights occupy.
"""

from __future__ import annotations

import torch

from onnxnas.compress.quantizer import FLOAT_BITS, quantize


def largest_pruned(theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """beta: the largest |theta| the mask prunes (0 when nothing is pruned); recompute at each mask refresh."""
    pruned = theta.detach().abs()[mask == 0]
    return pruned.max() if pruned.numel() else theta.new_zeros(())


def shifted_quantize(theta: torch.Tensor, bits: int, r: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Q^(theta, b, r, beta) = Q(theta - sign(theta) beta, b, r) + sign(theta) beta for b > 1; b = 1 keeps r sign(theta)."""
    if bits in (1, FLOAT_BITS):
        return quantize(theta, bits, r)
    shift = torch.sign(theta) * beta
    return quantize(theta - shift, bits, r) + shift
