"""Filter-level search hyperparameters (docs/design.md §12 defaults), with the flag of each field."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class FilterLevelConfig:
    mode: str = "quant"
    ops: str = "2:2,2:4,3:3,8:8"
    target_bops: float = 0.0  # the resolved --budget-bops
    estimator: str = "score"
    samples: int = 3
    final_samples: int = 8
    lam: float = 1.0
    tau: float = 1.0
    epochs: int = 20
    pretrain_epochs: int = 1
    lr: float = 0.002
    arch_lr: float = 0.1
    arch_lr_decay: float = 0.999
    arch_clip: float = 10.0
    weight_decay: float = 1e-5
    batch_size: int = 64
    max_batches: int | None = None
    seed: int = 0
    workers: int = 0

    FLAGS = {"mode": "--mode", "ops": "--ops", "target_bops": "--budget-bops", "estimator": "--estimator",
             "samples": "--samples", "final_samples": "--final-samples", "lam": "--bops-weight", "tau": "--tau",
             "epochs": "--epochs", "pretrain_epochs": "--pretrain-epochs", "lr": "--lr", "arch_lr": "--arch-lr",
             "arch_lr_decay": "arch_lr_decay", "arch_clip": "arch_clip", "weight_decay": "--weight-decay",
             "batch_size": "--batch-size", "max_batches": "--max-batches", "seed": "--seed", "workers": "--workers"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
