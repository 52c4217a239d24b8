"""`onnxnas bench MODEL.onnx|MODEL.engine --device DEV`: end-to-end latency beside the LUT's prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.cli.options import add_timing_options, make_backend, timing_protocol
from onnxnas.deploy.artefacts import MANIFEST_FILE, load_onnx
from onnxnas.deploy.engine import DEFAULT_TIMING_CACHE
from onnxnas.deploy.latency import measure
from onnxnas.deploy.manifest import load_manifest
from onnxnas.errors import OnnxNasError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time a finalized model end to end with the LUT's backend and protocol",
        description="Time model.onnx or model.engine with the same backend and protocol as the latency tables, "
                    "and print the LUT prediction from manifest.json beside it when there is one.")
    parser.add_argument("model", type=Path, help="model.onnx or model.engine")
    add_timing_options(parser, precision_default=None)
    parser.set_defaults(func=run)
    parser.add_argument("--timing-cache", type=Path, default=DEFAULT_TIMING_CACHE,
                        help="TensorRT timing cache (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    model: Path = args.model
    manifest = load_manifest(model.parent) if (model.parent / MANIFEST_FILE).exists() else None
    args.precision = args.precision or (manifest.precision if manifest else "fp32")
    if model.suffix == ".onnx":
        load_onnx(model)  # refuses external data outside the folder before any backend reads it
    elif not model.is_file():
        raise OnnxNasError("model not found (or not a regular file)", where=str(model),
                           fix="pass a model.onnx or model.engine")
    backend, device = make_backend(args, args.timing_cache)
    protocol = timing_protocol(args)
    try:
        result = measure(backend, model, protocol)
    finally:
        getattr(backend, "close", lambda: None)()
    print(f"{model}: median {result['median_us']:.1f} us (p10 {result['p10_us']:.1f}, p90 {result['p90_us']:.1f}, "
          f"{result['count']} runs) on {device['name']} with {result['backend']} {result['backend_version']}, "
          f"{args.precision}")
    if manifest is None:
        return 0
    lut = manifest.lut
    if lut.predicted_us:
        print(f"LUT prediction {lut.predicted_us:.1f} us ({lut.lut}): measured / predicted = "
              f"{result['median_us'] / lut.predicted_us:.2f}")
        if lut.note:
            print(f"note: {lut.note}")
        if lut.protocol not in (None, protocol.to_dict()):
            print(f"note: the LUT was timed with protocol {lut.protocol}, this run with {protocol.to_dict()}")
    else:
        print(f"no LUT prediction in the manifest: {lut.note or 'none recorded'}")
    return 0
