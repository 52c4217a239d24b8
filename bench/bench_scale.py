"""NeuralScale on tiny/digits: budget hit, NeuralScale vs uniform scaling after retraining, descent cost.

1. Budget hit: parameter budgets reached at or under the cap (gap to the cap), and a latency
   budget: the LUT prediction (derived table, missing widths timed) against the cap, and the
   finalized model's measured end-to-end ORT latency against that prediction.
2. Accuracy: each budget's NeuralScale and uniform archs retrained from scratch with one recipe
   over several seeds on the dataset's fixed splits: train, validation (selection) and test
   (the report), mean +- std over seeds.
3. Cost: the descent's wall time against one epoch of plain training of the input network.

    PYTHONPATH=. python bench/bench_scale.py [--iterations 2] [--epochs 8] [--seeds 3] [--out DIR]

Run on 2 shared CPU cores (defaults: 2 iterations, 2 pre-training epochs, prune 10 filters every 10
batches, tied residuals, granularity 8; retraining 8 epochs, seeds 0-2):
  params=12K/20K/30K reached 11,972 / 19,934 / 29,798 (-0.23% / -0.33% / -0.67%); uniform -1.37% / -1.21% / -0.49%.
  latency-us=60: LUT prediction 59.93 us (-0.12%), 98 keys timed; measured 79.3 us and, rerun, 68.1 us (the input
  tiny arch, all keys from the shipped table, measured 54.3 us against its 77.6 us prediction the same hour: the
  machine's speed, not the solve, dominates that gap).
  test accuracy NeuralScale vs uniform: 12K 0.9731 +- 0.0043 vs 0.9768 +- 0.0043; 20K 0.9861 +- 0.0074 vs
  0.9870 +- 0.0016; 30K 0.9879 +- 0.0058 vs 0.9898 +- 0.0043: no low-budget win on digits at this length.
  descent: 29 s per iteration = 16.6 plain training epochs of tiny (1.8 s each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from onnxnas.arch import load_arch
from onnxnas.cli import main
from onnxnas.cli.lut import backend_from_header
from onnxnas.data import DataSplits, load_data
from onnxnas.finalize import FinalizeOptions, finalize
from onnxnas.lut.table import LatencyTable
from onnxnas.train import TrainConfig, evaluate, train_arch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.arch.json"
LUT = ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"


def retrain(arch_path: str, data: DataSplits, test: torch.utils.data.Dataset, epochs: int, seed: int) -> tuple[float, float]:
    model, history = train_arch(load_arch(arch_path), data, TrainConfig(epochs=epochs, seed=seed), progress=False)
    return history[-1]["val_accuracy"], evaluate(model, test, torch.device("cpu"))


def main_bench() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--prune-every", type=int, default=10)
    parser.add_argument("--budgets", default="params=12K,20K,30K")
    parser.add_argument("--latency-us", type=float, default=60.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_scale-"))
    start = time.perf_counter()
    assert main(["scale", str(TINY), "--budgets", args.budgets, "--budget", f"latency-us={args.latency_us:g}", "--lut", str(LUT),
                 "--iterations", str(args.iterations), "--pretrain-epochs", str(args.pretrain_epochs),
                 "--prune-every", str(args.prune_every), "--out", str(out)] + (["--resume"] if (out / "state.json").exists() else [])) == 0
    print(f"\nscale run: {time.perf_counter() - start:.0f}s -> {out}")
    summary = json.loads((out / "summary.json").read_text())

    print("\n1. budget hit (cost reached, gap to the cap)")
    print(f"{'budget':<18}{'neuralscale':>14}{'gap':>9}{'uniform':>14}{'gap':>9}")
    for item in summary["budgets"]:
        ns, un = item["neuralscale"], item["uniform"]
        print(f"{item['budget']:<18}{ns['cost']:>14,.6g}{100 * ns['gap']:>8.2f}%{un['cost']:>14,.6g}{100 * un['gap']:>8.2f}%")
    latency = next(i for i in summary["budgets"] if i["budget"].startswith("latency-us"))
    derived = LatencyTable.load(out / "lut.derived.json")
    backend, protocol = backend_from_header(derived)
    manifest = finalize(Path(latency["neuralscale"]["arch"]), FinalizeOptions(out=out / "deploy-latency", lut=out / "lut.derived.json",
                                                                               backend=backend, protocol=protocol),
                        log=lambda line: None)
    measured, predicted = manifest["latency"]["measured"], manifest["latency"]["lut"]
    timed = derived.header.get("timed_by_scale", {})
    print(f"latency: LUT prediction {latency['neuralscale']['cost']:.2f} us for a cap of {args.latency_us:g} us "
          f"({100 * latency['neuralscale']['gap']:+.2f}%); finalized model measured {measured['median_us']:.2f} us "
          f"(p10 {measured['p10_us']:.2f}, p90 {measured['p90_us']:.2f}) vs predicted {predicted['predicted_us']:.2f} us "
          f"({100 * (measured['median_us'] / predicted['predicted_us'] - 1):+.1f}%); the derived table timed "
          f"{timed.get('keys')} key(s) with {derived.header['backend']['name']} {timed.get('backend_version')} "
          f"(the input table: {derived.header['backend']['version']})")

    print(f"\n2. retrained accuracy, {args.epochs} epochs, seeds 0..{args.seeds - 1} (mean +- std)")
    data = load_data("digits", 32, 3)
    print(f"{'budget':<18}{'method':<13}{'selection':>18}{'test':>18}")
    for item in summary["budgets"]:
        if not item["budget"].startswith("params"):
            continue
        for method in ("neuralscale", "uniform"):
            results = [retrain(item[method]["arch"], data, data.test, args.epochs, seed) for seed in range(args.seeds)]
            sel, test = [r[0] for r in results], [r[1] for r in results]
            print(f"{item['budget']:<18}{method:<13}{statistics.mean(sel):>11.4f} +- {statistics.stdev(sel):.4f}"
                  f"{statistics.mean(test):>11.4f} +- {statistics.stdev(test):.4f}", flush=True)

    print("\n3. cost")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start = time.perf_counter()
    train_arch(load_arch(TINY), data, TrainConfig(epochs=1), progress=False)
    epoch = time.perf_counter() - start
    for m in metrics:
        print(f"iteration {m['iteration']}: descent {m['descent_time_s']:.1f}s over {m['descent_steps']} steps = "
              f"{m['descent_time_s'] / epoch:.1f} plain training epochs of the input network ({epoch:.1f}s each)")


if __name__ == "__main__":
    main_bench()
