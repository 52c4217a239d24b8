"""Filter-level benchmarks on tiny / digits (2 CPU cores: short runs; numbers go to the report).

1. Variance (the paper's central finding): one heterogeneous and one homogeneous configuration of
   similar BOPs, each trained 5 times from the same fp32 pre-trained network (seeds vary the batches).
2. Alpha-gradient variance, score vs Gumbel, at equal compute (one Gumbel step ~ one score sample
   forward+backward; we compare per-element variance of 12 estimates on one batch).
3. Search vs homogeneous at 3 BOPs budgets, 3 seeds each: accuracy mean +- std, each at or under budget.
4. Deployment: INT8 ONNX size vs the true (group-bit) size, ONNX Runtime latency vs fp32.

Run: ``PYTHONPATH=. python bench/bench_filterlevel.py [--quick] [--epochs N --max-batches N --seeds N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from onnxnas.arch import load_arch
from onnxnas.cli import main as cli
from onnxnas.data import digits
from onnxnas.search.distributed import init_distributed
from onnxnas.search.filterlevel.config import FilterLevelConfig
from onnxnas.search.filterlevel.configuration import largest_remainder
from onnxnas.search.filterlevel.estimators import gumbel_estimate, score_estimate
from onnxnas.search.filterlevel.ops import parse_ops
from onnxnas.search.filterlevel.problem import Problem
from onnxnas.search.filterlevel.trainer import FilterLevelTrainer
from onnxnas.search.methods.filterlevel import accuracy

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.arch.json"


def _trainer(problem: Problem, seed: int, epochs: int, max_batches: int) -> tuple[FilterLevelTrainer, list]:
    data = digits(32, 3)  # the fixed split every command uses
    cfg = FilterLevelConfig(target_bops=problem.reference_bops(), epochs=epochs, pretrain_epochs=1, seed=seed,
                            max_batches=max_batches, batch_size=32)
    trainer = FilterLevelTrainer(cfg, problem, data.train, init_distributed(torch.device("cpu")), torch.device("cpu"))
    return trainer, list(torch.utils.data.DataLoader(data.val, batch_size=256))


def fixed_training(problem: Problem, config, seeds: int, epochs: int, max_batches: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Train weights on one fixed configuration (pretrain 1 epoch at seed 0, then seeds vary the batches)."""
    accs = []
    for seed in range(seeds):
        torch.manual_seed(0)
        trainer, val = _trainer(problem, seed, epochs, max_batches)
        trainer.net.set_float()
        for e in range(epochs):
            trainer.epoch = e
            searching = e >= 1
            if searching and not trainer.ranges_set:
                x, _ = next(iter(trainer._loader(trainer.weight_set, 0)))
                trainer.net.init_ranges(x)
                trainer.ranges_set = True
            for x, y in trainer._loader(trainer.weight_set, 0):
                if searching:
                    trainer.net.set_configuration(config)
                else:
                    trainer.net.set_float()
                trainer.weight_opt.zero_grad()
                torch.nn.functional.cross_entropy(trainer.net(x), y).backward()
                trainer.weight_opt.step()
        accs.append(accuracy(trainer, config, val))
    return accs


def gradient_variance(problem: Problem, estimates: int) -> dict[str, float]:
    trainer, _ = _trainer(problem, 0, 2, 4)
    x, y = next(iter(trainer._loader(trainer.alpha_set, 1)))
    trainer.net.init_ranges(x)
    target = 0.5 * problem.reference_bops()
    result = {}
    for name, fn in (("score", lambda: score_estimate(trainer.net, x, y, target, 1.0, 1)),
                     ("gumbel", lambda: gumbel_estimate(trainer.net, x, y, target, 1.0, 1.0))):
        start = time.process_time()
        grads = torch.stack([torch.cat([g.flatten() for g in fn().grads]) for _ in range(estimates)])
        result[f"{name}_var"] = float(grads.var(0).mean())
        result[f"{name}_cpu_s_per_estimate"] = (time.process_time() - start) / estimates
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, help="override the setting's epochs (e.g. 8 for a medium run)")
    parser.add_argument("--max-batches", type=int, help="override the setting's batches per epoch")
    parser.add_argument("--seeds", type=int, help="override the setting's runs per configuration and per budget")
    args = parser.parse_args(argv)
    epochs, batches, seeds = (3, 8, 3) if args.quick else (4, 20, 5)
    epochs, batches, seeds = args.epochs or epochs, args.max_batches or batches, args.seeds or seeds
    search_seeds = args.seeds or (2 if args.quick else 3)
    torch.set_num_threads(1)
    problem = Problem.of(load_arch(TINY), parse_ops("2:2,2:4,3:3,8:8"), "quant", str(TINY))
    hetero = tuple(largest_remainder(s.filters, [0.3, 0.2, 0.2, 0.3]) for s in problem.slots)
    homo = problem.homogeneous(2)  # 3:3
    for name, config in (("heterogeneous", hetero), ("homogeneous 3:3", homo)):
        accs = fixed_training(problem, config, seeds, epochs, batches)
        print(f"variance  {name:<16} BOPs {problem.bops(config):.4g}  top-1 {statistics.mean(accs):.3f} +- "
              f"{statistics.stdev(accs):.3f} over {seeds} runs {[round(a, 3) for a in accs]}")
    print("gradient  " + ", ".join(f"{k} {v:.4g}" for k, v in gradient_variance(problem, 12).items()))
    with tempfile.TemporaryDirectory() as tmp:
        for budget in ("0.25x", "0.35x", "0.5x"):
            accs, bops = [], []
            for seed in range(search_seeds):
                out = Path(tmp) / f"{budget}-{seed}"
                cli(["search", "--method", "filterlevel", "--arch", str(TINY), "--budget-bops", budget, "--data",
                     "digits", "--epochs", str(epochs), "--max-batches", str(batches), "--seed", str(seed), "--out", str(out)])
                prov = load_arch(out / "arch.json").provenance
                accs.append(prov["val_acc"])
                bops.append(prov["searched_bops"] / prov["budget_bops"])
            print(f"search    budget {budget}: top-1 {statistics.mean(accs):.3f} +- {statistics.pstdev(accs):.3f}, "
                  f"BOPs/budget max {max(bops):.3f}")
        out = Path(tmp) / "0.5x-0"
        cli(["finalize", str(out / "arch.json"), "--weights", str(out / "weights.pt"), "--precision", "int8",
             "--calib-data", "digits", "--out", str(out / "deploy")])
        agreement = json.loads((out / "deploy" / "manifest.json").read_text())["verification"]["top1_agreement"]
        print(f"deploy    top-1 agreement with the fake-quantized net {agreement['agreement']:.3f} "
              f"({agreement['agreeing']}/{agreement['images']} digits images, threshold {agreement['threshold']})")
        cli(["finalize", str(TINY), "--out", str(out / "fp32")])
        for name in ("deploy", "fp32"):
            cli(["bench", str(out / name / "model.onnx"), "--device", "cpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
