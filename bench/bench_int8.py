"""INT8 deployment on ONNX Runtime CPU (1 thread): onnxnas QDQ against fp32 and ORT's own quantize_static.

For each arch (tiny at 32x32 calibrated on digits; GPUNet-1 at 288x288 calibrated on synthetic data,
since no image set ships at that size) it builds, from the same random-init network with data-calibrated
BN statistics:

  fp32         onnxnas's fp32 deployable ONNX
  onnxnas      onnxnas's int8 deployable ONNX in the ort flavor (passes.default_pipeline("int8", flavor="ort"))
  ort-static   onnxruntime.quantization.quantize_static of the fp32 file (QDQ, s8/s8, per-channel,
               same calibration images, MinMax)

and times them interleaved in one run (rounds of back-to-back calls per model, median of the round
medians), so a slow spell of the shared machine hits all three alike. It prints latency, the int8/fp32
ratio, how many Convs run as QLinearConv after ORT's optimizer (from optimized_model_filepath), the other
fused QLinear nodes, and max |diff| against PyTorch (the int8 rows against the weight-quantized reference).

With ``--profile`` it also prints, per model, ORT's profiler kernel times summed by op type (median
per node over the calls; the profiler adds about 1-2 us to every node, so read them as shares).

Usage: python bench/bench_int8.py [tiny|gpunet1|all] [--rounds N] [--calls N] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from onnxnas.arch import load_arch
from onnxnas.deploy.concrete import build_concrete, layer_weight_bits, quantized_reference
from onnxnas.deploy.graph import deployable_onnx
from onnxnas.deploy.inputs import sample_inputs
from onnxnas.export import INPUT_NAME
from onnxnas.timing.onnxruntime import pinned_cpus

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"tiny": ("examples/tiny.arch.json", "digits"), "gpunet1": ("examples/gpunet1.arch.json", "synthetic")}
FUSED = ("QLinearConv", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
         "QLinearGlobalAveragePool", "QGemm", "ConvInteger")


def session(model: bytes | str, optimized: Path | None = None) -> ort.InferenceSession:
    """ONNX Runtime CPU, 1 thread, sequential, all graph optimizations (onnxnas's timing protocol)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def optimized_ops(model: bytes) -> collections.Counter:
    """Op counts of the graph ORT actually runs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "optimized.onnx"
        session(model, path)
        return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def profile_by_op(model: bytes, feed: dict[str, np.ndarray], calls: int) -> tuple[int, collections.Counter]:
    """(nodes run, op type -> summed median kernel time in us) from ORT's profiler, 1 thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        runner = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for _ in range(calls):
            runner.run(None, feed)
        events = json.loads(Path(runner.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["name"], event["args"]["op_name"])].append(event["dur"])
    by_op: collections.Counter = collections.Counter()
    for (_, op), durations in per_node.items():
        by_op[op] += statistics.median(durations[len(durations) // 3:])  # past the warm-up
    return len(per_node), by_op


def ort_quantize_static(fp32: bytes, calibration: list[np.ndarray]) -> bytes:
    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: x} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def interleaved_medians(calls: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, float]:
    """Median over rounds of each model's median call time (us); models alternate within every round."""
    for call in calls.values():
        for _ in range(20):
            call()
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples = []
            for _ in range(per_round):
                start = time.perf_counter_ns()
                call()
                samples.append((time.perf_counter_ns() - start) / 1000.0)
            medians[name].append(statistics.median(samples))
    return {name: statistics.median(values) for name, values in medians.items()}


def bench(name: str, rounds: int, per_round: int, profile: bool = False) -> None:
    arch_file, data = ARCHS[name]
    arch = load_arch(ROOT / arch_file)
    samples = sample_inputs(data, arch)
    concrete = build_concrete(arch, None, bn_batches=samples.calibration)
    fp32, _ = deployable_onnx(concrete.module, arch.input_shape, "fp32", layer_weight_bits(arch, "fp32"))
    bits = layer_weight_bits(arch, "int8")
    start = time.perf_counter()
    int8, _ = deployable_onnx(concrete.module, arch.input_shape, "int8", bits, samples.calibration, flavor="ort")
    pipeline_s = time.perf_counter() - start
    models = {"fp32": fp32.SerializeToString(), "onnxnas int8": int8.SerializeToString()}
    models["ort quantize_static"] = ort_quantize_static(models["fp32"], samples.calibration)
    references = {"fp32": concrete.module, "onnxnas int8": quantized_reference(concrete.module, bits),
                  "ort quantize_static": concrete.module}

    print(f"\n{name}: {arch.input_shape}, calibration {len(samples.calibration)} {data} images"
          f"{' (synthetic: no real images at this size)' if data == 'synthetic' else ''}, "
          f"verification {len(samples.verification)} held-out images; onnxnas int8 pipeline {pipeline_s:.1f} s")
    sessions = {label: session(model) for label, model in models.items()}
    feed = {INPUT_NAME: samples.verification[0]}
    with pinned_cpus(1):
        latency = interleaved_medians({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()},
                                      rounds, per_round)
    print(f"  {'model':20s} {'median us':>10s} {'/ fp32':>7s} {'QLinearConv':>12s} {'max|diff|/peak':>15s}  other fused")
    for label, model in models.items():
        ops = optimized_ops(model)
        convs = ops["QLinearConv"] + ops["Conv"] + ops["FusedConv"] + ops["ConvInteger"]
        with torch.no_grad():
            diffs = []
            for x in samples.verification:
                ref = references[label](torch.from_numpy(x)).numpy()
                diffs.append(float(np.abs(sessions[label].run(None, {INPUT_NAME: x})[0] - ref).max() / np.abs(ref).max()))
        other = ", ".join(f"{op} {ops[op]}" for op in FUSED[1:] if ops[op])
        print(f"  {label:20s} {latency[label]:10.1f} {latency[label] / latency['fp32']:7.2f} "
              f"{ops['QLinearConv']:>5d} / {convs:<5d} {max(diffs):15.3f}  {other}")
    if profile:
        for label, model in models.items():
            nodes, by_op = profile_by_op(model, feed, max(per_round * 3, 30))
            shares = ", ".join(f"{op} {us:.0f}" for op, us in by_op.most_common())
            print(f"  profile {label}: {nodes} nodes, {sum(by_op.values()):.0f} us: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=[*ARCHS, "all"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=0, help="calls per round (default: 100 tiny, 5 gpunet1)")
    parser.add_argument("--profile", action="store_true", help="also print ORT profiler time per op type")
    args = parser.parse_args()
    for name in ARCHS if args.which == "all" else [args.which]:
        bench(name, args.rounds, args.calls or (100 if name == "tiny" else 5), args.profile)


if __name__ == "__main__":
    main()
