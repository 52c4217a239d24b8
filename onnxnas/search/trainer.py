"""The search loop of one run: per epoch, weight steps, then architecture steps, then pruning.

80% of each epoch's batches train the weights (RMSprop, cosine learning rate), the last
20% train the architecture weights (Adam); warm-up epochs train weights only, with the
architecture weights frozen at 1/N. After each architecture step the Prunodes move their
masks; after each post-warm-up epoch blocks under the threshold are pruned. All of it is
a function of (config, epoch, batch) plus the state saved in the checkpoint, so a resumed
run repeats an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from onnxnas.errors import OnnxNasError
from onnxnas.search.checkpoint import capture_rng, restore_rng
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import DistContext, average_gradients, mean_over_ranks, sync_buffers
from onnxnas.search.loop import NonFiniteLoss
from onnxnas.search.losses import search_loss
from onnxnas.search.pruning import prune
from onnxnas.search.schedules import arch_steps_per_epoch, cosine, prune_threshold, search_progress
from onnxnas.search.supernet import Supernet


def drop_params(optimizer: torch.optim.Optimizer, modules: list[nn.Module]) -> None:
    """Forget pruned parameters (and their state), keeping the order of the rest."""
    gone = {id(p) for m in modules for p in m.parameters()}
    for group in optimizer.param_groups:
        kept = []
        for p in group["params"]:
            if id(p) in gone:
                optimizer.state.pop(p, None)
            else:
                kept.append(p)
        group["params"] = kept


def batches_per_epoch(samples: int, ctx: DistContext, batch_size: int, max_batches: int | None) -> int:
    """Batches each rank runs per epoch; fewer than 2 cannot hold a weight step and an architecture step."""
    per_rank = samples // ctx.world_size
    batches = per_rank // batch_size
    if max_batches is not None:
        batches = min(batches, max_batches)
    if batches < 2:
        raise OnnxNasError(f"--batch-size {batch_size} gives {batches} batch(es) per epoch from {per_rank} "
                           "training samples per process; a search epoch needs 2 or more",
                           fix="lower --batch-size or use more data")
    return batches


def epoch_loader(train_set: Dataset, epoch: int, seed: int, ctx: DistContext, batch_size: int, batches: int,
                 workers: int, pin_memory: bool) -> DataLoader:
    """This rank's share of a per-epoch permutation seeded by (seed, epoch), so a resumed run sees the same batches;
    an epoch longer than the data (extra architecture steps) continues with further permutations."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    passes = -(-batches * batch_size * ctx.world_size // len(train_set))
    order = torch.cat([torch.randperm(len(train_set), generator=gen) for _ in range(passes)])[ctx.rank::ctx.world_size]
    order = order[: batches * batch_size].tolist()
    return DataLoader(train_set, batch_size=batch_size, sampler=order, drop_last=True,
                      num_workers=workers, pin_memory=pin_memory)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                   scaler: torch.amp.GradScaler, ctx: DistContext) -> None:
    """Backward (AMP-scaled), average gradients over ranks, step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    average_gradients(params, ctx)
    scaler.step(optimizer)
    scaler.update()


class SearchTrainer:
    """Supernet + optimizers + epoch counter + metrics history of one search (variant)."""

    def __init__(self, cfg: PrunetConfig, supernet: Supernet, train_set: Dataset, ctx: DistContext, device: torch.device):
        self.cfg, self.ctx, self.device, self.train_set = cfg, ctx, device, train_set
        self.amp = device.type == "cuda"
        self.net = supernet.to(device, memory_format=torch.channels_last if self.amp else torch.preserve_format)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        batches = batches_per_epoch(len(train_set), ctx, cfg.batch_size, cfg.max_batches)
        self.n_batches = batches
        self.n_weight, self.n_arch = arch_steps_per_epoch(batches, cfg.arch_fraction, cfg.epochs - cfg.warmup_epochs,
                                                          cfg.min_arch_steps, cfg.max_batches)
        self.epoch = 0  # completed epochs
        self.metrics: list[dict[str, Any]] = []
        self._make_optimizers()
        self.set_variant(cfg.alpha, cfg.lam)

    def _make_optimizers(self) -> None:
        self.weight_params = self.net.weight_parameters()
        self.arch_params = self.net.arch_parameters()
        self.weight_opt = torch.optim.RMSprop(self.weight_params, lr=self.cfg.lr, alpha=0.9, eps=1e-3, momentum=0.9,
                                              weight_decay=self.cfg.weight_decay)
        self.arch_opt = torch.optim.Adam(self.arch_params, lr=self.cfg.arch_lr)

    def set_variant(self, alpha: float, lam: float) -> None:
        """Branch a warm-up into one (alpha, lambda) variant."""
        self.cfg = dataclasses.replace(self.cfg, alpha=alpha, lam=lam)
        for layer in self.net.layers:
            layer.phi, layer.lam = self.cfg.phi, lam

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    # ---- one epoch -----------------------------------------------------------------------
    def run_epoch(self) -> dict[str, Any]:
        """Train epoch ``self.epoch``, prune at its end, and return its metrics line."""
        cfg, e = self.cfg, self.epoch
        searching = e >= cfg.warmup_epochs
        n_arch = self.n_arch if searching else 0
        n_total = self.n_weight + n_arch if searching else self.n_batches
        start, cpu_start = time.perf_counter(), time.process_time()
        sums = {"ce": 0.0, "arch_loss": 0.0, "lat": 0.0}
        bar = tqdm(epoch_loader(self.train_set, e, cfg.seed, self.ctx, cfg.batch_size, n_total, cfg.workers, self.amp),
                   total=n_total, desc=f"epoch {e + 1}/{cfg.epochs}", leave=False,
                   disable=True if not self.ctx.is_main else None)
        for b, (x, y) in enumerate(bar):
            arch_step = b - (n_total - n_arch)
            loss, ce, lat = self._step(x, y, arch=arch_step >= 0, position=e + b / self.n_batches, where=(e + 1, b + 1))
            if arch_step >= 0:
                progress = search_progress(e, arch_step, n_arch, cfg.warmup_epochs, cfg.epochs)
                for prunode in self.net.prunodes():
                    prunode.update_masks(progress)
                sums["arch_loss"] += loss
                sums["lat"] += lat
            else:
                sums["ce"] += ce
        self.epoch += 1
        threshold = self._prune() if searching else None
        sync_buffers(self.net, self.ctx)
        n_weight = n_total - n_arch
        line = {
            "epoch": self.epoch, "phase": "search" if searching else "warmup",
            "train_ce": sums["ce"] / n_weight,
            "arch_loss": sums["arch_loss"] / n_arch if n_arch else None, "arch_steps": n_arch,
            "sampled_lat_us": sums["lat"] / n_arch if n_arch else None,
            "lat_us": self.net.expected_latency(), "threshold": threshold,
            "lr": self.weight_opt.param_groups[0]["lr"], "alive": self.net.alive_summary(),
            "prunode_widths": self.net.prunode_widths(), "epoch_time_s": time.perf_counter() - start,
            "epoch_cpu_s": time.process_time() - cpu_start,  # robust to other load on the machine
        }
        self.metrics.append(line)
        return line

    def _step(self, x: torch.Tensor, y: torch.Tensor, *, arch: bool, position: float,
              where: tuple[int, int]) -> tuple[float, float, float]:
        for p in self.weight_params:
            p.requires_grad_(not arch)
        for p in self.arch_params:
            p.requires_grad_(arch)
        memory = torch.channels_last if self.amp else torch.preserve_format
        x = x.to(self.device, non_blocking=True, memory_format=memory)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits, latency = self.net(x, self.cfg.tau)
        ce = F.cross_entropy(logits.float(), y)
        loss = search_loss(ce, latency, self.cfg.alpha, self.cfg.beta)
        stats = mean_over_ranks(torch.stack([loss.detach(), ce.detach(), latency.detach().float()]), self.ctx)
        if not torch.isfinite(stats).all():
            raise NonFiniteLoss(*where)
        optimizer, params = (self.arch_opt, self.arch_params) if arch else (self.weight_opt, self.weight_params)
        if not arch:
            for group in optimizer.param_groups:
                group["lr"] = cosine(self.cfg.lr, position, self.cfg.epochs)
        optimizer_step(loss, optimizer, params, self.scaler, self.ctx)
        loss_value, ce_value, lat_value = stats.tolist()
        return loss_value, ce_value, lat_value

    def _prune(self) -> float:
        cfg = self.cfg
        threshold = prune_threshold(self.epoch, cfg.warmup_epochs, cfg.epochs, cfg.t_init, cfg.t_final)
        removed = prune(self.net, threshold, final=self.epoch == cfg.epochs)
        if removed:
            drop_params(self.weight_opt, removed)
            drop_params(self.arch_opt, removed)
            self.weight_params = self.net.weight_parameters()
            self.arch_params = self.net.arch_parameters()
        return threshold

    # ---- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "config": self.cfg.to_dict(), "structure": self.net.structure(),
                "model": self.net.state_dict(), "weight_opt": self.weight_opt.state_dict(),
                "arch_opt": self.arch_opt.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": capture_rng(), "metrics": self.metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the saved pruning, then restore weights, optimizers, RNG and history."""
        self.net.load_structure(state["structure"])
        self.net.load_state_dict(state["model"])
        self._make_optimizers()
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.epoch = int(state["epoch"])
        self.metrics = list(state["metrics"])
