"""Sample inputs for INT8 calibration, BN statistics of random-init weights, and verification.

Calibration reads the training split and verification the held-out split, so the
equivalence checks never run on the very images the activation ranges were fitted to.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from torch.utils.data import Dataset

from onnxnas.arch import Arch
from onnxnas.data import load_data, synthetic


@dataclasses.dataclass(frozen=True)
class SampleInputs:
    """Single-image batches at the arch's input shape, float32."""

    source: str
    calibration: list[np.ndarray]
    verification: list[np.ndarray]

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def sample_inputs(source: str, arch: Arch, calibration: int = 16, verification: int = 4) -> SampleInputs:
    """``calibration`` training images and ``verification`` validation images from ``source``'s fixed split
    (the split search and train use; the test split stays untouched).

    ``synthetic`` is generated at just the size needed (the data module's default of
    512 images is 0.5 GB at GPUNet's 288x288).
    """
    if source == "synthetic":
        splits = synthetic(arch.resolution, arch.in_chs, samples=5 * max(calibration, verification))
    else:
        splits = load_data(source, arch.resolution, arch.in_chs)
    return SampleInputs(source, _take(splits.train, calibration), _take(splits.val, verification))


def _take(dataset: Dataset, count: int) -> list[np.ndarray]:
    return [dataset[i][0].unsqueeze(0).numpy().astype(np.float32) for i in range(min(count, len(dataset)))]
