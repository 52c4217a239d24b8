"""Finalize benchmarks for issue 4, measured side by side in one run on this machine (ORT CPU, 1 thread).

  tiny         end-to-end ONNX Runtime latency of the finalized tiny example against its LUT prediction
               (latency_tables/tiny-cpu-onnxruntime-fp32.json, same backend and protocol as the table)
  gpunet1      GPUNet-1 at 288x288: finalize time, parameters, MACs, ONNX size, ORT latency, per precision;
               fp32 against INT8-QDQ: size ratio and max abs output difference
  equivalence  PyTorch against ONNX Runtime, max abs / rel difference, every precision, both archs

Usage: python bench/bench_finalize.py [tiny|gpunet1|all] [--workdir DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from onnxnas.deploy import load_model
from onnxnas.deploy.artefacts import INPUTS_FILE, ONNX_FILE, OUTPUTS_FILE
from onnxnas.deploy.latency import measure
from onnxnas.deploy.verify import load_reference
from onnxnas.finalize import FinalizeOptions, finalize
from onnxnas.lut.table import LatencyTable
from onnxnas.timing.base import TimingProtocol
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend

ROOT = Path(__file__).resolve().parents[1]
TINY_LUT = ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"
PRECISIONS = ("fp32", "fp16", "int8")


def run_finalize(arch: Path, out: Path, precision: str, lut: Path | None = None) -> tuple[dict[str, Any], float]:
    """Finalize without the latency measurement, so the time is the pipeline's own."""
    start = time.perf_counter()
    manifest = finalize(arch, FinalizeOptions(out=out, precision=precision, lut=lut), log=lambda _: None)
    return manifest, time.perf_counter() - start


def equivalence_line(name: str, manifest: dict[str, Any]) -> str:
    report = manifest["verification"]
    o = report["comparisons"][0]["outputs"]["output"]
    return (f"  {name:8s} {manifest['precision']:5s} max abs {o['max_abs']:.2e}  max rel {o['max_rel']:.2e}  "
            f"peak {o['peak']:.3f}  limit {o['atol']:.2e} ({report['tolerance']:g} x peak)")


def tiny(workdir: Path, equivalence: list[str]) -> None:
    arch = ROOT / "examples" / "tiny.arch.json"
    lut = TINY_LUT if TINY_LUT.is_file() else None
    for precision in PRECISIONS:
        manifest, _ = run_finalize(arch, workdir / f"tiny-{precision}", precision, lut if precision == "fp32" else None)
        equivalence.append(equivalence_line("tiny", manifest))
        if precision != "fp32":
            continue
        if lut is None:
            print(f"[tiny] no {TINY_LUT.relative_to(ROOT)}: build it with 'onnxnas build-lut --space tiny --device cpu'")
            continue
        protocol = TimingProtocol(**LatencyTable.load(lut).header["protocol"])
        measured = measure(OnnxRuntimeBackend(protocol.threads), workdir / "tiny-fp32" / ONNX_FILE, protocol)
        predicted = manifest["latency"]["lut"]["predicted_us"]
        print(f"[tiny] examples/tiny.arch.json, ORT CPU {protocol.threads} thread(s), LUT protocol "
              f"({protocol.warmup_runs} warm-up, >= {protocol.runs} runs, median)")
        print(f"  measured {measured['median_us']:.1f} us (p10 {measured['p10_us']:.1f}, p90 {measured['p90_us']:.1f})  "
              f"LUT {predicted:.1f} us  measured/predicted {measured['median_us'] / predicted:.3f}  "
              f"error {100 * (predicted - measured['median_us']) / measured['median_us']:+.1f}%")


def gpunet1(workdir: Path, runs: int, equivalence: list[str]) -> None:
    arch = ROOT / "examples" / "gpunet1.arch.json"
    protocol = TimingProtocol(warmup_runs=3, runs=runs, min_time_s=0.0)
    print(f"[gpunet1] examples/gpunet1.arch.json at 288x288, ORT CPU 1 thread ({protocol.warmup_runs} warm-up, "
          f"{runs} runs, median)")
    rows = {}
    for precision in PRECISIONS:
        manifest, seconds = run_finalize(arch, workdir / f"gpunet1-{precision}", precision)
        measured = measure(OnnxRuntimeBackend(1), workdir / f"gpunet1-{precision}" / ONNX_FILE, protocol)
        rows[precision] = manifest
        size = manifest["size"]
        print(f"  {precision:5s} finalize {seconds:5.1f} s  params {size['parameters'] / 1e6:.2f} M  "
              f"MACs {size['macs'] / 1e9:.3f} G  ONNX {size['onnx_bytes'] / 2**20:6.2f} MiB  "
              f"(deflate {size['deflate_bytes'] / 2**20:.2f}, entropy bound {size['entropy_bound_bytes'] / 2**20:.2f})  "
              f"ORT {measured['median_us'] / 1000:7.2f} ms")
        equivalence.append(equivalence_line("gpunet1", manifest))
    inputs, _ = load_reference(workdir / "gpunet1-fp32" / INPUTS_FILE, workdir / "gpunet1-fp32" / OUTPUTS_FILE)
    with load_model(workdir / "gpunet1-fp32" / ONNX_FILE) as fp32, load_model(workdir / "gpunet1-int8" / ONNX_FILE) as int8:
        diffs = [(np.abs(fp32.run(x) - int8.run(x)).max(), np.abs(fp32.run(x)).max()) for feed in inputs
                 for x in feed.values()]
    ratio = rows["fp32"]["size"]["onnx_bytes"] / rows["int8"]["size"]["onnx_bytes"]
    worst, peak = max(d for d, _ in diffs), max(p for _, p in diffs)
    print(f"  fp32 vs int8-QDQ: size ratio {ratio:.2f}x  max abs output diff {worst:.3e} "
          f"({100 * worst / peak:.1f}% of the fp32 peak {peak:.3f}) over {len(diffs)} held-out inputs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("tiny", "gpunet1", "all"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=30, help="timed runs for GPUNet-1 (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        equivalence: list[str] = []
        if args.which in ("tiny", "all"):
            tiny(workdir, equivalence)
        if args.which in ("gpunet1", "all"):
            gpunet1(workdir, args.runs, equivalence)
        print("[equivalence] PyTorch vs ONNX Runtime on 4 held-out inputs (random init, data-calibrated BN)")
        print("\n".join(equivalence))


if __name__ == "__main__":
    main()
