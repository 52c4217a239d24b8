"""Retrain a found architecture from scratch: a searched network is judged by its accuracy
after retraining, not by the supernet's shared weights."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from onnxnas.arch import Arch
from onnxnas.blocks import build_model
from onnxnas.data import DataSplits
from onnxnas.errors import OnnxNasError
from onnxnas.search.schedules import cosine


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-5
    label_smoothing: float = 0.1
    max_batches: int | None = None
    seed: int = 0

    def validate(self) -> "TrainConfig":
        checks = (("--epochs", self.epochs >= 1), ("--batch-size", self.batch_size >= 1), ("--lr", 0 < self.lr < math.inf),
                  ("--weight-decay", 0 <= self.weight_decay < math.inf), ("--label-smoothing", 0 <= self.label_smoothing < 1),
                  ("--max-batches", self.max_batches is None or self.max_batches >= 1))
        for flag, ok in checks:
            if not ok:
                raise OnnxNasError(f"{flag} is out of range ({getattr(self, flag[2:].replace('-', '_'))})")
        return self


def _check_finite(model: nn.Module, epoch: int) -> None:
    """A step with a finite loss can still leave NaN weights; never report or save those."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise OnnxNasError(f"training diverged: {name} is not finite after epoch {epoch + 1}; no weights were "
                               "written", fix="lower --lr (or --weight-decay)")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy on ``dataset``."""
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        pred = model(x.to(device)).argmax(1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(total, 1)


def train_arch(arch: Arch, data: DataSplits, cfg: TrainConfig, device: torch.device | None = None,
               progress: bool = True) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train build_model(arch) from a seeded init with SGD + cosine; returns the model and
    per-epoch metrics (train loss, val accuracy)."""
    if arch.head.num_classes != data.num_classes:
        raise OnnxNasError(f"the arch's head has {arch.head.num_classes} classes, the data {data.num_classes}",
                           fix="search (or edit the head) for this dataset's class count")
    torch.manual_seed(cfg.seed)
    return train_model(build_model(arch), data, cfg, device, progress)


def train_model(model: nn.Module, data: DataSplits, cfg: TrainConfig, device: torch.device | None = None,
                progress: bool = True) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The training loop of :func:`train_arch` for any module (e.g. one pruned by another tool), so
    benchmarks fine-tune every model with one recipe."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen)
    batches = min(len(loader), cfg.max_batches or len(loader))
    if batches < 1:
        raise OnnxNasError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training samples",
                           fix="lower --batch-size")
    history = []
    for epoch in tqdm(range(cfg.epochs), desc="train", disable=None if progress else True):
        model.train()
        start, total = time.perf_counter(), 0.0
        for b, (x, y) in zip(range(batches), loader):
            for group in opt.param_groups:
                group["lr"] = cosine(cfg.lr, epoch + b / batches, cfg.epochs)
            loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise OnnxNasError(f"training diverged: the loss is not finite at epoch {epoch + 1}, batch {b + 1}; "
                                   "no weights were written", fix="lower --lr (or --weight-decay)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        _check_finite(model, epoch)
        history.append({"epoch": epoch + 1, "train_loss": total / batches,
                        "val_accuracy": evaluate(model, data.val, device), "epoch_time_s": time.perf_counter() - start})
    return model, history
