"""The concrete PyTorch network of an arch: exact widths, skips gone, weights loaded and pruned.

Skipped layers are ``nn.Identity`` in the built network, which the exporter drops, so
skip removal needs no graph surgery. The same module, with its weights put on the
per-layer quantization grids, is the reference that verification compares against.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from onnxnas.arch import Arch
from onnxnas.blocks import Network, build_model
from onnxnas.deploy.checkpoint import Checkpoint, fit_state_dict
from onnxnas.deploy.grids import WeightGrid, grid_for
from onnxnas.deploy.sparsity import SPARSITY_PATTERNS, prune_2to4_, prune_layers_
from onnxnas.errors import OnnxNasError, choice_error
from passes import quantize_weight

FLOAT_BITS = 32
RANDOM_INIT = "random init (NOT TRAINED)"


@dataclasses.dataclass
class ConcreteModel:
    """The network to export, and what was done to its weights (for the manifest)."""

    module: Network
    weights: str
    sparsity: dict[str, Any]


def build_concrete(arch: Arch, checkpoint: Checkpoint | None, *, sparsity: str | None = None, seed: int = 0,
                   bn_batches: Sequence[np.ndarray] | None = None) -> ConcreteModel:
    """Build, load (or seed-initialize), and prune the arch's network; eval mode.

    Without a checkpoint the weights are seeded random, and ``bn_batches`` (if given)
    set the BN statistics (see :func:`recalibrate_batchnorm_`).
    """
    if sparsity is not None and sparsity not in SPARSITY_PATTERNS:
        raise choice_error("sparsity pattern", sparsity, SPARSITY_PATTERNS, where="--sparsity")
    torch.manual_seed(seed)
    module = build_model(arch).eval()
    if checkpoint is not None:
        module.load_state_dict(fit_state_dict(checkpoint, arch))
    report: dict[str, Any] = {"layers": prune_layers_(module, arch)}
    if sparsity is not None:
        report["structured"] = prune_2to4_(module)
    if checkpoint is None and bn_batches:
        recalibrate_batchnorm_(module, bn_batches)  # after pruning: statistics of the network that ships
    weights = f"checkpoint {checkpoint.source}" if checkpoint is not None else RANDOM_INIT
    return ConcreteModel(module, weights, report)


def layer_weight_bits(arch: Arch, precision: str) -> dict[str, int]:
    """Weight bitwidth per parameter-name prefix (``stem.``, ``blocks.<i>.``, ``head.``).

    ``int8`` puts every layer on at most 8 bits; otherwise only layers whose arch entry
    asks for fewer than 32 bits are quantized. TensorRT has no wider integer conv, so
    9..31 bits is refused rather than silently widened.
    """
    cap = 8 if precision == "int8" else FLOAT_BITS
    bits = {"stem.": cap, "head.": cap}
    for i, spec in enumerate(arch.layers):
        if 8 < spec.weight_bits < FLOAT_BITS:
            raise OnnxNasError(f"layer {i}: weight_bits {spec.weight_bits} has no deployable integer format",
                               fix="use 1..8 bits, or 32 for float")
        bits[f"blocks.{i}."] = min(spec.weight_bits, cap)
    return bits


def bits_for(name: str, bits: dict[str, int]) -> int:
    """The bitwidth of parameter ``name`` under a :func:`layer_weight_bits` map."""
    return next((b for prefix, b in bits.items() if name.startswith(prefix)), FLOAT_BITS)


@torch.no_grad()
def quantized_reference(module: nn.Module, bits: dict[str, int],
                        grids: Mapping[str, WeightGrid] | None = None) -> nn.Module:
    """A copy whose conv/linear weights sit on the grids the QDQ pass uses: PyTorch's fake-quantized model.

    The graph quantizes the same weights before BN folds into the per-channel scales, so
    its integers are these; what remains between reference and artefact is fp32 rounding
    of the folded scales and runtime precision (fp16, INT8 activations). ``grids`` holds
    trained ranges and bits (:mod:`onnxnas.deploy.grids`); other weights use max|w|.
    """
    reference = copy.deepcopy(module)
    for name, m in reference.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        b, r = grid_for(f"{name}.weight", grids, bits_for(name + ".", bits))
        if np.min(b) < FLOAT_BITS:
            q, scale = quantize_weight(m.weight.numpy(), b, axis=0, absmax=r)
            shape = (-1,) + (1,) * (m.weight.dim() - 1)
            m.weight.copy_(torch.from_numpy(q).float() * torch.from_numpy(scale).view(shape))
    return reference


@torch.no_grad()
def recalibrate_batchnorm_(module: nn.Module, batches: Sequence[np.ndarray]) -> None:
    """Set BN running statistics from ``batches`` (one forward in train mode, cumulative average).

    A freshly initialized network has identity BN statistics, so its activations fade
    layer by layer and its output is little more than the classifier bias: numerically
    trivial to verify and to quantize. Real statistics make the random-init artefact
    exercise the same value ranges a trained one would.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    module(torch.from_numpy(np.concatenate(list(batches))))
    module.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
