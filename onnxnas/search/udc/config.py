"""UDC search hyperparameters (docs/design.md §7 defaults), serialized into checkpoints and provenance."""

from __future__ import annotations

import dataclasses
from typing import Any

from onnxnas.errors import OnnxNasError


@dataclasses.dataclass(frozen=True)
class UdcConfig:
    epochs: int = 20
    warmup_epochs: int = 7
    target_size_mib: float | None = None
    target_latency_us: float | None = None
    size_margin: float = 0.02
    lam: float = 1.0
    mc_samples: int = 4
    kappa_bits: int = 2
    kappa_sparsity: int = 2
    lr: float = 0.05
    momentum: float = 0.9
    arch_lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 64
    max_batches: int | None = None
    seed: int = 0
    workers: int = 0
    use_projection: bool = True
    use_rejection: bool = True
    use_topk: bool = True

    FLAGS = {"epochs": "--epochs", "warmup_epochs": "--warmup-epochs", "target_size_mib": "--target-size",
             "target_latency_us": "--target-latency-us", "size_margin": "--size-margin", "lam": "--penalty-lambda",
             "mc_samples": "--mc-samples", "lr": "--sgd-lr", "arch_lr": "--pi-lr", "weight_decay": "--weight-decay",
             "batch_size": "--batch-size", "max_batches": "--max-batches", "seed": "--seed", "workers": "--workers",
             "use_projection": "--no-projection", "use_rejection": "--no-rejection", "use_topk": "--no-topk"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, world_size: int = 1) -> "UdcConfig":
        if self.target_size_mib is None and self.target_latency_us is None:
            raise OnnxNasError("--method udc needs a hard constraint", where="--target-size",
                               fix="pass --target-size 1.0MiB and/or --target-latency-us 2000")
        if self.epochs <= self.warmup_epochs:
            raise OnnxNasError(f"--epochs ({self.epochs}) must exceed --warmup-epochs ({self.warmup_epochs})",
                               fix="the search runs after warm-up; give it at least one epoch")
        if not 0 <= self.size_margin < 1:
            raise OnnxNasError(f"--size-margin must lie in [0, 1), got {self.size_margin}")
        if self.mc_samples % world_size:
            raise OnnxNasError(f"--mc-samples {self.mc_samples} does not split over {world_size} processes",
                               fix=f"use a multiple of {world_size}")
        return self
