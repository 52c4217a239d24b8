"""One UDC search: per step, S Monte-Carlo samples of every decision on one batch, the loss
``task + lambda * sum_c |E_c(z)/ê_c - 1|``, a theta step (SGD, cosine) and, after warm-up, a pi
step (Adam) followed by the projection. Steps per epoch are the batches divided by S.

Every random draw of a step comes from a generator seeded by (seed, epoch, step), the same on
every rank: each rank draws all S samples and runs its share (samples rank, rank + W, ...), so
the samples split across ranks and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from onnxnas.search.checkpoint import capture_rng, restore_rng
from onnxnas.search.distributed import DistContext, average_gradients, mean_over_ranks, sync_buffers
from onnxnas.search.loop import NonFiniteLoss
from onnxnas.search.schedules import cosine
from onnxnas.search.trainer import batches_per_epoch, epoch_loader
from onnxnas.search.udc import schedules
from onnxnas.search.udc.config import UdcConfig
from onnxnas.search.udc.constraint import Constraint
from onnxnas.search.udc.projection import project_
from onnxnas.search.udc.sampling import accepted_average, gumbel_samples, top_kappa_ste
from onnxnas.search.udc.supernet import Decisions, UdcSupernet


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)


class UdcTrainer:
    """Supernet, optimizers, epoch counter and metrics of one UDC search (the loop's EpochTrainer)."""

    def __init__(self, cfg: UdcConfig, net: UdcSupernet, constraints: Sequence[Constraint], train_set: Dataset,
                 ctx: DistContext):
        self.cfg, self.net, self.constraints, self.train_set, self.ctx = cfg, net, list(constraints), train_set, ctx
        batches = batches_per_epoch(len(train_set), ctx, cfg.batch_size, cfg.max_batches)
        self.local_samples = cfg.mc_samples // ctx.world_size
        self.n_steps = max(1, batches * ctx.world_size // cfg.mc_samples)
        self.epoch = 0
        self.metrics: list[dict[str, Any]] = []
        self._make_optimizers()

    def _make_optimizers(self) -> None:
        ranges = {id(p) for layer in self.net.layers for p in layer.ranges.parameters()}
        weights = self.net.weight_parameters()
        groups = [{"params": [p for p in weights if id(p) not in ranges], "weight_decay": self.cfg.weight_decay},
                  {"params": [p for p in weights if id(p) in ranges], "weight_decay": 0.0}]
        self.weight_params = weights
        self.weight_opt = torch.optim.SGD(groups, lr=self.cfg.lr, momentum=self.cfg.momentum)
        self.arch_opt = torch.optim.Adam(self.net.arch_parameters(), lr=self.cfg.arch_lr)

    @property
    def searching(self) -> bool:
        return self.epoch >= self.cfg.warmup_epochs

    def _kappa(self, decision: str, options: int) -> int:
        if not self.cfg.use_topk or decision in ("width", "op"):
            return options  # widths: K, no truncation (App. D)
        return self.cfg.kappa_bits if decision == "bits" else self.cfg.kappa_sparsity

    def sample(self, generator: torch.Generator, tau: float, rs: float) -> tuple[list[list[Decisions]], float]:
        """S sampled configurations (rejection-mixed, top-kappa) and the fraction of decisions with an accepted sample."""
        S = self.cfg.mc_samples
        configs: list[list[Decisions]] = [[{} for _ in self.net.layers] for _ in range(S)]
        accepted = total = 0
        for i, decisions in enumerate(self.net.decisions()):
            for d, logits in decisions.items():
                samples = gumbel_samples(logits, tau, S, generator)
                average = accepted_average(samples, logits) if self.cfg.use_rejection else None
                coins = torch.rand(S, generator=generator) < rs
                accepted, total = accepted + (average is not None), total + 1
                for s in range(S):
                    z = average if (average is not None and bool(coins[s])) else samples[s]
                    configs[s][i][d] = top_kappa_ste(z, self._kappa(d, logits.numel()))
        return configs, accepted / total if total else 1.0

    def run_epoch(self) -> dict[str, Any]:
        cfg, e = self.cfg, self.epoch
        searching = self.searching
        if searching and not bool(self.net.ranges_ready):
            self.net.init_ranges()  # end of warm-up: ranges from the trained theta
        self.net.train()
        self.net.reset_masks()
        start = time.perf_counter()
        sums = {"ce": 0.0, "loss": 0.0, "penalty": 0.0, "accepted": 0.0}
        step_costs: dict[str, list[float]] = {c.name: [] for c in self.constraints}
        loader = epoch_loader(self.train_set, e, cfg.seed, self.ctx, cfg.batch_size, self.n_steps, cfg.workers, False)
        bar = tqdm(loader, total=self.n_steps, desc=f"epoch {e + 1}/{cfg.epochs}", leave=False,
                   disable=True if not self.ctx.is_main else None)
        for step, (x, y) in enumerate(bar):
            position = (e + step / self.n_steps) / cfg.epochs
            search_progress = (e - cfg.warmup_epochs + step / self.n_steps) / (cfg.epochs - cfg.warmup_epochs) \
                if searching else None
            tau = schedules.temperature(position)
            rs = schedules.theta_rs(search_progress)
            configs, accepted = self.sample(step_generator(cfg.seed, e, step), tau, rs)
            stats = self._step(x, y, configs, searching, (e + 1, step + 1))
            for group in self.weight_opt.param_groups:
                group["lr"] = cosine(cfg.lr, position, 1.0)
            if searching:
                self.arch_opt.step()
                if cfg.use_projection:
                    for decisions in self.net.decisions():
                        for logits in decisions.values():
                            project_(logits.data, schedules.xi(search_progress, logits.numel()))
            self.weight_opt.step()
            ce, loss, penalty, *costs = stats
            sums["ce"] += ce
            sums["loss"] += loss
            sums["penalty"] += penalty
            sums["accepted"] += accepted
            for c, value in zip(self.constraints, costs):
                step_costs[c.name].append(value)
        self.epoch += 1
        sync_buffers(self.net, self.ctx)
        line = {"method": "udc", "epoch": self.epoch, "phase": "search" if searching else "warmup",
                "train_ce": sums["ce"] / self.n_steps, "search_loss": sums["loss"] / self.n_steps,
                "penalty": sums["penalty"] / self.n_steps, "accepted_fraction": sums["accepted"] / self.n_steps,
                "temperature": schedules.temperature(self.epoch / cfg.epochs), "lr": self.weight_opt.param_groups[0]["lr"],
                "steps": self.n_steps, "mc_samples": cfg.mc_samples,
                "targets": {c.name: c.target for c in self.constraints},
                "sampled": step_costs, "expected": self.expected_costs(), "argmax": self.net.argmax_config(),
                "epoch_time_s": time.perf_counter() - start}
        self.metrics.append(line)
        return line

    def _step(self, x: torch.Tensor, y: torch.Tensor, configs: list[list[Decisions]], searching: bool,
              where: tuple[int, int]) -> list[float]:
        self.weight_opt.zero_grad(set_to_none=True)
        self.arch_opt.zero_grad(set_to_none=True)
        self.net.refresh_masks()
        mine = configs[self.ctx.rank::self.ctx.world_size]
        totals = torch.zeros(3 + len(self.constraints))
        for n, z in enumerate(mine):
            ce = F.cross_entropy(self.net(x, z), y)
            penalty = torch.zeros(())
            costs = []
            for c in self.constraints:
                term, value = c.penalty(z)
                penalty = penalty + term
                costs.append(value.detach())
            loss = ce + self.cfg.lam * penalty
            if not torch.isfinite(loss):
                raise NonFiniteLoss(*where)
            (loss / len(mine)).backward(retain_graph=n + 1 < len(mine))  # the samples share pi's graph
            totals += torch.stack([ce.detach(), loss.detach(), penalty.detach(), *costs]).float() / len(mine)
        params = self.weight_params + (self.net.arch_parameters() if searching else [])
        average_gradients(params, self.ctx)
        if not searching:
            for p in self.net.arch_parameters():
                p.grad = None  # pi stays uniform in warm-up
        return mean_over_ranks(totals, self.ctx).tolist()

    @torch.no_grad()
    def expected_costs(self) -> dict[str, float]:
        """Each cost at pi itself (the mixture expectation of the current categoricals)."""
        z = [{d: torch.softmax(logits.detach(), 0) for d, logits in decisions.items()} for decisions in self.net.decisions()]
        return {c.name: float(c.expected(z)) for c in self.constraints}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "config": self.cfg.to_dict(), "model": self.net.state_dict(),
                "weight_opt": self.weight_opt.state_dict(), "arch_opt": self.arch_opt.state_dict(), "scaler": {},
                "rng": capture_rng(), "metrics": self.metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self._make_optimizers()
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.arch_opt.load_state_dict(state["arch_opt"])
        restore_rng(state["rng"])
        self.epoch = int(state["epoch"])
        self.metrics = list(state["metrics"])
