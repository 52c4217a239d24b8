"""NeuralScale's iterations: re-initialize, pre-train, descend, refit; resumable per iteration.

Iteration 1 starts at the input arch's widths; iteration i > 1 at the widths fit i-1 gives for
the input network's own parameter count (never the user's budget, so one fit serves every
budget). ``state.json`` in ``--out`` records the finished iterations; ``--resume`` continues
after the last one, and the descent CSVs and fits of earlier iterations are read back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from onnxnas.blocks import build_model
from onnxnas.cost import Budget, CountCost
from onnxnas.data import DataSplits
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.scale.descent import DescentConfig, descend, write_rows
from onnxnas.scale.fit import Fit, fit_power_laws, load_fit, save_fit
from onnxnas.scale.solve import solve_fit
from onnxnas.scale.variables import WidthPlan
from onnxnas.schema import Fields
from onnxnas.search.metrics import write_metrics
from onnxnas.train import TrainConfig, evaluate, train_arch

STATE_FORMAT = 1
MATERIALIZE_BYTES = 512 << 20  # small training sets are decoded once, not per batch, for the descent's many batches


@dataclasses.dataclass(frozen=True)
class ScaleConfig:
    iterations: int = 15
    pretrain_epochs: int = 10
    residual: str = "tied"
    granularity: int = 8
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    max_batches: int | None = None  # per pre-training epoch (smoke tests)
    descent: DescentConfig = DescentConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _materialized(dataset: Dataset) -> Dataset:
    first = dataset[0][0]
    if len(dataset) * first.numel() * first.element_size() > MATERIALIZE_BYTES:
        return dataset
    x, y = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    return TensorDataset(x, y)


def start_widths(plan: WidthPlan, previous: Fit | None) -> list[int]:
    """Iteration 1: the input widths; later: fit i-1 solved for the input network's parameter count."""
    if previous is None:
        return plan.base_widths
    own = Budget("params", CountCost("params").exact(plan.arch))
    return list(solve_fit(plan, previous, CountCost("params"), own, 1, f"iteration {previous.iteration}").widths)


def _load_state(out: Path, plan: WidthPlan, cfg: ScaleConfig) -> tuple[list[Fit], list[dict[str, Any]]]:
    path = out / "state.json"
    f = Fields(read_json(path, "scale state"), "$", str(path))
    if f.get("format", None) != STATE_FORMAT or f.get("arch_hash", None) != plan.arch.hash:
        raise OnnxNasError("the scale state in --out belongs to another arch or onnxnas version", where=str(path),
                           fix="resume with the same ARCH.json, or pass another --out")
    recorded = {k: v for k, v in f.object("config").data.items() if k != "iterations"}
    wanted = {k: v for k, v in cfg.to_dict().items() if k != "iterations"}
    if recorded != wanted:
        changed = sorted(k for k in wanted if recorded.get(k) != wanted[k])
        raise OnnxNasError(f"--resume with other settings than the run's ({', '.join(changed)})", where=str(path),
                           fix="rerun with the run's settings (only --iterations may change), or pass another --out")
    done = f.integer("done", low=0, high=cfg.iterations if cfg.iterations >= 1 else 0)
    metrics = f.list("metrics", max_items=done, min_items=done)
    fits = [load_fit(out / "fits" / f"iter_{k}.json", plan) for k in range(1, done + 1)]
    return fits, metrics


def run_iterations(plan: WidthPlan, data: DataSplits, cfg: ScaleConfig, out: Path, *, resume: bool = False,
                   progress: bool = True, device: torch.device | None = None,
                   log: Callable[[str], None] = print) -> list[Fit]:
    """Every iteration's fit (finished ones read back on resume); writes descent/, fits/, metrics.jsonl, state.json."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state_path = out / "state.json"
    if state_path.exists() and not resume:
        raise OnnxNasError("--out already holds a scale run", where=str(out), fix="pass --resume, or another --out")
    fits, metrics = _load_state(out, plan, cfg) if resume and state_path.exists() else ([], [])
    train = _materialized(data.train)
    splits = DataSplits(data.name, train, data.val, data.test, data.num_classes)
    bar = tqdm(range(len(fits) + 1, cfg.iterations + 1), desc="scale", disable=None if progress else True)
    for k in bar:
        widths = start_widths(plan, fits[-1] if fits else None)
        arch = plan.apply(widths)
        start = time.perf_counter()
        seed = cfg.seed + k
        if cfg.pretrain_epochs > 0:
            model, _ = train_arch(arch, splits, TrainConfig(epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size,
                                                            lr=cfg.lr, max_batches=cfg.max_batches, seed=seed),
                                  device, progress=False)
        else:
            torch.manual_seed(seed)
            model = build_model(arch).to(device)
        pretrain_s, accuracy = time.perf_counter() - start, evaluate(model, data.val, device)
        loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
        start = time.perf_counter()
        rows = descend(model, plan, widths, loader, cfg.descent, device,
                       on_step=lambda step, alive: bar.set_postfix_str(f"iter {k} step {step} filters {sum(alive)}"))
        descent_s = time.perf_counter() - start
        write_rows(out / "descent" / f"iter_{k}.csv", plan, rows)
        fit = fit_power_laws(rows, plan, k, str(out / "descent" / f"iter_{k}.csv"))
        save_fit(out / "fits" / f"iter_{k}.json", fit)
        fits.append(fit)
        metrics.append({"iteration": k, "start_widths": widths, "pretrain_val_accuracy": accuracy,
                        "pretrain_time_s": pretrain_s, "descent_time_s": descent_s, "descent_steps": rows[-1].step,
                        "rows": len(rows), "tau_range": list(fit.tau_range),
                        "min_r2": min(law.r2 for law in fit.laws)})
        write_metrics(out / "metrics.jsonl", metrics)
        atomic_write_json(state_path, {"format": STATE_FORMAT, "arch_hash": plan.arch.hash, "config": cfg.to_dict(),
                                       "done": k, "metrics": metrics})
        log(f"iteration {k}: {len(rows)} descent rows, tau {fit.tau_range[0]:,.0f}..{fit.tau_range[1]:,.0f}, "
            f"min R^2 {metrics[-1]['min_r2']:.3f}, descent {descent_s:.1f}s")
    return fits
