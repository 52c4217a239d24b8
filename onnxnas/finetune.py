"""UDC's three-stage finetune of a found arch (docs/design.md §7, paper section 5).

Starting from the search's theta, over ``epochs`` split 50/30/20%:
1. quantization on, with quant-noise (each element quantized with probability alpha), pruning off;
2. pruning ramped from dense to each layer's non-zero fraction on the cubic schedule, masks refreshed
   every 16 steps, quantization off;
3. both on, with the learning rate annealed to 0, in one of two number formats: ``grid`` (default),
   ``Q(theta, b, r) * m``, what ships; or ``shifted``, UDC's Q^ (beta = the largest pruned |theta|,
   recomputed at each mask refresh).
Each compressed weight tensor has one learned range (its layer's bits), MSE-initialized from theta.
The weights written deploy exactly: each compressed tensor as ``Q(theta, b, r) * m`` on its trained
grid, saved with its range (``quant_ranges``), so finalize's integers are the grid's. Q^'s values
``d k +- beta`` take 2^b non-zero levels, which no symmetric b-bit integer grid (2^b - 1 levels) holds:
shipping them needs b + 1 bits and breaks the size bound, so ``shifted`` exports without the shift and
its shipped accuracy is lower than its training accuracy (both are reported).
The epochs run through the search's checkpointed loop (``search/loop.py``) as a :class:`FinetuneTrainer`,
so a killed finetune resumes from its last finished epoch and ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader

from onnxnas.arch import Arch
from onnxnas.blocks import build_model
from onnxnas.compress.masks import RefreshedMasks, cubic_nonzero_fraction
from onnxnas.compress.number_format import largest_pruned, shifted_quantize
from onnxnas.compress.quant_noise import quant_noise
from onnxnas.compress.quantizer import FLOAT_BITS, LearnedRanges
from onnxnas.data import DataSplits
from onnxnas.deploy.checkpoint import Checkpoint, fit_state_dict
from onnxnas.errors import OnnxNasError
from onnxnas.schema import Fields
from onnxnas.search.checkpoint import capture_rng, check_tensors, restore_rng
from onnxnas.search.loop import NonFiniteLoss
from onnxnas.search.schedules import cosine
from onnxnas.train import evaluate

STAGE_SHARES = (0.5, 0.3, 0.2)
NUMBER_FORMATS = ("grid", "shifted")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 10
    quant_noise: float = 0.1
    lr: float = 0.01
    batch_size: int = 64
    max_batches: int | None = None
    seed: int = 0
    number_format: str = "grid"

    FLAGS = {"epochs": "--epochs", "quant_noise": "--quant-noise", "lr": "--lr", "batch_size": "--batch-size",
             "max_batches": "--max-batches", "seed": "--seed", "number_format": "--number-format",
             "arch_hash": "the arch (hash)", "weights_sha256": "--weights (sha256)", "data": "--data"}

    def stage_epochs(self) -> tuple[int, int, int]:
        """(quantize, prune, both) epoch counts: 50/30/20% of --epochs, every stage at least one epoch."""
        if self.epochs < 3:
            raise OnnxNasError(f"--epochs {self.epochs} cannot hold the finetune's three stages", where="--epochs",
                               fix="use --epochs 3 or more")
        first = max(1, round(STAGE_SHARES[0] * self.epochs))
        second = max(1, round(STAGE_SHARES[1] * self.epochs))
        first = min(first, self.epochs - 2)
        second = min(second, self.epochs - first - 1)
        return first, second, self.epochs - first - second


@dataclasses.dataclass
class _Tensor:
    """One compressed weight: its layer's bits and target non-zero fraction, its range, mask and beta."""

    bits: int
    nonzero: float
    ranges: LearnedRanges
    masks: RefreshedMasks
    mask: torch.Tensor | None = None
    beta: torch.Tensor | None = None


