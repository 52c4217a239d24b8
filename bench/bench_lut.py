"""LUT benchmarks for issue 2, measured side by side in one run on this machine.

  fidelity       LUT sum vs end-to-end ONNX Runtime time over random tiny archs (MAPE, max, Kendall tau)
  cost           unique keys vs layer placements per space, seconds per key on tiny, gpunet1 estimate
  repeatability  two builds of the same table, entry by entry (median and p90 of the relative difference)

Usage: python bench/bench_lut.py [fidelity|cost|repeatability|all] [--samples 24] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxnas.lut.builder import BuildConfig, build_lut
from onnxnas.lut.key import space_units
from onnxnas.lut.table import LatencyTable
from onnxnas.lut.validate import error_metrics, validate_table
from onnxnas.space import load_space
from onnxnas.timing.base import TimingProtocol
from onnxnas.timing.devices import resolve_device
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend

PROTOCOL = TimingProtocol()


def build(space_name: str, out: Path) -> tuple[LatencyTable, float]:
    _, hardware = resolve_device("cpu")
    config = BuildConfig(space=load_space(space_name), device={"name": "cpu", **hardware},
                         backend=OnnxRuntimeBackend(PROTOCOL.threads), protocol=PROTOCOL, precision="fp32", out=out)
    start = time.perf_counter()
    table = build_lut(config, progress=False)
    return table, time.perf_counter() - start


def fidelity(workdir: Path, samples: int) -> None:
    table, _ = build("tiny", workdir / "fidelity.json")
    report = validate_table(table, load_space("tiny"), OnnxRuntimeBackend(PROTOCOL.threads), PROTOCOL, samples,
                            workdir, progress=False)
    m = report.metrics()
    raw = m["with_build_overhead"]
    naive = error_metrics(report.unit_sums_us, report.measured_us)
    print(f"[fidelity] tiny, ORT CPU 1 thread pinned, canary-gated; {len(report.archs)} random archs, "
          f"end to end {report.measured_us.min():.1f}..{report.measured_us.max():.1f} us")
    for label, r in (("plain sum of block medians", naive),
                     (f"sum - measured Identity overhead ({raw['overhead_us']:.2f} us) per extra call", raw)):
        print(f"  {label:62s} MAPE {r['mape_pct']:6.2f}%  max {r['max_error_pct']:6.2f}%  tau {r['kendall_tau']:.3f}  "
              f"bias {r['mean_bias_pct']:+.2f}%")
    print(f"  {'calibrated overhead (' + format(m['fitted_overhead_us'], '.2f') + ' us, fit on half), held-out half':62s} "
          f"MAPE {m['mape_pct']:6.2f}%  max {m['max_error_pct']:6.2f}%  tau {m['kendall_tau']:.3f}  "
          f"bias {m['mean_bias_pct']:+.2f}%   (target: MAPE <= 5%, tau >= 0.9)")


def cost(workdir: Path) -> None:
    print("[cost] unique keys against candidate placements (layer positions x candidates + stem + head)")
    for name in ("tiny", "mbv2", "gpunet1"):
        space = load_space(name)
        placements = sum(len(p.candidates()) for p in space.positions()) + 2
        keys = len(space_units(space, "fp32"))
        print(f"  {name:8s} positions {len(space.positions()):3d}  placements {placements:5d}  unique keys {keys:5d}  "
              f"dedupe {placements / keys:.2f}x")
    table, seconds = build("tiny", workdir / "cost.json")
    n = table.summary_counts()["measured"]
    print(f"  tiny build: {n} keys in {seconds:.1f} s = {seconds / n:.3f} s/key (export + ORT session + timing)")
    gpunet1 = len(space_units(load_space("gpunet1"), "fp32"))
    for label, per_key in (("TensorRT API, shared timing cache", 4.0), ("trtexec per key", 8.0)):
        print(f"  gpunet1 estimate with {label} (~{per_key:.0f} s/key assumed for build + timing): "
              f"{gpunet1 * per_key / 3600:.1f} h on one GPU; /N with --shard i/N")


def repeatability(workdir: Path) -> None:
    first, _ = build("tiny", workdir / "repeat-a.json")
    second, _ = build("tiny", workdir / "repeat-b.json")
    keys = sorted(k for k, e in first.entries.items() if e.ok and second.entries[k].ok)
    diffs = np.array([abs(first.entries[k].median_us - second.entries[k].median_us) / first.entries[k].median_us
                      for k in keys])
    print(f"[repeatability] two tiny builds, {len(keys)} entries: relative difference median "
          f"{100 * np.median(diffs):.2f}%, p90 {100 * np.percentile(diffs, 90):.2f}%, max {100 * diffs.max():.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("fidelity", "cost", "repeatability", "all"))
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lut-") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.which in ("fidelity", "all"):
            fidelity(workdir, args.samples)
        if args.which in ("cost", "all"):
            cost(workdir)
        if args.which in ("repeatability", "all"):
            repeatability(workdir)


if __name__ == "__main__":
    main()
