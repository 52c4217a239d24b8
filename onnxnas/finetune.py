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


def finetune(arch: Arch, checkpoint: Checkpoint, data: DataSplits, cfg: FinetuneConfig,
             progress: bool = True) -> tuple[CompressedNetwork, list[dict[str, Any]]]:
    """Run the three stages; returns the network (final stage active) and one metrics line per epoch."""
    stages = cfg.stage_epochs()
    torch.manual_seed(cfg.seed)
    model = build_model(arch)
    model.load_state_dict(fit_state_dict(checkpoint, arch))
    net = CompressedNetwork(arch, model, cfg.number_format)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=gen)
    batches = min(len(loader), cfg.max_batches or len(loader))
    if batches < 1:
        raise OnnxNasError(f"--batch-size {cfg.batch_size} exceeds the {len(data.train)} training samples", fix="lower --batch-size")
    bounds = (0, stages[0], stages[0] + stages[1], cfg.epochs)
    history = []
    for epoch in range(cfg.epochs):
        stage = 1 + sum(epoch >= b for b in bounds[1:3])
        if stage != net.stage:
            for t in net.tensors.values():
                t.masks = RefreshedMasks()  # a new stage starts a new mask cycle
        net.stage, net.quant_noise = stage, cfg.quant_noise
        net.train()
        start, total = time.perf_counter(), 0.0
        for b, (x, y) in zip(range(batches), loader):
            within = (epoch - bounds[stage - 1] + b / batches) / (bounds[stage] - bounds[stage - 1])
            net.ramp = ((epoch - bounds[1]) * batches + b, stages[1] * batches)
            lr = cosine(cfg.lr, within, 1.0) if stage == 3 else cfg.lr
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise OnnxNasError(f"finetune diverged: the loss is not finite at epoch {epoch + 1}, batch {b + 1}; "
                                   "no weights were written", fix="lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "stage": stage, "train_loss": total / batches,
                        "val_accuracy": evaluate(net, data.val, torch.device("cpu")),
                        "epoch_time_s": time.perf_counter() - start})
    return net, history
