"""PyTorch's fake-quantized model of a searched filter-level arch, as finalize deploys it (docs/design.md §12).

The weights sit on their trained per-channel grids (:func:`onnxnas.deploy.concrete.quantized_reference`
with the checkpoint's ``quant_ranges``/``quant_bits``); each searched conv's output activations are
quantized where the search quantized them (:func:`onnxnas.search.filterlevel.slots.quant_slots`), but per
tensor at the deployed bits on a max-calibrated range, because ORT and TensorRT take one activation scale
per tensor and the QDQ pass calibrates by max |x| on the same images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnxnas.arch import Arch
from onnxnas.deploy.concrete import FLOAT_BITS, quantized_reference
from onnxnas.deploy.grids import WeightGrid
from onnxnas.deploy.inputs import sample_inputs
from onnxnas.deploy.verify import AGREEMENT_IMAGES, AgreementReport, top1_agreement
from onnxnas.search.filterlevel.report import DEPLOYED_BITS, bops_report
from onnxnas.search.filterlevel.quantnet import quantize_activation
from onnxnas.search.filterlevel.slots import quant_slots

MIN_RANGE = 1e-8  # a dead tensor (all zeros on the calibration images) keeps a usable grid


@torch.no_grad()
def fake_quantized_network(weights_on_grids: nn.Module, arch: Arch, calibration: Sequence[np.ndarray],
                           act_bits: int) -> nn.Module:
    """``weights_on_grids`` (modified in place, eval mode) with every searched conv's output quantized per tensor
    at ``act_bits`` (32: float), each range the max |x| of that output over ``calibration``."""
    weights_on_grids.eval()
    modules = dict(weights_on_grids.named_modules())
    slots = quant_slots(arch)
    peaks = [0.0] * len(slots)

    def record(i: int):  # type: ignore[no-untyped-def]
        return lambda _m, _i, out: peaks.__setitem__(i, max(peaks[i], float(out.abs().max())))

    handles = [modules[s.output].register_forward_hook(record(i)) for i, s in enumerate(slots)]
    for batch in calibration:
        weights_on_grids(torch.from_numpy(batch))
    for handle in handles:
        handle.remove()
    for slot, peak in zip(slots, peaks):
        r = torch.tensor(max(peak, MIN_RANGE))
        modules[slot.output].register_forward_hook(
            lambda _m, _i, out, r=r, signed=slot.signed: quantize_activation(out, act_bits, r, signed))
    return weights_on_grids


def verify_fake_quantized(arch: Arch, module: nn.Module, bits: dict[str, int], grids: Mapping[str, WeightGrid] | None,
                          calibration: Sequence[np.ndarray], folder: Path, precision: str,
                          data: str) -> AgreementReport | None:
    """Top-1 agreement of ``folder``'s ONNX model with the fake-quantized network on ``data``'s held-out split
    (the source the activation ranges were calibrated on); None for an arch without filter groups or trained
    grids. Raises OnnxNasError, naming agreement and threshold, when it is missed."""
    if bops_report(arch) is None or not grids:
        return None
    act_bits = DEPLOYED_BITS if precision == "int8" else FLOAT_BITS
    reference = fake_quantized_network(quantized_reference(module, bits, grids), arch, calibration, act_bits)
    images = sample_inputs(data, arch, 0, AGREEMENT_IMAGES).verification
    report = top1_agreement(reference, folder, images, data)
    report.raise_on_failure()
    return report
