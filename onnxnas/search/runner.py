"""A checkpointed search: warm-up once, then each (alpha, lambda) variant from its end.

Every epoch ends with an atomic checkpoint (rank 0), so an interrupted run loses at most
the epoch in progress and ``--resume`` continues from the last one. Warm-up does not
depend on alpha or lambda (the latency term has no gradient with respect to the weights
and the skip multipliers only act after pruning), which is why variants can share it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from onnxnas.arch import Arch
from onnxnas.data import DataSplits
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import file_sha256
from onnxnas.lock import exclusive_output
from onnxnas.lut.table import LatencyTable
from onnxnas.search.checkpoint import load_search_state, save_search_state, save_weights
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import DistContext, barrier
from onnxnas.search.latency import SpaceLatency
from onnxnas.search.metrics import write_metrics
from onnxnas.search.supernet import Supernet
from onnxnas.search.trainer import NonFiniteLoss, SearchTrainer
from onnxnas.space.choose import make_arch
from onnxnas.space.spec import SearchSpace

CHECKPOINTS = "checkpoints"
LOCK_FILE = ".onnxnas-search.lock"


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


def _check_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    for key, value in current.items():
        if saved.get(key) != value:
            flag = PrunetConfig.FLAGS.get(key, f"--{key.replace('_', '-')}")
            raise OnnxNasError(f"cannot resume: the checkpoint was made with {flag} {saved.get(key)}, not {value}",
                               where=str(path), fix=f"rerun with {flag} {saved.get(key)}, or start over in a new --out")


def _restore(trainer: SearchTrainer, state: dict[str, Any], path: Path) -> None:
    """Load a checked state; what still does not fit this supernet (pruned slots, optimizer groups,
    tensor shapes) is a damaged or foreign checkpoint, reported as one line."""
    try:
        trainer.load_state_dict(state)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise OnnxNasError(f"cannot resume: the checkpoint does not fit this search ({type(exc).__name__}: {reason})",
                           where=str(path), fix="start over in a new --out (or without --resume)") from exc


def output_lock(job: SearchJob) -> contextlib.AbstractContextManager[None]:
    """One search per --out: rank 0 holds an exclusive lock for the whole run (other ranks write nothing)."""
    if not job.ctx.is_main:
        return contextlib.nullcontext()
    return exclusive_output(job.out / LOCK_FILE, "search output")


def _train_until(job: SearchJob, trainer: SearchTrainer, until: int, checkpoint: Path, metrics: Path, label: str) -> None:
    """Run epochs up to ``until``, checkpointing each; a NaN loss stops with the last checkpoint kept."""
    bar = tqdm(total=until, initial=trainer.epoch, desc=label, disable=True if not job.ctx.is_main else None)
    while trainer.epoch < until:
        try:
            trainer.run_epoch()
        except NonFiniteLoss as exc:
            kept = f"the last good checkpoint ({checkpoint}, epoch {trainer.epoch}) is kept" if checkpoint.exists() \
                else "no epoch had finished, so there is no checkpoint"
            raise OnnxNasError(f"search stopped: {exc}; {kept}",
                               fix="lower --lr/--arch-lr or --alpha, then rerun with --resume") from exc
        if job.ctx.is_main:
            save_search_state(checkpoint, trainer.state_dict())
            write_metrics(metrics, trainer.metrics)
        barrier(job.ctx)
        bar.update(1)
        bar.set_postfix(lat_us=f"{trainer.metrics[-1]['lat_us']:.0f}")
    bar.close()


def warm_up(job: SearchJob, resume: bool, metrics: Path) -> dict[str, Any]:
    """The shared warm-up's final state (trained, loaded from its checkpoint, or fresh if 0 epochs)."""
    trainer = job.new_trainer(job.cfg)
    path = job.warmup_path()
    if resume and path.exists():
        state = load_search_state(path, max_epoch=job.cfg.warmup_epochs)
        _check_config(state["config"], job.cfg.shared(), path)
        _restore(trainer, state, path)
    _train_until(job, trainer, job.cfg.warmup_epochs, path, metrics, "warm-up")
    return trainer.state_dict()


def run_variant(job: SearchJob, variant: Variant, warm_state: dict[str, Any], resume: bool, out: Path) -> VariantResult:
    """Branch ``variant`` off the warm-up (or resume it), search to the end, write its outputs."""
    cfg = dataclasses.replace(job.cfg, alpha=variant.alpha, lam=variant.lam)
    trainer = job.new_trainer(cfg)
    last = out / CHECKPOINTS / "last.pt"
    if resume and last.exists():
        state = load_search_state(last, max_epoch=cfg.epochs)
        _check_config(state["config"], cfg.to_dict(), last)
    else:
        state = copy.deepcopy(warm_state)  # optimizers alias loaded state; branches must not share it
    _restore(trainer, state, last)
    trainer.set_variant(variant.alpha, variant.lam)
    _train_until(job, trainer, cfg.epochs, last, out / "metrics.jsonl", variant.name)
    return _finish(job, trainer, out)


def _finish(job: SearchJob, trainer: SearchTrainer, out: Path) -> VariantResult:
    cfg = trainer.cfg
    choices, hidden_index = trainer.net.choices()
    arch = make_arch(job.space, choices, num_classes=job.data.num_classes)
    predicted = job.table.arch_latency(arch)
    search_loss = next(m["arch_loss"] for m in reversed(trainer.metrics) if m["arch_loss"] is not None)
    arch = dataclasses.replace(arch, provenance={
        "method": "prunet", "hyperparameters": cfg.to_dict(),
        "lut": {"path": str(job.lut_path), "sha256": file_sha256(job.lut_path)},
        "predicted_latency_us": predicted, "search_loss": search_loss, "seed": cfg.seed,
        "checkpoint": "weights.pt", "dataset": job.data.name, "world_size": job.ctx.world_size,
    })
    path = out / "arch.json"
    if job.ctx.is_main:
        save_weights(out / "weights.pt", arch, trainer.net.deploy_state_dict(), hidden_index)
        arch.save(path)
    barrier(job.ctx)
    variant = Variant(cfg.alpha, cfg.lam)
    return VariantResult(variant, arch, path, predicted, search_loss, arch.depth)
