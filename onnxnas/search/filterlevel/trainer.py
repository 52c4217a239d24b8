"""One filter-level search, epoch by epoch (Alg. C.1), for :func:`onnxnas.search.loop.train_until`.

The training split is halved by the seed: the first half trains the weights, the second alpha.
The first ``pretrain_epochs`` train the float network; the ranges are then set from the trained
weights and one batch of activations. Each search batch then takes one weight step on **one
sampled configuration** (no resets) and one alpha step (score or Gumbel estimator; SGD, lr 0.1
x 0.999 per step, gradient norm clipped at 10). Pruning mode instead trains the weights on the
homogeneous (full) and the expected configuration of each batch (Alg. C.2's schedule, without
its resets). Everything depends only on (config, epoch, batch) and the checkpointed state.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from onnxnas.search.checkpoint import capture_rng, restore_rng
from onnxnas.search.distributed import DistContext, average_gradients, mean_over_ranks
from onnxnas.search.filterlevel.config import FilterLevelConfig
from onnxnas.search.filterlevel.estimators import gumbel_estimate, sample_configuration, score_estimate
from onnxnas.search.filterlevel.problem import Problem
from onnxnas.search.filterlevel.quantnet import FilterLevelNet
from onnxnas.search.filterlevel.slots import Configuration
from onnxnas.search.loop import NonFiniteLoss
from onnxnas.search.schedules import cosine
from onnxnas.search.trainer import batches_per_epoch, epoch_loader


def halves(train: Dataset, seed: int) -> tuple[Subset, Subset]:
    """Alg. C.1's split of the training set: weights, alpha."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    half = len(order) // 2
    return Subset(train, order[:half]), Subset(train, order[half:])