class CompressedNetwork(nn.Module):
    """``build_model(arch)`` whose compressed layers' weights pass through the stage's quantize/prune."""

    def __init__(self, arch: Arch, model: nn.Module, number_format: str = "grid"):
        super().__init__()
        self.shifted = number_format == "shifted"
        self.model = model
        self.tensors: dict[str, _Tensor] = {}
        self.ranges = nn.ModuleDict()
        for i, spec in enumerate(arch.layers):
            if spec.type == "skip" or not spec.is_compressed:
                continue
            for name, p in model.blocks[i].named_parameters():
                if p.dim() > 1:
                    full = f"blocks.{i}.{name}"
                    ranges = LearnedRanges((spec.weight_bits,))
                    ranges.init_from(p)
                    self.ranges[full.replace(".", "_")] = ranges
                    self.tensors[full] = _Tensor(spec.weight_bits, spec.nonzero_fraction, ranges, RefreshedMasks())
        self.stage, self.quant_noise = 1, 0.0
        self.ramp = (0, 1)  # stage 2: (step, steps) of the cubic pruning ramp

    def _weight(self, name: str, theta: torch.Tensor, t: _Tensor) -> torch.Tensor:
        prune, quantize = self.stage >= 2, self.stage != 2
        if prune and (self.training or t.mask is None):  # evaluation neither refreshes nor advances the masks
            fraction = t.nonzero if self.stage == 3 else cubic_nonzero_fraction(*self.ramp, t.nonzero)
            refreshed = t.masks.due
            t.mask = t.masks(theta, [fraction])[0]
            if refreshed or t.beta is None:
                t.beta = largest_pruned(theta, t.mask)
        if not quantize or t.bits == FLOAT_BITS:
            return theta * t.mask if prune else theta
        r = t.ranges.range(0, theta.numel())
        if prune:
            return (shifted_quantize(theta, t.bits, r, t.beta) if self.shifted else t.ranges.quantize(theta, 0)) * t.mask
        return quant_noise(theta, t.ranges.quantize(theta, 0), r, self.quant_noise, training=self.training)

    def weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {name: self._weight(name, params[name], t) for name, t in self.tensors.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.weights(), (x,), strict=False)

    @torch.no_grad()
    def deployed_state_dict(self) -> dict[str, torch.Tensor]:
        """build_model(arch)'s state with every compressed weight on its trained b-bit grid, masked."""
        params = dict(self.model.named_parameters())
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for name, t in self.tensors.items():
            theta = params[name].detach()
            mask = t.mask if t.mask is not None else torch.ones_like(theta)
            state[name] = (t.ranges.quantize(theta, 0) * mask).detach().clone()
        return state

    def quant_ranges(self) -> dict[str, float]:
        return {name: float(t.ranges.ranges[0].detach()) for name, t in self.tensors.items() if t.bits != FLOAT_BITS}


