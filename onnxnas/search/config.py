"""PruNet search hyperparameters (docs/design.md §6 defaults), validated with the flag named."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.search.schedules import MIN_ARCH_STEPS
from onnxnas.search.supernet import candidate_count
from onnxnas.space.spec import SearchSpace

# Fields that may differ between the warm-up and its branches (one value per variant).
VARIANT_FIELDS = ("alpha", "lam")


@dataclasses.dataclass(frozen=True)
class PrunetConfig:
    epochs: int = 20
    warmup_epochs: int = 7
    alpha: float = 0.6
    lam: float = 0.55
    beta: float = 0.6
    phi: float = 1.1
    tau: float = 1.0
    t_init: float = 0.15
    t_final: float = 0.55
    lr: float = 0.002
    arch_lr: float = 0.01
    weight_decay: float = 1e-5
    arch_fraction: float = 0.2
    min_arch_steps: int = MIN_ARCH_STEPS
    batch_size: int = 64
    max_batches: int | None = None
    seed: int = 0
    workers: int = 0

    FLAGS = {"epochs": "--epochs", "warmup_epochs": "--warmup-epochs", "alpha": "--alpha", "lam": "--lambda",
             "beta": "--beta", "phi": "--phi", "tau": "--tau", "t_init": "--t-init", "t_final": "--t-final",
             "lr": "--lr", "arch_lr": "--arch-lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size",
             "max_batches": "--max-batches", "workers": "--workers", "seed": "--seed",
             "arch_fraction": "arch_fraction", "min_arch_steps": "--min-arch-steps"}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shared(self) -> dict[str, Any]:
        """Everything a warm-up depends on: all but the per-variant fields."""
        return {k: v for k, v in self.to_dict().items() if k not in VARIANT_FIELDS}

    def validate(self, space: SearchSpace) -> "PrunetConfig":
        def fail(field: str, message: str, fix: str | None = None) -> OnnxNasError:
            return OnnxNasError(f"{self.FLAGS[field]} {message}", fix=fix)

        for field, value in self.to_dict().items():  # flags are range-checked by argparse; this guards API callers
            if isinstance(value, float) and not math.isfinite(value):
                raise fail(field, f"must be a finite number, got {value}")
        for field in ("t_init", "t_final"):
            if not 0 < getattr(self, field) < 1:
                raise fail(field, f"must be in (0, 1), got {getattr(self, field)}")
        if self.t_final < self.t_init:
            raise fail("t_final", f"({self.t_final}) must not be below --t-init ({self.t_init})")
        widest = max(candidate_count(pos, space.granularity) for pos in space.positions())
        if self.t_init > 1 / widest:
            raise fail("t_init", f"({self.t_init}) exceeds 1/max(N_l) = 1/{widest} = {1 / widest:.4g}: the first "
                                 "pruning would remove blocks at their initial probability", fix=f"use --t-init <= {1 / widest:.4g}")
        if self.alpha < 0:
            raise fail("alpha", f"must be >= 0, got {self.alpha}")
        for field in ("beta", "phi", "tau", "lr", "arch_lr", "lam"):
            if not getattr(self, field) > 0:
                raise fail(field, f"must be > 0, got {getattr(self, field)}")
        if self.weight_decay < 0:
            raise fail("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise fail("warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        if self.epochs <= self.warmup_epochs:
            raise fail("epochs", f"({self.epochs}) must exceed --warmup-epochs ({self.warmup_epochs})",
                       fix="pruning happens after warm-up; give it at least one epoch")
        if self.batch_size < 1:
            raise fail("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.max_batches is not None and self.max_batches < 2:
            raise fail("max_batches", f"must be >= 2 (weights and architecture both need a batch), got {self.max_batches}")
        if self.min_arch_steps < 0:
            raise fail("min_arch_steps", f"must be >= 0, got {self.min_arch_steps}")
        if self.workers < 0:
            raise fail("workers", f"must be >= 0, got {self.workers}")
        return self

