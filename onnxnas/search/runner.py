"""A checkpointed search: warm-up once, then each (alpha, lambda) variant from its end.

Every epoch ends with an atomic checkpoint (rank 0), so an interrupted run loses at most
the epoch in progress and ``--resume`` continues from the last one. Warm-up does not
depend on alpha or lambda (the latency term has no gradient with respect to the weights
and the skip multipliers only act after pruning), which is why variants can share it.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from onnxnas.arch import Arch
from onnxnas.data import DataSplits
from onnxnas.fileio import file_sha256
from onnxnas.lut.table import LatencyTable
from onnxnas.schema import Fields
from onnxnas.search.checkpoint import load_search_state, save_weights
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import DistContext, barrier
from onnxnas.search.loop import CHECKPOINTS, check_config, restore, train_until
from onnxnas.search.latency import SpaceLatency
from onnxnas.search.supernet import Supernet
from onnxnas.search.trainer import SearchTrainer
from onnxnas.space.choose import make_arch
from onnxnas.space.spec import SearchSpace



@dataclasses.dataclass(frozen=True)
class Variant:
    alpha: float
    lam: float

    @property
    def name(self) -> str:
        return f"alpha{self.alpha:g}-lambda{self.lam:g}"


@dataclasses.dataclass(frozen=True)
class VariantResult:
    variant: Variant
    arch: Arch
    arch_path: Path
    predicted_latency_us: float
    search_loss: float
    depth: int
    unsettled: tuple[int, ...] = ()  # layers whose Prunode did not settle (empty: converged)

    @property
    def converged(self) -> bool:
        return not self.unsettled


@dataclasses.dataclass
class SearchJob:
    """Everything a search needs besides its hyperparameters."""

    space: SearchSpace
    table: LatencyTable
    lut_path: Path
    data: DataSplits
    ctx: DistContext
    device: torch.device
    out: Path
    cfg: PrunetConfig

    def __post_init__(self) -> None:
        self.latency = SpaceLatency(self.table, self.space, self.data.num_classes)

    def new_trainer(self, cfg: PrunetConfig) -> SearchTrainer:
        torch.manual_seed(cfg.seed)  # same initial weights on every rank and in every variant
        supernet = Supernet(self.space, self.latency, self.data.num_classes)
        return SearchTrainer(cfg, supernet, self.data.train, self.ctx, self.device)

    def warmup_path(self) -> Path:
        return self.out / CHECKPOINTS / "warmup.pt"


def _prunet_fields(state: Fields) -> None:
    """PruNet's own checkpoint fields: the pruning structure, and both optimizers."""
    structure = state.object("structure")
    structure.list("layers")
    structure.object("masks")
    state.object("weight_opt")
    state.object("arch_opt")


def _train_until(job: SearchJob, trainer: SearchTrainer, until: int, checkpoint: Path, metrics: Path, label: str) -> None:
    train_until(trainer, until, checkpoint, metrics, label, job.ctx, postfix=lambda line: {"lat_us": f"{line['lat_us']:.0f}"},
                nan_fix="lower --lr/--arch-lr or --alpha, then rerun with --resume")


def warm_up(job: SearchJob, resume: bool, metrics: Path) -> dict[str, Any]:
    """The shared warm-up's final state (trained, loaded from its checkpoint, or fresh if 0 epochs)."""
    trainer = job.new_trainer(job.cfg)
    path = job.warmup_path()
    if resume and path.exists():
        state = load_search_state(path, job.cfg.warmup_epochs, _prunet_fields)
        check_config(state["config"], job.cfg.shared(), path, PrunetConfig.FLAGS)
        restore(trainer, state, path)
    _train_until(job, trainer, job.cfg.warmup_epochs, path, metrics, "warm-up")
    return trainer.state_dict()


def run_variant(job: SearchJob, variant: Variant, warm_state: dict[str, Any], resume: bool, out: Path) -> VariantResult:
    """Branch ``variant`` off the warm-up (or resume it), search to the end, write its outputs."""
    cfg = dataclasses.replace(job.cfg, alpha=variant.alpha, lam=variant.lam)
    trainer = job.new_trainer(cfg)
    last = out / CHECKPOINTS / "last.pt"
    if resume and last.exists():
        state = load_search_state(last, cfg.epochs, _prunet_fields)
        check_config(state["config"], cfg.to_dict(), last, PrunetConfig.FLAGS)
    else:
        state = copy.deepcopy(warm_state)  # optimizers alias loaded state; branches must not share it
    restore(trainer, state, last)
    trainer.set_variant(variant.alpha, variant.lam)
    _train_until(job, trainer, cfg.epochs, last, out / "metrics.jsonl", variant.name)
    return _finish(job, trainer, out)


def _finish(job: SearchJob, trainer: SearchTrainer, out: Path) -> VariantResult:
    cfg = trainer.cfg
    choices, hidden_index = trainer.net.choices()
    arch = make_arch(job.space, choices, num_classes=job.data.num_classes)
    predicted = job.table.arch_latency(arch)
    search_loss = next(m["arch_loss"] for m in reversed(trainer.metrics) if m["arch_loss"] is not None)
    prunodes = trainer.net.prunode_report()
    unsettled = tuple(p["layer"] for p in prunodes if not p["settled"])
    arch_steps = sum(m.get("arch_steps") or 0 for m in trainer.metrics)
    arch = dataclasses.replace(arch, provenance={
        "method": "prunet", "hyperparameters": cfg.to_dict(),
        "lut": {"path": str(job.lut_path), "sha256": file_sha256(job.lut_path)},
        "predicted_latency_us": predicted, "search_loss": search_loss, "seed": cfg.seed,
        "checkpoint": "weights.pt", "dataset": job.data.name, "world_size": job.ctx.world_size,
        "arch_steps": arch_steps, "converged": not unsettled, "prunodes": prunodes,
    })
    path = out / "arch.json"
    if job.ctx.is_main:
        save_weights(out / "weights.pt", arch, trainer.net.deploy_state_dict(), hidden_index)
        arch.save(path)
        if unsettled:
            print(f"warning: {path}: the Prunodes of layer(s) {', '.join(map(str, unsettled))} did not settle after "
                  f"{arch_steps} architecture steps (masks not adjacent, or their weight undecided), so their widths "
                  "may be near the starting point; rerun with more --epochs or --min-arch-steps", file=sys.stderr)
    barrier(job.ctx)
    variant = Variant(cfg.alpha, cfg.lam)
    return VariantResult(variant, arch, path, predicted, search_loss, arch.depth, unsettled)