class FinetuneTrainer:
    """The three stages as an :class:`~onnxnas.search.loop.EpochTrainer`, so ``search/loop.py``
    checkpoints each epoch and ``--resume`` repeats an uninterrupted run exactly: the state holds the
    weights and ranges, the optimizer, the stage, each tensor's mask cycle and beta, and both RNGs
    (the pruning ramp and learning rate are functions of epoch and batch, recomputed every step)."""

    def __init__(self, arch: Arch, checkpoint: Checkpoint, data: DataSplits, cfg: FinetuneConfig, weights_sha256: str):
        self.cfg, self.data, self.stages = cfg, data, cfg.stage_epochs()
        # what a resume must match: the settings, and which arch, theta and data they apply to
        self.config = {**dataclasses.asdict(cfg), "arch_hash": arch.hash, "weights_sha256": weights_sha256,
                       "data": data.name}
        torch.manual_seed(cfg.seed)
        model = build_model(arch)
        model.load_state_dict(fit_state_dict(checkpoint, arch))
        self.net = CompressedNetwork(arch, model, cfg.number_format)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=0.9)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=self.gen)
        self.batches = min(len(self.loader), cfg.max_batches or len(self.loader))
        if self.batches < 1:
            raise OnnxNasError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training samples",
                               where="--batch-size", fix="lower --batch-size")
        self.bounds = (0, self.stages[0], self.stages[0] + self.stages[1], cfg.epochs)
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []

    def run_epoch(self) -> dict[str, Any]:
        """One epoch of its stage; a non-finite loss raises NonFiniteLoss (the loop keeps the last checkpoint)."""
        net, bounds, batches, epoch = self.net, self.bounds, self.batches, self.epoch
        stage = 1 + sum(epoch >= b for b in bounds[1:3])
        if stage != net.stage:
            for t in net.tensors.values():
                t.masks = RefreshedMasks()  # a new stage starts a new mask cycle
        net.stage, net.quant_noise = stage, self.cfg.quant_noise
        net.train()
        start, total = time.perf_counter(), 0.0
        for b, (x, y) in zip(range(batches), self.loader):
            within = (epoch - bounds[stage - 1] + b / batches) / (bounds[stage] - bounds[stage - 1])
            net.ramp = ((epoch - bounds[1]) * batches + b, self.stages[1] * batches)
            lr = cosine(self.cfg.lr, within, 1.0) if stage == 3 else self.cfg.lr
            for group in self.opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(epoch + 1, b + 1)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item()
        line = {"epoch": epoch + 1, "stage": stage, "train_loss": total / batches,
                "val_accuracy": evaluate(net, self.data.val, torch.device("cpu")),
                "epoch_time_s": time.perf_counter() - start}
        self.metrics.append(line)
        self.epoch += 1
        return line

    def state_dict(self) -> dict[str, Any]:
        tensors = {name: {"step": t.masks.step, "masks": list(t.masks.masks), "mask": t.mask, "beta": t.beta}
                   for name, t in self.net.tensors.items()}
        return {"epoch": self.epoch, "config": self.config, "model": self.net.state_dict(),
                "weight_opt": self.opt.state_dict(), "scaler": {}, "rng": capture_rng(), "metrics": self.metrics,
                "finetune": {"stage": self.net.stage, "loader_rng": self.gen.get_state(),
                             "tensors": tensors}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        own = state["finetune"]
        if set(own["tensors"]) != set(self.net.tensors):
            raise KeyError(f"compressed tensors {sorted(own['tensors'])} are not this arch's {sorted(self.net.tensors)}")
        self.net.load_state_dict(state["model"])
        params = dict(self.net.model.named_parameters())
        for name, t in self.net.tensors.items():
            saved = own["tensors"][name]
            for tensor in [*saved["masks"], saved["mask"]]:
                if tensor is not None and tensor.shape != params[name].shape:
                    raise ValueError(f"a mask of {name} has shape {list(tensor.shape)}, not {list(params[name].shape)}")
            t.masks.step, t.masks.masks = saved["step"], tuple(saved["masks"])
            t.mask, t.beta = saved["mask"], saved["beta"]
        self.net.stage = own["stage"]
        self.opt.load_state_dict(state["weight_opt"])
        self.gen.set_state(own["loader_rng"])
        restore_rng(state["rng"])
        self.epoch, self.metrics = int(state["epoch"]), list(state["metrics"])


def check_finetune_fields(state: Fields) -> None:
    """The finetune's own checkpoint fields (beyond the loop's common ones), checked before a resume reads them."""
    state.object("weight_opt")
    own = state.object("finetune")
    own.integer("stage", low=1, high=3)
    loader_rng = own.get("loader_rng")
    if not isinstance(loader_rng, torch.Tensor) or loader_rng.dtype != torch.uint8 or loader_rng.dim() != 1:
        raise own.fail("loader_rng", "expected the data loader's generator state (a 1-D uint8 tensor)")
    tensors = own.object("tensors")
    for name in list(tensors.data):
        entry = tensors.object(name)
        entry.integer("step", low=0)
        kept = {k: v for k, v in (("mask", entry.get("mask")), ("beta", entry.get("beta"))) if v is not None}
        check_tensors({**{f"masks[{i}]": m for i, m in enumerate(entry.list("masks", max_items=1))}, **kept},
                      state.source, f"finetune.tensors[{name!r}]")
        entry.done()
    own.done()
