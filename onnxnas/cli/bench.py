"""`onnxnas bench MODEL.onnx|MODEL.engine --device DEV`: end-to-end latency beside the LUT's prediction.

It also prints the parameters and MACs counted from the ONNX graph itself, so a model
exported by any tool compares with one command. ``--repeat N`` times N passes and reports
the median of their medians; a noisy measurement (see timing/noise.py) prints a warning and
says so in ``--out``'s record.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from onnxnas.cli.options import add_timing_options, bounded_int, make_backend, timing_protocol
from onnxnas.deploy.artefacts import MANIFEST_FILE, ONNX_FILE, load_onnx
from onnxnas.deploy.engine import DEFAULT_TIMING_CACHE
from onnxnas.deploy.latency import measure
from onnxnas.deploy.manifest import load_manifest
from onnxnas.deploy.onnx_counts import onnx_counts
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json
from onnxnas.timing.base import Measurement
from onnxnas.timing.noise import RepeatedMeasurement

MAX_REPEAT = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time a finalized model end to end with the LUT's backend and protocol",
        description="Time model.onnx or model.engine with the same backend and protocol as the latency tables, "
                    "print the parameters and MACs of its ONNX graph, and the LUT prediction from manifest.json "
                    "beside it when there is one.")
    parser.add_argument("model", type=Path, help="model.onnx or model.engine")
    add_timing_options(parser, precision_default=None)
    parser.add_argument("--repeat", type=bounded_int(1, MAX_REPEAT), default=1,
                        help="independent timing passes; the result is the median of their medians (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="write the measurement (passes, noise verdict, counts) as JSON")
    parser.add_argument("--timing-cache", type=Path, default=DEFAULT_TIMING_CACHE,
                        help="TensorRT timing cache (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model: Path = args.model
    manifest = load_manifest(model.parent) if (model.parent / MANIFEST_FILE).exists() else None
    args.precision = args.precision or (manifest.precision if manifest else "fp32")
    graph = model if model.suffix == ".onnx" else model.parent / ONNX_FILE
    if model.suffix != ".onnx" and not model.is_file():
        raise OnnxNasError("model not found (or not a regular file)", where=str(model),
                           fix="pass a model.onnx or model.engine")
    # load_onnx refuses external data outside the folder before any backend reads it
    counts = onnx_counts(load_onnx(graph), str(graph)) if graph.suffix == ".onnx" and graph.is_file() else None
    backend, device = make_backend(args, args.timing_cache)
    protocol = timing_protocol(args)
    try:
        passes = [measure(backend, model, protocol) for _ in range(args.repeat)]
    finally:
        getattr(backend, "close", lambda: None)()
    timing = RepeatedMeasurement(tuple(Measurement(p["median_us"], p["p10_us"], p["p90_us"], p["count"]) for p in passes))
    record: dict[str, Any] = {"model": str(model), "device": device, "backend": passes[0]["backend"],
                              "backend_version": passes[0]["backend_version"], "precision": args.precision,
                              "protocol": protocol.to_dict(), **timing.to_dict(),
                              "onnx": {"path": str(graph), **counts.to_dict()} if counts else None}
    _print(model, record, timing, passes[0])
    for reason in timing.noise:
        print(f"WARNING: noisy measurement: {reason}; rerun on a quieter machine or with a larger --repeat")
    record["lut"] = _lut_lines(manifest, timing.median_us, protocol.to_dict()) if manifest else None
    if args.out:
        atomic_write_json(args.out, record)
    return 0


def _print(model: Path, record: dict[str, Any], timing: RepeatedMeasurement, first: dict[str, Any]) -> None:
    if len(timing.passes) == 1:
        detail = f"p10 {first['p10_us']:.1f}, p90 {first['p90_us']:.1f}, {first['count']} runs"
    else:
        medians = [p.median_us for p in timing.passes]
        detail = (f"median of {len(medians)} passes, {min(medians):.1f}-{max(medians):.1f} us, spread "
                  f"{timing.spread:.1%}, {sum(p.count for p in timing.passes)} runs")
    print(f"{model}: median {timing.median_us:.1f} us ({detail}) on {record['device']['name']} with "
          f"{record['backend']} {record['backend_version']}, {record['precision']}")
    onnx = record["onnx"]
    if onnx:
        print(f"{onnx['path']}: {onnx['params']:,} parameters, {onnx['macs']:,} MACs "
              f"({onnx['macs'] / 1e6:.2f} M; Conv/Gemm/MatMul, counted from the graph)")


def _lut_lines(manifest: Any, median_us: float, protocol: dict[str, Any]) -> dict[str, Any]:
    """Print the manifest's LUT prediction beside the measurement; returns what was compared."""
    lut = manifest.lut
    if not lut.predicted_us:
        print(f"no LUT prediction in the manifest: {lut.note or 'none recorded'}")
        return {"predicted_us": None, "note": lut.note}
    print(f"LUT prediction {lut.predicted_us:.1f} us ({lut.lut}): measured / predicted = {median_us / lut.predicted_us:.2f}")
    if lut.note:
        print(f"note: {lut.note}")
    if lut.protocol not in (None, protocol):
        print(f"note: the LUT was timed with protocol {lut.protocol}, this run with {protocol}")
    return {"predicted_us": lut.predicted_us, "lut": str(lut.lut), "ratio": median_us / lut.predicted_us}