class FilterLevelTrainer:
    def __init__(self, cfg: FilterLevelConfig, problem: Problem, train: Dataset, ctx: DistContext, device: torch.device):
        self.cfg, self.problem, self.ctx, self.device = cfg, problem, ctx, device
        torch.manual_seed(cfg.seed)
        self.net = FilterLevelNet(problem).to(device)
        self.weight_set, self.alpha_set = halves(train, cfg.seed)
        self.n_batches = batches_per_epoch(min(len(self.weight_set), len(self.alpha_set)), ctx, cfg.batch_size,
                                           cfg.max_batches)
        self.weight_params = self.net.weight_parameters()
        self.weight_opt = torch.optim.RMSprop(self.weight_params, lr=cfg.lr, alpha=0.9, eps=1e-3, momentum=0.9,
                                              weight_decay=cfg.weight_decay)
        self.arch_opt = torch.optim.SGD(list(self.net.alphas), lr=cfg.arch_lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=False)  # fake quantization runs in fp32
        self.epoch, self.arch_steps, self.ranges_set = 0, 0, False
        self.metrics: list[dict[str, Any]] = []
        self.last_samples: list[Configuration] = []

    def _loader(self, dataset: Dataset, salt: int):  # type: ignore[no-untyped-def]
        return epoch_loader(dataset, self.epoch * 2 + salt, self.cfg.seed, self.ctx, self.cfg.batch_size,
                            self.n_batches, self.cfg.workers, False)

    def deterministic(self) -> Configuration:
        p = self.problem
        return tuple(p.sampler.deterministic(s.filters, a) for s, a in zip(p.slots, self.net.alphas))

    def run_epoch(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch
        searching = e >= cfg.pretrain_epochs
        start = time.perf_counter()
        if searching and not self.ranges_set:
            x, _ = next(iter(self._loader(self.weight_set, 0)))
            self.net.init_ranges(x.to(self.device))
            self.ranges_set = True
        sums = {"ce": 0.0, "arch_loss": 0.0, "sampled_bops": 0.0}
        samples: list[Configuration] = []
        weights = self._loader(self.weight_set, 0)
        alphas = self._loader(self.alpha_set, 1) if searching else [None] * self.n_batches
        self.net.train()
        for b, ((x, y), arch_batch) in enumerate(zip(weights, alphas)):
            where = (e + 1, b + 1)
            for group in self.weight_opt.param_groups:
                group["lr"] = cosine(cfg.lr, e + b / self.n_batches, cfg.epochs)
            sums["ce"] += self._weight_step(x.to(self.device), y.to(self.device), searching, where)
            if arch_batch is not None:
                loss, bops, drawn = self._alpha_step(arch_batch[0].to(self.device), arch_batch[1].to(self.device), where)
                sums["arch_loss"] += loss
                sums["sampled_bops"] += bops
                samples += drawn
        self.epoch += 1
        self.last_samples = samples
        det = self.deterministic()
        n = self.n_batches
        line = {"method": "filterlevel", "epoch": self.epoch, "phase": "search" if searching else "pretrain",
                "train_ce": sums["ce"] / n, "arch_loss": sums["arch_loss"] / n if searching else None,
                "sampled_bops": sums["sampled_bops"] / n if searching else None,
                "bops": self.problem.bops(det), "target_bops": cfg.target_bops,
                "deterministic": [list(c) for c in det], "lr": self.weight_opt.param_groups[0]["lr"],
                "arch_lr": self.arch_opt.param_groups[0]["lr"], "epoch_time_s": time.perf_counter() - start}
        self.metrics.append(line)
        return line

    def _weight_step(self, x: torch.Tensor, y: torch.Tensor, searching: bool, where: tuple[int, int]) -> float:
        if not searching:
            self.net.set_float()
            configs: list[Configuration | None] = [None]
        elif self.problem.mode == "quant":
            configs = [sample_configuration(self.net)]
        else:
            configs = [self.problem.homogeneous(0), self.deterministic()]
        self.weight_opt.zero_grad(set_to_none=True)
        total = 0.0
        for config in configs:
            if config is not None:
                self.net.set_configuration(config)
            loss = F.cross_entropy(self.net(x).float(), y) / len(configs)
            loss.backward()
            total += float(loss.detach())
        value = float(mean_over_ranks(torch.tensor([total]), self.ctx)[0])
        if not torch.isfinite(torch.tensor(value)):
            raise NonFiniteLoss(*where)
        average_gradients(self.weight_params, self.ctx)
        self.weight_opt.step()
        self.net.clamp_ranges_()
        return value

    def _alpha_step(self, x: torch.Tensor, y: torch.Tensor, where: tuple[int, int]) -> tuple[float, float, list[Configuration]]:
        cfg = self.cfg
        if cfg.estimator == "score":
            est = score_estimate(self.net, x, y, cfg.target_bops, cfg.lam, cfg.samples)
        else:
            est = gumbel_estimate(self.net, x, y, cfg.target_bops, cfg.lam, cfg.tau)
        if not torch.isfinite(torch.tensor(est.loss)):
            raise NonFiniteLoss(*where)
        for alpha, grad in zip(self.net.alphas, est.grads):
            alpha.grad = grad.to(alpha.dtype)
        average_gradients(list(self.net.alphas), self.ctx)
        torch.nn.utils.clip_grad_norm_(list(self.net.alphas), cfg.arch_clip)
        for group in self.arch_opt.param_groups:
            group["lr"] = cfg.arch_lr * cfg.arch_lr_decay ** self.arch_steps
        self.arch_opt.step()
        self.arch_opt.zero_grad(set_to_none=True)
        self.arch_steps += 1
        return est.loss, est.bops, [c for c, _, _ in est.samples]

    # ---- checkpoint state ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "config": self.cfg.to_dict(), "model": self.net.state_dict(),
                "weight_opt": self.weight_opt.state_dict(), "arch_opt": self.arch_opt.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": capture_rng(), "metrics": self.metrics,
                "filterlevel": {"arch_steps": self.arch_steps, "ranges_set": self.ranges_set,
                                "last_samples": [[list(c) for c in s] for s in self.last_samples]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        restore_rng(state["rng"])
        own = state["filterlevel"]
        self.arch_steps, self.ranges_set = int(own["arch_steps"]), bool(own["ranges_set"])
        self.last_samples = [tuple(tuple(int(v) for v in c) for c in s) for s in own["last_samples"]]
        self.epoch = int(state["epoch"])
        self.metrics = list(state["metrics"])
