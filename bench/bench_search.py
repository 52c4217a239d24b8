"""Search works and pruning pays, on `tiny` with digits and the committed CPU LUT.

1. Pruning pays: epoch time at the end of the search against just after warm-up.
2. Higher alpha gives lower predicted latency: an alpha sweep (one shared warm-up), and for
   each found net the predicted latency, the measured end-to-end latency (ONNX Runtime, 1
   thread) and the retrained accuracy, against a uniformly scaled baseline (kernel 3, no SE,
   no skips, one expansion ratio everywhere) of the closest predicted latency, retrained alike.

    PYTHONPATH=. python bench/bench_search.py [--alphas 0.2,1,4] [--epochs 10] [--retrain-epochs 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from onnxnas.arch import Arch, load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main as cli
from onnxnas.data import load_data
from onnxnas.export import export_onnx
from onnxnas.lut.table import LatencyTable
from onnxnas.search.prunode import round_to
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch
from onnxnas.timing.base import TimingProtocol
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend
from onnxnas.train import TrainConfig, train_arch

LUT = Path(__file__).resolve().parents[1] / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"


def uniform_arch(space, expansion: float, num_classes: int) -> Arch:
    choices = []
    for pos in space.positions():
        if not pos.hidden_choices:
            choices.append({"kernel_size": 3})
            continue
        width = min(max(round_to(expansion * pos.in_chs, space.granularity), pos.hidden_choices[0]), pos.max_hidden)
        choices.append({"kernel_size": 3, "se": False, "hidden_chs": width})
    return make_arch(space, choices, num_classes=num_classes, provenance={"method": "uniform", "expansion": expansion})


def measured_us(arch: Arch, folder: Path) -> float:
    path = export_onnx(build_model(arch), arch.input_shape, folder / f"{arch.hash}.onnx")
    return OnnxRuntimeBackend(threads=1).measure_onnx(path, TimingProtocol(warmup_runs=50, runs=500)).median_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="0.2,1,4")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=8)
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_search_"))
    assert cli(["search", "--lut", str(LUT), "--data", "digits", "--out", str(out / "search"), "--epochs", str(args.epochs),
                "--warmup-epochs", str(args.warmup_epochs), "--alpha", args.alphas, "--lambda", "0.55"]) == 0
    summary = json.loads((out / "search" / "summary.json").read_text())
    rows = summary["variants"]

    print(f"\n1. pruning pays (epoch time, tiny on digits, {args.epochs} epochs, warm-up {args.warmup_epochs}):")
    print(f"{'alpha':>6} | {'after warm-up s':>15} {'last epoch s':>12} {'speed-up':>8} | {'CPU s':>11} {'speed-up':>8} | blocks alive")
    for r in rows:
        metrics = [json.loads(line) for line in ((out / "search" / r["arch"]).parent / "metrics.jsonl").read_text().splitlines()]
        first, last = metrics[args.warmup_epochs], metrics[-1]
        print(f"{r['alpha']:>6g} | {first['epoch_time_s']:>15.2f} {last['epoch_time_s']:>12.2f} "
              f"{first['epoch_time_s'] / last['epoch_time_s']:>7.2f}x | {first['epoch_cpu_s']:>5.1f} {last['epoch_cpu_s']:>5.1f} "
              f"{first['epoch_cpu_s'] / last['epoch_cpu_s']:>7.2f}x | {sum(map(len, first['alive']))} -> "
              f"{sum(map(len, last['alive']))}")

    space, table = load_space("tiny"), LatencyTable.load(LUT)
    data = load_data("digits", space.resolution)
    retrain = TrainConfig(epochs=args.retrain_epochs)
    baselines = [uniform_arch(space, e / 4, data.num_classes) for e in range(2, 17)]
    print(f"\n2. alpha sweep (lambda 0.55), retrained {args.retrain_epochs} epochs from scratch; "
          "baseline = uniform expansion, k3, no SE, no skips, closest predicted latency:")
    print(f"{'alpha':>6} {'depth':>5} | {'pred us':>8} {'meas us':>8} {'acc':>6} | {'base e':>6} {'pred us':>8} "
          f"{'meas us':>8} {'acc':>6}")
    for r in rows:
        arch = load_arch(out / "search" / r["arch"])
        base = min(baselines, key=lambda b: abs(table.arch_latency(b) - r["predicted_latency_us"]))
        found_acc = train_arch(arch, data, retrain, progress=False)[1][-1]["val_accuracy"]
        base_acc = train_arch(base, data, retrain, progress=False)[1][-1]["val_accuracy"]
        print(f"{r['alpha']:>6g} {arch.depth:>5} | {r['predicted_latency_us']:>8.1f} {measured_us(arch, out):>8.1f} "
              f"{found_acc:>6.3f} | {base.provenance['expansion']:>6g} {table.arch_latency(base):>8.1f} "
              f"{measured_us(base, out):>8.1f} {base_acc:>6.3f}")
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
